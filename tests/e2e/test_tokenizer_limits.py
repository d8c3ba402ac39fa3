"""Where shardforge's tokenizers stop, and what the commands do there (review round 6): ids a model
has rows for but its tokenizer no piece (shown as nothing, one warning, never fatal); ChatGLM
families, whose original tokenizers do more than their SentencePiece file (no tokenizer is taken,
--tokenizer is refused, text commands say to use --ids); tokenizer directories searched for every
kind; `run` on an artifact without a tokenizer printing its JSON. References: Python's
sentencepiece for text, the model weights built so the generated ids are known."""
import json
import os
import shutil
import subprocess
import sys
import unittest

import torch

from sftest import (HELDOUT, ROOT, SAMPLE, SF, TempDirTest, fixture, read_json, reseal, sf, sf_json, write_bytes,
                    write_json, write_padded_llama)

sys.path.insert(0, os.path.join(ROOT, "tests", "fixtures"))
import chatglm2_ref  # noqa: E402
import chatglm_ref  # noqa: E402
import make_fixtures  # noqa: E402

SAMPLE_TOKENIZER = os.path.join(SAMPLE, "tokenizer.model")  # SentencePiece, 512 pieces


def sentencepiece():
    try:
        import sentencepiece as spm
    except ImportError:
        raise unittest.SkipTest("Python's sentencepiece is needed as the reference tokenizer")
    return spm.SentencePieceProcessor(model_file=SAMPLE_TOKENIZER)


def one_line(test, p, code, kind, *needles):
    test.assertEqual(p.returncode, code, p.stderr)
    lines = p.stderr.splitlines()
    test.assertEqual(len(lines), 1, p.stderr)
    test.assertTrue(lines[0].startswith(f"shardforge: {kind}: "), p.stderr)
    for n in needles:
        test.assertIn(n, lines[0])
    return lines[0]


class SentencePiecePaddedVocabulary(TempDirTest):
    """A LLaMA with 520 rows read through the sample's 512-piece SentencePiece model: ids 512..519
    have no piece."""

    def setUp(self):
        super().setUp()
        self.sp = sentencepiece()
        self.word = self.sp.piece_to_id("\u2581the")  # a piece with a leading space
        src = write_padded_llama(self.path("src"), 520, [self.word, 515])
        self.art = self.path("art")
        sf("convert", src, "-o", self.art, "--tokenizer", SAMPLE_TOKENIZER)

    def test_a_prompt_ending_with_an_id_without_a_piece(self):
        # The reviewer's case: it failed before the first token, blaming "the generated ids".
        p = sf("run", self.art, "--ids", "403,407,515", "-n", 4)
        # Greedy: the first of the tie. The text follows 407, the prompt's last id with a piece.
        after = self.sp.decode([407])
        self.assertEqual(p.stdout, self.sp.decode([407] + [self.word] * 4)[len(after):] + "\n")
        self.assertTrue(p.stdout.startswith(" "), p.stdout)
        self.assertEqual(p.stderr, "")

    def test_generated_ids_without_a_piece_show_as_nothing(self):
        args = ["run", self.art, "-p", "hello", "-n", 24, "--temp", 1, "--seed", 5, "--ignore-eos"]
        p = sf(*args, "--json")
        r = json.loads(p.stdout)
        self.assertEqual(set(r["ids"]), {self.word, 515})
        known = [i for i in r["ids"] if i < 512]
        self.assertEqual(r["text"], self.sp.decode(known))
        warning = (f"shardforge: warning: {self.art}: {r['ids'].count(515)} generated token(s) have no piece in the "
                   "tokenizer (512 pieces; the first: id 515)")
        one_line(self, p, 0, "warning")
        self.assertTrue(p.stderr.startswith(warning), p.stderr)
        streamed = sf(*args)
        # The streamed pieces follow the prompt's last token, so no leading space is lost.
        self.assertEqual(streamed.stdout, "hello" + self.sp.decode(self.sp.encode("hello") + known)[5:] + "\n")
        one_line(self, streamed, 0, "warning")
        self.assertTrue(streamed.stderr.startswith(warning), streamed.stderr)


