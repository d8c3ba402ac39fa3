#include "pipeline/stages.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>

#include "core/error.h"
#include "quantizers/policy.h"

namespace sf {

namespace {

FormatRules rules_of(const FormatWriter& w) { return {w.format_name(), w.storable_types(), w.whole_blocks_only()}; }

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

// Where element i of a tensor is, for messages: "row 3, column 7" (or "element 7" of a vector).
std::string position(const TensorSpec& spec, size_t i) {
  if (spec.shape.size() < 2) return "element " + std::to_string(i);
  const size_t cols = size_t(spec.shape.back());
  return "row " + std::to_string(i / cols) + ", column " + std::to_string(i % cols);
}

std::string number(float v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", double(v));
  return buf;
}

// Every value of a row is looked at twice (the input and its decoding): an exponent test on the
// bits, OR-ed over the row without a branch, which vectorizes (std::isfinite in a loop that
// returns early does not).
bool all_finite(const float* x, size_t n) {
  uint32_t non_finite = 0;
  for (size_t i = 0; i < n; ++i) {
    uint32_t bits;
    std::memcpy(&bits, &x[i], 4);
    non_finite |= uint32_t((bits & 0x7f800000u) == 0x7f800000u);
  }
  return non_finite == 0;
}

// Lowers `slot` to `v` if smaller: the first failing row whatever the thread split.
void keep_min(std::atomic<size_t>& slot, size_t v) {
  size_t cur = slot.load();
  while (v < cur && !slot.compare_exchange_weak(cur, v)) {}
}

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
  // The types process() will give, from the same policy and rules.
  void plan_types(const ModelDesc& desc, const FormatRules& rules, std::map<std::string, QType>& types) const {
    for (const auto& t : all_tensors(desc)) types[t.name] = policy_.scheme_for(t, rules).type;
  }
  void process(Unit& u, StageContext& ctx) override {
    for (auto& t : u.tensors) {
      if (!t.has_values) fail("quantize stage: tensor " + t.spec.name + " was not loaded (no load stage?)");
      encode(t, policy_.scheme_for(t.spec, rules_of(ctx.writer)), ctx);
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

  // NaN or Inf in a checkpoint is damage (a diverged run, a bad merge): refuse it by default,
  // naming the first such element of the first row that holds one.
  [[noreturn]] static void refuse_non_finite(const UnitTensor& t, size_t row, size_t cols, StageContext& ctx) {
    size_t i = row * cols;
    while (std::isfinite(t.values[i])) ++i;
    fail_file(ctx.source, "tensor " + t.spec.name + " holds " + number(t.values[i]) + " at " + position(t.spec, i) +
                              "; non-finite weights are refused (convert --allow-non-finite keeps them)");
  }

  // Encodes every row, then decodes it: a row of finite values that decodes to inf or nan holds a
  // value the type cannot represent (f16 past 65504, an int4 group whose f16 scale overflows).
  // One check after encoding covers every type. A row with non-finite input is refused unless
  // allowed (then it is encoded and not checked). The checks run in the parallel pass over the
  // rows: a separate pass over the f32 values costs as much as reading them.
  void encode(UnitTensor& t, const Scheme& s, StageContext& ctx) const {
    EncodedTensor& e = t.encoded;
    e.name = t.spec.name;
    e.type = s.type;
    e.group = s.group;
    e.shape = t.spec.shape;
    const size_t rows = size_t(e.rows()), cols = size_t(e.cols()), rb = e.row_bytes();
    e.data.assign(rows * rb, 0);
    const auto& tr = qtype_traits(s.type);
    std::atomic<size_t> bad_row{SIZE_MAX}, non_finite_row{SIZE_MAX};
    const bool allow_non_finite = allow_non_finite_;
    // Rows are independent, so any split gives the same bytes; the lowest failing row is reported.
    ctx.pool.parallel_for(rows, [&](size_t b, size_t end) {
      std::vector<float> back(cols);
      for (size_t r = b; r < end; ++r) {
        const float* x = &t.values[r * cols];
        const bool finite = all_finite(x, cols);
        if (!finite && !allow_non_finite) {
          keep_min(non_finite_row, r);
          return;  // the rows after it in this chunk cannot be reported first
        }
        tr.quantize_row(x, cols, s.group, &e.data[r * rb]);
        tr.dequantize_row(&e.data[r * rb], cols, s.group, back.data());
        if (finite && !all_finite(back.data(), cols)) keep_min(bad_row, r);
      }
    });
    if (non_finite_row.load() != SIZE_MAX) refuse_non_finite(t, non_finite_row.load(), cols, ctx);
    if (bad_row.load() != SIZE_MAX) refuse_unrepresentable(t, s, bad_row.load(), ctx);
  }

  [[noreturn]] static void refuse_unrepresentable(const UnitTensor& t, const Scheme& s, size_t row,
                                                  StageContext& ctx) {
    const size_t cols = t.values.size() / std::max<size_t>(1, size_t(t.encoded.rows()));
    size_t worst = row * cols;
    for (size_t i = row * cols; i < (row + 1) * cols; ++i)
      if (std::fabs(t.values[i]) > std::fabs(t.values[worst])) worst = i;
    const std::string alternative = s.type == QType::BF16 ? "f32" : "bf16";
    fail_file(ctx.source, "tensor " + t.spec.name + " holds " + number(t.values[worst]) + " at " +
                              position(t.spec, worst) + ", which " + s.name() +
                              " cannot represent (it decodes to inf or nan); use " +
                              (s.type == QType::BF16 ? "f32" : "bf16 or f32") + " for it, e.g. --tensor-quant '" +
                              t.spec.name + "=" + alternative + "'");
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

std::map<std::string, QType> planned_types(const std::vector<std::unique_ptr<Stage>>& stages, const ModelDesc& desc,
                                           const FormatWriter& writer) {
  std::map<std::string, QType> types;
  for (const auto& s : stages)
    if (const auto* q = dynamic_cast<const QuantizeStage*>(s.get())) q->plan_types(desc, rules_of(writer), types);
  return types;
}

std::unique_ptr<Stage> make_load_stage(const json&) { return std::make_unique<LoadStage>(); }
std::unique_ptr<Stage> make_quantize_stage(const json& p) { return std::make_unique<QuantizeStage>(p); }
std::unique_ptr<Stage> make_write_stage(const json&) { return std::make_unique<WriteStage>(); }

}  // namespace sf
