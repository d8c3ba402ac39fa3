// SIMD matrix products for every storage type, compiled once per Highway target (foreach_target.h
// re-includes this file) and dispatched at run time (HWY_DYNAMIC_DISPATCH).
//
// Integer weights (int8, q8_0, q4_0, int4 in groups of whole blocks of 32 or one group per row) meet
// activations quantized once per call to 8 bits in blocks of 32 (f32 scale per block), as ggml does for
// q4_0 x q8_0: per block an exact integer dot (i16 pairs multiplied and added into i32), then one
// float multiply-add by the two scales. Float weights (f32, f16, bf16, and int4 in other group
// sizes, decoded to f32 first) use f32 multiply-adds.
//
// Determinism: a register tile holds R rows x TT tokens, one accumulator each, and every
// accumulator runs the same instruction sequence as the 1 x 1 tile's. So an output value does not
// depend on the tile or thread range its row falls in, nor on the thread count.
// (q4_0 on AVX3_DL has 16-row panels of its own, q4_rows_vnni, under the same rule.)
#ifndef HWY_DISABLED_TARGETS
// SVE vectors are sizeless: they cannot be held in the arrays of the register tiles below. SSSE3
// (CPUs before 2008) would add a fifth x86 compilation of this file for little over the fallback.
#define HWY_DISABLED_TARGETS (HWY_SVE | HWY_SVE2 | HWY_SVE_256 | HWY_SVE2_128 | HWY_SSSE3)
#endif
// AVX3_DL (AVX-512 with VNNI, Ice Lake / Zen 4 and later): its u8 x i8 dot product instruction does
// 64 multiply-adds into 16 i32 lanes, for the integer types' tiles (int_tile_vnni below).
#ifndef HWY_WANT_AVX3_DL
#define HWY_WANT_AVX3_DL
#endif
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "executor/matmul_simd.cpp"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/cache_control.h"
#include "hwy/highway.h"

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstring>
#include <type_traits>
#include <vector>

#include "core/dtype.h"
#include "core/quant_types.h"
#include "executor/matmul_simd.h"

HWY_BEFORE_NAMESPACE();
namespace sf::kernels::simd::HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

// Below this many multiply-adds a product is faster on one thread than split up.
constexpr size_t kParallelMin = 1 << 16;
constexpr size_t kBlock = 32;  // activation quantization block

using D16 = hn::CappedTag<int16_t, kBlock>;  // codes of one block, widened to i16
using D32 = hn::Repartition<int32_t, D16>;
using DF = hn::Repartition<float, D16>;      // the integer path's float accumulators
using V16 = hn::Vec<D16>;
constexpr size_t kLanes16 = hn::MaxLanes(D16());
static_assert(kBlock % kLanes16 == 0, "a block is whole vectors");
constexpr size_t kChunks = kBlock / kLanes16;  // vectors per block
// HWY_SCALAR (GCC < 12.3's fallback instead of EMU128) has one lane: codes there stay in element
// order and nibbles are read one by one.
constexpr bool kOneLane = kLanes16 == 1;
constexpr size_t kHalf = kOneLane ? 1 : kLanes16 / 2;
// Register tile: rows x tokens (prefill); decode uses kTileRows x 1.
constexpr size_t kTileRows = 4;
constexpr size_t kTileToks = kLanes16 >= 32 ? 4 : 2;
constexpr size_t kDecodeRows = 8;
// The VNNI tiles: activations kept as i8, two blocks per 512-bit vector.
constexpr bool kVnni = HWY_TARGET == HWY_AVX3_DL;
#ifndef SF_VNNI_ROWS
#define SF_VNNI_ROWS 4
#define SF_VNNI_TOKS 4
#endif
// The integer types' prefill tile (rows x tokens).
constexpr size_t kIntTileRows = kVnni ? SF_VNNI_ROWS : kTileRows;
constexpr size_t kIntTileToks = kVnni ? SF_VNNI_TOKS : kTileToks;

uint16_t load_u16(const uint8_t* p) { uint16_t v; std::memcpy(&v, p, 2); return v; }
float load_f32(const uint8_t* p) { float v; std::memcpy(&v, p, 4); return v; }
// An f16 scale: the CPU's conversion (F16C) where the target has one, rather than the 256 KiB
// table of f16_to_f32_fast competing with the streamed weights for cache.
HWY_INLINE float f16(const uint8_t* p) {
  const hn::CappedTag<float, 1> d1;
  const hn::Rebind<hwy::float16_t, decltype(d1)> dh;
  return hn::GetLane(hn::PromoteTo(d1, hn::LoadU(dh, reinterpret_cast<const hwy::float16_t*>(p))));
}

// ---------------------------------------------------------------------------------------------
// Activations, quantized once per call. Codes are stored in the lane order the weight type's
// codes come out of their loads (a block's integer dot does not depend on the order).
enum class Order { Natural, SplitHalves, Pairs };

// The element of a block of 32 that lane p of a block's loaded weight codes holds.
size_t element_at(Order o, size_t p) {
  if (kOneLane) return p;
  const size_t c = p / kLanes16, i = p % kLanes16;
  switch (o) {
    case Order::Natural: return p;
    // q4_0: byte j holds elements j (low nibble) and j + 16 (high); a chunk is kHalf bytes.
    case Order::SplitHalves: return i < kHalf ? c * kHalf + i : 16 + c * kHalf + (i - kHalf);
    // int4: byte j holds elements 2j (low nibble) and 2j + 1 (high).
    case Order::Pairs: return i < kHalf ? 2 * (c * kHalf + i) : 2 * (c * kHalf + i - kHalf) + 1;
  }
  return p;
}

struct QuantizedX {
  size_t blocks = 0;          // per token
  std::vector<int16_t> q;     // [T][blocks][32], in the weight's lane order, zero past cols
  // kVnni only (q is then unused): [T][blocks rounded up to even][32] as i8, same lane order; the
  // padding block is all zeros.
  size_t blocks_even = 0;
  std::vector<int8_t> q8;
  std::vector<float> d;       // [T][blocks] scales
  std::vector<float> dsum;    // [T][blocks] scale * sum of the codes (for zero points)
  std::vector<int32_t> start8;  // kVnni only: [T][blocks] -8 * sum of the codes (q4_0's offset term)
};

