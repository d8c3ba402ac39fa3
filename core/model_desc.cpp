#include "core/model_desc.h"

#include <cmath>
#include <cstdio>
#include <utility>

#include "core/error.h"
#include "core/json_util.h"

namespace sf {

namespace {

// Every setting's manifest spelling, in one table per enum: parsing, printing and the message for
// an unknown value all read these.
template <class E>
struct KindName {
  E kind;
  const char* name;
};
constexpr KindName<NormKind> kNormNames[] = {{NormKind::RMS, "rms"}, {NormKind::Layer, "layer"}};
constexpr KindName<FfnKind> kFfnNames[] = {{FfnKind::SiluGated, "silu_gated"}, {FfnKind::GeluTanh, "gelu_tanh"}};
constexpr KindName<PositionalKind> kPositionalNames[] = {
    {PositionalKind::Rope, "rope"}, {PositionalKind::Rope2D, "rope_2d"}, {PositionalKind::Learned, "learned"}};
constexpr KindName<ResidualKind> kResidualNames[] = {{ResidualKind::PreNorm, "pre_norm"},
                                                     {ResidualKind::ScaledNormInput, "scaled_norm_input"}};
constexpr KindName<MaskKind> kMaskNames[] = {{MaskKind::Causal, "causal"},
                                             {MaskKind::PrefixBidirectional, "prefix_bidirectional"}};

template <class E, size_t N>
const char* name_of(const KindName<E> (&table)[N], E k) {
  for (const auto& e : table)
    if (e.kind == k) return e.name;
  return "?";
}

template <class E, size_t N>
E parse_kind(const KindName<E> (&table)[N], const json& j, const char* key) {
  const std::string what = "model description";
  if (!j.contains(key)) fail(what + ": '" + key + "' is missing");
  if (!j[key].is_string()) fail(what + ": '" + key + "' is not a string");
  const std::string v = j[key].get<std::string>();
  std::string known;
  for (const auto& e : table) {
    if (v == e.name) return e.kind;
    known += std::string(known.empty() ? "" : ", ") + e.name;
  }
  fail(what + ": " + key + " '" + v + "' is not one this executor implements (" + known + ")");
}

bool json_bool(const json& j, const char* key, const std::string& what) {
  if (!j.contains(key) || !j[key].is_boolean()) fail(what + ": '" + key + "' must be true or false");
  return j[key].get<bool>();
}

double json_real(const json& j, const char* key, const std::string& what) {
  if (!j.contains(key) || !j[key].is_number()) fail(what + ": '" + key + "' must be a number");
  return j[key].get<double>();
}

struct IntBound {
  const char* field;
  int64_t lo, hi;
};
constexpr IntBound kIntBounds[] = {
    {"vocab_size", 1, ModelDesc::kMaxSize}, {"d_model", 1, ModelDesc::kMaxSize},
    {"n_layers", 1, ModelDesc::kMaxCount},  {"n_heads", 1, ModelDesc::kMaxCount},
    {"n_kv_heads", 1, ModelDesc::kMaxCount}, {"head_dim", 1, ModelDesc::kMaxSize},
    {"ffn_dim", 1, ModelDesc::kMaxSize},    {"rope_dims", 0, ModelDesc::kMaxSize},
    {"max_seq", 0, ModelDesc::kMaxSize},
};
std::string fmt(double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.17g", v);
  return buf;
}

}  // namespace

const char* kind_name(NormKind k) { return name_of(kNormNames, k); }
const char* kind_name(FfnKind k) { return name_of(kFfnNames, k); }
const char* kind_name(PositionalKind k) { return name_of(kPositionalNames, k); }
const char* kind_name(ResidualKind k) { return name_of(kResidualNames, k); }
const char* kind_name(MaskKind k) { return name_of(kMaskNames, k); }

json ModelDesc::to_json() const {
  json j{{"family", family},         {"vocab_size", vocab_size},   {"d_model", d_model},
         {"n_layers", n_layers},     {"n_heads", n_heads},         {"n_kv_heads", n_kv_heads},
         {"head_dim", head_dim},     {"ffn_dim", ffn_dim},         {"norm", kind_name(norm)},
         {"norm_bias", norm_bias},   {"norm_eps", norm_eps},       {"ffn", kind_name(ffn)},
         {"positional", kind_name(positional)}, {"rope_theta", rope_theta}, {"rope_dims", rope_dims},
         {"rope_layout", "interleaved"},        {"residual", kind_name(residual)},
         {"residual_alpha", residual_alpha},    {"mask", kind_name(mask)},
         {"biases", {{"qkv", biases.qkv}, {"o", biases.o}, {"ffn", biases.ffn}}},
         {"tied_embeddings", tied_embeddings}, {"max_seq", max_seq}};
  if (mask == MaskKind::PrefixBidirectional)
    j["special_tokens"] = {{"mask", special.mask}, {"gmask", special.gmask}, {"bos", special.bos}};
  return j;
}

ModelDesc ModelDesc::from_json(const json& j) {
  ModelDesc m;
  const std::string what = "model description";
  if (!j.is_object()) fail(what + " is not an object");
  if (!j.contains("family") || !j["family"].is_string()) fail(what + ": 'family' must be a string");
  m.family = j["family"].get<std::string>();
  m.vocab_size = json_int(j, "vocab_size", what);
  m.d_model = json_int(j, "d_model", what);
  m.n_layers = json_int(j, "n_layers", what);
  m.n_heads = json_int(j, "n_heads", what);
  m.n_kv_heads = json_int(j, "n_kv_heads", what);
  m.head_dim = json_int(j, "head_dim", what);
  m.ffn_dim = json_int(j, "ffn_dim", what);
  m.norm = parse_kind(kNormNames, j, "norm");
  m.norm_bias = json_bool(j, "norm_bias", what);
  m.norm_eps = json_real(j, "norm_eps", what);
  m.ffn = parse_kind(kFfnNames, j, "ffn");
  m.positional = parse_kind(kPositionalNames, j, "positional");
  m.rope_theta = json_real(j, "rope_theta", what);
  m.rope_dims = json_int(j, "rope_dims", what);
  if (!j.contains("rope_layout") || j["rope_layout"] != "interleaved")
    fail(what + ": rope_layout must be \"interleaved\" (the only canonical layout)");
  m.residual = parse_kind(kResidualNames, j, "residual");
  m.residual_alpha = json_real(j, "residual_alpha", what);
  m.mask = parse_kind(kMaskNames, j, "mask");
  if (!j.contains("biases") || !j["biases"].is_object()) fail(what + ": 'biases' must be an object");
  const json& b = j["biases"];
  for (const auto& [key, _] : b.items())
    if (key != "qkv" && key != "o" && key != "ffn") fail(what + ": biases: unknown key '" + key + "'");
  m.biases = {json_bool(b, "qkv", what + ": biases"), json_bool(b, "o", what + ": biases"),
              json_bool(b, "ffn", what + ": biases")};
  if (m.mask == MaskKind::PrefixBidirectional) {
    if (!j.contains("special_tokens") || !j["special_tokens"].is_object())
      fail(what + ": a prefix_bidirectional mask needs 'special_tokens'");
    const json& s = j["special_tokens"];
    const std::string sw = what + ": special_tokens";
    m.special = {json_int(s, "mask", sw, -1, kMaxSize), json_int(s, "gmask", sw, -1, kMaxSize),
                 json_int(s, "bos", sw, -1, kMaxSize)};
  }
  m.tied_embeddings = json_bool(j, "tied_embeddings", what);
  m.max_seq = j.contains("max_seq") ? json_int(j, "max_seq", what) : 0;
  m.validate();
  return m;
}

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
  if (field == "residual_alpha" && !(v > 0 && v <= 1e6)) return "is " + fmt(v) + ", outside (0, 1e6]";
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
  for (const auto& [field, v] : {std::pair<const char*, double>{"norm_eps", norm_eps}, {"rope_theta", rope_theta},
                                 {"residual_alpha", residual_alpha}})
    if (std::string p = real_problem(field, v); !p.empty()) fail(what + field + " " + p);
  if (n_heads % n_kv_heads != 0)
    fail(what + "n_heads (" + std::to_string(n_heads) + ") is not a multiple of n_kv_heads (" +
         std::to_string(n_kv_heads) + ")");
  switch (positional) {
    case PositionalKind::Rope:
      if (rope_dims < 2 || rope_dims > head_dim || rope_dims % 2 != 0)
        fail(what + "rope_dims (" + std::to_string(rope_dims) + ") must be even, at least 2 and within head_dim (" +
             std::to_string(head_dim) + ")");
      break;
    case PositionalKind::Rope2D:
      if (head_dim % 4 != 0) fail(what + "2-D RoPE needs head_dim divisible by 4, not " + std::to_string(head_dim));
      if (rope_dims != head_dim) fail(what + "2-D RoPE rotates the whole head: rope_dims must equal head_dim");
      break;
    case PositionalKind::Learned:
      if (max_seq < 1) fail(what + "learned positions need max_seq (the table's rows), which is 0");
      if (rope_dims != 0) fail(what + "learned positions take no rope_dims");
      break;
  }
  if (residual == ResidualKind::PreNorm && residual_alpha != 1.0)
    fail(what + "residual_alpha applies only to the scaled_norm_input residual");
  if (mask == MaskKind::PrefixBidirectional) {
    if (special.bos < 0) fail(what + "a prefix_bidirectional mask needs special_tokens.bos (<sop>)");
    for (const auto& [name, id] : {std::pair<const char*, int64_t>{"mask", special.mask}, {"gmask", special.gmask},
                                   {"bos", special.bos}})
      if (id >= vocab_size)
        fail(what + "special_tokens." + name + " (" + std::to_string(id) + ") is outside the vocabulary (" +
             std::to_string(vocab_size) + ")");
  } else if (!(special == SpecialTokens{})) {
    fail(what + "special_tokens apply only to the prefix_bidirectional mask");
  }
  if (norm == NormKind::RMS && norm_bias) fail(what + "RMSNorm takes no bias");
  // Every tensor's element count, without overflow (each factor is at most 2^40).
  const std::pair<const char*, std::pair<int64_t, int64_t>> products[] = {
      {"vocab_size x d_model", {vocab_size, d_model}}, {"n_heads x head_dim", {n_heads, head_dim}},
      {"n_kv_heads x head_dim", {n_kv_heads, head_dim}}, {"ffn_dim x d_model", {ffn_dim, d_model}},
      {"max_seq x d_model (learned positions)", {positional == PositionalKind::Learned ? max_seq : 1, d_model}}};
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

const char* role_name(TensorRole r) {
  switch (r) {
    case TensorRole::TokenEmbedding: return "token_embedding";
    case TensorRole::PositionEmbedding: return "position_embedding";
    case TensorRole::NormWeight: return "norm_weight";
    case TensorRole::NormBias: return "norm_bias";
    case TensorRole::LinearWeight: return "linear_weight";
    case TensorRole::LinearBias: return "linear_bias";
    case TensorRole::Output: return "output";
  }
  return "?";
}

std::string unit_name(UnitKind kind, int64_t index) {
  if (kind != UnitKind::Block) return unit_kind_name(kind);
  char buf[32];
  std::snprintf(buf, sizeof buf, "block_%03lld", static_cast<long long>(index));
  return buf;
}

std::string block_prefix(int64_t index) { return "blocks." + std::to_string(index) + "."; }

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

namespace {

// The declaration of every canonical tensor: its unit, name, role, shape in model dimensions, and
// the setting that makes it exist. Everything that lists tensors reads this table.
enum class Dim { None, Vocab, Model, Q, KV, Ffn, MaxSeq };
struct TensorDecl {
  UnitKind unit;
  const char* name;  // after "blocks.N." for blocks
  TensorRole role;
  Dim rows, cols;    // cols None: a vector of `rows` elements
  bool (*present)(const ModelDesc&);
};

bool always(const ModelDesc&) { return true; }
bool norm_bias(const ModelDesc& m) { return m.norm_bias; }
bool qkv_bias(const ModelDesc& m) { return m.biases.qkv; }
bool o_bias(const ModelDesc& m) { return m.biases.o; }
bool ffn_bias(const ModelDesc& m) { return m.biases.ffn; }
bool gated(const ModelDesc& m) { return m.gated(); }
bool gated_bias(const ModelDesc& m) { return m.gated() && m.biases.ffn; }
bool learned(const ModelDesc& m) { return m.positional == PositionalKind::Learned; }
bool untied(const ModelDesc& m) { return !m.tied_embeddings; }

using R = TensorRole;
const TensorDecl kTensors[] = {
    {UnitKind::Embedding, "embed.weight", R::TokenEmbedding, Dim::Vocab, Dim::Model, always},
    {UnitKind::Embedding, "embed.pos.weight", R::PositionEmbedding, Dim::MaxSeq, Dim::Model, learned},
    {UnitKind::Block, "attn_norm.weight", R::NormWeight, Dim::Model, Dim::None, always},
    {UnitKind::Block, "attn_norm.bias", R::NormBias, Dim::Model, Dim::None, norm_bias},
    {UnitKind::Block, "attn.q.weight", R::LinearWeight, Dim::Q, Dim::Model, always},
    {UnitKind::Block, "attn.q.bias", R::LinearBias, Dim::Q, Dim::None, qkv_bias},
    {UnitKind::Block, "attn.k.weight", R::LinearWeight, Dim::KV, Dim::Model, always},
    {UnitKind::Block, "attn.k.bias", R::LinearBias, Dim::KV, Dim::None, qkv_bias},
    {UnitKind::Block, "attn.v.weight", R::LinearWeight, Dim::KV, Dim::Model, always},
    {UnitKind::Block, "attn.v.bias", R::LinearBias, Dim::KV, Dim::None, qkv_bias},
    {UnitKind::Block, "attn.o.weight", R::LinearWeight, Dim::Model, Dim::Q, always},
    {UnitKind::Block, "attn.o.bias", R::LinearBias, Dim::Model, Dim::None, o_bias},
    {UnitKind::Block, "ffn_norm.weight", R::NormWeight, Dim::Model, Dim::None, always},
    {UnitKind::Block, "ffn_norm.bias", R::NormBias, Dim::Model, Dim::None, norm_bias},
    {UnitKind::Block, "ffn.gate.weight", R::LinearWeight, Dim::Ffn, Dim::Model, gated},
    {UnitKind::Block, "ffn.gate.bias", R::LinearBias, Dim::Ffn, Dim::None, gated_bias},
    {UnitKind::Block, "ffn.up.weight", R::LinearWeight, Dim::Ffn, Dim::Model, always},
    {UnitKind::Block, "ffn.up.bias", R::LinearBias, Dim::Ffn, Dim::None, ffn_bias},
    {UnitKind::Block, "ffn.down.weight", R::LinearWeight, Dim::Model, Dim::Ffn, always},
    {UnitKind::Block, "ffn.down.bias", R::LinearBias, Dim::Model, Dim::None, ffn_bias},
    {UnitKind::Head, "head.norm.weight", R::NormWeight, Dim::Model, Dim::None, always},
    {UnitKind::Head, "head.norm.bias", R::NormBias, Dim::Model, Dim::None, norm_bias},
    {UnitKind::Head, "head.output.weight", R::Output, Dim::Vocab, Dim::Model, untied},
};

int64_t size_of(const ModelDesc& m, Dim d) {
  switch (d) {
    case Dim::None: return 0;
    case Dim::Vocab: return m.vocab_size;
    case Dim::Model: return m.d_model;
    case Dim::Q: return m.n_heads * m.head_dim;
    case Dim::KV: return m.n_kv_heads * m.head_dim;
    case Dim::Ffn: return m.ffn_dim;
    case Dim::MaxSeq: return m.max_seq;
  }
  return 0;
}

}  // namespace

std::vector<TensorSpec> unit_tensors(const ModelDesc& m, UnitKind kind, int64_t index) {
  std::vector<TensorSpec> out;
  const std::string prefix = kind == UnitKind::Block ? block_prefix(index) : "";
  for (const auto& d : kTensors) {
    if (d.unit != kind || !d.present(m)) continue;
    std::vector<int64_t> shape = {size_of(m, d.rows)};
    if (d.cols != Dim::None) shape.push_back(size_of(m, d.cols));
    out.push_back({prefix + d.name, std::move(shape), d.role, kind == UnitKind::Block ? index : -1});
  }
  return out;
}

}  // namespace sf
