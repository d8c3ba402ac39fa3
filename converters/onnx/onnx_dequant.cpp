#include "converters/onnx/onnx_dequant.h"

#include <memory>
#include <optional>
#include <set>

#include "converters/decoded_storage.h"
#include "converters/onnx/onnx_tensors.h"
#include "core/checked.h"
#include "core/error.h"

namespace sf {

namespace {

using Node = onnx::NodeProto;

// TensorProto.DataType numbers (INT4 / UINT4 by number: Debian's onnx.proto predates them).
constexpr int kFloat = 1, kUint8 = 2, kInt8 = 3, kFloat16 = 10, kBfloat16 = 16, kUint4 = 21, kInt4 = 22;
constexpr size_t kMaxShapeElements = 8;  // Reshape / Expand / Slice operands read here: a few integers

const char* type_name(int t) {
  switch (t) {
    case kFloat: return "FLOAT";
    case kUint8: return "UINT8";
    case kInt8: return "INT8";
    case kFloat16: return "FLOAT16";
    case kBfloat16: return "BFLOAT16";
    case kUint4: return "UINT4";
    case kInt4: return "INT4";
    default: return "another type";
  }
}

bool is_code_type(int t) { return t == kInt8 || t == kUint8 || t == kInt4 || t == kUint4; }
bool is_scale_type(int t, bool cast) { return t == kFloat || (cast && (t == kFloat16 || t == kBfloat16)); }

std::optional<int64_t> attribute(const Node& n, const char* name) {
  for (const auto& a : n.attribute())
    if (a.name() == name) return a.i();
  return std::nullopt;
}

// One weight's decoding: element (r, c) is code * scale[r, c / block] (+ min[r, c / block]).
struct Decoding {
  LazyTensor codes, scale, min;
  bool has_min = false;
  int code_type = kInt8;
  int64_t rows = 0, cols = 0, block = 0;
};

std::vector<float> decode(const Decoding& d) {
  const uint64_t n = uint64_t(d.rows) * uint64_t(d.cols), G = uint64_t((d.cols + d.block - 1) / d.block);
  const bool four = d.code_type == kInt4 || d.code_type == kUint4, sign = d.code_type == kInt4 || d.code_type == kInt8;
  d.codes.check_bounds();
  std::vector<uint8_t> codes(four ? (n + 1) / 2 : n);
  if (uint64_t(d.codes.numel()) * dtype_size(d.codes.dtype) != codes.size())
    fail(d.codes.describe() + ": holds " + std::to_string(d.codes.numel()) + " elements, not the codes of " +
         shape_string({d.rows, d.cols}));
  d.codes.storage->read(uint64_t(d.codes.offset) * dtype_size(d.codes.dtype), codes.data(), codes.size());
  const std::vector<float> scale = d.scale.to_f32();
  const std::vector<float> min = d.has_min ? d.min.to_f32() : std::vector<float>();
  if (scale.size() != uint64_t(d.rows) * G || (d.has_min && min.size() != scale.size()))
    fail(d.scale.describe() + ": holds " + std::to_string(scale.size()) + " scales, not " + std::to_string(d.rows * G));
  std::vector<float> out(n);
  for (uint64_t r = 0, e = 0; r < uint64_t(d.rows); ++r)
    for (uint64_t c = 0; c < uint64_t(d.cols); ++c, ++e) {
      int v;
      if (four) {
        const int nibble = (codes[e >> 1] >> ((e & 1) * 4)) & 15;
        v = sign ? (nibble ^ 8) - 8 : nibble;
      } else {
        v = sign ? int(int8_t(codes[e])) : int(codes[e]);
      }
      const uint64_t s = r * G + c / uint64_t(d.block);
      // As the graph computes: DequantizeLinear's f32 product, then the f32 Add of the minimum.
      const float product = float(v) * scale[s];
      out[e] = d.has_min ? product + min[s] : product;
    }
  return out;
}

class Folder {
 public:
  Folder(onnx::GraphProto& g, std::map<std::string, LazyTensor>& inits, const std::string& file)
      : g_(g), inits_(inits), file_(file) {
    for (const auto& t : g.initializer()) protos_[t.name()] = &t;
    for (const auto& in : g.input())
      if (!inits.count(in.name())) graph_inputs_.insert(in.name());
    for (int i = 0; i < g.node_size(); ++i) {
      index_[&g.node(i)] = i;
      for (const auto& o : g.node(i).output())
        if (!o.empty()) producer_.emplace(o, i);  // a value made twice is refused by OnnxGraph after
      for (const auto& in : g.node(i).input()) consumers_[in].push_back(i);
    }
    removed_.assign(size_t(g.node_size()), false);
  }

