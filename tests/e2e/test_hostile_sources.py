"""Hostile sources (issue 5): every input here is made by the test. Each must give exit 1 and one
line naming the file - or, for zip-level damage that still converts, an artifact whose every f32
word occurs in the source file (no byte from outside what the source holds). Every run has a
time and memory limit, so a regression fails instead of hanging CI or eating the machine."""
import io
import json
import os
import resource
import shutil
import struct
import subprocess
import time
import zipfile
import zlib
from collections import OrderedDict

import torch

from sftest import SAMPLE, SF, STORIES, TempDirTest, fixture, need_stories, read_bytes, read_json, sf, write_bytes
from test_bad_input import TensorRecord, torch_pickle, torch_zip, ustr

# Address-space limit for every run (SF_TEST_LIMIT_AS=0 turns it off, for sanitizer builds, which
# reserve terabytes of address space).
LIMIT_AS = int(os.environ.get("SF_TEST_LIMIT_AS", 2 << 30))
TIMEOUT = 60


def limited():
    if LIMIT_AS:
        resource.setrlimit(resource.RLIMIT_AS, (LIMIT_AS, LIMIT_AS))


def run(*args, timeout=TIMEOUT):
    return subprocess.run([SF, *map(str, args)], capture_output=True, text=True, timeout=timeout,
                          preexec_fn=limited)


# ---- a zip writer with every field under the test's control ------------------------------------

def deflate(data):
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    return c.compress(data) + c.flush()


def make_zip(entries, comment=b"", cd_patch=None, lh_patch=None):
    """entries: [(name, data, method)], method 0 (stored) or 8 (deflated). cd_patch(record) and
    lh_patch(header) may change any field before it is written; sizes and offsets of 2^32 - 1 or
    more go to a zip64 extra field. Returns the archive's bytes."""
    out = bytearray()
    recs = []
    for name, data, method in entries:
        nb = name.encode()
        comp = data if method == 0 else deflate(data)
        h = dict(name=nb, method=method, crc=zlib.crc32(data), csize=len(comp), usize=len(data), extra=b"")
        if lh_patch:
            lh_patch(h)
        if h["usize"] >= 0xFFFFFFFF or h["csize"] >= 0xFFFFFFFF:
            h["extra"] = struct.pack("<HHQQ", 1, 16, h["usize"], h["csize"]) + h["extra"]
        lho = len(out)
        out += struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, h["method"], 0, 0x21, h["crc"],
                           min(h["csize"], 0xFFFFFFFF), min(h["usize"], 0xFFFFFFFF), len(h["name"]),
                           len(h["extra"])) + h["name"] + h["extra"] + comp
        recs.append(dict(name=nb, method=method, crc=zlib.crc32(data), csize=len(comp), usize=len(data), lho=lho))
    cd_off = len(out)
    for r in recs:
        if cd_patch:
            cd_patch(r)
        z64, fields = b"", []
        for key in ("usize", "csize", "lho"):
            if r[key] >= 0xFFFFFFFF:
                z64 += struct.pack("<Q", r[key])
                fields.append(0xFFFFFFFF)
            else:
                fields.append(r[key])
        extra = struct.pack("<HH", 1, len(z64)) + z64 if z64 else b""
        usize, csize, lho = fields
        out += struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 45, 45 if z64 else 20, 0, r["method"], 0, 0x21,
                           r["crc"], csize, usize, len(r["name"]), len(extra), 0, 0, 0, 0, lho) + r["name"] + extra
    n = len(recs)
    out += struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, n, n, len(out) - cd_off, cd_off, len(comment)) + comment
    return bytes(out)