// Per block: d = max|x| / 127, code = round(x / d), as ggml's q8_0.
// Tokens are independent: split over the pool by tokens when there are many (a prefill), the
// bits do not depend on how.
void quantize_x(const float* x, size_t T, size_t cols, Order order, QuantizedX& out, ThreadPool* pool) {
  const size_t nb = (cols + kBlock - 1) / kBlock;
  out.blocks = nb;
  if (out.q.size() < T * nb * kBlock) out.q.resize(T * nb * kBlock);  // grows once, then reused
  if (out.d.size() < T * nb) out.d.resize(T * nb), out.dsum.resize(T * nb);
  const size_t nb2 = nb + nb % 2;
  out.blocks_even = nb2;
  if (kVnni && out.q8.size() < T * nb2 * kBlock) out.q8.resize(T * nb2 * kBlock);
  if (kVnni && out.start8.size() < T * nb) out.start8.resize(T * nb);
  size_t perm[kBlock];
  for (size_t p = 0; p < kBlock; ++p) perm[p] = element_at(order, p);
  auto tokens = [&](size_t t0, size_t t1) {
    for (size_t t = t0; t < t1; ++t) {
      for (size_t b = 0; b < nb; ++b) {
        const float* xb = x + t * cols + b * kBlock;
        const size_t valid = std::min(kBlock, cols - b * kBlock);
        float amax = 0;
        bool finite = true;
        for (size_t j = 0; j < valid; ++j) amax = std::max(amax, std::fabs(xb[j])), finite = finite && std::isfinite(xb[j]);
        // A block holding NaN or infinity gets a NaN scale and zero codes: its products come out
        // NaN, as in f32, and no non-finite value is converted to an integer.
        // A block so small that 1/d overflows (max|x| below ~127 x FLT_MIN, d subnormal) is quantized
        // as zeros: x * inf would be inf or NaN, and converting those to int is undefined.
        const float d = finite ? amax / 127.0f : NAN;
        const float id = finite && d > 0 && 1.0f / d <= FLT_MAX ? 1.0f / d : 0.0f;
        int codes[kBlock] = {};
        int sum = 0;
        for (size_t j = 0; finite && j < valid; ++j) sum += (codes[j] = int(std::nearbyint(xb[j] * id)));
        if constexpr (kVnni) {
          int8_t* q = &out.q8[(t * nb2 + b) * kBlock];
          for (size_t p = 0; p < kBlock; ++p) q[p] = int8_t(codes[perm[p]]);
          if (b + 1 == nb && nb2 > nb) std::memset(q + kBlock, 0, kBlock);
          out.start8[t * nb + b] = -8 * sum;
        } else {
          int16_t* q = &out.q[(t * nb + b) * kBlock];
          for (size_t p = 0; p < kBlock; ++p) q[p] = int16_t(codes[perm[p]]);
        }
        out.d[t * nb + b] = d;
        out.dsum[t * nb + b] = d * float(sum);
      }
    }
  };
  if (pool && pool->size() > 1 && T > 1 && T * cols >= (size_t(1) << 14))
    pool->parallel_for(T, tokens);
  else
    tokens(0, T);
}

// ---------------------------------------------------------------------------------------------
// Integer weight rows. Each kind gives a block's codes as kChunks i16 vectors (in its Order), the
// block's scale, a code offset (value = scale * (code - offset)), an optional zero point
// (value = scale * code + min), and a per-row scale.

// kChunks vectors of 32 int8 codes at p.
HWY_INLINE void load_i8(const uint8_t* p, V16* out) {
  const D16 d16;
  const hn::Rebind<int8_t, D16> d8;
  for (size_t c = 0; c < kChunks; ++c)
    out[c] = hn::PromoteTo(d16, hn::LoadU(d8, reinterpret_cast<const int8_t*>(p) + c * kLanes16));
}
// kChunks vectors of the 32 nibbles in the 16 bytes at p: each chunk is kHalf bytes' low nibbles
// then their high ones (the lane orders SplitHalves and Pairs describe).
template <Order kOrder>
HWY_INLINE void load_nibbles(const uint8_t* p, V16* out) {
  const D16 d16;
#if HWY_TARGET == HWY_SCALAR
  for (size_t e = 0; e < kBlock; ++e) {
    const size_t byte = kOrder == Order::Pairs ? e / 2 : e % 16, high = kOrder == Order::Pairs ? e % 2 : e / 16;
    out[e] = hn::Set(d16, int16_t((p[byte] >> (4 * high)) & 15));
  }
#else
  const hn::Half<D16> dh;
  const hn::Rebind<uint8_t, decltype(dh)> du8;
  const auto mask = hn::Set(dh, 15);
  for (size_t c = 0; c < kChunks; ++c) {
    const auto v = hn::PromoteTo(dh, hn::LoadU(du8, p + c * kHalf));
    out[c] = hn::Combine(d16, hn::ShiftRight<4>(v), hn::And(v, mask));
  }
#endif
}

// int8: f32 row scale, then cols codes (the last block may be short: copied, zero-padded).
struct Int8Row {
  static constexpr Order kOrder = Order::Natural;
  static constexpr bool kZeroPoint = false;
  static constexpr int16_t kCodeOffset = 0;
  const uint8_t* codes = nullptr;
  size_t cols = 0;
  float row_scale = 1.0f;
  Int8Row() = default;
  Int8Row(const TensorView& w, size_t r) : codes(w.row(int64_t(r)) + 4), cols(size_t(w.cols())), row_scale(load_f32(w.row(int64_t(r)))) {}
  HWY_INLINE void load(size_t b, V16* out) const {
    const size_t at = b * kBlock;
    if (at + kBlock <= cols) return load_i8(codes + at, out);
    alignas(64) uint8_t tail[kBlock] = {};
    std::memcpy(tail, codes + at, cols - at);
    load_i8(tail, out);
  }
  float scale(size_t) const { return 1.0f; }
  float zero(size_t) const { return 0.0f; }
  const uint8_t* block_bytes(size_t b) const { return codes + b * kBlock; }
};

// q8_0: blocks of f16 scale + 32 int8 codes (a last block is stored zero-padded).
struct Q80Row {
  static constexpr Order kOrder = Order::Natural;
  static constexpr bool kZeroPoint = false;
  static constexpr int16_t kCodeOffset = 0;
  const uint8_t* row = nullptr;
  float row_scale = 1.0f;
  Q80Row() = default;
  Q80Row(const TensorView& w, size_t r) : row(w.row(int64_t(r))) {}
  HWY_INLINE void load(size_t b, V16* out) const { load_i8(row + b * 34 + 2, out); }
  const uint8_t* block_bytes(size_t b) const { return row + b * 34; }
  float scale(size_t b) const { return f16(row + b * 34); }
  float zero(size_t) const { return 0.0f; }
};

