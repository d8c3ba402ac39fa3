#pragma once
// A decoder exported one graph per unit in one directory: embedding.onnx, block_000.onnx …
// block_NNN.onnx, head.onnx (shardforge's --format onnx --split blocks; edge deployments load a
// block at a time). The graphs are joined into one, so structure recovery reads it as it reads a
// whole export.
#include <memory>
#include <string>
#include <vector>

#include "onnx/onnx.pb.h"

namespace sf {

// The unit graphs of `dir` in order (embedding, blocks, head), when its .onnx files are exactly
// those with blocks numbered 0 … N-1; empty otherwise.
std::vector<std::string> split_graph_files(const std::string& dir, const std::vector<std::string>& onnx_files);

// One graph from the unit graphs, in order. Each graph's own names are prefixed with its unit
// ("u3/…"); a graph input named X is bound to the latest earlier output named X or X_out (block
// i's hidden_states to block i-1's hidden_states_out, its attention_mask to embedding.onnx's), and
// is an input of the joined graph otherwise (input_ids, past_key_values.N.*). Together the files
// must stay within one file's limits (size, nodes, fields); subgraphs are refused.
std::unique_ptr<onnx::ModelProto> join_split_graphs(const std::vector<std::string>& files);

}  // namespace sf