  void run() {
    for (int i = 0; i < g_.node_size(); ++i)
      if (!removed_[size_t(i)] && g_.node(i).op_type() == "DequantizeLinear") fold_dequantize(i);
    for (int i = 0; i < g_.node_size(); ++i)
      if (!removed_[size_t(i)] && g_.node(i).op_type() == "Cast") fold_cast(i);
    rewrite();
  }

 private:
  onnx::GraphProto& g_;
  std::map<std::string, LazyTensor>& inits_;
  const std::string& file_;
  std::map<std::string, const onnx::TensorProto*> protos_;
  std::set<std::string> graph_inputs_;
  std::map<std::string, int> producer_;
  std::map<const Node*, int> index_;
  std::map<std::string, std::vector<int>> consumers_;
  std::vector<bool> removed_;
  std::map<int, Node> replacement_;  // a Gather of a decoded table, in place of a removed node
  std::map<std::string, std::shared_ptr<Storage>> decoded_;  // by codes|scale|min: one decode per weight

  [[noreturn]] void refuse(const Node& n, const std::string& problem) const {
    fail(file_ + ": node '" + n.name() + "' (" + n.op_type() + "): " + problem, ErrorKind::Unsupported);
  }
  const Node* producer(const std::string& v) const {
    const auto it = producer_.find(v);
    return it == producer_.end() ? nullptr : &g_.node(it->second);
  }
  int proto_type(const std::string& init) const { return protos_.at(init)->data_type(); }
  std::vector<int64_t> proto_dims(const std::string& init) const {
    const auto& d = protos_.at(init)->dims();
    return {d.begin(), d.end()};
  }

  // An initializer as a node reads it: directly, through a Gather (axis 0) of its rows by `index`,
  // and, when `allow_cast`, through a Cast to FLOAT of either.
  struct Operand {
    std::string init, index;
    std::vector<const Node*> nodes;  // the Gather / Cast on the way
    bool cast = false;
  };
  std::optional<Operand> operand(const std::string& v, bool allow_cast) const {
    if (inits_.count(v)) return protos_.count(v) ? std::optional<Operand>(Operand{v, "", {}, false}) : std::nullopt;
    const Node* p = producer(v);
    if (!p) return std::nullopt;
    if (allow_cast && p->op_type() == "Cast" && p->input_size() == 1 && attribute(*p, "to") == kFloat) {
      auto o = operand(p->input(0), false);
      if (o) o->cast = true, o->nodes.push_back(p);
      return o;
    }
    if (p->op_type() == "Gather" && p->input_size() == 2 && attribute(*p, "axis").value_or(0) == 0 &&
        inits_.count(p->input(0)) && protos_.count(p->input(0)) && !inits_.count(p->input(1)))
      return Operand{p->input(0), p->input(1), {p}, false};
    return std::nullopt;
  }

  // The integers of a small INT64 initializer (Reshape / Expand / Slice operands as the writer makes them).
  std::optional<std::vector<int64_t>> ints(const std::string& v) const {
    const auto it = inits_.find(v);
    if (it == inits_.end() || it->second.dtype != DType::I64 || it->second.shape.size() != 1 ||
        it->second.shape[0] > int64_t(kMaxShapeElements))
      return std::nullopt;
    it->second.check_bounds();
    std::vector<int64_t> out(size_t(it->second.shape[0]));
    if (!out.empty()) it->second.storage->read(uint64_t(it->second.offset) * 8, out.data(), out.size() * 8);
    return out;
  }