def small_llama(seed=1):
    """A complete Meta-named LLaMA with model_args, as torch.save writes it (random f32 weights, so
    every 4-byte word of the output can be looked for in the source)."""
    g = torch.Generator().manual_seed(seed)
    dim, hidden, vocab = 16, 24, 256

    def w(*shape):
        return torch.randn(*shape, generator=g)

    sd = OrderedDict()
    sd["tok_embeddings.weight"] = w(vocab, dim)
    p = "layers.0."
    sd[p + "attention_norm.weight"] = w(dim)
    for k in ("wq", "wk", "wv", "wo"):
        sd[p + "attention." + k + ".weight"] = w(dim, dim)
    sd[p + "ffn_norm.weight"] = w(dim)
    sd[p + "feed_forward.w1.weight"] = w(hidden, dim)
    sd[p + "feed_forward.w2.weight"] = w(dim, hidden)
    sd[p + "feed_forward.w3.weight"] = w(hidden, dim)
    sd["norm.weight"] = w(dim)
    sd["output.weight"] = w(vocab, dim)
    args = {"dim": dim, "n_layers": 1, "n_heads": 2, "n_kv_heads": 2, "vocab_size": vocab, "hidden_dim": hidden,
            "norm_eps": 1e-5, "max_seq_len": 64}
    buf = io.BytesIO()
    torch.save({"model": sd, "model_args": args}, buf)
    with zipfile.ZipFile(io.BytesIO(buf.getvalue())) as z:
        return [(i.filename, z.read(i), 0) for i in z.infolist()]


def artifact_words(out):
    """Every 4-byte word of every tensor the artifact holds (embedding.bin and each .shard's data)."""
    words = []
    for f in sorted(os.listdir(out)):
        data = read_bytes(os.path.join(out, f))
        if f == "embedding.bin":
            words += [data[i:i + 4] for i in range(0, len(data), 4)]
        elif f.endswith(".shard"):
            (hlen,) = struct.unpack_from("<I", data, 12)
            for t in json.loads(data[16:16 + hlen])["tensors"]:
                blob = data[t["offset"]:t["offset"] + t["nbytes"]]
                words += [blob[i:i + 4] for i in range(0, len(blob), 4)]
    return words


