"""GPT-2 byte-level BPE end to end: a tiny model with GPT-2's 50257-token vocabulary converted with
the real vocab.json / merges.txt (../shared/tokenizers), run on prompts whose ids must equal an
independent Python tokenizer's (gpt2_reference.py), and the artifact's tokenizer checked by verify,
eval and kld."""
import hashlib
import json
import os
import shutil
import subprocess
import unittest

from gpt2_reference import Gpt2Reference
from sftest import (CORPUS, SAMPLE, SF, SHARED, TempDirTest, read_bytes, read_json, sf, sf_json,
                    write_meta_checkpoint, write_padded_llama)

VOCAB = os.path.join(SHARED, "tokenizers", "gpt2_vocab.json")
MERGES = os.path.join(SHARED, "tokenizers", "gpt2_merges.txt")

# Scripts, numbers and spaces the corpora lack (all in Unicode 14, which Python 3.11 knows).
MIXED = ("Ünïcödé façade — naïve coöperation; ΑΒΓ αβγ; Привет, мир! 你好，世界。 こんにちは 안녕하세요 "
         "مرحبا ١٢٣ ٤٥٦ हिन्दी ३२ Ⅻ ½ ² 🦙🦙 👩\u200d💻 e\u0301 \u00a0nbsp\u3000ideographic\u2028line "
         "tabs\t\tand  spaces   \n\n\r\n trailing  ")


def need_gpt2_files():
    if not (os.path.exists(VOCAB) and os.path.exists(MERGES)):
        raise unittest.SkipTest(f"GPT-2 tokenizer files not found at {VOCAB}: ../shared is absent, skipping")


class Gpt2Tokenizer(TempDirTest):
    @classmethod
    def setUpClass(cls):
        need_gpt2_files()
        cls.ref = Gpt2Reference(VOCAB, MERGES)
        cls.root = os.path.realpath(os.path.join(os.environ.get("TMPDIR", "/tmp"), f"sf-gpt2-{os.getpid()}"))
        cls.src = write_meta_checkpoint(os.path.join(cls.root, "src"), d=16, ffn=32, layers=1, vocab=50257)
        cls.art = os.path.join(cls.root, "art")
        sf("convert", cls.src, "-o", cls.art, "--tokenizer", VOCAB)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.root, ignore_errors=True)

    def prompt_ids(self, text, art=None):
        return sf_json("run", art or self.art, "--prompt", text, "-n", 0)["prompt_ids"]

    def test_the_reference_agrees_with_published_encodings(self):
        # tiktoken's tests and llama.cpp's Hugging Face vectors (tests/unit/data/gpt2_encodings.json).
        self.assertEqual(self.ref.encode("hello world"), [31373, 995])
        self.assertEqual(self.ref.encode("hello <|endoftext|>"), [31373, 220, 50256])
        self.assertEqual(self.ref.encode("   Hello"), [220, 220, 18435])

    def test_run_shows_the_prompt_ids_and_verify_passes(self):
        r = sf_json("run", self.art, "--prompt", "hello world", "-n", 2)
        self.assertEqual(r["prompt_ids"], [31373, 995])  # no BOS before a GPT-2 prompt
        self.assertEqual(len(r["ids"]), 2)
        p = sf("verify", self.art)
        self.assertIn("OK", p.stdout)

    def test_streamed_text_is_the_decoded_ids(self):
        ids = sf_json("run", self.art, "--prompt", "Once upon a time", "-n", 12, "--ignore-eos")["ids"]
        # Raw bytes: a piece may end inside a UTF-8 character.
        out = subprocess.run([SF, "run", self.art, "--prompt", "Once upon a time", "-n", "12", "--ignore-eos"],
                             capture_output=True, check=True).stdout
        self.assertEqual(out, b"Once upon a time" + self.ref.decode(ids) + b"\n")

    def test_manifest_records_the_kind_and_both_files(self):
        m = read_json(os.path.join(self.art, "manifest.json"))
        sha = lambda p: hashlib.sha256(read_bytes(p)).hexdigest()
        self.assertEqual(m["tokenizer"], {"kind": "gpt2_bpe", "files": [{"name": "vocab.json", "sha256": sha(VOCAB)},
                                                                         {"name": "merges.txt", "sha256": sha(MERGES)}]})
        self.assertEqual(read_bytes(os.path.join(self.art, "vocab.json")), read_bytes(VOCAB))
        self.assertEqual(read_bytes(os.path.join(self.art, "merges.txt")), read_bytes(MERGES))

    def test_prompt_ids_equal_the_independent_reference(self):
        sample = read_bytes(os.path.join(CORPUS, "tinystories_sample.txt")).decode("utf-8")  # has <|endoftext|>
        wiki = read_bytes(os.path.join(CORPUS, "wikitext2_test_tokenized.txt")).decode("utf-8")
        stories = read_bytes(os.path.join(CORPUS, "tinystories_valid_head.txt")).decode("utf-8")
        for name, text in [("tinystories_sample", sample), ("wikitext2 head", wiki[:6000]),
                           ("tinystories_valid middle", stories[400000:404000]), ("mixed scripts", MIXED)]:
            with self.subTest(text=name):
                want = self.ref.encode(text)
                self.assertGreater(len(want), 10)
                self.assertEqual(self.prompt_ids(text), want)

    def test_found_beside_the_checkpoint(self):
        src = self.path("src")
        shutil.copytree(self.src, src)
        shutil.copy(VOCAB, os.path.join(src, "vocab.json"))
        shutil.copy(MERGES, os.path.join(src, "merges.txt"))
        self.assertEqual(sf_json("inspect", src)["tokenizer"], os.path.join(src, "vocab.json"))
        p = sf("convert", src, "-o", self.path("a"))
        self.assertNotIn("tokenizer", p.stderr)
        self.assertEqual(read_json(os.path.join(self.path("a"), "manifest.json"))["tokenizer"]["kind"], "gpt2_bpe")
        # A SentencePiece model beside it stays preferred.
        shutil.copy(os.path.join(SAMPLE, "tokenizer.model"), os.path.join(src, "tokenizer.model"))
        self.assertEqual(sf_json("inspect", src)["tokenizer"], os.path.join(src, "tokenizer.model"))

    def test_eval_and_kld_read_the_kind_the_artifact_has(self):
        text = self.path("text.txt")
        with open(text, "w") as f:
            f.write(read_bytes(os.path.join(CORPUS, "tinystories_sample.txt")).decode("utf-8"))
        r = sf_json("eval", "ppl", self.art, "--text", text, "--ctx", 32, "--chunks", 4)
        self.assertEqual(r["text_tokens"], len(self.ref.encode(read_bytes(text).decode("utf-8"))))
        q = self.path("q")
        sf("convert", self.src, "-o", q, "--tokenizer", VOCAB, "--quant", "int8")
        k = sf_json("eval", "kld", q, "--ref", self.art, "--text", text, "--ctx", 32, "--chunks", 4)
        self.assertGreaterEqual(k["kld"], 0)
        # The same model read through another tokenizer: kld refuses to compare.
        sp = self.path("sp")
        sf("convert", self.src, "-o", sp, "--tokenizer", os.path.join(SAMPLE, "tokenizer.model"))
        p = sf("eval", "kld", sp, "--ref", self.art, "--text", text, "--ctx", 32, "--chunks", 4, check=False)
        self.assertEqual(p.returncode, 1, p.stderr)
        self.assertIn("tokenizer differs", p.stderr)

    def test_damaged_tokenizer_files_in_the_artifact(self):
        art = self.path("art")
        shutil.copytree(self.art, art)
        with open(os.path.join(art, "merges.txt"), "ab") as f:
            f.write(b"no such-token\n")
        p = sf("verify", art, check=False)
        self.assertEqual(p.returncode, 1)
        self.assertIn("merges.txt: size", p.stderr)
        p = sf("run", art, "--prompt", "hi", "-n", 1, check=False)
        self.assertEqual(p.returncode, 1, p.stderr)
        self.assertEqual(len(p.stderr.strip().splitlines()), 1, p.stderr)
        self.assertIn("merges.txt: line 50001", p.stderr)