  // The rows' indices as the decoded table's Gather takes them: the token ids themselves when the
  // writer flattened a graph input with Reshape(ids, [-1]) (the Reshape after the Gather flattens
  // either way), so the token embedding is found as a Gather by the input ids.
  std::string table_index(const std::string& index) const {
    const Node* p = producer(index);
    if (p && p->op_type() == "Reshape" && p->input_size() == 2 && graph_inputs_.count(p->input(0)) &&
        ints(p->input(1)) == std::vector<int64_t>{-1})
      return p->input(0);
    return index;
  }

  // Every value the chain's nodes make, but the last, is read only by the chain: removing them
  // changes nothing else.
  void check_closed(const Node& at, const std::vector<const Node*>& chain, const std::string& last) const {
    std::set<const Node*> in(chain.begin(), chain.end());
    for (const Node* n : chain)
      for (const auto& o : n->output()) {
        if (o == last) continue;
        const auto it = consumers_.find(o);
        if (it == consumers_.end()) continue;
        for (int c : it->second)
          if (!in.count(&g_.node(c))) refuse(at, "its intermediate value '" + o + "' is also read by node '" + g_.node(c).name() + "'");
      }
  }

  void replace(const std::vector<const Node*>& chain, const std::string& last, const Operand& rows_of,
               const std::string& table_init, const LazyTensor& table) {
    const int last_node = producer_.at(last);
    for (const Node* n : chain) removed_[size_t(index_.at(n))] = true;
    if (rows_of.index.empty()) {
      LazyTensor t = table;
      t.name = last;
      inits_[last] = std::move(t);
      return;
    }
    if (!inits_.count(table_init)) {
      LazyTensor t = table;
      t.name = table_init;
      inits_[table_init] = std::move(t);
    }
    Node gather;
    gather.set_op_type("Gather");
    gather.set_name(g_.node(last_node).name());
    gather.add_input(table_init);
    gather.add_input(table_index(rows_of.index));
    gather.add_output(last);
    auto* axis = gather.add_attribute();
    axis->set_name("axis");
    axis->set_type(onnx::AttributeProto::INT);
    axis->set_i(0);
    replacement_[last_node] = std::move(gather);
  }

  // The writer's asymmetric minimum: Slice?(Reshape(Expand(Unsqueeze(Cast(min), [2]), [rows|1, G, B]),
  // [-1, G*B]), [0], [cols], [1]). nullopt when `v` is not made that way at all; refused when it is
  // but a dimension disagrees with the codes'.
  struct Minimum {
    Operand min;
    std::vector<const Node*> nodes;
  };
  std::optional<Minimum> minimum(const Node& at, const std::string& v, int64_t rows, int64_t cols, int64_t G,
                                 int64_t B) const {
    Minimum m;
    const Node* p = producer(v);
    const auto is = [](const Node* n, const char* op, int inputs) { return n && n->op_type() == op && n->input_size() == inputs; };
    const auto bad = [&](const std::string& what) -> std::nullopt_t {
      refuse(at, "the minimum added to its values is not [" + std::to_string(rows) + ", " + std::to_string(G) +
                     "] repeated over blocks of " + std::to_string(B) + " (" + what + ")");
    };
    if (is(p, "Slice", 4)) {
      if (ints(p->input(1)) != std::vector<int64_t>{0} || ints(p->input(2)) != std::vector<int64_t>{cols} ||
          (ints(p->input(3)) != std::vector<int64_t>{1} && ints(p->input(3)) != std::vector<int64_t>{-1}))
        bad("its Slice does not cut the rows to " + std::to_string(cols));
      m.nodes.push_back(p);
      p = producer(p->input(0));
    } else if (!is(p, "Reshape", 2)) {
      return std::nullopt;
    }
    if (!is(p, "Reshape", 2)) bad("no Reshape");
    if (G * B != cols && m.nodes.empty()) bad("a short last block is not cut off");
    if (ints(p->input(1)) != std::vector<int64_t>{-1, G * B}) bad("its Reshape is not to [-1, " + std::to_string(G * B) + "]");
    m.nodes.push_back(p);
    p = producer(p->input(0));
    if (!is(p, "Expand", 2)) bad("no Expand");
    const auto e = ints(p->input(1));
    if (!e || e->size() != 3 || ((*e)[0] != rows && (*e)[0] != 1) || (*e)[1] != G || (*e)[2] != B)
      bad("its Expand is not to [" + std::to_string(rows) + ", " + std::to_string(G) + ", " + std::to_string(B) + "]");
    m.nodes.push_back(p);
    p = producer(p->input(0));
    if (!is(p, "Unsqueeze", 2) || ints(p->input(1)) != std::vector<int64_t>{2}) bad("no Unsqueeze on axis 2");
    m.nodes.push_back(p);
    const auto o = operand(p->input(0), true);
    if (!o || !o->index.empty()) bad("not an initializer");
    if (!is_scale_type(proto_type(o->init), o->cast)) bad(o->init + " is " + type_name(proto_type(o->init)));
    if (proto_dims(o->init) != std::vector<int64_t>{rows, G}) bad(o->init + " is " + shape_string(proto_dims(o->init)));
    m.min = *o;
    for (const Node* n : o->nodes) m.nodes.push_back(n);
    return m;
  }

