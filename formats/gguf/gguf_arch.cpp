#include "formats/gguf/gguf_arch.h"

#include <cstring>

#include "core/error.h"

namespace sf::gguf {

namespace {

// Canonical name (after "blocks.N." for block tensors) -> llama.cpp's (after "blk.N.").
struct NameRow {
  const char* canonical;
  const char* gguf;
};
constexpr NameRow kTopNames[] = {
    {"embed.weight", "token_embd.weight"},     {"embed.pos.weight", "position_embd.weight"},
    {"head.norm.weight", "output_norm.weight"}, {"head.norm.bias", "output_norm.bias"},
    {"head.output.weight", "output.weight"},
};
constexpr NameRow kBlockNames[] = {
    {"attn_norm.weight", "attn_norm.weight"}, {"attn_norm.bias", "attn_norm.bias"},
    {"attn.q.weight", "attn_q.weight"},       {"attn.q.bias", "attn_q.bias"},
    {"attn.k.weight", "attn_k.weight"},       {"attn.k.bias", "attn_k.bias"},
    {"attn.v.weight", "attn_v.weight"},       {"attn.v.bias", "attn_v.bias"},
    {"attn.o.weight", "attn_output.weight"},  {"attn.o.bias", "attn_output.bias"},
    {"ffn_norm.weight", "ffn_norm.weight"},   {"ffn_norm.bias", "ffn_norm.bias"},
    {"ffn.gate.weight", "ffn_gate.weight"},   {"ffn.gate.bias", "ffn_gate.bias"},
    {"ffn.up.weight", "ffn_up.weight"},       {"ffn.up.bias", "ffn_up.bias"},
    {"ffn.down.weight", "ffn_down.weight"},   {"ffn.down.bias", "ffn_down.bias"},
};

std::string n(int64_t v) { return std::to_string(v); }

// llama.cpp's q/k/v and output shapes for these architectures assume n_heads x head_dim = d_model
// (attn_output is {n_embd, n_embd}; the fused views slice at n_embd).
std::string needs_square_attention(const ModelDesc& m) {
  if (m.n_heads * m.head_dim != m.d_model)
    return "n_heads x head_dim (" + n(m.n_heads * m.head_dim) + ") differs from d_model (" + n(m.d_model) +
           "), which llama.cpp's graph for it assumes equal";
  return "";
}

std::string llama_cannot_run(const ModelDesc& m) {
  if (m.rope_dims != m.head_dim)
    return "RoPE on " + n(m.rope_dims) + " of " + n(m.head_dim) + " head dims; llama.cpp's llama graph rotates whole heads";
  return "";  // llama.cpp reads every bias of the llama graph when present
}

std::string gpt2_cannot_run(const ModelDesc& m) {
  if (m.n_kv_heads != m.n_heads) return "grouped-query attention in a GPT-2 model";
  return needs_square_attention(m);
}

std::string internlm2_cannot_run(const ModelDesc& m) {
  if (m.biases.qkv || m.biases.o || m.biases.ffn)
    return "linear biases, which llama.cpp's internlm2 graph does not read (it would drop them)";
  if (m.rope_dims != m.head_dim) return "partial RoPE, which llama.cpp's internlm2 graph does not do";
  return needs_square_attention(m);
}

std::string chatglm_cannot_run(const ModelDesc& m) {
  if (m.biases.o || m.biases.ffn) return "attention-output or FFN biases, which llama.cpp's chatglm graph does not read";
  if (m.rope_dims * 2 != m.head_dim)
    return "RoPE on " + n(m.rope_dims) + " of " + n(m.head_dim) + " head dims; llama.cpp's chatglm rotates half the head";
  return needs_square_attention(m);
}

const std::vector<ArchEntry>& table() {
  static const std::vector<ArchEntry> t = {
      {"llama", "llama", {}, false, llama_cannot_run},
      {"gpt2", "gpt2",
       {{"attn_qkv.weight", {"attn.q.weight", "attn.k.weight", "attn.v.weight"}},
        {"attn_qkv.bias", {"attn.q.bias", "attn.k.bias", "attn.v.bias"}}},
       true, gpt2_cannot_run},
      {"internlm2", "internlm2", {}, false, internlm2_cannot_run},
      // ffn_up holds gate then up: llama.cpp's SwiGLU applies silu to the first half.
      {"chatglm2", "chatglm",
       {{"attn_qkv.weight", {"attn.q.weight", "attn.k.weight", "attn.v.weight"}},
        {"attn_qkv.bias", {"attn.q.bias", "attn.k.bias", "attn.v.bias"}},
        {"ffn_up.weight", {"ffn.gate.weight", "ffn.up.weight"}}},
       false, chatglm_cannot_run},
  };
  return t;
}

// Families with no llama.cpp architecture, and why.
struct Refusal {
  const char* family;
  const char* why;
};
constexpr Refusal kRefused[] = {
    {"chatglm", "ChatGLM-6B (first generation: 2-D RoPE, the prefix-bidirectional mask, scaled residuals) has no "
                "llama.cpp architecture (llama.cpp's chatglm is ChatGLM2/3 and GLM-4)"},
};

}  // namespace

const ArchEntry& arch_for_family(const std::string& family) {
  for (const auto& e : table())
    if (family == e.family) return e;
  for (const auto& r : kRefused)
    if (family == r.family) fail(std::string("--format gguf: ") + r.why, ErrorKind::Unsupported);
  fail("--format gguf: the " + family + " family has no llama.cpp architecture shardforge writes", ErrorKind::Unsupported);
}

const ArchEntry* arch_for_name(const std::string& arch) {
  for (const auto& e : table())
    if (arch == e.arch) return &e;
  return nullptr;
}

std::string gguf_tensor_name(const std::string& canonical) {
  for (const auto& r : kTopNames)
    if (canonical == r.canonical) return r.gguf;
  const std::string prefix = "blocks.";
  if (canonical.compare(0, prefix.size(), prefix) == 0) {
    const size_t dot = canonical.find('.', prefix.size());
    if (dot != std::string::npos) {
      const std::string layer = canonical.substr(prefix.size(), dot - prefix.size()), rest = canonical.substr(dot + 1);
      for (const auto& r : kBlockNames)
        if (rest == r.canonical) return "blk." + layer + "." + r.gguf;
    }
  }
  fail("--format gguf: canonical tensor " + canonical + " has no GGUF name");
}

std::optional<FusedPart> fused_part(const ArchEntry& arch, const std::string& suffix) {
  for (const auto& f : arch.fused)
    for (size_t i = 0; i < f.parts.size(); ++i)
      if (suffix == f.parts[i]) return FusedPart{&f, i};
  return std::nullopt;
}

}  // namespace sf::gguf
