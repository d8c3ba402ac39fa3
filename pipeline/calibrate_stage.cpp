// The calibration stages (calib_mse, calib_awq, calib_gptq: one per row of calib_methods()), between
// load and quantize. Block-sequential: the embedding unit gives the activations X0 of the
// calibration sequences; block i is run on X_i with its f32 weights while taps gather the inputs'
// statistics (executor/block.h), AWQ folds its scales into the op before each group
// (pipeline/awq_fold.h), every block linear the plan gives an integer type is encoded with
// encode_calibrated, and the block is run again with those encoded bytes to give X_{i+1}: the next
// block is calibrated on what the executor will compute. The head's untied output projection is
// calibrated on the head norm of X_N. Memory: one block's weights and statistics plus the
// activations (sequences x ctx x d_model floats, twice).
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>

#include "core/error.h"
#include "executor/kernels.h"
#include "executor/session.h"
#include "pipeline/awq_fold.h"
#include "pipeline/calib_data.h"
#include "pipeline/calib_run.h"
#include "pipeline/calibrate_stage.h"
#include "pipeline/encode_check.h"
#include "formats/temp_files.h"
#include "quantizers/scale_tune.h"
#include "validators/speed.h"

namespace sf {

namespace {

bool integer_type(QType t) { return t != QType::F32 && t != QType::F16 && t != QType::BF16; }

const json& typed(const json& p, const std::string& stage, const char* key, bool (json::*is)() const,
                  const char* what) {
  static const json none;
  if (!p.contains(key)) return none;
  if (!(p[key].*is)()) fail_usage(stage + " stage: '" + key + "' must be " + what);
  return p[key];
}

class CalibrateStage : public Stage {
 public:
  CalibrateStage(CalibMethod method, const json& p) : info_(calib_method_info(method)) {
    const std::string me = name();
    const json& spec = typed(p, me, "calib", &json::is_string, "a file name (text) or ids:FILE");
    if (spec.is_null()) fail_usage(me + " stage: needs 'calib' (the calibration file)");
    spec_ = parse_calib_spec(spec.get<std::string>());
    const json& sha = typed(p, me, "file_sha256", &json::is_string, "a sha256 in hex");
    if (sha.is_string()) expected_sha_ = sha.get<std::string>();
    auto count = [&](const char* key, int64_t dflt) {
      const json& v = typed(p, me, key, &json::is_number_integer, "a positive integer");
      if (v.is_null()) return dflt;
      if (v.get<int64_t>() <= 0) fail_usage(me + " stage: '" + key + "' must be a positive integer");
      return v.get<int64_t>();
    };
    // Search sizes and the GPTQ block are refused outside their range rather than clamped: a
    // pipeline file's value is used as written or not at all.
    auto bounded = [&](const char* key, int64_t dflt, int64_t hi) {
      const int64_t v = count(key, dflt);
      if (v > hi)
        fail_usage(me + " stage: '" + key + "' must be from 1 to " + std::to_string(hi) + ", not " +
                   std::to_string(v));
      return v;
    };
    tokens_ = count("tokens", kDefaultCalibTokens);
    ctx_given_ = count("ctx", 0);
    if (p.contains("ctx") && (ctx_given_ < 2 || ctx_given_ > kMaxCalibCtx))
      fail_usage(me + " stage: 'ctx' must be from 2 to " + std::to_string(kMaxCalibCtx) + ", not " +
                 std::to_string(ctx_given_));
    params_.clip_steps = int(bounded("clip_steps", params_.clip_steps, kMaxSearchSteps));
    params_.awq_grid = int(bounded("awq_grid", params_.awq_grid, kMaxSearchSteps));
    params_.gptq_block = size_t(bounded("gptq_block", int64_t(params_.gptq_block), kMaxGptqBlock));
    auto real = [&](const char* key, double dflt, double lo, double hi) {
      const json& v = typed(p, me, key, &json::is_number, "a number");
      if (v.is_null()) return dflt;
      const double x = v.get<double>();
      if (!(x >= lo && x <= hi))
        fail_usage(me + " stage: '" + key + "' must be in [" + std::to_string(lo) + ", " + std::to_string(hi) + "]");
      return x;
    };
    params_.min_clip = real("min_clip", params_.min_clip, 0.01, 1.0);
    params_.gptq_damp = real("gptq_damp", params_.gptq_damp, 0.0, 10.0);
    auto flag = [&](const char* key, bool dflt) {
      const json& v = typed(p, me, key, &json::is_boolean, "true or false");
      return v.is_boolean() ? v.get<bool>() : dflt;
    };
    // 0 (no tuning) is what every manifest records without tuning, so a recorded pipeline replays.
    if (const json& v = typed(p, me, "tune_steps", &json::is_number_integer, "an integer"); !v.is_null()) {
      if (v.get<int64_t>() < 0 || v.get<int64_t>() > kMaxTuneSteps)
        fail_usage(me + " stage: 'tune_steps' must be from 0 to " + std::to_string(kMaxTuneSteps) + ", not " +
                   std::to_string(v.get<int64_t>()));
      tune_.steps = int(v.get<int64_t>());
    }
    tune_.lr = real("tune_lr", tune_.lr, 1e-6, 1.0);
    tune_.batch = size_t(bounded("tune_batch", int64_t(tune_.batch), 4096));
    params_.gptq_act_order = flag("gptq_act_order", params_.gptq_act_order);
    params_.gptq_clip = flag("gptq_clip", params_.gptq_clip);
    params_.gptq_refine = flag("gptq_refine", params_.gptq_refine);
    reference_ = flag("reference", info_.reference);
    sequential_ = flag("sequential", info_.reference);
    drift_ = flag("drift", info_.reference);
    if (info_.method == CalibMethod::Awq && (reference_ || sequential_ || drift_))
      fail_usage(me + " stage: 'reference', 'sequential' and 'drift' are not available with awq (its scales are folded "
                      "into the layers before, which must not be encoded yet)");
  }

