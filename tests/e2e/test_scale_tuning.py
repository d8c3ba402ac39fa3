"""End-to-end scale tuning (convert --calib-method NAME --calib-tune-steps N): the executor's own KL
divergence to the f32 model (eval kld, an implementation the tuner does not share) goes down on the
calibration text (whether it carries to other text is measured by bench/calib_evidence.sh, on models
and calibration sets of a realistic size), the codes of every block linear stay as calibration left them while scales move, the manifest
records the settings and the outcome, the bytes do not depend on the thread count, every family the
backward pass covers converts and runs, and what it does not cover is refused before anything is
written."""
import os
import random
import struct
import json

from family_refs import EXPECT
from sftest import (ROOT, SAMPLE, SANITIZED, TempDirTest, error_line, fixture, read_bytes, read_json,
                    release_only, sf, sf_json, write_json)

CALIB = os.path.join(ROOT, "samples", "calib.txt")
TOKENS, CTX = (256, 64) if SANITIZED else (2048, 128)
SMALL = ["--calib-tokens", str(TOKENS), "--calib-ctx", str(CTX)]
STEPS = "4" if SANITIZED else "30"


def shard_tensors(path):
    """name -> (type, raw bytes) of a .shard file (docs/format.md: magic, version, header size, JSON)."""
    b = read_bytes(path)
    n = struct.unpack("<I", b[12:16])[0]
    head = json.loads(b[16:16 + n])
    return {t["name"]: (t["type"], t.get("group"), t["shape"], b[t["offset"]:t["offset"] + t["nbytes"]])
            for t in head["tensors"]}


def q4_0_codes(raw):
    """The code bytes of q4_0 blocks (each 18 bytes: f16 scale, 16 bytes of codes)."""
    return b"".join(raw[i + 2:i + 18] for i in range(0, len(raw), 18))


def q4_0_scales(raw):
    return b"".join(raw[i:i + 2] for i in range(0, len(raw), 18))