class Hostile(TempDirTest):
    def refused(self, proc, *needles):
        self.assertEqual(proc.returncode, 1, f"exit {proc.returncode}, stderr: {proc.stderr[-2000:]}")
        lines = proc.stderr.strip().splitlines()
        self.assertEqual(len(lines), 1, f"expected one line, got: {proc.stderr[-2000:]}")
        for n in needles:
            self.assertIn(n, lines[0])
        for internal in ("No error", "Zip archive inconsistent", "std::", "bad_alloc", "libzip"):
            self.assertNotIn(internal, lines[0])
        return lines[0]

    def convert_refused(self, src, *needles, extra=()):
        out = self.path("out")
        msg = self.refused(run("convert", src, "-o", out, *extra), *needles)
        self.assertFalse(os.path.exists(out), "a refused conversion left output")
        return msg

    def refused_or_from_source(self, src, what):
        """Exit 1 with one line naming the file, or an artifact made only of the source's bytes."""
        out = self.path("out-" + what.replace(" ", "_"))
        p = run("convert", src, "-o", out, "--quant", "f32")
        if p.returncode != 0:
            self.refused(p, src)
            self.assertFalse(os.path.exists(out))
            return False
        data = read_bytes(src)
        have = {data[i:i + 4] for i in range(len(data) - 3)}
        missing = [w for w in artifact_words(out) if w not in have]
        self.assertEqual(missing[:5], [], f"{what}: {len(missing)} output words come from outside the source")
        return True

    # -- 1, 2, 10: zip-level corruption --------------------------------------------------------

    def test_zip_writer_and_checker_work(self):
        src = self.path("clean.pt")
        write_bytes(src, make_zip(small_llama()))
        self.assertTrue(self.refused_or_from_source(src, "clean"), "the clean archive must convert")

    def test_zip_level_corruption(self):
        entries = small_llama()
        data_names = [n for n, _, _ in entries if "/data/" in n]
        cases = {}
        for name in data_names:
            def wrap(r, name=name):
                if r["name"].decode() == name:
                    r["usize"] = r["csize"] = 2**64 - 1
            cases["zip64 size 2^64-1 on " + name] = make_zip(entries, cd_patch=wrap)

            def overlap_cd(r, name=name):
                if r["name"].decode() == name:
                    r["usize"] = r["csize"] = r["csize"] + 64
            cases["entry overlapping the central directory " + name] = make_zip(entries, cd_patch=overlap_cd)

            def huge_offset(r, name=name):
                if r["name"].decode() == name:
                    r["lho"] = 2**64 - 16
            cases["local header at 2^64-16 " + name] = make_zip(entries, cd_patch=huge_offset)

            def shift(h, name=name):
                if h["name"].decode() == name:
                    h["extra"] = b"\0" * 40
            cases["local header extra lies " + name] = make_zip(entries, lh_patch=shift)

            def rename(h, name=name):
                if h["name"].decode() == name:
                    h["name"] = h["name"][:-1] + b"Z"
            cases["local header names another entry " + name] = make_zip(entries, lh_patch=rename)

        # The attack of issue 5: a short stored entry, last before the central directory, whose
        # zip64 size 2^64 - 1 made `data_offset + size > n` wrap around and pass; the pickle
        # declares more bytes than the entry holds, and they were read from past the file's end.
        short = next(n for n, d, _ in entries if "/data/" in n and len(d) == 256 * 16 * 4)
        rest = [e for e in entries if e[0] != short]
        short_entry = (short, next(d for n, d, _ in entries if n == short)[:16], 0)

        def wrap_short(r):
            if r["name"].decode() == short:
                r["usize"] = r["csize"] = 2**64 - 1

        def wrap_short_local(h):
            if h["name"].decode() == short:
                h["usize"] = h["csize"] = 2**64 - 1
        cases["zip64 size 2^64-1 on a short last entry"] = make_zip(rest + [short_entry], cd_patch=wrap_short,
                                                                     lh_patch=wrap_short_local)

        # Two entries claiming the same bytes.
        first_lho = {}

        def same_lho(r):
            if "/data/" in r["name"].decode():
                r["lho"] = first_lho.setdefault("x", r["lho"])
        cases["entries sharing their bytes"] = make_zip(entries, cd_patch=same_lho)

        # A fake end-of-central-directory record (and directory) hidden in the real one's comment,
        # pointing at a local header at 2^64 - 16.
        clean = make_zip(entries)
        cd_off = struct.unpack_from("<I", clean, len(clean) - 6)[0]
        body = clean[:-22]
        fake_cd_off = len(body) + 22
        name = entries[0][0].encode()
        z64 = struct.pack("<Q", 2**64 - 16)
        fake_cd = struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 45, 45, 0, 0, 0, 0x21, 0, 4, 4, len(name),
                              4 + len(z64), 0, 0, 0, 0, 0xFFFFFFFF) + name + struct.pack("<HH", 1, len(z64)) + z64
        fake_eocd = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, 1, 1, len(fake_cd), fake_cd_off, 0)
        comment = fake_cd + fake_eocd
        real_eocd = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(entries), len(entries), fake_cd_off - 22 - cd_off,
                                cd_off, len(comment))
        cases["fake end of central directory in the comment"] = body + real_eocd + comment

        # Truncated central directory, wrong entry count, truncated file.
        eocd = len(clean) - 22
        cd_size = struct.unpack_from("<I", clean, eocd + 12)[0]
        b = bytearray(clean)
        struct.pack_into("<I", b, eocd + 12, cd_size - 30)
        cases["central directory size short"] = bytes(b)
        b = bytearray(clean)
        struct.pack_into("<HH", b, eocd + 8, len(entries) + 1, len(entries) + 1)
        cases["entry count too high"] = bytes(b)
        cases["central directory cut"] = clean[:cd_off + cd_size // 2] + clean[eocd:]
        cases["file cut in the data"] = clean[:len(clean) // 2]

        for what, blob in cases.items():
            with self.subTest(what):
                src = self.path("bad.pt")
                write_bytes(src, blob)
                self.refused_or_from_source(src, what)

    def test_fake_eocd_is_refused_and_inspect_survives(self):
        entries = small_llama()
        clean = make_zip(entries)
        fake_eocd = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, 1, 1, 46, 0, 0)
        b = bytearray(clean)
        struct.pack_into("<H", b, len(b) - 2, len(fake_eocd))
        src = self.path("fake.pt")
        write_bytes(src, bytes(b) + fake_eocd)
        self.refused(run("inspect", src), src)
        self.convert_refused(src, src)

    def test_deflated_storage_declaring_4_gib(self):
        entries = small_llama()
        numel = (0xFFFFFFF0) // 4
        pkl = torch_pickle(OrderedDict([("w", TensorRecord(numel, 0, (numel,), (1,)))]))
        zentries = [("archive/data.pkl", pkl, 0), ("archive/version", b"3\n", 0), ("archive/data/0", b"\0" * 4096, 8)]

        def claim(r):
            if r["name"].endswith(b"/data/0"):
                r["usize"] = 0xFFFFFFF0

        def claim_local(h):
            if h["name"].endswith(b"/data/0"):
                h["usize"] = 0xFFFFFFF0
        src = self.path("bomb.pt")
        write_bytes(src, make_zip(zentries, cd_patch=claim, lh_patch=claim_local))
        t = time.time()
        self.convert_refused(src, src)
        self.assertLess(time.time() - t, 20)
        del entries

    # -- 3: deep nesting ---------------------------------------------------------------------

    def checkpoint_with_args(self, args_pickle, name):
        """A pickle {'model': <one tensor>, 'model_args': <args_pickle>} in a torch zip."""
        inner = torch_pickle(OrderedDict([("tok_embeddings.weight", TensorRecord(4, 0, (2, 2), (2, 1)))]))
        assert inner.startswith(b"\x80\x02") and inner.endswith(b".")
        body = b"\x80\x02}(" + ustr("model") + inner[2:-1] + ustr("model_args") + args_pickle + b"u."
        src = self.path(name)
        torch_zip(src, body, {"0": b"\0" * 16})
        return src

    def test_deep_metadata_is_refused(self):
        depth = 100_000
        deep_dict = b"}" + (ustr("a") + b"}") * depth + b"s" * depth
        src = self.checkpoint_with_args(deep_dict, "deep_dict.pt")
        self.convert_refused(src, src, "deeper than 64")
        self.refused(run("inspect", src), src)
        deep_tuple = b"}" + ustr("x") + b")" + b"\x85" * 60_000 + b"s"
        src = self.checkpoint_with_args(deep_tuple, "deep_tuple.pt")
        self.convert_refused(src, src, "deeper than 64")

    def test_rebuild_from_type_v2_cannot_wrap_itself(self):
        head = b"\x80\x02ctorch._tensor\n_rebuild_from_type_v2\nq\x01ctorch\nTensor\nq\x02"
        # 50 000 levels fit the pickle memory budget but not the C++ stack, had the wrapper recursed;
        # 300 000 are refused by the budget.
        for depth, needle in ((2, "may not be called through it"), (50_000, "may not be called through it"),
                              (300_000, None)):
            with self.subTest(depth=depth):
                # f(f, Tensor, (f, Tensor, (... ), {}), {}), nested `depth` times, then called.
                args = b"(h\x01h\x02" * depth + b")" + b"}t" * depth
                body = head + b"h\x01" + args + b"R."
                src = self.path(f"rebuild{depth}.pt")
                torch_zip(src, body)
                self.convert_refused(src, src, *([needle] if needle else []))

    # -- 5: pickle memory ----------------------------------------------------------------------

    def test_pickle_memory_is_bounded_by_file_size(self):
        chain = b")" + b"\x85" * 10_000_000   # a 10-million-deep tuple chain, never used
        body = b"\x80\x02}(" + ustr("unused") + chain + b"u."
        for method in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            with self.subTest(method=method):
                src = self.path(f"chain{method}.pt")
                with zipfile.ZipFile(src, "w", method) as z:
                    z.writestr("archive/data.pkl", body)
                    z.writestr("archive/version", "3\n")
                t = time.time()
                msg = self.convert_refused(src, src)
                self.assertIn("memory", msg)
                self.assertLess(time.time() - t, 30)

    # -- 6: files that are not regular files ---------------------------------------------------

    def test_non_regular_files_are_refused(self):
        fifo = self.path("fifo.pt")
        os.mkfifo(fifo)
        self.convert_refused(fifo, fifo, "FIFO")
        self.refused(run("inspect", fifo, timeout=20), fifo)
        for target in ("/dev/zero", "/proc/self/mem"):
            link = self.path(os.path.basename(target) + ".pt")
            os.symlink(target, link)
            self.convert_refused(link, link)
        base = fixture("hf_gqa")
        for name in ("config.json", "pytorch_model.bin.index.json", "pytorch_model.bin"):
            with self.subTest(name=name):
                d = self.path("dir_" + name)
                shutil.copytree(base, d)
                path = os.path.join(d, name)
                if os.path.exists(path):
                    os.remove(path)
                os.mkfifo(path)
                self.convert_refused(d, path)
                os.remove(path)
                os.symlink("/dev/zero", path)
                self.convert_refused(d, path)
        d = self.path("meta_fifo")
        shutil.copytree(fixture("meta_params"), d)
        os.remove(os.path.join(d, "params.json"))
        os.mkfifo(os.path.join(d, "params.json"))
        self.convert_refused(d, os.path.join(d, "params.json"))

    # -- 7, 8: hyper-parameters ----------------------------------------------------------------

    def edited(self, name, file, **changes):
        d = self.path(f"{name}_{len(os.listdir(self.tmp))}")
        shutil.copytree(fixture(name), d)
        cfg = read_json(os.path.join(d, file))
        cfg.update(changes)
        with open(os.path.join(d, file), "w") as f:
            json.dump(cfg, f)
        return d

    def test_absurd_layer_counts_are_refused_at_once(self):
        for name, file, key in (("hf_gqa", "config.json", "num_hidden_layers"),
                                ("meta_params", "params.json", "n_layers")):
            with self.subTest(file=file):
                d = self.edited(name, file, **{key: 10**12})
                for cmd in ("inspect", "convert"):
                    t = time.time()
                    args = (cmd, d) if cmd == "inspect" else (cmd, d, "-o", self.path("o"))
                    self.refused(run(*args, timeout=20), f"{file} says 1000000000000 layers but the checkpoint holds 2")
                    self.assertLess(time.time() - t, 10)

    def test_absurd_hyper_parameters(self):
        cases = [
            ("hf_gqa", "config.json", {"rope_theta": -1}, "rope_theta"),
            ("hf_gqa", "config.json", {"rope_theta": 0}, "rope_theta"),
            ("hf_gqa", "config.json", {"rms_norm_eps": 1e308}, "rms_norm_eps"),
            ("hf_gqa", "config.json", {"rms_norm_eps": 0}, "rms_norm_eps"),
            ("hf_gqa", "config.json", {"hidden_size": 0}, "hidden_size"),
            ("hf_gqa", "config.json", {"num_attention_heads": -4}, "num_attention_heads"),
            ("hf_gqa", "config.json", {"intermediate_size": 2**62}, "intermediate_size"),
            ("hf_gqa", "config.json", {"vocab_size": 2**40, "hidden_size": 2**40}, "more than"),
            ("hf_gqa", "config.json", {"max_position_embeddings": -1}, "'max_position_embeddings'"),
            ("hf_gqa", "config.json", {"max_position_embeddings": 10**18}, "'max_position_embeddings'"),
            ("meta_params", "params.json", {"norm_eps": 1e308}, "norm_eps"),
            ("meta_params", "params.json", {"max_seq_len": -1}, "'max_seq_len'"),
            ("meta_params", "params.json", {"dim": -64}, "'dim'"),
            # values of the wrong JSON type, each named with its key (found by fuzz_json_config)
            ("hf_gqa", "config.json", {"hidden_act": 7}, "'hidden_act' is not a string"),
            ("hf_gqa", "config.json", {"tie_word_embeddings": "yes"}, "'tie_word_embeddings' is not true or false"),
            ("hf_gqa", "config.json", {"rope_theta": "10000"}, "'rope_theta' is not a number"),
            ("hf_gqa", "config.json", {"num_hidden_layers": 2.5}, "'num_hidden_layers' is not an integer"),
        ]
        for name, file, changes, needle in cases:
            with self.subTest(changes=changes):
                d = self.edited(name, file, **changes)
                msg = self.convert_refused(d, needle)
                self.assertIn(file, msg)

    def test_max_seq_bound_is_the_artifact_readers(self):
        # A value at the bound converts and verifies; one past it is refused, naming the bound.
        d = self.edited("hf_gqa", "config.json", max_position_embeddings=2**40)
        out = self.path("ok")
        sf("convert", d, "-o", out)
        sf("verify", out)
        d = self.edited("hf_gqa", "config.json", max_position_embeddings=2**40 + 1)
        self.convert_refused(d, "'max_position_embeddings'", str(2**40))

    # -- 9: tokenizer beside the checkpoint ----------------------------------------------------

    def test_tokenizer_beside_the_checkpoint(self):
        d = self.path("tok")
        os.makedirs(d)
        src = os.path.join(d, "model.pt")
        write_bytes(src, make_zip(small_llama()))
        tok = os.path.join(SAMPLE, "tokenizer.model")
        self.assertIsNone(json.loads(sf("inspect", src, "--json").stdout)["tokenizer"])
        shutil.copy(tok, os.path.join(d, "tok32.model"))
        self.assertEqual(json.loads(sf("inspect", src, "--json").stdout)["tokenizer"], os.path.join(d, "tok32.model"))
        shutil.copy(tok, os.path.join(d, "other.model"))
        self.assertIsNone(json.loads(sf("inspect", src, "--json").stdout)["tokenizer"])
        shutil.copy(tok, os.path.join(d, "tokenizer.model"))
        self.assertEqual(json.loads(sf("inspect", src, "--json").stdout)["tokenizer"],
                         os.path.join(d, "tokenizer.model"))

    def test_real_model_tokenizer_is_found(self):
        need_stories()
        info = json.loads(sf("inspect", os.path.join(STORIES, "stories260K.pt"), "--json").stdout)
        self.assertEqual(os.path.basename(info["tokenizer"]), "tok512.model")

    # -- 4: the source shrinking while it is read ----------------------------------------------

    def test_source_truncated_during_conversion(self):
        # An ignored 32 MiB tensor first, the real weights after it: cutting the file to a third
        # while `convert` runs removes every weight it has yet to read. Reads go through pread, so
        # that is an error (exit 1), never SIGBUS.
        g = torch.Generator().manual_seed(3)
        d = self.path("m")
        shutil.copytree(fixture("meta_params"), d)
        ck = os.path.join(d, "consolidated.00.pth")
        sd = torch.load(ck)
        torch.save(OrderedDict([("rope.freqs", torch.randn(8 << 20, generator=g))] + list(sd.items())), ck)
        original = read_bytes(ck)
        for delay in (0.0, 0.01, 0.03, 0.1, 0.3):
            with self.subTest(delay=delay):
                write_bytes(ck, original)
                out = self.path(f"out{delay}")
                p = subprocess.Popen([SF, "convert", d, "-o", out, "--quant", "f32"], stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, preexec_fn=limited)
                time.sleep(delay)
                with open(ck, "r+b") as f:
                    f.truncate(len(original) // 3)
                _, err = p.communicate(timeout=TIMEOUT)
                if os.environ.get("SF_TEST_VERBOSE"):
                    print(f"delay {delay}: exit {p.returncode} {err.strip()[-200:]}")
                self.assertIn(p.returncode, (0, 1), f"delay {delay}: exit {p.returncode} (SIGBUS?)\n{err[-2000:]}")
                if p.returncode == 1:
                    self.assertEqual(len(err.strip().splitlines()), 1, err)


if __name__ == "__main__":
    import unittest
    unittest.main()
