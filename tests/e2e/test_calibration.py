"""Calibrated conversion (convert --calib FILE --calib-method NAME, compare's SCHEME+METHOD): what the
manifest records, byte-identical artifacts whatever the thread count, calibrated artifacts that
evaluate (shards and GGUF), usage errors, perplexity no worse than round-to-nearest on the sample,
and a calibrated conversion of every family fixture that runs."""
import hashlib
import os
import random
import unittest

from family_refs import EXPECT
from sftest import (HELDOUT, ROOT, SAMPLE, SANITIZED, TempDirTest, error_line, fixture, read_bytes, read_json,
                    release_only, sf, sf_json, write_json)

CALIB = os.path.join(ROOT, "samples", "calib.txt")
METHODS = ["mse", "awq", "gptq"]
# Small and fast: 16 sequences of 128 tokens; under the sanitizers, where the numeric checks do not run
# (release_only), 8 of 64: the code paths are the same.
TOKENS, CTX = (512, 64) if SANITIZED else (2048, 128)
SMALL = ["--calib-tokens", str(TOKENS), "--calib-ctx", str(CTX)]


def artifact_bytes(out):
    return {f: read_bytes(os.path.join(out, f)) for f in sorted(os.listdir(out))}


def calib_stage(manifest):
    stages = [s for s in manifest["pipeline"]["stages"] if s["name"].startswith("calib_")]
    assert len(stages) == 1, manifest["pipeline"]
    return stages[0]


