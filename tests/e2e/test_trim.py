"""Vocabulary trimming (convert --trim-vocab): which ids are kept is recomputed here from the spec
(ranges, an ids file, a corpus tokenized with Python's sentencepiece), the trimmed artifact's kept
logits must equal the untrimmed artifact's bit for bit, vocab_map.bin must be the documented map,
and every command that tokenizes must go through it (docs/cli.md, docs/format.md)."""
import hashlib
import json
import os
import struct
import subprocess
import sys
import time
import unittest

import numpy as np
import torch

from sftest import (CORPUS, ROOT, SF, SHARED, STORIES, TempDirTest, fixture, need_stories, read_bytes, read_json,
                    reseal, sf, sf_json, write_bytes, write_json, write_meta_checkpoint)

sys.path.insert(0, os.path.join(ROOT, "tests", "fixtures"))
import chatglm_ref  # noqa: E402
import make_fixtures  # noqa: E402

TOK512 = os.path.join(STORIES, "tok512.model")
STORIES_PT = os.path.join(STORIES, "stories260K.pt")
SAMPLE_TEXT = os.path.join(CORPUS, "tinystories_sample.txt")
GPT2_VOCAB = os.path.join(SHARED, "tokenizers", "gpt2_vocab.json")
GPT2_MERGES = os.path.join(SHARED, "tokenizers", "gpt2_merges.txt")


def keep_of_ranges(ranges, vocab):
    """The ids the spec's ranges name; (a, None) runs to the end."""
    keep = set()
    for a, b in ranges:
        keep.update(range(a, vocab if b is None else b + 1))
    return sorted(keep)


def expected_map(keep, vocab):
    m = np.full(vocab, -1, dtype="<i4")
    m[keep] = np.arange(len(keep), dtype="<i4")
    return m


def read_map(art):
    return np.frombuffer(read_bytes(os.path.join(art, "vocab_map.bin")), dtype="<i4")


def bits(a):
    return np.ascontiguousarray(a, dtype="<f4").view("<u4")


def sp_spelling(sp, i):
    """A SentencePiece piece as SentencePiece spells a word it has no pieces for: each U+2581 as the
    piece "\u2581", every other byte of the piece's text as its <0xNN> piece."""
    ids = []
    for ch in sp.id_to_piece(i):
        if ch == "\u2581":
            ids.append(sp.piece_to_id("\u2581"))
        else:
            ids.extend(sp.piece_to_id(f"<0x{b:02X}>") for b in ch.encode("utf-8"))
    return ids


def respelt(ids, kept, spelling):
    """The ids with every id not in `kept` replaced by its spelling."""
    out = []
    for i in ids:
        out.extend([i] if i in kept else spelling(i))
    return out


class TrimTest(TempDirTest):
    def convert(self, src, name, *extra):
        out = self.path(name)
        sf("convert", src, "-o", out, *extra)
        return out

    def run_logits(self, art, ids, vocab, n, *extra):
        dump = self.path(os.path.basename(art) + f"-{len(os.listdir(self.tmp))}.f32")
        got = sf_json("run", art, "--ids", ",".join(map(str, ids)), "-n", n, "--ignore-eos", "--logits", dump, *extra)
        return got, np.fromfile(dump, dtype="<f4").reshape(-1, vocab)

    def assert_kept_logits_equal(self, full, trimmed, old_prompt, keep, vocab, n=8):
        """Runs both artifacts on the same tokens (old ids, and their new ids) and compares the kept
        columns bit for bit: the prompt rows always, generated rows while both generated alike (the
        untrimmed model may pick a dropped id, after which the inputs differ)."""
        new_of_old = expected_map(keep, vocab)
        new_prompt = [int(new_of_old[i]) for i in old_prompt]
        self.assertNotIn(-1, new_prompt, "the test's prompt must use kept ids only")
        got_full, rows_full = self.run_logits(full, old_prompt, vocab, n)
        got_trim, rows_trim = self.run_logits(trimmed, new_prompt, len(keep), n)
        same = 0
        for old in got_full["ids"]:
            if new_of_old[old] < 0:
                break
            same += 1
        self.assertEqual(got_trim["ids"][:same], [int(new_of_old[i]) for i in got_full["ids"][:same]])
        rows = min(len(old_prompt) + same, len(rows_full))
        self.assertGreaterEqual(rows, len(old_prompt))
        self.assertTrue(np.array_equal(bits(rows_full[:rows][:, keep]), bits(rows_trim[:rows])),
                        f"{trimmed}: kept logits differ from {full}'s")
        return rows