// q4_0: blocks of f16 scale + 16 bytes of nibbles, code - 8.
struct Q40Row {
  // VNNI: q4_rows_vnni's 16-row panels meet activations in element order.
  static constexpr Order kOrder = kVnni ? Order::Natural : Order::SplitHalves;
  static constexpr bool kZeroPoint = false;
  static constexpr int16_t kCodeOffset = 8;  // value = scale * (code - 8)
  const uint8_t* row = nullptr;
  float row_scale = 1.0f;
  Q40Row() = default;
  Q40Row(const TensorView& w, size_t r) : row(w.row(int64_t(r))) {}
  HWY_INLINE void load(size_t b, V16* out) const { load_nibbles<kOrder>(row + b * 18 + 2, out); }
  const uint8_t* block_bytes(size_t b) const { return row + b * 18; }
  float scale(size_t b) const { return f16(row + b * 18); }
  float zero(size_t) const { return 0.0f; }
};

// int4: G f16 scales, [G f16 minimums], then the nibbles (element 2j low in byte j). Used when
// every block of 32 lies in one group (group % 32 == 0, or one group for the row).
template <bool kAsym>
struct Int4Row {
  static constexpr Order kOrder = Order::Pairs;
  static constexpr bool kZeroPoint = kAsym;
  static constexpr int16_t kCodeOffset = kAsym ? 0 : 8;
  const uint8_t* row = nullptr;
  const uint8_t* codes = nullptr;
  size_t cols = 0, group = 1, groups = 0;
  float row_scale = 1.0f;
  Int4Row() = default;
  Int4Row(const TensorView& w, size_t r)
      : row(w.row(int64_t(r))), cols(size_t(w.cols())), group(w.group), groups((cols + group - 1) / group) {
    codes = row + groups * (kAsym ? 4 : 2);
  }
  HWY_INLINE void load(size_t b, V16* out) const {
    const size_t at = b * kBlock;
    if (at + kBlock <= cols) return load_nibbles<kOrder>(codes + at / 2, out);
    alignas(64) uint8_t tail[kBlock / 2] = {};
    std::memcpy(tail, codes + at / 2, (cols - at + 1) / 2);
    load_nibbles<kOrder>(tail, out);
  }
  const uint8_t* block_bytes(size_t b) const { return codes + b * kBlock / 2; }
  float scale(size_t b) const { return f16(row + 2 * (b * kBlock / group)); }
  float zero(size_t b) const { return kAsym ? f16(row + 2 * groups + 2 * (b * kBlock / group)) : 0.0f; }
};

struct Job {
  const TensorView* w;
  const float* bias;
  const float* x;
  size_t T, rows, cols;
  float* y;
  const QuantizedX* qx;
};

// Ends an output value the same way on every path: the lanes' sum, the zero points' term, the
// row scale, the bias.
HWY_INLINE float finish(float lanes, float zero_term, float row_scale, const float* bias, size_t r) {
  const float s = (lanes + zero_term) * row_scale;
  return bias ? s + bias[r] : s;
}

// One R x TT tile of outputs from integer weights: each weight block is loaded once for TT tokens,
// each activation block once for R rows.
#if HWY_TARGET == HWY_AVX3_DL
// ---------------------------------------------------------------------------------------------
// VNNI: vpdpbusd adds, per i32 lane, the four products of its bytes (u8 weight code x i8 activation
// code) to the lane. Two blocks per 512-bit vector: lanes 0-7 hold block b, lanes 8-15 block b + 1,
// each block's codes in the lane order its Order names for 32 lanes (low nibbles, then high ones).
// Weight codes become unsigned by an offset: int8 / q8_0 codes + 128 (xor 0x80), int4_sym
// nibbles as stored (the offset 8 is already there), int4_asym nibbles (offset 0). The offset's
// term, -offset * (the activation codes' sum), is the dot's starting value per lane, computed
// with the same instruction, so the dot per block stays an exact integer.
//
// Inline assembly: Highway's AVX3_DL target enables AVX-VNNI (256-bit) but not AVX512_VNNI, which
// every CPU it detects as AVX3_DL has; so the intrinsic would not compile inside HWY_ATTR.
HWY_INLINE __m512i dpbusd(__m512i acc, __m512i u8, __m512i i8) {
  asm("vpdpbusd %[s], %[u], %[acc]" : [acc] "+v"(acc) : [u] "v"(u8), [s] "vm"(i8));
  return acc;
}
// 32 codes from 16 bytes of nibbles: the low nibbles, then the high ones.
HWY_INLINE __m256i nibbles_u8(const uint8_t* p) {
  const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  const __m256i both = _mm256_inserti128_si256(_mm256_castsi128_si256(v), _mm_srli_epi16(v, 4), 1);
  return _mm256_and_si256(both, _mm256_set1_epi8(15));
}
// 32 int8 codes + 128.
HWY_INLINE __m256i signed_u8(const uint8_t* p) {
  return _mm256_xor_si256(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)), _mm256_set1_epi8(char(0x80)));
}
HWY_INLINE __m256i u8_block(const Q80Row& w, size_t b) { return signed_u8(w.row + b * 34 + 2); }
HWY_INLINE __m256i u8_block(const Int8Row& w, size_t b) {
  const size_t at = b * kBlock;
  if (at + kBlock <= w.cols) return signed_u8(w.codes + at);
  alignas(32) uint8_t tail[kBlock] = {};  // padding codes meet zero activation codes
  std::memcpy(tail, w.codes + at, w.cols - at);
  return signed_u8(tail);
}
template <bool kAsym>
HWY_INLINE __m256i u8_block(const Int4Row<kAsym>& w, size_t b) {
  const size_t at = b * kBlock;
  if (at + kBlock <= w.cols) return nibbles_u8(w.codes + at / 2);
  alignas(16) uint8_t tail[kBlock / 2] = {};
  std::memcpy(tail, w.codes + at / 2, (w.cols - at + 1) / 2);
  return nibbles_u8(tail);
}
template <class Row>
constexpr int kVnniOffset = Row::kOrder == Order::Natural ? 128 : Row::kCodeOffset;

