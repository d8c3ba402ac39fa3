#include "converters/pytorch/model_parallel.h"

#include <cstring>
#include <filesystem>
#include <optional>

#include "converters/source_dir.h"
#include "core/checked.h"
#include "core/error.h"

namespace sf {

namespace fs = std::filesystem;

namespace {

constexpr int kReplicated = -1;
constexpr int kByWidth = -2;  // decided by the parts' shapes against the model's width

// How Meta's training code splits each weight across ranks (fairscale's parallel layers):
// column-parallel layers (outputs split) are cut along rows, row-parallel ones (inputs split)
// along columns. The embedding is cut along its feature columns in LLaMA 1/2 (ParallelEmbedding)
// and along its vocabulary rows in Llama 3 (VocabParallelEmbedding); see embedding_axis. Norms and
// RoPE frequencies are copied to every rank. A '*' matches any run of characters; the first
// matching rule wins.
struct SplitRule {
  const char* pattern;
  int axis;  // the axis the slices are concatenated along, kReplicated or kByWidth
};
constexpr SplitRule kSplitRules[] = {
    {"layers.*.attention.wq.weight", 0},     {"layers.*.attention.wk.weight", 0},
    {"layers.*.attention.wv.weight", 0},     {"layers.*.feed_forward.w1.weight", 0},
    {"layers.*.feed_forward.w3.weight", 0},  {"output.weight", 0},
    {"layers.*.attention.wo.weight", 1},     {"layers.*.feed_forward.w2.weight", 1},
    {"tok_embeddings.weight", kByWidth},     {"*norm.weight", kReplicated},
    {"rope.freqs", kReplicated},
};

bool glob_match(const std::string& pattern, const std::string& name) {
  const size_t star = pattern.find('*');
  if (star == std::string::npos) return pattern == name;
  const size_t tail = pattern.size() - star - 1;
  return name.size() >= pattern.size() - 1 && name.compare(0, star, pattern, 0, star) == 0 &&
         name.compare(name.size() - tail, tail, pattern, star + 1, tail) == 0;
}

std::optional<int> split_axis(const std::string& name) {
  for (const auto& r : kSplitRules)
    if (glob_match(r.pattern, name)) return r.axis;
  return std::nullopt;
}

// "consolidated.NN.pth" -> NN, for the digits Meta writes (at most a few).
std::optional<int> rank_of(const std::string& filename) {
  constexpr const char* kPrefix = "consolidated.";
  constexpr const char* kSuffix = ".pth";
  const size_t p = std::strlen(kPrefix), s = std::strlen(kSuffix);
  if (filename.size() <= p + s || filename.compare(0, p, kPrefix) != 0 ||
      filename.compare(filename.size() - s, s, kSuffix) != 0)
    return std::nullopt;
  const std::string digits = filename.substr(p, filename.size() - p - s);
  if (digits.empty() || digits.size() > 6 || digits.find_first_not_of("0123456789") != std::string::npos)
    return std::nullopt;
  return std::stoi(digits);
}

std::string part_name(int rank) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "consolidated.%02d.pth", rank);
  return buf;
}

bool same_values(const LazyTensor& a, const LazyTensor& b) {
  const std::vector<float> x = a.to_f32(), y = b.to_f32();
  return x.size() == y.size() && std::memcmp(x.data(), y.data(), x.size() * sizeof(float)) == 0;
}

// The axis an embedding's parts are concatenated along. Split by vocabulary, every part has the
// model's `dim` columns; split by features, the parts' columns add up to dim. Both at once would
// need dim / n == dim, impossible for the n > 1 parts of a model-parallel set.
size_t embedding_axis(const std::vector<ModelParallelPart>& parts, const std::string& name, int64_t dim) {
  std::string shapes;
  bool every_part_full = true;
  int64_t columns = 0;
  for (const auto& part : parts) {
    const LazyTensor& t = part.tensors.at(name);
    if (t.shape.size() != 2)
      fail_file(part.path, "tensor " + name + " " + shape_string(t.shape) + " is not a matrix");
    if (t.shape[1] < 0) fail_file(part.path, "tensor " + name + " has a negative dimension");
    shapes += (shapes.empty() ? "" : ", ") + shape_string(t.shape) + " in " + fs::path(part.path).filename().string();
    every_part_full = every_part_full && t.shape[1] == dim;
    columns = checked_add(columns, t.shape[1], part.path + ": tensor " + name);
  }
  if (dim <= 0)
    fail_file(parts[0].path, "tensor " + name + " is split across the parts (" + shapes +
                                 "), and telling whether by vocabulary rows or by feature columns needs the model's "
                                 "dim, which params.json beside the parts does not state");
  if (every_part_full) return 0;
  if (columns == dim) return 1;
  const std::string d = std::to_string(dim);
  fail_file(parts[0].path, "tensor " + name + ": the parts " + shapes +
                               " are split neither by vocabulary rows (each of dim " + d +
                               " columns) nor by feature columns (columns adding up to dim " + d + ")");
}

}  // namespace

