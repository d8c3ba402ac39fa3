#include "converters/reader_registry.h"

#include <filesystem>

#include "converters/onnx/onnx_reader.h"
#include "converters/pytorch/pytorch_reader.h"
#include "converters/safetensors/safetensors_reader.h"
#include "core/error.h"
#include "core/input_file.h"

namespace sf {

namespace {
bool is_gguf(const std::string& path) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) return false;
  const InputFile f(path);
  char magic[4] = {};
  if (f.size() < 4) return false;
  f.read_at(0, magic, 4);
  return std::string(magic, 4) == "GGUF";
}
}  // namespace

const std::vector<ReaderEntry>& readers() {
  // safetensors first: a directory holding both model.safetensors and pytorch_model.bin (as many
  // Hugging Face repositories do) is read from the safetensors, as transformers reads it.
  static const std::vector<ReaderEntry> table = {
      {"safetensors", safetensors_probe, safetensors_open},
      {"pytorch", pytorch_probe, pytorch_open},
      // Last: its probe also takes any file whose first bytes look like a protobuf ModelProto.
      {"onnx", onnx_probe, onnx_open},
  };
  return table;
}

std::unique_ptr<SourceModel> open_source(const std::string& path, const std::string& format) {
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) fail_file(path, "no such file or directory");
  // A FIFO, device, socket or /proc entry is refused here, before any reader probes it.
  if (!std::filesystem::is_directory(path, ec)) InputFile check(path);
  for (const auto& r : readers()) {
    if (format == r.name) return r.open(path);
    if (format == "auto" && r.probe(path)) return r.open(path);
  }
  if (format != "auto") fail("unknown source format '" + format + "'");
  // A GGUF is an output of convert (and a model inspect, run and eval read), not a checkpoint.
  if (is_gguf(path))
    fail_file(path, "is a GGUF file, which convert does not read (convert reads checkpoints: a torch.save zip, "
                    "a .safetensors file, an .onnx model, or a directory holding one); inspect, run and eval take the GGUF itself",
              ErrorKind::Unsupported);
  fail_file(path, "not a recognised model source (expected a torch.save zip checkpoint, a .safetensors file, an "
                        ".onnx model, or a directory holding one)");
}

}  // namespace sf