// Blocks b and b + 1 (zero codes for a b + 1 past the row's last block).
template <class Row>
HWY_INLINE __m512i u8_pair(const Row& w, size_t b, size_t nb) {
  const __m256i hi = b + 1 < nb ? u8_block(w, b + 1) : _mm256_setzero_si256();
  return _mm512_inserti64x4(_mm512_castsi256_si512(u8_block(w, b)), hi, 1);
}
HWY_INLINE __m512 pair_ps(float lo, float hi) {
  return _mm512_insertf32x8(_mm512_castps256_ps512(_mm256_set1_ps(lo)), _mm256_set1_ps(hi), 1);
}

// A pair's weight codes (u8_pair) and scales (block b's in lanes 0-7, b + 1's or 0 in lanes 8-15).
template <class Row>
HWY_INLINE void vnni_pair(const Row& w, size_t b, size_t nb, __m512i& wv, __m512& dw) {
  wv = u8_pair(w, b, nb);
  dw = pair_ps(w.scale(b), b + 1 < nb ? w.scale(b + 1) : 0.0f);
}

template <class Row, size_t R, size_t TT>
HWY_NOINLINE void int_tile_vnni(const Job& job, size_t r0, size_t t0) {
  constexpr int kOffset = kVnniOffset<Row>;
  const QuantizedX& qx = *job.qx;
  const size_t nb = qx.blocks, nb2 = qx.blocks_even;
  Row rows[R];
  for (size_t r = 0; r < R; ++r) rows[r] = Row(*job.w, r0 + r);
  __m512 acc[R][TT];
  for (size_t r = 0; r < R; ++r)
    for (size_t t = 0; t < TT; ++t) acc[r][t] = _mm512_setzero_ps();
  for (size_t b = 0; b < nb; b += 2) {
    const bool two = b + 1 < nb;
    __m512i xv[TT], start[TT];
    __m512 dx[TT], dsx[TT];
    for (size_t t = 0; t < TT; ++t) {
      xv[t] = _mm512_loadu_si512(&qx.q8[((t0 + t) * nb2 + b) * kBlock]);
      const size_t at = (t0 + t) * nb + b;
      dx[t] = pair_ps(qx.d[at], two ? qx.d[at + 1] : 0.0f);
      if constexpr (Row::kZeroPoint) dsx[t] = pair_ps(qx.dsum[at], two ? qx.dsum[at + 1] : 0.0f);
      start[t] = _mm512_setzero_si512();
      if constexpr (kOffset != 0)
        start[t] = _mm512_sub_epi32(start[t], dpbusd(_mm512_setzero_si512(), _mm512_set1_epi8(char(kOffset)), xv[t]));
    }
    for (size_t r = 0; r < R; ++r) {
      const uint8_t* next = rows[r].block_bytes(b) + R * job.w->row_bytes;
      hwy::Prefetch(next);
      hwy::Prefetch(next + 63);
    }
    for (size_t r = 0; r < R; ++r) {
      __m512i wv;
      __m512 dw;
      vnni_pair(rows[r], b, nb, wv, dw);
      // Zero points: min * (x's scale * code sum) per block, in lanes 0 and 8 only.
      __m512 zw = _mm512_setzero_ps();
      if constexpr (Row::kZeroPoint) zw = _mm512_maskz_mov_ps(0x0101, pair_ps(rows[r].zero(b), two ? rows[r].zero(b + 1) : 0.0f));
      for (size_t t = 0; t < TT; ++t) {
        const __m512 dot = _mm512_cvtepi32_ps(dpbusd(start[t], wv, xv[t]));
        acc[r][t] = _mm512_fmadd_ps(dot, _mm512_mul_ps(dw, dx[t]), acc[r][t]);
        if constexpr (Row::kZeroPoint) acc[r][t] = _mm512_fmadd_ps(zw, dsx[t], acc[r][t]);
      }
    }
  }
  for (size_t r = 0; r < R; ++r)
    for (size_t t = 0; t < TT; ++t)
      job.y[(t0 + t) * job.rows + r0 + r] =
          finish(_mm512_reduce_add_ps(acc[r][t]), 0.0f, rows[r].row_scale, job.bias, r0 + r);
}

// ---------------------------------------------------------------------------------------------
// q4_0 on VNNI, where a prefill spends most of its time: lanes are 16 ROWS, not 16 pieces of one
// row's block. A panel of 16 rows is transposed once per call into 8 vectors per block, vector k
// holding elements 4k..4k+3 of each row's block as u8 codes (0..15) in lane = row; a token's
// activation codes are then broadcast 4 at a time straight from memory (vpdpbusd's {1to16}
// operand), so one block costs per token 8 dot instructions and ONE convert, multiply and
// multiply-add for 16 outputs, instead of a convert, multiply and multiply-add per 64 products.
//
// Each output is therefore one f32 chain over its row's blocks in order:
//   acc = fma(float(dot_b), d_w[b] * d_x[b], acc),  dot_b = sum (code - 8) * q exact in i32,
// the same operations whatever the panel, token tile, thread range or token count, so results are
// bit-identical for any of them (the offset 8 enters dot_b as its start value, -8 * sum q, which
// quantize_x computes per block).
constexpr size_t kPanelRows = 16;
// A panel holds at most this many blocks (18 KiB, within a core's L1 data cache); longer rows are
// done in column ranges, the outputs' partial sums kept in y between them (an f32 store and load
// is exact, so the chain per output is the same).
constexpr size_t kPanelBlocks = 32;
struct Q4Panel {
  __m512i codes[kPanelBlocks * 8];  // [block][8]
  __m512 scales[kPanelBlocks];
};

// vpdpbusd with its i8 operand the 4 bytes at p broadcast to every lane.
HWY_INLINE __m512i dpbusd_bcast(__m512i acc, __m512i u8, const int8_t* p) {
  asm("vpdpbusd %[s]%{1to16%}, %[u], %[acc]"
      : [acc] "+v"(acc)
      : [u] "v"(u8), [s] "m"(*reinterpret_cast<const int32_t*>(p)));
  return acc;
}

