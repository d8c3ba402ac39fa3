#include "converters/onnx/onnx_graph.h"

#include <cmath>
#include <cstdint>
#include <cstring>
#include <deque>

#include "core/dtype.h"
#include "core/error.h"

namespace sf {

namespace {

constexpr size_t kMaxConstantElements = 64;  // Reshape targets and scalars: a handful of elements
constexpr int kMaxConstantDepth = 8;

const std::vector<const onnx::NodeProto*> kNoNodes;

// Elements of a small tensor held in a Constant node's message.
std::optional<std::vector<double>> message_elements(const onnx::TensorProto& t) {
  std::vector<double> out;
  const auto type = t.data_type();
  if (t.data_location() == onnx::TensorProto::EXTERNAL) return std::nullopt;
  if (t.has_raw_data()) {
    const std::string& r = t.raw_data();
    size_t size = type == onnx::TensorProto::INT64 || type == onnx::TensorProto::DOUBLE ? 8
                  : type == onnx::TensorProto::INT32 || type == onnx::TensorProto::FLOAT ? 4 : 0;
    if (size == 0 || r.size() % size || r.size() / size > kMaxConstantElements) return std::nullopt;
    for (size_t i = 0; i < r.size(); i += size) {
      if (type == onnx::TensorProto::INT64) { int64_t v; std::memcpy(&v, r.data() + i, 8); out.push_back(double(v)); }
      if (type == onnx::TensorProto::DOUBLE) { double v; std::memcpy(&v, r.data() + i, 8); out.push_back(v); }
      if (type == onnx::TensorProto::INT32) { int32_t v; std::memcpy(&v, r.data() + i, 4); out.push_back(double(v)); }
      if (type == onnx::TensorProto::FLOAT) { float v; std::memcpy(&v, r.data() + i, 4); out.push_back(double(v)); }
    }
    return out;
  }
  if (t.int64_data_size() + t.float_data_size() + t.int32_data_size() + t.double_data_size() > int(kMaxConstantElements))
    return std::nullopt;
  if (type == onnx::TensorProto::INT64) for (auto v : t.int64_data()) out.push_back(double(v));
  else if (type == onnx::TensorProto::FLOAT) for (auto v : t.float_data()) out.push_back(double(v));
  else if (type == onnx::TensorProto::INT32) for (auto v : t.int32_data()) out.push_back(double(v));
  else if (type == onnx::TensorProto::DOUBLE) for (auto v : t.double_data()) out.push_back(v);
  else return std::nullopt;
  return out;
}

}  // namespace

OnnxGraph::OnnxGraph(const onnx::GraphProto& g, const std::map<std::string, LazyTensor>& initializers,
                     const std::string& path)
    : path_(path), initializers_(initializers) {
  budget_ = 64 * uint64_t(g.node_size()) + (uint64_t(1) << 20);
  for (const auto& in : g.input())
    if (!initializers_.count(in.name())) inputs_.insert(in.name());
  for (const auto& n : g.node())
    for (const auto& out : n.output()) {
      if (out.empty()) continue;
      if (initializers_.count(out) || inputs_.count(out) || !producer_.emplace(out, &n).second)
        fail(path + ": value '" + out + "' is defined twice (node '" + n.name() + "')");
    }
  // Kahn's algorithm: a node is ready once every value it reads is defined; what is never ready
  // lies on a cycle (or reads a value nothing defines, which is refused below first).
  std::map<const Node*, int> waiting;
  std::deque<const Node*> ready;
  for (const auto& n : g.node()) {
    int pending = 0;
    for (const auto& in : n.input()) {
      if (in.empty()) continue;  // an omitted optional input
      if (const Node* p = producer(in)) {
        consumers_[in].push_back(&n);
        ++pending;
        (void)p;
      } else if (!initializers_.count(in) && !inputs_.count(in)) {
        fail(path + ": node '" + n.name() + "' (" + n.op_type() + ") reads '" + in + "', which nothing in the graph defines");
      } else {
        consumers_[in].push_back(&n);
      }
    }
    waiting[&n] = pending;
    if (pending == 0) ready.push_back(&n);
  }
  while (!ready.empty()) {
    const Node* n = ready.front();
    ready.pop_front();
    position_[n] = order_.size();
    order_.push_back(n);
    for (const auto& out : n->output()) {
      auto it = consumers_.find(out);
      if (out.empty() || it == consumers_.end()) continue;
      for (const Node* c : it->second) {
        // A node reading the same value twice waits for it twice.
        if (--waiting[c] == 0) ready.push_back(c);
      }
    }
  }
  if (order_.size() != size_t(g.node_size())) {
    for (const auto& n : g.node())
      if (!position_.count(&n)) fail(path + ": the graph has a cycle through node '" + n.name() + "' (" + n.op_type() + ")");
  }
}

void OnnxGraph::spend() const {
  if (budget_ == 0) fail(path_ + ": the graph is too large or tangled to recover its structure within bounds");
  --budget_;
}

const LazyTensor* OnnxGraph::initializer(const std::string& value) const {
  std::string v = value;
  for (int hops = 0; hops <= kMaxConstantDepth; ++hops) {
    if (auto it = initializers_.find(v); it != initializers_.end()) return &it->second;
    const Node* p = producer(v);
    if (!p || p->op_type() != "Identity" || p->input_size() != 1) return nullptr;
    v = p->input(0);
  }
  return nullptr;
}

const OnnxGraph::Node* OnnxGraph::producer(const std::string& value) const {
  auto it = producer_.find(value);
  return it == producer_.end() ? nullptr : it->second;
}

const std::vector<const OnnxGraph::Node*>& OnnxGraph::consumers(const std::string& value) const {
  auto it = consumers_.find(value);
  return it == consumers_.end() ? kNoNodes : it->second;
}

OnnxGraph::Hit OnnxGraph::find_forward(const std::string& value, const std::function<bool(const Node&, int)>& stop,
                                       size_t limit) const {
  std::deque<std::string> frontier{value};
  std::set<const Node*> seen;
  while (!frontier.empty() && seen.size() < limit) {
    const std::string v = frontier.front();
    frontier.pop_front();
    for (const Node* c : consumers(v)) {
      if (!seen.insert(c).second) continue;
      spend();
      for (int i = 0; i < c->input_size(); ++i)
        if (c->input(i) == v && stop(*c, i)) return {c, i};
      for (const auto& out : c->output()) frontier.push_back(out);
    }
  }
  return {};
}

std::vector<const OnnxGraph::Node*> OnnxGraph::ancestors(const std::string& value,
                                                         const std::function<bool(const Node&)>& stop,
                                                         size_t limit) const {
  std::vector<const Node*> out;
  std::set<const Node*> seen;
  std::deque<std::string> frontier{value};
  while (!frontier.empty() && out.size() < limit) {
    const Node* p = producer(frontier.front());
    frontier.pop_front();
    if (!p || !seen.insert(p).second) continue;
    spend();
    out.push_back(p);
    if (stop(*p)) continue;
    for (const auto& in : p->input()) frontier.push_back(in);
  }
  return out;
}

std::optional<std::vector<double>> OnnxGraph::constant_elements(const std::string& value) const {
  if (const LazyTensor* t = initializer(value)) {
    const int64_t n = t->numel();
    if (n > int64_t(kMaxConstantElements)) return std::nullopt;
    std::vector<double> out;
    for (float f : t->to_f32()) out.push_back(double(f));
    return out;
  }
  const Node* p = producer(value);
  if (!p || p->op_type() != "Constant") return std::nullopt;
  for (const auto& a : p->attribute())
    if (a.name() == "value" && a.has_t()) return message_elements(a.t());
  for (const auto& a : p->attribute()) {
    if (a.name() == "value_int") return std::vector<double>{double(a.i())};
    if (a.name() == "value_float") return std::vector<double>{double(a.f())};
    if (a.name() == "value_ints" && a.ints_size() <= int(kMaxConstantElements)) {
      std::vector<double> out;
      for (auto v : a.ints()) out.push_back(double(v));
      return out;
    }
  }
  return std::nullopt;
}

std::optional<std::vector<std::optional<int64_t>>> OnnxGraph::int_values(const std::string& value, int depth) const {
  using Values = std::vector<std::optional<int64_t>>;
  if (depth > kMaxConstantDepth) return std::nullopt;
  if (auto c = constant_elements(value)) {
    Values out;
    // Held as doubles: an end "to the end" (INT64_MAX) rounds to 2^63, which int64_t cannot hold;
    // out-of-range values saturate (converting them is undefined), NaN is unknown.
    constexpr double kTwo63 = 9223372036854775808.0;
    for (double d : *c)
      out.push_back(std::isnan(d) ? std::nullopt
                    : d >= kTwo63 ? std::optional<int64_t>(INT64_MAX)
                    : d < -kTwo63 ? std::optional<int64_t>(INT64_MIN)
                                  : std::optional<int64_t>(int64_t(d)));
    return out;
  }
  const Node* p = producer(value);
  if (!p) return std::nullopt;
  const std::string& op = p->op_type();
  if (op == "Cast" || op == "Identity") return p->input_size() ? int_values(p->input(0), depth + 1) : std::nullopt;
  if (op == "Unsqueeze" && p->input_size() >= 1) {
    // A scalar made a one-element list: its value if constant, else one unknown element.
    if (auto inner = int_values(p->input(0), depth + 1)) return inner;
    return Values{std::nullopt};
  }
  if (op == "Concat") {
    Values out;
    for (const auto& in : p->input()) {
      auto part = int_values(in, depth + 1);
      if (!part) return std::nullopt;
      out.insert(out.end(), part->begin(), part->end());
    }
    return out;
  }
  return std::nullopt;
}

std::optional<OnnxGraph::FloatTensor> OnnxGraph::float_tensor(const std::string& value, size_t max_elements) const {
  if (const LazyTensor* t = initializer(value)) {
    if (t->dtype != DType::F32 || uint64_t(t->numel()) > max_elements) return std::nullopt;
    return FloatTensor{t->shape, t->to_f32()};
  }
  const Node* p = producer(value);
  if (!p || p->op_type() != "Constant") return std::nullopt;
  for (const auto& a : p->attribute()) {
    if (a.name() != "value" || !a.has_t()) continue;
    const onnx::TensorProto& t = a.t();
    if (t.data_type() != onnx::TensorProto::FLOAT || t.data_location() == onnx::TensorProto::EXTERNAL) return std::nullopt;
    FloatTensor out;
    uint64_t numel = 1;
    for (int64_t d : t.dims()) {
      if (d < 0 || (d > 0 && numel > max_elements / uint64_t(d))) return std::nullopt;
      numel *= uint64_t(d);
      out.shape.push_back(d);
    }
    if (t.has_raw_data()) {
      if (t.raw_data().size() != numel * sizeof(float)) return std::nullopt;
      out.values.resize(numel);
      if (numel) std::memcpy(out.values.data(), t.raw_data().data(), numel * sizeof(float));
    } else {
      if (uint64_t(t.float_data_size()) != numel) return std::nullopt;
      out.values.assign(t.float_data().begin(), t.float_data().end());
    }
    return out;
  }
  return std::nullopt;
}

std::optional<double> OnnxGraph::scalar_value(const std::string& value) const {
  auto c = constant_elements(value);
  if (!c || c->size() != 1) return std::nullopt;
  return (*c)[0];
}

}  // namespace sf
