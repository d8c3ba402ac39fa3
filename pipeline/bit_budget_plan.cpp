// The sensitivity pass of --target-bpw (pipeline/bit_budget_plan.h). The f32 model is run as the
// calibration stages run it, without encoding anything: X0 from the embedding, each block run on
// X_i in place while a tap gathers its linear groups' input statistics, the output projection
// measured on the head norm of X_N. The embedding's lookup use is measured on the share of
// calibration tokens each row gets; a tied embedding adds its output use at the head.
#include "pipeline/bit_budget_plan.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <memory>

#include "core/error.h"
#include "executor/kernels.h"
#include "executor/session.h"
#include "pipeline/awq_fold.h"
#include "pipeline/calib_run.h"
#include "pipeline/encode_check.h"
#include "pipeline/unit.h"
#include "validators/speed.h"

namespace sf {

namespace {

size_t rows_of(const TensorSpec& t) {
  size_t rows = 1;
  for (size_t i = 0; i + 1 < t.shape.size(); ++i) rows *= size_t(t.shape[i]);
  return rows;
}
size_t cols_of(const TensorSpec& t) { return size_t(t.shape.back()); }

class SensitivityPass {
 public:
  SensitivityPass(const BitBudgetRequest& req, const CanonicalModel& model, const FormatRules& format,
                  const std::map<std::string, Scheme>& fixed, const std::string& source, ThreadPool& pool)
      : req_(req), model_(model), d_(model.desc), format_(format), fixed_(fixed), source_(source), pool_(pool) {
    const int64_t widest = std::max({d_.d_model, d_.ffn_dim, int64_t(group_width(d_, LinearInput::AttnOut))});
    gram_ = widest <= kBitBudgetGramWidth;
  }

  // Every tensor in its cheapest option, errors 0: allocate_bit_budget refuses a target it cannot
  // reach before the model is run.
  void check_reachable() const {
    std::vector<BudgetTensor> ts;
    for (const auto& t : all_tensors(d_)) {
      if (const auto it = fixed_.find(t.name); it != fixed_.end()) {
        ts.push_back(fixed_tensor(t.name, it->second, rows_of(t), cols_of(t)));
        continue;
      }
      BudgetTensor b{t.name, uint64_t(rows_of(t) * cols_of(t)), {}};
      for (const Scheme& s : default_bpw_ladder(format_, cols_of(t)))
        b.options.push_back({s, scheme_bytes(s, rows_of(t), cols_of(t)), 0.0});
      ts.push_back(std::move(b));
    }
    allocate_bit_budget(std::move(ts), req_.target_bpw);
  }

  void read_data(const Tokenizer* tokenizer) {
    ctx_ = calib_ctx(d_, req_.ctx);
    const int64_t tokens = req_.tokens > 0 ? req_.tokens : kDefaultCalibTokens;
    if (tokens < ctx_)
      fail_usage("--calib-tokens " + std::to_string(tokens) + " is fewer than one calibration sequence of " +
                 std::to_string(ctx_) + " tokens (--calib-ctx)");
    data_ = read_calib_data(req_.calib, tokenizer, d_, tokens, ctx_);
    const double bytes = double(data_.tokens.size()) * double(d_.d_model) * sizeof(float);
    if (bytes > double(physical_memory_bytes()))
      fail_usage("measuring --target-bpw on " + std::to_string(data_.tokens.size()) + " tokens needs " +
                 std::to_string(int64_t(bytes / double(1 << 20))) + " MiB of activations, more than this machine's "
                 "memory; use fewer --calib-tokens");
  }

  void run() {
    for (const auto& [kind, index] : unit_order(d_)) {
      Unit u = Unit::make(d_, kind, index);
      for (auto& t : u.tensors) {
        t.values = model_.load(t.spec.name);
        t.has_values = true;
      }
      for (auto& t : u.tensors) model_.release(t.spec.name);
      switch (kind) {
        case UnitKind::Embedding: embedding(u); break;
        case UnitKind::Block: block(u); break;
        case UnitKind::Head: head(u); break;
      }
    }
    if (tied_lookup_) fail("bit budget: the tied embedding's output use was not measured (no head unit)");
  }