  std::string name() const override { return calibrate_stage_name(info_.method); }
  json params() const override {
    return {{"calib", recorded_calib_spec(spec_)}, {"file_sha256", data_.sha256}, {"tokens", tokens_},
            {"ctx", ctx_},                         {"clip_steps", params_.clip_steps},
            {"min_clip", params_.min_clip},        {"awq_grid", params_.awq_grid},
            {"gptq_damp", params_.gptq_damp},      {"gptq_act_order", params_.gptq_act_order},
            {"gptq_block", params_.gptq_block},    {"gptq_clip", params_.gptq_clip},
            {"gptq_refine", params_.gptq_refine},  {"reference", reference_},
            {"sequential", sequential_},           {"drift", drift_},
            {"tune_steps", tune_.steps},           {"tune_lr", tune_.lr},
            {"tune_batch", tune_.batch}};
  }

  void plan(CanonicalModel& model, const PlanContext& ctx) override {
    const auto start = std::chrono::steady_clock::now();
    ctx_ = calib_ctx(model.desc, ctx_given_, name() + " stage: 'ctx' (--calib-ctx)");
    if (tokens_ < ctx_)
      fail_usage(name() + " stage: 'tokens' (--calib-tokens) " + std::to_string(tokens_) +
                 " is fewer than one calibration sequence of " + std::to_string(ctx_) + " tokens ('ctx', --calib-ctx)");
    if (tune_.steps > 0)
      if (const char* why = backprop_unsupported(model.desc))
        fail_usage(name() + " stage: 'tune_steps' (--calib-tune-steps): scale tuning does not support " + model.family +
                   " models (" + why + ")");
    ctx.inputs.push_back(spec_.file);
    data_ = read_calib_data(spec_, ctx.tokenizer, model.desc, tokens_, ctx_);
    if (!expected_sha_.empty() && expected_sha_ != data_.sha256)
      fail_file(spec_.file, "its sha256 differs from the pipeline's file_sha256 (not the file that was meant)");
    // The activations are held once per stream (the quantized one, and the unquantized reference
    // with `reference`); a block run adds a chunk of rows (whole sequences, at least one) copied
    // per stream and the executor's scratch and KV cache for them (run_block_on_sequences).
    // Refused, before anything is written, when they would not fit.
    const ModelDesc& d = model.desc;
    // Two streams with the reference; AWQ's fold check keeps the f32 block's output beside the one.
    const double streams = (reference_ || tuning() || info_.method == CalibMethod::Awq ? 2.0 : 1.0) + (tuning() ? 1.0 : 0.0),
                 D = double(d.d_model), qd = double(d.n_heads * d.head_dim),
                 kvd = double(d.n_kv_heads * d.head_dim), F = double(d.ffn_dim);
    const double chunk = double(std::max<size_t>(kChunkRows / data_.ctx, 1) * data_.ctx);
    const double per_row = (streams * D + 2 * D + 2 * qd + 4 * kvd + 2 * F) * sizeof(float) + 5 * sizeof(int64_t);
    const double bytes = streams * double(data_.tokens.size()) * D * sizeof(float) + chunk * per_row;
    if (bytes > double(physical_memory_bytes()))
      fail_usage("calibrating on " + std::to_string(data_.tokens.size()) + " tokens in sequences of " +
                 std::to_string(data_.ctx) + " needs " + std::to_string(int64_t(bytes / double(1 << 20))) +
                 " MiB of activations and block scratch, more than this machine's memory; use fewer "
                 "--calib-tokens or a shorter --calib-ctx");
    for (const auto& r : awq_fold_rules())
      if (const char* why = r.cannot_fold(model.desc); why && info_.method == CalibMethod::Awq)
        skipped_.push_back(std::string(linear_input_name(r.input)) + " (" + r.preceding + "): " + why);
    seconds_ += elapsed(start);
  }
  void prepare(const CanonicalModel& model) override { desc_ = model.desc; }
  // A plan with no integer scheme leaves calibration nothing to encode (a float quantize scheme
  // and no integer override): refused rather than run for nothing.
  void use_plan(const QuantPlan& plan) override {
    plan_ = plan;
    for (const auto& [tensor, s] : plan_.schemes)
      if (integer_type(s.type)) return;
    fail_usage(name() + " stage: the quantize stage gives no tensor an integer scheme, so there is nothing to "
                        "calibrate (use an integer scheme, or drop the calibration stage)");
  }

