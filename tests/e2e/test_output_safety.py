"""Where convert may write: --force replaces only an artifact, commit is atomic and exclusive, stale
partial directories are handled, and nothing the writer did not create is ever deleted."""
import glob
import os
import shutil
import signal
import subprocess
import time

import torch

from sftest import SAMPLE, SF, TempDirTest, fixture, read_bytes, read_json, sf, sf_json, write_bytes, write_json


def snapshot(root):
    """Every path under root with its bytes (None for directories): a deleted or changed file shows."""
    out = {}
    for d, dirs, files in os.walk(root):
        for x in dirs:
            out[os.path.relpath(os.path.join(d, x), root)] = None
        for x in files:
            p = os.path.join(d, x)
            out[os.path.relpath(p, root)] = read_bytes(p)
    return out


class ForceReplacesOnlyAnArtifact(TempDirTest):
    def setUp(self):
        super().setUp()
        self.src = self.path("src")
        shutil.copytree(fixture("hf_gqa"), self.src)

    def refused(self, out, *needles):
        before = snapshot(self.tmp)
        p = sf("convert", self.src, "-o", out, "--force", check=False)
        self.assertEqual(p.returncode, 1, p.stderr)
        self.assertTrue(p.stderr.startswith("shardforge: error: "), p.stderr)
        for n in needles:
            self.assertIn(n, p.stderr)
        self.assertEqual(snapshot(self.tmp), before, "a refused --force changed something")
        self.assertEqual(glob.glob(os.path.join(self.tmp, "**", "*.partial-*"), recursive=True), [])

    def test_the_source_directory(self):
        self.refused(self.src, "input of this conversion")

    def test_the_source_file_itself(self):
        p = sf("convert", os.path.join(self.src, "pytorch_model.bin"), "-o", os.path.join(self.src, "config.json"),
               "--force", check=False)
        self.assertEqual(p.returncode, 1)
        self.assertTrue(os.path.isfile(os.path.join(self.src, "config.json")))

    def test_the_source_parent(self):
        self.refused(self.tmp, "contains", "input of this conversion")

    def test_a_directory_of_unrelated_files(self):
        other = self.path("photos")
        os.makedirs(os.path.join(other, "2024"))
        write_bytes(os.path.join(other, "2024", "a.jpg"), "jpeg")
        self.refused(other, "not a shardforge artifact")

    def test_a_regular_file(self):
        f = self.path("notes.txt")
        write_bytes(f, "keep me")
        self.refused(f, "not a directory")

    def test_a_symbolic_link_to_an_artifact(self):
        art = self.path("art")
        sf("convert", self.src, "-o", art)
        os.symlink(art, self.path("link"))
        self.refused(self.path("link"), "symbolic link")

    def test_an_artifact_holding_a_foreign_file(self):
        art = self.path("art")
        sf("convert", self.src, "-o", art)
        write_bytes(os.path.join(art, "my-notes.txt"), "mine")
        self.refused(art, "my-notes.txt")

    def test_an_artifact_is_replaced_atomically(self):
        art = self.path("art")
        sf("convert", self.src, "-o", art)
        sf("convert", self.src, "-o", art, "--quant", "int8", "--force")
        self.assertTrue(sf_json("verify", art)["ok"])
        self.assertEqual(read_json(os.path.join(art, "manifest.json"))["pipeline"]["stages"][1]["params"]["scheme"],
                         "int8")
        self.assertEqual(sorted(os.listdir(self.tmp)), ["art", "src"], "the old artifact or a partial was left")


class StalePartials(TempDirTest):
    def setUp(self):
        super().setUp()
        self.out = self.path("out")

    def dead_pid(self):
        p = subprocess.Popen(["true"])
        p.wait()
        return p.pid

    def test_partial_of_a_dead_process_is_reported_and_removed(self):
        partial = f"{self.out}.partial-{self.dead_pid()}"
        os.makedirs(partial)
        write_bytes(os.path.join(partial, "block_000.shard"), "half")
        write_bytes(os.path.join(partial, "embedding.bin"), "half")
        p = sf("convert", fixture("hf_gqa"), "-o", self.out)
        self.assertIn("removed " + partial, p.stderr)
        self.assertFalse(os.path.exists(partial))
        self.assertTrue(sf_json("verify", self.out)["ok"])

    def test_partial_holding_foreign_files_is_reported_and_kept(self):
        partial = f"{self.out}.partial-{self.dead_pid()}"
        os.makedirs(partial)
        write_bytes(os.path.join(partial, "thesis.tex"), "years of work")
        p = sf("convert", fixture("hf_gqa"), "-o", self.out)
        self.assertIn("not removed", p.stderr)
        self.assertEqual(read_bytes(os.path.join(partial, "thesis.tex")), b"years of work")

    def test_partial_of_a_live_process_makes_convert_refuse(self):
        # Another conversion writing the same OUT: the new one must not touch its directory.
        other = subprocess.Popen(["sleep", "60"])
        try:
            partial = f"{self.out}.partial-{other.pid}"
            os.makedirs(partial)
            write_bytes(os.path.join(partial, "block_000.shard"), "in progress")
            p = sf("convert", fixture("hf_gqa"), "-o", self.out, check=False)
            self.assertEqual(p.returncode, 1)
            self.assertIn(f"process {other.pid} is writing", p.stderr)
            self.assertEqual(read_bytes(os.path.join(partial, "block_000.shard")), b"in progress")
            self.assertFalse(os.path.exists(self.out))
        finally:
            other.kill()
            other.wait()