  void fold_dequantize(int i) {
    const Node& d = g_.node(i);
    if (d.input_size() < 2 || d.output_size() != 1 || d.output(0).empty()) return;
    const auto q = operand(d.input(0), false);
    if (!q) return;  // not a weight's codes (activations quantized at run time are not read here)
    const int qt = proto_type(q->init);
    if (!is_code_type(qt)) refuse(d, "codes " + q->init + " are " + type_name(qt) + ", not INT8, UINT8, INT4 or UINT4");
    const std::vector<int64_t> qd = proto_dims(q->init);
    if (qd.size() != 2 || qd[0] < 1 || qd[1] < 1) refuse(d, "codes " + q->init + " " + shape_string(qd) + " are not a [rows, cols] weight");
    const int64_t rows = qd[0], cols = qd[1];
    const auto s = operand(d.input(1), true);
    if (!s || s->index != q->index)
      refuse(d, "its scale is not an initializer" + std::string(q->index.empty() ? "" : " gathered by the codes' indices"));
    if (!is_scale_type(proto_type(s->init), s->cast))
      refuse(d, "scale " + s->init + " is " + type_name(proto_type(s->init)) + (s->cast ? "" : " without a Cast to FLOAT"));
    const std::vector<int64_t> sd = proto_dims(s->init);
    int64_t axis = attribute(d, "axis").value_or(1);
    if (axis < 0) axis += 2;
    const auto block_attr = attribute(d, "block_size");
    int64_t block = block_attr.value_or(0), G = 1;
    const std::string codes = "codes " + q->init + " " + shape_string(qd);
    if (block_attr && block <= 0) refuse(d, "block_size " + std::to_string(block) + " is not positive");
    if (!block_attr) {
      if (axis != 0) refuse(d, "scales along axis " + std::to_string(axis) + " without block_size are not one per row of the " + codes);
      if (sd != std::vector<int64_t>{rows}) refuse(d, "scale " + s->init + " " + shape_string(sd) + " is not one per row of the " + codes);
      block = cols;
    } else {
      if (axis != 1) refuse(d, "block_size along axis " + std::to_string(axis) + ": blocks must run along the rows (axis 1)");
      if (block > cols) refuse(d, "block_size " + std::to_string(block) + " is larger than a row of the " + codes);
      G = (cols + block - 1) / block;
      if (sd != std::vector<int64_t>{rows, G})
        refuse(d, "scale " + s->init + " " + shape_string(sd) + " is not [" + std::to_string(rows) + ", " + std::to_string(G) +
                      "] for the " + codes + " in blocks of " + std::to_string(block));
    }
    std::vector<const Node*> chain = {&d};
    for (const Node* n : q->nodes) chain.push_back(n);
    for (const Node* n : s->nodes) chain.push_back(n);
    if (d.input_size() >= 3 && !d.input(2).empty()) check_zero_point(d, d.input(2), qt, sd, q->index, chain);
    std::string last = d.output(0);
    std::optional<Minimum> m;
    const auto readers = consumers_.find(last);
    if (block_attr && q->index.empty() && readers != consumers_.end() && readers->second.size() == 1) {
      const Node& add = g_.node(readers->second[0]);
      if (add.op_type() == "Add" && add.input_size() == 2 && add.output_size() == 1 && !add.output(0).empty()) {
        m = minimum(d, add.input(add.input(0) == last ? 1 : 0), rows, cols, G, block);
        if (m) {
          chain.push_back(&add);
          for (const Node* n : m->nodes) chain.push_back(n);
          last = add.output(0);
        }
      }
    }
    check_closed(d, chain, last);
    const std::string key = q->init + "|" + s->init + "|" + (m ? m->min.init : "");
    auto& storage = decoded_[key];
    if (!storage) {
      Decoding dec;
      dec.codes = inits_.at(q->init);
      dec.scale = inits_.at(s->init);
      if (m) dec.has_min = true, dec.min = inits_.at(m->min.init);
      dec.code_type = qt;
      dec.rows = rows, dec.cols = cols, dec.block = block;
      checked_mul(checked_mul(uint64_t(rows), uint64_t(cols), file_), uint64_t(sizeof(float)), file_ + ": " + q->init);
      storage = std::make_shared<DecodedStorage>(
          uint64_t(rows) * uint64_t(cols), [dec] { return decode(dec); },
          [dec] { dec.codes.release(), dec.scale.release(), dec.min.release(); },
          file_ + ": " + q->init + " (decoded by node '" + d.name() + "')");
    }
    replace(chain, last, *q, q->init + "#f32", decoded_tensor(last, {rows, cols}, storage));
  }

