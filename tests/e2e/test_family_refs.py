"""The family references (tests/fixtures/*_ref.py) and their fixtures are checked against themselves
and against second formulations written here, so test_families.py compares the C++ executor with
something known to be right. Needs only torch and the generated fixtures, not the binary.

Second formulations: the fused tensors are split back into separate q / k / v (and gate / up)
matrices, RoPE is a complex multiplication, attention a loop over queries and heads over the keys
each query may see, everything in float64; GPT-2's Conv1D becomes F.linear on the transposed
weight; InternLM2 without bias is also run through the LLaMA reference (llama_ref.HFLlama)."""
import contextlib
import math
import unittest
from unittest import mock

import torch
import torch.nn.functional as F

from family_refs import FIXTURES, chatglm2_ref, chatglm_ref, gpt2_ref, internlm2_ref, load_fixture
import llama_ref

TOL = 1e-4  # test_families.py's f32 bound, relative to the largest reference logit


def rel_err(a, b):
    return float((a.double() - b.double()).abs().max() / b.double().abs().max())


# ------------------------------------------------------------------ second formulations (float64)
def rotate(x, positions, inv, layout):
    """x [T, n, d], d = 2 * len(inv): rotate each pair by positions[t] * inv[i] as a complex number.
    layout "half" pairs (i, i + d/2); "interleaved" pairs (2i, 2i + 1)."""
    d = x.shape[-1]
    re, im = (x[..., : d // 2], x[..., d // 2:]) if layout == "half" else (x[..., 0::2], x[..., 1::2])
    ang = torch.tensor(positions, dtype=torch.float64)[:, None] * inv.double()[None, :]
    z = torch.complex(re, im) * torch.polar(torch.ones_like(ang), ang)[:, None, :]
    if layout == "half":
        return torch.cat([z.real, z.imag], dim=-1)
    return torch.stack([z.real, z.imag], dim=-1).flatten(-2)


def loop_attention(q, k, v, visible, scale):
    """q [T, H, d], k/v [T, KV, d]; query head h reads kv head h // (H / KV); visible(i) lists the
    keys query i sees."""
    T, H = q.shape[:2]
    rep = H // k.shape[1]
    out = torch.zeros(T, H, v.shape[-1], dtype=q.dtype)
    for i in range(T):
        keys = visible(i)
        for h in range(H):
            p = torch.softmax((k[keys, h // rep] @ q[i, h]) * scale, dim=0)
            out[i, h] = p @ v[keys, h // rep]
    return out.reshape(T, -1)


def causal(i):
    return list(range(i + 1))


def rms(x, w, eps):
    return w * x / torch.sqrt((x * x).mean(-1, keepdim=True) + eps)


def layer_norm(x, w, b, eps):
    mu = x.mean(-1, keepdim=True)
    var = ((x - mu) ** 2).mean(-1, keepdim=True)
    return (x - mu) / torch.sqrt(var + eps) * w + b


def gelu_tanh(x):
    return 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))


def f64(sd):
    return {k: v.double() for k, v in sd.items()}


def glm6b_second(sd, cfg, ids):
    W = f64(sd)
    T, H, hd, D = len(ids), cfg.num_attention_heads, cfg.head_dim, cfg.hidden_size
    sop, eps = cfg.bos_token_id, cfg.layernorm_epsilon
    ctx = ids.index(sop) if sop in ids else 0
    mpos = next((ids.index(t) for t in (cfg.gmask_token_id, cfg.mask_token_id) if t in ids), 0)
    pos = list(range(ctx)) + [mpos] * (T - ctx)
    block = [0] * ctx + list(range(1, T - ctx + 1))
    d = hd // 2
    inv = torch.tensor([10000.0 ** (-2 * i / d) for i in range(d // 2)]).half().double()

    def visible(i):  # the whole prompt before <sop>, causal from there
        return list(range(max(i + 1, ctx)))

    h = W["transformer.word_embeddings.weight"][ids]
    for i in range(cfg.num_layers):
        p = f"transformer.layers.{i}."
        x = layer_norm(h, W[p + "input_layernorm.weight"], W[p + "input_layernorm.bias"], eps)
        w = W[p + "attention.query_key_value.weight"].view(H, 3, hd, D)
        b = W[p + "attention.query_key_value.bias"].view(H, 3, hd)
        q, k, v = ((x @ w[:, j].reshape(H * hd, D).T + b[:, j].reshape(-1)).view(T, H, hd) for j in range(3))
        q = torch.cat([rotate(q[..., :d], pos, inv, "half"), rotate(q[..., d:], block, inv, "half")], -1)
        k = torch.cat([rotate(k[..., :d], pos, inv, "half"), rotate(k[..., d:], block, inv, "half")], -1)
        a = loop_attention(q, k, v, visible, 1 / math.sqrt(hd))
        a = a @ W[p + "attention.dense.weight"].T + W[p + "attention.dense.bias"]
        h = x * math.sqrt(56) + a
        m = layer_norm(h, W[p + "post_attention_layernorm.weight"], W[p + "post_attention_layernorm.bias"], eps)
        f = gelu_tanh(m @ W[p + "mlp.dense_h_to_4h.weight"].T + W[p + "mlp.dense_h_to_4h.bias"])
        h = m * math.sqrt(56) + f @ W[p + "mlp.dense_4h_to_h.weight"].T + W[p + "mlp.dense_4h_to_h.bias"]
    h = layer_norm(h, W["transformer.final_layernorm.weight"], W["transformer.final_layernorm.bias"], eps)
    return h @ W["lm_head.weight"].T


def glm2_second(sd, cfg, ids):
    W = f64(sd)
    T, H, G, hd = len(ids), cfg.num_attention_heads, cfg.multi_query_group_num, cfg.kv_channels
    eps, F_ = cfg.layernorm_epsilon, cfg.ffn_hidden_size
    rot = hd // 2
    base = 10000.0 * (cfg.rope_ratio or 1)
    inv = torch.tensor([base ** (-2 * i / rot) for i in range(rot // 2)], dtype=torch.float64)
    h = W["transformer.embedding.word_embeddings.weight"][ids]
    for i in range(cfg.num_layers):
        p = f"transformer.encoder.layers.{i}."
        x = rms(h, W[p + "input_layernorm.weight"], eps)
        w, b = W[p + "self_attention.query_key_value.weight"], W[p + "self_attention.query_key_value.bias"]
        wq, wk, wv = w[: H * hd], w[H * hd: (H + G) * hd], w[(H + G) * hd:]
        bq, bk, bv = b[: H * hd], b[H * hd: (H + G) * hd], b[(H + G) * hd:]
        q = (x @ wq.T + bq).view(T, H, hd)
        k = (x @ wk.T + bk).view(T, G, hd)
        v = (x @ wv.T + bv).view(T, G, hd)
        q = torch.cat([rotate(q[..., :rot], list(range(T)), inv, "interleaved"), q[..., rot:]], -1)
        k = torch.cat([rotate(k[..., :rot], list(range(T)), inv, "interleaved"), k[..., rot:]], -1)
        h = h + loop_attention(q, k, v, causal, 1 / math.sqrt(hd)) @ W[p + "self_attention.dense.weight"].T
        x = rms(h, W[p + "post_attention_layernorm.weight"], eps)
        w4 = W[p + "mlp.dense_h_to_4h.weight"]
        gate, up = x @ w4[:F_].T, x @ w4[F_:].T
        h = h + (F.silu(gate) * up) @ W[p + "mlp.dense_4h_to_h.weight"].T
    return rms(h, W["transformer.encoder.final_layernorm.weight"], eps) @ W["transformer.output_layer.weight"].T


def internlm2_unfused(sd, cfg):
    """Per layer q / k / v weights and biases (None without bias) split out of wqkv."""
    KV, hd, D = cfg.num_key_value_heads, cfg.head_dim, cfg.hidden_size
    rep = cfg.num_attention_heads // KV
    out = []
    for i in range(cfg.num_hidden_layers):
        p = f"model.layers.{i}.attention."
        w = sd[p + "wqkv.weight"].view(KV, rep + 2, hd, D)
        b = sd[p + "wqkv.bias"].view(KV, rep + 2, hd) if cfg.bias else None
        split = {"q": w[:, :rep].reshape(-1, D), "k": w[:, rep].reshape(-1, D), "v": w[:, rep + 1].reshape(-1, D)}
        if b is not None:
            split.update({"bq": b[:, :rep].reshape(-1), "bk": b[:, rep].reshape(-1),
                          "bv": b[:, rep + 1].reshape(-1)})
        out.append(split)
    return out


def internlm2_second(sd, cfg, ids):
    W = f64(sd)
    T, H, KV, hd, eps = len(ids), cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim, cfg.rms_norm_eps
    inv = torch.tensor([cfg.rope_theta ** (-2 * i / hd) for i in range(hd // 2)], dtype=torch.float64)
    h = W["model.tok_embeddings.weight"][ids]
    for i, u in enumerate(internlm2_unfused(W, cfg)):
        p = f"model.layers.{i}."
        x = rms(h, W[p + "attention_norm.weight"], eps)
        q, k, v = (x @ u[n].T + (u["b" + n] if cfg.bias else 0) for n in "qkv")
        q = rotate(q.view(T, H, hd), list(range(T)), inv, "half")
        k = rotate(k.view(T, KV, hd), list(range(T)), inv, "half")
        a = loop_attention(q, k, v.view(T, KV, hd), causal, 1 / math.sqrt(hd)) @ W[p + "attention.wo.weight"].T
        h = h + a + (W[p + "attention.wo.bias"] if cfg.bias else 0)
        x = rms(h, W[p + "ffn_norm.weight"], eps)
        f = F.silu(x @ W[p + "feed_forward.w1.weight"].T) * (x @ W[p + "feed_forward.w3.weight"].T)
        h = h + f @ W[p + "feed_forward.w2.weight"].T
    return rms(h, W["model.norm.weight"], eps) @ W["output.weight"].T


def gpt2_second(sd, cfg, ids):
    """Every Conv1D as F.linear on its transposed weight, c_attn split into q, k and v."""
    pre = "transformer." if "transformer.wte.weight" in sd else ""
    W = {k[len(pre):]: v.double() for k, v in sd.items() if k.startswith(pre)}
    T, D, H, eps = len(ids), cfg.n_embd, cfg.n_head, cfg.layer_norm_epsilon
    hd = D // H
    h = W["wte.weight"][ids] + W["wpe.weight"][:T]
    for i in range(cfg.n_layer):
        p = f"h.{i}."
        x = layer_norm(h, W[p + "ln_1.weight"], W[p + "ln_1.bias"], eps)
        wt, b = W[p + "attn.c_attn.weight"].T, W[p + "attn.c_attn.bias"]  # [3D, D]: rows q | k | v
        q, k, v = (F.linear(x, wt[j * D:(j + 1) * D], b[j * D:(j + 1) * D]).view(T, H, hd) for j in range(3))
        a = loop_attention(q, k, v, causal, 1 / math.sqrt(hd))
        h = h + F.linear(a, W[p + "attn.c_proj.weight"].T, W[p + "attn.c_proj.bias"])
        x = layer_norm(h, W[p + "ln_2.weight"], W[p + "ln_2.bias"], eps)
        f = gelu_tanh(F.linear(x, W[p + "mlp.c_fc.weight"].T, W[p + "mlp.c_fc.bias"]))
        h = h + F.linear(f, W[p + "mlp.c_proj.weight"].T, W[p + "mlp.c_proj.bias"])
    return layer_norm(h, W["ln_f.weight"], W["ln_f.bias"], eps) @ W["wte.weight"].T


SECOND = {"chatglm_6b": glm6b_second, "chatglm2_6b": glm2_second, "chatglm3_6b": glm2_second,
          "internlm2_gqa": internlm2_second, "internlm2_bias": internlm2_second,
          "gpt2_hub": gpt2_second, "gpt2_prefixed": gpt2_second}


# ------------------------------------------------------------------ the published names
def layer_names(prefix, names, n_layers):
    return {f"{prefix}{i}.{n}" for i in range(n_layers) for n in names}


GLM6B_LAYER = ["input_layernorm.weight", "input_layernorm.bias", "attention.query_key_value.weight",
               "attention.query_key_value.bias", "attention.dense.weight", "attention.dense.bias",
               "attention.rotary_emb.inv_freq", "post_attention_layernorm.weight", "post_attention_layernorm.bias",
               "mlp.dense_h_to_4h.weight", "mlp.dense_h_to_4h.bias", "mlp.dense_4h_to_h.weight",
               "mlp.dense_4h_to_h.bias"]
GLM2_LAYER = ["input_layernorm.weight", "self_attention.query_key_value.weight",
              "self_attention.query_key_value.bias", "self_attention.dense.weight",
              "post_attention_layernorm.weight", "mlp.dense_h_to_4h.weight", "mlp.dense_4h_to_h.weight"]
LM2_LAYER = ["attention_norm.weight", "attention.wqkv.weight", "attention.wo.weight", "ffn_norm.weight",
             "feed_forward.w1.weight", "feed_forward.w3.weight", "feed_forward.w2.weight"]
GPT2_LAYER = ["ln_1.weight", "ln_1.bias", "attn.c_attn.weight", "attn.c_attn.bias", "attn.c_proj.weight",
              "attn.c_proj.bias", "ln_2.weight", "ln_2.bias", "mlp.c_fc.weight", "mlp.c_fc.bias",
              "mlp.c_proj.weight", "mlp.c_proj.bias"]
GPT2_TOP = ["wte.weight", "wpe.weight", "ln_f.weight", "ln_f.bias"]


def published_names(name, n_layers):
    if name == "chatglm_6b":
        return {"transformer.word_embeddings.weight", "transformer.final_layernorm.weight",
                "transformer.final_layernorm.bias", "lm_head.weight"} | \
            layer_names("transformer.layers.", GLM6B_LAYER, n_layers)
    if name.startswith("chatglm"):
        return {"transformer.embedding.word_embeddings.weight", "transformer.rotary_pos_emb.inv_freq",
                "transformer.encoder.final_layernorm.weight", "transformer.output_layer.weight"} | \
            layer_names("transformer.encoder.layers.", GLM2_LAYER, n_layers)
    if name.startswith("internlm2"):
        extra = ["attention.wqkv.bias", "attention.wo.bias"] if name == "internlm2_bias" else []
        return {"model.tok_embeddings.weight", "model.norm.weight", "output.weight"} | \
            layer_names("model.layers.", LM2_LAYER + extra, n_layers)
    if name == "gpt2_hub":
        return set(GPT2_TOP) | layer_names("h.", GPT2_LAYER + ["attn.bias", "attn.masked_bias"], n_layers)
    return {"transformer." + n for n in GPT2_TOP} | {"lm_head.weight"} | \
        layer_names("transformer.h.", GPT2_LAYER, n_layers)


class FamilyReferences(unittest.TestCase):
    def test_fixture_files_reload_into_the_reference(self):
        # The saved state dict loads strictly (no missing or extra name) and reproduces the stored
        # logits and greedy tokens.
        for name in FIXTURES:
            with self.subTest(model=name):
                model, sd, ref, want = load_fixture(name)
                with torch.no_grad():
                    got = model(torch.tensor([ref["prompt_ids"]]))[0]
                self.assertLess(rel_err(got, want), 1e-6)
                self.assertEqual(llama_ref.greedy(model, ref["prompt_ids"], 32), ref["greedy"])

    def test_tensor_names_are_the_published_ones(self):
        for name in FIXTURES:
            with self.subTest(model=name):
                model, sd, ref, want = load_fixture(name)
                self.assertEqual(set(sd), published_names(name, 2))  # every fixture has two layers

    def test_fused_shapes_follow_the_originals(self):
        m, sd, _, _ = load_fixture("chatglm_6b")
        self.assertEqual(tuple(sd["transformer.layers.0.attention.query_key_value.weight"].shape), (192, 64))
        self.assertEqual(tuple(sd["transformer.layers.0.mlp.dense_h_to_4h.weight"].shape), (200, 64))
        inv = sd["transformer.layers.0.attention.rotary_emb.inv_freq"]
        self.assertTrue(torch.equal(inv, inv.half().float()), "inv_freq holds f16 values")
        m, sd, _, _ = load_fixture("chatglm3_6b")  # 4 heads x 24 kv_channels + 2 x 2 groups x 24
        qkv = sd["transformer.encoder.layers.0.self_attention.query_key_value.weight"]
        self.assertEqual(tuple(qkv.shape), (192, 64))
        self.assertEqual(tuple(sd["transformer.encoder.layers.0.self_attention.dense.weight"].shape), (64, 96))
        self.assertEqual(tuple(sd["transformer.encoder.layers.0.mlp.dense_h_to_4h.weight"].shape), (240, 64))
        m, sd, _, _ = load_fixture("internlm2_bias")  # 1 kv group: 4 q heads, k, v
        self.assertEqual(tuple(sd["model.layers.0.attention.wqkv.weight"].shape), (96, 64))
        m, sd, _, _ = load_fixture("gpt2_hub")
        self.assertEqual(tuple(sd["h.0.attn.c_attn.weight"].shape), (64, 192))  # Conv1D: [in, out]
        self.assertEqual(tuple(sd["h.0.mlp.c_fc.weight"].shape), (64, 256))  # n_inner absent: 4 * n_embd
        self.assertTrue(torch.equal(sd["h.0.attn.bias"][0, 0], torch.ones(128, 128).tril()))
        m, sd, _, _ = load_fixture("gpt2_prefixed")
        self.assertEqual(tuple(sd["transformer.h.0.mlp.c_fc.weight"].shape), (64, 192))  # n_inner 192
        self.assertEqual(sd["lm_head.weight"].data_ptr(), sd["transformer.wte.weight"].data_ptr(),
                         "lm_head.weight shares wte's storage, as GPT2LMHeadModel.state_dict() saves it")

    def test_second_formulation_agrees(self):
        # Fused tensors split, RoPE as complex rotation, attention as a loop, in float64: the same
        # logits at every prompt position, and the same argmax at every generated position.
        for name in FIXTURES:
            with self.subTest(model=name):
                model, sd, ref, want = load_fixture(name)
                seq = ref["prompt_ids"] + ref["greedy"]
                got = SECOND[name](sd, model.cfg, seq)
                P = len(ref["prompt_ids"])
                self.assertLess(rel_err(got[:P], want), 1e-5)
                self.assertEqual(got[P - 1:-1].argmax(-1).tolist(), ref["greedy"])

    def test_internlm2_matches_the_llama_reference(self):
        # Without bias InternLM2 is LLaMA with a packed wqkv: unpack it into llama_ref.HFLlama.
        model, sd, ref, want = load_fixture("internlm2_gqa")
        c = model.cfg
        cfg = llama_ref.Config(vocab_size=c.vocab_size, dim=c.hidden_size, n_layers=c.num_hidden_layers,
                               n_heads=c.num_attention_heads, n_kv_heads=c.num_key_value_heads,
                               ffn_dim=c.intermediate_size, norm_eps=c.rms_norm_eps, rope_theta=c.rope_theta)
        llama = llama_ref.HFLlama(cfg)
        m = {"model.embed_tokens.weight": sd["model.tok_embeddings.weight"],
             "model.norm.weight": sd["model.norm.weight"], "lm_head.weight": sd["output.weight"]}
        for i, u in enumerate(internlm2_unfused(sd, c)):
            p = q = f"model.layers.{i}."
            m.update({q + "self_attn.q_proj.weight": u["q"], q + "self_attn.k_proj.weight": u["k"],
                      q + "self_attn.v_proj.weight": u["v"],
                      q + "self_attn.o_proj.weight": sd[p + "attention.wo.weight"],
                      q + "input_layernorm.weight": sd[p + "attention_norm.weight"],
                      q + "post_attention_layernorm.weight": sd[p + "ffn_norm.weight"],
                      q + "mlp.gate_proj.weight": sd[p + "feed_forward.w1.weight"],
                      q + "mlp.up_proj.weight": sd[p + "feed_forward.w3.weight"],
                      q + "mlp.down_proj.weight": sd[p + "feed_forward.w2.weight"]})
        llama.load_state_dict(m, strict=True)
        with torch.no_grad():
            got = llama(torch.tensor([ref["prompt_ids"]]))[0]
        self.assertLess(rel_err(got, want), 1e-5)
        self.assertEqual(llama_ref.greedy(llama, ref["prompt_ids"], 32), ref["greedy"])

    def test_gpt2_conv1d_is_linear_on_the_transpose(self):
        c = gpt2_ref.Conv1D(5, 7)
        torch.nn.init.normal_(c.weight)
        torch.nn.init.normal_(c.bias)
        x = torch.randn(3, 4, 5)
        self.assertTrue(torch.allclose(c(x), F.linear(x, c.weight.t(), c.bias), atol=1e-6))

    def test_one_forward_over_the_whole_sequence_agrees_with_greedy(self):
        # What a KV-cache executor computes: one pass over prompt + continuation gives the prompt
        # rows unchanged and, at each position, the token greedy chose next.
        for name in FIXTURES:
            with self.subTest(model=name):
                model, sd, ref, want = load_fixture(name)
                P = len(ref["prompt_ids"])
                with torch.no_grad():
                    got = model(torch.tensor([ref["prompt_ids"] + ref["greedy"]]))[0]
                self.assertLess(rel_err(got[:P], want), 1e-5)
                self.assertEqual(got[P - 1:-1].argmax(-1).tolist(), ref["greedy"])

    def test_greedy_margins_exceed_the_logit_tolerance(self):
        # Any executor within TOL of the reference logits must pick the same tokens: at every step
        # the top two logits are further apart than twice the tolerance. A continuation that
        # repeats one token would test little of generation, so ask for variety too.
        for name in FIXTURES:
            with self.subTest(model=name):
                model, sd, ref, want = load_fixture(name)
                with torch.no_grad():
                    got = model(torch.tensor([ref["prompt_ids"] + ref["greedy"]]))[0]
                P = len(ref["prompt_ids"])
                top2 = got[P - 1:-1].topk(2, dim=-1).values
                margin = float(((top2[:, 0] - top2[:, 1]) / got[P - 1:-1].abs().max(-1).values).min())
                self.assertGreater(margin, 2 * TOL, f"{name}: top-2 logits {margin:.2g} apart")
                self.assertGreaterEqual(len(set(ref["greedy"])), 10)

    def test_chatglm_positions_and_mask(self):
        cfg = chatglm_ref.GLMConfig()
        gmask, sop, mask = cfg.gmask_token_id, cfg.bos_token_id, cfg.mask_token_id
        seq = [5, 6, 7, gmask, sop, 9, 10]
        self.assertEqual(chatglm_ref.position_ids(seq, cfg), ([0, 1, 2, 3, 3, 3, 3], [0, 0, 0, 0, 1, 2, 3]))
        self.assertEqual(chatglm_ref.attention_allowed(seq, cfg).int().tolist(), [
            [1, 1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 0, 0, 0],
            [1, 1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1, 0], [1, 1, 1, 1, 1, 1, 1]])
        # [MASK] in the middle of the prompt: positions after <sop> point at it.
        self.assertEqual(chatglm_ref.position_ids([5, mask, 7, sop, 9], cfg), ([0, 1, 2, 1, 1], [0, 0, 0, 1, 2]))
        # [gMASK] wins over [MASK] wherever they are.
        self.assertEqual(chatglm_ref.position_ids([mask, 5, gmask, sop], cfg)[0], [0, 1, 2, 2])
        # The convention for no <sop>: everything causal, every position the mask position.
        self.assertEqual(chatglm_ref.position_ids([5, gmask, 7], cfg), ([1, 1, 1], [1, 2, 3]))
        causal3 = torch.ones(3, 3).tril().bool()
        self.assertTrue(torch.equal(chatglm_ref.attention_allowed([5, gmask, 7], cfg), causal3))
        self.assertEqual(chatglm_ref.position_ids([5, 6], cfg), ([0, 0], [1, 2]))
        # The fixture's continuation holds no special token, so only the prompt's decide.
        _, _, ref, _ = load_fixture("chatglm_6b")
        self.assertEqual(ref["prompt_ids"][-2:], [gmask, sop])
        self.assertFalse(set(ref["greedy"]) & {mask, gmask, sop, cfg.eos_token_id})

    def test_mistakes_an_executor_could_make_exceed_the_tolerance(self):
        # Each plausible misreading of the original, applied to the reference, moves the logits of
        # prompt + continuation (the rows test_families.py compares) by well over TOL.
        def err_with(name, *patches, edit=None):
            model, sd, ref, want = load_fixture(name)
            seq = torch.tensor([ref["prompt_ids"] + ref["greedy"]])
            with torch.no_grad():
                right = model(seq)[0]
            if edit:
                edit(model)
            with torch.no_grad(), contextlib.ExitStack() as stack:
                for p in patches:
                    stack.enter_context(p)
                got = model(seq)[0]
            return rel_err(got, right)

        def fill(suffix, value):
            def edit(model):
                with torch.no_grad():
                    for n, p in model.named_parameters():
                        if n.endswith(suffix):
                            p.fill_(value)
            return edit

        def patch(module, attr, fn):
            return mock.patch.object(module, attr, fn)

        def wqkv_split_llama_style(model):
            # Store wqkv so that the packed reading yields what splitting the original's rows as
            # [all q | all k | all v] would.
            c = model.cfg
            KV, hd, rep = c.num_key_value_heads, c.head_dim, c.num_attention_heads // c.num_key_value_heads
            with torch.no_grad():
                for L in model.model.layers:
                    w = L.attention.wqkv.weight
                    q, k, v = w.split([KV * rep * hd, KV * hd, KV * hd])
                    packed = torch.cat([q.view(KV, rep, hd, -1), k.view(KV, 1, hd, -1), v.view(KV, 1, hd, -1)], 1)
                    w.copy_(packed.reshape(w.shape))

        def angles(x, base, dims):
            return list(range(x.shape[0])), base ** (-torch.arange(0, dims, 2, dtype=torch.float64) / dims)

        def whole_head(x, base):  # ChatGLM2 RoPE over every dimension instead of the first half
            pos, inv = angles(x, base, x.shape[-1])
            return rotate(x.double(), pos, inv, "interleaved").float()

        def half_pairs(x, base):  # ChatGLM2 RoPE pairing (i, i + rot/2) instead of (2i, 2i + 1)
            rot = x.shape[-1] // 2
            pos, inv = angles(x, base, rot)
            return torch.cat([rotate(x[..., :rot].double(), pos, inv, "half").float(), x[..., rot:]], -1)

        def interleaved(x, theta):  # InternLM2 RoPE pairing (2i, 2i + 1) instead of (i, i + hd/2)
            pos, inv = angles(x, theta, x.shape[-1])
            return rotate(x.double(), pos, inv, "interleaved").float()

        positions = chatglm_ref.position_ids  # the original, for the patches to call
        glm, glm3, lm2 = "chatglm_6b", "chatglm3_6b", "internlm2_bias"
        cases = {
            "chatglm_6b: causal prompt": err_with(glm, patch(
                chatglm_ref, "attention_allowed", lambda ids, cfg: torch.ones(len(ids), len(ids)).tril().bool())),
            "chatglm_6b: positions not clamped": err_with(glm, patch(
                chatglm_ref, "position_ids", lambda ids, cfg: (list(range(len(ids))), positions(ids, cfg)[1]))),
            "chatglm_6b: no block positions": err_with(glm, patch(
                chatglm_ref, "position_ids", lambda ids, cfg: (positions(ids, cfg)[0], [0] * len(ids)))),
            "chatglm_6b: alpha from num_layers": err_with(glm, patch(chatglm_ref, "residual_alpha", lambda: 2.0)),
            "chatglm_6b: qkv bias dropped": err_with(glm, edit=fill("query_key_value.bias", 0)),
            "chatglm_6b: dense bias dropped": err_with(glm, edit=fill("attention.dense.bias", 0)),
            "chatglm_6b: mlp bias dropped": err_with(glm, edit=fill("dense_4h_to_h.bias", 0)),
            "chatglm_6b: layernorm bias dropped": err_with(glm, edit=fill("layernorm.bias", 0)),
            "chatglm2_6b: qkv bias dropped": err_with("chatglm2_6b", edit=fill("query_key_value.bias", 0)),
            "chatglm2_6b: norm weights ignored": err_with("chatglm2_6b", edit=fill("layernorm.weight", 1)),
            "chatglm2_6b: RoPE on the whole head": err_with("chatglm2_6b", patch(
                chatglm2_ref, "rope_first_half_interleaved", whole_head)),
            "chatglm2_6b: RoPE pairs (i, i + rot/2)": err_with("chatglm2_6b", patch(
                chatglm2_ref, "rope_first_half_interleaved", half_pairs)),
            "chatglm3_6b: rope_ratio ignored": err_with(glm3, patch(chatglm2_ref, "rope_theta", lambda cfg: 1e4)),
            "internlm2_gqa: wqkv split as [q | k | v]": err_with("internlm2_gqa", edit=wqkv_split_llama_style),
            "internlm2_gqa: RoPE pairs (2i, 2i + 1)": err_with("internlm2_gqa", patch(
                internlm2_ref, "rope_rotate_half", interleaved)),
            "internlm2_bias: wqkv bias dropped": err_with(lm2, edit=fill("wqkv.bias", 0)),
            "internlm2_bias: wo bias dropped": err_with(lm2, edit=fill("wo.bias", 0)),
            "gpt2_hub: c_attn bias dropped": err_with("gpt2_hub", edit=fill("c_attn.bias", 0)),
            "gpt2_hub: ln bias dropped": err_with("gpt2_hub", edit=fill("ln_1.bias", 0)),
            "gpt2_prefixed: no positions": err_with("gpt2_prefixed", edit=fill("wpe.weight", 0)),
        }
        for what, err in cases.items():
            with self.subTest(mistake=what):
                self.assertGreater(err, 10 * TOL, f"{what}: moves the logits by only {err:.2g}")
        # The erf GELU differs from gelu_new by at most ~3e-4 per activation: caught, narrowly.
        err = err_with("gpt2_hub", mock.patch.object(gpt2_ref, "gelu_new", F.gelu))
        self.assertGreater(err, 2 * TOL, f"exact erf gelu moves the logits by only {err:.2g}")


if __name__ == "__main__":
    unittest.main()
