"""Bad configurations, family by family (issue 6): absurd or contradicting hyper-parameters, config
keys naming a feature the family's forward does not model, and unknown families. `convert` and
`inspect` must each exit 1 with one line naming the source and the problem, in bounded time and
memory. The look-alikes a family does accept (neutral values, a stray untied head) still convert,
and where the forward is unchanged, still compute the PyTorch reference's logits."""
import json
import os
import shutil
import tempfile
import time

import numpy as np
import torch

from sftest import TempDirTest, fixture, read_json, sf, sf_json
from test_hostile_sources import run


class FamilyConfigTest(TempDirTest):
    def edited(self, name, changes=None, drop=(), file="config.json"):
        """A copy of fixture `name` whose `file` has `changes` applied and the keys in `drop` removed."""
        d = self.path(f"{name}_{len(os.listdir(self.tmp))}")
        shutil.copytree(fixture(name), d)
        path = os.path.join(d, file)
        cfg = read_json(path)
        cfg.update(changes or {})
        for k in drop:
            cfg.pop(k, None)
        with open(path, "w") as f:
            json.dump(cfg, f)
        return d

    def with_state_dict(self, name, edit):
        """A copy of fixture `name` whose pytorch_model.bin is edit(state_dict)."""
        d = self.path(f"{name}_{len(os.listdir(self.tmp))}")
        shutil.copytree(fixture(name), d)
        path = os.path.join(d, "pytorch_model.bin")
        sd = torch.load(path)
        torch.save(edit(sd), path)
        return d

    def refused(self, src, *needles):
        """convert and inspect both exit 1 at once, with one line naming src and every needle."""
        for cmd in ("convert", "inspect"):
            out = self.path("out")
            args = (cmd, src, "-o", out) if cmd == "convert" else (cmd, src)
            t = time.time()
            p = run(*args, timeout=30)
            self.assertLess(time.time() - t, 10, f"{cmd} took {time.time() - t:.1f} s to refuse")
            self.assertEqual(p.returncode, 1, f"{cmd}: exit {p.returncode}, stderr: {p.stderr[-2000:]}")
            lines = p.stderr.strip().splitlines()
            self.assertEqual(len(lines), 1, f"{cmd}: expected one line, got: {p.stderr[-2000:]}")
            self.assertIn(src, lines[0])
            for n in needles:
                self.assertIn(n, lines[0])
            self.assertFalse(os.path.exists(out), "a refused conversion left output")
        return lines[0]

    def refused_cases(self, cases):
        for name, changes, *needles in cases:
            with self.subTest(fixture=name, changes=changes):
                self.refused(self.edited(name, changes), *needles)

    def logits_match_reference(self, src, ref_name):
        """Converts src, runs the reference prompt, and compares with fixture ref_name's logits."""
        ref = read_json(os.path.join(fixture(ref_name), "ref.json"))
        out, dump = self.path("art"), self.path("logits.f32")
        p = sf("convert", src, "-o", out)
        got = sf_json("run", out, "--ids", ",".join(map(str, ref["prompt_ids"])), "-n", 32, "--logits", dump)
        want = np.fromfile(os.path.join(fixture(ref_name), "ref_logits.f32"), dtype="<f4").reshape(-1, ref["vocab_size"])
        logits = np.fromfile(dump, dtype="<f4").reshape(-1, ref["vocab_size"])[: len(want)]
        self.assertLessEqual(float(np.abs(logits - want).max()), 1e-4 * float(np.abs(want).max()))
        self.assertEqual(got["ids"], ref["greedy"])
        shutil.rmtree(out)
        return p.stderr


