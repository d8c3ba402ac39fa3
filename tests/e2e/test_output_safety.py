"""Where convert may write: --force replaces only an artifact, commit is atomic and exclusive, stale
partial directories are handled, and nothing the writer did not create is ever deleted."""
import glob
import os
import shutil
import signal
import stat
import subprocess
import time

from sftest import HELDOUT, SAMPLE, SF, TempDirTest, fixture, read_bytes, read_json, sf, sf_json, write_bytes, write_json, write_meta_checkpoint


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

    def test_a_name_cannot_forge_a_second_line(self):
        out = self.path("o\nshardforge: error: fake")
        partial = f"{out}.partial-{self.dead_pid()}"
        os.makedirs(partial)
        p = sf("convert", SAMPLE, "-o", out)
        lines = p.stderr.splitlines()
        self.assertEqual(len(lines), 1, p.stderr)
        self.assertTrue(lines[0].startswith("shardforge: warning: removed "), p.stderr)
        self.assertIn("o\\x0ashardforge: error: fake", lines[0])
        self.assertFalse(os.path.exists(partial))

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
        return write_meta_checkpoint(self.path("big"), d=384, ffn=1024, layers=12, vocab=1024)

    def stopped_midway(self, out):
        """Starts converting the slow source to `out`, and stops (SIGSTOP) it once its first block
        is written, so what the test does next happens mid-conversion whatever the machine's speed."""
        proc = subprocess.Popen([SF, "convert", self.slow_source(), "-o", out, "--quant", "int4:g32:asym",
                                 "--threads", "1"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        deadline = time.time() + 120
        while time.time() < deadline and not glob.glob(out + ".partial-*/block_000.shard") and proc.poll() is None:
            time.sleep(0.002)
        self.assertIsNone(proc.poll(), "conversion finished before the test could act midway")
        proc.send_signal(signal.SIGSTOP)
        return proc

    def test_a_directory_created_at_out_meanwhile_is_left_alone(self):
        out = self.path("out")
        proc = self.stopped_midway(out)  # the commit happens after OUT exists
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
        out = self.path("out")
        proc = self.stopped_midway(out)
        partial = glob.glob(out + ".partial-*")[0]
        write_bytes(os.path.join(partial, "someone-elses.txt"), "mine")
        proc.send_signal(signal.SIGTERM)
        proc.send_signal(signal.SIGCONT)
        _, err = proc.communicate()
        self.assertEqual(proc.returncode, 1, err)
        self.assertIn("interrupted", err)
        self.assertEqual(os.listdir(partial), ["someone-elses.txt"])
        self.assertFalse(os.path.exists(out))


class ReportPaths(TempDirTest):
    """compare --out and run --logits write one file: never over an input, into an artifact, through a link,
    to a device or FIFO; refused before any work (docs/cli.md)."""

    def setUp(self):
        super().setUp()
        self.src = self.path("src")  # a copy: a regression must not destroy the repository's sample
        shutil.copytree(SAMPLE, self.src)
        self.text = self.path("text.txt")
        shutil.copyfile(HELDOUT, self.text)
        self.scratch = self.path("tmpdir")  # compare's TMPDIR: empty afterwards means nothing was converted
        os.makedirs(self.scratch)

    def compare(self, out, *extra, source=None):
        return sf("compare", source or self.src, "--schemes", "f32,int8", "--text", self.text, "--ctx", 64,
                  "--chunks", 2, "--bench-tokens", 4, "--bench-reps", 1, "-t", 1, "--out", out, *extra,
                  check=False, timeout=120, env={**os.environ, "TMPDIR": self.scratch})

    def assert_refused(self, p, path, *needles):
        self.assertEqual(p.returncode, 1, p.stderr)
        self.assertTrue(p.stderr.startswith(f"shardforge: error: {path}: "), p.stderr)
        self.assertEqual(p.stderr.count("\n"), 1, p.stderr)
        for n in needles:
            self.assertIn(n, p.stderr)

    def test_compare_refuses_inputs_and_artifact_files_before_converting(self):
        art = self.path("art")
        sf("convert", self.src, "-o", art)
        checkpoint = os.path.join(self.src, "pytorch_model.bin")
        cases = [  # (source, out, expected words)
            (self.src, checkpoint, "reads"),
            (self.src, os.path.join(self.src, "config.json"), "inside"),
            # Given the checkpoint file, its directory is still read (config.json, the tokenizer).
            (checkpoint, os.path.join(self.src, "config.json"), "inside"),
            (checkpoint, os.path.join(self.src, "tokenizer.model"), "reads"),
            (self.src, self.text, "reads"),
            (self.src, os.path.join(art, "manifest.json"), "artifact directory"),
            (self.src, os.path.join(art, "report.md"), "artifact directory"),
        ]
        for source, out, needle in cases:
            with self.subTest(source=source, out=out):
                before = snapshot(self.tmp)
                p = self.compare(out, source=source)
                self.assert_refused(p, out, needle)
                self.assertEqual(snapshot(self.tmp), before, "a refused --out changed something")
                self.assertEqual(os.listdir(self.scratch), [])
        self.assertTrue(sf_json("verify", art)["ok"])

    def test_compare_refuses_a_report_inside_the_keep_directory_up_front(self):
        keep = self.path("keep")
        os.makedirs(keep)  # exists and is writable: only the --keep rule can refuse KEEP/int8
        p = self.compare(os.path.join(keep, "int8"), "--keep", keep)
        self.assert_refused(p, os.path.join(keep, "int8"), "inside " + keep)
        self.assertEqual(os.listdir(keep), [], "converted before refusing")

    def test_compare_refuses_links_fifos_devices_and_hard_links(self):
        victim = self.path("victim.txt")
        write_bytes(victim, "keep me")
        os.symlink(victim, self.path("link.md"))
        os.link(victim, self.path("hard.md"))
        os.mkfifo(self.path("fifo.md"))
        for out, needle in [(self.path("link.md"), "symbolic link"), (self.path("hard.md"), "hard links"),
                            (self.path("fifo.md"), "not a regular file"), ("/dev/null", "not a regular file")]:
            with self.subTest(out=out):
                p = self.compare(out)
                self.assert_refused(p, out, needle)
                self.assertEqual(os.listdir(self.scratch), [])
        self.assertEqual(read_bytes(victim), b"keep me")
        self.assertTrue(os.path.islink(self.path("link.md")))
        self.assertTrue(stat.S_ISFIFO(os.lstat(self.path("fifo.md")).st_mode))
        self.assertTrue(stat.S_ISCHR(os.stat("/dev/null").st_mode), "/dev/null was replaced")

    def test_compare_replaces_an_earlier_report(self):
        out = self.path("report.md")
        write_bytes(out, "an older report")
        p = self.compare(out)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertTrue(read_bytes(out).startswith(b"| scheme |"))

    def run_logits(self, art, out):
        return sf("run", art, "--ids", "1,2,3", "-n", 2, "--logits", out, "--json", check=False, timeout=60)

    def test_run_logits_refuses_the_artifact_links_fifos_and_devices_before_running(self):
        art = self.path("art")
        sf("convert", self.src, "-o", art)
        victim = self.path("victim.bin")
        write_bytes(victim, "keep me")
        os.symlink(victim, self.path("link.bin"))
        os.mkfifo(self.path("fifo.bin"))
        shard = os.path.join(art, "block_000.shard")
        before = snapshot(art)
        for out, needle in [(shard, "inside"), (os.path.join(art, "logits.bin"), "inside"),
                            (self.path("link.bin"), "symbolic link"), (self.path("fifo.bin"), "not a regular file"),
                            ("/dev/null", "not a regular file")]:
            with self.subTest(out=out):
                p = self.run_logits(art, out)  # the FIFO has no reader: a wait would hit the timeout
                self.assert_refused(p, out, needle)
                self.assertEqual(p.stdout, "", "ran before refusing")
        self.assertEqual(snapshot(art), before)
        self.assertEqual(read_bytes(victim), b"keep me")
        self.assertTrue(stat.S_ISCHR(os.stat("/dev/null").st_mode), "/dev/null was replaced")

    def test_run_logits_writes_a_row_per_computed_position(self):
        art, out = self.path("art"), self.path("logits.bin")
        sf("convert", self.src, "-o", art)
        write_bytes(out, "x" * 1000000)  # an older, longer dump: truncated, not partly overwritten
        p = self.run_logits(art, out)
        self.assertEqual(p.returncode, 0, p.stderr)
        vocab = read_json(os.path.join(art, "manifest.json"))["model"]["vocab_size"]
        self.assertEqual(os.path.getsize(out), (3 + 1) * vocab * 4)  # 3 prompt positions + 1 generated


class StalePartialLinks(TempDirTest):
    def test_a_link_named_like_a_partial_never_deletes_its_target(self):
        victim, out = self.path("victim"), self.path("out")
        sf("convert", fixture("hf_gqa"), "-o", victim)
        before = snapshot(victim)
        dead = subprocess.Popen(["true"])
        dead.wait()
        link = f"{out}.partial-{dead.pid}"
        os.symlink(victim, link)
        p = sf("convert", fixture("hf_gqa"), "-o", out)
        self.assertEqual(snapshot(victim), before, "the artifact the link points at was changed")
        self.assertTrue(sf_json("verify", victim)["ok"])
        self.assertTrue(os.path.islink(link))
        self.assertIn(link + " is named like a conversion's partial directory but is not a directory", p.stderr)


class ForceChecksTheWholeManifest(TempDirTest):
    def refused(self, out, *needles):
        before = snapshot(out)
        p = sf("convert", fixture("hf_gqa"), "-o", out, "--force", check=False)
        self.assertEqual(p.returncode, 1, p.stderr)
        for n in needles:
            self.assertIn(n, p.stderr)
        self.assertEqual(snapshot(out), before, "a refused --force changed something")

    def test_a_hand_written_manifest_does_not_make_a_directory_replaceable(self):
        fk = self.path("fk")
        os.makedirs(fk)
        write_bytes(os.path.join(fk, "thesis.docx"), "precious")
        write_json(os.path.join(fk, "manifest.json"), {"format": "shardforge", "files": [{"path": "thesis.docx"}]})
        self.refused(fk, "not a shardforge artifact")
        self.assertEqual(read_bytes(os.path.join(fk, "thesis.docx")), b"precious")

    def test_an_artifact_whose_manifest_was_edited_is_not_replaced(self):
        art = self.path("art")
        sf("convert", fixture("hf_gqa"), "-o", art)
        write_bytes(os.path.join(art, "thesis.docx"), "precious")
        m = read_json(os.path.join(art, "manifest.json"))
        m["files"].append({"path": "thesis.docx", "bytes": 8, "sha256": "0" * 64})  # not resealed
        write_json(os.path.join(art, "manifest.json"), m)
        self.refused(art, "manifest_sha256")
