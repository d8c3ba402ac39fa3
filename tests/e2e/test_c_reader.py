"""samples/c_reader/sf_block_reader.c, the C99 loader of docs/format.md "Loading on a device": built
with the system's C compiler, run on artifacts of every storage type, and its sums compared with a
decode in numpy written here from docs/format.md alone (not shardforge's own decoding). Damaged and
hostile files must give exit 1 and one line, never a crash."""
import json
import os
import random
import shutil
import subprocess
import tempfile
import unittest

import numpy as np

from sftest import ROOT, fixture, read_bytes, read_json, sf, write_bytes, write_json, write_meta_checkpoint

SOURCE = os.path.join(ROOT, "samples", "c_reader", "sf_block_reader.c")
CFLAGS = ["-std=c99", "-Wall", "-Wextra", "-pedantic", "-O2"]
# (fixture, scheme, extra convert flags): together they store every type both in a block and as the
# embedding, with rows of odd width (the meta checkpoint's ffn is 37 wide: a short last int4 group,
# a lone low nibble, a short last q4_0/q8_0 block) and groups that do not divide the row (g24 of 64).
CASES = [("hf_gqa", "f32", []), ("hf_gqa", "f16", []), ("hf_gqa", "bf16", []), ("hf_gqa", "int8", []),
         ("hf_gqa", "int4:g32", []), ("hf_gqa", "int4:g32:asym", ["--tensor-quant", "embed.weight=int4:g32:asym"]),
         ("hf_gqa", "q8_0", []), ("hf_gqa", "q4_0", []),
         ("hf_gqa", "int4:g24", ["--tensor-quant", "embed.weight=int4:g24"]),
         ("odd", "int4:g32", ["--tensor-quant", "embed.weight=int4:g32:asym"]), ("odd", "int4:g32:asym", []),
         ("odd", "q4_0", ["--tensor-quant", "embed.weight=q4_0"]), ("odd", "q8_0", []), ("odd", "bf16", []),
         ("gpt2_hub", "f16", []), ("gpt2_hub", "int8", [])]


def compiler():
    for cc in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if cc and shutil.which(cc):
            return cc
    return None


# ---- docs/format.md, "Tensor storage types", in numpy ----------------------------------------------
def f16(b):
    return np.ascontiguousarray(b).view("<f2").astype(np.float32)


def nibbles(b, cols):
    """int4 codes: element i in byte i / 2, even i the low nibble, odd i the high one."""
    return np.stack([b & 15, b >> 4], axis=-1).reshape(b.shape[0], -1)[:, :cols].astype(np.float32)