class GPT2BadConfigs(FamilyConfigTest):
    def test_absurd_sizes(self):
        self.refused_cases([
            ("gpt2_hub", {"n_embd": 0}, "'n_embd' is 0"),
            ("gpt2_hub", {"n_head": -4}, "'n_head' is -4"),
            ("gpt2_hub", {"n_layer": 10**12}, "'n_layer' is 1000000000000"),
            ("gpt2_hub", {"n_inner": -1}, "'n_inner' is -1"),
            ("gpt2_hub", {"vocab_size": 0}, "'vocab_size' is 0"),
            ("gpt2_hub", {"n_positions": 0}, "'n_positions' is 0"),
            ("gpt2_hub", {"n_positions": -1}, "'n_positions' is -1"),
            ("gpt2_hub", {"layer_norm_epsilon": 0}, "'layer_norm_epsilon'"),
            # a learned position table of 2^40 rows would be 2^46 elements: refused before any work
            ("gpt2_hub", {"n_positions": 2**40}, "max_seq x d_model"),
            ("gpt2_hub", {"n_embd": 64.0}, "'n_embd' is not an integer"),
            ("gpt2_prefixed", {"n_head": 5}, "'n_embd' (64) is not a multiple of 'n_head' (5)"),
        ])
        self.refused(self.edited("gpt2_hub", drop=["n_head"]), "'n_head' is missing")

    def test_values_contradicting_the_tensors(self):
        self.refused_cases([
            ("gpt2_hub", {"n_layer": 3}, "says 3 layers but the checkpoint holds 2"),
            ("gpt2_prefixed", {"n_layer": 1}, "says 1 layers but the checkpoint holds 2"),
            ("gpt2_hub", {"vocab_size": 301}, "wte.weight", "[300, 64]", "[301, 64]"),
            ("gpt2_hub", {"n_positions": 64}, "wpe.weight", "[128, 64]", "[64, 64]"),
            # n_inner absent or null is 4 * n_embd (256); the prefixed fixture's MLP is 192 wide
            ("gpt2_prefixed", {"n_inner": None}, "transformer.h.0.mlp.c_fc.weight", "[64, 192]", "[64, 256]"),
            ("gpt2_hub", {"n_inner": 100}, "h.0.mlp.c_fc.weight", "[64, 256]", "[64, 100]"),
            # an untied GPT-2 needs its own lm_head.weight, which the hub layout never has
            ("gpt2_hub", {"tie_word_embeddings": False}, "missing tensor lm_head.weight"),
        ])

    def test_unmodelled_settings(self):
        self.refused_cases([
            ("gpt2_hub", {"activation_function": "relu"}, "activation_function 'relu'"),
            ("gpt2_hub", {"activation_function": "gelu"}, "activation_function 'gelu'"),
            ("gpt2_hub", {"scale_attn_by_inverse_layer_idx": True}, "'scale_attn_by_inverse_layer_idx' is true"),
            ("gpt2_prefixed", {"add_cross_attention": True}, "'add_cross_attention' is true"),
            ("gpt2_prefixed", {"scale_attn_weights": False}, "'scale_attn_weights' is false"),
        ])

    def test_accepted_look_alikes(self):
        # gelu_pytorch_tanh is the same tanh approximation; reorder_and_upcast_attn changes only the
        # precision of a half-precision run; the switches at their defaults change nothing.
        src = self.edited("gpt2_prefixed", {"activation_function": "gelu_pytorch_tanh", "reorder_and_upcast_attn": True,
                                            "add_cross_attention": False, "scale_attn_weights": True})
        self.logits_match_reference(src, "gpt2_prefixed")

    def test_a_separate_lm_head_is_named_and_unused(self):
        # A tied GPT-2 whose file carries an lm_head.weight of its own (not wte's storage): the
        # model reads wte, as GPT2LMHeadModel does after tie_weights(), and says so.
        def separate_head(sd):
            sd["lm_head.weight"] = sd["transformer.wte.weight"].clone() + 1.0
            return sd
        src = self.with_state_dict("gpt2_prefixed", separate_head)
        err = self.logits_match_reference(src, "gpt2_prefixed")
        self.assertIn("lm_head.weight in the checkpoint is not used", err)

    def test_attention_buffers_only_where_named(self):
        # h.{i}.attn.bias is a mask buffer and dropped; a stray tensor of any other name is refused.
        src = self.with_state_dict("gpt2_hub", lambda sd: {**sd, "h.0.attn.extra": torch.zeros(3)})
        self.refused(src, "tensor h.0.attn.extra is not part of a gpt2 model")