  BitBudgetResult result(double seconds) {
    BitBudgetResult r;
    const auto members = join_groups();
    r.assignment = allocate_bit_budget(std::move(tensors_), req_.target_bpw);
    split_groups(r.assignment, members);
    for (const BudgetChoice& c : r.assignment.tensors)
      if (!fixed_.count(c.name)) r.chosen.emplace(c.name, c.scheme);
    r.manifest = assignment_json(r.assignment);
    r.manifest["calib"] = recorded_calib_spec(req_.calib);
    r.manifest["file_sha256"] = data_.sha256;
    r.manifest["sequences"] = data_.n_seq;
    r.manifest["ctx"] = data_.ctx;
    r.manifest["tokens_used"] = data_.n_seq * data_.ctx;
    r.manifest["measure"] = req_.measure == BudgetMeasure::Block ? "block" : gram_ ? "gram" : "diagonal";
    r.report = {{"seconds", seconds},
                {"peak_rss_bytes", peak_rss_bytes()},
                {"sequences", data_.n_seq},
                {"tokens_used", data_.n_seq * data_.ctx},
                {"measure", r.manifest["measure"]},
                {"target_bpw", r.assignment.target_bpw},
                {"achieved_bpw", r.assignment.achieved_bpw},
                {"table", assignment_table(r.assignment)}};
    return r;
  }

 private:
  // The same_scheme groups whose members are all free, each replaced in tensors_ by one tensor
  // named after its first member: the schemes every member has, bytes, weights and errors added.
  // Returns the members' own measures by the group's name.
  std::map<std::string, std::vector<BudgetTensor>> join_groups() {
    std::map<std::string, std::vector<BudgetTensor>> members;
    for (const auto& group : req_.same_scheme) {
      std::vector<size_t> at;
      for (const auto& name : group)
        for (size_t i = 0; i < tensors_.size(); ++i)
          if (tensors_[i].name == name && !fixed_.count(name)) at.push_back(i);
      if (at.size() != group.size() || at.size() < 2) continue;
      BudgetTensor joined = tensors_[at[0]];
      joined.options.clear();
      for (const BudgetOption& o : tensors_[at[0]].options) {
        BudgetOption sum{o.scheme, 0, 0.0};
        bool everywhere = true;
        for (size_t i : at) {
          const auto& opts = tensors_[i].options;
          const auto it = std::find_if(opts.begin(), opts.end(), [&](const BudgetOption& x) { return x.scheme == o.scheme; });
          if (it == opts.end()) everywhere = false;
          else sum.bytes += it->bytes, sum.error += it->error;
        }
        if (everywhere) joined.options.push_back(sum);
      }
      if (joined.options.empty()) fail("bit budget: no scheme of the ladder holds every part of " + group[0]);
      joined.weights = 0;
      auto& kept = members[joined.name];
      for (size_t i : at) {
        joined.weights += tensors_[i].weights;
        kept.push_back(tensors_[i]);
      }
      std::sort(at.rbegin(), at.rend());
      for (size_t i : at) tensors_.erase(tensors_.begin() + std::ptrdiff_t(i));
      tensors_.push_back(std::move(joined));
    }
    return members;
  }
  // Each joined group's choice given back to its members, with their own bytes, weights and errors.
  static void split_groups(BudgetAssignment& a, const std::map<std::string, std::vector<BudgetTensor>>& members) {
    std::vector<BudgetChoice> out;
    for (const BudgetChoice& c : a.tensors) {
      const auto it = members.find(c.name);
      if (it == members.end()) {
        out.push_back(c);
        continue;
      }
      for (const BudgetTensor& m : it->second)
        for (const BudgetOption& o : m.options)
          if (o.scheme == c.scheme) out.push_back({m.name, o.scheme, o.bytes, m.weights, o.error});
    }
    std::sort(out.begin(), out.end(), [](const BudgetChoice& x, const BudgetChoice& y) { return x.name < y.name; });
    a.tensors = std::move(out);
  }

  // A tensor the policy fixes is added as it is; returns whether t was one.
  bool add_fixed(const UnitTensor& t) {
    const auto it = fixed_.find(t.spec.name);
    if (it == fixed_.end()) return false;
    tensors_.push_back(fixed_tensor(t.spec.name, it->second, rows_of(t.spec), cols_of(t.spec)));
    return true;
  }
  std::vector<Scheme> ladder(const UnitTensor& t) const { return default_bpw_ladder(format_, cols_of(t.spec)); }
  [[noreturn]] static void no_measure(const UnitTensor& t) {
    fail(std::string("bit budget: no sensitivity measure for tensor ") + t.spec.name + " (" + role_name(t.spec.role) +
         "); fix its scheme with --tensor-quant");
  }