def chatglm_source(out, generation, tokenizer_name):
    """A tiny ChatGLM-6B (generation 1) or ChatGLM2 (2) of 520 ids, so the sample's 512-piece
    tokenizer would fit it, with that tokenizer beside it under the name the release uses."""
    if generation == 1:
        model = chatglm_ref.ChatGLM6B(chatglm_ref.GLMConfig(
            vocab_size=520, hidden_size=16, num_attention_heads=2, num_layers=1, inner_hidden_size=32,
            max_sequence_length=64, mask_token_id=512, gmask_token_id=513, bos_token_id=514, eos_token_id=515,
            pad_token_id=3))
    else:
        model = chatglm2_ref.ChatGLM2(chatglm2_ref.GLM2Config(
            padded_vocab_size=520, hidden_size=16, num_attention_heads=2, num_layers=1, kv_channels=8,
            multi_query_group_num=1, ffn_hidden_size=24, seq_length=64))
    make_fixtures.init_family_weights(model, 7)
    os.makedirs(out)
    torch.save(model.state_dict(), os.path.join(out, "pytorch_model.bin"))
    write_json(os.path.join(out, "config.json"), model.hf_config())
    if tokenizer_name:
        shutil.copy(SAMPLE_TOKENIZER, os.path.join(out, tokenizer_name))
    return out


class ChatGLMHasNoTokenizer(TempDirTest):
    CASES = [("chatglm", 1, "ice_text.model", "20000"), ("chatglm2", 2, "tokenizer.model", "[gMASK] sop")]

    def test_convert_leaves_the_tokenizer_beside_the_checkpoint(self):
        for family, generation, name, why in self.CASES:
            with self.subTest(family=family):
                src = chatglm_source(self.path(family), generation, name)
                self.assertIsNone(sf_json("inspect", src)["tokenizer"])
                art = self.path(family + ".art")
                p = sf("convert", src, "-o", art)
                one_line(self, p, 0, "warning", "no tokenizer", os.path.join(src, name) + " beside it is not taken",
                         why, "run --ids")
                self.assertIsNone(read_json(os.path.join(art, "manifest.json"))["tokenizer"])
                self.assertEqual(sorted(f for f in os.listdir(art) if f.endswith(".model")), [])
                # Without a tokenizer beside it: the same reason, not "pass --tokenizer".
                bare = chatglm_source(self.path(family + "-bare"), generation, None)
                p = sf("convert", bare, "-o", self.path(family + "-bare.art"))
                line = one_line(self, p, 0, "warning", "no tokenizer", why, "run --ids")
                self.assertNotIn("--tokenizer", line)

    def test_tokenizer_option_is_refused_before_anything_is_written(self):
        for family, generation, name, why in self.CASES:
            with self.subTest(family=family):
                src = chatglm_source(self.path(family), generation, None)
                out = self.path(family + ".art")
                p = sf("convert", src, "-o", out, "--tokenizer", SAMPLE_TOKENIZER, check=False)
                one_line(self, p, 1, "error", SAMPLE_TOKENIZER, f"--tokenizer is not supported for {family} models",
                         why, "run --ids")
                self.assertEqual([f for f in os.listdir(self.tmp) if f.startswith(family + ".")], [])

    def test_text_commands_say_to_use_ids(self):
        for family, generation, name, why in self.CASES:
            with self.subTest(family=family):
                src = chatglm_source(self.path(family), generation, name)
                art = self.path(family + ".art")
                sf("convert", src, "-o", art)
                one_line(self, sf("run", art, "-p", "hello", "-n", 1, check=False), 1, "error",
                         f"{art}: artifact has no tokenizer", why, "--ids")
                one_line(self, sf("eval", "ppl", art, "--text", HELDOUT, check=False), 1, "error",
                         f"{art}: artifact has no tokenizer", why, "run --ids")
                keep = self.path(family + ".keep")
                one_line(self, sf("compare", src, "--text", HELDOUT, "--schemes", "f32", "--keep", keep, check=False),
                         1, "error", "compare needs a tokenizer", why, "run --ids")
                self.assertFalse(os.path.exists(keep))
                self.assertEqual(sf_json("run", art, "--ids", "5,6,513,514", "-n", 2)["prompt_ids"], [5, 6, 513, 514])

    def test_a_tokenizer_an_earlier_shardforge_stored_is_not_used(self):
        # Earlier versions took tokenizer.model beside a ChatGLM checkpoint and framed -p with BOS.
        src = chatglm_source(self.path("glm"), 1, None)
        art = self.path("art")
        sf("convert", src, "-o", art)
        shutil.copy(SAMPLE_TOKENIZER, os.path.join(art, "tokenizer.model"))
        m = read_json(os.path.join(art, "manifest.json"))
        m["tokenizer"] = {"kind": "sentencepiece", "files": [{"name": "tokenizer.model", "sha256": ""}]}
        m["files"].append({"path": "tokenizer.model"})
        write_json(os.path.join(art, "manifest.json"), m)
        reseal(art)
        self.assertEqual(sf_json("verify", art)["ok"], True)  # a valid artifact, just not read as text
        p = sf("run", art, "-p", "hello", "-n", 1, check=False)
        self.assertEqual(p.returncode, 1, p.stderr)
        warning, error = p.stderr.splitlines()
        self.assertIn(f"shardforge: warning: {art}: its tokenizer is not used", warning)
        self.assertIn("artifact has no tokenizer", error)
        self.assertIn("--ids", error)
        p = sf("run", art, "--ids", "5,513,514", "-n", 2)
        self.assertEqual(json.loads(p.stdout)["prompt_ids"], [5, 513, 514])  # JSON: there is no text to show
        one_line(self, p, 0, "warning", "its tokenizer is not used")