  void process(Unit& u, StageContext& ctx) override {
    const auto start = std::chrono::steady_clock::now();
    switch (u.kind) {
      case UnitKind::Embedding:
        embed(u);
        check_activations("the embedding");
        break;
      case UnitKind::Block:
        block(u, ctx);
        check_activations("block " + std::to_string(u.index));
        break;
      case UnitKind::Head: head(u, ctx); break;
    }
    seconds_ += elapsed(start);
    peak_rss_ = peak_rss_bytes();
  }

  // With tuning every block and the head wait for it: the head's unit brings the last of what it
  // needs, and the blocks' encodings change.
  // A block's encodings go to a temporary file, mapped when the head arrives, so holding the model
  // takes the kernel's page cache, not the process's memory; its norms (d_model floats each) stay.
  bool take(Unit& u) override {
    if (!tuning() || u.kind == UnitKind::Embedding) return false;
    held_.push_back(std::move(u));
    Held& h = held_spill_.emplace_back();
    if (held_.back().kind != UnitKind::Block) return true;
    if (!store_) store_ = std::make_unique<MappedTempStore>("scale tuning");
    for (size_t i = 0; i < held_.back().tensors.size(); ++i) {
      EncodedTensor& e = held_.back().tensors[i].encoded;
      if (!held_.back().tensors[i].has_encoded) continue;
      h.spilled.push_back({i, store_->append(e.data.data(), e.data.size()), e.data.size()});
      std::vector<uint8_t>().swap(e.data);
    }
    return true;
  }
  std::optional<Unit> release(StageContext&) override {
    if (released_ == held_.size()) {
      held_.clear(), held_spill_.clear(), store_.reset();
      return std::nullopt;
    }
    const size_t k = released_++;
    restore(k);
    return std::move(held_[k]);
  }

  json tuning_entry() const {
    if (!tuning()) return nullptr;
    return {{"steps", tune_.steps}, {"groups", tuned_.groups}, {"kl_before", tuned_.kl_before},
            {"kl_after", tuned_.kl_after}, {"kept", tuned_.kept}};
  }

  void finish(FormatWriter&, json& manifest) override {
    manifest["calibration"] = {{"stage", name()},
                               {"sequences", data_.n_seq},
                               {"tokens_used", data_.n_seq * data_.ctx},
                               {"file_tokens", data_.file_tokens},
                               {"calibrated_tensors", calibrated_},
                               {"awq_skipped", skipped_},
                               {"awq_folds", {{"kept", awq_kept_}, {"declined", awq_declined_}}},
                               {"warnings", warnings_}};
    if (tuning()) manifest["calibration"]["scale_tuning"] = tuning_entry();
  }
  json report() const override {
    return {{"stage", name()}, {"seconds", seconds_}, {"peak_rss_bytes", peak_rss_}, {"sequences", data_.n_seq},
            {"tokens_used", data_.n_seq * data_.ctx}, {"calibrated_tensors", calibrated_}, {"awq_skipped", skipped_},
            {"awq_folds", {{"kept", awq_kept_}, {"declined", awq_declined_}}}, {"warnings", warnings_},
            {"scale_tuning", tuning_entry()}};
  }

 private:
  static double elapsed(std::chrono::steady_clock::time_point start) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  }

