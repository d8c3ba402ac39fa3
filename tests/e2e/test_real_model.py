"""The real pretrained stories260K (../shared): reproduce the independent PyTorch figures."""
import os
import unittest

from sftest import CORPUS, STORIES, TempDirTest, need_stories, sf, sf_json

GREEDY = [432, 383, 286, 261, 376, 298, 315, 421, 395, 317, 426, 338, 401, 396, 267, 337, 410, 408, 419, 292,
          411, 322, 265, 282, 295, 433, 426, 385, 328, 432, 358, 394]
# (text, ctx, chunks or None, windows, tokens scored, reference PPL) from ../shared/README.md
FIGURES = [
    ("tinystories_valid_head.txt", 256, None, 1535, 196480, 4.8690),
    ("tinystories_valid_head.txt", 256, 200, 200, 25600, 3.9174),
    ("tinystories_valid_head.txt", 128, 200, 200, 12800, 4.0357),
    ("tinystories_sample.txt", 128, None, 14, 896, 6.6756),
    ("wikitext2_test_tokenized.txt", 256, 100, 100, 12800, 227.58),
]


class RealModel(TempDirTest):
    @classmethod
    def setUpClass(cls):
        need_stories()

    def convert(self, *extra):
        out = self.path("stories" + "_".join(extra).replace(":", "_"))
        sf("convert", os.path.join(STORIES, "stories260K.pt"), "-o", out,
           "--tokenizer", os.path.join(STORIES, "tok512.model"), *extra)
        return out

    def test_onnx_export_reproduces_the_reference_perplexity(self):
        onnx = os.path.join(STORIES, "stories260K.onnx")
        if not os.path.exists(onnx):
            self.skipTest(f"{onnx} not found")
        out = self.path("stories_onnx")
        sf("convert", onnx, "-o", out, "--tokenizer", os.path.join(STORIES, "tok512.model"))
        r = sf_json("eval", "ppl", out, "--text", os.path.join(CORPUS, "tinystories_valid_head.txt"), "--ctx", 256,
                    "--chunks", 200)
        self.assertEqual(r["tokens_scored"], 25600)
        self.assertLess(abs(r["ppl"] / 3.9174 - 1), 0.001, f"PPL {r['ppl']} vs reference 3.9174")

    def test_f32_reproduces_reference_perplexities(self):
        out = self.convert()
        for text, ctx, chunks, windows, scored, ppl in FIGURES:
            with self.subTest(text=text, ctx=ctx, chunks=chunks):
                args = ["eval", "ppl", out, "--text", os.path.join(CORPUS, text), "--ctx", ctx]
                if chunks:
                    args += ["--chunks", chunks]
                r = sf_json(*args)
                self.assertEqual(r["windows"], windows)
                self.assertEqual(r["tokens_scored"], scored)
                self.assertLess(abs(r["ppl"] / ppl - 1), 0.001, f"PPL {r['ppl']} vs reference {ppl}")
                self.assertGreater(r["ppl_stderr"], 0)

    def test_greedy_continuation_matches(self):
        out = self.convert()
        r = sf_json("run", out, "-p", "Once upon a time", "-n", 32)
        self.assertEqual(r["prompt_ids"], [1, 403, 407, 261, 378])
        self.assertEqual(r["ids"], GREEDY)
        self.assertTrue(r["text"].startswith(", there was a little girl named Lily."))

    def test_quantized_schemes_stay_close(self):
        text = os.path.join(CORPUS, "tinystories_valid_head.txt")
        base = 3.9174
        for scheme, bound in [("f16", 0.001), ("bf16", 0.002), ("int8", 0.01), ("int4:g32", 0.15), ("int4:g128", 0.25)]:
            with self.subTest(scheme=scheme):
                out = self.convert("--quant", scheme)
                r = sf_json("eval", "ppl", out, "--text", text, "--ctx", 256, "--chunks", 200)
                self.assertLess(abs(r["ppl"] / base - 1), bound, f"{scheme}: PPL {r['ppl']}")

    def test_tied_embedding_is_stored_once(self):
        out = self.convert()
        info = sf_json("inspect", out)
        self.assertTrue(info["model"]["tied_embeddings"])
        self.assertNotIn("head.output.weight", {t["name"] for t in info["tensors"]})


if __name__ == "__main__":
    unittest.main()
