#pragma once
// An index over one ONNX graph for structure recovery: who produces and who consumes each value,
// the nodes in a topological order (a cycle is refused), bounded searches along the data flow, and
// the values of small integer constants (Reshape targets).
#include <functional>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "onnx/onnx.pb.h"

#include "converters/source_model.h"

namespace sf {

class OnnxGraph {
 public:
  using Node = onnx::NodeProto;
  // `initializers` holds every initializer (of this graph and its subgraphs) by name; it must outlive
  // the index. Throws Error naming `path` on a cycle, a value produced twice or a node reading a
  // value nothing defines.
  OnnxGraph(const onnx::GraphProto& g, const std::map<std::string, LazyTensor>& initializers, const std::string& path);

  const std::vector<const Node*>& order() const { return order_; }
  const Node* producer(const std::string& value) const;
  const std::vector<const Node*>& consumers(const std::string& value) const;
  bool is_initializer(const std::string& value) const { return initializers_.count(value) > 0; }
  // The initializer a value is, directly or through Identity nodes (torch.onnx.export keeps one copy
  // of initializers with equal values, such as norm weights still all ones, and makes the others
  // Identity nodes of it); null for anything else.
  const LazyTensor* initializer(const std::string& value) const;
  bool is_graph_input(const std::string& value) const { return inputs_.count(value) > 0; }
  size_t position(const Node* n) const { return position_.at(n); }

  struct Hit {
    const Node* node = nullptr;
    int input = -1;  // which input of node the search arrived through
  };
  // Breadth-first along consumers from `value`; the first node (nearest first, then in graph order)
  // for which `stop(node, input)` holds. Nodes for which `stop` fails are passed through; at most
  // `limit` nodes are visited.
  Hit find_forward(const std::string& value, const std::function<bool(const Node&, int)>& stop,
                   size_t limit = 4096) const;
  // Every node reachable backwards from `value` through producers (at most `limit`), nearest first;
  // `stop` nodes are included but not passed through.
  std::vector<const Node*> ancestors(const std::string& value, const std::function<bool(const Node&)>& stop,
                                     size_t limit = 4096) const;

  // The integer elements of a small constant (a Constant node, an INT64/INT32 initializer, or a
  // Concat / Unsqueeze / Cast of them), unknown elements as nullopt; nullopt when even the length is
  // unknown. Used for Reshape targets.
  std::optional<std::vector<std::optional<int64_t>>> int_values(const std::string& value, int depth = 0) const;
  // A float tensor of at most `max_elements` held by an F32 initializer or a Constant node (exports
  // keep non-persistent buffers, such as RoPE tables, as Constant nodes).
  struct FloatTensor {
    std::vector<int64_t> shape;
    std::vector<float> values;
  };
  std::optional<FloatTensor> float_tensor(const std::string& value, size_t max_elements) const;
  // A float scalar constant (a Constant node or a one-element initializer).
  std::optional<double> scalar_value(const std::string& value) const;

 private:
  std::string path_;
  // Nodes the searches may still visit, over all of them: structure recovery makes a few bounded
  // searches per block, and a hostile graph must not multiply them into hours.
  mutable uint64_t budget_ = 0;
  void spend() const;
  const std::map<std::string, LazyTensor>& initializers_;
  std::set<std::string> inputs_;
  std::map<std::string, const Node*> producer_;
  std::map<std::string, std::vector<const Node*>> consumers_;
  std::map<const Node*, size_t> position_;
  std::vector<const Node*> order_;
  // The elements of a small constant (a Constant node's value or an initializer) as doubles.
  std::optional<std::vector<double>> constant_elements(const std::string& value) const;
};

}  // namespace sf