// Dword transposition indices: from 4 rows x 4 dwords per vector (rows 4g..4g+3, lane 4j + c) in
// two vectors (a: rows 0-3, b: rows 4-7 as indices 16..31), rows 0-7's dwords c0 then c0 + 1.
struct Q4TransposeTables {
  alignas(64) int32_t idx[2][16];
  constexpr Q4TransposeTables() : idx() {
    for (size_t h = 0; h < 2; ++h)
      for (size_t l = 0; l < 16; ++l) {
        const size_t row = l % 8, c = 2 * h + l / 8;
        idx[h][l] = int32_t((row < 4 ? 0 : 16) + 4 * (row % 4) + c);
      }
  }
};
constexpr Q4TransposeTables kQ4Transpose;

// Block b (at = b * 18) of 16 rows as 8 code vectors (vector k: elements 4k..4k+3 of each row's
// block, row i in lane i) and the rows' scales.
HWY_INLINE void q4_block(const uint8_t* const* row, size_t at, __m512i* codes, __m512& scales) {
  // The 16 code bytes of rows 4g .. 4g + 3, one per 128-bit quarter.
  __m512i q[4];
  for (size_t g = 0; g < 4; ++g) {
    const uint8_t* const* r = row + 4 * g;
    __m512i v = _mm512_castsi128_si512(_mm_loadu_si128(reinterpret_cast<const __m128i*>(r[0] + at + 2)));
    v = _mm512_inserti32x4(v, _mm_loadu_si128(reinterpret_cast<const __m128i*>(r[1] + at + 2)), 1);
    v = _mm512_inserti32x4(v, _mm_loadu_si128(reinterpret_cast<const __m128i*>(r[2] + at + 2)), 2);
    q[g] = _mm512_inserti32x4(v, _mm_loadu_si128(reinterpret_cast<const __m128i*>(r[3] + at + 2)), 3);
  }
  // Rows 0-7 (ab) and 8-15 (cd): dwords 0, 1 (lo) and 2, 3 (hi), 8 rows each.
  const __m512i lo_pair = _mm512_load_si512(kQ4Transpose.idx[0]), hi_pair = _mm512_load_si512(kQ4Transpose.idx[1]);
  const __m512i ab_lo = _mm512_permutex2var_epi32(q[0], lo_pair, q[1]);
  const __m512i ab_hi = _mm512_permutex2var_epi32(q[0], hi_pair, q[1]);
  const __m512i cd_lo = _mm512_permutex2var_epi32(q[2], lo_pair, q[3]);
  const __m512i cd_hi = _mm512_permutex2var_epi32(q[2], hi_pair, q[3]);
  // Dword c of the 16 rows: byte j of a block holds element j (low nibble) and j + 16 (high), so
  // dword c gives elements 4c.. (vector c) and 16 + 4c.. (vector c + 4).
  const __m512i dword[4] = {_mm512_shuffle_i64x2(ab_lo, cd_lo, 0x44), _mm512_shuffle_i64x2(ab_lo, cd_lo, 0xEE),
                            _mm512_shuffle_i64x2(ab_hi, cd_hi, 0x44), _mm512_shuffle_i64x2(ab_hi, cd_hi, 0xEE)};
  const __m512i mask = _mm512_set1_epi8(15);
  for (size_t c = 0; c < 4; ++c) {
    codes[c] = _mm512_and_si512(dword[c], mask);
    codes[c + 4] = _mm512_and_si512(_mm512_srli_epi16(dword[c], 4), mask);
  }
  // (A gather of the 16 scale dwords measured slower than these scalar loads.)
  alignas(32) uint16_t s16[kPanelRows];
  for (size_t i = 0; i < kPanelRows; ++i) s16[i] = load_u16(row[i] + at);
  scales = _mm512_cvtph_ps(_mm256_load_si256(reinterpret_cast<const __m256i*>(s16)));
}

// The rows of a panel at r0 with n <= 16 rows; lanes past n repeat row r0 (their outputs are never
// stored).
HWY_INLINE void q4_panel_rows(const TensorView& w, size_t r0, size_t n, const uint8_t** row) {
  for (size_t i = 0; i < kPanelRows; ++i) row[i] = w.row(int64_t(r0 + (i < n ? i : 0)));
}
// The next panel's rows at block b, read ahead: decode streams the weights from memory.
HWY_INLINE void q4_prefetch(const uint8_t* const* row, size_t at, size_t ahead) {
  for (size_t i = 0; i < kPanelRows; ++i) hwy::Prefetch(row[i] + at + ahead);
}

// Blocks [b0, b1) of rows r0 .. r0 + n - 1 of w into the panel, for the token tiles below.
HWY_NOINLINE void q4_panel(const TensorView& w, size_t r0, size_t n, size_t b0, size_t b1, Q4Panel& panel) {
  const uint8_t* row[kPanelRows];
  q4_panel_rows(w, r0, n, row);
  for (size_t b = b0; b < b1; ++b) {
    if (b % 2 == 0) q4_prefetch(row, b * 18, kPanelRows * w.row_bytes);
    q4_block(row, b * 18, &panel.codes[(b - b0) * 8], panel.scales[b - b0]);
  }
}

// One block's contribution to TT outputs of a panel: acc[t] += float(dot) * (d_w * d_x).
template <size_t TT>
HWY_INLINE void q4_block_tokens(const QuantizedX& qx, size_t b, size_t t0, const __m512i* wv, __m512 dw, __m512* acc) {
  const size_t nb = qx.blocks, nb2 = qx.blocks_even;
  // Unrolled, so the accumulators stay in registers (GCC keeps a rolled loop's array on the stack).
#pragma GCC unroll 16
  for (size_t t = 0; t < TT; ++t) {
    const size_t at = (t0 + t) * nb + b;
    const int8_t* xb = &qx.q8[((t0 + t) * nb2 + b) * kBlock];
    __m512i dot = _mm512_set1_epi32(qx.start8[at]);
#pragma GCC unroll 8
    for (size_t k = 0; k < 8; ++k) dot = dpbusd_bcast(dot, wv[k], xb + 4 * k);
    acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), _mm512_mul_ps(dw, _mm512_set1_ps(qx.d[at])), acc[t]);
  }
}

// Stores a panel's TT outputs (n valid rows), with the bias.
template <size_t TT>
HWY_INLINE void q4_store(const Job& job, size_t r0, size_t n, size_t t0, const __m512* acc) {
  const __mmask16 valid = __mmask16((1u << n) - 1);
  const __m512 bias = job.bias ? _mm512_maskz_loadu_ps(valid, job.bias + r0) : _mm512_setzero_ps();
  for (size_t t = 0; t < TT; ++t)
    _mm512_mask_storeu_ps(job.y + (t0 + t) * job.rows + r0, valid, job.bias ? _mm512_add_ps(acc[t], bias) : acc[t]);
}