  // Scales every option's error of t (measured relative to its own output) by `factor`.
  static BudgetTensor scaled(BudgetTensor t, double factor) {
    for (BudgetOption& o : t.options) o.error *= factor;
    return t;
  }
  // X0 (each calibration token's embedding row plus its learned position row) and the lookups: a
  // relative error of X0, the residual stream as it starts.
  void embedding(Unit& u) {
    const UnitTensor *embed = nullptr, *pos = nullptr;
    for (const auto& t : u.tensors) {
      if (t.spec.role == TensorRole::TokenEmbedding) embed = &t;
      if (t.spec.role == TensorRole::PositionEmbedding) pos = &t;
    }
    if (!embed) fail("bit budget: the embedding unit has no token embedding");
    for (const auto& t : u.tensors) {
      if (add_fixed(t)) continue;
      const size_t rows = rows_of(t.spec), cols = cols_of(t.spec);
      if (&t == pos) {
        // Every position is used alike (uniform shares): eval and run read them beyond --calib-ctx.
        tensors_.push_back(measure_lookup(t.spec.name, t.values.data(), rows, cols, ladder(t), {}, &pool_));
      } else if (&t == embed) {
        std::vector<double> share(rows, 0.0);
        for (int32_t id : data_.tokens) share[size_t(id)] += 1.0 / double(data_.tokens.size());
        BudgetTensor b = measure_lookup(t.spec.name, t.values.data(), rows, cols, ladder(t), share, &pool_);
        if (d_.tied_embeddings) tied_lookup_ = std::make_unique<BudgetTensor>(std::move(b));
        else tensors_.push_back(std::move(b));
      } else {
        no_measure(t);
      }
    }
    const size_t D = size_t(d_.d_model), rows = data_.tokens.size();
    x_.assign(rows * D, 0.0f);
    std::vector<float> row, prow;
    std::vector<uint8_t> bytes;
    for (size_t t = 0; t < rows; ++t) {
      decoded_row(*embed, nullptr, size_t(data_.tokens[t]), row, bytes);
      if (pos) {
        const SequencePrefix prefix = sequence_prefix(d_, &data_.tokens[t - t % data_.ctx], data_.ctx);
        decoded_row(*pos, nullptr, size_t(place_row(d_, prefix, int64_t(t % data_.ctx)).pos_a), prow, bytes);
        for (size_t i = 0; i < D; ++i) row[i] += prow[i];
      }
      std::copy(row.begin(), row.end(), &x_[t * D]);
    }
  }

  // X_i through the f32 block in place, gathering each group's input statistics; then its linears.
  // A linear's relative output error is taken as that relative error of what its sublayer writes
  // to the residual stream (attention writes through o, the FFN through down), times what that
  // write is to the stream (its energy over the stream's, before attention, after the FFN): a
  // relative error of the stream, like the embedding's. (In a pre-norm model the stream grows and
  // the later blocks' writes are a smaller part of it.)
  void block(Unit& u) {
    const std::string prefix = block_prefix(u.index);
    std::vector<TensorView> views;
    views.reserve(u.tensors.size());
    LayerWeights w;
    for (const auto& t : u.tensors) {
      refuse_non_finite_values(t, source_);  // the f32 run cannot use them
      const LayerSlot slot = layer_slot(t.spec.name.substr(prefix.size()));
      if (!slot) fail("bit budget: tensor " + t.spec.name + " has no place in the executor");
      views.push_back(f32_view(t));
      w.*slot = &views.back();
    }
    StatsTap tap(d_, gram_, pool_);
    const double stream_in = stream_energy();
    // The block measure reruns the block on the first sequences' input, one tensor encoded at a time.
    const size_t D = size_t(d_.d_model), probe_seq = probe_sequences();
    std::vector<float> probe_in;
    if ((req_.measure == BudgetMeasure::Block)) probe_in.assign(x_.begin(), x_.begin() + ptrdiff_t(probe_seq * data_.ctx * D));
    run_block_on_sequences(d_, w, data_.tokens.data(), x_.data(), data_.n_seq, data_.ctx, &pool_, &tap);
    tap.finish();
    auto written = [&](LinearInput writer) {
      const auto names = group_linears(d_, writer);
      for (const auto& t : u.tensors)
        if (names.size() == 1 && t.spec.name == prefix + names[0])
          return output_energy(t.values.data(), rows_of(t.spec), cols_of(t.spec), tap.stats[size_t(writer)], &pool_);
      fail("bit budget: block " + std::to_string(u.index) + " has no single linear writing its " +
           linear_input_name(writer) + " output");
    };
    const double stream_out = stream_energy();
    const double attn = stream_in > 0 ? written(LinearInput::AttnOut) / stream_in : 1.0;
    const double ffn = stream_out > 0 ? written(LinearInput::FfnMid) / stream_out : 1.0;
    for (const auto& t : u.tensors) {
      if (add_fixed(t)) continue;
      const InputStats* stats = nullptr;
      double energy = 0;
      for (size_t g = 0; g < kLinearInputs && !stats; ++g)
        for (const auto& n : group_linears(d_, LinearInput(g)))
          if (prefix + n == t.spec.name) {
            stats = &tap.stats[g];
            energy = LinearInput(g) == LinearInput::AttnIn || LinearInput(g) == LinearInput::AttnOut ? attn : ffn;
          }
      if (!stats || t.spec.role != TensorRole::LinearWeight) no_measure(t);
      BudgetTensor b =
          measure_linear(t.spec.name, t.values.data(), rows_of(t.spec), cols_of(t.spec), ladder(t), *stats, &pool_);
      if ((req_.measure == BudgetMeasure::Block)) {
        const size_t slot = size_t(&t - u.tensors.data());
        for (BudgetOption& o : b.options) o.error = block_error(u, views, w, slot, o.scheme, probe_in, probe_seq);
        tensors_.push_back(std::move(b));
      } else {
        tensors_.push_back(scaled(std::move(b), energy));
      }
    }
  }