class InternLM2BadConfigs(FamilyConfigTest):
    def test_absurd_sizes(self):
        self.refused_cases([
            ("internlm2_gqa", {"hidden_size": 0}, "'hidden_size' is 0"),
            ("internlm2_gqa", {"num_attention_heads": 0}, "'num_attention_heads' is 0"),
            ("internlm2_gqa", {"num_hidden_layers": 10**12}, "'num_hidden_layers' is 1000000000000"),
            ("internlm2_gqa", {"intermediate_size": -100}, "'intermediate_size' is -100"),
            ("internlm2_gqa", {"rms_norm_eps": 0}, "'rms_norm_eps'"),
            ("internlm2_gqa", {"rope_theta": -1}, "'rope_theta'"),
            ("internlm2_gqa", {"max_position_embeddings": -1}, "'max_position_embeddings'"),
            ("internlm2_gqa", {"hidden_size": 66}, "'hidden_size' (66) is not a multiple of 'num_attention_heads' (4)"),
            ("internlm2_gqa", {"num_key_value_heads": 3}, "n_heads (4) is not a multiple of n_kv_heads (3)"),
            ("internlm2_gqa", {"bias": "yes"}, "'bias' is not true or false"),
        ])

    def test_values_contradicting_the_tensors(self):
        self.refused_cases([
            ("internlm2_gqa", {"num_hidden_layers": 3}, "says 3 layers but the checkpoint holds 2"),
            ("internlm2_gqa", {"vocab_size": 299}, "model.tok_embeddings.weight", "[300, 64]", "[299, 64]"),
            ("internlm2_gqa", {"num_key_value_heads": 4}, "model.layers.0.attention.wqkv.weight", "[128, 64]",
             "[192, 64]"),
            ("internlm2_gqa", {"bias": True}, "missing tensor model.layers.0.attention.wqkv.bias"),
            ("internlm2_bias", {"bias": False}, "model.layers.0.attention.", "bias is not part of a internlm2 model"),
            ("internlm2_gqa", {"intermediate_size": 128}, "model.layers.0.feed_forward.w1.weight", "[100, 64]",
             "[128, 64]"),
        ])
        # InternLM2Config's default for "bias" is true: a configuration without it needs the biases.
        self.refused(self.edited("internlm2_gqa", drop=["bias"]), "missing tensor model.layers.0.attention.wqkv.bias")
        self.refused(self.with_state_dict("internlm2_gqa", lambda sd: {k: v for k, v in sd.items() if k != "output.weight"}),
                     "missing tensor output.weight")

    def test_unmodelled_settings(self):
        self.refused_cases([
            ("internlm2_gqa", {"rope_scaling": {"type": "linear", "factor": 2.0}}, "'rope_scaling'", "RoPE scaling"),
            ("internlm2_gqa", {"rope_scaling": "dynamic"}, "'rope_scaling'"),
            ("internlm2_gqa", {"sliding_window": 4096}, "'sliding_window' is 4096"),
            ("internlm2_gqa", {"partial_rotary_factor": 0.5}, "'partial_rotary_factor' is 0.5"),
            ("internlm2_gqa", {"hidden_act": "gelu"}, "hidden_act 'gelu'"),
        ])
        self.refused(self.edited("internlm2_gqa", {"rope_scaling": {"type": "dynamic", "factor": 2.0},
                                                   "max_position_embeddings": 0}),
                     "dynamic rope_scaling needs max_position_embeddings")

    def test_accepted_look_alikes(self):
        # Dynamic NTK scaling is plain RoPE up to max_position_embeddings (128 here, more than the
        # 48 positions the reference runs), which is the context length every command keeps to.
        src = self.edited("internlm2_bias", {"rope_scaling": {"type": "dynamic", "factor": 2.0},
                                             "partial_rotary_factor": 1.0, "sliding_window": None})
        self.logits_match_reference(src, "internlm2_bias")
        info = sf_json("inspect", src)
        self.assertEqual(info["model"]["max_seq"], 128)

    def test_tied_configuration_names_the_unused_output(self):
        src = self.edited("internlm2_gqa", {"tie_word_embeddings": True})
        out = self.path("tied")
        p = sf("convert", src, "-o", out)
        self.assertIn("output.weight in the checkpoint is not used", p.stderr)
        self.assertTrue(sf_json("inspect", out)["model"]["tied_embeddings"])