// Decode (one token): each block transposed and used at once, no panel in memory.
HWY_NOINLINE void q4_decode(const Job& job, size_t r0, size_t n) {
  const uint8_t* row[kPanelRows];
  q4_panel_rows(*job.w, r0, n, row);
  const size_t nb = job.qx->blocks;
  __m512 acc[1] = {_mm512_setzero_ps()};
  for (size_t b = 0; b < nb; ++b) {
    if (b % 2 == 0) q4_prefetch(row, b * 18, kPanelRows * job.w->row_bytes);
    __m512i wv[8];
    __m512 dw;
    q4_block(row, b * 18, wv, dw);
    q4_block_tokens<1>(*job.qx, b, 0, wv, dw, acc);
  }
  q4_store<1>(job, r0, n, 0, acc);
}

// TT tokens from t0 against a panel of rows r0 .. r0 + n - 1 holding blocks [b0, b1).
template <size_t TT>
HWY_NOINLINE void q4_panel_tokens(const Job& job, const Q4Panel& panel, size_t r0, size_t n, size_t t0, size_t b0,
                                  size_t b1) {
  const __mmask16 valid = __mmask16((1u << n) - 1);
  __m512 acc[TT];
  for (size_t t = 0; t < TT; ++t)
    acc[t] = b0 == 0 ? _mm512_setzero_ps() : _mm512_maskz_loadu_ps(valid, job.y + (t0 + t) * job.rows + r0);
  for (size_t b = b0; b < b1; ++b) {
    __m512i wv[8];
    for (size_t k = 0; k < 8; ++k) wv[k] = panel.codes[(b - b0) * 8 + k];
    q4_block_tokens<TT>(*job.qx, b, t0, wv, panel.scales[b - b0], acc);
  }
  if (b1 == job.qx->blocks) return q4_store<TT>(job, r0, n, t0, acc);
  for (size_t t = 0; t < TT; ++t) _mm512_mask_storeu_ps(job.y + (t0 + t) * job.rows + r0, valid, acc[t]);
}

// A thread's rows [begin, end) of a q4_0 product: panels of 16 rows (and up to 32 blocks), each
// built once per call and used for every token, in tiles of 16 tokens, then 8, 4, 2, 1.
void q4_rows_vnni(const Job& job, size_t begin, size_t end) {
  const size_t nb = job.qx->blocks;
  Q4Panel panel;  // on the stack: no allocation
  for (size_t r = begin; r < end; r += kPanelRows) {
    const size_t n = std::min(kPanelRows, end - r);
    if (job.T == 1) {
      q4_decode(job, r, n);
      continue;
    }
    for (size_t b0 = 0; b0 < nb; b0 += kPanelBlocks) {
      const size_t b1 = std::min(nb, b0 + kPanelBlocks);
      q4_panel(*job.w, r, n, b0, b1, panel);
      size_t t = 0;
      for (; t + 16 <= job.T; t += 16) q4_panel_tokens<16>(job, panel, r, n, t, b0, b1);
      if (t + 8 <= job.T) q4_panel_tokens<8>(job, panel, r, n, t, b0, b1), t += 8;
      if (t + 4 <= job.T) q4_panel_tokens<4>(job, panel, r, n, t, b0, b1), t += 4;
      if (t + 2 <= job.T) q4_panel_tokens<2>(job, panel, r, n, t, b0, b1), t += 2;
      if (t < job.T) q4_panel_tokens<1>(job, panel, r, n, t, b0, b1);
    }
  }
}
#endif  // HWY_TARGET == HWY_AVX3_DL

template <class Row, size_t R, size_t TT>
HWY_NOINLINE void int_tile(const Job& job, size_t r0, size_t t0) {
#if HWY_TARGET == HWY_AVX3_DL
  return int_tile_vnni<Row, R, TT>(job, r0, t0);
#endif
  const D32 d32;
  const DF df;
  const D16 d16;
  const QuantizedX& qx = *job.qx;
  const size_t nb = qx.blocks;
  Row rows[R];
  for (size_t r = 0; r < R; ++r) rows[r] = Row(*job.w, r0 + r);
  hn::Vec<DF> acc[R][TT];
  float zsum[R][TT];
  for (size_t r = 0; r < R; ++r)
    for (size_t t = 0; t < TT; ++t) acc[r][t] = hn::Zero(df), zsum[r][t] = 0.0f;
  for (size_t b = 0; b < nb; ++b) {
    V16 xv[TT][kChunks];
    hn::Vec<DF> dx[TT];  // the activation blocks' scales, broadcast once per block
    // The code offset as the integer dot's starting value: -offset * (x's codes), per lane, so
    // sum (code - offset) * q costs nothing per row.
    hn::Vec<D32> start[TT];
    for (size_t t = 0; t < TT; ++t) {
      const size_t at = (t0 + t) * nb + b;
      for (size_t c = 0; c < kChunks; ++c) xv[t][c] = hn::LoadU(d16, &qx.q[at * kBlock + c * kLanes16]);
      dx[t] = hn::Set(df, qx.d[at]);
      start[t] = hn::Zero(d32);
      if constexpr (Row::kCodeOffset != 0) {
        auto s0 = hn::Zero(d32), s1 = hn::Zero(d32);
        for (size_t c = 0; c < kChunks; ++c)
          s0 = hn::ReorderWidenMulAccumulate(d32, xv[t][c], hn::Set(d16, int16_t(-Row::kCodeOffset)), s0, s1);
        start[t] = hn::RearrangeToOddPlusEven(s0, s1);
      }
    }
    // The next tile's rows at this block: the hardware prefetcher alone leaves decode (one pass
    // over weights that do not fit in cache) well short of the memory bandwidth.
    for (size_t r = 0; r < R; ++r) hwy::Prefetch(rows[r].block_bytes(b) + R * job.w->row_bytes);
    for (size_t r = 0; r < R; ++r) {
      V16 wv[kChunks];
      rows[r].load(b, wv);
      const auto dw = hn::Set(df, rows[r].scale(b));
      for (size_t t = 0; t < TT; ++t) {
        auto sum0 = start[t], sum1 = hn::Zero(d32);
        for (size_t c = 0; c < kChunks; ++c) sum0 = hn::ReorderWidenMulAccumulate(d32, wv[c], xv[t][c], sum0, sum1);
        const auto dot = hn::ConvertTo(df, hn::RearrangeToOddPlusEven(sum0, sum1));
        acc[r][t] = hn::MulAdd(dot, hn::Mul(dw, dx[t]), acc[r][t]);
        if constexpr (Row::kZeroPoint) zsum[r][t] = std::fma(rows[r].zero(b), qx.dsum[(t0 + t) * nb + b], zsum[r][t]);
      }
    }
  }
  for (size_t r = 0; r < R; ++r)
    for (size_t t = 0; t < TT; ++t)
      job.y[(t0 + t) * job.rows + r0 + r] =
          finish(hn::GetLane(hn::SumOfLanes(df, acc[r][t])), zsum[r][t], rows[r].row_scale, job.bias, r0 + r);
}

