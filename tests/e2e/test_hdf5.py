"""convert --format hdf5: h5py (Debian's python3-h5py) opens the file and every tensor, decoded in
numpy from its codes / scales / zeros datasets as docs/format.md lays them out, equals the same tensor
decoded from the shard artifact of the same conversion (and its tensor_sha256 attribute is the shard
bytes' sha256); run and eval on the .h5 give the directory's logits and perplexity exactly; the file is
byte-identical across thread counts; hostile files (truncated, lying shapes, links, filters, external
storage, extra objects) are one error line naming the file, exit 1."""
import hashlib
import json
import os
import shutil
import struct

import h5py
import numpy as np

from sftest import HELDOUT, SAMPLE, SANITIZED, TempDirTest, fixture, read_bytes, read_json, sf, sf_json, write_bytes

SCHEMES = ["f32", "f16", "bf16", "int8", "int4:g32:sym", "int4:g16:asym", "q8_0", "q4_0"]
if SANITIZED:
    SCHEMES = ["f16", "int4:g16:asym", "q4_0"]


# ---- an independent reader of the shard artifact (docs/format.md) ----
def shard_tensors(art):
    """{name: (type, group, shape, raw bytes)} of every tensor of a shards artifact."""
    m = read_json(os.path.join(art, "manifest.json"))
    u = m["units"]
    e = u["embedding"]
    out = {e["tensor"]: (e["type"], e.get("group", 0), e["shape"], read_bytes(os.path.join(art, e["file"])))}
    for f in u["blocks"] + [u["head"]] + ([u["positions"]] if "positions" in u else []):
        buf = read_bytes(os.path.join(art, f))
        assert buf[:8] == b"SFSHARD\0"
        (h,) = struct.unpack_from("<I", buf, 12)
        for t in json.loads(buf[16:16 + h])["tensors"]:
            out[t["name"]] = (t["type"], t.get("group", 0), t["shape"], buf[t["offset"]:t["offset"] + t["nbytes"]])
    return out


def f16(b):
    return np.frombuffer(b, dtype="<f2").astype(np.float32)


def decode_row_bytes(kind, group, rows, cols, raw):
    """Rows of the shard layout decoded to f32, straight from the byte positions of docs/format.md."""
    raw = np.frombuffer(raw, dtype=np.uint8).reshape(rows, -1)
    nb = (cols + 31) // 32
    if kind == "f32":
        return raw.copy().view("<f4")
    if kind == "f16":
        return raw.copy().view("<f2").astype(np.float32)
    if kind == "bf16":
        return (raw.copy().view("<u2").astype(np.uint32) << 16).view(np.float32)
    if kind == "int8":
        d = raw[:, :4].copy().view("<f4")
        return d * raw[:, 4:4 + cols].view(np.int8).astype(np.float32)
    if kind in ("int4_sym", "int4_asym"):
        g = (cols + group - 1) // group
        d = raw[:, :2 * g].copy().view("<f2").astype(np.float32)
        skip = 2 * g if kind == "int4_sym" else 4 * g
        packed = raw[:, skip:]
        codes = np.stack([packed & 15, packed >> 4], axis=2).reshape(rows, -1)[:, :cols].astype(np.float32)
        gi = np.arange(cols) // group
        if kind == "int4_sym":
            return d[:, gi] * (codes - 8)
        m = raw[:, 2 * g:4 * g].copy().view("<f2").astype(np.float32)
        return d[:, gi] * codes + m[:, gi]
    blocks = raw.reshape(rows, nb, -1)
    d = blocks[:, :, :2].copy().view("<f2").astype(np.float32)  # [rows, nb, 1]
    if kind == "q8_0":
        q = blocks[:, :, 2:].view(np.int8).astype(np.float32)
    else:
        qs = blocks[:, :, 2:]
        q = np.concatenate([qs & 15, qs >> 4], axis=2).astype(np.float32) - 8
    return (d * q).reshape(rows, -1)[:, :cols]


