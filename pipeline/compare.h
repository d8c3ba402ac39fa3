#pragma once
// `compare`: convert one source with several schemes and measure each against the first one -
// size, bits per weight, perplexity, KL-divergence, top-1 agreement, decode speed.
#include <cstdint>
#include <string>
#include <vector>

namespace sf {

struct CompareOptions {
  std::string source, text, tokenizer, keep_dir;  // keep_dir empty: artifacts go to a temporary directory
  std::vector<std::string> schemes;               // the first is the reference
  int64_t ctx = 256, chunks = -1, bench_tokens = 32;
  size_t threads = 0;
};

struct CompareRow {
  std::string scheme;
  uint64_t weight_bytes = 0;  // artifact files other than the manifest and the tokenizer
  double bits_per_weight = 0, ppl = 0, ppl_stderr = 0, kld = 0, kld_stderr = 0, top1 = 1;
  double prefill_tokens_per_s = 0, decode_tokens_per_s = 0;
  int64_t tokens_scored = 0;
};

std::vector<CompareRow> compare_schemes(const CompareOptions& opt);

}  // namespace sf