class ScaleTuning(TempDirTest):
    def convert(self, tag, *args, src=SAMPLE):
        out = self.path(tag)
        sf("convert", src, "-o", out, *args)
        return out

    def kld(self, art, ref):
        return sf_json("eval", "kld", art, "--ref", ref, "--text", CALIB, "--ctx", CTX, "--chunks", TOKENS // CTX)

    @release_only
    def test_tuning_lowers_the_executors_kl_and_moves_only_scales(self):
        f32 = self.convert("f32")
        plain = self.convert("gptq", "--quant", "q4_0", "--calib", CALIB, "--calib-method", "gptq", *SMALL)
        tuned = self.convert("tuned", "--quant", "q4_0", "--calib", CALIB, "--calib-method", "gptq", *SMALL,
                             "--calib-tune-steps", STEPS)
        m = read_json(os.path.join(tuned, "manifest.json"))
        t = m["calibration"]["scale_tuning"]
        self.assertTrue(t["kept"], t)
        self.assertLess(t["kl_after"], t["kl_before"])
        self.assertEqual(t["steps"], int(STEPS))
        stage = [s for s in m["pipeline"]["stages"] if s["name"] == "calib_gptq"][0]
        self.assertEqual(stage["params"]["tune_steps"], int(STEPS))
        # The executor's KL divergence to f32 (its own forward pass, 8-bit activations and all).
        before, after = self.kld(plain, f32), self.kld(tuned, f32)
        self.assertLess(after["kld"], before["kld"], (before, after))
        # Same codes, some scales moved, same size.
        moved = 0
        for f in sorted(os.listdir(plain)):
            if not f.startswith("block_"):
                continue
            a, b = shard_tensors(os.path.join(plain, f)), shard_tensors(os.path.join(tuned, f))
            self.assertEqual(sorted(a), sorted(b))
            for name, (typ, _, _, raw) in a.items():
                self.assertEqual(typ, b[name][0])
                self.assertEqual(len(raw), len(b[name][3]))
                if typ == "q4_0":
                    self.assertEqual(q4_0_codes(raw), q4_0_codes(b[name][3]), name)
                    moved += q4_0_scales(raw) != q4_0_scales(b[name][3])
                else:
                    self.assertEqual(raw, b[name][3], name)  # norms are not tuned
        self.assertGreater(moved, 0)

    def test_thread_count_does_not_change_a_byte(self):
        outs = [self.convert(f"t{t}", "--quant", "int4:g32", "--calib", CALIB, "--calib-method", "gptq", *SMALL,
                             "--calib-tune-steps", STEPS, "-t", t) for t in (1, 3)]
        files = sorted(os.listdir(outs[0]))
        self.assertEqual(files, sorted(os.listdir(outs[1])))
        for f in files:
            self.assertEqual(read_bytes(os.path.join(outs[0], f)), read_bytes(os.path.join(outs[1], f)), f)

    def test_compare_rows_keep_the_tuned_label(self):
        r = sf_json("compare", SAMPLE, "--schemes", "f32,q4_0+gptq,q4_0+gptq+tune", "--text", CALIB, "--ctx", CTX,
                    "--chunks", 4, "--bench-tokens", 0, "--calib", CALIB, *SMALL, "--calib-tune-steps", STEPS, "--json")
        self.assertEqual([row["scheme"] for row in r["rows"]], ["f32", "q4_0+gptq", "q4_0+gptq+tune"])
        p = sf("compare", SAMPLE, "--schemes", "f32,q4_0+gptq+more", "--text", CALIB, "--calib", CALIB, check=False)
        error_line(self, p, 2, "q4_0+gptq+more", "+tune")

    def test_usage_errors(self):
        out = self.path("x")
        for args, needle in [
            (["--quant", "q4_0", "--calib-tune-steps", "5"], "--calib-tune-steps needs --calib-method"),
            (["--quant", "q4_0", "--calib", CALIB, "--calib-method", "mse", "--calib-tune-steps", "0"],
             "--calib-tune-steps must be from 1"),
        ]:
            with self.subTest(args=args):
                p = sf("convert", SAMPLE, "-o", out, *args, check=False)
                error_line(self, p, 2, needle)
                self.assertFalse(os.path.exists(out))

    def test_pipeline_values_are_checked_and_a_recorded_pipeline_replays(self):
        out = self.path("x")
        spec = self.path("p.json")

        def pipeline(params):
            write_json(spec, {"stages": [{"name": "load"},
                                         {"name": "calib_gptq", "params": {"calib": CALIB, "tokens": TOKENS, "ctx": CTX,
                                                                           **params}},
                                         {"name": "quantize", "params": {"scheme": "q4_0"}}, {"name": "write"}]})
        for params, needle in [({"tune_steps": -1}, "'tune_steps' must be from 0 to 100000"),
                               ({"tune_steps": 100001}, "'tune_steps' must be from 0 to 100000"),
                               ({"tune_steps": 2, "tune_lr": 0}, "'tune_lr' must be in"),
                               ({"tune_steps": 2, "tune_batch": 0}, "'tune_batch' must be a positive integer")]:
            with self.subTest(params=params):
                pipeline(params)
                error_line(self, sf("convert", SAMPLE, "-o", out, "--pipeline", spec, check=False), 2, "calib_gptq",
                           needle)
                self.assertFalse(os.path.exists(out))
        # An untuned conversion's manifest records tune_steps 0; its pipeline converts again, to the same bytes.
        first = self.convert("first", "--quant", "q4_0", "--calib", CALIB, "--calib-method", "gptq", *SMALL)
        recorded = read_json(os.path.join(first, "manifest.json"))["pipeline"]
        stage = [s for s in recorded["stages"] if s["name"] == "calib_gptq"][0]
        self.assertEqual(stage["params"]["tune_steps"], 0)
        stage["params"]["calib"] = CALIB
        write_json(spec, recorded)
        again = self.path("again")
        sf("convert", SAMPLE, "-o", again, "--pipeline", spec)
        for f in sorted(os.listdir(first)):
            if f.endswith(".shard"):
                self.assertEqual(read_bytes(os.path.join(first, f)), read_bytes(os.path.join(again, f)), f)

    def test_a_family_the_backward_pass_does_not_cover_is_refused_before_writing(self):
        src = fixture("chatglm_6b")
        ref = read_json(os.path.join(src, "ref.json"))
        ids = self.path("glm.ids")
        with open(ids, "w") as f:
            f.write(" ".join(str(i % ref["vocab_size"]) for i in range(64)))
        out = self.path("glm")
        p = sf("convert", src, "-o", out, "--quant", "int4:g32", "--calib", "ids:" + ids, "--calib-method", "gptq",
               "--calib-ctx", 16, "--calib-tune-steps", 2, check=False)
        error_line(self, p, 2, "scale tuning does not support", "chatglm")
        self.assertFalse(os.path.exists(out))

    @release_only
    def test_every_covered_family_fixture_converts_tuned_and_runs(self):
        for name in [n for n in EXPECT if n != "chatglm_6b"] + ["hf_gqa", "hf_tied"]:
            with self.subTest(fixture=name):
                src = fixture(name)
                ref = read_json(os.path.join(src, "ref.json"))
                rng = random.Random(name)
                ids = self.path(name + ".ids")
                with open(ids, "w") as f:
                    f.write(" ".join(str(rng.randrange(ref["vocab_size"])) for _ in range(128)))
                out = self.convert(name, "--quant", "int4:g32", "--calib", "ids:" + ids, "--calib-method", "gptq",
                                   "--calib-ctx", 16, "--calib-tune-steps", 3, src=src)
                t = read_json(os.path.join(out, "manifest.json"))["calibration"]["scale_tuning"]
                self.assertGreater(t["groups"], 0)
                self.assertLessEqual(t["kl_after"] if t["kept"] else t["kl_before"], t["kl_before"])
                got = sf_json("run", out, "--ids", ",".join(map(str, ref["prompt_ids"])), "-n", 4)
                self.assertTrue(got)


if __name__ == "__main__":
    import unittest
    unittest.main()