class LlamaUnmodelledKeys(FamilyConfigTest):
    def test_unmodelled_settings(self):
        self.refused_cases([
            ("hf_gqa", {"sliding_window": 4096}, "'sliding_window' is 4096", "sliding-window attention"),
            ("hf_gqa", {"partial_rotary_factor": 0.5}, "'partial_rotary_factor' is 0.5"),
            ("hf_gqa", {"rope_scaling": {"rope_type": "llama3", "factor": 8.0}}, "'rope_scaling'"),
            ("hf_gqa", {"attention_bias": True}, "'attention_bias' is true"),
            ("hf_gqa", {"mlp_bias": True}, "'mlp_bias' is true"),
        ])
        self.refused(self.edited("meta_params", {"use_scaled_rope": True}, file="params.json"),
                     "params.json: 'use_scaled_rope' is true")

    def test_neutral_values_convert(self):
        src = self.edited("hf_gqa", {"sliding_window": None, "partial_rotary_factor": 1.0, "attention_bias": False,
                                     "mlp_bias": False, "rope_scaling": None})
        self.logits_match_reference(src, "hf_gqa")
        src = self.edited("meta_params", {"use_scaled_rope": False}, file="params.json")
        self.logits_match_reference(src, "meta_params")


class UnknownFamilies(FamilyConfigTest):
    def test_unknown_architecture_name(self):
        for name in ("gpt2_hub", "internlm2_gqa"):
            with self.subTest(fixture=name):
                self.refused(self.edited(name, {"architectures": ["BloomForCausalLM"]}),
                             "unknown architecture 'BloomForCausalLM' in config.json")

    def test_names_of_another_variant(self):
        # GPT-2 hub names forced to read as the prefixed layout: no layer is found under its names.
        src = fixture("gpt2_hub")
        p = run("convert", src, "-o", self.path("o"), "--arch", "gpt2/prefixed", timeout=30)
        self.assertEqual(p.returncode, 1, p.stderr)
        self.assertEqual(len(p.stderr.strip().splitlines()), 1, p.stderr)
        self.assertIn(src, p.stderr)


# ChatGLM families: each case is a fixture with one thing changed; convert must exit 1 with one line
# naming the source and the problem, and write nothing.
class FamilyBadInput(TempDirTest):
    FIXTURE = None  # the fixture directory each case starts from

    def variant(self, edit=None, state_dict=None):
        """A copy of FIXTURE with config.json passed through edit(config) (which changes it in place)
        and, if given, state_dict(sd) -> the state dict to save instead of the fixture's."""
        src = os.path.join(tempfile.mkdtemp(dir=self.tmp), "src")
        shutil.copytree(fixture(self.FIXTURE), src)
        if edit:
            with open(os.path.join(src, "config.json")) as f:
                config = json.load(f)
            edit(config)
            with open(os.path.join(src, "config.json"), "w") as f:
                json.dump(config, f)
        if state_dict:
            path = os.path.join(src, "pytorch_model.bin")
            torch.save(state_dict(torch.load(path, map_location="cpu")), path)
        return src

    def assert_refused(self, src, *needles, kind="error"):
        out = src + ".out"
        p = sf("convert", src, "-o", out, check=False)
        lines = p.stderr.splitlines()
        self.assertEqual(p.returncode, 1, p.stderr)
        self.assertEqual(len(lines), 1, p.stderr)
        self.assertTrue(lines[0].startswith(f"shardforge: {kind}: {src}"), lines[0])
        for n in needles:
            self.assertIn(n, lines[0])
        self.assertFalse(os.path.exists(out))
        shutil.rmtree(src)

    def refuses_config(self, cases):
        """cases: (description, edit, needles...) each refused with a line containing every needle."""
        for what, edit, *needles in cases:
            with self.subTest(what):
                self.assert_refused(self.variant(edit), *needles)


