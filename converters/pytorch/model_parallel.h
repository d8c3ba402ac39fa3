#pragma once
// Meta's model-parallel checkpoints: consolidated.00.pth ... consolidated.NN.pth, one per rank of
// the training run, each holding a slice of every weight (or a copy of the replicated ones). The
// whole model is each tensor's slices concatenated along the axis its layer was split on.
#include <map>
#include <string>
#include <vector>

#include "converters/source_model.h"

namespace sf {

// More ranks than any published model uses (LLaMA 3.1 405B has 16); a directory claiming more is
// refused before any file is opened.
inline constexpr int kMaxModelParallelParts = 256;

// The consolidated.NN.pth files of a directory in rank order, when it holds more than one; empty
// when it holds none or only consolidated.00.pth. Throws Error naming the file when a rank in the
// sequence is missing or two files claim one rank.
std::vector<std::string> model_parallel_files(const std::string& dir);

struct ModelParallelPart {
  std::string path;                            // the file, for messages
  std::map<std::string, LazyTensor> tensors;   // its slice of every tensor, by name
};

// The whole tensors: every part must hold the same names, with the same dtype; split tensors
// (by name, see the table in model_parallel.cpp) must agree on every axis but the split one, and
// replicated ones must be equal bit for bit (they are read and compared here). Nothing else is
// read. `dim` is the model's width (params.json's "dim"; 0 when unknown): it tells whether
// tok_embeddings was split by vocabulary rows (Llama 3) or by feature columns (LLaMA 1/2). Throws
// Error with one line naming the file that disagrees.
std::map<std::string, LazyTensor> merge_model_parallel(const std::vector<ModelParallelPart>& parts, int64_t dim);

}  // namespace sf
