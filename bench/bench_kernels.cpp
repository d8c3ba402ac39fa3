// Google Benchmark: per-type row kernels (quantize, dot) and the executor's matrix-vector product.
#include <benchmark/benchmark.h>

#include <random>
#include <vector>

#include "core/quant_types.h"
#include "executor/kernels.h"

namespace sf {
namespace {

struct TypeCase { QType type; size_t group; };
const TypeCase kCases[] = {{QType::F32, 0}, {QType::F16, 0}, {QType::BF16, 0}, {QType::Int8, 0},
                           {QType::Int4Sym, 32}, {QType::Int4Asym, 32}, {QType::Int4Sym, 128}};

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

// W[2048x2048] times T activations (T = 1: decode's matrix-vector product; T > 1: prefill).
void BM_Matmul(benchmark::State& st) {
  const TypeCase c = kCases[st.range(0)];
  const size_t rows = 2048, cols = 2048;
  const size_t threads = size_t(st.range(1)), T = size_t(st.range(2));
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
  st.SetLabel(label(c) + " threads=" + std::to_string(threads) + " T=" + std::to_string(T));
  st.SetBytesProcessed(int64_t(st.iterations()) * int64_t(rows * rb));
  st.SetItemsProcessed(int64_t(st.iterations()) * int64_t(rows * cols * T));  // multiply-adds
}

BENCHMARK(BM_QuantizeRow)->ArgsProduct({{0, 1, 2, 3, 4, 5, 6}, {4096}});
BENCHMARK(BM_DotRow)->ArgsProduct({{0, 1, 2, 3, 4, 5, 6}, {4096}});
BENCHMARK(BM_Matmul)->ArgsProduct({{0, 1, 3, 4}, {1, 2}, {1, 64}})->UseRealTime();

}  // namespace
}  // namespace sf

BENCHMARK_MAIN();