def setter(**values):
    return lambda c: c.update(values)


def remover(key):
    return lambda c: c.pop(key)


class ChatGLM6BBadInput(FamilyBadInput):
    FIXTURE = "chatglm_6b"  # hidden 64, 4 heads, 2 layers, vocab 300, inner 200

    def test_the_unmodified_fixture_converts(self):
        # Every case below changes one thing in this: it must itself be good.
        sf("convert", fixture(self.FIXTURE), "-o", self.path("ok"))

    def test_absurd_sizes(self):
        self.refuses_config([
            ("zero width", setter(hidden_size=0), "'hidden_size'", "is 0"),
            ("negative width", setter(hidden_size=-64), "'hidden_size'", "is -64"),
            ("zero heads", setter(num_attention_heads=0), "'num_attention_heads'", "is 0"),
            ("10^12 layers", setter(num_layers=10 ** 12), "'num_layers'", "1000000000000"),
            ("negative ffn", setter(inner_hidden_size=-1), "'inner_hidden_size'", "is -1"),
            ("width beyond int64", setter(hidden_size=2 ** 63), "'hidden_size'", "beyond 64-bit"),
            ("fractional width", setter(hidden_size=64.5), "'hidden_size'", "not an integer"),
            ("zero epsilon", setter(layernorm_epsilon=0), "'layernorm_epsilon'", "outside"),
            ("string epsilon", setter(layernorm_epsilon="1e-5"), "'layernorm_epsilon'", "not a number"),
            ("negative context", setter(max_sequence_length=-5), "'max_sequence_length'", "is -5"),
        ])

    def test_contradicting_values(self):
        self.refuses_config([
            ("width not divisible by heads", setter(num_attention_heads=5), "'hidden_size' (64)",
             "'num_attention_heads' (5)"),
            ("head too narrow for 2-D RoPE", setter(num_attention_heads=32), "divisible by 4"),
            ("vocabulary vs embedding", setter(vocab_size=301), "vocab_size is 301",
             "transformer.word_embeddings.weight has 300 rows"),
            ("more layers than tensors", setter(num_layers=3), "3 layers", "holds 2"),
            ("fewer layers than tensors", setter(num_layers=1), "1 layers", "holds 2"),
            ("ffn width vs tensors", setter(inner_hidden_size=256), "dense_h_to_4h", "[256, 64]"),
            ("special token outside the vocabulary", setter(gmask_token_id=300), "'gmask_token_id'", "outside"),
            ("negative special token", setter(mask_token_id=-2), "'mask_token_id'", "outside"),
            ("missing <sop> id", remover("bos_token_id"), "'bos_token_id'", "missing"),
        ])
        # Stated untied, but the output projection is not in the checkpoint.
        src = self.variant(setter(tie_word_embeddings=False), lambda sd: {k: v for k, v in sd.items() if k != "lm_head.weight"})
        self.assert_refused(src, "tie_word_embeddings is false", "lm_head.weight")

    def test_unsupported_settings(self):
        self.refuses_config([
            ("1-D positions", setter(position_encoding_2d=False), "'position_encoding_2d'", "not supported"),
            ("ChatGLM's own quantized weights", setter(quantization_bit=4), "'quantization_bit'"),
            ("P-tuning prefix", setter(pre_seq_len=128), "'pre_seq_len'"),
        ])

    def test_ambiguous_family(self):
        # ChatGLM-6B tensors with a ChatGLM2/3 configuration field.
        self.refuses_config([("ChatGLM2 field", setter(padded_vocab_size=300), "'padded_vocab_size'", "ambiguous")])
        # Both generations' tensors in one checkpoint.
        extra = "transformer.encoder.layers.0.self_attention.query_key_value.weight"
        src = self.variant(state_dict=lambda sd: {**sd, extra: torch.zeros(3, 64)})
        self.assert_refused(src, "ambiguous", "chatglm/hf", "chatglm2/hf")


