#include "formats/format_registry.h"

#include "core/error.h"
#include "formats/gguf/gguf_types.h"
#include "formats/gguf/gguf_writer.h"
#include "formats/onnx/onnx_weights.h"
#include "formats/hdf5/hdf5_writer.h"
#include "formats/onnx/onnx_writer.h"
#include "formats/shard_format.h"

namespace sf {

const std::vector<FormatEntry>& formats() {
  static const std::vector<FormatEntry> table = {
      {"shards", "per-unit .shard files + raw embedding rows + manifest.json", make_shard_writer, nullptr, true, nullptr},
      {"gguf", "one GGUF v3 file (-o names the file) that llama.cpp loads", make_gguf_writer, ".gguf", true,
       gguf::gguf_storable_types},
      {"hdf5", "one HDF5 file (-o names the file): a group per unit, a dataset per tensor part, for h5py",
       make_hdf5_writer, ".h5", true, nullptr},
      {"onnx", "model.onnx + model.onnx_data (external weights) + manifest.json, for onnxruntime", make_onnx_writer,
       nullptr, false, onnx_out::onnx_storable_types},
      {"zip", "the shards artifact as one zip (-o names the file), stored and 4 KiB-aligned to run in place",
       make_zip_bundle_writer, ".zip", true, nullptr},
  };
  return table;
}

const FormatEntry& format_entry(const std::string& name) {
  std::string known;
  for (const auto& f : formats()) {
    if (name == f.name) return f;
    known += std::string(known.empty() ? "" : ", ") + f.name;
  }
  fail_usage("--format: unknown output format '" + name + "' (known: " + known + ")");
}

std::unique_ptr<FormatWriter> make_format_writer(const std::string& name, const OutputTarget& target,
                                                 const ModelDesc& desc) {
  const FormatEntry& f = format_entry(name);
  if (!target.split.empty() && name != "onnx") fail_usage("--split: only --format onnx divides its output");
  return f.make(target, desc);
}

}  // namespace sf
