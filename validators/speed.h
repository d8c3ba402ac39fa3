#pragma once
// Speed of the executor on an artifact: load time, prefill and decode throughput, peak RSS.
#include <cstdint>
#include <string>
#include <vector>

#include "core/model_desc.h"

namespace sf {

// A throughput measured `reps` times: one run is noise (a busy neighbour halves it), so report the
// median and the range.
struct Throughput {
  double median = 0, min = 0, max = 0;
};

struct SpeedResult {
  double load_seconds = 0;
  int64_t prefill_tokens = 0, decode_tokens = 0, reps = 0;
  double prefill_tokens_per_s = 0, decode_tokens_per_s = 0;  // medians over the repetitions
  Throughput prefill, decode;
  int64_t peak_rss_bytes = 0;
  int64_t threads = 0;
};

// Loads the artifact once, then runs `reps` fresh sessions of prefill + decode tokens. Shows the
// tokens done as a progress bar labelled `label` on a terminal.
SpeedResult measure_speed(const std::string& artifact_dir, int64_t prefill, int64_t decode, int64_t threads,
                          int64_t reps = 1, const std::string& label = "bench");
int64_t peak_rss_bytes();
// The prompt bench times: a fixed pseudo-random sequence of n ids that avoids the model's special
// ids. For a causal model any ids do the same work, but a prefix-bidirectional one (ChatGLM-6B)
// reads <sop> as the end of a bidirectional prefix and [gMASK] / [MASK] as the position it
// generates from: a special id drawn at random would change the mask and positions, and
// differently for each vocabulary size, so two artifacts of one model (a trimmed one renumbers
// them) would not be timed on the same work. Without them the whole prompt is causal.
std::vector<int32_t> bench_prompt(const ModelDesc& desc, int64_t n);

}  // namespace sf
