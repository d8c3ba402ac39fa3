#include "core/model_desc.h"

#include <cstdio>

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
    m.family = j.at("family").get<std::string>();
    const std::string what = "model description";
    constexpr int64_t kMax = int64_t(1) << 40;
    m.vocab_size = json_int(j, "vocab_size", what, 1, kMax);
    m.d_model = json_int(j, "d_model", what, 1, kMax);
    m.n_layers = json_int(j, "n_layers", what, 1, 1 << 20);
    m.n_heads = json_int(j, "n_heads", what, 1, 1 << 20);
    m.n_kv_heads = json_int(j, "n_kv_heads", what, 1, 1 << 20);
    m.head_dim = json_int(j, "head_dim", what, 1, kMax);
    m.ffn_dim = json_int(j, "ffn_dim", what, 1, kMax);
    m.norm = j.at("norm").get<std::string>();
    m.norm_eps = j.at("norm_eps").get<double>();
    m.activation = j.at("activation").get<std::string>();
    m.rope_theta = j.at("rope_theta").get<double>();
    m.rope_dims = json_int(j, "rope_dims", what, 0, kMax);
    m.tied_embeddings = j.at("tied_embeddings").get<bool>();
    m.max_seq = j.contains("max_seq") ? json_int(j, "max_seq", what, 0, kMax) : 0;
  } catch (const json::exception& e) {
    fail(std::string("model description: ") + e.what());
  }
  m.validate();
  return m;
}

void ModelDesc::validate() const {
  auto positive = [](int64_t v, const char* what) {
    if (v <= 0) fail(std::string("model description: ") + what + " must be positive, got " + std::to_string(v));
  };
  positive(vocab_size, "vocab_size");
  positive(d_model, "d_model");
  positive(n_layers, "n_layers");
  positive(n_heads, "n_heads");
  positive(n_kv_heads, "n_kv_heads");
  positive(head_dim, "head_dim");
  positive(ffn_dim, "ffn_dim");
  if (n_heads % n_kv_heads != 0)
    fail("model description: n_heads (" + std::to_string(n_heads) + ") is not a multiple of n_kv_heads (" +
         std::to_string(n_kv_heads) + ")");
  if (rope_dims <= 0 || rope_dims > head_dim || rope_dims % 2 != 0)
    fail("model description: rope_dims must be even and within head_dim");
  if (norm_eps <= 0) fail("model description: norm_eps must be positive");
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
