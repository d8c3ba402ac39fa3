#include "quantizers/bit_budget.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <map>
#include <sstream>

#include <Eigen/Core>

#include "core/checked.h"
#include "core/error.h"

namespace sf {

namespace {

// ---------------------------------------------------------------- sensitivity

// Rows are measured in fixed blocks of this many: the blocks (not the pool's chunks) decide every
// floating-point operation, so the per-row errors are the same bits whatever the thread count, and
// a block is one matrix product against the Gram matrix rather than a vector at a time (64 rows
// amortise packing the cols x cols matrix: twice as fast as 16 on 2048 x 2048, and faster than 256).
constexpr size_t kRowBlock = 64;

enum class RowState : uint8_t { Ok, Skip, Undecodable };

// The vector whose quadratic form one row contributes: Δw = decoded - original for a scheme, or the
// weights themselves (scheme == nullptr) for the energy.
struct RowVectors {
  const float* w;
  size_t cols;
  const Scheme* scheme;

  RowState fill(size_t r, double* out, std::vector<uint8_t>& bytes, std::vector<float>& decoded) const {
    const float* row = w + r * cols;
    for (size_t j = 0; j < cols; ++j)
      if (!std::isfinite(row[j])) return RowState::Skip;
    if (!scheme) {
      for (size_t j = 0; j < cols; ++j) out[j] = row[j];
      return RowState::Ok;
    }
    const QTypeTraits& tr = qtype_traits(scheme->type);
    bytes.assign(tr.row_bytes(cols, scheme->group), 0);  // quantize_row ORs nibbles into zeroed bytes
    decoded.resize(cols);
    tr.quantize_row(row, cols, scheme->group, bytes.data());
    tr.dequantize_row(bytes.data(), cols, scheme->group, decoded.data());
    for (size_t j = 0; j < cols; ++j) {
      if (!std::isfinite(decoded[j])) return RowState::Undecodable;
      out[j] = double(decoded[j]) - double(row[j]);
    }
    return RowState::Ok;
  }
};

using RowMajor = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

// How a block of row vectors (nb x cols, skipped rows zero) becomes per-row errors.
struct Weighting {
  const double* gram = nullptr;        // cols x cols, or null
  std::vector<double> column_weight;   // per column (diagonal importance), or empty
  const std::vector<double>* row_weight = nullptr;  // per row (lookup share), or null: 1/rows

