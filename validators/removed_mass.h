#pragma once
// What a vocabulary trim costs, measured on the untrimmed model: at each scored position of the
// perplexity windows, the probability it gives to the ids the trim dropped. A trimmed f32 model's
// kept logits equal the untrimmed one's, so its distribution is the untrimmed one renormalized over
// the kept ids: this mass is exactly what the renormalization redistributes.
#include <cstdint>
#include <vector>

#include "core/thread_pool.h"
#include "executor/exec_model.h"
#include "formats/vocab_map.h"

namespace sf {

struct RemovedMass {
  double mean = 0, max = 0;      // of the dropped ids' total probability, over scored positions
  double untrimmed_ppl = 0;      // the untrimmed model's perplexity on the same positions
  int64_t tokens_scored = 0;
  int64_t dropped_targets = 0;   // positions whose next token the trim dropped
};

// `tokens` are tokenizer ids (the untrimmed model's), `bos` the tokenizer's; the windows are those
// of eval ppl with the same ctx and chunks. The untrimmed model's vocabulary must be map.old_size().
RemovedMass removed_mass(const ExecModel& untrimmed, const VocabMap& map, const std::vector<int>& tokens,
                         int64_t ctx, int bos, int64_t chunks, ThreadPool& pool);

}  // namespace sf
