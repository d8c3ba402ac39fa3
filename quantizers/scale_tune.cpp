#include "quantizers/scale_tune.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>

#include "core/error.h"

namespace sf {

namespace {

// One tuned linear: a theta per scale group (row-major: rows x groups per row) with Adam's moments.
struct TunedLinear {
  const EncodedLinear* enc = nullptr;
  size_t rows = 0, cols = 0, width = 0, per_row = 0, row_bytes = 0;
  size_t offset = 0;  // of its first group among all the tuned groups
  std::vector<float> theta, m, v;
};

// What one sequence's pass needs of its own: the backward pass's activations, one block's
// decoded linears, the blocks' inputs.
struct Worker {
  Worker(const ModelDesc& d, size_t ctx) : bp(d, ctx) {}
  BlockBackprop bp;
  std::array<std::vector<float>, kBlockLinears> w;
  std::vector<std::vector<float>> inputs;
};

class Tuner {
 public:
  Tuner(const ScaleTuneModel& m, const ScaleTuneParams& p, ThreadPool& pool) : m_(m), p_(p), pool_(pool) {
    const ModelDesc& d = m.desc;
    if (const char* why = backprop_unsupported(d)) fail(std::string("scale tuning: models with ") + why + " are not supported");
    D_ = size_t(d.d_model), V_ = size_t(d.vocab_size);
    for (auto& b : m.blocks) {
      std::array<TunedLinear, kBlockLinears> ls;
      for (size_t i = 0; i < kBlockLinears; ++i) {
        const EncodedLinear* e = &b.encoded[i];
        if (!e->bytes) continue;
        const QTypeTraits& tr = qtype_traits(e->type);
        if (!tr.rescale_group) fail("scale tuning: " + e->name + " is not an integer encoding");
        TunedLinear& l = ls[i];
        l.enc = e, l.rows = e->rows, l.cols = e->cols;
        l.row_bytes = tr.row_bytes(l.cols, e->group);
        l.width = tr.scale_width(l.cols, e->group);
        l.per_row = (l.cols + l.width - 1) / l.width;
        l.theta.assign(l.rows * l.per_row, 0.0f), l.m = l.theta, l.v = l.theta;
        l.offset = groups_;
        groups_ += l.theta.size();
      }
      linears_.push_back(std::move(ls));
    }
  }

  ScaleTuneResult run() {
    ScaleTuneResult r;
    r.groups = groups_;
    r.kl_before = kl_all();
    if (groups_ == 0 || p_.steps <= 0) {
      r.kl_after = r.kl_before;
      return r;
    }
    const size_t B = std::min(p_.batch, m_.n_seq);
    // A fixed order of the sequences (Fisher-Yates on mt19937's raw outputs, which the standard
    // fixes), taken B at a time and wrapping round.
    std::vector<size_t> order(m_.n_seq);
    for (size_t i = 0; i < order.size(); ++i) order[i] = i;
    std::mt19937 rng(20261124u);
    for (size_t i = order.size(); i > 1; --i) std::swap(order[i - 1], order[size_t(rng()) % i]);
    std::vector<size_t> batch(B);
    for (int step = 0; step < p_.steps; ++step) {
      for (size_t j = 0; j < B; ++j) batch[j] = order[(size_t(step) * B + j) % order.size()];
      train_step(batch, step + 1);
    }
    // The tuned factors as the encodings will store them (rescale_group on the rows' bytes),
    // checked on every sequence.
    stored_ = true;
    r.kl_after = kl_all();
    r.kept = r.kl_after < r.kl_before;
    if (r.kept)
      for (auto& ls : linears_) {
        r.factors.emplace_back();
        for (size_t i = 0; i < kBlockLinears; ++i)
          if (ls[i].enc)
            for (float t : ls[i].theta) r.factors.back()[i].push_back(std::exp(t));
      }
    return r;
  }

 private:
  // Block b's weights with its current factors; the decoded linears live in wk.w.
  BlockWeightsF32 weights(size_t b, Worker& wk) const {
    BlockWeightsF32 w = m_.blocks[b].f32;
    for (size_t i = 0; i < kBlockLinears; ++i) {
      const TunedLinear& l = linears_[b][i];
      if (!l.enc) continue;
      const QTypeTraits& tr = qtype_traits(l.enc->type);
      std::vector<float>& out = wk.w[i];
      out.resize(l.rows * l.cols);
      std::vector<uint8_t> bytes(l.row_bytes);
      for (size_t row = 0; row < l.rows; ++row) {
        float* o = &out[row * l.cols];
        const float* theta = &l.theta[row * l.per_row];
        const uint8_t* src = l.enc->bytes + row * l.row_bytes;
        if (stored_) {  // the stored scales: rounded as their type rounds them
          std::copy_n(src, l.row_bytes, bytes.data());
          for (size_t g = 0; g < l.per_row; ++g) tr.rescale_group(bytes.data(), l.cols, l.enc->group, g, std::exp(theta[g]));
          tr.dequantize_row(bytes.data(), l.cols, l.enc->group, o);
        } else {
          tr.dequantize_row(src, l.cols, l.enc->group, o);
          for (size_t c = 0; c < l.cols; ++c) o[c] *= std::exp(theta[c / l.width]);
        }
      }
      w.w[i] = out.data();
    }
    return w;
  }

