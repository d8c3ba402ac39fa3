"""bench's tables, like llama-bench's: one row per test over the product of the lists (-p, -n, -t,
--batch), in Markdown, CSV or JSON, with the statistics of the repetitions; bad list values are
usage errors naming the option. No speed is asserted: numbers come from bench/, not tests."""
import csv
import io
import json
import os
import shutil
import statistics
import tempfile
import unittest

from sftest import error_line, fixture, sf

GQA = "hf_gqa"  # fixture: 2 blocks, vocab 300, max_seq 128
DECODE_PROMPT = 16  # the short prompt each decoding sequence prefills first (docs/cli.md)


def expected_tests(prompts, gens, threads, batches):
    """(test, batch, threads) in table order: per thread count, pp rows, then tg rows per batch."""
    rows = []
    for t in threads:
        rows += [(f"pp{p}", 1, t) for p in prompts]
        rows += [(f"tg{n}", b, t) for n in gens for b in batches]
    return rows


class BenchTables(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.shared = tempfile.mkdtemp(prefix="sf-bench-")
        cls.art = os.path.join(cls.shared, "gqa-f32")
        sf("convert", fixture(GQA), "-o", cls.art, "--quant", "f32")

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.shared, ignore_errors=True)

    LISTS = ["-p", "4,8", "-n", "2,3", "-t", "1,2", "--batch", "1,3", "-r", 2]

    def test_json_rows_are_the_product_of_the_lists_with_their_statistics(self):
        r = json.loads(sf("bench", self.art, *self.LISTS, "-o", "json").stdout)
        got = [(row["test"], row["batch"], row["threads"]) for row in r["rows"]]
        self.assertEqual(got, expected_tests([4, 8], [2, 3], [1, 2], [1, 3]))  # 2 x (2 + 2 x 2) rows
        self.assertEqual(r["model"], "gqa-f32")
        self.assertEqual(r["reps"], 2)
        import torch
        params = sum(v.numel() for v in torch.load(os.path.join(fixture(GQA), "pytorch_model.bin")).values())
        self.assertEqual(r["params"], params)
        self.assertEqual(r["size"], 4 * params)  # every tensor f32
        self.assertGreater(r["load_seconds"], 0)
        self.assertGreater(r["peak_rss_bytes"], 0)
        self.assertTrue(r["machine"]["simd"])  # Highway's name of the dispatched target
        self.assertNotEqual(r["machine"]["simd"], "unknown")
        self.assertEqual(r["machine"]["cores"], os.cpu_count())
        self.assertTrue(r["machine"]["cpu"])
        self.assertEqual(r["version"], sf("--version").stdout.split()[-1])
        for row in r["rows"]:
            pp = row["test"].startswith("pp")
            self.assertEqual(row["n_prompt"], int(row["test"][2:]) if pp else DECODE_PROMPT)
            self.assertEqual(row["n_gen"], 0 if pp else int(row["test"][2:]))
            s = row["samples"]
            self.assertEqual(len(s), 2)
            self.assertTrue(all(x > 0 for x in s), row)
            ts = row["tokens_per_s"]
            self.assertAlmostEqual(ts["mean"], statistics.mean(s), delta=1e-9 * ts["mean"])
            self.assertAlmostEqual(ts["sd"], statistics.stdev(s), delta=1e-9 * ts["mean"])
            self.assertAlmostEqual(ts["median"], statistics.median(s), delta=1e-9 * ts["mean"])
            self.assertEqual((ts["min"], ts["max"]), (min(s), max(s)))

    def test_csv_and_markdown_hold_the_same_rows(self):
        expected = expected_tests([4], [2], [1], [1, 4])
        args = ["-p", 4, "-n", 2, "-t", 1, "--batch", "1,4", "-r", 3]
        rows = list(csv.DictReader(io.StringIO(sf("bench", self.art, *args, "-o", "csv").stdout)))
        self.assertEqual([(r["test"], int(r["batch"]), int(r["threads"])) for r in rows], expected)
        for r in rows:
            self.assertEqual(r["model"], "gqa-f32")
            self.assertEqual(int(r["reps"]), 3)
            self.assertEqual(int(r["size"]), 4 * int(r["params"]))
            self.assertGreater(float(r["ts_mean"]), 0)
            self.assertGreaterEqual(float(r["ts_sd"]), 0)
            self.assertGreater(float(r["ts_median"]), 0)

        md = sf("bench", self.art, *args).stdout  # Markdown is the default
        lines = md.splitlines()
        table = [l for l in lines if l.startswith("|")]
        header = [c.strip() for c in table[0].strip("|").split("|")]
        self.assertEqual(header, ["model", "size", "params", "threads", "batch", "test", "t/s"])
        cells = [[c.strip() for c in l.strip("|").split("|")] for l in table[2:]]
        self.assertEqual([(c[5], int(c[4]), int(c[3])) for c in cells], expected)
        for c in cells:
            mean, sd = c[6].split(" ± ")
            self.assertGreater(float(mean), 0)
            self.assertGreaterEqual(float(sd), 0)
        self.assertTrue(lines[-1].startswith("load ") and "peak RSS" in lines[-1], md)

    def test_json_flag_is_an_alias_of_o_json(self):
        a = json.loads(sf("bench", self.art, "-p", 4, "-n", 2, "-t", 1, "-r", 1, "--json").stdout)
        b = json.loads(sf("bench", self.art, "-p", 4, "-n", 2, "-t", 1, "-r", 1, "-o", "json").stdout)
        self.assertEqual(set(a), set(b))
        self.assertEqual([r["test"] for r in a["rows"]], ["pp4", "tg2"])
        error_line(self, sf("bench", self.art, "--json", "-o", "csv", check=False), 2, "--json", "-o csv")

    def test_repeated_options_add_to_the_list(self):
        r = json.loads(sf("bench", self.art, "-p", 4, "-p", "5,6", "-n", 2, "-t", 1, "-r", 1, "-o", "json").stdout)
        self.assertEqual([x["test"] for x in r["rows"]], ["pp4", "pp5", "pp6", "tg2"])

    def test_batched_decode_of_a_prefix_bidirectional_model(self):
        art = os.path.join(self.shared, "glm")
        sf("convert", fixture("chatglm_6b"), "-o", art, "--quant", "int8")
        r = json.loads(sf("bench", art, "-p", 4, "-n", 3, "-t", 2, "--batch", "1,5", "-r", 1, "-o", "json").stdout)
        self.assertEqual([(x["test"], x["batch"]) for x in r["rows"]], [("pp4", 1), ("tg3", 1), ("tg3", 5)])

    def test_bad_values_are_usage_errors_naming_the_option(self):
        for args, needles in [(["-p", 0], ["-p 0", "1 to 1000000"]),
                              (["-p", "4,,8"], ["-p '4,,8'", "empty"]),
                              (["-p", "4,"], ["-p '4,'", "empty"]),
                              (["-n", 0], ["-n 0", "1 to 1000000"]),
                              (["-n", "-3"], ["-n -3"]),
                              (["-n", "1.5"], ["-n '1.5'", "whole number"]),
                              (["--batch", 0], ["--batch 0", "1 to 4096"]),
                              (["--batch", "2,-1"], ["--batch -1"]),
                              (["--batch", 5000], ["--batch 5000", "1 to 4096"]),
                              (["-t", "1,-2"], ["-t/--threads -2"]),
                              (["-t", ","], ["-t/--threads", "empty"]),
                              (["-r", 0], ["--repetitions", "1 to 1000"]),
                              (["-o", "xml"], ["--output", "xml"]),
                              # digits only: no sign, no space, nothing strtoll would skip
                              (["-p", " 4"], ["-p ' 4'", "whole number"]),
                              (["-p", "4 "], ["-p '4 '", "whole number"]),
                              (["-p", "+4"], ["-p '+4'", "whole number"]),
                              (["-n", "0x10"], ["-n '0x10'", "whole number"]),
                              (["-t", "+1"], ["-t/--threads '+1'", "whole number"]),
                              (["-t", "-"], ["-t/--threads '-'", "whole number"]),
                              (["--batch", "\t2"], ["--batch", "whole number"]),
                              # a value given twice would only repeat its rows
                              (["-p", "4,8,4"], ["-p 4 given twice"]),
                              (["-p", "4", "-p", "04"], ["-p 4 given twice"]),
                              (["-n", "2,2"], ["-n 2 given twice"]),
                              (["-t", "1,1"], ["-t/--threads 1 given twice"]),
                              (["--batch", "3,1,3"], ["--batch 3 given twice"])]:
            with self.subTest(args=args):
                error_line(self, sf("bench", self.art, *args, check=False), 2, *needles)

    def test_a_batch_beyond_memory_is_refused_before_running(self):
        # 4096 sequences of 1000016 positions: terabytes of KV cache. One error line, no warning
        # from --allow-long-context before it, and refused at once rather than allocated.
        p = sf("bench", self.art, "-n", 1000000, "--batch", "1,4096", "--allow-long-context", check=False, timeout=60)
        error_line(self, p, 2, "--batch 4096", "KV cache", "memory")

    def test_each_test_must_fit_the_context(self):
        # pp needs -p positions, tg the short prompt + -n: 16 + 113 > max_seq 128, 16 + 112 fits.
        error_line(self, sf("bench", self.art, "-n", "8,113", check=False), 2, "16 prompt tokens + -n 113",
                   "context length of 128")
        error_line(self, sf("bench", self.art, "-p", "8,129", check=False), 2, "-p 129", "context length of 128")
        r = json.loads(sf("bench", self.art, "-p", 128, "-n", 112, "-t", 1, "-r", 1, "-o", "json").stdout)
        self.assertEqual([x["test"] for x in r["rows"]], ["pp128", "tg112"])


if __name__ == "__main__":
    unittest.main()