class Calibration(TempDirTest):
    def convert(self, tag, *args):
        out = self.path(tag)
        sf("convert", SAMPLE, "-o", out, *args)
        return out

    def ppl(self, art):
        return sf_json("eval", "ppl", art, "--text", HELDOUT, "--ctx", 128, "--chunks", 40)["ppl"]

    def test_manifest_records_the_file_sha256_and_every_setting(self):
        out = self.convert("awq", "--quant", "int4:g32", "--calib", CALIB, "--calib-method", "awq", *SMALL)
        m = read_json(os.path.join(out, "manifest.json"))
        stage = calib_stage(m)
        self.assertEqual(stage["name"], "calib_awq")
        p = stage["params"]
        self.assertEqual(p["calib"], "calib.txt")  # the base name: manifests hold no paths
        self.assertEqual(p["file_sha256"], hashlib.sha256(read_bytes(CALIB)).hexdigest())
        self.assertEqual((p["tokens"], p["ctx"]), (TOKENS, CTX))
        for key in ["clip_steps", "min_clip", "awq_grid", "gptq_damp", "gptq_act_order", "gptq_block"]:
            self.assertIn(key, p)
        names = [s["name"] for s in m["pipeline"]["stages"]]
        self.assertEqual(names, ["load", "calib_awq", "quantize", "write"])
        self.assertEqual(m["calibration"]["sequences"], TOKENS // CTX)
        # The block check tried every searched scaling and kept or declined each: at most three a
        # block here (q k v, gate up, down; the sample's grouped-query v -> o cannot fold).
        folds = m["calibration"]["awq_folds"]
        layers = read_json(os.path.join(SAMPLE, "config.json"))["num_hidden_layers"]
        self.assertLessEqual(folds["kept"] + folds["declined"], 3 * layers)
        self.assertGreater(folds["kept"] + folds["declined"], 0)
        # The cost is reported by convert, never written into the artifact.
        j = sf_json("convert", SAMPLE, "-o", self.path("awq2"), "--quant", "int4:g32", "--calib", CALIB,
                    "--calib-method", "awq", *SMALL, "--json")
        rep = j["stages"]["calib_awq"]
        self.assertGreater(rep["peak_rss_bytes"], 0)
        self.assertGreaterEqual(rep["seconds"], 0)
        self.assertEqual(read_bytes(os.path.join(out, "manifest.json")),
                         read_bytes(os.path.join(self.path("awq2"), "manifest.json")))

    def test_ids_file_is_recorded_as_ids(self):
        import sentencepiece as spm
        sp = spm.SentencePieceProcessor(model_file=os.path.join(SAMPLE, "tokenizer.model"))
        ids = self.path("calib.ids")
        with open(ids, "w") as f:
            f.write(" ".join(map(str, sp.encode(read_bytes(CALIB).decode("utf-8")))))
        out = self.convert("ids", "--quant", "q4_0", "--calib", "ids:" + ids, "--calib-method", "mse", *SMALL)
        p = calib_stage(read_json(os.path.join(out, "manifest.json")))["params"]
        self.assertEqual(p["calib"], "ids:calib.ids")
        self.assertEqual(p["file_sha256"], hashlib.sha256(read_bytes(ids)).hexdigest())
        # The same tokens as the text through the tokenizer: the same artifact bytes.
        text = self.convert("text", "--quant", "q4_0", "--calib", CALIB, "--calib-method", "mse", *SMALL)
        a, b = artifact_bytes(out), artifact_bytes(text)
        self.assertEqual(sorted(a), sorted(b))
        for f in a:
            if f != "manifest.json":
                self.assertEqual(a[f], b[f], f)

    @release_only
    def test_thread_count_does_not_change_a_byte(self):
        for method in METHODS:
            with self.subTest(method=method):
                one = self.convert(method + "1", "--quant", "int4:g32", "--calib", CALIB, "--calib-method", method,
                                   *SMALL, "-t", 1)
                three = self.convert(method + "3", "--quant", "int4:g32", "--calib", CALIB, "--calib-method", method,
                                     *SMALL, "-t", 3)
                self.assertEqual(artifact_bytes(one), artifact_bytes(three))
        # GPTQ's other statistics paths: without the reference stream (each layer fits its own
        # quantized input), and not sequential (all four groups' statistics from one run).
        spec = self.path("p.json")
        for params in [{"reference": False, "drift": False}, {"sequential": False}]:
            with self.subTest(params=params):
                write_json(spec, {"stages": [{"name": "load"},
                                             {"name": "calib_gptq", "params": {"calib": CALIB, "tokens": TOKENS,
                                                                               "ctx": CTX, **params}},
                                             {"name": "quantize", "params": {"scheme": "int4:g32"}}, {"name": "write"}]})
                outs = []
                for t in (1, 3):
                    outs.append(self.path(f"gptq-{len(outs)}-{'-'.join(params)}"))
                    sf("convert", SAMPLE, "-o", outs[-1], "--pipeline", spec, "-t", t)
                self.assertEqual(artifact_bytes(outs[0]), artifact_bytes(outs[1]))

    @release_only
    def test_calibrated_artifacts_evaluate(self):
        f32 = self.ppl(self.convert("f32"))
        for scheme, method in [("int4:g32", "gptq"), ("q4_0", "awq"), ("int8", "mse")]:
            with self.subTest(scheme=scheme, method=method):
                out = self.convert(scheme.replace(":", "_"), "--quant", scheme, "--calib", CALIB, "--calib-method",
                                   method, *SMALL)
                sf("verify", out)
                ppl = self.ppl(out)
                self.assertLess(ppl, f32 * 1.1, f"{scheme}+{method}: {ppl} against f32 {f32}")

    def test_gguf_with_a_calibrated_q4_0(self):
        out = self.path("m.gguf")
        sf("convert", SAMPLE, "-o", out, "--format", "gguf", "--quant", "q4_0", "--calib", CALIB,
           "--calib-method", "awq", *SMALL)
        rtn = self.path("rtn.gguf")
        sf("convert", SAMPLE, "-o", rtn, "--format", "gguf", "--quant", "q4_0")
        self.assertLess(self.ppl(out), self.ppl(rtn) * 1.01)

    @release_only
    def test_perplexity_is_no_worse_than_round_to_nearest(self):
        for scheme in ["int4:g32", "q4_0"]:
            rtn = self.ppl(self.convert("rtn" + scheme.replace(":", "_"), "--quant", scheme))
            for method in METHODS:
                with self.subTest(scheme=scheme, method=method):
                    out = self.convert(method + scheme.replace(":", "_"), "--quant", scheme, "--calib", CALIB,
                                       "--calib-method", method, *SMALL)
                    self.assertLessEqual(self.ppl(out), rtn * 1.005, f"{scheme}+{method} against {rtn}")

    def test_usage_errors(self):
        out = self.path("x")
        error_line(self, sf("convert", SAMPLE, "-o", out, "--calib-method", "awq", check=False), 2, "--calib")
        error_line(self, sf("convert", SAMPLE, "-o", out, "--calib", CALIB, check=False), 2, "--calib-method")
        error_line(self, sf("convert", SAMPLE, "-o", out, "--calib", CALIB, "--calib-method", "nope", check=False), 2,
                   "nope", "mse")
        short = self.path("short.txt")
        with open(short, "w") as f:
            f.write("a few words only")
        error_line(self, sf("convert", SAMPLE, "-o", out, "--quant", "q4_0", "--calib", short, "--calib-method", "mse",
                            check=False), 1, short, "fewer than one calibration sequence")
        binary = self.path("weights.bin")
        with open(binary, "wb") as f:
            f.write(bytes(range(256)) * 64)
        error_line(self, sf("convert", SAMPLE, "-o", out, "--quant", "q4_0", "--calib", binary, "--calib-method", "mse",
                            check=False), 1, binary, "not UTF-8 text")
        ids = self.path("bad.ids")
        with open(ids, "w") as f:
            f.write("1 2 3 1000000\n")
        error_line(self, sf("convert", SAMPLE, "-o", out, "--quant", "q4_0", "--calib", "ids:" + ids,
                            "--calib-method", "mse", check=False), 1, ids, "1000000", "outside the vocabulary")
        error_line(self, sf("convert", SAMPLE, "-o", out, "--quant", "q4_0", "--calib", CALIB, "--calib-method", "mse",
                            "--calib-tokens", "10", check=False), 2, "--calib-tokens")
        error_line(self, sf("convert", SAMPLE, "-o", out, "--quant", "q4_0", "--calib", CALIB, "--calib-method", "mse",
                            "--trim-vocab", "range:0-300", check=False), 2, "trim_vocab")
        # Learned positions cover max_seq positions only.
        gpt2 = fixture("gpt2_hub")
        error_line(self, sf("convert", gpt2, "-o", out, "--quant", "int8", "--calib", "ids:" + ids, "--calib-method",
                            "mse", "--calib-ctx", "4096", check=False), 2, "learned position table")
        self.assertFalse(os.path.exists(out))
        # compare: a calibrated scheme needs --calib.
        error_line(self, sf("compare", SAMPLE, "--schemes", "f32,int4:g32+gptq", "--text", HELDOUT, check=False), 2,
                   "int4:g32+gptq", "--calib")

    def test_usage_errors_are_one_line_and_name_the_option(self):
        out = self.path("x")
        base = ["convert", SAMPLE, "-o", out, "--calib", CALIB, "--calib-method", "mse"]
        line = error_line(self, sf(*base, "--quant", "q4_0", "--calib-tokens", "0", check=False), 2,
                          "--calib-tokens", "positive")
        self.assertNotIn("Value", line)  # not CLI11's generic range message
        error_line(self, sf(*base, "--quant", "q4_0", "--calib-ctx", "1", check=False), 2, "--calib-ctx", "2 to 65536")
        self.assertFalse(os.path.exists(out))

    def test_a_float_scheme_leaves_nothing_to_calibrate(self):
        out = self.path("x")
        base = ["convert", SAMPLE, "-o", out, "--calib", CALIB, "--calib-method", "gptq", *SMALL]
        for extra, name in [(["--quant", "f16"], "--quant"), (["--dtype", "bf16"], "--dtype"), ([], "f32"),
                            (["--quant", "f32", "--tensor-quant", "embed.weight=f16"], "--quant")]:
            with self.subTest(extra=extra):
                error_line(self, sf(*base, *extra, check=False), 2, "--calib-method", name, "float")
        self.assertFalse(os.path.exists(out))
        # An integer override gives calibration something to encode.
        ok = self.convert("ok", "--quant", "f16", "--tensor-quant", "blocks.0.ffn.up.weight=int8", "--calib", CALIB,
                          "--calib-method", "mse", *SMALL)
        self.assertEqual(read_json(os.path.join(ok, "manifest.json"))["calibration"]["calibrated_tensors"], 1)
        # The same from a pipeline file: its quantize stage's scheme is float, no integer override.
        spec = self.path("p.json")
        write_json(spec, {"stages": [{"name": "load"}, {"name": "calib_mse", "params": {"calib": CALIB, "ctx": 128}},
                                     {"name": "quantize", "params": {"scheme": "bf16"}}, {"name": "write"}]})
        error_line(self, sf("convert", SAMPLE, "-o", out, "--pipeline", spec, check=False), 2, "calib_mse",
                   "integer scheme")
        self.assertFalse(os.path.exists(out))

    def test_pipeline_values_out_of_range_are_refused_naming_the_stage_key(self):
        out = self.path("x")
        spec = self.path("p.json")
        cases = [({"clip_steps": 1001}, "'clip_steps' must be from 1 to 1000"),
                 ({"awq_grid": 5000}, "'awq_grid' must be from 1 to 1000"),
                 ({"gptq_block": 0}, "'gptq_block' must be a positive integer"),
                 ({"gptq_block": 100000}, "'gptq_block' must be from 1 to 65536"),
                 ({"ctx": 1}, "'ctx' must be from 2 to 65536"),
                 ({"ctx": 70000}, "'ctx' must be from 2 to 65536"),
                 ({"tokens": 0}, "'tokens' must be a positive integer"),
                 # plan(): the values came from the file, so the message names the stage's keys.
                 ({"tokens": 10, "ctx": 128}, "calib_gptq stage: 'tokens'")]
        for params, needle in cases:
            with self.subTest(params=params):
                write_json(spec, {"stages": [{"name": "load"}, {"name": "calib_gptq", "params": {"calib": CALIB, **params}},
                                             {"name": "quantize", "params": {"scheme": "q4_0"}}, {"name": "write"}]})
                error_line(self, sf("convert", SAMPLE, "-o", out, "--pipeline", spec, check=False), 2, needle)
        self.assertFalse(os.path.exists(out))
        # 1000 itself is allowed.
        write_json(spec, {"stages": [{"name": "load"}, {"name": "calib_mse", "params": {"calib": CALIB, "clip_steps": 1000,
                                                                                          "tokens": TOKENS, "ctx": CTX}},
                                     {"name": "quantize", "params": {"scheme": "q4_0"}}, {"name": "write"}]})
        sf("convert", SAMPLE, "-o", out, "--pipeline", spec)
        self.assertEqual(calib_stage(read_json(os.path.join(out, "manifest.json")))["params"]["clip_steps"], 1000)

    def test_activations_that_overflow_are_refused_naming_the_block(self):
        import shutil
        import torch
        src = fixture("hf_tied")
        ids = self.path("calib.ids")
        with open(ids, "w") as f:
            f.write(" ".join(str(i % 300) for i in range(256)))
        bad = self.path("overflow")
        os.makedirs(bad)
        shutil.copy(os.path.join(src, "config.json"), bad)
        sd = torch.load(os.path.join(src, "pytorch_model.bin"))
        # Finite weights whose product overflows f32: up ~1e30 times down ~1e30.
        for name in ["model.layers.0.mlp.up_proj.weight", "model.layers.0.mlp.down_proj.weight"]:
            sd[name].fill_(1e30)
        torch.save(sd, os.path.join(bad, "pytorch_model.bin"))
        out = self.path("x")
        keep = ["--tensor-quant", "blocks.0.ffn.up.weight=f32", "--tensor-quant", "blocks.0.ffn.down.weight=f32"]
        for method in METHODS:
            with self.subTest(method=method):
                error_line(self, sf("convert", bad, "-o", out, "--quant", "int4:g32", *keep, "--calib", "ids:" + ids,
                                    "--calib-method", method, "--calib-ctx", 16, check=False), 1, "block 0",
                           "calibration activations became non-finite")
                self.assertFalse(os.path.exists(out))

    def test_non_finite_and_unrepresentable_weights_are_refused_as_without_calibration(self):
        import shutil
        import torch
        src = fixture("hf_tied")
        ids = self.path("calib.ids")
        with open(ids, "w") as f:
            f.write(" ".join(str(i % 300) for i in range(256)))
        for what, value, needle in [("nan", float("nan"), "non-finite"), ("huge", 3e38, "cannot represent")]:
            with self.subTest(what=what):
                bad = self.path("bad_" + what)
                os.makedirs(bad)
                shutil.copy(os.path.join(src, "config.json"), bad)
                sd = torch.load(os.path.join(src, "pytorch_model.bin"))
                sd["model.layers.0.self_attn.k_proj.weight"][3, 5] = value
                torch.save(sd, os.path.join(bad, "pytorch_model.bin"))
                # 3e38: the int4 group's f16 scale overflows (the quantize stage's check, shared)
                error_line(self, sf("convert", bad, "-o", self.path("x"), "--quant", "int4:g32", "--calib",
                                    "ids:" + ids, "--calib-method", "gptq", "--calib-ctx", 16, check=False), 1,
                           "blocks.0.attn.k.weight", needle)

    def test_compare_rows_keep_the_calibrated_label(self):
        r = sf_json("compare", SAMPLE, "--schemes", "f32,int4:g32,int4:g32+mse", "--text", HELDOUT, "--ctx", 128,
                    "--chunks", 8, "--bench-tokens", 0, "--calib", CALIB, *SMALL, "--json")
        self.assertEqual([row["scheme"] for row in r["rows"]], ["f32", "int4:g32", "int4:g32+mse"])

    @release_only
    def test_every_family_fixture_converts_calibrated_and_runs(self):
        for name in list(EXPECT) + ["hf_gqa", "hf_tied"]:
            src = fixture(name)
            ref = read_json(os.path.join(src, "ref.json"))
            rng = random.Random(name)
            ids = self.path(name + ".ids")
            with open(ids, "w") as f:
                f.write(" ".join(str(rng.randrange(ref["vocab_size"])) for _ in range(256)))
            for method in METHODS:
                with self.subTest(fixture=name, method=method):
                    out = self.path(name + method)
                    sf("convert", src, "-o", out, "--quant", "int4:g32", "--calib", "ids:" + ids, "--calib-method",
                       method, "--calib-ctx", 16)
                    m = read_json(os.path.join(out, "manifest.json"))
                    self.assertGreater(m["calibration"]["calibrated_tensors"], 0)
                    got = sf_json("run", out, "--ids", ",".join(map(str, ref["prompt_ids"])), "-n", 4)
                    self.assertTrue(got)


if __name__ == "__main__":
    unittest.main()