  UnitTensor* find(Unit& u, TensorRole role) {
    for (auto& t : u.tensors)
      if (t.spec.role == role) return &t;
    return nullptr;
  }
  static void need_values(const UnitTensor& t) {
    if (!t.has_values) fail(std::string("calibration stage: tensor ") + t.spec.name + " was not loaded");
  }
  const Scheme* planned(const std::string& tensor) const {
    const auto it = plan_.schemes.find(tensor);
    return it == plan_.schemes.end() ? nullptr : &it->second;
  }
  // X0: each calibration token's embedding row, plus its learned position row.
  void embed(Unit& u) {
    UnitTensor* e = find(u, TensorRole::TokenEmbedding);
    if (!e) fail("calibration stage: the embedding unit has no token embedding");
    need_values(*e);
    UnitTensor* pos = find(u, TensorRole::PositionEmbedding);
    if (pos) need_values(*pos);
    const size_t D = size_t(desc_.d_model), rows = data_.tokens.size();
    // The quantized stream from the rows as the executor will read them; the reference stream
    // from the f32 rows (planned scheme null).
    auto fill = [&](std::vector<float>& x, bool quantized) {
      x.assign(rows * D, 0.0f);
      std::vector<float> row, prow;
      std::vector<uint8_t> bytes;
      for (size_t t = 0; t < rows; ++t) {
        sf::decoded_row(*e, quantized ? planned(e->spec.name) : nullptr, size_t(data_.tokens[t]), row, bytes);
        if (pos) {
          const SequencePrefix prefix = sequence_prefix(desc_, &data_.tokens[t - t % data_.ctx], data_.ctx);
          sf::decoded_row(*pos, quantized ? planned(pos->spec.name) : nullptr,
                          size_t(place_row(desc_, prefix, int64_t(t % data_.ctx)).pos_a), prow, bytes);
          for (size_t i = 0; i < D; ++i) row[i] += prow[i];
        }
        std::copy(row.begin(), row.end(), &x[t * D]);
      }
    };
    fill(x_, true);
    if (keep_reference()) fill(x_ref_, false);
    if (tuning()) {
      x0_ = x_;
      // A tied output projection is the embedding: the tuned model's head reads it in f32.
      if (desc_.tied_embeddings) emb_f32_ = e->values;
    }
  }

  // Encodes t with its planned scheme when that is an integer type; returns whether it did.
  bool encode(UnitTensor& t, const InputStats& stats, StageContext& ctx) {
    if (!encode_tensor(t, stats, ctx)) return false;
    ++calibrated_;
    return true;
  }
  // encode() without counting the tensor (AWQ's tries encode a block more than once).
  bool encode_tensor(UnitTensor& t, const InputStats& stats, StageContext& ctx) {
    const Scheme* s = planned(t.spec.name);
    if (!s || !integer_type(s->type)) return false;
    EncodedTensor& e = t.start_encoding(s->type, s->group);
    e.data = encode_calibrated(info_.method, t.spec.name, t.values.data(), size_t(e.rows()), size_t(e.cols()), *s,
                               stats, params_, ctx.pool, warnings_);
    if (e.data.size() != size_t(e.rows()) * e.row_bytes())
      fail("calibration stage: encode_calibrated gave " + std::to_string(e.data.size()) + " bytes for " + e.name);
    check_encoding(t, *s, ctx.source, ctx.pool, plan_.allow_non_finite);
    t.has_encoded = true;
    return true;
  }

  // Finite weights can still overflow on the calibration tokens: the next block's statistics
  // would then be inf/NaN and its encodings meaningless (GPTQ would only warn that a Hessian does
  // not factor), so the run stops at the unit whose output left the float range.
  void check_activations(const std::string& unit) const {
    if (all_finite(x_.data(), x_.size()) && all_finite(x_ref_.data(), x_ref_.size())) return;
    fail("calibration: the calibration activations became non-finite (inf or NaN) after " + unit +
         ": the model overflows on the calibration data, so it cannot be calibrated on it");
  }

  // A block's weights and biases must be finite to be run: non-finite ones are refused as quantize
  // refuses them, and with --allow-non-finite calibration cannot use them.
  void check_finite(const UnitTensor& t, const std::string& source) const {
    if (all_finite(t.values.data(), t.values.size())) return;
    if (plan_.allow_non_finite)
      fail_file(source, "tensor " + t.spec.name + " holds non-finite values, which calibration cannot run; convert "
                        "it without --calib-method");
    refuse_non_finite_values(t, source);
  }

  using Named = std::vector<std::pair<std::string, UnitTensor*>>;