// ---------------------------------------------------------------------------------------------
// Float weight rows: f32, f16 and bf16 in place; other types decoded to an f32 scratch first.
using DW = hn::ScalableTag<float>;
constexpr size_t kLanesF = hn::MaxLanes(DW());

struct F32Row {
  const float* p = nullptr;
  HWY_INLINE hn::Vec<DW> load(size_t i) const { return hn::LoadU(DW(), p + i); }
  float at(size_t i) const { return p[i]; }
};
struct F16Row {
  const uint8_t* p = nullptr;
  HWY_INLINE hn::Vec<DW> load(size_t i) const {
    const hn::Rebind<hwy::float16_t, DW> dh;
    return hn::PromoteTo(DW(), hn::LoadU(dh, reinterpret_cast<const hwy::float16_t*>(p) + i));
  }
  float at(size_t i) const { return f16_to_f32_fast(load_u16(p + 2 * i)); }
};
struct BF16Row {
  const uint8_t* p = nullptr;
  HWY_INLINE hn::Vec<DW> load(size_t i) const {
    const hn::Rebind<hwy::bfloat16_t, DW> dh;
    return hn::PromoteTo(DW(), hn::LoadU(dh, reinterpret_cast<const hwy::bfloat16_t*>(p) + i));
  }
  float at(size_t i) const { return bf16_to_f32(load_u16(p + 2 * i)); }
};

// The columns past the last whole vector, one multiply-add each, continuing from s. One function
// for every tile shape, so the tail's operations are the same wherever the row falls.
template <class Row>
HWY_NOINLINE float tail_dot(const Row& w, const float* x, size_t from, size_t cols, float s) {
  for (size_t i = from; i < cols; ++i) s = std::fma(w.at(i), x[i], s);
  return s;
}

template <class Row, size_t R, size_t TT>
HWY_NOINLINE void float_tile(const Job& job, const Row* rows, size_t r0, size_t t0) {
  const DW df;
  const size_t cols = job.cols, full = cols - cols % kLanesF;
  hn::Vec<DW> acc[R][TT];
  for (size_t r = 0; r < R; ++r)
    for (size_t t = 0; t < TT; ++t) acc[r][t] = hn::Zero(df);
  for (size_t i = 0; i < full; i += kLanesF) {
    hn::Vec<DW> xv[TT];
    for (size_t t = 0; t < TT; ++t) xv[t] = hn::LoadU(df, job.x + (t0 + t) * cols + i);
    for (size_t r = 0; r < R; ++r) {
      const auto wv = rows[r].load(i);
      for (size_t t = 0; t < TT; ++t) acc[r][t] = hn::MulAdd(wv, xv[t], acc[r][t]);
    }
  }
  for (size_t r = 0; r < R; ++r)
    for (size_t t = 0; t < TT; ++t) {
      const float s = tail_dot(rows[r], job.x + (t0 + t) * cols, full, cols, hn::GetLane(hn::SumOfLanes(df, acc[r][t])));
      job.y[(t0 + t) * job.rows + r0 + r] = finish(s, 0.0f, 1.0f, job.bias, r0 + r);
    }
}

// ---------------------------------------------------------------------------------------------
// Tiling of a thread's rows [begin, end): whole tiles, then the remainders one by one.
template <size_t R, class TileFn, size_t kToks = kTileToks>
HWY_INLINE void over_tokens(size_t T, const TileFn& tile) {
  size_t t = 0;
  if (T > 1)
    for (; t + kToks <= T; t += kToks) tile(std::integral_constant<size_t, R>(), std::integral_constant<size_t, kToks>(), t);
  for (; t < T; ++t) tile(std::integral_constant<size_t, R>(), std::integral_constant<size_t, 1>(), t);
}

template <class Row>
void int_rows(const Job& job, size_t begin, size_t end) {
  auto tile = [&](auto R, auto TT, size_t r, size_t t) { int_tile<Row, decltype(R)::value, decltype(TT)::value>(job, r, t); };
  size_t r = begin;
  // Decode: more rows in flight per pass over the activations, for more memory streams at once.
  if (job.T == 1)
    for (; r + kDecodeRows <= end; r += kDecodeRows) int_tile<Row, kDecodeRows, 1>(job, r, 0);
  auto tiles = [&](auto R, size_t r) {
    auto one = [&](auto RR, auto TT, size_t t) { tile(RR, TT, r, t); };
    over_tokens<decltype(R)::value, decltype(one), kIntTileToks>(job.T, one);
  };
  for (; r + kIntTileRows <= end; r += kIntTileRows) tiles(std::integral_constant<size_t, kIntTileRows>(), r);
  for (; r < end; ++r) tiles(std::integral_constant<size_t, 1>(), r);
}

// Rows of a float type, read in place (Row::p points at the row).
template <class Row>
void float_rows(const Job& job, size_t begin, size_t end) {
  auto run = [&](size_t r, auto R) {
    Row rows[decltype(R)::value];
    for (size_t i = 0; i < decltype(R)::value; ++i) rows[i].p = reinterpret_cast<decltype(rows[i].p)>(job.w->row(int64_t(r + i)));
    over_tokens<decltype(R)::value>(job.T, [&](auto RR, auto TT, size_t t) {
      float_tile<Row, decltype(RR)::value, decltype(TT)::value>(job, rows, r, t);
    });
  };
  size_t r = begin;
  // Decode: more rows in flight, as int_rows, for the 16-bit types (measured 30 % faster from
  // memory); f32 already streams at the memory's bandwidth with 4 rows and was ~10 % slower with 8.
  if (job.T == 1 && !std::is_same_v<Row, F32Row>)
    for (; r + kDecodeRows <= end; r += kDecodeRows) {
      Row rows[kDecodeRows];
      for (size_t i = 0; i < kDecodeRows; ++i) rows[i].p = reinterpret_cast<decltype(rows[i].p)>(job.w->row(int64_t(r + i)));
      float_tile<Row, kDecodeRows, 1>(job, rows, r, 0);
    }
  for (; r + kTileRows <= end; r += kTileRows) run(r, std::integral_constant<size_t, kTileRows>());
  for (; r < end; ++r) run(r, std::integral_constant<size_t, 1>());
}

