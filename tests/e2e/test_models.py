"""Every fixture family converts, and the f32 artifact computes what PyTorch computes."""
import os
import unittest

import numpy as np

from sftest import TempDirTest, convert_and_logits, fixture, read_json, sf, sf_json

MODELS = ["hf_gqa", "hf_tied", "hf_sharded", "hf_bf16", "hf_f16", "meta_params", "meta_args_tied"]
EXPECT = {  # architecture variant and tying each fixture must be recognised as
    "hf_gqa": ("llama/hf", False), "hf_tied": ("llama/hf", True), "hf_sharded": ("llama/hf", False),
    "hf_bf16": ("llama/hf", False), "hf_f16": ("llama/hf", False), "meta_params": ("llama/meta", False),
    "meta_args_tied": ("llama/meta", True),
}


class ModelFixtures(TempDirTest):
    def convert_and_logits(self, name, *extra):
        ref, got, rows, want, out = convert_and_logits(self, name, *extra)
        return ref, got, rows[: len(want)], want, out

    def test_f32_logits_and_greedy_match_pytorch(self):
        for name in MODELS:
            with self.subTest(model=name):
                ref, got, logits, want, out = self.convert_and_logits(name)
                tol = 1e-4 * float(np.abs(want).max())
                err = float(np.abs(logits - want).max())
                self.assertLessEqual(err, tol, f"{name}: max logit error {err:.3g} > {tol:.3g}")
                self.assertEqual(got["ids"], ref["greedy"], f"{name}: greedy tokens differ from PyTorch")
                info = sf_json("inspect", out)
                self.assertEqual(info["source"]["architecture"], EXPECT[name][0])
                self.assertEqual(info["model"]["tied_embeddings"], EXPECT[name][1])

    def test_every_scheme_runs_and_stays_close(self):
        # Quantized artifacts must still track the f32 logits; the bound loosens with fewer bits.
        bounds = {"f16": 0.01, "bf16": 0.05, "int8": 0.05, "int4:g32": 0.35, "int4:g64:asym": 0.35,
                  "int4:g128": 0.5, "int4:g32:asym": 0.35}
        for scheme, bound in bounds.items():
            with self.subTest(scheme=scheme):
                ref, got, logits, want, out = self.convert_and_logits("meta_params", "--quant", scheme)
                rel = float(np.abs(logits - want).max() / np.abs(want).max())
                self.assertLess(rel, bound, f"{scheme}: relative logit error {rel:.3f}")
                self.assertEqual(len(got["ids"]), 32)

    def test_inspect_source_lists_canonical_tensors(self):
        info = sf_json("inspect", fixture("hf_gqa"))
        names = {t["name"] for t in info["tensors"]}
        self.assertIn("blocks.1.ffn.down.weight", names)
        self.assertIn("head.output.weight", names)
        self.assertEqual(info["model"]["n_kv_heads"], 2)
        self.assertEqual(info["model"]["ffn_dim"], 100)


if __name__ == "__main__":
    unittest.main()
