"""The zip bundle (--format zip, pack, unpack; docs/format.md "Zip bundle"): one zip whose stored,
4 KiB-aligned entries are the shards artifact's files. Checked against python's zipfile and unzip,
against the directory artifact of the same conversion (same files, same logits), for determinism,
and with hostile bundles built here byte by byte (traversal names, duplicates, a symbolic link, a
deflated entry, a zip bomb, overlapping entries, truncation, sizes that lie, unlisted entries)."""
import hashlib
import io
import json
import os
import shutil
import struct
import subprocess
import unittest
import zipfile
import zlib

from sftest import HELDOUT, SAMPLE, TempDirTest, error_line, read_bytes, sf, sf_json, write_bytes

ALIGN = 4096


def local_header(name, data, method, csize, crc, extra):
    n = name.encode()
    return struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, method, 0, 0x21, crc, csize, len(data), len(n),
                       len(extra)) + n + extra


def build_zip(entries, align=ALIGN):
    """A zip from entries {name, data, [method: 0 or 8], [mode: st_mode], [comp: bytes], [at: offset
    of the local header inside earlier data, to make overlapping entries]}, each entry's data padded
    to `align` like shardforge's writer does (extra field 0xD935)."""
    out = bytearray()
    central = bytearray()
    for e in entries:
        data = e["data"]
        method = e.get("method", 0)
        comp = e.get("comp", zlib.compress(data, 9)[2:-4] if method == 8 else data)
        crc = zlib.crc32(data)
        n = e["name"].encode()
        if "at" in e:
            lho = e["at"]
        else:
            lho = len(out)
            base = lho + 30 + len(n) + 4 + 2
            pad = 2 + (-base) % align if align else 2
            extra = struct.pack("<HHH", 0xD935, pad, align) + bytes(pad - 2)
            out += local_header(e["name"], data, method, len(comp), crc, extra) + comp
        mode = e.get("mode", 0o100644)
        central += struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 0x0314, 20, 0, method, 0, 0x21, crc, len(comp),
                               len(data), len(n), 0, 0, 0, 0, mode << 16, lho) + n
    cd_off = len(out)
    out += central
    out += struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(entries), len(entries), len(central), cd_off, 0)
    return bytes(out)