class ExclusiveCommit(TempDirTest):
    def slow_source(self):
        """A checkpoint that takes a few seconds to convert with one thread."""
        src = self.path("big")
        os.makedirs(src)
        d, ffn, layers = 384, 1024, 12
        torch.manual_seed(0)
        sd = {"tok_embeddings.weight": torch.randn(1024, d), "norm.weight": torch.ones(d),
              "output.weight": torch.randn(1024, d)}
        for i in range(layers):
            p = f"layers.{i}."
            for n, shape in [("attention.wq.weight", (d, d)), ("attention.wk.weight", (d, d)),
                             ("attention.wv.weight", (d, d)), ("attention.wo.weight", (d, d)),
                             ("feed_forward.w1.weight", (ffn, d)), ("feed_forward.w2.weight", (d, ffn)),
                             ("feed_forward.w3.weight", (ffn, d))]:
                sd[p + n] = torch.randn(*shape)
            sd[p + "attention_norm.weight"] = torch.ones(d)
            sd[p + "ffn_norm.weight"] = torch.ones(d)
        torch.save(sd, os.path.join(src, "consolidated.00.pth"))
        write_json(os.path.join(src, "params.json"), {"dim": d, "n_layers": layers, "n_heads": 8, "vocab_size": 1024})
        return src

    def test_a_directory_created_at_out_meanwhile_is_left_alone(self):
        src, out = self.slow_source(), self.path("out")
        proc = subprocess.Popen([SF, "convert", src, "-o", out, "--quant", "int4:g32:asym", "--threads", "1"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        deadline = time.time() + 120
        while time.time() < deadline and not glob.glob(out + ".partial-*/block_000.shard") and proc.poll() is None:
            time.sleep(0.002)
        self.assertIsNone(proc.poll(), "conversion finished before OUT could be created")
        proc.send_signal(signal.SIGSTOP)  # make sure the commit happens after OUT exists
        os.makedirs(out)
        write_bytes(os.path.join(out, "someone-elses.txt"), "mine")
        proc.send_signal(signal.SIGCONT)
        _, err = proc.communicate()
        self.assertEqual(proc.returncode, 1, err)
        self.assertIn("appeared while converting", err)
        self.assertEqual(os.listdir(out), ["someone-elses.txt"])
        self.assertEqual(read_bytes(os.path.join(out, "someone-elses.txt")), b"mine")
        self.assertEqual(glob.glob(out + ".*"), [], "the discarded conversion left its partial directory")


    def test_an_interrupted_conversion_removes_only_the_files_it_wrote(self):
        src, out = self.slow_source(), self.path("out")
        proc = subprocess.Popen([SF, "convert", src, "-o", out, "--quant", "int4:g32:asym", "--threads", "1"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        deadline = time.time() + 120
        while time.time() < deadline and not glob.glob(out + ".partial-*/block_000.shard") and proc.poll() is None:
            time.sleep(0.002)
        self.assertIsNone(proc.poll(), "conversion finished before it could be interrupted")
        proc.send_signal(signal.SIGSTOP)
        partial = glob.glob(out + ".partial-*")[0]
        write_bytes(os.path.join(partial, "someone-elses.txt"), "mine")
        proc.send_signal(signal.SIGTERM)
        proc.send_signal(signal.SIGCONT)
        _, err = proc.communicate()
        self.assertEqual(proc.returncode, 1, err)
        self.assertIn("interrupted", err)
        self.assertEqual(os.listdir(partial), ["someone-elses.txt"])
        self.assertFalse(os.path.exists(out))
