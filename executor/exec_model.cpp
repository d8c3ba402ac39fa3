#include "executor/exec_model.h"

namespace sf {

ExecModel::ExecModel(const std::string& dir) : artifact_(dir) {
  const ModelDesc& m = artifact_.desc();
  embed_ = &artifact_.tensor("embed.weight");
  head_norm_ = &artifact_.tensor("head.norm.weight");
  output_ = m.tied_embeddings ? embed_ : &artifact_.tensor("head.output.weight");
  for (int64_t i = 0; i < m.n_layers; ++i) {
    const std::string p = "blocks." + std::to_string(i) + ".";
    auto t = [&](const char* s) { return &artifact_.tensor(p + s); };
    layers_.push_back({t("attn_norm.weight"), t("attn.q.weight"), t("attn.k.weight"), t("attn.v.weight"),
                       t("attn.o.weight"), t("ffn_norm.weight"), t("ffn.gate.weight"), t("ffn.up.weight"),
                       t("ffn.down.weight")});
  }
}

}  // namespace sf
