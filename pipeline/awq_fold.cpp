#include "pipeline/awq_fold.h"

#include "core/error.h"

namespace sf {

namespace {

// ChatGLM-6B's residual is alpha * LN(x) + f(LN(x)): the norm's output is reused, so scaling it
// would change the residual too.
const char* norm_output_reused(const ModelDesc& d) {
  return d.residual == ResidualKind::ScaledNormInput ? "the residual reuses the norm's output (alpha * LN(x))"
                                                     : nullptr;
}
// o's input channel j is v's output row j only when every query head has its own value head.
const char* v_shared(const ModelDesc& d) {
  return d.n_kv_heads != d.n_heads ? "grouped-query attention shares each value head among several query heads"
                                   : nullptr;
}
// down's input is silu(gate x) * (up x): linear in up's rows. GELU(up x) is not.
const char* not_gated(const ModelDesc& d) {
  return d.ffn != FfnKind::SiluGated ? "the FFN's activation (GELU) is not linear in up's output" : nullptr;
}

const std::vector<AwqFoldRule> kRules = {
    {LinearInput::AttnIn, "attn_norm", norm_output_reused},
    {LinearInput::AttnOut, "attn.v", v_shared},
    {LinearInput::FfnIn, "ffn_norm", norm_output_reused},
    {LinearInput::FfnMid, "ffn.up", not_gated},
};

void scale_columns(std::vector<float>& w, const std::vector<float>& s) {
  const size_t cols = s.size();
  for (size_t i = 0; i < w.size(); ++i) w[i] *= s[i % cols];
}
// Output j of the op (a vector's element j, or a matrix's row j) divided by s[j].
void divide_outputs(std::vector<float>* w, const std::vector<float>& s) {
  if (!w) return;
  const size_t per = w->size() / s.size();
  for (size_t j = 0; j < s.size(); ++j)
    for (size_t i = 0; i < per; ++i) (*w)[j * per + i] /= s[j];
}

}  // namespace

const std::vector<AwqFoldRule>& awq_fold_rules() { return kRules; }

const AwqFoldRule& awq_fold_rule(LinearInput g) {
  for (const auto& r : kRules)
    if (r.input == g) return r;
  fail("awq: no fold rule for a linear group");
}

std::vector<std::string> group_linears(const ModelDesc& d, LinearInput g) {
  switch (g) {
    case LinearInput::AttnIn: return {"attn.q.weight", "attn.k.weight", "attn.v.weight"};
    case LinearInput::AttnOut: return {"attn.o.weight"};
    case LinearInput::FfnIn:
      return d.gated() ? std::vector<std::string>{"ffn.gate.weight", "ffn.up.weight"}
                       : std::vector<std::string>{"ffn.up.weight"};
    case LinearInput::FfnMid: return {"ffn.down.weight"};
  }
  return {};
}

size_t group_width(const ModelDesc& d, LinearInput g) {
  switch (g) {
    case LinearInput::AttnIn:
    case LinearInput::FfnIn: return size_t(d.d_model);
    case LinearInput::AttnOut: return size_t(d.n_heads) * size_t(d.head_dim);
    case LinearInput::FfnMid: return size_t(d.ffn_dim);
  }
  return 0;
}

void awq_fold(const ModelDesc& d, LinearInput g, const std::vector<float>& s, const BlockValues& block) {
  const AwqFoldRule& rule = awq_fold_rule(g);
  if (const char* why = rule.cannot_fold(d)) fail(std::string("awq: cannot fold into ") + rule.preceding + ": " + why);
  if (s.size() != group_width(d, g)) fail("awq: scales do not match the group's width");
  for (const auto& name : group_linears(d, g)) {
    std::vector<float>* w = block(name);
    if (!w) fail("awq: block has no " + name);
    scale_columns(*w, s);
  }
  // A norm's weight and bias elements, or a linear's weight rows and bias elements: output j of the op.
  const std::string p = rule.preceding;
  divide_outputs(block(p + ".weight"), s);
  divide_outputs(block(p + ".bias"), s);
}

void rescale_stats(InputStats& st, const std::vector<float>& s) {
  const size_t n = st.channels;
  if (s.size() != n) fail("awq: scales do not match the statistics' channels");
  for (size_t j = 0; j < n; ++j) {
    st.sum_sq[j] /= double(s[j]) * double(s[j]);
    st.sum_abs[j] /= double(s[j]);
  }
  if (st.with_gram)
    for (size_t i = 0; i < n; ++i)
      for (size_t j = 0; j < n; ++j) st.gram[i * n + j] /= double(s[i]) * double(s[j]);
  for (size_t r = 0; r < st.sample_rows; ++r)
    for (size_t j = 0; j < n; ++j) st.sample[r * n + j] /= s[j];
}

}  // namespace sf