  // The linears of group g that the plan gives an integer type.
  std::vector<UnitTensor*> encodable(const Named& named, LinearInput g) const {
    std::vector<UnitTensor*> out;
    for (const auto& n : group_linears(desc_, g))
      for (const auto& [name, t] : named)
        if (name == n) {
          const Scheme* s = planned(t->spec.name);
          if (s && integer_type(s->type)) out.push_back(t);
        }
    return out;
  }

  void block(Unit& u, StageContext& ctx) {
    const std::string prefix = block_prefix(u.index);
    Named named;
    for (auto& t : u.tensors) {
      need_values(t);
      check_finite(t, ctx.source);
      named.emplace_back(t.spec.name.substr(prefix.size()), &t);
    }
    const BlockValues values = [&](const std::string& n) -> std::vector<float>* {
      for (auto& [name, t] : named)
        if (name == n) return &t->values;
      return nullptr;
    };
    constexpr LinearInput kGroups[] = {LinearInput::AttnIn, LinearInput::AttnOut, LinearInput::FfnIn,
                                       LinearInput::FfnMid};
    if (sequential_) {
      // True-sequential: each group's statistics come from a run in which the groups before it in
      // the block are already encoded, so its inputs are what the executor will feed it.
      for (LinearInput g : kGroups) {
        const std::vector<UnitTensor*> ts = encodable(named, g);
        if (ts.empty()) continue;
        bool wanted[kLinearInputs] = {};
        wanted[size_t(g)] = true;
        StatsTap tap = gather(named, wanted, ctx);
        for (UnitTensor* t : ts) encode(*t, tap.stats[size_t(g)], ctx);
      }
    } else {
      bool wanted[kLinearInputs];
      std::fill(wanted, wanted + kLinearInputs, true);
      StatsTap tap = gather(named, wanted, ctx);
      if (info_.method == CalibMethod::Awq) awq_folds(named, values, tap, ctx);
      for (LinearInput g : kGroups)
        for (UnitTensor* t : encodable(named, g)) encode(*t, tap.stats[size_t(g)], ctx);
    }
    // The streams the next block is calibrated on: the unquantized one through the f32 weights,
    // the quantized one through the encoded weights where there are some.
    if (keep_reference()) run(named, x_ref_.data(), 0, data_.n_seq, ctx, nullptr, false);
    run(named, x_.data(), 0, data_.n_seq, ctx, nullptr, true);
    for (auto& [name, t] : named)
      if (t->has_encoded) {
        std::vector<float>().swap(t->values);
        t->has_values = false;
      }
  }

  // AWQ: scales per group, folded into the op before (when it can absorb them). Each group's
  // search scores only that group's linears on their own outputs; a fold is kept only when it also
  // brings the whole block's output on the calibration sequences closer to the unquantized
  // block's (on the same input), tried group by group in the block's order, each on top of the
  // folds kept before it. A block's f32 values and statistics are restored between tries.
  void awq_folds(const Named& named, const BlockValues& values, StatsTap& tap, StageContext& ctx) {
    struct Fold {
      LinearInput input;
      std::vector<float> s;
    };
    std::vector<Fold> folds;
    for (const auto& rule : awq_fold_rules()) {
      if (rule.cannot_fold(desc_)) continue;
      std::vector<AwqLinear> linears;
      for (UnitTensor* t : encodable(named, rule.input))
        linears.push_back({t->values.data(), size_t(t->spec.shape[0]), *planned(t->spec.name)});
      if (linears.empty()) continue;
      const InputStats& st = tap.stats[size_t(rule.input)];
      std::vector<float> s = awq_search_scales(linears, st.channels, st, params_, ctx.pool);
      bool trivial = true;
      for (float v : s) {
        if (!(v > 0.0f) || !std::isfinite(v)) fail("awq: a scale that is not positive and finite");
        trivial = trivial && v == 1.0f;
      }
      if (!trivial) folds.push_back({rule.input, std::move(s)});
    }
    if (folds.empty()) return;

    std::vector<std::vector<float>> saved_values;
    for (const auto& [name, t] : named) saved_values.push_back(t->values);
    std::vector<InputStats> saved_stats(std::begin(tap.stats), std::end(tap.stats));
    auto apply = [&](const std::vector<bool>& keep) {
      for (size_t i = 0; i < named.size(); ++i) named[i].second->values = saved_values[i];
      std::copy(saved_stats.begin(), saved_stats.end(), std::begin(tap.stats));
      for (size_t f = 0; f < folds.size(); ++f)
        if (keep[f]) {
          awq_fold(desc_, folds[f].input, folds[f].s, values);
          rescale_stats(tap.stats[size_t(folds[f].input)], folds[f].s);
        }
    };
    // The unquantized block's output on the quantized stream, then the encoded block's distance to it.
    std::vector<float> target(x_);
    run(named, target.data(), 0, data_.n_seq, ctx, nullptr, false);
    auto block_error = [&](const std::vector<bool>& keep) {
      apply(keep);
      for (LinearInput g : {LinearInput::AttnIn, LinearInput::AttnOut, LinearInput::FfnIn, LinearInput::FfnMid})
        for (UnitTensor* t : encodable(named, g)) encode_tensor(*t, tap.stats[size_t(g)], ctx);
      double e = 0;
      const size_t D = size_t(desc_.d_model), per = std::max<size_t>(1, kChunkRows / data_.ctx);
      std::vector<float> y;
      for (size_t s0 = 0; s0 < data_.n_seq; s0 += per) {  // a chunk at a time: one stream's scratch
        const size_t ns = std::min(per, data_.n_seq - s0), at = s0 * data_.ctx * D, span = ns * data_.ctx * D;
        y.assign(x_.begin() + ptrdiff_t(at), x_.begin() + ptrdiff_t(at + span));
        run(named, y.data(), s0, ns, ctx, nullptr, true);
        for (size_t i = 0; i < span; ++i) e += (double(y[i]) - target[at + i]) * (double(y[i]) - target[at + i]);
      }
      for (const auto& [name, t] : named) t->has_encoded = false;
      return e;
    };
    std::vector<bool> keep(folds.size(), false);
    double best = block_error(keep);
    for (size_t f = 0; f < folds.size(); ++f) {
      keep[f] = true;
      const double e = block_error(keep);
      if (e < best) best = e;
      else keep[f] = false;
      ++(keep[f] ? awq_kept_ : awq_declined_);
    }
    apply(keep);
  }

