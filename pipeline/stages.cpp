#include "pipeline/stages.h"

#include "core/error.h"
#include "quantizers/policy.h"

namespace sf {

namespace {

class LoadStage : public Stage {
 public:
  std::string name() const override { return "load"; }
  json params() const override { return json::object(); }
  void process(Unit& u, StageContext& ctx) override {
    for (auto& t : u.tensors) {
      t.values = ctx.model.load(t.spec.name);
      t.has_values = true;
      ctx.model.release(t.spec.name);  // the f32 copy is all later stages need
    }
  }
};

class QuantizeStage : public Stage {
 public:
  explicit QuantizeStage(const json& p) : policy_(parse_scheme(p.value("scheme", std::string("f32")))) {
    if (p.contains("overrides"))
      for (const auto& o : p["overrides"]) {
        if (!o.is_string()) fail("quantize stage: overrides must be strings PATTERN=SCHEME");
        policy_.add_override(o.get<std::string>());
        overrides_.push_back(o.get<std::string>());
      }
  }
  std::string name() const override { return "quantize"; }
  json params() const override { return {{"scheme", policy_.base().name()}, {"overrides", overrides_}}; }
  void process(Unit& u, StageContext& ctx) override {
    for (auto& t : u.tensors) {
      if (!t.has_values) fail("quantize stage: tensor " + t.spec.name + " was not loaded (no load stage?)");
      const Scheme s = policy_.scheme_for(t.spec.name, t.spec.is_norm);
      EncodedTensor& e = t.encoded;
      e.name = t.spec.name;
      e.type = s.type;
      e.group = s.group;
      e.shape = t.spec.shape;
      const size_t rows = size_t(e.rows()), cols = size_t(e.cols()), rb = e.row_bytes();
      e.data.assign(rows * rb, 0);
      const auto& tr = qtype_traits(s.type);
      // Rows are independent, so any split gives the same bytes.
      ctx.pool.parallel_for(rows, [&](size_t b, size_t end) {
        for (size_t r = b; r < end; ++r) tr.quantize_row(&t.values[r * cols], cols, s.group, &e.data[r * rb]);
      });
      std::vector<float>().swap(t.values);
      t.has_values = false;
      t.has_encoded = true;
    }
  }

 private:
  Policy policy_;
  std::vector<std::string> overrides_;
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

std::unique_ptr<Stage> make_load_stage(const json&) { return std::make_unique<LoadStage>(); }
std::unique_ptr<Stage> make_quantize_stage(const json& p) { return std::make_unique<QuantizeStage>(p); }
std::unique_ptr<Stage> make_write_stage(const json&) { return std::make_unique<WriteStage>(); }

}  // namespace sf
