#pragma once
// A small helper that adds nodes, constants and weight references to an ONNX GraphProto, naming
// every value after the scope it is built in ("/blocks.3/attn/Softmax_output_0"), so that a graph
// generated twice from the same description is the same bytes.
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "onnx/onnx.pb.h"

namespace sf::onnx_out {

// ONNX TensorProto.DataType numbers (onnx.proto; INT4/UINT4 are newer than Debian's onnx.proto,
// whose data_type field is a plain int32).
enum OnnxType : int32_t {
  kFloat = 1, kUint8 = 2, kInt8 = 3, kInt64 = 7, kBool = 9, kFloat16 = 10, kBfloat16 = 16, kUint4 = 21, kInt4 = 22
};

struct Attr {
  enum Kind { Int, Float, Ints, String } kind;
  std::string name;
  int64_t i = 0;
  float f = 0;
  std::vector<int64_t> ints;
  std::string s;
};
inline Attr attr_i(std::string n, int64_t v) { return {Attr::Int, std::move(n), v, 0, {}, {}}; }
inline Attr attr_f(std::string n, float v) { return {Attr::Float, std::move(n), 0, v, {}, {}}; }
inline Attr attr_ints(std::string n, std::vector<int64_t> v) { return {Attr::Ints, std::move(n), 0, 0, std::move(v), {}}; }
inline Attr attr_s(std::string n, std::string v) { return {Attr::String, std::move(n), 0, 0, {}, std::move(v)}; }

// Where a weight's bytes are in the external data file.
struct ExternalRef {
  std::string location;
  uint64_t offset = 0, length = 0;
};

class GraphBuilder {
 public:
  explicit GraphBuilder(onnx::GraphProto* g) : g_(g) {}
  // The scope names of the values and nodes added next ("/blocks.3/attn").
  void set_scope(std::string s) { scope_ = std::move(s); }
  const std::string& scope() const { return scope_; }
  // Canonical tensor name -> the value holding its f32 form, so a tensor used twice (a tied head)
  // is dequantized once.
  std::map<std::string, std::string> weight_values;

  // A node with one output; returns the output's name.
  std::string op(const std::string& type, const std::vector<std::string>& in, const std::vector<Attr>& attrs = {});
  // A node with n outputs.
  std::vector<std::string> op_n(const std::string& type, const std::vector<std::string>& in, size_t n,
                                const std::vector<Attr>& attrs = {});
  // A node whose outputs have the given names (graph outputs).
  void op_to(const std::string& type, const std::vector<std::string>& in, const std::vector<std::string>& out,
             const std::vector<Attr>& attrs = {});

  // Small constants, stored inline and shared by value.
  std::string i64s(const std::vector<int64_t>& v);   // 1-D int64
  std::string i64(int64_t v);                         // int64 scalar
  std::string f32(float v);                           // float scalar

  // An initializer whose bytes are in the external data file (added once: a second call with the
  // same name, a weight read both whole and by rows, adds nothing).
  void external(const std::string& name, int32_t type, const std::vector<int64_t>& dims, const ExternalRef& ref);

  // Graph inputs and outputs; a dimension < 0 is symbolic, named by dim_names.
  void input(const std::string& name, int32_t type, const std::vector<int64_t>& dims,
             const std::vector<std::string>& dim_names = {});
  void output(const std::string& name, int32_t type, const std::vector<int64_t>& dims,
              const std::vector<std::string>& dim_names = {});

 private:
  std::string constant(const std::string& key, const char* prefix, int32_t type, const std::vector<int64_t>& dims,
                       const void* bytes, size_t n);
  std::string fresh(const std::string& type);
  void value_info(onnx::ValueInfoProto* v, const std::string& name, int32_t type, const std::vector<int64_t>& dims,
                  const std::vector<std::string>& dim_names);
  onnx::GraphProto* g_;
  std::string scope_;
  std::map<std::string, int> used_;        // node names already taken in a scope
  std::map<std::string, bool> externals_;  // initializers added
  std::map<std::string, std::string> consts_;  // constant key -> initializer name
};

}  // namespace sf::onnx_out
