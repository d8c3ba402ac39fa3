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

// Where a tensor's bytes live (a region of a mapped file, a compressed zip entry, ...).
class Storage {
 public:
  virtual ~Storage() = default;
  virtual size_t size() const = 0;              // bytes available
  virtual const uint8_t* bytes() = 0;           // all bytes; valid until release()
  virtual void release() = 0;                   // drop what bytes() brought into memory
  // Drop part of it: lets a large tensor be converted without the source and the copy both resident.
  virtual void release_range(size_t /*offset*/, size_t /*n*/) {}
  virtual std::string describe() const = 0;     // "model.pt: archive/data/3", for messages
};

struct LazyTensor {
  std::string name;  // source name
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  std::vector<int64_t> strides;  // elements
  int64_t offset = 0;            // elements into the storage
  std::shared_ptr<Storage> storage;

  int64_t numel() const;
  // The tensor as contiguous row-major f32; checks that the storage holds every element.
  std::vector<float> to_f32() const;
  // Throws Error unless the storage holds every element the view (offset, shape, strides) touches.
  void check_bounds() const;
  void release() const { if (storage) storage->release(); }
  // Same storage, offset, shape and strides: a tied weight saved once.
  bool same_data(const LazyTensor& o) const;
};

struct SourceModel {
  std::string path;                 // as the user named it
  std::string format;               // reader name, "pytorch"
  std::vector<std::string> files;   // the files the tensors come from (hashed into the manifest)
  std::map<std::string, LazyTensor> tensors;
  json config;                      // hyper-parameters as the source states them
  std::string config_kind;          // "hf_config" | "params_json" | "model_args" | ""
  std::string tokenizer_path;       // empty when none was found beside the source
};

std::string shape_string(const std::vector<int64_t>& shape);

}  // namespace sf
