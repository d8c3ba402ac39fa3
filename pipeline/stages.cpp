#include "pipeline/stages.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>

#include "core/error.h"
#include "pipeline/encode_check.h"
#include "quantizers/policy.h"

namespace sf {

FormatRules rules_of(const FormatWriter& w) { return {w.format_name(), w.storable_types(), w.whole_blocks_only()}; }

namespace {

class LoadStage : public Stage {
 public:
  std::string name() const override { return "load"; }
  json params() const override { return json::object(); }
  void process(Unit& u, StageContext& ctx) override {
    for (auto& t : u.tensors) {
      t.values = ctx.model.load(t.spec.name);
      t.has_values = true;
    }
    // The f32 copies are all later stages need. Released after the whole unit: a fused source
    // (q, k and v in one tensor) is read once and sliced for each of its canonical tensors.
    for (auto& t : u.tensors) ctx.model.release(t.spec.name);
  }
};

const json& typed_param(const json& p, const char* key, json::value_t type, const char* what) {
  static const json none;
  if (!p.contains(key)) return none;
  if (p[key].type() != type) fail_usage(std::string("quantize stage: '") + key + "' must be " + what);
  return p[key];
}

class QuantizeStage : public Stage {
 public:
  explicit QuantizeStage(const json& p) : policy_(parse_scheme(scheme_param(p))) {
    const json& overrides = typed_param(p, "overrides", json::value_t::array, "a list of \"PATTERN=SCHEME\" strings");
    for (const auto& o : overrides) {
      if (!o.is_string()) fail_usage("quantize stage: overrides must be strings PATTERN=SCHEME");
      policy_.add_override(o.get<std::string>());
      overrides_.push_back(o.get<std::string>());
    }
    const json& allow = typed_param(p, "allow_non_finite", json::value_t::boolean, "true or false");
    allow_non_finite_ = allow.is_boolean() && allow.get<bool>();
  }
  std::string name() const override { return "quantize"; }
  json params() const override {
    json p = {{"scheme", policy_.base().name()}, {"overrides", overrides_}};
    if (allow_non_finite_) p["allow_non_finite"] = true;
    return p;
  }
  void prepare(const CanonicalModel& model) override {
    std::vector<std::string> names;
    for (const auto& t : all_tensors(model.desc)) names.push_back(t.name);
    for (const auto& o : policy_.unmatched_overrides(names))
      fail_usage("tensor override '" + o + "' matches no tensor of this model; canonical names "
                 "look like 'blocks.0.attn.q.weight' ('shardforge inspect SOURCE' lists them)");
  }
  // The schemes process() will give, from the same policy and rules.
  void plan(const ModelDesc& desc, const FormatRules& rules, QuantPlan& plan) const {
    for (const auto& t : all_tensors(desc)) plan.schemes.insert_or_assign(t.name, policy_.scheme_for(t, rules));
    plan.allow_non_finite = allow_non_finite_;
  }
  // --target-bpw: whether the policy fixes t's scheme (a norm or bias, or an override names it).
  bool fixes(const TensorSpec& t) const {
    if (t.role == TensorRole::NormWeight || t.role == TensorRole::NormBias || t.role == TensorRole::LinearBias)
      return true;
    return policy_.unmatched_overrides({t.name}).size() < overrides_.size();
  }
  Scheme scheme_for(const TensorSpec& t, const FormatRules& rules) const { return policy_.scheme_for(t, rules); }
  // Exact-name overrides after the given ones, recorded in params() like them.
  void assign(const std::map<std::string, Scheme>& schemes) {
    for (const auto& [name, scheme] : schemes) {
      const std::string spec = name + "=" + scheme.name();
      policy_.add_override(spec);
      overrides_.push_back(spec);
    }
  }
  void process(Unit& u, StageContext& ctx) override {
    for (auto& t : u.tensors) {
      const Scheme s = policy_.scheme_for(t.spec, rules_of(ctx.writer));
      if (t.has_encoded) {
        // Encoded (and checked) by a calibration stage from this stage's plan: it must be the type
        // the plan says.
        if (t.encoded.type != s.type || t.encoded.group != s.group)
          fail("quantize stage: tensor " + t.spec.name + " was encoded as " + Scheme{t.encoded.type, t.encoded.group}.name() +
               " by an earlier stage, not as " + s.name() + " as planned");
        continue;
      }
      if (!t.has_values) fail("quantize stage: tensor " + t.spec.name + " was not loaded (no load stage?)");
      encode(t, s, ctx);
      std::vector<float>().swap(t.values);
      t.has_values = false;
      t.has_encoded = true;
    }
  }