  // Sequence s through the model: its mean KL and, with dtheta (groups_ floats), its gradient by
  // every theta.
  double sequence(size_t s, Worker& wk, float* dtheta) const {
    const size_t span = m_.ctx * D_, n = m_.ctx;
    std::vector<float> x(m_.x0 + s * span, m_.x0 + (s + 1) * span);
    wk.inputs.resize(m_.blocks.size());
    for (size_t b = 0; b < m_.blocks.size(); ++b) {
      if (dtheta) wk.inputs[b] = x;
      wk.bp.forward(weights(b, wk), x.data(), 1);
    }
    std::vector<float> logp(n * V_), dx(n * D_);
    head_log_probs(m_.desc, m_.head_norm, m_.head_norm_b, m_.out_w, m_.ref_final + s * span, n, logp.data());
    const double kl = head_kl_backward(m_.desc, m_.head_norm, m_.head_norm_b, m_.out_w, x.data(), logp.data(), n, dx.data());
    if (!dtheta) return kl;
    for (size_t b = m_.blocks.size(); b-- > 0;) {
      const BlockWeightsF32 w = weights(b, wk);
      BlockLinearGrads g;
      for (size_t i = 0; i < kBlockLinears; ++i)
        if (linears_[b][i].enc) g.dw[i].assign(wk.w[i].size(), 0.0f);
      // Recomputed from the block's input: one block's activations are held at a time.
      wk.bp.forward(w, wk.inputs[b].data(), 1);
      wk.bp.backward(w, dx.data(), g);
      for (size_t i = 0; i < kBlockLinears; ++i) {
        const TunedLinear& l = linears_[b][i];
        if (!l.enc) continue;
        // d/dtheta of a group = sum over its values of dL/dW * W (W = base * exp(theta)).
        for (size_t row = 0; row < l.rows; ++row)
          for (size_t gi = 0; gi < l.per_row; ++gi) {
            double grad = 0;
            for (size_t c = gi * l.width; c < std::min(l.cols, (gi + 1) * l.width); ++c)
              grad += double(g.dw[i][row * l.cols + c]) * wk.w[i][row * l.cols + c];
            dtheta[l.offset + row * l.per_row + gi] = float(grad);
          }
      }
    }
    return kl;
  }

  // Each sequence on the pool with state of its own; results combined in sequence order, so the
  // bits do not depend on the thread count.
  std::vector<double> sequences(const std::vector<size_t>& seqs, std::vector<float>* dtheta) const {
    std::vector<double> kl(seqs.size());
    if (dtheta) dtheta->assign(seqs.size() * groups_, 0.0f);
    pool_.parallel_for(seqs.size(), [&](size_t b, size_t e) {
      Worker wk(m_.desc, m_.ctx);
      for (size_t j = b; j < e; ++j) kl[j] = sequence(seqs[j], wk, dtheta ? &(*dtheta)[j * groups_] : nullptr);
    });
    return kl;
  }

  double kl_all() const {
    std::vector<size_t> all(m_.n_seq);
    for (size_t s = 0; s < all.size(); ++s) all[s] = s;
    double sum = 0;
    for (double k : sequences(all, nullptr)) sum += k;
    return sum / double(m_.n_seq);
  }

  void train_step(const std::vector<size_t>& seqs, int t) {
    std::vector<float> per_seq;
    sequences(seqs, &per_seq);
    const float lim = float(std::log(p_.max_factor));
    const double b1 = 0.9, b2 = 0.999, eps = 1e-8;
    const double c1 = 1 - std::pow(b1, t), c2 = 1 - std::pow(b2, t);
    for (auto& ls : linears_)
      for (TunedLinear& l : ls)
        for (size_t k = 0; k < l.theta.size(); ++k) {
          // The batch's mean loss: the mean of the sequences' gradients.
          double grad = 0;
          for (size_t j = 0; j < seqs.size(); ++j) grad += per_seq[j * groups_ + l.offset + k];
          grad /= double(seqs.size());
          l.m[k] = float(b1 * l.m[k] + (1 - b1) * grad);
          l.v[k] = float(b2 * l.v[k] + (1 - b2) * grad * grad);
          const double step = p_.lr * (double(l.m[k]) / c1) / (std::sqrt(double(l.v[k]) / c2) + eps);
          l.theta[k] = std::clamp(float(l.theta[k] - step), -lim, lim);
        }
  }

  const ScaleTuneModel& m_;
  const ScaleTuneParams& p_;
  bool stored_ = false;  // weights() as the encodings will store them, not with exact factors
  ThreadPool& pool_;
  size_t D_ = 0, V_ = 0, groups_ = 0;
  std::vector<std::array<TunedLinear, kBlockLinears>> linears_;
};

}  // namespace

void apply_scale_factors(QType type, size_t group, size_t rows, size_t cols, const std::vector<float>& factors,
                         uint8_t* bytes) {
  const QTypeTraits& tr = qtype_traits(type);
  if (!tr.rescale_group) fail(std::string("scale tuning: ") + tr.name + " has no scales to tune");
  const size_t width = tr.scale_width(cols, group), per_row = (cols + width - 1) / width, rb = tr.row_bytes(cols, group);
  if (factors.size() != rows * per_row) fail("scale tuning: factors do not match the encoding");
  for (size_t r = 0; r < rows; ++r)
    for (size_t g = 0; g < per_row; ++g) tr.rescale_group(bytes + r * rb, cols, group, g, factors[r * per_row + g]);
}

ScaleTuneResult tune_scales(const ScaleTuneModel& m, const ScaleTuneParams& p, ThreadPool& pool) {
  if (m.ctx == 0 || m.n_seq == 0 || !m.x0 || !m.ref_final || !m.head_norm || !m.out_w)
    fail("scale tuning: no calibration sequences or no head");
  return Tuner(m, p, pool).run();
}

}  // namespace sf
