#pragma once
// ONNX initializers as lazy tensors. Weights stored inline (raw_data or the typed repeated fields)
// are moved out of the parsed message into a storage of their own; weights stored as external data
// are read in place with pread from files confined to the model's directory.
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "onnx/onnx.pb.h"

#include "converters/source_model.h"
#include "core/input_file.h"

namespace sf {

// The external-data files of one model, each opened once (InputFile: regular files only).
class ExternalFiles {
 public:
  explicit ExternalFiles(std::string model_path);
  // The file `location` names, relative to the model's directory. Refuses absolute paths, `..`,
  // backslashes, empty components, symbolic links anywhere on the way and anything not a regular file.
  std::shared_ptr<InputFile> open(const std::string& location, const std::string& tensor);
  std::vector<std::string> paths() const;  // opened so far, in order of first use

 private:
  std::string model_path_;
  std::string dir_;
  std::map<std::string, std::shared_ptr<InputFile>> files_;
  std::vector<std::string> order_;
};

// INT4 / UINT4 initializers become 1-D U8 tensors of their packed bytes (ceil(elements / 2)), which
// no weight is mistaken for; their element type and dims stay in the TensorProto, where the
// DequantizeLinear folding (onnx_dequant.h) reads them.
bool is_packed_4bit(int onnx_type);

// Takes the tensor's bytes out of `t` (raw_data is swapped, not copied) into a LazyTensor; checks
// that the bytes agree with dims x element size. Throws Error naming the model file and the tensor.
LazyTensor onnx_initializer(onnx::TensorProto& t, ExternalFiles& external, const std::string& model_path);

}  // namespace sf
