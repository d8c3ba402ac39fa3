"""ChatGLM configurations beyond the released ones that the original code defines and the chatglm /
chatglm2 maps accept, each against the independent references of tests/fixtures (chatglm_ref.py,
chatglm2_ref.py) with the original's modules swapped in where the switch changes them:
  * ChatGLM2/3 add_bias_linear (bias on dense and both MLP projections), rmsnorm false
    (torch.nn.LayerNorm, with bias), apply_residual_connection_post_layernorm (the residual is the
    normalized input), original_rope false (never read by the original), the class name
    ChatGLMForConditionalGeneration;
  * ChatGLM-6B without lm_head.weight (the head is the embedding), and prompts framed otherwise
    than [gMASK] <sop>: [MASK] instead of [gMASK], no <sop>, neither mask token."""
import json
import os
import shutil
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from sftest import ROOT, TempDirTest, fixture, read_json, sf, sf_json

sys.path.insert(0, os.path.join(ROOT, "tests", "fixtures"))
import chatglm2_ref  # noqa: E402
import chatglm_ref  # noqa: E402
import make_fixtures  # noqa: E402


class PostNormResidual(chatglm2_ref.ChatGLM2):
    """GLMBlock with apply_residual_connection_post_layernorm: each residual is the normalized
    sublayer input instead of the block's running state."""

    def forward(self, ids):
        t = self.transformer
        out = []
        for seq_ids in ids:
            h = t.embedding.word_embeddings(seq_ids)
            for L in t.encoder.layers:
                x = L.input_layernorm(h)
                h = x + self.attention(L.self_attention, x)
                x = L.post_attention_layernorm(h)
                gate, up = L.mlp.dense_h_to_4h(x).chunk(2, dim=-1)
                h = x + L.mlp.dense_4h_to_h(F.silu(gate) * up)
            out.append(t.output_layer(t.encoder.final_layernorm(h)))
        return torch.stack(out)


def with_linear_biases(model):
    """add_bias_linear: the original builds dense, dense_h_to_4h and dense_4h_to_h with bias=True."""
    for L in model.transformer.encoder.layers:
        for owner, name in [(L.self_attention, "dense"), (L.mlp, "dense_h_to_4h"), (L.mlp, "dense_4h_to_h")]:
            old = getattr(owner, name)
            setattr(owner, name, nn.Linear(old.in_features, old.out_features, bias=True))
    return model


def with_layer_norms(model):
    """rmsnorm false: every norm is torch.nn.LayerNorm (weight and bias)."""
    cfg = model.cfg
    norm = lambda: nn.LayerNorm(cfg.hidden_size, eps=cfg.layernorm_epsilon)  # noqa: E731
    for L in model.transformer.encoder.layers:
        L.input_layernorm, L.post_attention_layernorm = norm(), norm()
    model.transformer.encoder.final_layernorm = norm()
    return model


def chatglm2_config(**changes):
    return lambda m: {**m.hf_config(), **changes}