def decode_h5(grp, name):
    """A tensor decoded from its HDF5 datasets: codes in NAME, NAME.scales, NAME.zeros."""
    ds = grp[name]
    kind = ds.attrs["type"].decode()
    shape = [int(x) for x in ds.attrs["shape"]]
    cols = shape[-1]
    if kind == "f32":
        assert ds.dtype == np.float32
        return ds[()].astype(np.float32).reshape(-1, cols)
    if kind == "f16":
        assert ds.dtype == np.float16, ds.dtype
        return ds[()].astype(np.float32).reshape(-1, cols)
    if kind == "bf16":
        assert ds.dtype == np.uint16
        return (ds[()].astype(np.uint32) << 16).view(np.float32).reshape(-1, cols)
    codes, scales = ds[()], grp[name + ".scales"][()]
    if kind == "int8":
        assert codes.dtype == np.int8 and scales.dtype == np.float32 and scales.shape[1] == 1
        return scales * codes.astype(np.float32)
    if kind.startswith("int4"):
        group = int(ds.attrs["group"])
        assert codes.dtype == np.uint8 and scales.dtype == np.float16
        c = np.stack([codes & 15, codes >> 4], axis=2).reshape(codes.shape[0], -1)[:, :cols].astype(np.float32)
        gi = np.arange(cols) // group
        d = scales.astype(np.float32)[:, gi]
        if kind == "int4_sym":
            return d * (c - 8)
        return d * c + grp[name + ".zeros"][()].astype(np.float32)[:, gi]
    rows = codes.shape[0]
    d = scales.astype(np.float32)[:, :, None]  # [rows, blocks, 1]
    if kind == "q8_0":
        q = codes.reshape(rows, -1, 32).astype(np.float32)
    else:
        qs = codes.reshape(rows, -1, 16)
        q = np.concatenate([qs & 15, qs >> 4], axis=2).astype(np.float32) - 8
    return (d * q).reshape(rows, -1)[:, :cols]


def unit_group(name):
    if name.startswith("embed."):
        return "embedding"
    if name.startswith("head."):
        return "head"
    return "blocks/%03d" % int(name.split(".")[1])


def logits(model, ids, path):
    sf("run", model, "--ids", ",".join(map(str, ids)), "-n", "4", "--logits", path)
    return read_bytes(path)