class RangeAndIdsTrims(TrimTest):
    """LLaMA fixtures, untied (hf_gqa) and tied (meta_args_tied)."""

    def check_artifact(self, full, trimmed, keep, vocab, d_model, tied):
        m = read_json(os.path.join(trimmed, "manifest.json"))
        self.assertEqual(m["model"]["vocab_size"], len(keep))
        self.assertEqual(m["vocab_map"]["old_vocab_size"], vocab)
        self.assertEqual(m["vocab_map"]["kept"], len(keep))
        data = read_bytes(os.path.join(trimmed, "vocab_map.bin"))
        self.assertEqual(m["vocab_map"]["sha256"], hashlib.sha256(data).hexdigest())
        self.assertIn("vocab_map.bin", [f["path"] for f in m["files"]])
        self.assertTrue(np.array_equal(read_map(trimmed), expected_map(keep, vocab)))
        self.assertEqual(sf_json("verify", trimmed)["ok"], True)
        # inspect: the trimmed vocabulary and the bytes the dropped f32 rows took.
        info = sf_json("inspect", trimmed)["vocab_trim"]
        dropped = vocab - len(keep)
        self.assertEqual((info["old_vocab_size"], info["kept"], info["dropped"]), (vocab, len(keep), dropped))
        self.assertEqual(info["bytes_saved"], dropped * d_model * 4 * (1 if tied else 2))
        runs = []
        for k in keep:
            if runs and runs[-1][1] + 1 == k:
                runs[-1][1] = k
            else:
                runs.append([k, k])
        self.assertEqual(info["kept_ranges"], runs)
        text = sf("inspect", trimmed).stdout
        self.assertIn(f"trimmed to {len(keep)} of {vocab} ids", text)
        self.assertIsNone(sf_json("inspect", full)["vocab_trim"])
        # The embedding file holds exactly the kept rows.
        self.assertEqual(os.path.getsize(os.path.join(trimmed, "embedding.bin")), len(keep) * d_model * 4)

    def test_range_trims_keep_logits(self):
        for name, tied in [("hf_gqa", False), ("meta_args_tied", True)]:
            with self.subTest(fixture=name):
                src = fixture(name)
                ref = read_json(os.path.join(src, "ref.json"))
                vocab = ref["vocab_size"]
                full = self.convert(src, name + "-full")
                trimmed = self.convert(src, name + "-range", "--trim-vocab", "range:0-11,17-99,128-")
                keep = keep_of_ranges([(0, 11), (17, 99), (128, None)], vocab)
                self.check_artifact(full, trimmed, keep, vocab, 64, tied)
                prompt = [i for i in ref["prompt_ids"] if i in set(keep)]
                self.assert_kept_logits_equal(full, trimmed, prompt, keep, vocab)

    def test_ids_file_trim_keeps_logits_and_records_the_file(self):
        src = fixture("hf_gqa")
        ref = read_json(os.path.join(src, "ref.json"))
        vocab = ref["vocab_size"]
        rng = np.random.default_rng(5)
        listed = [int(i) for i in rng.choice(vocab, 120, replace=False)] + ref["prompt_ids"]
        ids_file = self.path("keep.txt")
        # Unordered, repeated, mixed separators: the set is what counts.
        write_bytes(ids_file, ", ".join(map(str, listed[:70])) + "\n" + "\t".join(map(str, listed[60:])) + "\n")
        full = self.convert(src, "full")
        trimmed = self.convert(src, "ids", "--trim-vocab", "ids:" + ids_file)
        keep = sorted(set(listed))
        self.check_artifact(full, trimmed, keep, vocab, 64, False)
        stage = read_json(os.path.join(trimmed, "manifest.json"))["pipeline"]["stages"][1]
        self.assertEqual(stage["name"], "trim_vocab")
        self.assertEqual(stage["params"], {"spec": "ids:keep.txt",
                                           "file_sha256": hashlib.sha256(read_bytes(ids_file)).hexdigest()})
        self.assert_kept_logits_equal(full, trimmed, ref["prompt_ids"], keep, vocab)

    def test_quantized_trim_keeps_the_quantized_logits(self):
        # Rows are encoded independently, so the kept rows of an int8 / int4 trim are the untrimmed
        # artifact's rows: its kept logits equal the untrimmed int8 / int4 artifact's too.
        src = fixture("hf_gqa")
        ref = read_json(os.path.join(src, "ref.json"))
        vocab = ref["vocab_size"]
        keep = keep_of_ranges([(1, 260)], vocab)
        for scheme in ["int8", "int4:g32"]:
            with self.subTest(scheme=scheme):
                tag = scheme.replace(":", "_")
                full = self.convert(src, tag + "-full", "--quant", scheme)
                trimmed = self.convert(src, tag + "-trim", "--quant", scheme, "--trim-vocab", "range:1-260")
                prompt = [i for i in ref["prompt_ids"] if 1 <= i <= 260]
                self.assert_kept_logits_equal(full, trimmed, prompt, keep, vocab)

    def test_run_ids_are_the_artifacts_own_ids(self):
        src = fixture("hf_gqa")
        trimmed = self.convert(src, "t", "--trim-vocab", "range:100-199")
        p = sf("run", trimmed, "--ids", "100", "-n", 1, check=False)
        self.assertEqual(p.returncode, 2)
        self.assertIn("outside the vocabulary (0 to 99)", p.stderr)

    def test_verify_detects_a_damaged_map(self):
        src = fixture("hf_gqa")
        good = self.convert(src, "good", "--trim-vocab", "range:0-9,20-")

        def damaged(name, mutate, reseal_map):
            art = self.path(name)
            os.makedirs(art)
            for f in os.listdir(good):
                write_bytes(os.path.join(art, f), read_bytes(os.path.join(good, f)))
            path = os.path.join(art, "vocab_map.bin")
            write_bytes(path, mutate(bytearray(read_bytes(path))))
            if reseal_map:  # past the sha256 checks: the map's own structure must be refused
                m = read_json(os.path.join(art, "manifest.json"))
                m["vocab_map"]["sha256"] = hashlib.sha256(read_bytes(path)).hexdigest()
                write_json(os.path.join(art, "manifest.json"), m)
                reseal(art)
            return art

        def swap(b):  # old ids 0 and 1 exchange new ids: a permutation, not an increasing map
            b[0:4], b[4:8] = b[4:8], b[0:4]
            return b

        def renumber(b):  # old id 12 takes new id 5 (its new id is 10)
            b[48:52] = struct.pack("<i", 5)
            return b

        def other_valid_map(b):  # old id 5 dropped and old id 10 kept instead: a well-formed map
            m = np.frombuffer(bytes(b), dtype="<i4").copy()
            self.assertTrue(m[5] >= 0 and m[10] < 0)
            keep = sorted(set(np.nonzero(m >= 0)[0]) - {5} | {10})
            return bytearray(expected_map(keep, len(m)).tobytes())

        # Not resealed: the manifest's sha256 is the written map's. The reader hashes the bytes it
        # parses, so run, eval and inspect refuse too (not only verify).
        for name, mutate in [("flipped-bytes", renumber), ("valid-but-other", other_valid_map)]:
            with self.subTest(case=name):
                art = damaged(name, mutate, False)
                text = self.path("text.txt")
                write_bytes(text, "one two three " * 50)
                for cmd in [("run", art, "--ids", "1", "-n", 1), ("eval", "ppl", art, "--text", text, "--ctx", 8),
                            ("inspect", art), ("verify", art)]:
                    p = sf(*cmd, check=False)
                    self.assertEqual(p.returncode, 1, cmd)
                    self.assertIn(f"{art}/vocab_map.bin: sha256 differs from the manifest", p.stderr + p.stdout)
                    self.assertEqual(len(p.stderr.strip().splitlines()), 1, p.stderr)

        cases = [("flipped", renumber, False, "vocab_map.bin: sha256 differs"),
                 ("permuted", swap, True, "old id 0 maps to 1"),
                 ("renumbered", renumber, True, "old id 12 maps to 5"),
                 ("short", lambda b: b[:-4], True, "vocab_map.bin: is not 1200 bytes")]
        for name, mutate, reseal_map, message in cases:
            with self.subTest(case=name):
                art = damaged(name, mutate, reseal_map)
                r = sf("verify", art, "--json", check=False)
                self.assertEqual(r.returncode, 1)
                self.assertIn(message, " ".join(json.loads(r.stdout)["problems"]))
                if reseal_map:  # every command refuses it, with one line
                    p = sf("run", art, "--ids", "1", "-n", 1, check=False)
                    self.assertEqual(p.returncode, 1)
                    self.assertIn(message, p.stderr)
                    self.assertEqual(len(p.stderr.strip().splitlines()), 1)

    def test_bad_specs_are_refused_before_writing(self):
        src = fixture("hf_gqa")
        write_bytes(self.path("letters.txt"), "1 2 three")
        write_bytes(self.path("far.txt"), "1 2 300")
        write_bytes(self.path("none.txt"), " \n ")
        cases = [("words:1-2", 2, "unknown kind 'words'"),
                 ("range:9-3", 2, "runs backwards"),
                 ("range:0-300", 2, "outside the vocabulary (ids 0 to 299)"),
                 ("range:300-", 2, "outside the vocabulary"),
                 ("range:1,,2", 2, "is not a range"),
                 ("range:0-50,40-60", 2, "range 40-60 does not come after range 0-50"),
                 ("range:5,5", 2, "range 5 does not come after range 5"),
                 ("range:100-,3", 2, "range 3 does not come after range 100-"),
                 ("corpus:" + self.path("far.txt") + ":-1", 2, "MIN ('-1') must be an integer >= 1"),
                 ("corpus:" + self.path("far.txt") + ": 2", 2, "MIN (' 2') must be an integer >= 1"),
                 ("corpus:" + self.path("far.txt") + ":2 ", 2, "MIN ('2 ') must be an integer >= 1"),
                 ("corpus:" + self.path("far.txt") + ":999999999999999", 2, "must be an integer >= 1"),
                 ("ids:" + self.path("missing.txt"), 1, "missing.txt"),
                 ("ids:" + self.path("letters.txt"), 1, "letters.txt: 'three' is not a token id"),
                 ("ids:" + self.path("far.txt"), 1, "far.txt: id 300 is outside the vocabulary"),
                 ("ids:" + self.path("none.txt"), 1, "none.txt: lists no token ids"),
                 ("corpus:" + self.path("far.txt"), 2, "needs the tokenizer")]
        for spec, code, message in cases:
            with self.subTest(spec=spec):
                out = self.path("out")
                p = sf("convert", src, "-o", out, "--trim-vocab", spec, check=False)
                self.assertEqual(p.returncode, code, p.stderr)
                self.assertIn(message, p.stderr)
                self.assertEqual(len(p.stderr.strip().splitlines()), 1, p.stderr)
                self.assertFalse(os.path.exists(out))

    def test_many_repeated_ranges_are_refused_at_once(self):
        # The reviewer's pipeline: 400,000 copies of "0-" took 55 s and wrote a 1.2 MB manifest.
        src = fixture("hf_gqa")
        path = self.path("p.json")
        spec = "range:" + ",".join(["0-"] * 400000)
        write_json(path, {"stages": [{"name": "load"}, {"name": "trim_vocab", "params": {"spec": spec}},
                                     {"name": "quantize", "params": {"scheme": "f32"}}, {"name": "write"}]})
        start = time.monotonic()
        p = sf("convert", src, "-o", self.path("out"), "--pipeline", path, check=False)
        self.assertLess(time.monotonic() - start, 10)
        self.assertEqual(p.returncode, 2)
        self.assertIn("range 0- does not come after range 0-", p.stderr)
        self.assertEqual(len(p.stderr.strip().splitlines()), 1)
        self.assertLess(len(p.stderr), 400)
        self.assertFalse(os.path.exists(self.path("out")))
        # At most 65536 ranges (a pipeline file: the spec is too long for a command line).
        spec = "range:" + ",".join(map(str, range(0, 2 * 65537, 2)))
        write_json(path, {"stages": [{"name": "load"}, {"name": "trim_vocab", "params": {"spec": spec}},
                                     {"name": "quantize", "params": {"scheme": "f32"}}, {"name": "write"}]})
        p = sf("convert", src, "-o", self.path("out"), "--pipeline", path, check=False)
        self.assertEqual(p.returncode, 2)
        self.assertIn("more than 65536 ranges", p.stderr)

    def test_pipeline_file_stage(self):
        src = fixture("hf_gqa")
        by_flag = self.convert(src, "flag", "--trim-vocab", "range:5-250")
        write_bytes(self.path("ids.txt"), "3 4 5")

        def pipeline(*stages):
            path = self.path(f"p{len(os.listdir(self.tmp))}.json")
            write_json(path, {"stages": list(stages)})
            return path

        load, write = {"name": "load"}, {"name": "write"}
        quant = {"name": "quantize", "params": {"scheme": "f32"}}
        trim = {"name": "trim_vocab", "params": {"spec": "range:5-250"}}
        out = self.path("file")
        sf("convert", src, "-o", out, "--pipeline", pipeline(load, trim, quant, write))
        self.assertEqual(read_bytes(os.path.join(out, "vocab_map.bin")), read_bytes(os.path.join(by_flag, "vocab_map.bin")))
        self.assertEqual(read_bytes(os.path.join(out, "embedding.bin")), read_bytes(os.path.join(by_flag, "embedding.bin")))
        sha = hashlib.sha256(b"3 4 6").hexdigest()
        bad = [((load, quant, trim, write), "must come after 'load' and before 'quantize'"),
               ((load, trim, trim, quant, write), "at most one 'trim_vocab'"),
               ((load, {"name": "trim_vocab", "params": {}}, quant, write), "needs 'spec'"),
               ((load, {"name": "trim_vocab", "params": {"spec": "range:1-2", "keep": 1}}, quant, write),
                "unknown parameter 'keep'"),
               ((load, {"name": "trim_vocab", "params": {"spec": "ids:" + self.path("ids.txt"), "file_sha256": sha}},
                 quant, write), "sha256 differs from the pipeline's file_sha256")]
        for stages, message in bad:
            with self.subTest(message=message):
                p = sf("convert", src, "-o", self.path("bad"), "--pipeline", pipeline(*stages), check=False)
                self.assertNotEqual(p.returncode, 0)
                self.assertIn(message, p.stderr)
        p = sf("convert", src, "-o", self.path("bad"), "--pipeline", pipeline(load, trim, quant, write),
               "--trim-vocab", "range:1-2", check=False)
        self.assertEqual(p.returncode, 2)
        self.assertIn("--trim-vocab has no effect with --pipeline", p.stderr)


