"""Where shardforge's tokenizers stop, and what the commands do there (review round 6): ids a model
has rows for but its tokenizer no piece (shown as nothing, one warning, never fatal); tokenizer
directories searched for every kind. References: Python's sentencepiece for text, the model
weights built so the generated ids are known."""
import json
import os
import shutil
import unittest

from sftest import SAMPLE, TempDirTest, read_json, sf, write_bytes, write_padded_llama

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


if __name__ == "__main__":
    unittest.main()