// Rows of a type without an integer path here: decoded to f32 (a per-thread scratch that grows
// once), then the f32 path.
void decoded_rows(const Job& job, size_t begin, size_t end) {
  thread_local std::vector<float> scratch;
  const auto& tr = qtype_traits(job.w->type);
  const size_t cols = job.cols;
  if (scratch.size() < kTileRows * cols) scratch.resize(kTileRows * cols);
  auto run = [&](size_t r, auto R) {
    F32Row rows[decltype(R)::value];
    for (size_t i = 0; i < decltype(R)::value; ++i) {
      tr.dequantize_row(job.w->row(int64_t(r + i)), cols, job.w->group, &scratch[i * cols]);
      rows[i].p = &scratch[i * cols];
    }
    over_tokens<decltype(R)::value>(job.T, [&](auto RR, auto TT, size_t t) {
      float_tile<F32Row, decltype(RR)::value, decltype(TT)::value>(job, rows, r, t);
    });
  };
  size_t r = begin;
  for (; r + kTileRows <= end; r += kTileRows) run(r, std::integral_constant<size_t, kTileRows>());
  for (; r < end; ++r) run(r, std::integral_constant<size_t, 1>());
}

// One product of a call: its job and the row loop for its weight type. `order` is the lane order
// its activations are quantized in, or -1 for the float paths (which read x directly).
struct Part {
  Job job;
  void (*rows)(const Job&, size_t, size_t);
  int order;
};

template <class Row>
void set_int(Part& p) {
  p.rows = int_rows<Row>;
  p.order = int(Row::kOrder);
}

Part plan(const TensorView& w, const float* bias, const float* x, size_t T, float* y) {
  Part p{Job{&w, bias, x, T, size_t(w.rows()), size_t(w.cols()), y, nullptr}, decoded_rows, -1};
  const bool int4_in_blocks = w.group > 0 && (w.group % kBlock == 0 || w.group >= p.job.cols);
  switch (w.type) {
    case QType::F32: p.rows = float_rows<F32Row>; break;
    case QType::F16: p.rows = float_rows<F16Row>; break;
    case QType::BF16: p.rows = float_rows<BF16Row>; break;
    case QType::Int8: set_int<Int8Row>(p); break;
    case QType::Q8_0: set_int<Q80Row>(p); break;
    case QType::Q4_0:
#if HWY_TARGET == HWY_AVX3_DL
      p.rows = q4_rows_vnni, p.order = int(Q40Row::kOrder);
#else
      set_int<Q40Row>(p);
#endif
      break;
    case QType::Int4Sym: if (int4_in_blocks) set_int<Int4Row<false>>(p); break;
    case QType::Int4Asym: if (int4_in_blocks) set_int<Int4Row<true>>(p); break;
  }
  return p;
}

// Runs products sharing the input x in one parallel section over their concatenated rows: one
// wake-up of the pool instead of one per product, and x quantized once per lane order. Each row
// goes through the same row loop as a lone product, so the bits are those of separate calls.
void run_parts(Part* parts, size_t n, ThreadPool* pool) {
  thread_local QuantizedX qx[3];  // per Order, the calling thread's: grow once, reused by every call
  bool quantized[3] = {};
  size_t total = 0, work = 0;
  for (size_t i = 0; i < n; ++i) {
    Job& job = parts[i].job;
    if (parts[i].order >= 0) {
      const size_t o = size_t(parts[i].order);
      if (!quantized[o]) quantize_x(job.x, job.T, job.cols, Order(o), qx[o], pool);
      quantized[o] = true;
      job.qx = &qx[o];
    }
    total += job.rows;
    work += job.rows * job.cols * job.T;
  }
  auto rows = [&](size_t begin, size_t end) {
    size_t first = 0;  // of parts[i] in the concatenation
    for (size_t i = 0; i < n && first < end; first += parts[i].job.rows, ++i) {
      const size_t b = std::max(begin, first), e = std::min(end, first + parts[i].job.rows);
      if (b < e) parts[i].rows(parts[i].job, b - first, e - first);
    }
  };
  if (pool && pool->size() > 1 && work >= kParallelMin)
    pool->parallel_for(total, rows);
  else
    rows(0, total);
}

void Matmul(const TensorView& w, const float* bias, const float* x, size_t T, float* y, ThreadPool* pool) {
  Part p = plan(w, bias, x, T, y);
  run_parts(&p, 1, pool);
}

void MatmulMany(const Product* products, size_t n, const float* x, size_t T, ThreadPool* pool) {
  Part parts[kMaxProducts];
  for (size_t i = 0; i < n; ++i) parts[i] = plan(*products[i].w, products[i].bias, x, T, products[i].y);
  run_parts(parts, n, pool);
}

int64_t ActiveTarget() { return HWY_TARGET; }

}  // namespace sf::kernels::simd::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace sf::kernels::simd {

HWY_EXPORT(Matmul);
HWY_EXPORT(ActiveTarget);
HWY_EXPORT(MatmulMany);

void matmul(const TensorView& w, const float* bias, const float* x, size_t T, float* y, ThreadPool* pool) {
  HWY_DYNAMIC_DISPATCH(Matmul)(w, bias, x, T, y, pool);
}

void matmul_many(const Product* products, size_t n, const float* x, size_t T, ThreadPool* pool) {
  HWY_DYNAMIC_DISPATCH(MatmulMany)(products, n, x, T, pool);
}

std::vector<int64_t> available_targets() { return hwy::SupportedAndGeneratedTargets(); }
const char* target_name(int64_t target) { return hwy::TargetName(target); }
void use_target(int64_t target) { hwy::SetSupportedTargetsForTest(target); }
int64_t active_target() { return HWY_DYNAMIC_DISPATCH(ActiveTarget)(); }

}  // namespace sf::kernels::simd
#endif  // HWY_ONCE
