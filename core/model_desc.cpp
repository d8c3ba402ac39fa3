#include "core/model_desc.h"

#include <cmath>
#include <cstdio>
#include <utility>

#include "core/error.h"
#include "core/json_util.h"

namespace sf {

json ModelDesc::to_json() const {
  return json{{"family", family},         {"vocab_size", vocab_size},   {"d_model", d_model},
              {"n_layers", n_layers},     {"n_heads", n_heads},         {"n_kv_heads", n_kv_heads},
              {"head_dim", head_dim},     {"ffn_dim", ffn_dim},         {"norm", norm},
              {"norm_eps", norm_eps},     {"activation", activation},   {"rope_theta", rope_theta},
              {"rope_dims", rope_dims},   {"rope_layout", "interleaved"},
              {"tied_embeddings", tied_embeddings}, {"max_seq", max_seq}};
}

ModelDesc ModelDesc::from_json(const json& j) {
  ModelDesc m;
  try {
    const std::string what = "model description";
    m.family = j.at("family").get<std::string>();
    m.vocab_size = json_int(j, "vocab_size", what);
    m.d_model = json_int(j, "d_model", what);
    m.n_layers = json_int(j, "n_layers", what);
    m.n_heads = json_int(j, "n_heads", what);
    m.n_kv_heads = json_int(j, "n_kv_heads", what);
    m.head_dim = json_int(j, "head_dim", what);
    m.ffn_dim = json_int(j, "ffn_dim", what);
    m.norm = j.at("norm").get<std::string>();
    if (!j.at("norm_eps").is_number() || !j.at("rope_theta").is_number())
      fail(what + ": norm_eps and rope_theta must be numbers");
    m.norm_eps = j.at("norm_eps").get<double>();
    m.activation = j.at("activation").get<std::string>();
    m.rope_theta = j.at("rope_theta").get<double>();
    m.rope_dims = json_int(j, "rope_dims", what);
    m.tied_embeddings = j.at("tied_embeddings").get<bool>();
    m.max_seq = j.contains("max_seq") ? json_int(j, "max_seq", what) : 0;
  } catch (const json::exception& e) {
    fail(std::string("model description: ") + e.what());
  }
  m.validate();
  return m;
}

namespace {
struct IntBound {
  const char* field;
  int64_t lo, hi;
};
constexpr IntBound kIntBounds[] = {
    {"vocab_size", 1, ModelDesc::kMaxSize}, {"d_model", 1, ModelDesc::kMaxSize},
    {"n_layers", 1, ModelDesc::kMaxCount},  {"n_heads", 1, ModelDesc::kMaxCount},
    {"n_kv_heads", 1, ModelDesc::kMaxCount}, {"head_dim", 1, ModelDesc::kMaxSize},
    {"ffn_dim", 1, ModelDesc::kMaxSize},    {"rope_dims", 1, ModelDesc::kMaxSize},
    {"max_seq", 0, ModelDesc::kMaxSize},
};
std::string fmt(double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.17g", v);
  return buf;
}
}  // namespace

std::string ModelDesc::int_problem(const std::string& field, int64_t v) {
  for (const auto& b : kIntBounds)
    if (field == b.field) {
      if (v >= b.lo && v <= b.hi) return "";
      return "is " + std::to_string(v) + ", outside [" + std::to_string(b.lo) + ", " + std::to_string(b.hi) + "]";
    }
  return "";
}

std::string ModelDesc::real_problem(const std::string& field, double v) {
  if (!std::isfinite(v)) return "is " + fmt(v) + ", not a finite number";
  if (field == "norm_eps" && !(v > 0 && v <= 1)) return "is " + fmt(v) + ", outside (0, 1]";
  if (field == "rope_theta" && !(v > 0)) return "is " + fmt(v) + " but must be positive";
  return "";
}

void ModelDesc::validate() const {
  const std::string what = "model description: ";
  const std::pair<const char*, int64_t> ints[] = {
      {"vocab_size", vocab_size}, {"d_model", d_model}, {"n_layers", n_layers}, {"n_heads", n_heads},
      {"n_kv_heads", n_kv_heads}, {"head_dim", head_dim}, {"ffn_dim", ffn_dim},  {"rope_dims", rope_dims},
      {"max_seq", max_seq}};
  for (const auto& [field, v] : ints)
    if (std::string p = int_problem(field, v); !p.empty()) fail(what + field + " " + p);
  for (const auto& [field, v] : {std::pair<const char*, double>{"norm_eps", norm_eps}, {"rope_theta", rope_theta}})
    if (std::string p = real_problem(field, v); !p.empty()) fail(what + field + " " + p);
  if (n_heads % n_kv_heads != 0)
    fail(what + "n_heads (" + std::to_string(n_heads) + ") is not a multiple of n_kv_heads (" +
         std::to_string(n_kv_heads) + ")");
  if (rope_dims > head_dim || rope_dims % 2 != 0) fail(what + "rope_dims must be even and within head_dim");
  // Every tensor's element count, without overflow (each factor is at most 2^40).
  const std::pair<const char*, std::pair<int64_t, int64_t>> products[] = {
      {"vocab_size x d_model", {vocab_size, d_model}}, {"n_heads x head_dim", {n_heads, head_dim}},
      {"n_kv_heads x head_dim", {n_kv_heads, head_dim}}, {"ffn_dim x d_model", {ffn_dim, d_model}}};
  for (const auto& [name, f] : products) {
    int64_t r;
    if (__builtin_mul_overflow(f.first, f.second, &r) || r > kMaxTensorElements)
      fail(what + name + " is more than " + std::to_string(kMaxTensorElements) + " elements");
  }
  int64_t q;
  if (__builtin_mul_overflow(n_heads * head_dim, d_model, &q) || q > kMaxTensorElements)
    fail(what + "n_heads x head_dim x d_model is more than " + std::to_string(kMaxTensorElements) + " elements");
}

const char* unit_kind_name(UnitKind k) {
  switch (k) {
    case UnitKind::Embedding: return "embedding";
    case UnitKind::Block: return "block";
    case UnitKind::Head: return "head";
  }
  return "?";
}

std::string unit_name(UnitKind kind, int64_t index) {
  if (kind != UnitKind::Block) return unit_kind_name(kind);
  char buf[32];
  std::snprintf(buf, sizeof buf, "block_%03lld", static_cast<long long>(index));
  return buf;
}

std::vector<std::pair<UnitKind, int64_t>> unit_order(const ModelDesc& m) {
  std::vector<std::pair<UnitKind, int64_t>> order = {{UnitKind::Embedding, 0}};
  for (int64_t i = 0; i < m.n_layers; ++i) order.emplace_back(UnitKind::Block, i);
  order.emplace_back(UnitKind::Head, 0);
  return order;
}

std::vector<TensorSpec> all_tensors(const ModelDesc& m) {
  std::vector<TensorSpec> all;
  for (const auto& [kind, index] : unit_order(m))
    for (auto& s : unit_tensors(m, kind, index)) all.push_back(std::move(s));
  return all;
}

std::vector<TensorSpec> unit_tensors(const ModelDesc& m, UnitKind kind, int64_t index) {
  const int64_t d = m.d_model, q = m.n_heads * m.head_dim, kv = m.n_kv_heads * m.head_dim;
  switch (kind) {
    case UnitKind::Embedding:
      return {{"embed.weight", {m.vocab_size, d}}};
    case UnitKind::Head: {
      std::vector<TensorSpec> t = {{"head.norm.weight", {d}, true}};
      if (!m.tied_embeddings) t.push_back({"head.output.weight", {m.vocab_size, d}});
      return t;
    }
    case UnitKind::Block: {
      const std::string p = "blocks." + std::to_string(index) + ".";
      return {{p + "attn_norm.weight", {d}, true},   {p + "attn.q.weight", {q, d}},
              {p + "attn.k.weight", {kv, d}},        {p + "attn.v.weight", {kv, d}},
              {p + "attn.o.weight", {d, q}},         {p + "ffn_norm.weight", {d}, true},
              {p + "ffn.gate.weight", {m.ffn_dim, d}}, {p + "ffn.up.weight", {m.ffn_dim, d}},
              {p + "ffn.down.weight", {d, m.ffn_dim}}};
    }
  }
  return {};
}

}  // namespace sf