  // One statistics pass over the calibration sequences, a chunk at a time: with `reference`, each
  // chunk first runs through the f32 block on the reference stream (its rows captured), then on
  // the quantized stream through the block as encoded so far, paired row for row.
  StatsTap gather(const Named& named, const bool (&wanted)[kLinearInputs], StageContext& ctx) {
    StatsTap tap(desc_, info_, data_.tokens.size(), ctx.pool, wanted, reference_, drift_);
    RowCapture capture(wanted);
    const size_t D = size_t(desc_.d_model), per = std::max<size_t>(1, kChunkRows / data_.ctx);
    std::vector<float> xq, xr;
    for (size_t s0 = 0; s0 < data_.n_seq; s0 += per) {
      const size_t ns = std::min(per, data_.n_seq - s0), at = s0 * data_.ctx * D, span = ns * data_.ctx * D;
      if (reference_) {
        capture.clear();
        xr.assign(x_ref_.begin() + ptrdiff_t(at), x_ref_.begin() + ptrdiff_t(at + span));
        run(named, xr.data(), s0, ns, ctx, &capture, false);
        tap.pair_with(&capture);
      }
      xq.assign(x_.begin() + ptrdiff_t(at), x_.begin() + ptrdiff_t(at + span));
      run(named, xq.data(), s0, ns, ctx, &tap, true);
    }
    tap.finish();
    return tap;
  }

  // Sequences [s0, s0 + n_seq) of x (which starts at sequence s0) through the block: f32 weights,
  // or (encoded) the encoded bytes of the tensors encoded so far.
  void run(const Named& named, float* x, size_t s0, size_t n_seq, StageContext& ctx, BlockTap* tap, bool encoded) {
    std::vector<TensorView> views;
    views.reserve(named.size());
    LayerWeights w;
    for (const auto& [name, t] : named) {
      const LayerSlot slot = layer_slot(name);
      if (!slot) fail("calibration stage: tensor " + t->spec.name + " has no place in the executor");
      views.push_back(encoded && t->has_encoded ? encoded_view(*t) : f32_view(*t));
      w.*slot = &views.back();
    }
    run_block_on_sequences(desc_, w, data_.tokens.data() + s0 * data_.ctx, x, n_seq, data_.ctx, &ctx.pool, tap);
  }

  bool tuning() const { return tune_.steps > 0; }
  // The unquantized stream: for the reference target, and as scale tuning's reference.
  bool keep_reference() const { return reference_ || tuning(); }

  static Named named_of(Unit& u) {
    const std::string prefix = block_prefix(u.index);
    Named named;
    for (auto& t : u.tensors) named.emplace_back(t.spec.name.substr(prefix.size()), &t);
    return named;
  }

  // The linear index (BlockLinear) of a block tensor, by its name after "blocks.N.".
  static std::optional<size_t> linear_index(const std::string& name) {
    for (size_t i = 0; i < kBlockLinears; ++i)
      if (name == std::string(block_linear_name(BlockLinear(i))) + ".weight") return i;
    return std::nullopt;
  }

