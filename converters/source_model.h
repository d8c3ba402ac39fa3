#pragma once
// What a reader produces: hyper-parameter sources plus lazy tensor handles, by source name.
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "core/model_desc.h"

namespace sf {

// Where a tensor's bytes live: a stored zip entry read through pread, a compressed entry inflated
// into memory, ... Reads never fault: a source truncated under us is an Error, not SIGBUS.
class Storage {
 public:
  virtual ~Storage() = default;
  virtual uint64_t size() const = 0;            // bytes available
  // Copies n bytes at offset into dst; throws Error naming the file when they are not there.
  virtual void read(uint64_t offset, void* dst, size_t n) = 0;
  virtual void release() {}                     // drop whatever read() keeps in memory
  virtual std::string describe() const = 0;     // "model.pt: archive/data/3", for messages
};

struct LazyTensor {
  std::string name;  // source name
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  std::vector<int64_t> strides;  // elements
  int64_t offset = 0;            // elements into the storage
  std::shared_ptr<Storage> storage;
  // A tensor stored in pieces (Meta's model-parallel consolidated.NN.pth files): when non-empty,
  // the tensor is these parts concatenated along concat_axis (every other dimension equal), and
  // storage, strides and offset are unused. to_f32 reads each part straight into its place.
  std::vector<LazyTensor> parts;
  size_t concat_axis = 0;

  int64_t numel() const;  // throws Error when the shape is negative or its product overflows
  // The tensor as contiguous row-major f32; checks that the storage holds every element. Reads the
  // source a chunk at a time, so memory is the output plus one chunk.
  std::vector<float> to_f32() const;
  // Throws Error unless the storage holds every element the view (offset, shape, strides) touches
  // (for a concatenation: unless every part does and the parts' shapes add up to shape).
  void check_bounds() const;
  void release() const;
  // Same storage, offset, shape and strides (or the same parts): a tied weight saved once.
  bool same_data(const LazyTensor& o) const;
  // Where the bytes come from, for messages: the storage's description or the first part's.
  std::string describe() const;

 private:
  // Converts the tensor's elements, in row-major order, into dst: element e goes to
  // dst[(e / block) * dst_stride + e % block]. to_f32 is (block = dst_stride = numel); a part of a
  // concatenation lands in its columns of every row of the whole.
  void read_placed(float* dst, uint64_t block, uint64_t dst_stride) const;
  void check_parts() const;
};

struct SourceModel {
  std::string path;                 // as the user named it
  std::string format;               // reader name, "pytorch"
  std::vector<std::string> files;   // the files the tensors come from (hashed into the manifest)
  std::map<std::string, LazyTensor> tensors;
  json config;                      // hyper-parameters as the source states them
  std::string config_kind;          // "hf_config" | "params_json" | "model_args" | "onnx_graph" | ""
  std::string tokenizer_path;       // empty when none was found beside the source
  // Said about the source without refusing it; the CLI prints each as "shardforge: warning: ...".
  std::vector<std::string> warnings;
  // Why no tokenizer was taken from beside the source (none there, or several candidates); shown
  // only when the user did not pass --tokenizer.
  std::string tokenizer_warning;
};

std::string shape_string(const std::vector<int64_t>& shape);

}  // namespace sf