  void block_errors(const RowMajor& d, size_t first_row, size_t rows, double* out) const {
    const Eigen::Index nb = d.rows(), cols = d.cols();
    if (gram) {
      const Eigen::Map<const RowMajor> g(gram, cols, cols);
      const RowMajor dg = d * g;
      for (Eigen::Index k = 0; k < nb; ++k) out[k] = d.row(k).dot(dg.row(k));
    } else if (!column_weight.empty()) {
      for (Eigen::Index k = 0; k < nb; ++k) {
        double s = 0;
        for (Eigen::Index j = 0; j < cols; ++j) s += column_weight[j] * d(k, j) * d(k, j);
        out[k] = s;
      }
    } else {
      for (Eigen::Index k = 0; k < nb; ++k) {
        const double share = row_weight ? (*row_weight)[first_row + k] : 1.0 / double(rows);
        out[k] = share * d.row(k).squaredNorm();
      }
    }
  }
};

// Σ over rows of the weighted quadratic form of each row's vector, summed in row order.
double sum_over_rows(const RowVectors& src, size_t rows, const Weighting& weighting, double scale, ThreadPool* pool) {
  if (rows == 0 || src.cols == 0) return 0;
  std::vector<double> row_error(rows, 0.0);
  std::vector<uint8_t> undecodable(rows, 0);
  const size_t blocks = (rows + kRowBlock - 1) / kRowBlock;
  const auto run = [&](size_t first_block, size_t end_block) {
    std::vector<uint8_t> bytes;
    std::vector<float> decoded;
    std::vector<double> vec(src.cols);
    for (size_t b = first_block; b < end_block; ++b) {
      const size_t r0 = b * kRowBlock, nb = std::min(kRowBlock, rows - r0);
      RowMajor d = RowMajor::Zero(Eigen::Index(nb), Eigen::Index(src.cols));
      for (size_t k = 0; k < nb; ++k) {
        const RowState s = src.fill(r0 + k, vec.data(), bytes, decoded);
        if (s == RowState::Undecodable) undecodable[r0 + k] = 1;
        if (s != RowState::Ok) continue;
        for (size_t j = 0; j < src.cols; ++j) d(Eigen::Index(k), Eigen::Index(j)) = vec[j];
      }
      weighting.block_errors(d, r0, rows, &row_error[r0]);
    }
  };
  if (pool && pool->size() > 1) pool->parallel_for(blocks, run);
  else run(0, blocks);
  double total = 0;
  for (size_t r = 0; r < rows; ++r) {
    if (undecodable[r]) return std::numeric_limits<double>::infinity();
    total += row_error[r];
  }
  return total * scale;
}

Weighting input_weighting(size_t cols, const InputStats& stats) {
  if (stats.channels != cols)
    fail("output error: input statistics of " + std::to_string(stats.channels) + " channels for a layer of " +
         std::to_string(cols) + " columns");
  if (stats.tokens == 0) fail("output error: no calibration tokens in the input statistics");
  Weighting w;
  if (stats.with_gram && stats.gram.size() == cols * cols) {
    w.gram = stats.gram.data();
  } else {
    if (stats.sum_sq.size() != cols) fail("output error: input statistics without per-channel sums");
    w.column_weight.resize(cols);
    for (size_t j = 0; j < cols; ++j) w.column_weight[j] = stats.sum_sq[j] / double(stats.tokens);
  }
  return w;
}

double input_scale(const InputStats& stats, const Weighting& w) { return w.gram ? 1.0 / double(stats.tokens) : 1.0; }

Weighting lookup_weighting(size_t rows, const std::vector<double>& row_share) {
  if (!row_share.empty() && row_share.size() != rows)
    fail("lookup error: " + std::to_string(row_share.size()) + " row shares for " + std::to_string(rows) + " rows");
  Weighting w;
  if (!row_share.empty()) w.row_weight = &row_share;
  return w;
}

// Options from per-scheme errors and the tensor's energy (see measure_linear in the header).
template <class ErrorOf>
BudgetTensor measure(const std::string& name, size_t rows, size_t cols, const std::vector<Scheme>& ladder,
                     double energy, ErrorOf error_of) {
  BudgetTensor t{name, checked_mul(uint64_t(rows), uint64_t(cols), "tensor " + name), {}};
  for (const Scheme& s : ladder) {
    const double e = energy > 0 ? error_of(s) / energy : 0.0;
    if (!std::isfinite(e)) continue;  // the scheme cannot hold this tensor's values
    t.options.push_back({s, scheme_bytes(s, rows, cols), std::max(0.0, e)});
  }
  if (t.options.empty()) fail("tensor " + name + ": no candidate scheme of the bit budget can hold its values");
  return t;
}

// ---------------------------------------------------------------- ladder

// Rungs of the default ladder, cheapest first; each takes its first alternative the format stores.
struct Rung {
  const char* alternatives[2];
};
constexpr Rung kLadder[] = {
    {{"int4:g128", nullptr}},
    {{"int4:g32", "q4_0"}},
    {{"int8", "q8_0"}},
    {{"f16", nullptr}},
};

bool is_block_type(QType t) { return t == QType::Q8_0 || t == QType::Q4_0; }
constexpr size_t kBlockElements = 32;  // ggml's q4_0 / q8_0

// ---------------------------------------------------------------- allocation

// At most this many budget steps in the knapsack (the table is tensors x steps bytes).
constexpr uint64_t kMaxSteps = 65536;

void check_tensors(const std::vector<BudgetTensor>& tensors) {
  if (tensors.empty()) fail("bit budget: no tensors");
  for (size_t i = 0; i < tensors.size(); ++i) {
    const BudgetTensor& t = tensors[i];
    if (i > 0 && tensors[i - 1].name == t.name) fail("bit budget: tensor " + t.name + " given twice");
    if (t.options.empty() || t.options.size() > 255)
      fail("bit budget: tensor " + t.name + " needs 1 to 255 options, has " + std::to_string(t.options.size()));
    for (const BudgetOption& o : t.options)
      if (!std::isfinite(o.error) || o.error < 0)
        fail("bit budget: tensor " + t.name + ", " + o.scheme.name() + ": error is not a finite number >= 0");
  }
}

// The smallest bits per weight, up to 4 decimals, that is not below bytes x 8 / weights: a target
// given as printed is reachable.
double bpw_rounded_up(uint64_t bytes, uint64_t weights) {
  const double bpw = 8.0 * double(bytes) / double(weights);
  double up = std::ceil(bpw * 1e4) / 1e4;
  while (up * double(weights) < 8.0 * double(bytes)) up += 1e-4;
  return up;
}

// Options of each tensor by bytes, and of equal bytes the least error last (ladder order on full
// ties): option 0 is the cheapest, the last the largest and, of the largest, the best.
void sort_options(BudgetTensor& t) {
  std::stable_sort(t.options.begin(), t.options.end(), [](const BudgetOption& a, const BudgetOption& b) {
    return a.bytes != b.bytes ? a.bytes < b.bytes : a.error > b.error;
  });
}

// Multiple-choice knapsack over `steps` budget steps of `unit` spare bytes each. Suffix table:
// best[c] = least error of tensors i.. with c steps; choice[i][c] the option tensor i takes there.
// Walking forward from tensor 0 with the whole budget, ties go to the larger option, so the first
// tensor by name is upgraded first.
std::vector<size_t> knapsack(const std::vector<BudgetTensor>& ts, uint64_t unit, uint64_t steps) {
  const size_t n = ts.size(), width = size_t(steps) + 1;
  std::vector<std::vector<uint64_t>> cost(n);
  for (size_t i = 0; i < n; ++i)
    for (const BudgetOption& o : ts[i].options) cost[i].push_back((o.bytes - ts[i].options[0].bytes + unit - 1) / unit);
  std::vector<uint8_t> choice(n * width, 0);
  std::vector<double> next(width, 0.0), cur(width);
  for (size_t i = n; i-- > 0;) {
    for (size_t c = 0; c < width; ++c) {
      double best = std::numeric_limits<double>::infinity();
      for (size_t o = 0; o < ts[i].options.size(); ++o) {
        if (cost[i][o] > c) continue;
        const double v = ts[i].options[o].error + next[c - cost[i][o]];
        if (v <= best) {  // options ascend in bytes: on a tie the larger one wins
          best = v;
          choice[i * width + c] = uint8_t(o);
        }
      }
      cur[c] = best;  // option 0 costs 0 steps, so always finite
    }
    std::swap(cur, next);
  }
  std::vector<size_t> pick(n);
  uint64_t c = steps;
  for (size_t i = 0; i < n; ++i) {
    pick[i] = choice[i * width + c];
    c -= cost[i][pick[i]];
  }
  return pick;
}

// Spends bytes the rounding left: the upgrade with the best error saved per byte that fits, again
// and again (each strictly lowers the total error, so at most tensors x options rounds).
void repair(const std::vector<BudgetTensor>& ts, std::vector<size_t>& pick, uint64_t spare) {
  for (;;) {
    size_t best_i = 0, best_o = 0;
    double best_rate = 0;
    for (size_t i = 0; i < ts.size(); ++i) {
      const BudgetOption& now = ts[i].options[pick[i]];
      for (size_t o = 0; o < ts[i].options.size(); ++o) {
        const BudgetOption& up = ts[i].options[o];
        if (up.bytes <= now.bytes || up.bytes - now.bytes > spare || !(up.error < now.error)) continue;
        const double rate = (now.error - up.error) / double(up.bytes - now.bytes);
        if (rate > best_rate) best_rate = rate, best_i = i, best_o = o;
      }
    }
    if (best_rate <= 0) return;
    spare -= ts[best_i].options[best_o].bytes - ts[best_i].options[pick[best_i]].bytes;
    pick[best_i] = best_o;
  }
}

std::string fmt(const char* f, double v) {
  char b[64];
  std::snprintf(b, sizeof b, f, v);
  return b;
}

}  // namespace

// ---------------------------------------------------------------- public

double output_error(const float* w, size_t rows, size_t cols, const Scheme& scheme, const InputStats& stats,
                    ThreadPool* pool) {
  const Weighting wt = input_weighting(cols, stats);
  return sum_over_rows({w, cols, &scheme}, rows, wt, input_scale(stats, wt), pool);
}

double output_energy(const float* w, size_t rows, size_t cols, const InputStats& stats, ThreadPool* pool) {
  const Weighting wt = input_weighting(cols, stats);
  return sum_over_rows({w, cols, nullptr}, rows, wt, input_scale(stats, wt), pool);
}

double lookup_error(const float* w, size_t rows, size_t cols, const Scheme& scheme,
                    const std::vector<double>& row_share, ThreadPool* pool) {
  return sum_over_rows({w, cols, &scheme}, rows, lookup_weighting(rows, row_share), 1.0, pool);
}

double lookup_energy(const float* w, size_t rows, size_t cols, const std::vector<double>& row_share,
                     ThreadPool* pool) {
  return sum_over_rows({w, cols, nullptr}, rows, lookup_weighting(rows, row_share), 1.0, pool);
}

uint64_t scheme_bytes(const Scheme& scheme, size_t rows, size_t cols) {
  return checked_mul(uint64_t(rows), uint64_t(qtype_traits(scheme.type).row_bytes(cols, scheme.group)),
                     "tensor of scheme " + scheme.name());
}

std::vector<Scheme> default_bpw_ladder(const FormatRules& format, size_t cols) {
  const auto storable = [&](QType q) {
    if (!format.types.empty() && std::find(format.types.begin(), format.types.end(), q) == format.types.end())
      return false;
    return !(format.whole_blocks_only && is_block_type(q) && cols % kBlockElements != 0);
  };
  std::vector<Scheme> ladder;
  for (const Rung& rung : kLadder)
    for (const char* alt : rung.alternatives) {
      if (!alt) break;
      const Scheme s = parse_scheme(alt);
      if (!storable(s.type)) continue;
      ladder.push_back(s);
      break;
    }
  return ladder;
}

BudgetTensor measure_linear(const std::string& name, const float* w, size_t rows, size_t cols,
                            const std::vector<Scheme>& ladder, const InputStats& stats, ThreadPool* pool) {
  const double energy = output_energy(w, rows, cols, stats, pool);
  return measure(name, rows, cols, ladder, energy,
                 [&](const Scheme& s) { return output_error(w, rows, cols, s, stats, pool); });
}

BudgetTensor measure_lookup(const std::string& name, const float* w, size_t rows, size_t cols,
                            const std::vector<Scheme>& ladder, const std::vector<double>& row_share,
                            ThreadPool* pool) {
  const double energy = lookup_energy(w, rows, cols, row_share, pool);
  return measure(name, rows, cols, ladder, energy,
                 [&](const Scheme& s) { return lookup_error(w, rows, cols, s, row_share, pool); });
}

BudgetTensor fixed_tensor(const std::string& name, const Scheme& scheme, size_t rows, size_t cols) {
  return {name, checked_mul(uint64_t(rows), uint64_t(cols), "tensor " + name), {{scheme, scheme_bytes(scheme, rows, cols), 0.0}}};
}

BudgetTensor combine_uses(const BudgetTensor& first, const BudgetTensor& second) {
  BudgetTensor t{first.name, first.weights, {}};
  for (const BudgetOption& a : first.options)
    for (const BudgetOption& b : second.options)
      if (a.scheme == b.scheme) t.options.push_back({a.scheme, a.bytes, a.error + b.error});
  if (t.options.empty()) fail("tensor " + first.name + ": no candidate scheme of the bit budget can hold its values");
  return t;
}

BudgetAssignment allocate_bit_budget(std::vector<BudgetTensor> ts, double target_bpw) {
  if (!std::isfinite(target_bpw) || target_bpw <= 0)
    fail_usage("--target-bpw must be a positive number of bits per weight, not " + fmt("%g", target_bpw));
  std::sort(ts.begin(), ts.end(), [](const BudgetTensor& a, const BudgetTensor& b) { return a.name < b.name; });
  check_tensors(ts);
  uint64_t weights = 0, cheapest = 0, largest = 0;
  for (BudgetTensor& t : ts) {
    sort_options(t);
    weights = checked_add(weights, t.weights, "bit budget weights");
    cheapest = checked_add(cheapest, t.options.front().bytes, "bit budget bytes");
    largest = checked_add(largest, t.options.back().bytes, "bit budget bytes");
  }
  if (weights == 0) fail("bit budget: the tensors hold no weights");
  // Bytes allowed: floor(target x weights / 8), in long double so a 64-bit count loses nothing.
  const long double allowed_ld = std::floor((long double)target_bpw * (long double)weights / 8.0L);
  const uint64_t allowed = allowed_ld >= 1.8e19L ? std::numeric_limits<uint64_t>::max() : uint64_t(allowed_ld);
  if (cheapest > allowed)
    fail_usage("--target-bpw " + fmt("%g", target_bpw) + " is below what these tensors can reach: at least " +
               fmt("%.4f", bpw_rounded_up(cheapest, weights)) + " bits per weight (every tensor in its smallest scheme)");

  std::vector<size_t> pick(ts.size());
  if (largest <= allowed) {
    for (size_t i = 0; i < ts.size(); ++i) pick[i] = ts[i].options.size() - 1;
  } else {
    const uint64_t spare = allowed - cheapest;  // < largest - cheapest: no overflow below
    const uint64_t unit = std::max<uint64_t>(1, (spare + kMaxSteps - 1) / kMaxSteps);
    pick = knapsack(ts, unit, spare / unit);
    uint64_t used = 0;
    for (size_t i = 0; i < ts.size(); ++i) used += ts[i].options[pick[i]].bytes;
    repair(ts, pick, allowed - used);
  }

  BudgetAssignment a;
  a.target_bpw = target_bpw;
  a.weights = weights;
  for (size_t i = 0; i < ts.size(); ++i) {
    const BudgetOption& o = ts[i].options[pick[i]];
    a.tensors.push_back({ts[i].name, o.scheme, o.bytes, ts[i].weights, o.error});
    a.bytes += o.bytes;
    a.total_error += o.error;
  }
  a.achieved_bpw = 8.0 * double(a.bytes) / double(weights);
  return a;
}

nlohmann::json assignment_json(const BudgetAssignment& a) {
  nlohmann::json tensors = nlohmann::json::object();
  for (const BudgetChoice& c : a.tensors) tensors[c.name] = c.scheme.name();
  return {{"target_bpw", a.target_bpw}, {"achieved_bpw", a.achieved_bpw}, {"tensors", tensors}};
}

std::string assignment_table(const BudgetAssignment& a, bool per_tensor) {
  std::ostringstream out;
  if (per_tensor) {
    size_t width = 6;
    for (const BudgetChoice& c : a.tensors) width = std::max(width, c.name.size());
    for (const BudgetChoice& c : a.tensors) {
      out << c.name << std::string(width + 2 - c.name.size(), ' ') << c.scheme.name()
          << std::string(c.scheme.name().size() < 14 ? 14 - c.scheme.name().size() : 1, ' ')
          << fmt("%6.2f bits/weight", c.weights ? 8.0 * double(c.bytes) / double(c.weights) : 0.0)
          << fmt("  error %.3g", c.error) << '\n';
    }
  }
  struct Row {
    size_t tensors = 0;
    uint64_t weights = 0, bytes = 0;
  };
  std::map<std::string, Row> by_scheme;
  for (const BudgetChoice& c : a.tensors) {
    Row& r = by_scheme[c.scheme.name()];
    ++r.tensors;
    r.weights += c.weights;
    r.bytes += c.bytes;
  }
  out << "scheme          tensors      weights   share  bits/weight\n";
  for (const auto& [name, r] : by_scheme) {
    char line[160];
    std::snprintf(line, sizeof line, "%-14s %8zu %12llu  %5.1f%%  %11.3f\n", name.c_str(), r.tensors,
                  (unsigned long long)r.weights, 100.0 * double(r.weights) / double(a.weights),
                  r.weights ? 8.0 * double(r.bytes) / double(r.weights) : 0.0);
    out << line;
  }
  out << "target " << fmt("%.4g", a.target_bpw) << " bits/weight, achieved " << fmt("%.4f", a.achieved_bpw)
      << " over " << a.weights << " weights, total error " << fmt("%.4g", a.total_error) << '\n';
  return out.str();
}

}  // namespace sf