  // Held unit k's encodings back from the store, with the tuned factors when they were kept.
  void restore(size_t k) {
    Unit& u = held_[k];
    const std::string prefix = block_prefix(u.index);
    for (const Spill& sp : held_spill_[k].spilled) {
      UnitTensor& t = u.tensors[sp.tensor];
      EncodedTensor& e = t.encoded;
      const uint8_t* at = store_->at(sp.offset);
      e.data.assign(at, at + sp.bytes);
      const auto li = linear_index(t.spec.name.substr(prefix.size()));
      if (!tuned_.kept || !li || tuned_.factors.size() <= block_ordinal_[k] || tuned_.factors[block_ordinal_[k]][*li].empty())
        continue;
      apply_scale_factors(e.type, e.group, size_t(e.rows()), size_t(e.cols()), tuned_.factors[block_ordinal_[k]][*li],
                          e.data.data());
      // A scale multiplied past its type's range would decode to inf: refused, as quantize refuses it.
      std::vector<float> row(size_t(e.cols()));
      for (int64_t r = 0; r < e.rows(); ++r) {
        qtype_traits(e.type).dequantize_row(&e.data[size_t(r) * e.row_bytes()], row.size(), e.group, row.data());
        if (!all_finite(row.data(), row.size()))
          fail("scale tuning: " + e.name + " row " + std::to_string(r) + " decodes to non-finite values after tuning");
      }
    }
  }
  void drop(size_t k) {
    for (const Spill& sp : held_spill_[k].spilled) std::vector<uint8_t>().swap(held_[k].tensors[sp.tensor].encoded.data);
  }

  // End-to-end scale tuning of the kept blocks' encodings against the reference stream's output
  // distributions; when the tuned scales are kept, X_N is recomputed through them for the head.
  void tune(Unit& head, StageContext& ctx) {
    UnitTensor* norm = find(head, TensorRole::NormWeight);
    UnitTensor* bias = find(head, TensorRole::NormBias);
    UnitTensor* out = find(head, TensorRole::Output);
    if (!norm) fail("calibration stage: the head has no norm");
    for (UnitTensor* t : {norm, bias, out})
      if (t) need_values(*t);
    const float* out_w = out ? out->values.data() : emb_f32_.data();
    if (!out && emb_f32_.size() != size_t(desc_.vocab_size * desc_.d_model))
      fail("calibration stage: no output projection for scale tuning");
    if (store_) store_->map();
    ScaleTuneModel m{desc_, data_.ctx, data_.n_seq, x0_.data(), x_ref_.data(), norm->values.data(),
                     bias ? bias->values.data() : nullptr, out_w, {}};
    for (size_t k = 0; k < held_.size(); ++k) {
      Unit& u = held_[k];
      block_ordinal_.push_back(m.blocks.size());
      if (u.kind != UnitKind::Block) continue;
      const std::string prefix = block_prefix(u.index);
      TuneBlock b;
      b.f32 = block_weights_f32([&](const std::string& n) -> const float* {
        for (auto& t : u.tensors)
          if (t.spec.name == prefix + n && t.has_values) return t.values.data();
        return nullptr;
      });
      for (const Spill& sp : held_spill_[k].spilled) {
        const UnitTensor& t = u.tensors[sp.tensor];
        const auto li = linear_index(t.spec.name.substr(prefix.size()));
        if (!li) continue;
        const EncodedTensor& e = t.encoded;
        b.encoded[*li] = {e.name, e.type, e.group, size_t(e.rows()), size_t(e.cols()), store_->at(sp.offset)};
      }
      m.blocks.push_back(b);
    }
    tuned_ = tune_scales(m, tune_, ctx.pool);
    if (!tuned_.kept) return;
    x_ = x0_;
    for (size_t k = 0; k < held_.size(); ++k) {
      if (held_[k].kind != UnitKind::Block) continue;
      restore(k);
      run(named_of(held_[k]), x_.data(), 0, data_.n_seq, ctx, nullptr, true);
      drop(k);
    }
    check_activations("scale tuning");
  }