def seal(m):
    m = dict(m)
    m.pop("manifest_sha256", None)
    m["manifest_sha256"] = hashlib.sha256(
        json.dumps(m, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()).hexdigest()
    return (json.dumps(m, indent=2) + "\n").encode()


class ZipBundle(TempDirTest):
    @classmethod
    def setUpClass(cls):
        import tempfile
        cls.tmp = tempfile.mkdtemp(prefix="sf-zip-")
        cls.dir = os.path.join(cls.tmp, "art")
        cls.zip = os.path.join(cls.tmp, "art.zip")
        sf("convert", SAMPLE, "-o", cls.dir, "-t", "1")
        sf("convert", SAMPLE, "--format", "zip", "-o", cls.zip, "-t", "3")
        with zipfile.ZipFile(cls.zip) as z:
            cls.entries = [(i.filename, z.read(i)) for i in z.infolist()]

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def test_entries_are_the_directory_s_files_stored_and_aligned(self):
        names = [n for n, _ in self.entries]
        self.assertEqual(names[0], "manifest.json")
        self.assertEqual(sorted(names), sorted(os.listdir(self.dir)))
        for name, data in self.entries:
            self.assertEqual(data, read_bytes(os.path.join(self.dir, name)), name)
        raw = read_bytes(self.zip)
        with zipfile.ZipFile(self.zip) as z:
            for i in z.infolist():
                self.assertEqual(i.compress_type, zipfile.ZIP_STORED, i.filename)
                self.assertEqual(i.date_time, (1980, 1, 1, 0, 0, 0))
                n, x = struct.unpack_from("<HH", raw, i.header_offset + 26)
                start = i.header_offset + 30 + n + x
                self.assertEqual(start % ALIGN, 0, f"{i.filename} data at {start}")
                self.assertEqual(raw[start:start + i.file_size], dict(self.entries)[i.filename])

    def test_unzip_t_passes(self):
        if not shutil.which("unzip"):
            self.skipTest("unzip is not installed")
        p = subprocess.run(["unzip", "-t", self.zip], capture_output=True, text=True)
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        self.assertIn("No errors detected", p.stdout)

    def test_every_command_reads_the_bundle_as_the_directory(self):
        self.assertEqual(sf("verify", self.zip).stdout.strip(), f"{self.zip}: OK")
        self.assertEqual(sf_json("inspect", self.zip)["model"], sf_json("inspect", self.dir)["model"])
        ids = "1,5,9,42,7"
        a, b = self.path("a.f32"), self.path("b.f32")
        sf("run", self.dir, "--ids", ids, "-n", "8", "--logits", a)
        sf("run", self.zip, "--ids", ids, "-n", "8", "--logits", b)
        self.assertGreater(len(read_bytes(a)), 0)
        self.assertEqual(read_bytes(a), read_bytes(b))
        # Text goes through the tokenizer the bundle carries.
        for cmd in (["run", "{}", "-p", "The jargon", "-n", "6", "--json"],
                    ["eval", "ppl", "{}", "--text", HELDOUT, "--ctx", "32", "--chunks", "2", "--json"]):
            x = sf(*[self.dir if c == "{}" else c for c in cmd]).stdout
            y = sf(*[self.zip if c == "{}" else c for c in cmd]).stdout
            self.assertEqual(x.replace(self.dir, "X"), y.replace(self.zip, "X"), cmd)

    def test_pack_is_the_bytes_of_format_zip_whatever_the_threads(self):
        packed = self.path("packed.zip")
        sf("pack", self.dir, "-o", packed)
        self.assertEqual(read_bytes(packed), read_bytes(self.zip))
        again = self.path("t1.zip")
        sf("convert", SAMPLE, "--format", "zip", "-o", again, "-t", "1")
        self.assertEqual(read_bytes(again), read_bytes(self.zip))

    def test_unpack_round_trip_verifies_and_equals_the_directory(self):
        out = self.path("un")
        sf("unpack", self.zip, "-o", out)
        sf("verify", out)
        self.assertEqual(sorted(os.listdir(out)), sorted(os.listdir(self.dir)))
        for name in os.listdir(out):
            self.assertEqual(read_bytes(os.path.join(out, name)), read_bytes(os.path.join(self.dir, name)), name)
        error_line(self, sf("unpack", self.zip, "-o", out, check=False), 1, out, "already exists")
        sf("unpack", self.zip, "-o", out, "--force")

    def test_force_replaces_only_a_bundle(self):
        other = self.path("other.zip")
        with zipfile.ZipFile(other, "w") as z:
            z.writestr("hello.txt", "not an artifact")
        error_line(self, sf("pack", self.dir, "-o", other, "--force", check=False), 1, other, "zip bundle")
        self.assertEqual(zipfile.ZipFile(other).namelist(), ["hello.txt"])
        out = self.path("p.zip")
        sf("pack", self.dir, "-o", out)
        error_line(self, sf("pack", self.dir, "-o", out, check=False), 1, "already exists")
        sf("pack", self.dir, "-o", out, "--force")
        self.assertEqual(read_bytes(out), read_bytes(self.zip))

    # ---- hostile bundles: exit 1, one line naming the file ----

    def refused(self, data, *needles, name="bad.zip"):
        path = self.path(name)
        write_bytes(path, data)
        for cmd in (["inspect", path], ["run", path, "--ids", "1", "-n", "1"], ["unpack", path, "-o", self.path("u")]):
            p = sf(*cmd, check=False, timeout=60)
            error_line(self, p, 1, path, *needles)
            self.assertFalse(os.path.exists(self.path("u")))
        v = sf("verify", path, check=False)
        self.assertEqual(v.returncode, 1)
        self.assertTrue(v.stderr.startswith("shardforge: verify: ") and path in v.stderr, v.stderr)

    def good(self):
        return [{"name": n, "data": d} for n, d in self.entries]

    def test_the_test_s_own_builder_makes_a_bundle_shardforge_reads(self):
        path = self.path("rebuilt.zip")
        write_bytes(path, build_zip(self.good()))
        sf("verify", path)

    def test_path_traversal_and_odd_names(self):
        for bad in ("../head.shard", "/etc/passwd", "a\\..\\b", "dir/head.shard", "..", ""):
            with self.subTest(bad=bad):
                self.refused(build_zip(self.good() + [{"name": bad, "data": b"x"}]), "entry")

    def test_duplicate_entries(self):
        e = self.good()
        self.refused(build_zip(e + [dict(e[-1])]), "same name")

    def test_symlink_entry(self):
        e = self.good()
        e[-1] = dict(e[-1], mode=0o120777)
        self.refused(build_zip(e), "symbolic link")

    def test_deflated_entry(self):
        e = self.good()
        e[-1] = dict(e[-1], method=8)
        self.refused(build_zip(e), "compressed")

    def test_zip_bomb(self):
        bomb = bytes(16 << 20)
        self.refused(build_zip(self.good() + [{"name": "embedding2.bin", "data": bomb, "method": 8}]), "compressed")

    def test_overlapping_entries(self):
        e = self.good()
        inner = local_header("z.bin", b"abcd", 0, 4, zlib.crc32(b"abcd"), b"") + b"abcd"
        pre = build_zip(e)
        cd_start = struct.unpack_from("<I", pre, len(pre) - 6)[0]
        at = cd_start + 30 + len("pad.bin") + 4 + 2
        at += (-at) % ALIGN  # where pad.bin's data will start
        self.refused(build_zip(e + [{"name": "pad.bin", "data": inner},
                                    {"name": "z.bin", "data": b"abcd", "at": at}]), "overlap")

    def test_truncated(self):
        raw = read_bytes(self.zip)
        for cut in (len(raw) // 2, len(raw) - 10, 5000):
            with self.subTest(cut=cut):
                self.refused(raw[:cut], "zip")

    def test_sizes_that_disagree_with_the_manifest(self):
        e = self.good()
        m = json.loads(e[0]["data"])
        f = next(f for f in m["files"] if f["path"] == "head.shard")
        f["bytes"] += 4096
        e[0] = {"name": "manifest.json", "data": seal(m)}
        self.refused(build_zip(e), "head.shard", "manifest says")

    def test_unlisted_and_missing_entries(self):
        self.refused(build_zip(self.good() + [{"name": "extra.bin", "data": b"x"}]), "extra.bin", "not listed")
        self.refused(build_zip([e for e in self.good() if e["name"] != "head.shard"]), "head.shard", "missing")

    def test_unaligned_entries(self):
        self.refused(build_zip(self.good(), align=0), "multiple of 4096")

    def test_tokenizer_files_are_extracted_privately_removed_and_named_by_entry(self):
        tmp = self.path("tmpdir")
        os.makedirs(tmp)
        env = dict(os.environ, TMPDIR=tmp)
        sf("run", self.zip, "-p", "The jargon", "-n", "2", env=env)
        self.assertEqual(os.listdir(tmp), [], "the extracted tokenizer was left behind")
        # A bundle whose tokenizer is not a SentencePiece model (its checksums made to agree).
        e = self.good()
        bad = b"\xff" * 64
        m = json.loads(e[0]["data"])
        for f in m["files"]:
            if f["path"] == "tokenizer.model":
                f["bytes"], f["sha256"] = len(bad), hashlib.sha256(bad).hexdigest()
        for f in m["tokenizer"]["files"]:
            f["sha256"] = hashlib.sha256(bad).hexdigest()
        e[0] = {"name": "manifest.json", "data": seal(m)}
        for x in e:
            if x["name"] == "tokenizer.model":
                x["data"] = bad
        path = self.path("badtok.zip")
        write_bytes(path, build_zip(e))
        line = error_line(self, sf("run", path, "-p", "hi", "-n", "1", check=False, env=env), 1, path + ":tokenizer.model")
        self.assertNotIn("shardforge-zip", line)
        self.assertEqual(os.listdir(tmp), [])

    def test_changed_bytes_are_found_by_verify(self):
        e = self.good()
        h = next(x for x in e if x["name"] == "head.shard")
        h["data"] = h["data"][:-1] + bytes([h["data"][-1] ^ 1])
        path = self.path("flip.zip")
        write_bytes(path, build_zip(e))
        v = sf("verify", path, check=False)
        self.assertEqual(v.returncode, 1)
        self.assertIn("head.shard: sha256 differs", v.stderr)


if __name__ == "__main__":
    unittest.main()