std::vector<std::string> model_parallel_files(const std::string& dir) {
  std::map<int, std::string> by_rank;
  for (const auto& p : directory_entries(dir)) {
    const std::string name = p.filename().string();
    const auto rank = rank_of(name);
    if (!rank) continue;
    if (*rank >= kMaxModelParallelParts)
      fail_file(p.string(), "model-parallel rank " + std::to_string(*rank) + " is past the " +
                                std::to_string(kMaxModelParallelParts) + " parts shardforge reads");
    const auto [it, fresh] = by_rank.emplace(*rank, p.string());
    if (!fresh)
      fail_file(p.string(), "claims model-parallel rank " + std::to_string(*rank) + " as " +
                                fs::path(it->second).filename().string() + " does");
  }
  if (by_rank.empty() || (by_rank.size() == 1 && by_rank.begin()->first == 0)) return {};
  std::vector<std::string> files;
  const int last = by_rank.rbegin()->first;
  for (int r = 0; r <= last; ++r) {
    auto it = by_rank.find(r);
    if (it == by_rank.end())
      fail_file(dir + "/" + part_name(r), "is missing: the model-parallel parts go up to " +
                                              fs::path(by_rank.rbegin()->second).filename().string());
    files.push_back(it->second);
  }
  return files;
}

std::map<std::string, LazyTensor> merge_model_parallel(const std::vector<ModelParallelPart>& parts, int64_t dim) {
  if (parts.empty()) fail("no model-parallel parts to merge");
  const ModelParallelPart& first = parts[0];
  const std::string first_name = fs::path(first.path).filename().string();
  for (const auto& part : parts) {
    for (const auto& [name, t] : first.tensors)
      if (!part.tensors.count(name)) fail_file(part.path, "lacks tensor " + name + ", which " + first_name + " holds");
    for (const auto& [name, t] : part.tensors)
      if (!first.tensors.count(name)) fail_file(part.path, "holds tensor " + name + ", which " + first_name + " lacks");
  }
  std::map<std::string, LazyTensor> out;
  for (const auto& entry : first.tensors) {
    const std::string& name = entry.first;  // not a structured binding: the lambda below uses it
    const LazyTensor& t0 = entry.second;
    auto axis = split_axis(name);
    if (axis == kByWidth) axis = int(embedding_axis(parts, name, dim));
    if (!axis)
      fail_file(first.path,
                "tensor " + name + " has no rule for merging model-parallel parts (not a Meta LLaMA weight?)");
    // Rank 0's tensor must have the axis before the whole's extent along it is reset; every other
    // rank's is checked in the loop below (and must agree with rank 0 on the number of axes).
    if (*axis != kReplicated && t0.shape.size() <= size_t(*axis))
      fail_file(first.path, "tensor " + name + " " + shape_string(t0.shape) + " has no axis " +
                                std::to_string(*axis) + " to merge model-parallel parts along");
    LazyTensor whole = t0;
    if (*axis != kReplicated) {
      whole.storage.reset();
      whole.strides.clear();
      whole.offset = 0;
      whole.concat_axis = size_t(*axis);
      whole.shape[size_t(*axis)] = 0;
    }
    for (const auto& part : parts) {
      const LazyTensor& t = part.tensors.at(name);
      auto disagree = [&](const std::string& what) {
        fail_file(part.path, "tensor " + name + " " + what + " in " + first_name);
      };
      if (t.dtype != t0.dtype)
        disagree(std::string("is ") + dtype_name(t.dtype) + " but " + dtype_name(t0.dtype));
      if (*axis == kReplicated) {
        if (t.shape != t0.shape) disagree("has shape " + shape_string(t.shape) + " but " + shape_string(t0.shape));
        if (&part != &first && !same_values(t, t0))
          disagree("is replicated across model-parallel parts, yet differs from the one");
        continue;
      }
      const size_t ax = size_t(*axis);
      if (t.shape.size() <= ax)
        fail_file(part.path, "tensor " + name + " " + shape_string(t.shape) + " has no axis " + std::to_string(ax) +
                                 " to merge model-parallel parts along");
      bool agree = t.shape.size() == t0.shape.size();
      for (size_t i = 0; agree && i < t.shape.size(); ++i) agree = i == ax || t.shape[i] == t0.shape[i];
      if (!agree)
        disagree("has shape " + shape_string(t.shape) + ", which does not match " + shape_string(t0.shape) +
                 " outside axis " + std::to_string(ax));
      if (t.shape[ax] < 0) fail_file(part.path, "tensor " + name + " has a negative dimension");
      whole.shape[ax] = checked_add(whole.shape[ax], t.shape[ax], part.path + ": tensor " + name);
      whole.parts.push_back(t);
    }
    whole.check_bounds();
    out.emplace(name, std::move(whole));
  }
  return out;
}

}  // namespace sf