class Hdf5MatchesTheShards(TempDirTest):
    def convert_both(self, src, quant, *extra):
        art, h5 = self.path(f"art-{quant}".replace(":", "_")), self.path(f"m-{quant}.h5".replace(":", "_"))
        sf("convert", src, "--quant", quant, "-o", art, *extra)
        sf("convert", src, "--quant", quant, "--format", "hdf5", "-o", h5, *extra)
        return art, h5

    def compare_every_tensor(self, art, h5):
        shards = shard_tensors(art)
        with h5py.File(h5, "r") as f:
            seen = set()
            for unit in ["embedding", "head"] + ["blocks/" + k for k in f.get("blocks", {}).keys()]:
                for name, ds in f[unit].items():
                    digest = hashlib.sha256(ds[()].tobytes()).hexdigest()
                    self.assertEqual(ds.attrs["sha256"].decode(), digest, name)
                    self.assertIsNone(ds.compression, name)
                    self.assertIsNotNone(ds.chunks, name)
                    if "type" in ds.attrs:
                        seen.add(name)
            self.assertEqual(seen, set(shards), "the .h5's tensors are not the artifact's")
            for name, (kind, group, shape, raw) in shards.items():
                ds = f[unit_group(name)][name]
                self.assertEqual(ds.attrs["type"].decode(), kind, name)
                self.assertEqual([int(x) for x in ds.attrs["shape"]], shape, name)
                self.assertEqual(ds.attrs["tensor_sha256"].decode(), hashlib.sha256(raw).hexdigest(), name)
                rows = shape[0] if len(shape) == 2 else 1
                want = decode_row_bytes(kind, group, rows, shape[-1], raw)
                got = decode_h5(f[unit_group(name)], name)
                np.testing.assert_array_equal(got, want, err_msg=f"{name} ({kind})")
            m = json.loads(f.attrs["manifest"].decode())
            sealed = dict(m)
            sealed.pop("manifest_sha256")
            self.assertEqual(hashlib.sha256(json.dumps(sealed, sort_keys=True, separators=(",", ":"),
                                                       ensure_ascii=False).encode()).hexdigest(), m["manifest_sha256"])
            self.assertEqual(f.attrs["manifest_sha256"].decode(), m["manifest_sha256"])
            self.assertEqual(json.loads(f.attrs["model"].decode()), m["model"])
            self.assertEqual(int(f.attrs["format_version"]), m["format_version"])
            self.assertEqual(m["model"], read_json(os.path.join(art, "manifest.json"))["model"])
        return m

    def test_every_tensor_of_every_scheme_equals_the_shard_artifact_s_and_runs_the_same(self):
        src = fixture("hf_gqa")
        ids = read_json(os.path.join(src, "ref.json"))["prompt_ids"]
        for quant in SCHEMES:
            with self.subTest(quant=quant):
                art, h5 = self.convert_both(src, quant)
                self.compare_every_tensor(art, h5)
                self.assertEqual(logits(art, ids, self.path("a.f32")), logits(h5, ids, self.path("b.f32")), quant)
                self.assertEqual(sf("verify", h5).returncode, 0)

    def test_gpt2_learned_positions_and_biases(self):
        src = fixture("gpt2_hub")
        art, h5 = self.convert_both(src, "q8_0")
        self.compare_every_tensor(art, h5)
        ids = read_json(os.path.join(src, "ref.json"))["prompt_ids"]
        self.assertEqual(logits(art, ids, self.path("a.f32")), logits(h5, ids, self.path("b.f32")))

    def test_tokenizer_trimmed_vocabulary_eval_inspect_bench(self):
        art, h5 = self.convert_both(SAMPLE, "int4:g32:sym", "--trim-vocab", "corpus:" + HELDOUT + ":1")
        m = self.compare_every_tensor(art, h5)
        self.assertEqual(m["tokenizer"]["kind"], "sentencepiece")
        with h5py.File(h5, "r") as f:
            self.assertEqual(f["files/tokenizer.model"][()].tobytes(), read_bytes(os.path.join(SAMPLE, "tokenizer.model")))
            self.assertEqual(f["files/vocab_map.bin"][()].tobytes(), read_bytes(os.path.join(art, "vocab_map.bin")))
        ppl = [sf_json("eval", "ppl", x, "--text", HELDOUT, "--ctx", "64", "--chunks", "2", "--json") for x in (art, h5)]
        self.assertEqual(ppl[0]["ppl"], ppl[1]["ppl"])
        runs = [sf_json("run", x, "-p", "The", "-n", "6") for x in (art, h5)]
        self.assertEqual(runs[0]["text"], runs[1]["text"])
        info = [sf_json("inspect", x) for x in (art, h5)]
        self.assertEqual(info[0]["tensors"], info[1]["tensors"])
        self.assertEqual(info[0]["vocab_trim"], info[1]["vocab_trim"])
        p = sf("verify", h5, "--json")
        self.assertTrue(json.loads(p.stdout)["ok"], p.stdout)
        sf("bench", h5, "-p", "8", "-n", "2", "-t", "1")

    def test_the_same_input_gives_the_same_bytes_whatever_the_thread_count(self):
        src = fixture("hf_gqa")
        a, b = self.path("t1.h5"), self.path("t3.h5")
        sf("convert", src, "--quant", "q4_0", "--format", "hdf5", "-o", a, "-t", "1")
        sf("convert", src, "--quant", "q4_0", "--format", "hdf5", "-o", b, "-t", "3")
        self.assertEqual(read_bytes(a), read_bytes(b))

    def test_output_rules(self):
        src = fixture("hf_gqa")
        out = self.path("x.h5")
        sf("convert", src, "--format", "hdf5", "-o", out)
        p = sf("convert", src, "--format", "hdf5", "-o", out, check=False)
        self.assertEqual(p.returncode, 1, p.stderr)
        self.assertIn("already exists", p.stderr)
        sf("convert", src, "--quant", "q8_0", "--format", "hdf5", "-o", out, "--force")
        self.assertEqual(sorted(os.listdir(self.tmp)), ["x.h5"])  # no partial file left
        other = self.path("note.txt")
        write_bytes(other, b"not hdf5")
        p = sf("convert", src, "--format", "hdf5", "-o", other, "--force", check=False)
        self.assertEqual(p.returncode, 1, p.stderr)
        self.assertIn("not a HDF5 file", p.stderr)
        self.assertEqual(read_bytes(other), b"not hdf5")


