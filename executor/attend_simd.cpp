// One query head's attention with SIMD dot products and weighted sums (see kernels::attend_head).
// Each output is one sequential loop over positions, so threads splitting (token, head) items do
// not change its bits.
#ifndef HWY_DISABLED_TARGETS
// As executor/matmul_simd.cpp: SVE is left out of every SIMD translation unit alike.
#define HWY_DISABLED_TARGETS (HWY_SVE | HWY_SVE2 | HWY_SVE_256 | HWY_SVE2_128 | HWY_SSSE3)
#endif
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "executor/attend_simd.cpp"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"
#include "hwy/contrib/math/math-inl.h"

#include <algorithm>
#include <cmath>

#include "executor/attend_simd.h"

HWY_BEFORE_NAMESPACE();
namespace sf::kernels::simd::HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

void AttendHead(const float* q, const float* k, const float* v, size_t stride, size_t n_pos, size_t head_dim,
                float scale, float* scores, float* out) {
  const hn::ScalableTag<float> d;
  const size_t N = hn::Lanes(d), full = head_dim - head_dim % N;
  float mx = -INFINITY;
  for (size_t j = 0; j < n_pos; ++j) {
    const float* kj = k + j * stride;
    auto acc = hn::Zero(d);
    for (size_t e = 0; e < full; e += N) acc = hn::MulAdd(hn::LoadU(d, q + e), hn::LoadU(d, kj + e), acc);
    float s = hn::GetLane(hn::SumOfLanes(d, acc));
    for (size_t e = full; e < head_dim; ++e) s = std::fma(q[e], kj[e], s);
    scores[j] = s * scale;
    mx = std::max(mx, scores[j]);
  }
  // exp a vector at a time (Highway's Exp, within a few ulp of std::exp); the last partial vector
  // through a zero-padded copy, so every score takes the same operations.
  const auto vmx = hn::Set(d, mx);
  size_t j0 = 0;
  for (; j0 + N <= n_pos; j0 += N) hn::StoreU(hn::Exp(d, hn::Sub(hn::LoadU(d, scores + j0), vmx)), d, scores + j0);
  if (j0 < n_pos) {
    HWY_ALIGN float tail[hn::MaxLanes(d)] = {};
    std::copy(scores + j0, scores + n_pos, tail);
    hn::Store(hn::Exp(d, hn::Sub(hn::Load(d, tail), vmx)), d, tail);
    std::copy(tail, tail + (n_pos - j0), scores + j0);
  }
  double sum = 0;
  for (size_t j = 0; j < n_pos; ++j) sum += scores[j];
  const float inv = float(1.0 / sum);
  std::fill(out, out + head_dim, 0.0f);
  for (size_t j = 0; j < n_pos; ++j) {
    const float p = scores[j] * inv;
    const float* vj = v + j * stride;
    const auto pv = hn::Set(d, p);
    for (size_t e = 0; e < full; e += N) hn::StoreU(hn::MulAdd(pv, hn::LoadU(d, vj + e), hn::LoadU(d, out + e)), d, out + e);
    for (size_t e = full; e < head_dim; ++e) out[e] = std::fma(p, vj[e], out[e]);
  }
}

}  // namespace sf::kernels::simd::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace sf::kernels::simd {

HWY_EXPORT(AttendHead);

void attend_head(const float* q, const float* k, const float* v, size_t stride, size_t n_pos, size_t head_dim,
                 float scale, float* scores, float* out) {
  HWY_DYNAMIC_DISPATCH(AttendHead)(q, k, v, stride, n_pos, head_dim, scale, scores, out);
}

}  // namespace sf::kernels::simd
#endif  // HWY_ONCE
