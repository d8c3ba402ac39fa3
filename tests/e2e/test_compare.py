"""eval kld and compare: the quantization cost table."""
import os
import unittest

from sftest import HELDOUT, SAMPLE, TempDirTest, sf, sf_json



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

    def test_bad_scheme_fails_cleanly(self):
        p = sf("compare", SAMPLE, "--schemes", "f32,int5", "--text", HELDOUT, check=False)
        self.assertEqual(p.returncode, 2)  # a bad scheme is a usage error
        self.assertIn("int5", p.stderr)


if __name__ == "__main__":
    unittest.main()