class HostileHdf5(TempDirTest):
    """Damaged or lying .h5 files: exit 1 and one error line naming the file, for inspect, run and
    verify; nothing followed outside the layout's paths."""

    @classmethod
    def setUpClass(cls):
        import tempfile
        cls.dir = tempfile.mkdtemp(prefix="sf-h5-")
        cls.good = os.path.join(cls.dir, "good.h5")
        sf("convert", fixture("hf_gqa"), "--quant", "int4:g16:asym", "--format", "hdf5", "-o", cls.good)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.dir, ignore_errors=True)

    def edited(self, edit):
        path = self.path("bad.h5")
        shutil.copyfile(self.good, path)
        with h5py.File(path, "r+") as f:
            edit(f)
        return path

    def refused(self, path, *needles, commands=("inspect", "run", "verify")):
        for c in commands:
            cmd = [c, path] + (["--ids", "1,2", "-n", "1"] if c == "run" else [])
            p = sf(*cmd, check=False)
            self.assertEqual(p.returncode, 1, (cmd, p.stderr))
            lines = p.stderr.splitlines()
            self.assertEqual(len(lines), 1, p.stderr)
            self.assertTrue(lines[0].startswith("shardforge: " + ("verify: " if c == "verify" else "error: ")), p.stderr)
            self.assertIn(path, p.stderr)
            for n in needles:
                self.assertIn(n, p.stderr)

    def test_the_good_file_verifies(self):
        self.assertTrue(sf_json("verify", self.good, "--json")["ok"])

    def test_truncated(self):
        data = read_bytes(self.good)
        for cut in [8, 100, 1000, len(data) // 2, len(data) - 1]:
            path = self.path("cut.h5")
            write_bytes(path, data[:cut])
            self.refused(path)

    def test_flipped_data_byte_fails_verify_by_its_checksum(self):
        with h5py.File(self.good, "r") as f:
            raw = f["head/head.output.weight"][()].tobytes()
        data = bytearray(read_bytes(self.good))
        off = bytes(data).find(raw[:256])  # one chunk (under 1 MiB): its bytes as written
        self.assertGreater(off, 0)
        data[off + 5] ^= 0x10
        path = self.path("flip.h5")
        write_bytes(path, bytes(data))
        p = sf("verify", path, check=False)
        self.assertEqual(p.returncode, 1, p.stderr)
        self.assertIn("sha256 differs", p.stderr)
        self.assertEqual(p.stderr.count("\n"), 1, p.stderr)

    def replace(self, f, path, **kw):
        attrs = dict(f[path].attrs)
        del f[path]
        d = f.create_dataset(path, **kw)
        for k, v in attrs.items():
            d.attrs[k] = v

    def test_lying_dataset_shapes_and_types(self):
        name = "blocks/001/blocks.1.attn.q.weight"
        with h5py.File(self.good, "r") as f:
            shape, dtype = f[name].shape, f[name].dtype
        # Huge and sparse (nothing allocated in the file), one row short, another element type.
        for kw in [dict(shape=(1 << 40, shape[1]), dtype=dtype, chunks=(1, shape[1])),
                   dict(shape=(shape[0] - 1, shape[1]), dtype=dtype),
                   dict(shape=shape, dtype=np.float32)]:
            self.refused(self.edited(lambda f: self.replace(f, name, **kw)), "blocks.1.attn.q.weight")

    def test_a_resealed_manifest_claiming_a_huge_vocabulary_is_refused_before_allocating(self):
        rows = 1 << 34  # 16 Gi rows of q4_0 codes: far past the file and the test's memory

        def huge(f):
            m = json.loads(f.attrs["manifest"].decode())
            m["model"]["vocab_size"] = rows
            m.pop("manifest_sha256")
            m["manifest_sha256"] = hashlib.sha256(json.dumps(m, sort_keys=True, separators=(",", ":"),
                                                             ensure_ascii=False).encode()).hexdigest()
            f.attrs["manifest"] = np.bytes_(json.dumps(m))
            for name in [n for n in f["embedding"] if n.startswith("embed.weight")]:
                ds = f["embedding"][name]
                attrs, cols, dtype = dict(ds.attrs), ds.shape[1], ds.dtype
                del f["embedding"][name]
                d = f["embedding"].create_dataset(name, shape=(rows, cols), dtype=dtype, chunks=(1, cols))
                for k, v in attrs.items():
                    d.attrs[k] = v
                if name == "embed.weight":
                    d.attrs["shape"] = np.array([rows, 64], dtype=np.int64)

        self.refused(self.edited(huge), "embed.weight", "more bytes than the file holds")

    def test_filters_and_external_storage(self):
        name = "blocks/000/blocks.0.ffn.up.weight.scales"
        with h5py.File(self.good, "r") as f:
            data = f[name][()]
        self.refused(self.edited(lambda f: self.replace(f, name, data=data, compression="gzip")), "filtered")
        ext = self.path("outside.bin")
        write_bytes(ext, data.tobytes())
        self.refused(self.edited(lambda f: self.replace(f, name, shape=data.shape, dtype=data.dtype,
                                                        external=[(ext, 0, data.nbytes)])), "external")

    def test_links_cycles_and_deep_groups(self):
        other = self.path("other.h5")
        shutil.copyfile(self.good, other)

        def external(f):
            del f["head"]
            f["head"] = h5py.ExternalLink(other, "/head")

        def soft(f):
            del f["head/head.norm.weight"]
            f["head/head.norm.weight"] = h5py.SoftLink("/blocks/000/blocks.0.attn_norm.weight")

        def cycle(f):
            f["blocks/000/loop"] = f["/"]

        def deep(f):
            g = f["head"]
            for i in range(200):
                g = g.create_group("g")

        self.refused(self.edited(external), "external link")
        self.refused(self.edited(soft), "soft link")
        self.refused(self.edited(cycle), "/blocks/000")
        self.refused(self.edited(deep), "/head")

    def test_a_damaged_tokenizer_is_named_by_its_dataset(self):
        h5 = self.path("tok.h5")
        sf("convert", SAMPLE, "--quant", "q8_0", "--format", "hdf5", "-o", h5)
        junk = np.frombuffer(b"not a sentencepiece model" * 4, dtype=np.uint8)
        digest = hashlib.sha256(junk.tobytes()).hexdigest()

        def damage(f):
            del f["files/tokenizer.model"]
            f["files"].create_dataset("tokenizer.model", data=junk, chunks=True)
            f["files/tokenizer.model"].attrs["sha256"] = np.bytes_(digest)
            m = json.loads(f.attrs["manifest"].decode())
            for e in m["files"]:
                if e["path"] == "tokenizer.model":
                    e["bytes"], e["sha256"] = len(junk), digest
            m["tokenizer"]["files"][0]["sha256"] = digest
            m.pop("manifest_sha256")
            m["manifest_sha256"] = hashlib.sha256(json.dumps(m, sort_keys=True, separators=(",", ":"),
                                                             ensure_ascii=False).encode()).hexdigest()
            f.attrs["manifest"] = np.bytes_(json.dumps(m))

        with h5py.File(h5, "r+") as f:
            damage(f)
        p = sf("run", h5, "-p", "The", "-n", "1", check=False)
        self.assertEqual(p.returncode, 1, p.stderr)
        self.assertEqual(p.stderr.count("\n"), 1, p.stderr)
        self.assertIn(h5 + ": /files/tokenizer.model", p.stderr)
        self.assertNotIn("shardforge-h5-", p.stderr)  # not the private temporary copy

    def test_edited_manifest_and_missing_objects(self):
        def edit_manifest(f):
            m = json.loads(f.attrs["manifest"].decode())
            m["model"]["n_layers"] += 1
            f.attrs["manifest"] = np.bytes_(json.dumps(m))

        self.refused(self.edited(edit_manifest), "manifest_sha256")
        self.refused(self.edited(lambda f: f.__delitem__("blocks/001")), "/blocks")
        self.refused(self.edited(lambda f: f.attrs.__delitem__("manifest")), "manifest")
        write_bytes(self.path("junk.h5"), b"\x89HDF\r\n\x1a\n" + b"\xff" * 300)
        self.refused(self.path("junk.h5"))
