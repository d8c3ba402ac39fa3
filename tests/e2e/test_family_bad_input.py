"""Bad input for the non-LLaMA families (issue 6, item 6): absurd or contradicting config.json
values, a layer count or vocabulary the tensors disagree with, an ambiguous family. Each case is a
family fixture with one thing changed; conversion must exit 1 with one line naming the source and
the problem, and write nothing. One class per family: add a family by adding a class."""
import json
import os
import shutil
import tempfile

import torch

from sftest import TempDirTest, fixture, sf


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
