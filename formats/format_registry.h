#pragma once
// Output formats by name. A FormatWriter receives units one at a time, in order (embedding,
// blocks, head), and writes them out before the next arrives.
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/model_desc.h"
#include "formats/artifact_writer.h"
#include "formats/encoded.h"

namespace sf {

class FormatWriter {
 public:
  virtual ~FormatWriter() = default;
  // The type every tensor of the model will have (canonical name -> type), given once before the
  // first unit: a format that cannot store the plan refuses it here rather than many units in.
  virtual void check_plan(const std::map<std::string, QType>& /*types*/) {}
  virtual void write_unit(const EncodedUnit& unit) = 0;
  virtual void add_file(const std::string& name, const std::string& src_path) = 0;
  // A file a stage made (vocab_map.bin), listed in the manifest's files like every other.
  virtual void add_bytes(const std::string& name, const std::string& bytes) = 0;
  // manifest holds everything but the format's own entries; the writer completes and commits it,
  // and returns it as written.
  virtual json finish(json manifest) = 0;
  // What the format stores, for the quantization policy (quantizers/policy.h FormatRules): the
  // types (empty: all) and whether block types need rows of whole blocks.
  virtual std::vector<QType> storable_types() const { return {}; }
  virtual bool whole_blocks_only() const { return false; }
  virtual const char* format_name() const = 0;
};

struct FormatEntry {
  const char* name;
  const char* description;
  std::unique_ptr<FormatWriter> (*make)(const OutputTarget& target, const ModelDesc& desc);
  // What -o names: a directory (nullptr) or a file, with the extension compare gives it (".gguf").
  const char* file_extension;
  // The artifact readers open what it writes for running (run, eval, bench, compare).
  bool runnable;
  // The types it stores, as its writer's storable_types(), for checks made before any writer
  // exists (compare's schemes); null: every type.
  std::vector<QType> (*storable)();
};
const FormatEntry& format_entry(const std::string& name);  // usage error naming the known ones

const std::vector<FormatEntry>& formats();
std::unique_ptr<FormatWriter> make_format_writer(const std::string& name, const OutputTarget& target,
                                                 const ModelDesc& desc);

}  // namespace sf
