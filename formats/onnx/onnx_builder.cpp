#include "formats/onnx/onnx_builder.h"

#include <cstring>

namespace sf::onnx_out {

std::string GraphBuilder::fresh(const std::string& type) {
  const std::string base = scope_ + "/" + type;
  const int n = used_[base]++;
  return n == 0 ? base : base + "_" + std::to_string(n);
}

void GraphBuilder::op_to(const std::string& type, const std::vector<std::string>& in, const std::vector<std::string>& out,
                         const std::vector<Attr>& attrs) {
  onnx::NodeProto* n = g_->add_node();
  n->set_op_type(type);
  n->set_name(fresh(type));
  for (const auto& i : in) n->add_input(i);
  for (const auto& o : out) n->add_output(o);
  for (const Attr& a : attrs) {
    onnx::AttributeProto* p = n->add_attribute();
    p->set_name(a.name);
    switch (a.kind) {
      case Attr::Int: p->set_type(onnx::AttributeProto::INT), p->set_i(a.i); break;
      case Attr::Float: p->set_type(onnx::AttributeProto::FLOAT), p->set_f(a.f); break;
      case Attr::Ints:
        p->set_type(onnx::AttributeProto::INTS);
        for (int64_t v : a.ints) p->add_ints(v);
        break;
      case Attr::String: p->set_type(onnx::AttributeProto::STRING), p->set_s(a.s); break;
    }
  }
}

std::vector<std::string> GraphBuilder::op_n(const std::string& type, const std::vector<std::string>& in, size_t n,
                                            const std::vector<Attr>& attrs) {
  const std::string name = fresh(type);
  --used_[scope_ + "/" + type];  // op_to takes the same name again
  std::vector<std::string> out;
  for (size_t i = 0; i < n; ++i) out.push_back(name + "_output_" + std::to_string(i));
  op_to(type, in, out, attrs);
  return out;
}

std::string GraphBuilder::op(const std::string& type, const std::vector<std::string>& in, const std::vector<Attr>& attrs) {
  return op_n(type, in, 1, attrs)[0];
}

namespace {
std::string key_of(const std::vector<int64_t>& v) {
  std::string k;
  for (int64_t x : v) k += std::to_string(x) + ",";
  return k;
}
}  // namespace

// One initializer per distinct constant: `key` names the value, the bytes are little-endian.
std::string GraphBuilder::constant(const std::string& key, const char* prefix, int32_t type,
                                   const std::vector<int64_t>& dims, const void* bytes, size_t n) {
  if (auto it = consts_.find(key); it != consts_.end()) return it->second;
  const std::string name = std::string(prefix) + std::to_string(consts_.size());
  onnx::TensorProto* t = g_->add_initializer();
  t->set_name(name);
  t->set_data_type(type);
  for (int64_t d : dims) t->add_dims(d);
  t->set_raw_data(std::string(static_cast<const char*>(bytes), n));
  return consts_[key] = name;
}

std::string GraphBuilder::i64s(const std::vector<int64_t>& v) {
  return constant("i64s:" + key_of(v), "const_i64_", kInt64, {int64_t(v.size())}, v.data(), v.size() * sizeof(int64_t));
}

std::string GraphBuilder::i64(int64_t v) {
  return constant("i64:" + std::to_string(v), "const_i64_", kInt64, {}, &v, sizeof v);
}

std::string GraphBuilder::f32(float v) {
  uint32_t bits;
  std::memcpy(&bits, &v, 4);
  return constant("f32:" + std::to_string(bits), "const_f32_", kFloat, {}, &v, sizeof v);
}

void GraphBuilder::external(const std::string& name, int32_t type, const std::vector<int64_t>& dims, const ExternalRef& ref) {
  if (externals_[name]) return;
  externals_[name] = true;
  onnx::TensorProto* t = g_->add_initializer();
  t->set_name(name);
  t->set_data_type(type);
  for (int64_t d : dims) t->add_dims(d);
  t->set_data_location(onnx::TensorProto::EXTERNAL);
  auto add = [&](const char* k, const std::string& v) {
    onnx::StringStringEntryProto* e = t->add_external_data();
    e->set_key(k);
    e->set_value(v);
  };
  add("location", ref.location);
  add("offset", std::to_string(ref.offset));
  add("length", std::to_string(ref.length));
}

void GraphBuilder::value_info(onnx::ValueInfoProto* v, const std::string& name, int32_t type,
                              const std::vector<int64_t>& dims, const std::vector<std::string>& dim_names) {
  v->set_name(name);
  onnx::TypeProto_Tensor* t = v->mutable_type()->mutable_tensor_type();
  t->set_elem_type(type);
  onnx::TensorShapeProto* s = t->mutable_shape();
  size_t sym = 0;
  for (int64_t d : dims) {
    onnx::TensorShapeProto_Dimension* dim = s->add_dim();
    if (d >= 0) dim->set_dim_value(d);
    else dim->set_dim_param(sym < dim_names.size() ? dim_names[sym++] : "dim");
  }
}

void GraphBuilder::input(const std::string& name, int32_t type, const std::vector<int64_t>& dims,
                         const std::vector<std::string>& dim_names) {
  value_info(g_->add_input(), name, type, dims, dim_names);
}

void GraphBuilder::output(const std::string& name, int32_t type, const std::vector<int64_t>& dims,
                          const std::vector<std::string>& dim_names) {
  value_info(g_->add_output(), name, type, dims, dim_names);
}

}  // namespace sf::onnx_out