  // The untied output projection, on the head norm of X_N.
  void head(Unit& u, StageContext& ctx) {
    if (tuning()) tune(u, ctx);
    std::vector<float>().swap(x0_);
    std::vector<float>().swap(emb_f32_);
    UnitTensor* out = find(u, TensorRole::Output);
    UnitTensor* norm = find(u, TensorRole::NormWeight);
    UnitTensor* bias = find(u, TensorRole::NormBias);
    if (!out || !norm) return;  // tied: the embedding was encoded as the plan says
    need_values(*out);
    need_values(*norm);
    if (bias) need_values(*bias);
    const Scheme* s = planned(out->spec.name);
    if (!s || !integer_type(s->type)) return;
    check_finite(*out, ctx.source);
    const size_t D = size_t(desc_.d_model), rows = data_.tokens.size();
    const TensorView nw = f32_view(*norm);
    TensorView nb;
    if (bias) nb = f32_view(*bias);
    InputStats st;
    st.reset(D, info_.needs_gram || reference_, info_.needs_sample ? kAwqSampleRows : 0, reference_);
    std::vector<float> xn(std::min(rows, kChunkRows) * D), xr;
    if (reference_) xr.resize(xn.size());
    for (size_t r0 = 0; r0 < rows; r0 += kChunkRows) {
      const size_t n = std::min(kChunkRows, rows - r0);
      kernels::norm(desc_.norm, &x_[r0 * D], n, D, nw, bias ? &nb : nullptr, desc_.norm_eps, xn.data());
      if (reference_) {
        kernels::norm(desc_.norm, &x_ref_[r0 * D], n, D, nw, bias ? &nb : nullptr, desc_.norm_eps, xr.data());
        st.add_pair(xn.data(), xr.data(), n, &ctx.pool);
      } else {
        st.add(xn.data(), n, &ctx.pool);
      }
    }
    std::vector<float>().swap(x_);
    std::vector<float>().swap(x_ref_);
    encode(*out, st, ctx);
    if (out->has_encoded) {
      std::vector<float>().swap(out->values);
      out->has_values = false;
    }
  }

  const CalibMethodInfo& info_;
  ScaleTuneParams tune_{0};
  ScaleTuneResult tuned_;
  std::vector<Unit> held_;      // with tuning: the blocks and the head, until release()
  struct Spill {
    size_t tensor;  // in the unit
    uint64_t offset;
    size_t bytes;
  };
  struct Held {
    std::vector<Spill> spilled;  // the encodings moved to store_
  };
  std::vector<Held> held_spill_;  // one per held_ unit
  std::unique_ptr<MappedTempStore> store_;
  std::vector<size_t> block_ordinal_;  // of each held_ unit among the tuned blocks
  size_t released_ = 0;
  std::vector<float> x0_;       // with tuning: the first block's input
  std::vector<float> emb_f32_;  // with tuning and a tied output: the embedding in f32
  static constexpr int64_t kMaxTuneSteps = 100000;
  CalibSpec spec_;
  std::string expected_sha_;
  int64_t tokens_ = 0, ctx_given_ = 0, ctx_ = 0;
  CalibParams params_;
  CalibData data_;
  ModelDesc desc_;
  QuantPlan plan_;
  static constexpr int64_t kMaxSearchSteps = 1000;  // clip_steps, awq_grid: candidates tried per tensor
  static constexpr int64_t kMaxGptqBlock = 65536;   // columns per GPTQ block, at most a matrix's width
  static constexpr size_t kChunkRows = 4096;  // rows per statistics run (whole sequences)
  bool reference_ = false, sequential_ = false, drift_ = false;
  std::vector<float> x_;      // the activations entering the next block: n_seq x ctx x d_model
  std::vector<float> x_ref_;  // the same through the unquantized model (with reference_)
  std::vector<std::string> skipped_, warnings_;
  size_t calibrated_ = 0;
  size_t awq_kept_ = 0, awq_declined_ = 0;  // AWQ folds the block check kept / declined
  double seconds_ = 0;
  int64_t peak_rss_ = 0;
};

}  // namespace

std::unique_ptr<Stage> make_calibrate_stage(CalibMethod method, const json& params) {
  return std::make_unique<CalibrateStage>(method, params);
}

std::string calibrate_stage_name(CalibMethod method) {
  return std::string("calib_") + calib_method_info(method).name;
}

std::string calib_method_names() {
  std::string s;
  for (const auto& m : calib_methods()) s += (s.empty() ? "" : ", ") + std::string(m.name);
  return s;
}

const std::vector<std::string>& calibrate_stage_params() {
  static const std::vector<std::string> p = {"calib",    "file_sha256", "tokens",    "ctx",
                                             "clip_steps", "min_clip",  "awq_grid",  "gptq_damp",
                                             "gptq_act_order", "gptq_block", "gptq_clip", "gptq_refine",
                                             "reference", "sequential", "drift", "tune_steps", "tune_lr", "tune_batch"};
  return p;
}

}  // namespace sf
