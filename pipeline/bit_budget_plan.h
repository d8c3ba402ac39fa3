#pragma once
// convert --target-bpw X: the sensitivity pass. Before any unit is converted, the f32 source runs
// block by block on the calibration sequences (memory: one block's weights plus the activations,
// never the model); each tensor the policy leaves free is measured on the output format's ladder
// (quantizers/bit_budget.h default_bpw_ladder), and allocate_bit_budget chooses its scheme. The
// caller hands the choice to the quantize stage (pipeline/stages.h assign_schemes), which is where
// every later stage, a calibration stage included, takes its schemes from.
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "converters/architectures/architecture.h"
#include "core/thread_pool.h"
#include "pipeline/calib_data.h"
#include "quantizers/bit_budget.h"
#include "quantizers/policy.h"
#include "tokenizers/tokenizer.h"

namespace sf {

// How a block linear's loss in a scheme is measured (one row each in budget_measures()).
enum class BudgetMeasure : uint8_t {
  Block,  // the change of the block's output with the tensor encoded (the block rerun per scheme)
  Layer,  // the change of the layer's own output, scaled to what its sublayer writes to the stream
};
struct BudgetMeasureInfo {
  BudgetMeasure measure;
  const char* name;         // --bpw-measure
  const char* description;  // one line, for --help
};
const std::vector<BudgetMeasureInfo>& budget_measures();
std::optional<BudgetMeasure> budget_measure_from_name(const std::string& name);

struct BitBudgetRequest {
  double target_bpw = 0;
  CalibSpec calib;
  int64_t tokens = 0, ctx = 0;  // 0: the calibration stages' defaults (pipeline/calib_data.h)
  // Tensors the output format stores as one (GGUF's fused q, k, v of GPT-2; ChatGLM's gate and
  // up), which must then share a scheme: each group is one choice of the budget (its bytes,
  // weights and errors added). A group with a fixed member is left alone (the writer then checks
  // that the fixed and chosen types agree).
  std::vector<std::vector<std::string>> same_scheme;
  BudgetMeasure measure = BudgetMeasure::Block;
};

// At most this many calibration tokens (the first quarter of the sequences, whole, at least one)
// are what the block measure reruns each block on.
inline constexpr size_t kBlockMeasureTokens = 8192;

struct BitBudgetResult {
  BudgetAssignment assignment;
  std::map<std::string, Scheme> chosen;  // the tensors the pass chose (not the fixed ones)
  nlohmann::json manifest;               // assignment_json plus the calibration data and settings
  nlohmann::json report;                 // seconds, peak memory, measure: for convert's summary
};

// Layers whose input is at most this wide are measured with the Gram matrix of their inputs (the
// exact expected output error); wider models with its diagonal (O(rows x cols) per scheme instead
// of O(rows x cols^2)). One form per model, so the errors stay like for like.
inline constexpr int64_t kBitBudgetGramWidth = 2048;

// `fixed`: the tensors whose scheme is given (pipeline/stages.h policy_fixed_schemes); they count in
// the budget with that scheme. Every other tensor of the model is a candidate. A target below the
// smallest reachable bits per weight is a usage error naming it, raised before the model is run.
BitBudgetResult plan_bit_budget(const BitBudgetRequest& req, const CanonicalModel& model, const Tokenizer* tokenizer,
                                const FormatRules& format, const std::map<std::string, Scheme>& fixed,
                                const std::string& source, ThreadPool& pool);

}  // namespace sf
