#pragma once
// Speed of the executor on an artifact: load time, prefill and decode throughput, peak RSS.
#include <cstdint>
#include <string>

namespace sf {

struct SpeedResult {
  double load_seconds = 0;
  int64_t prefill_tokens = 0, decode_tokens = 0;
  double prefill_tokens_per_s = 0, decode_tokens_per_s = 0;
  int64_t peak_rss_bytes = 0;
  int64_t threads = 0;
};

SpeedResult measure_speed(const std::string& artifact_dir, int64_t prefill, int64_t decode, int64_t threads);
int64_t peak_rss_bytes();

}  // namespace sf