class TokenizerDirectories(TempDirTest):
    def test_a_directory_holding_a_sentencepiece_model(self):
        d = self.path("tok")
        os.makedirs(d)
        shutil.copy(SAMPLE_TOKENIZER, d)
        art = self.path("art")
        sf("convert", SAMPLE, "-o", art, "--tokenizer", d)
        self.assertEqual(read_json(os.path.join(art, "manifest.json"))["tokenizer"]["kind"], "sentencepiece")

    def test_a_directory_holding_several_kinds_or_none(self):
        d = self.path("tok")
        os.makedirs(d)
        one_line(self, sf("convert", SAMPLE, "-o", self.path("a"), "--tokenizer", d, check=False), 1, "error",
                 f"{d}: holds no tokenizer", "tokenizer.model", "vocab.json and merges.txt")
        shutil.copy(SAMPLE_TOKENIZER, d)
        write_bytes(os.path.join(d, "vocab.json"), "{}")
        write_bytes(os.path.join(d, "merges.txt"), "")
        one_line(self, sf("convert", SAMPLE, "-o", self.path("a"), "--tokenizer", d, check=False), 1, "error",
                 f"{d}: holds several tokenizers", "tokenizer.model (sentencepiece)",
                 "vocab.json and merges.txt (gpt2_bpe)")
        self.assertFalse(os.path.exists(self.path("a")))


class RunWithoutTokenizer(TempDirTest):
    def test_prints_the_json_object_without_text(self):
        art = self.path("art")
        sf("convert", fixture("hf_gqa"), "-o", art)  # no tokenizer beside it
        plain = sf("run", art, "--ids", "1,2", "-n", 3)
        r = json.loads(plain.stdout)
        self.assertEqual(r, sf_json("run", art, "--ids", "1,2", "-n", 3))
        self.assertEqual(sorted(r), ["ids", "prompt_ids"])
        self.assertEqual(len(r["ids"]), 3)


if __name__ == "__main__":
    unittest.main()
