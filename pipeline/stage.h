#pragma once
// A stage transforms a unit in place. Stages register by name with a factory taking JSON
// parameters, so a pipeline can come from CLI flags or a pipeline file, and the manifest records
// exactly which stages and parameters produced an artifact.
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "converters/architectures/architecture.h"
#include "core/thread_pool.h"
#include "formats/format_registry.h"
#include "pipeline/unit.h"
#include "quantizers/scheme.h"
#include "tokenizers/tokenizer.h"

namespace sf {

// What a stage's plan may need beyond the model: the tokenizer convert uses (beside the source or
// --tokenizer; null when there is none), and where to add the files it reads (OUT may not be or
// contain them).
struct PlanContext {
  const std::string& source;
  const Tokenizer* tokenizer;
  std::vector<std::string>& inputs;
};

struct StageContext {
  const std::string& source;  // the checkpoint, named in messages about its values
  const CanonicalModel& model;
  FormatWriter& writer;
  ThreadPool& pool;
};

// What the quantize stage will do with each tensor (its policy under the writer's FormatRules):
// a calibration stage encodes block linears with these schemes before it, and quantize then
// leaves a tensor already encoded alone (after checking its type is the planned one).
struct QuantPlan {
  std::map<std::string, Scheme> schemes;  // by canonical name
  bool allow_non_finite = false;
};

class Stage {
 public:
  virtual ~Stage() = default;
  virtual std::string name() const = 0;
  virtual json params() const = 0;
  // May change the model description before the writer exists (trimming the vocabulary changes
  // vocab_size, so every later stage, the writer and the manifest see the trimmed model). Stages
  // plan in pipeline order. The canonical tensors keep their source shapes: what load() returns.
  virtual void plan(CanonicalModel&, const PlanContext&) {}
  // Checks the parameters against the (planned) model before anything is written (a usage error
  // for one that would do nothing, such as an override matching no tensor).
  virtual void prepare(const CanonicalModel&) {}
  // Once the writer exists, before the first unit: the quantize stage's plan.
  virtual void use_plan(const QuantPlan&) {}
  virtual void process(Unit& unit, StageContext& ctx) = 0;
  // A stage that needs every unit before it can finish any (end-to-end scale tuning) keeps them:
  // after process(), take() may move the unit into the stage and return true; the stages after it
  // then see it only when release() gives the kept units back, one per call in streaming order
  // (nullopt when none is left), after the last unit has been processed.
  virtual bool take(Unit& /*unit*/) { return false; }
  virtual std::optional<Unit> release(StageContext&) { return std::nullopt; }
  // After the last unit: what the stage made besides units (a file through the writer, its
  // manifest entry).
  virtual void finish(FormatWriter&, json& /*manifest*/) {}
  // What the run cost and did, for convert's summary and --json (never the manifest: artifacts
  // stay byte-identical between runs); null for stages with nothing to say.
  virtual json report() const { return nullptr; }
};

struct StageEntry {
  const char* name;
  const char* description;
  std::vector<std::string> params;  // the parameters it takes; any other is a usage error
  std::function<std::unique_ptr<Stage>(const json& params)> make;
};

const std::vector<StageEntry>& stage_registry();
std::unique_ptr<Stage> make_stage(const std::string& name, const json& params);
// {"stages": [{"name": ..., "params": {...}}, ...]}. Anything malformed or unknown (a stage, a
// parameter, a key) is a usage error: a pipeline file is part of the command line.
std::vector<std::unique_ptr<Stage>> make_pipeline(const json& spec);

}  // namespace sf