 private:
  static std::string scheme_param(const json& p) {
    const json& s = typed_param(p, "scheme", json::value_t::string, "a scheme name such as \"int8\"");
    return s.is_string() ? s.get<std::string>() : "f32";
  }

  // Encodes every row, then decodes it (pipeline/encode_check.h): the checks run in the parallel
  // pass over the rows, as a separate pass over the f32 values costs as much as reading them.
  void encode(UnitTensor& t, const Scheme& s, StageContext& ctx) const {
    EncodedTensor& e = t.start_encoding(s.type, s.group);
    const size_t rows = size_t(e.rows()), cols = size_t(e.cols()), rb = e.row_bytes();
    e.data.assign(rows * rb, 0);
    const auto& tr = qtype_traits(s.type);
    RowFailures failures;
    const bool allow_non_finite = allow_non_finite_;
    // Rows are independent, so any split gives the same bytes; the lowest failing row is reported.
    ctx.pool.parallel_for(rows, [&](size_t b, size_t end) {
      std::vector<float> back(cols);
      for (size_t r = b; r < end; ++r) {
        const float* x = &t.values[r * cols];
        if (!allow_non_finite && !all_finite(x, cols)) {
          failures.note(RowCheck::NonFinite, r);
          return;  // the rows after it in this chunk cannot be reported first
        }
        tr.quantize_row(x, cols, s.group, &e.data[r * rb]);
        failures.note(check_row(x, &e.data[r * rb], cols, tr, s.group, back.data(), allow_non_finite), r);
      }
    });
    failures.refuse_any(t, s, ctx.source);
  }

  Policy policy_;
  std::vector<std::string> overrides_;
  bool allow_non_finite_ = false;
};

class WriteStage : public Stage {
 public:
  std::string name() const override { return "write"; }
  json params() const override { return json::object(); }
  void process(Unit& u, StageContext& ctx) override {
    ctx.writer.write_unit(u.take_encoded());
  }
};

}  // namespace

QuantPlan quant_plan(const std::vector<std::unique_ptr<Stage>>& stages, const ModelDesc& desc,
                     const FormatWriter& writer) {
  QuantPlan plan;
  for (const auto& s : stages)
    if (const auto* q = dynamic_cast<const QuantizeStage*>(s.get())) q->plan(desc, rules_of(writer), plan);
  return plan;
}

namespace {
QuantizeStage& quantize_stage(const std::vector<std::unique_ptr<Stage>>& stages) {
  for (const auto& s : stages)
    if (auto* q = dynamic_cast<QuantizeStage*>(s.get())) return *q;
  fail("pipeline: no quantize stage");
}
}  // namespace

std::map<std::string, Scheme> policy_fixed_schemes(const std::vector<std::unique_ptr<Stage>>& stages,
                                                   const ModelDesc& desc, const FormatRules& rules) {
  const QuantizeStage& q = quantize_stage(stages);
  std::map<std::string, Scheme> fixed;
  for (const auto& t : all_tensors(desc))
    if (q.fixes(t)) fixed.emplace(t.name, q.scheme_for(t, rules));
  return fixed;
}

void assign_schemes(const std::vector<std::unique_ptr<Stage>>& stages, const std::map<std::string, Scheme>& schemes) {
  quantize_stage(stages).assign(schemes);
}

std::map<std::string, QType> planned_types(const QuantPlan& plan) {
  std::map<std::string, QType> types;
  for (const auto& [name, scheme] : plan.schemes) types[name] = scheme.type;
  return types;
}

std::unique_ptr<Stage> make_load_stage(const json&) { return std::make_unique<LoadStage>(); }
std::unique_ptr<Stage> make_quantize_stage(const json& p) { return std::make_unique<QuantizeStage>(p); }
std::unique_ptr<Stage> make_write_stage(const json&) { return std::make_unique<WriteStage>(); }

}  // namespace sf
