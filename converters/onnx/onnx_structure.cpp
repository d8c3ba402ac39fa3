#include "converters/onnx/onnx_structure.h"

#include "converters/onnx/onnx_recovery.h"

namespace sf {

namespace onnx_recovery {

void Recovery::find_embedding() {
  // The token embedding is a Gather of a 2-D initializer by a graph input (the token ids).
  std::vector<const Node*> found;
  for (const Node* n : g_.order()) {
    if (n->op_type() != "Gather" || n->input_size() != 2) continue;
    const LazyTensor* t = g_.initializer(n->input(0));
    if (t && t->shape.size() == 2 && g_.is_graph_input(n->input(1))) found.push_back(n);
  }
  if (found.empty()) refuse("no token embedding (a Gather of a [vocab, d_model] initializer by the input ids)");
  if (found.size() == 2) {
    // Positions given as an input (position_ids): two Gathers whose outputs are added. The token
    // table is the one with as many rows as the output projection (the last linear) has outputs.
    int64_t logits = 0;
    for (const Node* n : g_.order())
      if (const auto l = as_linear(*n, g_)) logits = l->out;
    bool summed = false;
    for (const Node* c : g_.consumers(found[0]->output(0)))
      for (const auto& in : c->input()) summed |= c->op_type() == "Add" && in == found[1]->output(0);
    std::vector<const Node*> tokens;
    for (const Node* n : found)
      if (g_.initializer(n->input(0))->shape[0] == logits) tokens.push_back(n);
    if (summed && tokens.size() == 1) found = tokens;
  }
  if (found.size() > 1) refuse("several Gathers of initializers by graph inputs; cannot tell the token embedding");
  token_gather_ = found[0];
  embed_ = found[0]->input(0);
  vocab_ = g_.initializer(embed_)->shape[0];
  d_model_ = g_.initializer(embed_)->shape[1];
}

Linear Recovery::next_linear(const std::string& from, const std::string& what) const {
  const auto hit = g_.find_forward(from, [&](const Node& n, int input) { return input == 0 && as_linear(n, g_); });
  if (!hit.node) refuse("no " + what);
  return *as_linear(*hit.node, g_);
}

// Heads and head_dim from the Reshape that splits a projection's output: [batch, seq, heads, head_dim].
std::pair<std::optional<int64_t>, std::optional<int64_t>> Recovery::heads_of(const Linear& l) const {
  return heads_after(l.node->output(0), l.out);
}

// The same from a value `width` wide (GPT-2's q, a third of the fused QKV projection's output).
std::pair<std::optional<int64_t>, std::optional<int64_t>> Recovery::heads_after(const std::string& value, int64_t width) const {
  const auto hit = g_.find_forward(value, [](const Node& n, int input) { return n.op_type() == "Reshape" && input == 0; }, 64);
  if (!hit.node || hit.node->input_size() < 2) return {};
  const auto shape = g_.int_values(hit.node->input(1));
  if (!shape || shape->size() < 2) return {};
  std::optional<int64_t> heads = (*shape)[shape->size() - 2], dim = (*shape)[shape->size() - 1];
  if (heads && *heads <= 0) heads.reset();
  if (dim && *dim <= 0) dim.reset();
  if (!heads && dim && width % *dim == 0) heads = width / *dim;
  if (heads && !dim && width % *heads == 0) dim = width / *heads;
  return {heads, dim};
}

// RMSNorm's epsilon: x * 1/sqrt(mean(x^2) + eps). A mean subtracted first is LayerNorm.
double Recovery::norm_eps(const Node& norm) const {
  const std::string data = g_.initializer(norm.input(1)) ? norm.input(0) : norm.input(1);
  for (const Node* n : g_.ancestors(data, [](const Node&) { return false; }, 24)) {
    if (n->op_type() == "Sub") {
      for (const auto& in : n->input())
        if (const Node* p = g_.producer(in); p && p->op_type() == "ReduceMean")
          refuse("the norms subtract the mean (LayerNorm); LLaMA uses RMSNorm");
    }
    if (n->op_type() != "Add" || n->input_size() != 2) continue;
    for (int i = 0; i < 2; ++i) {
      const Node* p = g_.producer(n->input(i));
      if (p && p->op_type() == "ReduceMean")
        if (auto eps = g_.scalar_value(n->input(1 - i))) return f32_decimal(*eps);
    }
  }
  refuse("no RMSNorm epsilon (an Add of a constant to the mean of squares) before " + node_name(norm));
}

Recovery::Rope Recovery::rope(const Node& projection, const std::string& q, int64_t rotary_dims, bool doubled_tables) const {
  const auto scores = g_.find_forward(q, [&](const Node& n, int) { return is_dynamic_matmul(n, g_); });
  if (!scores.node) refuse("no attention scores MatMul after block 0's q projection, to find its rotary embedding on");
  // Nodes between q's projection and the scores: rotate-half RoPE negates one half (Neg);
  // interleaved pairs do not.
  std::set<const Node*> after_q;
  g_.find_forward(q, [&](const Node& n, int) { after_q.insert(&n); return &n == scores.node; }, 512);
  Rope r;
  bool rotary = false;
  const int64_t half = rotary_dims / 2;
  std::optional<std::vector<float>> cos_table, sin_table;
  for (const Node* n : g_.ancestors(scores.node->input(0), [&](const Node& n) { return &n == &projection; }, 512)) {
    if (after_q.count(n) && n->op_type() == "Neg") r.rotate_half = true;
    for (const auto& in : n->input()) {
      if (projection.input_size() > 1 && in == projection.input(1)) continue;
      const auto t = g_.float_tensor(in, kMaxRopeTableElements);
      if (!t) continue;
      // One table of (cos, sin) pairs (ChatGLM's rope cache): row 0 is (1, 0) for every frequency.
      if (t->shape.size() == 3 && t->shape[1] == half && t->shape[2] == 2 && t->shape[0] >= 2) {
        bool first_row = true;
        for (int64_t j = 0; j < half; ++j) first_row &= t->values[2 * j] == 1.0f && t->values[2 * j + 1] == 0.0f;
        if (!first_row) continue;
        cos_table.emplace(), sin_table.emplace();
        for (size_t i = 0; i + 1 < t->values.size(); i += 2)
          cos_table->push_back(t->values[i]), sin_table->push_back(t->values[i + 1]);
        r.max_positions = t->shape[0], rotary = true;
        continue;
      }
      // Tables [positions, rotary_dims/2] (or [positions, rotary_dims] with both halves alike).
      if (t->shape.size() == 2 && (t->shape[1] == half || (doubled_tables && t->shape[1] == rotary_dims)) && t->shape[0] >= 2) {
        const int64_t w = t->shape[1];
        bool ones = true, zeros = true;
        for (int64_t j = 0; j < w; ++j) ones &= t->values[j] == 1.0f, zeros &= t->values[j] == 0.0f;
        // Row 0 is position 0: cos 1, sin 0 for every frequency.
        if (ones) cos_table = t->values, r.max_positions = t->shape[0], rotary = true;
        else if (zeros) sin_table = t->values, rotary = true;
        continue;
      }
      if (t->shape.size() == 1 && t->shape[0] == half) {
        const auto& f = t->values;
        if (half >= 2 && f[0] == 1.0f && f[1] > 0 && f[1] < 1) r.theta = std::pow(double(f[1]), -double(rotary_dims) / 2), rotary = true;
      }
    }
  }
  if (cos_table && sin_table && cos_table->size() == sin_table->size() && cos_table->size() >= 2 * 2 &&
      cos_table->size() / r.max_positions >= 2) {
    // Column 1 holds frequency theta^(-2/rotary_dims) at position 1 (column 1 of either layout).
    const int64_t w = int64_t(cos_table->size()) / r.max_positions;
    const double f = std::atan2(double((*sin_table)[w + 1]), double((*cos_table)[w + 1]));
    if (f > 0) r.theta = std::pow(f, -double(rotary_dims) / 2);
  }
  if (!rotary)
    refuse("no rotary embedding over " + std::to_string(rotary_dims) + " dims of each head on q's path to the attention scores in block 0");
  if (r.theta) {
    // Tables are stored in f32: the theta they give is exact to about 1e-6; exporters' are integers.
    const double rounded = std::round(*r.theta);
    if (std::abs(*r.theta - rounded) <= 1e-4 * rounded) r.theta = rounded;
  }
  return r;
}

std::optional<int64_t> Recovery::rotary_table_dims(const Node& projection) const {
  const auto scores = g_.find_forward(projection.output(0), [&](const Node& n, int) { return is_dynamic_matmul(n, g_); });
  if (!scores.node) return std::nullopt;
  for (const Node* n : g_.ancestors(scores.node->input(0), [&](const Node& n) { return &n == &projection; }, 512))
    for (const auto& in : n->input()) {
      if (projection.input_size() > 1 && in == projection.input(1)) continue;
      const auto t = g_.float_tensor(in, kMaxRopeTableElements);
      if (!t || t->shape.size() != 2 || t->shape[0] < 2 || t->shape[1] < 1) continue;
      bool ones = true;
      for (int64_t j = 0; j < t->shape[1]; ++j) ones &= t->values[size_t(j)] == 1.0f;
      if (ones) return 2 * t->shape[1];
    }
  return std::nullopt;
}

bool Recovery::head_is_embedding() const {
  // torch.onnx.export gives a tied output projection its own transposed copy: the same bytes.
  // Compared a block of vocabulary rows at a time (a real vocabulary's f32 copies are gigabytes);
  // the first block differs for an untied head, so that costs one block.
  const LazyTensor& e = *g_.initializer(embed_);
  const LazyTensor& h = *g_.initializer(head_.weight);
  if (e.dtype != h.dtype) return false;
  const uint64_t es = dtype_size(e.dtype), d = uint64_t(d_model_), vocab = uint64_t(vocab_);
  const uint64_t block = std::max<uint64_t>(1, (uint64_t(1) << 22) / (d * es));
  std::vector<uint8_t> rows, col;
  for (uint64_t v0 = 0; v0 < vocab; v0 += block) {
    const uint64_t n = std::min(block, vocab - v0);
    rows.resize(n * d * es);
    e.storage->read(v0 * d * es, rows.data(), rows.size());
    if (!head_.in_out) {  // [vocab, d] as the embedding
      col.resize(rows.size());
      h.storage->read(v0 * d * es, col.data(), col.size());
      if (col != rows) return false;
      continue;
    }
    col.resize(n * es);  // [d, vocab]: row j holds column j of the embedding
    for (uint64_t j = 0; j < d; ++j) {
      h.storage->read((j * vocab + v0) * es, col.data(), col.size());
      for (uint64_t v = 0; v < n; ++v)
        if (std::memcmp(col.data() + v * es, rows.data() + (v * d + j) * es, es) != 0) return false;
    }
  }
  return true;
}

// ---- Family by signature ----

// RMSNorm or LayerNorm: a LayerNormalization op, or a mean subtracted (Sub of a ReduceMean), makes
// the graph's norms LayerNorm.
NormSignature Recovery::norm_signature() const {
  for (const Node* n : g_.order()) {
    if (n->op_type() == "LayerNormalization") return NormSignature::Layer;
    if (n->op_type() != "Sub") continue;
    for (const auto& in : n->input())
      if (const Node* p = g_.producer(in); p && p->op_type() == "ReduceMean") return NormSignature::Layer;
  }
  return NormSignature::Rms;
}

// A learned position embedding: the token embedding's output added to a Gather of another
// [positions, d_model] initializer (by an arange of the sequence length, or by a position input).
PositionSignature Recovery::find_position_embedding() {
  // The token rows as gathered, or flattened to [tokens, d_model] first (shardforge's writer).
  std::vector<std::string> rows = {token_gather_->output(0)};
  for (const Node* r : g_.consumers(rows[0]))
    if (r->op_type() == "Reshape" && r->input(0) == rows[0]) rows.push_back(r->output(0));
  for (const std::string& tokens : rows) {
    for (const Node* add : g_.consumers(tokens)) {
      if (add->op_type() != "Add" || add->input_size() != 2) continue;
      const std::string& other = add->input(0) == tokens ? add->input(1) : add->input(0);
      const Node* p = g_.producer(other);
      if (!p || p->op_type() != "Gather" || p->input_size() != 2) continue;
      const LazyTensor* t = g_.initializer(p->input(0));
      if (t && t != g_.initializer(embed_) && t->shape.size() == 2 && t->shape[1] == d_model_ && t->shape[0] >= 1) {
        pos_embed_ = p->input(0);
        return PositionSignature::Learned;
      }
    }
  }
  return PositionSignature::None;
}

// The first linear after the token embedding: whether the value it reads feeds other linears too.
ProjectionSignature Recovery::projection_signature() const {
  const auto is_linear = [&](const Node& n) { return as_linear(n, g_).has_value() || as_biased_linear(n, g_).has_value(); };
  const auto hit = g_.find_forward(token_gather_->output(0), [&](const Node& n, int input) { return input == 0 && is_linear(n); });
  if (!hit.node) refuse("no linear layer (a MatMul or Gemm by a 2-D initializer) after the token embedding");
  size_t fed = 0;
  for (const Node* c : g_.consumers(hit.node->input(0)))
    if (c->input_size() > 0 && c->input(0) == hit.node->input(0) && is_linear(*c)) ++fed;
  return fed == 1 ? ProjectionSignature::Fused : ProjectionSignature::Separate;
}

const Recovery::Family Recovery::kFamilies[] = {
    {"LLaMA", "a LLaMA-shaped decoder", NormSignature::Rms, PositionSignature::None, ProjectionSignature::Separate,
     &Recovery::run_llama},
    {"GPT-2", "a GPT-2-shaped decoder", NormSignature::Layer, PositionSignature::Learned, ProjectionSignature::Fused,
     &Recovery::run_gpt2},
    {"GPT-2", "a GPT-2-shaped decoder", NormSignature::Layer, PositionSignature::Learned, ProjectionSignature::Separate,
     &Recovery::run_gpt2},
    {"ChatGLM2/3", "a ChatGLM2-shaped decoder", NormSignature::Rms, PositionSignature::None, ProjectionSignature::Fused,
     &Recovery::run_chatglm2},
};

void Recovery::run(const json& hf_config) {
  find_embedding();
  const PositionSignature positions = find_position_embedding();
  const NormSignature norm = norm_signature();
  const ProjectionSignature projections = projection_signature();
  std::string known;
  for (const Family& f : kFamilies) {
    if (f.norm == norm && f.positions == positions && f.projections == projections) {
      shape_ = f.shape;
      (this->*f.recover)(hf_config);
      return;
    }
    known += std::string(known.empty() ? "" : "; ") + f.name + ": " + describe(f.norm) + ", " + describe(f.positions) + ", " +
             describe(f.projections);
  }
  refuse(std::string("the data flow shows ") + describe(norm) + ", " + describe(positions) + " and " + describe(projections) +
         ", which no family read has (" + known + ")");
}

}  // namespace onnx_recovery

void recover_structure(SourceModel& m, const OnnxGraph& graph, const json& hf_config) {
  onnx_recovery::Recovery(m, graph).run(hf_config);
}

}  // namespace sf