class PaddedVocabulary(TempDirTest):
    """nanoGPT's GPT-2 has 50304 rows for the tokenizer's 50257 pieces, and may generate one of the
    47 without a piece: it shows as nothing, with one warning at the end, and never stops the run."""

    def setUp(self):
        super().setUp()
        need_gpt2_files()
        self.ref = Gpt2Reference(VOCAB, MERGES)
        # Every step picks " world" (995) or the padded id 50284, about evenly.
        src = write_padded_llama(self.path("src"), 50304, [995, 50284])
        self.art = self.path("art")
        sf("convert", src, "-o", self.art, "--tokenizer", VOCAB)

    def warning(self, stderr, count):
        lines = stderr.splitlines()
        self.assertEqual(len(lines), 1, stderr)
        self.assertTrue(lines[0].startswith(f"shardforge: warning: {self.art}: {count} generated token(s) have no "
                                            "piece in the tokenizer (50257 pieces; the first: id 50284)"), stderr)

    def test_generated_ids_without_a_piece_show_as_nothing(self):
        args = ["run", self.art, "-p", "hello", "-n", "24", "--temp", "1", "--seed", "16", "--ignore-eos"]
        p = sf(*args, "--json")
        r = json.loads(p.stdout)
        self.assertEqual(set(r["ids"]), {995, 50284})  # both, and nothing else
        known = [i for i in r["ids"] if i < 50257]
        self.assertEqual(r["text"], self.ref.decode(known).decode("utf-8"))
        self.warning(p.stderr, r["ids"].count(50284))
        streamed = subprocess.run([SF, *args], capture_output=True)
        self.assertEqual(streamed.returncode, 0, streamed.stderr)
        self.assertEqual(streamed.stdout, b"hello" + self.ref.decode(known) + b"\n")
        self.warning(streamed.stderr.decode(), r["ids"].count(50284))

    def test_a_prompt_ending_with_an_id_without_a_piece(self):
        # Greedy: 995 wins the tie. The prompt's last id is what the first piece follows.
        p = subprocess.run([SF, "run", self.art, "--ids", "31373,50284", "-n", "3"], capture_output=True)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(p.stdout, self.ref.decode([995, 995, 995]) + b"\n")
        self.assertEqual(p.stderr, b"")  # the prompt's ids are not shown: nothing to warn about


if __name__ == "__main__":
    unittest.main()