class ChatGLM2BadInput(FamilyBadInput):
    FIXTURE = "chatglm2_6b"  # hidden 64, 4 heads, 2 k/v groups, kv_channels 16, 2 layers, vocab 300

    def test_the_unmodified_fixture_converts(self):
        sf("convert", fixture(self.FIXTURE), "-o", self.path("ok"))

    def test_absurd_sizes(self):
        self.refuses_config([
            ("zero width", setter(hidden_size=0), "'hidden_size'", "is 0"),
            ("10^12 layers", setter(num_layers=10 ** 12), "'num_layers'", "1000000000000"),
            ("zero groups", setter(multi_query_group_num=0), "'multi_query_group_num'", "is 0"),
            ("negative head width", setter(kv_channels=-16), "'kv_channels'", "is -16"),
            ("zero ffn", setter(ffn_hidden_size=0), "'ffn_hidden_size'", "is 0"),
            ("zero vocabulary", setter(padded_vocab_size=0), "'padded_vocab_size'", "is 0"),
            ("zero rope_ratio", setter(rope_ratio=0), "'rope_ratio'", "positive"),
            ("negative rope_ratio", setter(rope_ratio=-50), "'rope_ratio'", "positive"),
            ("string rope_ratio", setter(rope_ratio="50"), "'rope_ratio'", "not a number"),
            ("overflowing rope_ratio", setter(rope_ratio=1e305), "'rope_ratio'", "not a finite number"),
            ("huge width", setter(hidden_size=2 ** 40), "vocab_size x d_model"),
        ])

    def test_contradicting_values(self):
        self.refuses_config([
            ("heads not a multiple of groups", setter(multi_query_group_num=3), "'num_attention_heads' (4)",
             "'multi_query_group_num' (3)"),
            ("head width not divisible by 4", setter(kv_channels=18), "'kv_channels' (18)"),
            ("head width vs tensors", setter(kv_channels=32), "query_key_value.weight", "[256, 64]"),
            ("vocabulary vs embedding", setter(padded_vocab_size=512), "padded_vocab_size is 512",
             "transformer.embedding.word_embeddings.weight has 300 rows"),
            ("more layers than tensors", setter(num_layers=3), "3 layers", "holds 2"),
            ("missing kv_channels", remover("kv_channels"), "'kv_channels'", "missing"),
            ("missing group count", remover("multi_query_group_num"), "'multi_query_group_num'", "missing"),
            # add_bias_linear asks for biases this checkpoint does not have.
            ("biases the tensors lack", setter(add_bias_linear=True), "missing tensor", "dense.bias"),
            # rmsnorm false asks for LayerNorm biases.
            ("LayerNorm without its bias", setter(rmsnorm=False), "missing tensor", "input_layernorm.bias"),
        ])

    def test_unsupported_settings(self):
        self.refuses_config([
            ("per-head fused q/k/v", setter(multi_query_attention=False), "'multi_query_attention' false"),
            ("multi_query_attention absent (false in the original)", remover("multi_query_attention"),
             "'multi_query_attention' false", "default"),
            ("no final norm", setter(post_layer_norm=False), "'post_layer_norm' false"),
            ("ChatGLM2-6B-32k position interpolation",
             setter(rope_ratio=16, _name_or_path="THUDM/chatglm2-6b-32k"), "'rope_ratio'", "divides the positions"),
            ("ChatGLM's own quantized weights", setter(quantization_bit=8), "'quantization_bit'"),
            ("P-tuning prefix", setter(pre_seq_len=64), "'pre_seq_len'"),
        ])

    def test_ambiguous_family(self):
        self.refuses_config([
            ("ChatGLM-6B field", setter(inner_hidden_size=200), "'inner_hidden_size'", "ambiguous"),
            ("ChatGLM-6B special token", setter(gmask_token_id=291), "'gmask_token_id'", "ambiguous"),
        ])
        extra = "transformer.layers.0.attention.query_key_value.weight"
        src = self.variant(state_dict=lambda sd: {**sd, extra: torch.zeros(3, 64)})
        self.assert_refused(src, "ambiguous", "chatglm/hf", "chatglm2/hf")

if __name__ == "__main__":
    import unittest
    unittest.main()