class ChatGLMVariants(TempDirTest):
    def check_against_reference(self, name, src, family, tied=False):
        """Converts src, runs its ref.json prompt, compares logits and greedy ids with the reference."""
        ref = read_json(os.path.join(src, "ref.json"))
        out, dump = self.path(name + ".art"), self.path(name + ".f32")
        sf("convert", src, "-o", out)
        got = sf_json("run", out, "--ids", ",".join(map(str, ref["prompt_ids"])), "-n", 32, "--logits", dump)
        want = np.fromfile(os.path.join(src, "ref_logits.f32"), dtype="<f4").reshape(-1, ref["vocab_size"])
        rows = np.fromfile(dump, dtype="<f4").reshape(-1, ref["vocab_size"])[: len(want)]
        err, tol = float(np.abs(rows - want).max()), 1e-4 * float(np.abs(want).max())
        self.assertLessEqual(err, tol, f"{name}: max logit error {err:.3g} > {tol:.3g}")
        self.assertEqual(got["ids"], ref["greedy"], f"{name}: greedy tokens differ from PyTorch")
        info = sf_json("inspect", out)
        self.assertEqual(info["source"]["architecture"], family + "/hf")
        self.assertEqual(info["model"]["tied_embeddings"], tied)
        return info

    def test_chatglm2_switches_the_original_defines(self):
        cases = {
            "add_bias_linear": (with_linear_biases(chatglm2_ref.ChatGLM2(chatglm2_ref.GLM2Config())),
                                chatglm2_config(add_bias_linear=True)),
            "layernorm": (with_layer_norms(chatglm2_ref.ChatGLM2(chatglm2_ref.GLM2Config())),
                          chatglm2_config(rmsnorm=False)),
            "post_norm_residual": (PostNormResidual(chatglm2_ref.GLM2Config()),
                                   chatglm2_config(apply_residual_connection_post_layernorm=True)),
        }
        for seed, (name, (model, config)) in enumerate(cases.items(), start=40):
            with self.subTest(name):
                src = self.path(name)
                make_fixtures.family_model(src, model, seed, config)
                info = self.check_against_reference(name, src, "chatglm2")
                m = info["model"]
                if name == "add_bias_linear":
                    self.assertEqual(m["biases"], {"qkv": True, "o": True, "ffn": True})
                if name == "layernorm":
                    self.assertEqual((m["norm"], m["norm_bias"]), ("layer", True))
                if name == "post_norm_residual":
                    self.assertEqual((m["residual"], m["residual_alpha"]), ("scaled_norm_input", 1.0))

    def test_chatglm2_keys_the_original_ignores_or_aliases(self):
        # original_rope is stored by RotaryEmbedding but never read; ChatGLMForConditionalGeneration
        # is the same model under its other class name. Same logits as the fixture's reference.
        for changes in [{"original_rope": False}, {"architectures": ["ChatGLMForConditionalGeneration"]}]:
            with self.subTest(str(changes)):
                src = self.path("glm2_" + list(changes)[0])
                shutil.copytree(fixture("chatglm3_6b"), src)
                config = read_json(os.path.join(src, "config.json"))
                with open(os.path.join(src, "config.json"), "w") as f:
                    json.dump({**config, **changes}, f)
                self.check_against_reference(list(changes)[0], src, "chatglm2")

    def test_chatglm6b_without_lm_head_is_tied(self):
        def tie_and_drop_head(m):
            m.lm_head.weight = m.transformer.word_embeddings.weight  # the reference now reads the embedding
            return {k: v for k, v in m.state_dict().items() if k != "lm_head.weight"}
        src = self.path("glm_tied")
        make_fixtures.family_model(src, chatglm_ref.ChatGLM6B(chatglm_ref.GLMConfig()), 44, lambda m: m.hf_config(),
                                   state_dict=tie_and_drop_head, prompt=make_fixtures.GLM_PROMPT)
        self.check_against_reference("glm_tied", src, "chatglm", tied=True)

    def test_chatglm6b_prompt_framings(self):
        # The prompt's logits for framings other than [gMASK] <sop> follow chatglm_ref's conventions:
        # the first <sop> ends the bidirectional prefix (none: all causal), the mask position is the
        # first [gMASK], else [MASK], else 0.
        cfg = chatglm_ref.GLMConfig()
        src = fixture("chatglm_6b")
        model = chatglm_ref.ChatGLM6B(chatglm_ref.config_from_hf(read_json(os.path.join(src, "config.json"))))
        model.load_state_dict(torch.load(os.path.join(src, "pytorch_model.bin"), map_location="cpu"))
        model.eval()
        out = self.path("glm")
        sf("convert", src, "-o", out)
        text = make_fixtures.PROMPT[1:13]
        framings = {
            "[MASK] <sop>": text + [cfg.mask_token_id, cfg.bos_token_id],
            "[gMASK] only": text + [cfg.gmask_token_id],
            "[gMASK] mid-prompt": text[:5] + [cfg.gmask_token_id] + text[5:] + [cfg.bos_token_id],
            "no mask token": text + [cfg.bos_token_id],
            "<sop> then more text": text[:4] + [cfg.gmask_token_id, cfg.bos_token_id] + text[4:],
        }
        for what, ids in framings.items():
            with self.subTest(what):
                dump = self.path("framing.f32")
                sf("run", out, "--ids", ",".join(map(str, ids)), "-n", 1, "--logits", dump, "--json")
                rows = np.fromfile(dump, dtype="<f4").reshape(-1, cfg.vocab_size)
                with torch.no_grad():
                    want = model(torch.tensor([ids]))[0].numpy()
                err, tol = float(np.abs(rows - want).max()), 1e-4 * float(np.abs(want).max())
                self.assertLessEqual(err, tol, f"{what}: max logit error {err:.3g} > {tol:.3g}")


if __name__ == "__main__":
    import unittest
    unittest.main()
