// Google Benchmark: per-type row kernels (quantize, dot), the executor's SIMD matrix products
// (decode T = 1, prefill T = 64) with the weight bytes they stream, and plain memory read
// bandwidth for the roofline.
#include <benchmark/benchmark.h>

#include <random>
#include <vector>

#include "core/quant_types.h"
#include "executor/kernels.h"
#include "executor/matmul_simd.h"

namespace sf {
namespace {

struct TypeCase { QType type; size_t group; };
const TypeCase kCases[] = {{QType::F32, 0},      {QType::F16, 0},       {QType::BF16, 0},
                           {QType::Int8, 0},     {QType::Int4Sym, 32},  {QType::Int4Asym, 32},
                           {QType::Int4Sym, 128}, {QType::Q8_0, 0},     {QType::Q4_0, 0},
                           {QType::Int4Sym, 48}};
constexpr int kNumCases = int(sizeof kCases / sizeof kCases[0]);

std::vector<float> random_vec(size_t n) {
  std::mt19937 rng(42);
  std::normal_distribution<float> d;
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

std::string label(const TypeCase& c) {
  return std::string(qtype_traits(c.type).name) + (c.group ? ":g" + std::to_string(c.group) : "");
}

void BM_QuantizeRow(benchmark::State& st) {
  const TypeCase c = kCases[st.range(0)];
  const size_t cols = size_t(st.range(1));
  const auto& tr = qtype_traits(c.type);
  const auto x = random_vec(cols);
  std::vector<uint8_t> out(tr.row_bytes(cols, c.group));
  for (auto _ : st) {
    tr.quantize_row(x.data(), cols, c.group, out.data());
    benchmark::DoNotOptimize(out.data());
  }
  st.SetLabel(label(c));
  st.SetItemsProcessed(int64_t(st.iterations()) * int64_t(cols));
}

void BM_DotRow(benchmark::State& st) {
  const TypeCase c = kCases[st.range(0)];
  const size_t cols = size_t(st.range(1));
  const auto& tr = qtype_traits(c.type);
  const auto x = random_vec(cols);
  std::vector<uint8_t> row(tr.row_bytes(cols, c.group));
  tr.quantize_row(x.data(), cols, c.group, row.data());
  for (auto _ : st) benchmark::DoNotOptimize(tr.dot_row(row.data(), x.data(), cols, c.group));
  st.SetLabel(label(c));
  st.SetItemsProcessed(int64_t(st.iterations()) * int64_t(cols));
}

// W[rows x 1024] times T activations (T = 1: decode's matrix-vector product; T = 8: a batch of 8
// sequences decoding together; T = 64: prefill).
// Bytes processed = the weight bytes read per call, so the rate is the weights' stream in GB/s.
void BM_Matmul(benchmark::State& st) {
  const TypeCase c = kCases[st.range(0)];
  const size_t rows = size_t(st.range(1)), cols = 1024;
  const size_t T = size_t(st.range(2)), threads = size_t(st.range(3));
  const auto& tr = qtype_traits(c.type);
  const auto w = random_vec(rows * cols);
  const size_t rb = tr.row_bytes(cols, c.group);
  std::vector<uint8_t> data(rows * rb + 64);
  uint8_t* base = data.data() + (64 - reinterpret_cast<uintptr_t>(data.data()) % 64) % 64;
  for (size_t r = 0; r < rows; ++r) tr.quantize_row(&w[r * cols], cols, c.group, base + r * rb);
  TensorView v{"w", c.type, c.group, {int64_t(rows), int64_t(cols)}, base, rows * rb, rb};
  ThreadPool pool(threads);
  const auto x = random_vec(cols * T);
  std::vector<float> y(rows * T);
  for (auto _ : st) {
    kernels::matmul(v, nullptr, x.data(), T, y.data(), &pool);
    benchmark::DoNotOptimize(y.data());
  }
  st.SetLabel(label(c) + " " + std::to_string(rows) + "x1024 T=" + std::to_string(T) + " threads=" +
              std::to_string(threads));
  st.SetBytesProcessed(int64_t(st.iterations()) * int64_t(rows * rb));
  st.SetItemsProcessed(int64_t(st.iterations()) * int64_t(rows * cols * T));  // multiply-adds
}

// Prefill (T = 64, one thread) of the integer types on each SIMD target the CPU supports, in one
// binary: AVX3_DL's VNNI tiles against AVX3's i16 pairs, run side by side under the same load.
void BM_PrefillByTarget(benchmark::State& st) {
  const TypeCase c = kCases[st.range(0)];
  const auto targets = kernels::simd::available_targets();
  const size_t which = size_t(st.range(1));
  if (which >= targets.size()) return st.SkipWithError("no such target on this CPU");
  const size_t rows = 2816, cols = 1024, T = 64;
  const auto& tr = qtype_traits(c.type);
  const auto w = random_vec(rows * cols);
  const size_t rb = tr.row_bytes(cols, c.group);
  std::vector<uint8_t> data(rows * rb);
  for (size_t r = 0; r < rows; ++r) tr.quantize_row(&w[r * cols], cols, c.group, &data[r * rb]);
  TensorView v{"w", c.type, c.group, {int64_t(rows), int64_t(cols)}, data.data(), rows * rb, rb};
  const auto x = random_vec(cols * T);
  std::vector<float> y(rows * T);
  kernels::simd::use_target(targets[which]);
  for (auto _ : st) {
    kernels::simd::matmul(v, nullptr, x.data(), T, y.data(), nullptr);
    benchmark::DoNotOptimize(y.data());
  }
  kernels::simd::use_target(0);
  st.SetLabel(label(c) + " " + kernels::simd::target_name(targets[which]));
  st.SetItemsProcessed(int64_t(st.iterations()) * int64_t(rows * cols * T));  // multiply-adds
}

// Prefill (T = 64, one thread, best target) on the shapes of a 1024-wide model's FFN: gate/up
// (2816 x 1024) and down (1024 x 2816, longer rows: more blocks per row than fit a small cache).
void BM_PrefillShape(benchmark::State& st) {
  const TypeCase c = kCases[st.range(0)];
  const size_t rows = size_t(st.range(1)), cols = size_t(st.range(2)), T = 64;
  const auto& tr = qtype_traits(c.type);
  const auto w = random_vec(rows * cols);
  const size_t rb = tr.row_bytes(cols, c.group);
  std::vector<uint8_t> data(rows * rb);
  for (size_t r = 0; r < rows; ++r) tr.quantize_row(&w[r * cols], cols, c.group, &data[r * rb]);
  TensorView v{"w", c.type, c.group, {int64_t(rows), int64_t(cols)}, data.data(), rows * rb, rb};
  const auto x = random_vec(cols * T);
  std::vector<float> y(rows * T);
  for (auto _ : st) {
    kernels::simd::matmul(v, nullptr, x.data(), T, y.data(), nullptr);
    benchmark::DoNotOptimize(y.data());
  }
  st.SetLabel(label(c) + " " + std::to_string(rows) + "x" + std::to_string(cols) + " T=64");
  st.SetItemsProcessed(int64_t(st.iterations()) * int64_t(rows * cols * T));  // multiply-adds
}

void by_target_args(benchmark::internal::Benchmark* b) {
  for (int c = 0; c < kNumCases; ++c) {
    const QType t = kCases[c].type;
    const bool integer = t == QType::Int8 || t == QType::Q8_0 || t == QType::Q4_0 || kCases[c].group == 32;
    if (integer)
      for (int target = 0; target < 3; ++target) b->Args({c, target});
  }
}

// Sums a 512 MiB buffer, split by range over 1 or 2 threads (the arg): the read bandwidth a decode
// step (one pass over the weights on that many threads) is bound by, the roofline's denominator.
// Eight independent sums per thread so the loop vectorises and is not bound by one add chain.
void BM_MemoryRead(benchmark::State& st) {
  const size_t threads = size_t(st.range(0));
  std::vector<uint64_t> buf(size_t(512) << 17, 1);  // 512 MiB, touched so every page is resident
  ThreadPool pool(threads);
  std::vector<uint64_t> sums(threads * 8);
  for (auto _ : st) {
    pool.parallel_for(threads, [&](size_t begin, size_t end) {
      for (size_t part = begin; part < end; ++part) {
        const size_t n = buf.size() / threads, lo = part * n;
        uint64_t acc[8] = {};
        for (size_t i = lo; i + 8 <= lo + n; i += 8)
          for (size_t k = 0; k < 8; ++k) acc[k] += buf[i + k];
        for (size_t k = 0; k < 8; ++k) sums[part * 8 + k] = acc[k];
      }
    });
    benchmark::DoNotOptimize(sums.data());
    benchmark::ClobberMemory();
  }
  st.SetBytesProcessed(int64_t(st.iterations()) * int64_t(buf.size() * sizeof(uint64_t)));
}

void matmul_args(benchmark::internal::Benchmark* b) {
  for (int c = 0; c < kNumCases; ++c)
    for (int rows : {1024, 2816})
      for (int T : {1, 8, 64}) b->Args({c, rows, T, 1});  // decode, batch-8 decode, prefill
  for (int c = 0; c < kNumCases; ++c) b->Args({c, 2816, 1, 2});  // decode on both cores
  // Weights larger than the last-level cache (q4_0: 37 MiB), streamed from memory as in decoding a
  // real model: compare with BM_MemoryRead.
  for (int threads : {1, 2})
    for (int c = 0; c < kNumCases; ++c) b->Args({c, 65536, 1, threads});
}

BENCHMARK(BM_QuantizeRow)->ArgsProduct({benchmark::CreateDenseRange(0, kNumCases - 1, 1), {4096}});
BENCHMARK(BM_DotRow)->ArgsProduct({benchmark::CreateDenseRange(0, kNumCases - 1, 1), {4096}});
BENCHMARK(BM_Matmul)->Apply(matmul_args)->UseRealTime();
BENCHMARK(BM_PrefillByTarget)->Apply(by_target_args)->UseRealTime();
BENCHMARK(BM_PrefillShape)->Args({7, 2816, 1024})->Args({7, 1024, 2816})->Args({8, 2816, 1024})->Args({8, 1024, 2816})->UseRealTime();
BENCHMARK(BM_MemoryRead)->Arg(1)->Arg(2)->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace
}  // namespace sf

BENCHMARK_MAIN();
