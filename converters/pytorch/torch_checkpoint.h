#pragma once
// One torch.save zip file: its pickle run through the torch allow-list, with every tensor turned
// into a LazyTensor over the archive's storage entries.
#include <map>
#include <memory>
#include <string>

#include "converters/pytorch/pickle_vm.h"
#include "core/zip_archive.h"
#include "converters/source_model.h"

namespace sf {

struct TorchCheckpoint {
  std::string path;
  pickle::Tree tree;      // the unpickled objects; tree.root is the checkpoint's top object
  const pickle::ValuePtr& root() const { return tree.root; }
  std::shared_ptr<ZipArchive> archive;
  std::string prefix;     // archive directory holding data.pkl, with trailing '/'

  static TorchCheckpoint open(const std::string& path);
  // A LazyTensor for a tensor value; tensors sharing a storage share one Storage object.
  LazyTensor tensor(const std::string& name, const pickle::Value& v);

 private:
  std::map<std::string, std::shared_ptr<Storage>> storages_;
};

// The allow-list torch checkpoints need: containers, tensor/parameter rebuilders, storage types.
const pickle::AllowList& torch_allow_list();

// Unpickling a checkpoint may use kPickleBaseBytes + kPickleBytesPerFileByte x the file's size
// (the inflated data.pkl counts against it); past that it stops with an Error.
inline constexpr uint64_t kPickleBaseBytes = uint64_t(64) << 20;
inline constexpr uint64_t kPickleBytesPerFileByte = 16;
// Metadata (model_args) nested deeper than this is refused.
inline constexpr size_t kMaxMetadataDepth = 64;

// Plain values (numbers, strings, lists, dicts) as JSON; tensors and other objects are skipped, and
// so are containers met again on the way down (cycles). Throws Error past a size budget or past
// kMaxMetadataDepth levels of nesting.
json pickle_to_json(const pickle::Value& v);

}  // namespace sf
