#pragma once
// AWQ's scales folded into the model: a linear group's input columns are multiplied by s and the
// op before the group divides its outputs by s, so the f32 model computes the same function and
// the artifact needs no extra operation. One row per linear group says which op that is and when
// the model's settings leave it unable to absorb a scale.
#include <functional>
#include <string>
#include <vector>

#include "core/model_desc.h"
#include "executor/block.h"
#include "quantizers/calibration.h"

namespace sf {

struct AwqFoldRule {
  LinearInput input;
  const char* preceding;  // the op absorbing 1/s, for reports: "attn_norm", "attn.v", ...
  // Why these settings cannot fold into it, or null when they can.
  const char* (*cannot_fold)(const ModelDesc&);
};
const std::vector<AwqFoldRule>& awq_fold_rules();
const AwqFoldRule& awq_fold_rule(LinearInput g);

// The weight names (after "blocks.N.") of the linears reading input g: attn.q.weight, ...
std::vector<std::string> group_linears(const ModelDesc& d, LinearInput g);
// Width of input g: d_model, n_heads x head_dim, d_model, ffn_dim.
size_t group_width(const ModelDesc& d, LinearInput g);

// A block tensor's f32 values by name after "blocks.N.", null when the model has none.
using BlockValues = std::function<std::vector<float>*(const std::string& name_in_block)>;

// Folds scales s (group_width of them, > 0) for group g into the block: its linears' columns times
// s, the preceding op's outputs divided by s. Refuses (internal error) a group its rule says the
// settings cannot fold.
void awq_fold(const ModelDesc& d, LinearInput g, const std::vector<float>& s, const BlockValues& block);

// The statistics of a group's input once its scales are folded (x' = x / s per channel): sums,
// Gram matrix and sample rows rescaled, so the encoding sees the folded block's inputs without
// running it again.
void rescale_stats(InputStats& stats, const std::vector<float>& s);

}  // namespace sf