  // Whole sequences from the start of the calibration data that the block measure reruns: a
  // quarter of them, at most kBlockMeasureTokens tokens, at least one sequence.
  size_t probe_sequences() const {
    return std::max<size_t>(1, std::min(data_.n_seq / 4, kBlockMeasureTokens / data_.ctx));
  }

  // The block measure of tensor `slot` of u in `scheme`: the block rerun on its f32 input with that
  // one tensor encoded by round-to-nearest, and the squared change of its output relative to the
  // output's energy, E|Δy|² / E|y|² (y: the stream after the block, x_ now). A relative error of the
  // stream, like the embedding's, with everything the block does to the tensor's error on the way
  // (SiLU and the product with up for the gate, softmax for q and k) included.
  double block_error(const Unit& u, std::vector<TensorView>& views, LayerWeights& w, size_t slot, const Scheme& scheme,
                     const std::vector<float>& probe_in, size_t probe_seq) {
    const UnitTensor& t = u.tensors[slot];
    UnitTensor enc;
    enc.spec = t.spec;
    EncodedTensor& e = enc.start_encoding(scheme.type, scheme.group);
    const size_t rows = size_t(e.rows()), cols = size_t(e.cols()), rb = e.row_bytes();
    e.data.assign(rows * rb, 0);
    const auto& tr = qtype_traits(scheme.type);
    pool_.parallel_for(rows, [&](size_t b, size_t end) {
      for (size_t r = b; r < end; ++r) tr.quantize_row(&t.values[r * cols], cols, scheme.group, &e.data[r * rb]);
    });
    enc.has_encoded = true;
    const TensorView saved = views[slot];
    views[slot] = encoded_view(enc);
    std::vector<float> y(probe_in);
    run_block_on_sequences(d_, w, data_.tokens.data(), y.data(), probe_seq, data_.ctx, &pool_, nullptr);
    views[slot] = saved;
    double err = 0, energy = 0;
    for (size_t i = 0; i < y.size(); ++i) {
      const double ref = x_[i];
      err += (double(y[i]) - ref) * (double(y[i]) - ref);
      energy += ref * ref;
    }
    return energy > 0 ? err / energy : 0.0;
  }

  // E|x|² per token of the activations x_ (summed in row order: the same bits at any -t).
  double stream_energy() const {
    const size_t D = size_t(d_.d_model), rows = data_.tokens.size();
    double sum = 0;
    for (size_t r = 0; r < rows; ++r) {
      double row = 0;
      for (size_t i = 0; i < D; ++i) row += double(x_[r * D + i]) * double(x_[r * D + i]);
      sum += row;
    }
    return rows ? sum / double(rows) : 0.0;
  }

