#pragma once
// A stage transforms a unit in place. Stages register by name with a factory taking JSON
// parameters, so a pipeline can come from CLI flags or a pipeline file, and the manifest records
// exactly which stages and parameters produced an artifact.
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "converters/architectures/architecture.h"
#include "core/thread_pool.h"
#include "formats/format_registry.h"
#include "pipeline/unit.h"

namespace sf {

struct StageContext {
  const CanonicalModel& model;
  FormatWriter& writer;
  ThreadPool& pool;
};

class Stage {
 public:
  virtual ~Stage() = default;
  virtual std::string name() const = 0;
  virtual json params() const = 0;
  virtual void process(Unit& unit, StageContext& ctx) = 0;
};

struct StageEntry {
  const char* name;
  const char* description;
  std::function<std::unique_ptr<Stage>(const json& params)> make;
};

const std::vector<StageEntry>& stage_registry();
std::unique_ptr<Stage> make_stage(const std::string& name, const json& params);
// {"stages": [{"name": ..., "params": {...}}, ...]}
std::vector<std::unique_ptr<Stage>> make_pipeline(const json& spec);

}  // namespace sf
