"""convert --target-bpw X (mixed precision to a bit budget) on the sample model: the achieved bits per
weight, counted here from the artifact's tensor shapes and types with the formats' own sizes, is at most
X and close to it; the manifest records the assignment and the artifact's tensors have the assigned
types; the same bytes at -t 1 and -t 2; perplexity falls as the budget grows and lies between the
uniform schemes around it; --tensor-quant fixes tensors; --format gguf takes only ggml types; usage
errors."""
import math
import os
import unittest

from sftest import (FIXTURES, HELDOUT, ROOT, SAMPLE, SANITIZED, TempDirTest, error_line, read_bytes, read_json,
                    release_only, sf, sf_json)
from test_gguf import GGML, Gguf

CALIB = os.path.join(ROOT, "samples", "calib.txt")
# 32 sequences of 128 tokens: enough for a stable allocation, a second per conversion. Under the
# sanitizers, where the numeric checks do not run (release_only), 16 of 64: the code paths are the same.
TOKENS, CTX = (1024, 64) if SANITIZED else (4096, 128)
SMALL = ["--calib-tokens", str(TOKENS), "--calib-ctx", str(CTX)]


def row_bytes(scheme, cols):
    """Bytes of one row in `scheme`, from the layouts in docs/format.md (written out here)."""
    if scheme == "f32":
        return 4 * cols
    if scheme in ("f16", "bf16"):
        return 2 * cols
    if scheme == "int8":
        return cols + 4  # codes and one f32 scale per row
    if scheme in ("q8_0", "q4_0"):
        per = 34 if scheme == "q8_0" else 18
        return math.ceil(cols / 32) * per  # blocks of 32: f16 scale + codes
    if scheme.startswith("int4"):
        opts = scheme.split(":")[1:]
        g = next((int(o[1:]) for o in opts if o.startswith("g")), 32)
        groups = math.ceil(cols / g)
        scales = 4 if "asym" in opts else 2  # f16 scale (and f16 min)
        return sum((min(g, cols - i * g) + 1) // 2 for i in range(groups)) + groups * scales
    raise AssertionError("unknown scheme " + scheme)


def bits_per_weight(tensors, scheme_of):
    """8 x stored bytes / weights over tensors [(name, shape)], each in scheme_of(name)."""
    bytes_, weights = 0, 0
    for name, shape in tensors:
        rows = math.prod(shape[:-1]) if len(shape) > 1 else 1
        bytes_ += rows * row_bytes(scheme_of(name), shape[-1])
        weights += rows * shape[-1]
    return 8.0 * bytes_ / weights


def source_tensors():
    return [(t["name"], t["shape"]) for t in sf_json("inspect", SAMPLE)["tensors"]]


class TargetBpw(TempDirTest):
    # Conversions and perplexities shared by the tests (each made once).
    _cache = {}

    @classmethod
    def tearDownClass(cls):
        import shutil
        for out in cls._cache.values():
            if isinstance(out, str) and out.startswith("/tmp/sf-bpw-"):
                shutil.rmtree(out, ignore_errors=True)

    def budget(self, target, *extra):
        key = ("budget", target, extra)
        if key not in self._cache:
            import tempfile
            out = os.path.join(tempfile.mkdtemp(prefix="sf-bpw-"), "art")
            sf("convert", SAMPLE, "-o", out, "--target-bpw", target, "--calib", CALIB, *SMALL, *extra)
            self._cache[key] = out
        return self._cache[key]

    def uniform(self, scheme):
        key = ("uniform", scheme)
        if key not in self._cache:
            import tempfile
            out = os.path.join(tempfile.mkdtemp(prefix="sf-bpw-"), "art")
            sf("convert", SAMPLE, "-o", out, "--quant", scheme)
            self._cache[key] = out
        return self._cache[key]

    def ppl(self, art):
        key = ("ppl", art)
        if key not in self._cache:
            self._cache[key] = sf_json("eval", "ppl", art, "--text", HELDOUT, "--ctx", 128)["ppl"]
        return self._cache[key]

    def manifest(self, art):
        return read_json(os.path.join(art, "manifest.json"))

    @release_only
    def test_achieved_bits_are_at_most_the_target_and_close_to_it(self):
        tensors = source_tensors()
        for target in (4.8, 5.5, 7):
            m = self.manifest(self.budget(target))
            chosen = m["bit_budget"]["tensors"]
            self.assertEqual(sorted(chosen), sorted(n for n, _ in tensors))  # every stored tensor, once
            counted = bits_per_weight(tensors, chosen.get)
            self.assertLessEqual(counted, target)
            self.assertGreater(counted, target - 0.05, target)  # the budget is spent, not left over
            # The same counting as the manifest's summary (and compare's bits/w).
            self.assertAlmostEqual(m["summary"]["bits_per_weight"], counted, places=9)
            self.assertAlmostEqual(m["bit_budget"]["achieved_bpw"], counted, places=9)
            self.assertEqual(m["bit_budget"]["target_bpw"], target)

    def test_artifact_tensors_have_the_assigned_types(self):
        art = self.budget(5.5)
        chosen = self.manifest(art)["bit_budget"]["tensors"]
        stored = {t["name"]: t for t in sf_json("inspect", art)["tensors"]}
        self.assertEqual(set(stored), set(chosen))
        for name, scheme in chosen.items():
            t = stored[name]
            self.assertEqual(t["type"], {"int4": "int4_sym"}.get(scheme.split(":")[0], scheme.split(":")[0]), name)
            self.assertEqual(t["bytes"], row_bytes(scheme, t["shape"][-1]) * (t["shape"][0] if len(t["shape"]) > 1 else 1))
        # Mixed indeed: more than one scheme among the matrices; norms stay f32.
        self.assertGreater(len({s for n, s in chosen.items() if not n.endswith("norm.weight")}), 1)
        self.assertTrue(all(s == "f32" for n, s in chosen.items() if n.endswith("norm.weight")))

    def test_manifest_records_the_calibration_data_and_pipeline_reproduces_it(self):
        import hashlib
        art = self.budget(5.5)
        m = self.manifest(art)
        b = m["bit_budget"]
        self.assertEqual(b["calib"], "calib.txt")
        self.assertEqual(b["file_sha256"], hashlib.sha256(read_bytes(CALIB)).hexdigest())
        self.assertEqual((b["sequences"], b["ctx"]), (TOKENS // CTX, CTX))
        # The quantize stage holds the assignment as overrides: the manifest's pipeline, given back as a
        # pipeline file, makes the same tensors without measuring anything.
        pipe = self.path("pipe.json")
        with open(pipe, "w") as f:
            import json
            json.dump(m["pipeline"], f)
        again = self.path("again")
        sf("convert", SAMPLE, "-o", again, "--pipeline", pipe)
        for f in sorted(os.listdir(art)):
            if f.endswith(".shard"):
                self.assertEqual(read_bytes(os.path.join(art, f)), read_bytes(os.path.join(again, f)), f)

    def test_the_measure_is_recorded_and_chosen(self):
        # Block linears are measured by their block's output by default; --bpw-measure layer takes the
        # layer's own output (with its Gram matrix on this small model) and is recorded as such.
        self.assertEqual(self.manifest(self.budget(5.5))["bit_budget"]["measure"], "block")
        layer = self.budget(5.5, "--bpw-measure", "layer")
        self.assertEqual(self.manifest(layer)["bit_budget"]["measure"], "gram")
        self.assertLessEqual(self.manifest(layer)["summary"]["bits_per_weight"], 5.5)

    @release_only
    def test_thread_count_does_not_change_a_byte(self):
        outs = []
        for t in ("1", "2"):
            out = self.path("t" + t)
            sf("convert", SAMPLE, "-o", out, "--target-bpw", "6", "--calib", CALIB, *SMALL, "-t", t)
            outs.append({f: read_bytes(os.path.join(out, f)) for f in sorted(os.listdir(out))})
        self.assertEqual(outs[0], outs[1])

    @release_only
    def test_more_bits_never_cost_perplexity_and_budgets_sit_between_uniform_schemes(self):
        p = {t: self.ppl(self.budget(t)) for t in (4.8, 5.5, 7)}
        tol = 0.01
        self.assertLessEqual(p[5.5], p[4.8] + tol, p)
        self.assertLessEqual(p[7], p[5.5] + tol, p)
        int4, int8 = self.ppl(self.uniform("int4:g32")), self.ppl(self.uniform("int8"))
        for t in (5.5, 7):  # both between int4:g32 (5.1 bits) and int8 (8.25 bits)
            self.assertGreaterEqual(p[t], int8 - tol, (t, p[t], int8))
            self.assertLessEqual(p[t], int4 + tol, (t, p[t], int4))

    @release_only
    def test_at_a_uniform_schemes_size_the_budget_loses_less(self):
        g128 = self.uniform("int4:g128")
        size = self.manifest(g128)["summary"]["bits_per_weight"]
        mixed = self.budget(math.floor(size * 1e4) / 1e4)
        self.assertLessEqual(self.manifest(mixed)["summary"]["bits_per_weight"], size)
        self.assertLess(self.ppl(mixed), self.ppl(g128))

    def test_tensor_quant_fixes_a_tensor_and_the_rest_is_allocated(self):
        art = self.path("fixed")
        sf("convert", SAMPLE, "-o", art, "--target-bpw", "5.5", "--calib", CALIB, *SMALL,
           "--tensor-quant", "head.output.weight=f16", "--tensor-quant", "blocks.0.ffn.*.weight=int4:g128")
        m = self.manifest(art)
        chosen = m["bit_budget"]["tensors"]
        self.assertEqual(chosen["head.output.weight"], "f16")
        for part in ("gate", "up", "down"):
            self.assertEqual(chosen[f"blocks.0.ffn.{part}.weight"], "int4:g128:sym")
        counted = bits_per_weight(source_tensors(), chosen.get)
        self.assertLessEqual(counted, 5.5)
        self.assertAlmostEqual(m["summary"]["bits_per_weight"], counted, places=9)

    @release_only  # under the sanitizers: e2e.calibration and e2e.gguf take these writers and methods
    def test_with_a_calibration_method_each_tensor_is_encoded_in_its_scheme(self):
        art = self.path("gptq")
        sf("convert", SAMPLE, "-o", art, "--target-bpw", "5.5", "--calib", CALIB, *SMALL, "--calib-method", "gptq")
        m = self.manifest(art)
        chosen = m["bit_budget"]["tensors"]
        stored = {t["name"]: t["type"] for t in sf_json("inspect", art)["tensors"]}
        for name, scheme in chosen.items():
            self.assertEqual(stored[name], {"int4": "int4_sym"}.get(scheme.split(":")[0], scheme.split(":")[0]))
        # Every block linear and the output projection (integer types here) went through GPTQ.
        linears = [n for n, s in chosen.items() if n.startswith("blocks.") and not n.endswith("norm.weight")]
        integer = [n for n in linears + ["head.output.weight"] if chosen[n] not in ("f16", "f32")]
        self.assertEqual(m["calibration"]["calibrated_tensors"], len(integer))
        self.assertLessEqual(m["summary"]["bits_per_weight"], 5.5)
        self.assertLess(self.ppl(art), self.ppl(self.uniform("int4:g32")))

    @release_only
    def test_gguf_ladder_takes_only_ggml_types(self):
        out = self.path("m.gguf")
        j = sf_json("convert", SAMPLE, "-o", out, "--format", "gguf", "--target-bpw", "5.5", "--calib", CALIB, *SMALL)
        g = Gguf(out)
        types = {g.type_name(n) for n in g.tensors}
        self.assertLessEqual(types, {"f32", "f16", "q8_0", "q4_0"})
        self.assertTrue({"q4_0", "q8_0"} <= types, types)
        # Bits per weight counted from the file's own tensor table.
        bytes_, weights = 0, 0
        for name, (ne, t, _) in g.tensors.items():
            _, block, size = GGML[t]
            n = math.prod(ne)
            bytes_ += n // block * size
            weights += n
        self.assertLessEqual(8.0 * bytes_ / weights, 5.5)
        self.assertAlmostEqual(j["summary"]["bits_per_weight"], 8.0 * bytes_ / weights, places=9)
        self.assertAlmostEqual(j["bit_budget"]["report"]["achieved_bpw"], 8.0 * bytes_ / weights, places=9)
        self.assertTrue(all(s in ("f32", "q4_0", "q8_0", "f16") for s in j["bit_budget"]["assignment"]["tensors"].values()))

    @release_only  # under the sanitizers: e2e.calibration and e2e.gguf take these writers and methods
    def test_gguf_fused_tensors_share_one_scheme(self):
        # GPT-2's GGUF stores q, k and v as one attn_qkv: one type for the three, whatever the budget.
        src = os.path.join(FIXTURES, "gpt2_hub")
        ids = self.path("calib.ids")
        with open(ids, "w") as f:
            f.write(" ".join(str((i * 37) % 300) for i in range(2048)))
        for target in ("6", "7", "8"):
            out = self.path(f"gpt2-{target}.gguf")
            j = sf_json("convert", src, "-o", out, "--format", "gguf", "--target-bpw", target, "--calib", "ids:" + ids,
                        "--calib-ctx", "32")
            chosen = j["bit_budget"]["assignment"]["tensors"]
            layers = {n.split(".")[1] for n in chosen if n.startswith("blocks.")}
            for b in layers:
                self.assertEqual(len({chosen[f"blocks.{b}.attn.{p}.weight"] for p in "qkv"}), 1, (target, b))
            g = Gguf(out)
            self.assertIn("blk.0.attn_qkv.weight", g.tensors)
            self.assertLessEqual(j["summary"]["bits_per_weight"], float(target))

    @release_only
    def test_a_tied_embedding_is_one_tensor_of_the_budget(self):
        src = os.path.join(FIXTURES, "hf_tied")
        ids = self.path("calib.ids")
        with open(ids, "w") as f:
            f.write(" ".join(str((i * 37) % 300) for i in range(2048)))
        out = self.path("tied")
        sf("convert", src, "-o", out, "--target-bpw", "6", "--calib", "ids:" + ids, "--calib-ctx", "32")
        m = self.manifest(out)
        chosen = m["bit_budget"]["tensors"]
        self.assertIn("embed.weight", chosen)
        self.assertNotIn("head.output.weight", chosen)
        counted = bits_per_weight([(t["name"], t["shape"]) for t in sf_json("inspect", src)["tensors"]], chosen.get)
        self.assertLessEqual(counted, 6)
        self.assertAlmostEqual(m["summary"]["bits_per_weight"], counted, places=9)

    def test_usage_errors(self):
        out = self.path("bad")
        # Without calibration data.
        error_line(self, sf("convert", SAMPLE, "-o", out, "--target-bpw", "5", check=False), 2, "--target-bpw", "--calib")
        # Below the smallest reachable: named, computed here with every matrix in int4:g128 and norms f32.
        tensors = source_tensors()
        smallest = bits_per_weight(tensors, lambda n: "f32" if n.endswith("norm.weight") else "int4:g128")
        line = error_line(self, sf("convert", SAMPLE, "-o", out, "--target-bpw", "4", "--calib", CALIB, *SMALL,
                                   check=False), 2, "--target-bpw 4", "at least")
        named = float(line.split("at least ")[1].split()[0])
        self.assertGreaterEqual(named, smallest)
        self.assertLess(named, smallest + 1e-4)
        # A base scheme would decide nothing; nor do pipelines, trimming, or a target that is no number of bits.
        for extra in (["--quant", "int8"], ["--dtype", "f16"], ["--trim-vocab", "range:0-255"],
                      ["--pipeline", CALIB], ["--allow-non-finite"]):
            error_line(self, sf("convert", SAMPLE, "-o", out, "--target-bpw", "5", "--calib", CALIB, *extra,
                                check=False), 2)
        # --bpw-measure: one of the measures, and only beside --target-bpw.
        error_line(self, sf("convert", SAMPLE, "-o", out, "--target-bpw", "5", "--calib", CALIB, "--bpw-measure", "kl",
                            check=False), 2, "--bpw-measure", "block or layer")
        error_line(self, sf("convert", SAMPLE, "-o", out, "--quant", "int8", "--bpw-measure", "layer", check=False), 2,
                   "--bpw-measure", "--target-bpw")
        for bad in ("0", "-1", "nan", "100"):
            error_line(self, sf("convert", SAMPLE, "-o", out, "--target-bpw", bad, "--calib", CALIB, check=False), 2,
                       "--target-bpw")
        self.assertFalse(os.path.exists(out))


if __name__ == "__main__":
    unittest.main()