  // The output projection on the head norm's output n: its error E|ΔW n|² relative to what a
  // perturbation of n spread over every direction, as large as n, would do to the logits:
  // ‖W_c‖²_F E|n|² / d_model, W_c the output matrix less its mean row (softmax ignores a shift of
  // all logits). A relative error ε of the stream reaching the head moves n by about ε|n| in no
  // particular direction, so this is on the same scale as the stream's errors; measured relative to
  // the logits' own energy instead, it would be far smaller, as n points where W is large (on the
  // sample model the output projection then took int4 at every budget, and the perplexity lost to
  // it was the largest of any tensor).
  void head(Unit& u) {
    const UnitTensor *norm = nullptr, *bias = nullptr, *out = nullptr;
    for (const auto& t : u.tensors) {
      if (t.spec.role == TensorRole::NormWeight) norm = &t;
      if (t.spec.role == TensorRole::NormBias) bias = &t;
      if (t.spec.role == TensorRole::Output) out = &t;
    }
    for (const auto& t : u.tensors)
      if (!add_fixed(t) && &t != out) no_measure(t);
    if (!norm) fail("bit budget: the head has no norm");
    // The output matrix: the head's, or the tied embedding's (which the policy may fix).
    const auto all = all_tensors(d_);
    const TensorSpec* spec = out ? &out->spec : nullptr;
    for (const auto& t : all)
      if (!spec && t.role == TensorRole::TokenEmbedding) spec = &t;
    if (!spec) fail("bit budget: no output matrix");
    if (fixed_.count(spec->name)) return;
    const size_t D = size_t(d_.d_model), rows = data_.tokens.size();
    const TensorView nw = f32_view(*norm);
    TensorView nb;
    if (bias) nb = f32_view(*bias);
    InputStats st;
    st.reset(D, gram_, 0);
    std::vector<float> xn(std::min<size_t>(rows, 4096) * D);
    for (size_t r0 = 0; r0 < rows; r0 += 4096) {
      const size_t n = std::min<size_t>(4096, rows - r0);
      kernels::norm(d_.norm, &x_[r0 * D], n, D, nw, bias ? &nb : nullptr, d_.norm_eps, xn.data());
      st.add(xn.data(), n, &pool_);
    }
    std::vector<float>().swap(x_);

    // The tied embedding again (released after the embedding unit: one matrix at a time in memory).
    std::vector<float> tied;
    if (!out) {
      tied = model_.load(spec->name);
      model_.release(spec->name);
    }
    const std::vector<float>& wo = out ? out->values : tied;
    const size_t vocab = rows_of(*spec);
    std::vector<double> mean(D, 0.0);
    for (size_t r = 0; r < vocab; ++r)
      for (size_t j = 0; j < D; ++j) mean[j] += double(wo[r * D + j]) / double(vocab);
    double spread = 0;  // ‖W_c‖²_F
    for (size_t r = 0; r < vocab; ++r)
      for (size_t j = 0; j < D; ++j) {
        const double v = double(wo[r * D + j]) - mean[j];
        spread += v * v;
      }
    double n_energy = 0;  // E|n|² per token
    for (double v : st.sum_sq) n_energy += v;
    n_energy = st.tokens ? n_energy / double(st.tokens) : 0.0;
    const double isotropic = spread * n_energy / double(D);

    BudgetTensor b = measure_linear(spec->name, wo.data(), vocab, D, default_bpw_ladder(format_, D), st, &pool_);
    if (isotropic > 0) b = scaled(std::move(b), output_energy(wo.data(), vocab, D, st, &pool_) / isotropic);
    if (tied_lookup_) b = combine_uses(*tied_lookup_, b);
    tensors_.push_back(std::move(b));
    tied_lookup_.reset();
  }

  const BitBudgetRequest& req_;
  const CanonicalModel& model_;
  const ModelDesc& d_;
  const FormatRules& format_;
  const std::map<std::string, Scheme>& fixed_;
  const std::string& source_;
  ThreadPool& pool_;
  bool gram_ = true;
  int64_t ctx_ = 0;
  CalibData data_;
  std::vector<float> x_;  // the activations entering the next block: n_seq x ctx x d_model
  std::vector<BudgetTensor> tensors_;
  std::unique_ptr<BudgetTensor> tied_lookup_;  // a tied embedding's lookup use, until its output use
};

}  // namespace

const std::vector<BudgetMeasureInfo>& budget_measures() {
  static const std::vector<BudgetMeasureInfo> m = {
      {BudgetMeasure::Block, "block",
       "the change of each block's output with the tensor encoded (a block run per tensor and scheme)"},
      {BudgetMeasure::Layer, "layer",
       "the change of each layer's own output, scaled to its share of the residual stream (no extra runs)"},
  };
  return m;
}

std::optional<BudgetMeasure> budget_measure_from_name(const std::string& name) {
  for (const auto& m : budget_measures())
    if (name == m.name) return m.measure;
  return std::nullopt;
}

BitBudgetResult plan_bit_budget(const BitBudgetRequest& req, const CanonicalModel& model, const Tokenizer* tokenizer,
                                const FormatRules& format, const std::map<std::string, Scheme>& fixed,
                                const std::string& source, ThreadPool& pool) {
  const auto start = std::chrono::steady_clock::now();
  SensitivityPass pass(req, model, format, fixed, source, pool);
  pass.check_reachable();
  pass.read_data(tokenizer);
  pass.run();
  return pass.result(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
}

}  // namespace sf