def row_bytes(typ, cols, group):
    G, B, codes = -(-cols // group) if group else 0, -(-cols // 32), -(-cols // 2)
    return {"f32": 4 * cols, "f16": 2 * cols, "bf16": 2 * cols, "int8": 4 + cols, "int4_sym": 2 * G + codes,
            "int4_asym": 4 * G + codes, "q8_0": 34 * B, "q4_0": 18 * B}[typ]


def decode(typ, raw, rows, cols, group=0):
    """rows x cols float32 values of `rows` stored rows of type `typ` (raw: their bytes)."""
    r = np.frombuffer(raw, dtype=np.uint8).reshape(rows, row_bytes(typ, cols, group))
    if typ == "f32":
        return np.ascontiguousarray(r).view("<f4")
    if typ == "f16":
        return f16(r)
    if typ == "bf16":
        return (np.ascontiguousarray(r).view("<u2").astype(np.uint32) << 16).view(np.float32)
    if typ == "int8":
        return np.ascontiguousarray(r[:, :4]).view("<f4") * r[:, 4:].view(np.int8).astype(np.float32)
    if typ.startswith("int4"):
        G = -(-cols // group)
        g = np.arange(cols) // group
        d = f16(r[:, :2 * G])[:, g]
        if typ == "int4_sym":
            return d * (nibbles(r[:, 2 * G:], cols) - np.float32(8))
        return d * nibbles(r[:, 4 * G:], cols) + f16(r[:, 2 * G:4 * G])[:, g]
    B = -(-cols // 32)
    blocks = r.reshape(rows, B, -1)
    d = f16(blocks[:, :, :2].reshape(rows * B, 2)).reshape(rows, B, 1)
    if typ == "q8_0":
        q = blocks[:, :, 2:].view(np.int8).astype(np.float32)
    else:  # q4_0: j < 16 the low nibble of qs[j], j >= 16 the high nibble of qs[j - 16]
        qs = blocks[:, :, 2:]
        q = np.concatenate([qs & 15, qs >> 4], axis=2).astype(np.float32) - np.float32(8)
    return (d * q).reshape(rows, B * 32)[:, :cols]


def shard_table(path):
    b = read_bytes(path)
    assert b[:8] == b"SFSHARD\0"
    h = int.from_bytes(b[12:16], "little")
    return b, h, json.loads(b[16:16 + h])


def expected(art, block, token):
    """What the reader must print, from the artifact's bytes: (label, type, rows, cols, values)."""
    emb = read_json(os.path.join(art, "manifest.json"))["units"]["embedding"]
    vocab, cols = emb["shape"]
    with open(os.path.join(art, emb["file"]), "rb") as f:
        f.seek(token * emb["row_bytes"])
        row = f.read(emb["row_bytes"])
    out = [(f"embed.weight[{token}]", emb["type"], 1, cols, decode(emb["type"], row, 1, cols, emb.get("group", 0)))]
    data, _, table = shard_table(os.path.join(art, f"block_{block:03d}.shard"))
    for t in table["tensors"]:
        rows, cols = (t["shape"] if len(t["shape"]) == 2 else [1] + t["shape"])
        raw = data[t["offset"]:t["offset"] + t["nbytes"]]
        out.append((t["name"], t["type"], rows, cols, decode(t["type"], raw, rows, cols, t.get("group", 0))))
    return out


class CReader(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cc = compiler()
        if cc is None:
            raise unittest.SkipTest("no C compiler (cc, gcc or clang) on PATH: the C reader cannot be built")
        cls.tmp = tempfile.mkdtemp(prefix="sf-creader-")
        cls.reader = os.path.join(cls.tmp, "sf_block_reader")
        p = subprocess.run([cc, *CFLAGS, SOURCE, "-o", cls.reader], capture_output=True, text=True)
        cls.build_log = p.stderr
        if p.returncode != 0:
            raise AssertionError(f"{cc} failed:\n{p.stderr}")
        write_meta_checkpoint(os.path.join(cls.tmp, "odd"), d=16, ffn=37, layers=2, vocab=50, seed=3)
        cls.arts = {}
        for name, scheme, extra in CASES:
            src = os.path.join(cls.tmp, "odd") if name == "odd" else fixture(name)
            out = os.path.join(cls.tmp, f"{name}-{scheme.replace(':', '_')}")
            sf("convert", src, "-o", out, "--quant", scheme, *extra)
            cls.arts[(name, scheme)] = out

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def run_reader(self, art, *args, exe=None, env=None):
        return subprocess.run([exe or self.reader, art, *map(str, args)], capture_output=True, env=env,
                              encoding="utf-8", errors="replace")

    def refused(self, art, *args, needle=None):
        p = self.run_reader(art, *args)
        self.assertEqual(p.returncode, 1, p.stdout + p.stderr)
        self.assertEqual(p.stdout, "")
        lines = p.stderr.splitlines()
        self.assertEqual(len(lines), 1, p.stderr)
        self.assertTrue(lines[0].startswith("sf_block_reader: error: "), p.stderr)
        if needle:
            self.assertIn(needle, lines[0])

    def test_builds_warning_free_and_short(self):
        self.assertEqual(self.build_log.strip(), "", "warnings: " + self.build_log)
        with open(SOURCE) as f:
            self.assertLessEqual(len(f.read().splitlines()), 200)

    def test_sums_match_numpy_decode(self):
        seen_block, seen_emb = set(), set()
        for (name, scheme), art in self.arts.items():
            n_layers = read_json(os.path.join(art, "manifest.json"))["model"]["n_layers"]
            vocab = read_json(os.path.join(art, "manifest.json"))["model"]["vocab_size"]
            for block, token in [(0, 0), (n_layers - 1, vocab - 1), (n_layers - 1, vocab // 3)]:
                p = self.run_reader(art, block, token)
                self.assertEqual(p.returncode, 0, f"{name} {scheme}: {p.stderr}")
                self.assertEqual(p.stderr, "")
                got = [line.split() for line in p.stdout.splitlines()]
                want = expected(art, block, token)
                self.assertEqual([g[:4] for g in got], [[w[0], w[1], str(w[2]), str(w[3])] for w in want],
                                 f"{name} {scheme}: tensors, types or shapes differ")
                for g, (label, typ, _, _, v) in zip(got, want):
                    self.assertTrue(g[4].startswith("sum=") and g[5].startswith("sumsq="), g)
                    v = v.astype(np.float64)
                    # The reader adds the f32 values in double: only the order differs from numpy's.
                    tol = 1e-7 * np.abs(v).sum() + 1e-30
                    self.assertLessEqual(abs(float(g[4][4:]) - v.sum()), tol, f"{name} {scheme} {label} sum")
                    self.assertLessEqual(abs(float(g[5][6:]) - (v * v).sum()), 1e-7 * (v * v).sum() + 1e-30,
                                         f"{name} {scheme} {label} sumsq")
                    (seen_emb if label.startswith("embed.weight[") else seen_block).add(typ)
        every = {"f32", "f16", "bf16", "int8", "int4_sym", "int4_asym", "q8_0", "q4_0"}
        self.assertEqual(seen_block, every)
        self.assertEqual(seen_emb, every)

    def test_decode_recipe_gives_the_weights(self):
        """The numpy decode above is docs/format.md's recipe; each quantized tensor decoded by it must
        be close to the f32 artifact's (a wrong nibble order or scale placement would not be)."""
        bound = {"f16": 1e-3, "bf16": 1e-2, "int8": 0.02, "q8_0": 0.02, "int4_sym": 0.2, "int4_asym": 0.2,
                 "q4_0": 0.2}
        for src in ("hf_gqa",):
            ref = {w[0]: w[4] for w in expected(self.arts[(src, "f32")], 1, 7)}
            for (name, scheme), art in self.arts.items():
                if name != src or scheme == "f32":
                    continue
                for label, typ, _, _, v in expected(art, 1, 7):
                    if typ == "f32":
                        np.testing.assert_array_equal(v, ref[label])
                        continue
                    err = np.sqrt(np.mean((v - ref[label]) ** 2) / np.mean(ref[label] ** 2))
                    self.assertLess(err, bound[typ], f"{scheme} {label} ({typ}): relative RMS error {err}")

    def copy_art(self, scheme="int4:g32"):
        dst = os.path.join(self.tmp, "edit")
        shutil.rmtree(dst, ignore_errors=True)
        shutil.copytree(self.arts[("hf_gqa", scheme)], dst)
        return dst, os.path.join(dst, "block_001.shard")

    def edit_header(self, shard, edit):
        data, h, table = shard_table(shard)
        edit(table)
        text = json.dumps(table, separators=(",", ":")).encode()
        self.assertLessEqual(len(text), h)
        write_bytes(shard, data[:16] + text.ljust(h, b" ") + data[16 + h:])

    def test_damaged_shards_refused(self):
        art, shard = self.copy_art()
        original = read_bytes(shard)
        size = len(original)
        cases = [
            ("bad magic", lambda: write_bytes(shard, b"SFSHARX\0" + original[8:]), "bad magic"),
            ("version 2", lambda: write_bytes(shard, original[:8] + b"\2\0\0\0" + original[12:]), "version"),
            ("truncated in the data", lambda: write_bytes(shard, original[:size // 2]), "past the end"),
            ("truncated in the header", lambda: write_bytes(shard, original[:40]), "header past the end"),
            ("empty", lambda: write_bytes(shard, b""), "bad magic"),
            ("header length past the end",
             lambda: write_bytes(shard, original[:12] + (size).to_bytes(4, "little") + original[16:]), "header past"),
        ]

        def set_last(key, value):
            return lambda: self.edit_header(shard, lambda t: t["tensors"][-1].__setitem__(key, value))
        last = shard_table(shard)[2]["tensors"][-1]
        cases += [
            ("offset past the end", set_last("offset", (size + 64) // 64 * 64), "past the end of the file"),
            ("huge offset", set_last("offset", 2 ** 47), "past the end of the file"),
            ("misaligned offset", set_last("offset", last["offset"] + 8), "64-aligned"),
            ("overlap", set_last("offset", shard_table(shard)[2]["tensors"][-2]["offset"]), "overlapping"),
            ("nbytes", set_last("nbytes", last["nbytes"] - 1), "nbytes"),
            ("unknown type", set_last("type", "int3"), "unknown tensor type"),
            ("group on f32", lambda: self.edit_header(shard, lambda t: t["tensors"][0].__setitem__("group", 32)), "group"),
            ("odd group", set_last("group", 31), "group"),
            ("zero group", set_last("group", 0), "group"),
            ("3-D shape", set_last("shape", [2, 50, 64]), "dimensions"),
            ("zero dim", set_last("shape", [0, 100]), "shape"),
            ("float offset", set_last("offset", float(last["offset"])), "integer"),
            ("string nbytes", set_last("nbytes", "2304"), "integer"),
            ("extra key", set_last("scale", 1), "unknown or repeated key"),
            ("wrong unit", lambda: self.edit_header(shard, lambda t: t.__setitem__("unit", "block_000")), "unit"),
        ]
        for what, damage, needle in cases:
            with self.subTest(what):
                write_bytes(shard, original)
                damage()
                self.refused(art, 1, 3, needle=needle)
        write_bytes(shard, original)
        self.assertEqual(self.run_reader(art, 1, 3).returncode, 0)

    def test_bad_arguments_and_manifest_refused(self):
        art, _ = self.copy_art()
        self.refused(art, 2, 0, needle="past units.blocks")
        self.refused(art, 0, 300, needle="past the vocabulary")
        self.refused(art, "x", 0, needle="integers")
        self.refused(art, "-1", 0, needle="integers")
        self.refused(os.path.join(self.tmp, "nowhere"), 0, 0, needle="cannot open")
        p = subprocess.run([self.reader, art], capture_output=True, text=True)
        self.assertEqual((p.returncode, len(p.stderr.splitlines())), (1, 1), p.stderr)
        emb = os.path.join(art, "embedding.bin")
        whole = read_bytes(emb)
        write_bytes(emb, whole[:-1])
        self.refused(art, 0, 0, needle="vocab x row_bytes")
        write_bytes(emb, whole)
        mpath = os.path.join(art, "manifest.json")
        m = read_json(mpath)
        for what, edit, needle in [
                ("traversal", lambda m: m["units"]["blocks"].__setitem__(0, "../block_000.shard"), "plain file name"),
                ("row_bytes", lambda m: m["units"]["embedding"].__setitem__("row_bytes", 69), "row_bytes"),
                ("version", lambda m: m.__setitem__("format_version", 2), "format_version 3"),
                ("nesting", lambda m: m.__setitem__("deep", json.loads("[" * 100 + "]" * 100)), "nested")]:
            with self.subTest(what):
                mm = json.loads(json.dumps(m))
                edit(mm)
                write_json(mpath, mm)
                self.refused(art, 0, 0, needle=needle)
        write_bytes(mpath, json.dumps(m)[:-20])
        self.refused(art, 0, 0)

    def test_mutated_files_never_crash(self):
        """Random damage to a shard's header and the manifest under AddressSanitizer and UBSan, when the
        compiler has them: each run ends with exit 0, or exit 1 and one line."""
        exe = os.path.join(self.tmp, "sf_block_reader_asan")
        p = subprocess.run([compiler(), *CFLAGS, "-g", "-fsanitize=address,undefined", "-fno-sanitize-recover=all",
                            SOURCE, "-o", exe], capture_output=True, text=True)
        env = dict(os.environ, ASAN_OPTIONS="exitcode=86:detect_leaks=0", UBSAN_OPTIONS="exitcode=86:print_stacktrace=1")
        art, shard = self.copy_art("q4_0")
        if p.returncode != 0 or self.run_reader(art, 1, 5, exe=exe, env=env).returncode != 0:
            exe = self.reader  # no working sanitizer runtime: the plain build still must not crash
        mpath = os.path.join(art, "manifest.json")
        originals = {shard: read_bytes(shard), mpath: read_bytes(mpath)}
        h = 16 + int.from_bytes(originals[shard][12:16], "little")
        rng = random.Random(7)
        for i in range(300):
            path = shard if i % 3 else mpath
            b = bytearray(originals[path])
            hi = h if path == shard else len(b)
            pos = rng.randrange(0, hi)
            kind = rng.randrange(5)
            if kind == 4 and path == shard:  # a well-formed table whose numbers lie
                table = json.loads(b[16:h])
                t = table["tensors"][-1] if rng.random() < 0.5 else rng.choice(table["tensors"])  # the last: no successor to overlap
                key = rng.choice(["offset", "nbytes", "shape", "group"])
                big = rng.choice([64, 4096, len(b), 2 ** 32, 2 ** 47])
                t[key] = [rng.randrange(1, big), rng.randrange(1, 300)] if key == "shape" else rng.randrange(0, big, 2)
                if key == "offset" and rng.random() < 0.7:
                    t[key] -= t[key] % 64
                text = json.dumps(table, separators=(",", ":")).encode()
                b[16:h] = text.ljust(h - 16, b" ")
            elif kind == 0:
                b[pos] ^= 1 << rng.randrange(8)
            elif kind == 1:
                b[pos] = rng.choice(b'{}[]":,0123456789\\ ')
            elif kind == 2:
                del b[pos:]
            elif kind == 3:
                b[pos:pos + 1] = b"9" * rng.randrange(1, 25)
            write_bytes(path, bytes(b))
            p = self.run_reader(art, 1, 5, exe=exe, env=env)
            self.assertIn(p.returncode, (0, 1), f"mutation {i} of {path}: {p.stderr[-3000:]}")
            if p.returncode == 1:
                self.assertEqual(len(p.stderr.splitlines()), 1, f"mutation {i}: {p.stderr}")
            write_bytes(path, originals[path])


if __name__ == "__main__":
    unittest.main()
