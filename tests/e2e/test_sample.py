"""The bundled sample: it is a real trained model, and the executor agrees with PyTorch on it."""
import os
import sys
import unittest

import torch

from sftest import HELDOUT, ROOT, SAMPLE, TempDirTest, read_bytes, read_json, sf, sf_json

sys.path.insert(0, os.path.join(ROOT, "tests", "fixtures"))
from llama_ref import Config, HFLlama, windowed_ppl  # noqa: E402



class Sample(TempDirTest):
    def test_heldout_perplexity_matches_pytorch_and_is_far_below_vocab(self):
        out = self.path("f32")
        sf("convert", SAMPLE, "-o", out)
        r = sf_json("eval", "ppl", out, "--text", HELDOUT, "--ctx", 128, "--chunks", 60)
        vocab = read_json(os.path.join(SAMPLE, "config.json"))["vocab_size"]
        self.assertLess(r["ppl"], vocab / 10, "the sample does not look trained")

        import sentencepiece as spm
        c = read_json(os.path.join(SAMPLE, "config.json"))
        cfg = Config(vocab_size=c["vocab_size"], dim=c["hidden_size"], n_layers=c["num_hidden_layers"],
                     n_heads=c["num_attention_heads"], n_kv_heads=c["num_key_value_heads"],
                     ffn_dim=c["intermediate_size"], norm_eps=c["rms_norm_eps"], rope_theta=c["rope_theta"],
                     tied=c["tie_word_embeddings"])
        model = HFLlama(cfg)
        model.load_state_dict(torch.load(os.path.join(SAMPLE, "pytorch_model.bin")))
        model.eval()
        sp = spm.SentencePieceProcessor(model_file=os.path.join(SAMPLE, "tokenizer.model"))
        ref = windowed_ppl(model, sp.encode(read_bytes(HELDOUT).decode("utf-8")), 128, chunks=60)
        self.assertEqual(r["tokens_scored"], ref["tokens_scored"])
        self.assertLess(abs(r["ppl"] / ref["ppl"] - 1), 0.001, f"{r['ppl']} vs PyTorch {ref['ppl']}")
        self.assertLess(abs(r["ppl_stderr"] / ref["ppl_stderr"] - 1), 0.01)

    def test_sample_is_small_enough(self):
        total = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(os.path.join(ROOT, "samples"))
                    for f in fs if "__pycache__" not in d)
        self.assertLess(total, 10 * 1024 * 1024)


if __name__ == "__main__":
    unittest.main()
