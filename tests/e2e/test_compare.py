"""eval kld and compare: the quantization cost table."""
import csv
import glob
import hashlib
import io
import json
import os
import signal
import struct
import subprocess
import time
import unittest
import xml.etree.ElementTree as ET

from sftest import HELDOUT, SAMPLE, SF, TempDirTest, fixture, read_bytes, reseal, sf, sf_json, write_bytes



class Compare(TempDirTest):
    def test_kld_of_an_artifact_against_itself_is_zero(self):
        out = self.path("f32")
        sf("convert", SAMPLE, "-o", out)
        r = sf_json("eval", "kld", out, "--ref", out, "--text", HELDOUT, "--ctx", 64, "--chunks", 8)
        self.assertEqual(r["kld"], 0.0)
        self.assertEqual(r["top1_agreement"], 1.0)
        self.assertEqual(r["ppl"], r["ref_ppl"])
        p = sf_json("eval", "ppl", out, "--text", HELDOUT, "--ctx", 64, "--chunks", 8)
        self.assertAlmostEqual(r["ppl"], p["ppl"], places=9)

    def test_evaluation_does_not_depend_on_the_thread_count(self):
        out = self.path("q")
        sf("convert", SAMPLE, "-o", out, "--quant", "int4:g64:asym")
        args = ["eval", "ppl", out, "--text", HELDOUT, "--ctx", 64, "--chunks", 12]
        one, two = sf_json(*args, "-t", 1), sf_json(*args, "-t", 2)
        self.assertEqual(one["ppl"], two["ppl"])
        self.assertEqual(one["ppl_stderr"], two["ppl_stderr"])
        a = sf_json("run", out, "-p", "The hacker", "-n", 16, "-t", 1)
        b = sf_json("run", out, "-p", "The hacker", "-n", 16, "-t", 2)
        self.assertEqual(a["ids"], b["ids"])
        # Sampling is reproducible from its seed.
        s1 = sf_json("run", out, "-p", "The hacker", "-n", 24, "--temp", 0.9, "--seed", 7, "--ignore-eos")
        s2 = sf_json("run", out, "-p", "The hacker", "-n", 24, "--temp", 0.9, "--seed", 7, "--ignore-eos")
        s3 = sf_json("run", out, "-p", "The hacker", "-n", 24, "--temp", 0.9, "--seed", 8, "--ignore-eos")
        self.assertEqual(s1["ids"], s2["ids"])
        self.assertNotEqual(s1["ids"], s3["ids"])

    def test_table_orders_schemes_by_cost(self):
        keep = self.path("keep")
        md = self.path("report.md")
        r = sf_json("compare", SAMPLE, "--schemes", "f32,int8,int4:g128:asym", "--text", HELDOUT, "--ctx", 64,
                    "--chunks", 20, "--keep", keep, "--out", md, "--bench-tokens", 4)
        rows = {x["scheme"]: x for x in r["rows"]}
        self.assertEqual(r["reference"], "f32")
        self.assertEqual(rows["f32"]["kld"], 0.0)
        self.assertGreater(rows["int8"]["kld"], 0.0)
        self.assertGreater(rows["int4:g128:asym"]["kld"], rows["int8"]["kld"])
        self.assertGreater(rows["f32"]["weight_bytes"], rows["int8"]["weight_bytes"])
        self.assertGreater(rows["int8"]["weight_bytes"], rows["int4:g128:asym"]["weight_bytes"])
        self.assertLess(rows["int4:g128:asym"]["top1_agreement"], 1.0)
        # The PPL column is the same number eval ppl gives for the kept artifact.
        p = sf_json("eval", "ppl", os.path.join(keep, "int8"), "--text", HELDOUT, "--ctx", 64, "--chunks", 20)
        self.assertAlmostEqual(rows["int8"]["ppl"], p["ppl"], places=9)
        with open(md) as f:
            lines = f.read().splitlines()
        self.assertEqual(len(lines), 2 + 3)
        self.assertTrue(lines[3].startswith("| int8 |"))

    def test_format_converts_every_scheme_to_it_and_runs_it_from_there(self):
        keep = self.path("keep")
        args = ["--schemes", "f32,q4_0", "--text", HELDOUT, "--ctx", 64, "--chunks", 8, "--bench-tokens", 0]
        g = sf_json("compare", SAMPLE, *args, "--format", "gguf", "--keep", keep)
        self.assertEqual(sorted(os.listdir(keep)), ["f32.gguf", "q4_0.gguf"])
        shards = sf_json("compare", SAMPLE, *args)
        # The same weights in another container: the same perplexities; the size is the whole file's.
        for a, b in zip(g["rows"], shards["rows"]):
            self.assertEqual(a["ppl"], b["ppl"])
            self.assertEqual(a["kld"], b["kld"])
        self.assertEqual(g["rows"][1]["weight_bytes"], os.path.getsize(os.path.join(keep, "q4_0.gguf")))
        z = sf_json("compare", SAMPLE, *args, "--format", "zip", "--keep", self.path("keepz"))
        self.assertEqual([r["ppl"] for r in z["rows"]], [r["ppl"] for r in shards["rows"]])
        self.assertEqual(z["rows"][1]["weight_bytes"], os.path.getsize(self.path("keepz", "q4_0.zip")))
        # What cannot run, or cannot be stored in the format, is refused before converting anything.
        for fmt, schemes, needle in (("onnx", "f32,q4_0", "does not run onnx"),
                                     ("gguf", "f32,int8", "cannot store int8"),
                                     ("gguf5", "f32", "unknown output format")):
            p = sf("compare", SAMPLE, "--schemes", schemes, "--text", HELDOUT, "--format", fmt,
                   "--keep", self.path("k_" + fmt), check=False)
            self.assertEqual(p.returncode, 2, p.stderr)
            self.assertIn(needle, p.stderr)
            self.assertEqual(os.listdir(self.path("k_" + fmt)) if os.path.exists(self.path("k_" + fmt)) else [], [])

    def test_bad_scheme_fails_cleanly(self):
        p = sf("compare", SAMPLE, "--schemes", "f32,int5", "--text", HELDOUT, check=False)
        self.assertEqual(p.returncode, 2)  # a bad scheme is a usage error
        self.assertIn("int5", p.stderr)

    def test_reference_runs_once_and_numbers_equal_eval_kld(self):
        keep = self.path("keep")
        r = sf_json("compare", SAMPLE, "--schemes", "f32,int8,int4:g32", "--text", HELDOUT, "--ctx", 64,
                    "--chunks", 10, "--keep", keep, "--bench-tokens", 0, "-t", 2)
        rows = {x["scheme"]: x for x in r["rows"]}
        ref = os.path.join(keep, "f32")
        for scheme, d in [("int8", "int8"), ("int4:g32", "int4_g32")]:
            k = sf_json("eval", "kld", os.path.join(keep, d), "--ref", ref, "--text", HELDOUT, "--ctx", 64,
                        "--chunks", 10, "-t", 1)
            self.assertEqual(rows[scheme]["kld"], k["kld"], scheme)
            self.assertEqual(rows[scheme]["kld_stderr"], k["kld_stderr"], scheme)
            self.assertEqual(rows[scheme]["top1_agreement"], k["top1_agreement"], scheme)
            self.assertEqual(rows[scheme]["ppl"], k["ppl"], scheme)
        p = sf_json("eval", "ppl", ref, "--text", HELDOUT, "--ctx", 64, "--chunks", 10)
        self.assertEqual(rows["f32"]["ppl"], p["ppl"])

    def test_keep_never_replaces_an_existing_target(self):
        keep = self.path("keep")
        os.makedirs(os.path.join(keep, "int8"))
        write_bytes(os.path.join(keep, "int8", "mine.txt"), "mine")
        p = sf("compare", SAMPLE, "--schemes", "f32,int8", "--text", HELDOUT, "--ctx", 64, "--chunks", 2,
               "--keep", keep, check=False)
        self.assertEqual(p.returncode, 1)
        self.assertIn("int8: already exists", p.stderr)
        self.assertEqual(sorted(os.listdir(keep)), ["int8"], "converted something before refusing")
        self.assertEqual(os.listdir(os.path.join(keep, "int8")), ["mine.txt"])

    def run_in_tmpdir(self, *args):
        tmpdir = self.path("tmpdir")
        os.makedirs(tmpdir, exist_ok=True)
        return tmpdir, sf(*args, check=False, env={**os.environ, "TMPDIR": tmpdir})

    def test_outputs_and_inputs_are_checked_before_converting(self):
        write_bytes(self.path("short.txt"), "A short text.")
        cases = [
            (["--out", "/nonexistent/r.md"], "/nonexistent/r.md", SAMPLE, HELDOUT),
            (["--plot", "/nonexistent/p.svg"], "/nonexistent/p.svg", SAMPLE, HELDOUT),
            (["--plot", os.path.join(SAMPLE, "p.svg")], "lies inside", SAMPLE, HELDOUT),
            (["--plot", HELDOUT], "is a file this command reads", SAMPLE, HELDOUT),
            (["--ctx", "64"], "no tokenizer", fixture("hf_gqa"), HELDOUT),
            ([], "too few", SAMPLE, self.path("short.txt")),
            ([], "missing.txt", SAMPLE, self.path("missing.txt")),
        ]
        for extra, needle, src, text in cases:
            tmpdir, p = self.run_in_tmpdir("compare", src, "--schemes", "f32,int8", "--text", text, *extra)
            self.assertEqual(p.returncode, 1, extra)
            self.assertIn(needle, p.stderr)
            self.assertEqual(os.listdir(tmpdir), [], f"{extra}: something was converted before the check")

    def test_plot_and_output_formats(self):
        keep, md, svg = self.path("keep"), self.path("report.md"), self.path("plot.svg")
        schemes = ["f32", "int8", "q8_0", "q4_0", "int4:g32", "int4:g128"]
        p = sf("compare", SAMPLE, "--schemes", ",".join(schemes), "--text", HELDOUT, "--ctx", 64, "--chunks", 2,
               "--bench-tokens", 2, "--bench-reps", 1, "--keep", keep, "--out", md, "--plot", svg, "-o", "csv")
        rows = list(csv.DictReader(io.StringIO(p.stdout)))
        self.assertEqual([r["scheme"] for r in rows], schemes)
        self.assertEqual(set(rows[0]), {
            "scheme", "bits_per_weight", "weight_bytes", "ppl", "ppl_stderr", "delta_ppl_percent", "kld", "kld_stderr",
            "top1_agreement", "prefill_tokens_per_s", "prefill_min", "prefill_max", "decode_tokens_per_s",
            "decode_min", "decode_max", "tokens_scored"})
        by = {r["scheme"]: r for r in rows}
        for r in rows:
            self.assertGreater(float(r["prefill_tokens_per_s"]), 0, r["scheme"])
            self.assertGreater(float(r["decode_tokens_per_s"]), 0, r["scheme"])
            self.assertLessEqual(float(r["prefill_min"]), float(r["prefill_tokens_per_s"]))
            # The size column is the artifact's own files (not its manifest or tokenizer), as on disk.
            d = os.path.join(keep, r["scheme"].replace(":", "_"))
            on_disk = sum(os.path.getsize(os.path.join(d, f)) for f in os.listdir(d)
                          if f.endswith((".shard", ".bin")))
            self.assertEqual(int(r["weight_bytes"]), on_disk, r["scheme"])
        self.assertEqual(float(by["f32"]["kld"]), 0.0)
        self.assertGreater(float(by["q4_0"]["kld"]), float(by["q8_0"]["kld"]))
        # q8_0 and q4_0 are ggml's blocks of 32: 34 and 18 bytes per 32 weights in the matrices.
        self.assertLess(float(by["q8_0"]["bits_per_weight"]), float(by["f32"]["bits_per_weight"]) / 3)
        self.assertLess(float(by["q4_0"]["bits_per_weight"]), float(by["q8_0"]["bits_per_weight"]))

        with open(md) as f:
            lines = f.read().splitlines()
        header = [c.strip() for c in lines[0].strip("|").split("|")]
        self.assertEqual(header, ["scheme", "bits/w", "size", "PPL ± stderr", "ΔPPL", "KLD ± stderr", "top-1",
                                  "prefill tok/s (min–max)", "decode tok/s (min–max)"])
        self.assertEqual(len(lines), 2 + len(schemes))
        for line, scheme in zip(lines[2:], schemes):
            cells = [c.strip() for c in line.strip("|").split("|")]
            self.assertEqual(len(cells), len(header))
            self.assertEqual(cells[0], scheme)
            self.assertRegex(cells[7], r"^[0-9.]+ \([0-9.]+–[0-9.]+\)$")

        root = ET.parse(svg).getroot()
        self.assertEqual(root.tag, "{http://www.w3.org/2000/svg}svg")
        ns = {"s": "http://www.w3.org/2000/svg"}
        points = [c for c in root.iter("{http://www.w3.org/2000/svg}circle") if "data-scheme" in c.attrib]
        self.assertEqual(sorted(c.get("data-scheme") for c in points), sorted(schemes), "one point per scheme")
        labels = {t.get("data-label-for"): t.text for t in root.iter("{http://www.w3.org/2000/svg}text")
                  if t.get("data-label-for")}
        self.assertEqual(labels, {s: s for s in schemes}, "each point labelled with its scheme")
        titles = [t.text for t in root.findall(".//s:text[@class='axis-title']", ns)]
        self.assertEqual(len(titles), 2)
        self.assertTrue(any("bits per weight" in t for t in titles), titles)
        self.assertTrue(any("perplexity" in t for t in titles), titles)
        self.assertGreaterEqual(len(root.findall(".//s:g[@class='x-axis']/s:text[@class='tick']", ns)), 2)
        self.assertGreaterEqual(len(root.findall(".//s:g[@class='y-axis']/s:text[@class='tick']", ns)), 2)
        ref = [c.get("data-scheme") for c in points if "reference" in c.get("class", "").split()]
        self.assertEqual(ref, ["f32"])
        self.assertIn("f32", root.find(".//s:text[@class='reference-label']", ns).text)
        self.assertEqual(len(root.findall(".//s:line[@class='errorbar']", ns)), 3 * len(schemes))
        cx = {c.get("data-scheme"): float(c.get("cx")) for c in points}
        cy = {c.get("data-scheme"): float(c.get("cy")) for c in points}
        for a in schemes:
            for b in schemes:
                # Left to right by size (bits per weight), up the page by perplexity.
                bits = float(by[a]["bits_per_weight"]) - float(by[b]["bits_per_weight"])
                if abs(bits) > 1e-9:
                    self.assertEqual(cx[a] < cx[b], bits < 0, (a, b))
                ppl = float(by[a]["ppl"]) - float(by[b]["ppl"])
                if abs(ppl) > 1e-3:
                    self.assertEqual(cy[a] > cy[b], ppl < 0, (a, b))

    def test_json_output_and_its_alias(self):
        args = ["compare", SAMPLE, "--schemes", "int8", "--text", HELDOUT, "--ctx", 64, "--chunks", 1,
                "--bench-tokens", 0]
        a = json.loads(sf(*args, "-o", "json").stdout)
        b = json.loads(sf(*args, "--json").stdout)
        self.assertEqual([r["scheme"] for r in a["rows"]], ["int8"])
        self.assertEqual(a["rows"][0]["ppl"], b["rows"][0]["ppl"])
        self.assertEqual(set(a["rows"][0]), set(b["rows"][0]))
        self.assertIn("prefill_tokens_per_s", a["rows"][0])
        md = sf(*args, "-o", "md").stdout.splitlines()
        self.assertTrue(md[0].startswith("| scheme |") and md[2].startswith("| int8 |"), md)
        for bad in [["-o", "xml"], ["-o", "csv", "--json"]]:
            p = sf(*args, *bad, check=False)
            self.assertEqual(p.returncode, 2, bad)
        p = sf(*args, "--out", self.path("same"), "--plot", self.path("same"), check=False)
        self.assertEqual(p.returncode, 2)
        self.assertIn("two outputs", p.stderr)
        self.assertFalse(os.path.exists(self.path("same")))

    def test_source_hashed_once_records_what_convert_records(self):
        keep = self.path("keep")
        sf("compare", SAMPLE, "--schemes", "f32,int8,q4_0", "--text", HELDOUT, "--ctx", 64, "--chunks", 1,
           "--bench-tokens", 0, "--keep", keep)
        want = hashlib.sha256(read_bytes(os.path.join(SAMPLE, "pytorch_model.bin"))).hexdigest()
        for d in ["f32", "int8", "q4_0"]:
            with open(os.path.join(keep, d, "manifest.json")) as f:
                files = json.load(f)["source"]["files"]
            self.assertEqual(files, [{"name": "pytorch_model.bin", "sha256": want}], d)
            # The manifest is byte for byte the one a separate convert writes (which hashes the source itself).
            out = self.path("plain-" + d)
            sf("convert", SAMPLE, "-o", out, "--quant", d)
            self.assertEqual(read_bytes(os.path.join(keep, d, "manifest.json")),
                             read_bytes(os.path.join(out, "manifest.json")), d)

    def test_one_artifact_at_a_time_and_nothing_left_behind(self):
        tmpdir = self.path("tmpdir")
        os.makedirs(tmpdir)
        proc = subprocess.Popen([SF, "compare", SAMPLE, "--schemes", "f32,bf16,int8,int4:g64", "--text", HELDOUT,
                                 "--ctx", "64", "--chunks", "6", "--bench-tokens", "4", "--bench-reps", "2", "--json"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env={**os.environ, "TMPDIR": tmpdir})
        most, seen = 0, set()
        while proc.poll() is None:
            present = [d for d in glob.glob(os.path.join(tmpdir, "shardforge-compare.*", "*"))
                       if os.path.isdir(d) and not d.endswith(".partial-%d" % proc.pid)]
            seen.update(os.path.basename(d) for d in present)
            most = max(most, len(present))
            time.sleep(0.001)
        out, err = proc.communicate()
        self.assertEqual(proc.returncode, 0, err)
        self.assertGreaterEqual(len(seen), 2, "the polling saw too little to judge")
        self.assertEqual(most, 1, "more than one scheme's artifact on disk at once")
        self.assertEqual(os.listdir(tmpdir), [])
        self.assertEqual(len(json.loads(out)["rows"]), 4)

    def test_interrupt_during_evaluation_removes_everything(self):
        tmpdir = self.path("tmpdir")
        os.makedirs(tmpdir)
        for sig in [signal.SIGINT, signal.SIGTERM]:
            proc = subprocess.Popen([SF, "compare", SAMPLE, "--schemes", "f32,int8", "--text", HELDOUT, "--ctx", "64",
                                     "-t", "2"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                    env={**os.environ, "TMPDIR": tmpdir})
            deadline = time.time() + 60
            # The reference artifact is in place: its evaluation is under way.
            while (time.time() < deadline and proc.poll() is None
                   and not glob.glob(os.path.join(tmpdir, "shardforge-compare.*", "f32", "manifest.json"))):
                time.sleep(0.002)
            time.sleep(0.3)
            self.assertIsNone(proc.poll(), "compare finished before it could be interrupted")
            proc.send_signal(sig)
            _, err = proc.communicate(timeout=60)
            self.assertEqual(proc.returncode, 1, err)
            self.assertIn("interrupted", err)
            self.assertEqual(os.listdir(tmpdir), [], "compare left files in TMPDIR")

    def test_speed_is_a_repeated_measurement_with_its_range(self):
        md = self.path("r.md")
        r = sf_json("compare", SAMPLE, "--schemes", "int8", "--text", HELDOUT, "--ctx", 64, "--chunks", 1,
                    "--bench-tokens", 4, "--bench-reps", 3, "--out", md)
        self.assertEqual(r["bench_reps"], 3)
        d = r["rows"][0]["decode"]
        self.assertLessEqual(d["min"], d["median"])
        self.assertLessEqual(d["median"], d["max"])
        self.assertGreater(d["min"], 0)
        self.assertEqual(r["rows"][0]["decode_tokens_per_s"], d["median"])
        with open(md) as f:
            self.assertIn("–", f.read().splitlines()[2])
        p = sf("compare", SAMPLE, "--schemes", "int8", "--text", HELDOUT, "--bench-reps", 0, check=False)
        self.assertEqual(p.returncode, 2)

    def test_bench_tokens_must_fit_the_context_length(self):
        # A timing run prefills --bench-tokens and generates as many: 2 x 129 > max_seq 256.
        small = ["--schemes", "f32", "--text", HELDOUT, "--ctx", 64, "--chunks", 1, "--bench-reps", 1, "-t", 1]
        tmpdir, p = self.run_in_tmpdir("compare", SAMPLE, *small, "--bench-tokens", 129)
        self.assertEqual(p.returncode, 2, p.stderr)
        self.assertTrue(p.stderr.startswith(f"shardforge: error: {SAMPLE}: --bench-tokens 129"), p.stderr)
        self.assertIn("258 positions", p.stderr)
        self.assertIn("context length of 256", p.stderr)
        self.assertIn("--allow-long-context", p.stderr)
        self.assertEqual(os.listdir(tmpdir), [], "converted before refusing")
        tmpdir, p = self.run_in_tmpdir("compare", SAMPLE, *small, "--bench-tokens", 129, "--allow-long-context")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertTrue(p.stderr.startswith("shardforge: warning: "), p.stderr)
        self.assertIn("context length of 256", p.stderr)
        r = sf_json("compare", SAMPLE, *small, "--bench-tokens", 128)  # exactly the context length
        self.assertGreater(r["rows"][0]["decode"]["min"], 0)


class NonFiniteResults(TempDirTest):
    def test_nan_weights_fail_eval_naming_the_artifact(self):
        good, bad = self.path("good"), self.path("bad")
        sf("convert", SAMPLE, "-o", good)
        sf("convert", SAMPLE, "-o", bad)
        emb = os.path.join(bad, "embedding.bin")
        n = len(read_bytes(emb)) // 4
        write_bytes(emb, struct.pack("<f", float("nan")) * n)
        reseal(bad)
        self.assertTrue(sf_json("verify", bad)["ok"])
        p = sf("eval", "ppl", bad, "--text", HELDOUT, "--ctx", 64, "--chunks", 2, check=False)
        self.assertEqual(p.returncode, 1, p.stdout)
        self.assertIn(bad + ": perplexity is nan", p.stderr)
        self.assertEqual(p.stdout, "")
        p = sf("eval", "kld", bad, "--ref", good, "--text", HELDOUT, "--ctx", 64, "--chunks", 2, check=False)
        self.assertEqual(p.returncode, 1)
        self.assertIn(bad + ":", p.stderr)
        self.assertIn("nan", p.stderr)
        p = sf("eval", "kld", good, "--ref", bad, "--text", HELDOUT, "--ctx", 64, "--chunks", 2, check=False)
        self.assertEqual(p.returncode, 1)
        self.assertIn(bad + ": the reference's perplexity is nan", p.stderr)


class ProgressOnATerminal(TempDirTest):
    def on_tty(self, args):
        # `script` gives the command a pseudo-terminal, as an interactive user has.
        cmd = " ".join([SF, *map(str, args)])
        p = subprocess.run(["script", "-qec", cmd, "/dev/null"], capture_output=True, text=True)
        self.assertEqual(p.returncode, 0, p.stdout)
        return p.stdout

    def test_eval_compare_and_bench_show_progress_only_on_a_terminal(self):
        art = self.path("art")
        sf("convert", SAMPLE, "-o", art, "--quant", "int8")
        window = ["--text", HELDOUT, "--ctx", 64, "--chunks", 4]
        cases = [(["eval", "ppl", art, *window], "ppl ["),
                 (["eval", "kld", art, "--ref", art, *window], "kld ["),
                 (["bench", art, "-p", 8, "-n", 8], "bench ["),
                 (["compare", SAMPLE, "--schemes", "f32,int8", *window, "--bench-tokens", 2, "--bench-reps", 1],
                  "kld int8 [")]
        for args, bar in cases:
            out = self.on_tty(args)
            self.assertIn(bar, out, args)
            p = sf(*args)
            self.assertNotIn("[", p.stderr, args)
            self.assertEqual(p.stderr, "", args)
        self.assertIn("4/4", self.on_tty(cases[0][0]), "the bar ends at the number of windows")


if __name__ == "__main__":
    unittest.main()