class TokenizerTrims(TrimTest):
    """The real stories260K model and its SentencePiece tokenizer (byte fallback, unk 0, bos 1, eos 2)."""

    @classmethod
    def setUpClass(cls):
        need_stories()
        import sentencepiece as spm
        cls.sp = spm.SentencePieceProcessor(model_file=TOK512)

    def setUp(self):
        super().setUp()
        self.full = self.convert(STORIES_PT, "full", "--tokenizer", TOK512)

    def corpus(self, text):
        path = self.path("corpus.txt")
        write_bytes(path, text)
        return path

    def corpus_keep(self, text, minimum):
        """What corpus:FILE:MIN must keep: ids used >= MIN times, special and byte-fallback pieces, and
        the word-boundary piece byte spellings start with."""
        counts = np.bincount(self.sp.encode(text), minlength=512)
        reserved = {i for i in range(self.sp.get_piece_size())
                    if self.sp.is_control(i) or self.sp.is_unknown(i) or self.sp.is_byte(i)}
        reserved.add(self.sp.piece_to_id("\u2581"))
        return sorted({i for i in range(512) if counts[i] >= minimum} | reserved)

    def test_corpus_trim_map_logits_and_manifest(self):
        text = read_bytes(SAMPLE_TEXT).decode()[:4000]
        path = self.corpus(text)
        trimmed = self.convert(STORIES_PT, "corpus", "--tokenizer", TOK512, "--trim-vocab", f"corpus:{path}:2")
        keep = self.corpus_keep(text, 2)
        self.assertLess(len(keep), 512)
        self.assertTrue(np.array_equal(read_map(trimmed), expected_map(keep, 512)))
        stage = read_json(os.path.join(trimmed, "manifest.json"))["pipeline"]["stages"][1]
        self.assertEqual(stage["params"], {"spec": "corpus:corpus.txt:2",
                                           "file_sha256": hashlib.sha256(text.encode()).hexdigest()})
        # Bit-equal kept logits on the corpus's own ids that were kept.
        ids = [1] + [i for i in self.sp.encode(text[:300]) if i in set(keep)][:40]
        self.assert_kept_logits_equal(self.full, trimmed, ids, keep, 512, n=12)
        info = sf_json("inspect", trimmed)["vocab_trim"]
        self.assertEqual(info["bytes_saved"], (512 - len(keep)) * 64 * 4)  # tied: the embedding only

    def test_corpus_that_is_not_text_is_refused(self):
        path = self.path("binary.txt")
        write_bytes(path, b"\x7fELF\x02\x01\x00\x00" + bytes(range(256)))
        p = sf("convert", STORIES_PT, "--tokenizer", TOK512, "-o", self.path("x"), "--trim-vocab", f"corpus:{path}",
               check=False)
        self.assertEqual(p.returncode, 1)
        self.assertIn("binary.txt: is not UTF-8 text", p.stderr)

    def test_corpus_of_white_space_is_refused(self):
        path = self.path("blank.txt")
        write_bytes(path, " \n\t\n   \r\n")
        p = sf("convert", STORIES_PT, "--tokenizer", TOK512, "-o", self.path("x"), "--trim-vocab", f"corpus:{path}",
               check=False)
        self.assertEqual(p.returncode, 1)
        self.assertIn("blank.txt: holds only white space", p.stderr)
        self.assertFalse(os.path.exists(self.path("x")))

    def test_large_corpus_is_counted_in_chunks(self):
        # 4.8 MB: five chunks, cut after the last line end within each MiB (docs/cli.md). The keep
        # set is the one Python's sentencepiece gives the same chunks; memory is about one chunk's
        # (tokenizing the whole text at once took 120 bytes per byte: 570 MB here).
        text = read_bytes(os.path.join(CORPUS, "tinystories_valid_head.txt")).decode() * 6
        path = self.corpus(text)
        data = text.encode()
        chunks, begin = [], 0
        while begin < len(data):
            end = len(data) if len(data) - begin <= 1 << 20 else data.rindex(b"\n", begin, begin + (1 << 20)) + 1
            chunks.append(data[begin:end].decode())
            begin = end
        self.assertEqual(len(chunks), 5)
        counts = np.zeros(512, dtype=np.int64)
        for chunk in chunks:
            counts += np.bincount(self.sp.encode(chunk), minlength=512)
        minimum = 50
        reserved = set(self.corpus_keep("x", 10 ** 9))
        keep = sorted({i for i in range(512) if counts[i] >= minimum} | reserved)
        trimmed = self.path("big")
        peak_kib = subprocess.run(
            [sys.executable, "-c", "import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True); "
             "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)", SF, "convert", STORIES_PT,
             "--tokenizer", TOK512, "-o", trimmed, "--trim-vocab", f"corpus:{path}:{minimum}"],
            capture_output=True, text=True, check=True).stdout.split()[-1]
        if not os.environ.get("SF_SANITIZED"):  # AddressSanitizer's shadow memory and quarantine inflate RSS
            self.assertLess(int(peak_kib), 350 << 10, "peak RSS of convert, KiB")
        self.assertTrue(np.array_equal(read_map(trimmed), expected_map(keep, 512)))
        stage = read_json(os.path.join(trimmed, "manifest.json"))["pipeline"]["stages"][1]
        self.assertEqual(stage["params"]["file_sha256"], hashlib.sha256(data).hexdigest())

    def test_corpus_keeps_ids_past_the_tokenizer(self):
        # A model with 600 rows and the 512-piece tokenizer (as ChatGLM2 has 65024 rows for fewer
        # pieces): no corpus can count ids 512-599, so corpus mode keeps them, and says so.
        src = write_meta_checkpoint(self.path("src"), d=16, ffn=32, layers=1, vocab=600)
        text = "Once upon a time there was a cat."
        p = sf("convert", src, "--tokenizer", TOK512, "-o", self.path("t"), "--trim-vocab", f"corpus:{self.corpus(text)}")
        keep = sorted(set(self.corpus_keep(text, 1)) | set(range(512, 600)))
        self.assertTrue(np.array_equal(read_map(self.path("t")), expected_map(keep, 600)))
        self.assertIn("kept the 88 ids past the tokenizer's 512 pieces (512 to 599)", p.stderr)
        self.assertEqual(len(p.stderr.strip().splitlines()), 1, p.stderr)

    def test_bos_messages_without_a_bos_piece(self):
        # A SentencePiece model without BOS (bos_id -1), trained here on the sample text.
        import sentencepiece as spm
        prefix = self.path("nobos")
        spm.SentencePieceTrainer.train(input=SAMPLE_TEXT, model_prefix=prefix, vocab_size=400, bos_id=-1,
                                       byte_fallback=True, minloglevel=2)
        self.assertEqual(spm.SentencePieceProcessor(model_file=prefix + ".model").bos_id(), -1)
        full = self.convert(STORIES_PT, "full-nobos", "--tokenizer", prefix + ".model")
        p = sf("convert", STORIES_PT, "--tokenizer", prefix + ".model", "-o", self.path("t"), "--trim-vocab", "range:0-150")
        self.assertNotIn("BOS", p.stderr)
        text = self.path("text.txt")
        write_bytes(text, read_bytes(SAMPLE_TEXT))
        for art in [full, self.path("t")]:
            for cmd in [("run", art, "-p", "Once upon", "-n", 1), ("eval", "ppl", art, "--text", text, "--ctx", 16)]:
                r = sf(*cmd, check=False)
                self.assertEqual(r.returncode, 1, cmd)
                self.assertEqual(r.stderr.strip(), f"shardforge: error: {art}: its tokenizer has no BOS piece, which "
                                                   "every prompt and evaluation window starts with")

    def test_run_prompt_maps_text_and_decodes_through_the_map(self):
        text = "Once upon a time, Lily. " + read_bytes(SAMPLE_TEXT).decode()
        trimmed = self.convert(STORIES_PT, "corpus", "--tokenizer", TOK512, "--trim-vocab",
                               f"corpus:{self.corpus(text)}")
        keep = self.corpus_keep(text, 1)
        new_of_old = expected_map(keep, 512)
        prompt = "Once upon a time"
        old = [1] + self.sp.encode(prompt)
        self.assertTrue(all(new_of_old[i] >= 0 for i in old))
        got = sf_json("run", trimmed, "-p", prompt, "-n", 24)
        want = sf_json("run", self.full, "-p", prompt, "-n", 24)
        self.assertEqual(got["prompt_ids"], [int(new_of_old[i]) for i in old])
        self.assertEqual(got["prompt_tokenizer_ids"], old)
        self.assertEqual(got["tokenizer_ids"], [int(np.nonzero(new_of_old == i)[0][0]) for i in got["ids"]])
        self.assertEqual(got["text"], self.sp.decode(got["tokenizer_ids"]))
        # The untrimmed continuation (", there was a little girl named Lily. ...") is kept: the same
        # text, streamed or not.
        self.assertTrue(all(new_of_old[i] >= 0 for i in want["ids"]))
        self.assertEqual(got["tokenizer_ids"], want["ids"])
        self.assertEqual(got["text"], want["text"])
        self.assertEqual(sf("run", trimmed, "-p", prompt, "-n", 24).stdout, sf("run", self.full, "-p", prompt, "-n", 24).stdout)

    def test_dropped_token_is_refused_when_unk_is_dropped_too(self):
        # Ids 1-300 keep BOS and EOS but drop <unk> (0) and every piece past 300.
        p = sf("convert", STORIES_PT, "--tokenizer", TOK512, "-o", self.path("t"), "--trim-vocab", "range:1-300")
        self.assertIn("drops the tokenizer's unknown piece <unk> (id 0)", p.stderr)
        prompt = "Once upon a time"
        dropped = next(i for i in self.sp.encode(prompt) if i > 300)
        r = sf("run", self.path("t"), "-p", prompt, "-n", 2, check=False)
        self.assertEqual(r.returncode, 1)
        self.assertEqual(len(r.stderr.strip().splitlines()), 1)
        self.assertIn(f'"{self.sp.id_to_piece(dropped)}" (tokenizer id {dropped})', r.stderr)
        self.assertIn("dropped", r.stderr)
        text = self.path("text.txt")
        write_bytes(text, prompt + " " * 10 + prompt * 30)
        r = sf("eval", "ppl", self.path("t"), "--text", text, "--ctx", 16, check=False)
        self.assertEqual(r.returncode, 1)
        self.assertIn("text.txt: holds the token", r.stderr)

    def test_dropped_token_is_spelt_in_byte_pieces(self):
        corpus_text = "Once upon a time there was a cat."
        trimmed = self.convert(STORIES_PT, "corpus", "--tokenizer", TOK512, "--trim-vocab",
                               f"corpus:{self.corpus(corpus_text)}")
        keep = self.corpus_keep(corpus_text, 1)
        new_of_old = expected_map(keep, 512)
        prompt = "Once upon a time there was a big dragon. Zq!"
        old = self.sp.encode(prompt)
        dropped = [i for i in old if new_of_old[i] < 0]
        self.assertTrue(dropped)
        # What the trimmed artifact must read: the dropped pieces spelt as SentencePiece spells an
        # unknown word, which decodes to the same text.
        spelt = [1] + respelt(old, set(keep), lambda i: sp_spelling(self.sp, i))
        self.assertEqual(self.sp.decode(spelt), prompt)
        p = sf("run", trimmed, "-p", prompt, "-n", 2, "--json")
        got = json.loads(p.stdout)
        self.assertEqual(got["prompt_tokenizer_ids"], spelt)
        self.assertEqual(got["prompt_ids"], [int(new_of_old[i]) for i in spelt])
        self.assertEqual(len(p.stderr.strip().splitlines()), 1, p.stderr)
        self.assertIn(f"prompt: {len(dropped)} token(s) the vocabulary trim of {trimmed} dropped were spelt with byte "
                      f'pieces, which read the same text (the first: "{self.sp.id_to_piece(dropped[0])}", tokenizer id '
                      f"{dropped[0]})", p.stderr)
        self.assertNotIn("unknown piece", p.stderr)
        # The model reads those pieces as the untrimmed model reads them: the kept logits are equal.
        self.assert_kept_logits_equal(self.full, trimmed, spelt, keep, 512, n=4)
        # eval reads a text the same way: its tokens are the spelt ones.
        text = self.path("text.txt")
        write_bytes(text, (prompt + " ") * 20)
        tokens = respelt(self.sp.encode((prompt + " ") * 20), set(keep), lambda i: sp_spelling(self.sp, i))
        r = sf_json("eval", "ppl", trimmed, "--text", text, "--ctx", 32)
        self.assertEqual(r["text_tokens"], len(tokens))

    def test_dropped_token_becomes_unk_when_its_bytes_are_dropped(self):
        # 0-2 and 259-400: <unk>, BOS, EOS and the pieces to 400, no byte pieces.
        trimmed = self.convert(STORIES_PT, "t", "--tokenizer", TOK512, "--trim-vocab", "range:0-2,259-400")
        keep = keep_of_ranges([(0, 2), (259, 400)], 512)
        new_of_old = expected_map(keep, 512)
        prompt = "Once upon a time there was a big dragon."
        old = self.sp.encode(prompt)
        dropped = [i for i in old if new_of_old[i] < 0]
        self.assertTrue(dropped)
        p = sf("run", trimmed, "-p", prompt, "-n", 2, "--json")
        got = json.loads(p.stdout)
        unk = int(new_of_old[0])
        self.assertEqual(got["prompt_ids"], [int(new_of_old[1])] + [unk if new_of_old[i] < 0 else int(new_of_old[i])
                                                                    for i in old])
        self.assertIn(f"{len(dropped)} token(s) the vocabulary trim of {trimmed} dropped were read as the unknown piece",
                      p.stderr)
        self.assertIn(f'"{self.sp.id_to_piece(dropped[0])}", tokenizer id {dropped[0]}', p.stderr)

    def test_eval_ppl_reports_the_removed_mass(self):
        text = read_bytes(SAMPLE_TEXT).decode()[:3000]
        path = self.corpus(text)
        trimmed = self.convert(STORIES_PT, "corpus", "--tokenizer", TOK512, "--trim-vocab", f"corpus:{path}")
        keep = self.corpus_keep(text, 1)
        dropped = sorted(set(range(512)) - set(keep))
        ctx, chunks = 64, 3
        r = sf_json("eval", "ppl", trimmed, "--text", path, "--ctx", ctx, "--chunks", chunks, "--untrimmed", self.full)
        # Independently: the untrimmed artifact's logits of each window (run --ids), softmax in numpy.
        tokens = self.sp.encode(text)  # every one kept: the text is the corpus
        masses, nll_full, nll_trim = [], [], []
        for w in range(chunks):
            window = [1] + tokens[w * ctx + 1: w * ctx + ctx]
            _, rows = self.run_logits(self.full, window, 512, 0)
            rows = rows.astype(np.float64)
            for p in range(ctx // 2, ctx):
                target = tokens[w * ctx + p + 1]
                lp = rows[p] - np.logaddexp.reduce(rows[p])
                masses.append(float(np.exp(lp[dropped]).sum()))
                nll_full.append(-lp[target])
                kept_lp = rows[p][keep] - np.logaddexp.reduce(rows[p][keep])
                nll_trim.append(-kept_lp[keep.index(target)])
        v = r["vocab_trim"]
        self.assertEqual((v["old_vocab_size"], v["kept"], v["dropped_targets"]), (512, len(keep), 0))
        self.assertEqual(r["tokens_scored"], len(masses))
        self.assertAlmostEqual(v["removed_mass_mean"], np.mean(masses), delta=1e-9 + 1e-6 * np.mean(masses))
        self.assertAlmostEqual(v["removed_mass_max"], max(masses), delta=1e-9 + 1e-6 * max(masses))
        self.assertGreater(v["removed_mass_mean"], 0)
        self.assertAlmostEqual(v["untrimmed_ppl"] / np.exp(np.mean(nll_full)), 1, delta=1e-6)
        self.assertAlmostEqual(r["ppl"] / np.exp(np.mean(nll_trim)), 1, delta=1e-6)
        self.assertLess(r["ppl"], v["untrimmed_ppl"], "renormalizing over the kept ids can only raise their probability")
        # The same numbers as eval ppl of the untrimmed artifact on these windows.
        plain = sf_json("eval", "ppl", self.full, "--text", path, "--ctx", ctx, "--chunks", chunks)
        self.assertEqual(plain["ppl"], v["untrimmed_ppl"])
        self.assertIn("the untrimmed model gave the dropped ids",
                      sf("eval", "ppl", trimmed, "--text", path, "--ctx", ctx, "--chunks", chunks,
                         "--untrimmed", self.full).stdout)
        # --untrimmed must be the untrimmed conversion of the same checkpoint.
        p = sf("eval", "ppl", self.full, "--text", path, "--ctx", ctx, "--untrimmed", self.full, check=False)
        self.assertEqual(p.returncode, 2)
        self.assertIn("is not trimmed", p.stderr)
        p = sf("eval", "ppl", trimmed, "--text", path, "--ctx", ctx, "--untrimmed", trimmed, check=False)
        self.assertEqual(p.returncode, 1)
        self.assertIn("is itself trimmed", p.stderr)

    def test_eval_kld_needs_the_same_map(self):
        path = self.corpus(read_bytes(SAMPLE_TEXT).decode()[:3000])
        spec = f"corpus:{path}"
        trimmed = self.convert(STORIES_PT, "t32", "--tokenizer", TOK512, "--trim-vocab", spec)
        trimmed8 = self.convert(STORIES_PT, "t8", "--tokenizer", TOK512, "--trim-vocab", spec, "--quant", "int8")
        r = sf_json("eval", "kld", trimmed8, "--ref", trimmed, "--text", path, "--ctx", 64, "--chunks", 2)
        self.assertGreater(r["kld"], 0)
        same = sf_json("eval", "kld", trimmed, "--ref", trimmed, "--text", path, "--ctx", 64, "--chunks", 2)
        self.assertEqual(same["kld"], 0)
        self.assertEqual(same["ppl"], sf_json("eval", "ppl", trimmed, "--text", path, "--ctx", 64, "--chunks", 2)["ppl"])
        other = self.convert(STORIES_PT, "r", "--tokenizer", TOK512, "--trim-vocab", "range:0-450")
        p = sf("eval", "kld", other, "--ref", trimmed, "--text", path, "--ctx", 64, "--chunks", 2, check=False)
        self.assertEqual(p.returncode, 1)
        self.assertIn("vocabulary trim (vocab_map.bin) differs", p.stderr)

    def test_compare_trims_every_scheme(self):
        path = self.corpus(read_bytes(SAMPLE_TEXT).decode()[:3000])
        keep_dir = self.path("kept")
        r = sf_json("compare", STORIES_PT, "--tokenizer", TOK512, "--schemes", "f32,int8", "--text", path, "--ctx", 64,
                    "--chunks", 2, "--bench-tokens", 0, "--trim-vocab", f"corpus:{path}", "--keep", keep_dir)
        for row in r["rows"]:
            art = os.path.join(keep_dir, row["scheme"])
            self.assertEqual(read_json(os.path.join(art, "manifest.json"))["vocab_map"]["kept"],
                             len(self.corpus_keep(read_bytes(path).decode(), 1)))
            self.assertEqual(row["ppl"], sf_json("eval", "ppl", art, "--text", path, "--ctx", 64, "--chunks", 2)["ppl"])


class Gpt2BpeTrims(TrimTest):
    """GPT-2's byte-level BPE (the real vocab.json / merges.txt) on a tiny model of its 50257 ids: a
    corpus trim keeps the 256 byte tokens and <|endoftext|>; the tokenizer has no unknown piece, so
    text with a dropped token is refused."""

    @classmethod
    def setUpClass(cls):
        if not (os.path.exists(GPT2_VOCAB) and os.path.exists(GPT2_MERGES)):
            raise unittest.SkipTest(f"GPT-2 tokenizer files not found at {GPT2_VOCAB}: ../shared is absent, skipping")
        from gpt2_reference import Gpt2Reference
        cls.ref = Gpt2Reference(GPT2_VOCAB, GPT2_MERGES)

    def test_corpus_trim_keeps_byte_tokens_and_maps_text(self):
        src = write_meta_checkpoint(self.path("src"), d=16, ffn=32, layers=1, vocab=50257)
        text = read_bytes(SAMPLE_TEXT).decode()
        corpus = self.path("corpus.txt")
        write_bytes(corpus, text)
        full = self.convert(src, "full", "--tokenizer", GPT2_VOCAB)
        trimmed = self.convert(src, "trim", "--tokenizer", GPT2_VOCAB, "--trim-vocab", f"corpus:{corpus}")
        eot = self.ref.vocab["<|endoftext|>"]
        byte_ids = {self.ref.vocab[self.ref.shown[b]] for b in range(256)}
        keep = sorted(set(self.ref.encode(text)) | byte_ids | {eot})
        self.assertTrue(np.array_equal(read_map(trimmed), expected_map(keep, 50257)))
        new_of_old = expected_map(keep, 50257)
        prompt = "Once upon a time there was a little boy"
        old = self.ref.encode(prompt)  # GPT-2 prompts take no BOS
        got = sf_json("run", trimmed, "-p", prompt, "-n", 4, "--ignore-eos")
        self.assertEqual(got["prompt_ids"], [int(new_of_old[i]) for i in old])
        self.assertEqual(got["prompt_tokenizer_ids"], old)
        self.assertEqual(got["tokenizer_ids"], [keep[i] for i in got["ids"]])
        self.assert_kept_logits_equal(full, trimmed, old, keep, 50257, n=4)
        # Words the corpus never used are spelt with the byte tokens: the same bytes, and the kept
        # logits of the untrimmed model reading those byte tokens.
        prompt = "Zanzibar quantum"
        old = self.ref.encode(prompt)
        dropped = [i for i in old if new_of_old[i] < 0]
        self.assertTrue(dropped)
        byte_token = {b: self.ref.vocab[self.ref.shown[b]] for b in range(256)}
        spelt = respelt(old, set(keep), lambda i: [byte_token[b] for b in self.ref.decode([i])])
        self.assertEqual(self.ref.decode(spelt), prompt.encode())
        p = sf("run", trimmed, "-p", prompt, "-n", 2, "--ignore-eos", "--json")
        got = json.loads(p.stdout)
        self.assertEqual(got["prompt_tokenizer_ids"], spelt)
        self.assertIn(f"{len(dropped)} token(s) the vocabulary trim of {trimmed} dropped were spelt with byte pieces",
                      p.stderr)
        self.assert_kept_logits_equal(full, trimmed, spelt, keep, 50257, n=2)
        # Without the byte tokens (ids 0-255) and without an unknown piece, such text is refused.
        no_bytes = self.convert(src, "no-bytes", "--tokenizer", GPT2_VOCAB, "--trim-vocab", "range:256-")
        p = sf("run", no_bytes, "-p", prompt, "-n", 1, check=False)
        self.assertEqual(p.returncode, 1)
        self.assertEqual(len(p.stderr.strip().splitlines()), 1)
        self.assertIn("has no unknown piece", p.stderr)
        self.assertIn("tokenizer id", p.stderr)
        # Only the unused merged tokens went: the savings are their rows in both matrices.
        self.assertEqual(sf_json("inspect", trimmed)["vocab_trim"]["bytes_saved"], (50257 - len(keep)) * 16 * 4 * 2)
        self.assertTrue(all(i > 255 for i in dropped))


class Gpt2BosTrims(TrimTest):
    """GPT-2 prompts take no BOS: a trim dropping <|endoftext|> costs eval (its windows start with
    it) and an empty prompt, not run -p."""

    def test_dropping_end_of_text(self):
        if not os.path.exists(GPT2_VOCAB):
            self.skipTest(f"GPT-2 tokenizer files not found at {GPT2_VOCAB}: ../shared is absent, skipping")
        src = write_meta_checkpoint(self.path("src"), d=16, ffn=32, layers=1, vocab=50257)
        p = sf("convert", src, "--tokenizer", GPT2_VOCAB, "-o", self.path("t"), "--trim-vocab", "range:0-50255")
        self.assertIn("drops the tokenizer's BOS <|endoftext|> (id 50256): eval will refuse every text (its windows "
                      "start with BOS), and run an empty prompt", p.stderr)
        self.assertNotIn("run -p", p.stderr)
        got = sf_json("run", self.path("t"), "-p", "Once upon a time", "-n", 2, "--ignore-eos")
        self.assertEqual(len(got["prompt_ids"]), 4)
        text = self.path("text.txt")
        write_bytes(text, read_bytes(SAMPLE_TEXT).replace(b"<|endoftext|>", b""))
        r = sf("eval", "ppl", self.path("t"), "--text", text, "--ctx", 16, check=False)
        self.assertEqual(r.returncode, 1)
        self.assertIn('the vocabulary trim dropped the tokenizer\'s BOS "<|endoftext|>" (id 50256), which evaluation '
                      "windows (and an empty prompt) start with", r.stderr)


def chatglm6b_first_release(out):
    """A ChatGLM-6B checkpoint with the first release's vocabulary (150528 ids, 0..19999 the image
    tokens; [MASK] 150000, [gMASK] 150001, <sop> 150004, <eop> 150005, pad 20003) and tiny widths."""
    cfg = chatglm_ref.GLMConfig(vocab_size=150528, hidden_size=16, num_attention_heads=2, num_layers=1,
                                inner_hidden_size=32, max_sequence_length=64, mask_token_id=150000,
                                gmask_token_id=150001, bos_token_id=150004, eos_token_id=150005, pad_token_id=20003)
    model = chatglm_ref.ChatGLM6B(cfg)
    make_fixtures.init_family_weights(model, 31)
    os.makedirs(out)
    torch.save(model.state_dict(), os.path.join(out, "pytorch_model.bin"))
    write_json(os.path.join(out, "config.json"), model.hf_config())
    return model, cfg


class FamilyTrims(TrimTest):
    def test_gpt2_tied_head_is_trimmed_with_the_embedding(self):
        for name in ["gpt2_hub", "gpt2_prefixed"]:
            with self.subTest(fixture=name):
                src = fixture(name)
                ref = read_json(os.path.join(src, "ref.json"))
                vocab = ref["vocab_size"]
                full = self.convert(src, name + "-full")
                trimmed = self.convert(src, name + "-trim", "--trim-vocab", "range:0-39,60-")
                keep = keep_of_ranges([(0, 39), (60, None)], vocab)
                m = read_json(os.path.join(trimmed, "manifest.json"))
                self.assertTrue(m["model"]["tied_embeddings"])
                self.assertEqual(m["model"]["vocab_size"], len(keep))
                self.assertTrue(np.array_equal(read_map(trimmed), expected_map(keep, vocab)))
                info = sf_json("inspect", trimmed)
                self.assertNotIn("head.output.weight", [t["name"] for t in info["tensors"]])
                d = info["model"]["d_model"]
                self.assertEqual(info["vocab_trim"]["bytes_saved"], (vocab - len(keep)) * d * 4)
                prompt = [i for i in ref["prompt_ids"] if i in set(keep)]
                self.assert_kept_logits_equal(full, trimmed, prompt, keep, vocab)
                self.assertEqual(sf_json("verify", trimmed)["ok"], True)

    def test_chatglm6b_image_token_trim(self):
        src = self.path("chatglm-6b-first-release")
        model, cfg = chatglm6b_first_release(src)
        full = self.convert(src, "full")
        trimmed = self.convert(src, "trim", "--trim-vocab", "range:20000-")
        vocab, keep = 150528, list(range(20000, 150528))
        m = read_json(os.path.join(trimmed, "manifest.json"))
        self.assertEqual(m["model"]["vocab_size"], 130528)
        self.assertEqual(m["model"]["special_tokens"], {"mask": 130000, "gmask": 130001, "bos": 130004})
        self.assertEqual(read_json(os.path.join(full, "manifest.json"))["model"]["special_tokens"],
                         {"mask": 150000, "gmask": 150001, "bos": 150004})
        self.assertTrue(np.array_equal(read_map(trimmed), expected_map(keep, vocab)))
        # A prompt as ChatGLM-6B reads it: text, [gMASK], <sop>; bidirectional up to <sop>.
        prompt = [20005, 64790, 150527, 100000, 30001, 150001, 150004]
        rows = self.assert_kept_logits_equal(full, trimmed, prompt, keep, vocab, n=6)
        self.assertGreaterEqual(rows, len(prompt))
        # And the trimmed artifact computes what the PyTorch reference computes, on the kept ids.
        _, got = self.run_logits(trimmed, [i - 20000 for i in prompt], len(keep), 0)
        with torch.no_grad():
            want = model(torch.tensor([prompt]))[0].numpy()[:, 20000:]
        self.assertLessEqual(float(np.abs(got - want).max()), 1e-4 * float(np.abs(want).max()))
        # The image tokens are 20000 of the embedding's and the output projection's rows.
        self.assertEqual(sf_json("inspect", trimmed)["vocab_trim"]["bytes_saved"], 20000 * 16 * 4 * 2)
        # A trim that drops [gMASK] is refused, naming it.
        p = sf("convert", src, "-o", self.path("bad"), "--trim-vocab", "range:20000-150000,150002-", check=False)
        self.assertEqual(p.returncode, 2)
        self.assertIn("drops [gMASK] (id 150001)", p.stderr)


if __name__ == "__main__":
    unittest.main()
