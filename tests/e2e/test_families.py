"""ChatGLM-6B, ChatGLM2/3-6B, InternLM2 and GPT-2 convert from their published layouts, and the
artifacts compute what the independent PyTorch references (tests/fixtures/*_ref.py) compute.
The references' own consistency is checked by test_family_refs.py, which needs no binary."""
import os
import unittest

import numpy as np
import torch

from family_refs import EXPECT, FIXTURES, load_fixture
from sftest import TempDirTest, convert_and_logits, fixture, read_json, sf, sf_json

# Relative bounds on the largest logit error of a quantized artifact, as test_models.py uses.
QUANT_BOUNDS = {"int8": 0.05, "int4:g32": 0.35}


class FamilyFixtures(TempDirTest):
    def convert_and_logits(self, name, *extra):
        return convert_and_logits(self, name, *extra)

    def test_f32_logits_and_greedy_match_pytorch(self):
        for name in FIXTURES:
            with self.subTest(model=name):
                ref, got, rows, want, out = self.convert_and_logits(name)
                tol = 1e-4 * float(np.abs(want).max())
                err = float(np.abs(rows[: len(want)] - want).max())
                self.assertLessEqual(err, tol, f"{name}: max logit error {err:.3g} > {tol:.3g}")
                self.assertEqual(got["ids"], ref["greedy"], f"{name}: greedy tokens differ from PyTorch")
                # The rows of the generated positions too (positions, masks and caches during
                # generation), against the reference run over prompt + continuation.
                model = load_fixture(name)[0]
                seq = ref["prompt_ids"] + ref["greedy"][:-1]
                with torch.no_grad():
                    full = model(torch.tensor([seq]))[0].numpy()
                self.assertEqual(rows.shape, full.shape)
                err = float(np.abs(rows - full).max())
                tol = 1e-4 * float(np.abs(full).max())
                self.assertLessEqual(err, tol, f"{name}: max logit error over the continuation {err:.3g} > {tol:.3g}")
                info = sf_json("inspect", out)
                family, tied = EXPECT[name]
                self.assertEqual(info["source"]["architecture"].split("/")[0], family)
                self.assertEqual(info["model"]["tied_embeddings"], tied)

    def test_source_inspect_names_the_family(self):
        # Before conversion too: the checkpoint directory itself is recognised.
        for name in FIXTURES:
            with self.subTest(model=name):
                info = sf_json("inspect", fixture(name))
                self.assertEqual(info["architecture"].split("/")[0], EXPECT[name][0])
                self.assertEqual(info["model"]["tied_embeddings"], EXPECT[name][1])

    def test_quantized_artifacts_stay_close(self):
        for name in FIXTURES:
            for scheme, bound in QUANT_BOUNDS.items():
                with self.subTest(model=name, scheme=scheme):
                    ref, got, rows, want, out = self.convert_and_logits(name, "--quant", scheme)
                    rel = float(np.abs(rows[: len(want)] - want).max() / np.abs(want).max())
                    self.assertLess(rel, bound, f"{name} {scheme}: relative logit error {rel:.3f}")
                    self.assertEqual(len(got["ids"]), 32)


if __name__ == "__main__":
    unittest.main()