  void check_zero_point(const Node& d, const std::string& v, int qt, const std::vector<int64_t>& scale_dims,
                        const std::string& index, std::vector<const Node*>& chain) const {
    const auto z = operand(v, false);
    if (!z || z->index != index) refuse(d, "its zero point is not an initializer");
    if (proto_type(z->init) != qt || proto_dims(z->init) != scale_dims)
      refuse(d, "zero point " + z->init + " is not " + type_name(qt) + " " + shape_string(scale_dims));
    const LazyTensor& t = inits_.at(z->init);
    t.check_bounds();
    std::vector<uint8_t> bytes(size_t(t.numel()) * dtype_size(t.dtype));
    if (!bytes.empty()) t.storage->read(uint64_t(t.offset) * dtype_size(t.dtype), bytes.data(), bytes.size());
    for (uint8_t b : bytes)
      if (b != 0) refuse(d, "zero point " + z->init + " is not all zeros (only symmetric codes, or a separate minimum, are read)");
    for (const Node* n : z->nodes) chain.push_back(n);
  }

  // A 16-bit weight cast to f32 is that weight (the pipeline converts it as it reads it).
  void fold_cast(int i) {
    const Node& c = g_.node(i);
    if (c.input_size() != 1 || c.output_size() != 1 || c.output(0).empty() || attribute(c, "to") != kFloat) return;
    const auto w = operand(c.input(0), false);
    if (!w) return;
    const int t = proto_type(w->init);
    if (t != kFloat16 && t != kBfloat16) return;
    std::vector<const Node*> chain = {&c};
    for (const Node* n : w->nodes) chain.push_back(n);
    check_closed(c, chain, c.output(0));
    replace(chain, c.output(0), *w, w->init, inits_.at(w->init));
  }

  void rewrite() {
    google::protobuf::RepeatedPtrField<Node> kept;
    for (int i = 0; i < g_.node_size(); ++i) {
      if (const auto it = replacement_.find(i); it != replacement_.end()) *kept.Add() = std::move(it->second);
      else if (!removed_[size_t(i)]) *kept.Add() = std::move(*g_.mutable_node(i));
    }
    g_.mutable_node()->Swap(&kept);
  }
};

}  // namespace

void fold_dequantized_weights(onnx::GraphProto& g, std::map<std::string, LazyTensor>& initializers, const std::string& file) {
  Folder(g, initializers, file).run();
}

}  // namespace sf
