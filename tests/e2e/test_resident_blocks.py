"""Low-memory execution (--resident-blocks N): run, eval and bench stream the blocks that are not
kept resident from the artifact's files, and the output is exactly that of full residency. Peak RSS
against the artifact's size is a number, measured by bench/memory.sh on a 1 GB model, not here."""
import json
import os
import shutil
import tempfile
import unittest

from sftest import HELDOUT, SAMPLE, error_line, fixture, read_bytes, sf

IDS = "1,5,9,100,7,3"


class ResidentBlocks(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.dir = tempfile.mkdtemp(prefix="sf-resident-")
        cls.shards = os.path.join(cls.dir, "int8")
        cls.gguf = os.path.join(cls.dir, "q8.gguf")
        cls.tied = os.path.join(cls.dir, "gpt2")
        cls.bundle = os.path.join(cls.dir, "int8.zip")
        cls.h5 = os.path.join(cls.dir, "asym.h5")
        sf("convert", SAMPLE, "-o", cls.bundle, "--quant", "int8", "--format", "zip")
        # HDF5 splits a quantized row into datasets (codes, scales, mins): the reader reassembles
        # them into a mapped temporary file, which is what lets it stream.
        sf("convert", SAMPLE, "-o", cls.h5, "--quant", "int4:g32:asym", "--format", "hdf5")
        sf("convert", SAMPLE, "-o", cls.shards, "--quant", "int8")
        sf("convert", SAMPLE, "-o", cls.gguf, "--quant", "q8_0", "--format", "gguf")
        sf("convert", fixture("gpt2_hub"), "-o", cls.tied, "--quant", "f16")

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.dir, ignore_errors=True)

    def logits(self, artifact, resident, n=6):
        out = os.path.join(self.dir, f"logits-{os.path.basename(artifact)}-{resident}")
        if os.path.exists(out):
            os.unlink(out)
        sf("run", artifact, "--ids", IDS, "-n", n, "--resident-blocks", resident, "--logits", out, "-t", 2)
        return read_bytes(out)

    def layers(self, artifact):
        return json.loads(sf("inspect", artifact, "--json").stdout)["model"]["n_layers"]

    def test_run_gives_the_same_logits_whatever_the_residency(self):
        for artifact in (self.shards, self.gguf, self.tied, self.bundle, self.h5):
            with self.subTest(artifact=os.path.basename(artifact)):
                full = self.logits(artifact, 0)
                self.assertGreater(len(full), 0)
                n = self.layers(artifact)
                for resident in sorted({1, 2, n - 1, n, n + 5}):
                    self.assertEqual(self.logits(artifact, resident), full, f"--resident-blocks {resident}")

    def test_eval_ppl_is_the_same_streamed(self):
        def ppl(resident):
            p = sf("eval", "ppl", self.shards, "--text", HELDOUT, "--ctx", 64, "--chunks", 4,
                   "--resident-blocks", resident, "--json")
            return json.loads(p.stdout)["ppl"]
        self.assertEqual(ppl(1), ppl(0))

    def test_bench_reports_a_row_and_a_peak_per_residency(self):
        p = sf("bench", self.shards, "-p", 8, "-n", 4, "-r", 1, "-t", 1, "--resident-blocks", "1,0", "--json")
        rows = json.loads(p.stdout)["rows"]
        self.assertEqual([r["resident_blocks"] for r in rows], [1, 1, 0, 0])
        for r in rows:
            self.assertGreater(r["peak_rss_bytes"], 0)
            self.assertGreater(r["tokens_per_s"]["median"], 0)
        md = sf("bench", self.shards, "-p", 8, "-n", 4, "-r", 1, "-t", 1, "--resident-blocks", "2").stdout
        header = [c.strip() for c in md.splitlines()[0].strip("|").split("|")]
        self.assertEqual(header, ["model", "size", "params", "threads", "batch", "resident", "peak RSS", "test", "t/s"])
        self.assertIn("| 2 |", md.splitlines()[2])

    def test_hdf5_leaves_no_temporary_file_and_names_an_unusable_tmpdir(self):
        tmp = os.path.join(self.dir, "tmp")
        os.makedirs(tmp, exist_ok=True)
        env = dict(os.environ, TMPDIR=tmp)
        sf("run", self.h5, "--ids", "1,2", "-n", 1, "--resident-blocks", 1, env=env)
        self.assertEqual(os.listdir(tmp), [])
        missing = os.path.join(self.dir, "no-such-dir")
        error_line(self, sf("run", self.h5, "--ids", "1,2", "-n", 1, env=dict(os.environ, TMPDIR=missing),
                            check=False), 1, missing, "temporary file")

    def test_a_negative_count_is_a_usage_error(self):
        error_line(self, sf("run", self.shards, "--ids", "1", "-n", 1, "--resident-blocks", -1, check=False), 2,
                   "--resident-blocks")
        error_line(self, sf("bench", self.shards, "--resident-blocks", "1,-2", check=False), 2, "--resident-blocks")


if __name__ == "__main__":
    unittest.main()
