"""Checkpoint containers (issue 6, item 3): safetensors files, single and sharded, and Meta's
model-parallel consolidated.NN.pth sets convert to artifacts that compute what the same model saved
as one torch.save file computes; headers that lie and parts that disagree are refused with exit 1
and one line naming the file, within a time and memory limit."""
import hashlib
import json
import os
import resource
import shutil
import struct
import subprocess
import sys
from collections import OrderedDict

import numpy as np
import torch

from sftest import SF, TempDirTest, fixture, read_bytes, read_json, sf, sf_json, write_bytes, write_json

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures"))
import safetensors_writer as st  # noqa: E402

LIMIT_AS = int(os.environ.get("SF_TEST_LIMIT_AS", 2 << 30))  # 0 under the sanitizers
TIMEOUT = 60


def limited():
    if LIMIT_AS:
        resource.setrlimit(resource.RLIMIT_AS, (LIMIT_AS, LIMIT_AS))


def run(*args):
    return subprocess.run([SF, *map(str, args)], capture_output=True, text=True, timeout=TIMEOUT,
                          preexec_fn=limited)


class Equivalence(TempDirTest):
    """Each container against PyTorch's reference logits and against the artifact converted from the
    same weights saved by torch.save: the f32 logits must be identical, bit for bit."""

    def logits(self, name):
        src = fixture(name)
        ref = read_json(os.path.join(src, "ref.json"))
        out, dump = self.path(name), self.path(name + ".f32")
        sf("convert", src, "-o", out)
        got = sf_json("run", out, "--ids", ",".join(map(str, ref["prompt_ids"])), "-n", 32, "--logits", dump)
        logits = np.fromfile(dump, dtype="<f4").reshape(-1, ref["vocab_size"])
        want = np.fromfile(os.path.join(src, "ref_logits.f32"), dtype="<f4").reshape(-1, ref["vocab_size"])
        self.assertEqual(got["ids"], ref["greedy"], f"{name}: greedy tokens differ from PyTorch")
        err, tol = float(np.abs(logits[: len(want)] - want).max()), 1e-4 * float(np.abs(want).max())
        self.assertLessEqual(err, tol, f"{name}: max logit error {err:.3g} against PyTorch")
        return logits, out

    def same_as(self, name, torch_saved):
        a, out = self.logits(name)
        b, _ = self.logits(torch_saved)
        self.assertTrue(np.array_equal(a, b), f"{name} and {torch_saved} computed different logits")
        return out

    def source_files(self, art):
        return {f["name"]: f["sha256"] for f in read_json(os.path.join(art, "manifest.json"))["source"]["files"]}

    def test_single_safetensors_equals_torch_save(self):
        out = self.same_as("hf_st", "hf_gqa")
        self.assertEqual(sf_json("inspect", out)["source"]["format"], "safetensors")
        data = read_bytes(os.path.join(fixture("hf_st"), "model.safetensors"))
        self.assertEqual(self.source_files(out), {"model.safetensors": hashlib.sha256(data).hexdigest()})

    def test_sharded_bf16_safetensors_equals_torch_save(self):
        out = self.same_as("hf_st_sharded", "hf_bf16")
        self.assertEqual(sorted(self.source_files(out)),
                         ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"])

    def test_llama3_model_parallel_equals_unsplit(self):
        # Llama 3 splits the embedding by vocabulary rows, not by feature columns as LLaMA 1/2.
        out = self.same_as("meta_mp2_llama3", "meta_params")
        self.assertEqual(sf_json("inspect", out)["source"]["architecture"], "llama/meta")

    def test_model_parallel_equals_unsplit(self):
        out = self.same_as("meta_mp2", "meta_params")
        src = fixture("meta_mp2")
        self.assertEqual(self.source_files(out), {
            n: hashlib.sha256(read_bytes(os.path.join(src, n))).hexdigest()
            for n in ["consolidated.00.pth", "consolidated.01.pth"]})
        self.assertEqual(sf_json("inspect", out)["source"]["architecture"], "llama/meta")

    def test_safetensors_named_as_file_or_index(self):
        for path in [os.path.join(fixture("hf_st"), "model.safetensors"),
                     os.path.join(fixture("hf_st_sharded"), "model.safetensors.index.json")]:
            with self.subTest(path=path):
                info = sf_json("inspect", path)
                self.assertEqual(info["format"], "safetensors")
                self.assertEqual(info["model"]["vocab_size"], 300)

    def test_safetensors_preferred_beside_bin(self):
        # Many Hugging Face repositories hold both; the safetensors are read, as transformers does.
        d = self.path("both")
        shutil.copytree(fixture("hf_st"), d)
        shutil.copy(os.path.join(fixture("hf_gqa"), "pytorch_model.bin"), d)
        self.assertEqual(sf_json("inspect", d)["format"], "safetensors")


class LyingHeaders(TempDirTest):
    def refused(self, data, *needles, name="model.safetensors"):
        path = self.path(name)
        write_bytes(path, data)
        out = self.path("out")
        p = run("convert", path, "-o", out)
        self.assertEqual(p.returncode, 1, f"exit {p.returncode}: {p.stderr}")
        lines = p.stderr.strip().splitlines()
        self.assertEqual(len(lines), 1, p.stderr)
        self.assertIn(path, lines[0])
        for n in needles:
            self.assertIn(n, lines[0])
        self.assertFalse(os.path.exists(out))
        return lines[0]

    def entry(self, dtype="F32", shape=(4,), offsets=(0, 16)):
        return {"dtype": dtype, "shape": list(shape), "data_offsets": list(offsets)}

    def test_offsets_past_the_end(self):
        self.refused(st.pack({"w": self.entry()}, b"\0" * 8), "past the end")

    def test_overlapping_tensors(self):
        self.refused(st.pack({"a": self.entry(offsets=(0, 16)), "b": self.entry(offsets=(8, 24))}, b"\0" * 24),
                     "overlap")

    def test_header_length_2_pow_60(self):
        self.refused(struct.pack("<Q", 1 << 60) + b'{"w": {}}', "header length", "MiB")

    def test_header_length_past_the_file(self):
        self.refused(struct.pack("<Q", 4096) + b"{}", "header length", "past the end")

    def test_dtype_times_shape_is_not_the_byte_length(self):
        self.refused(st.pack({"w": self.entry(shape=(3,))}, b"\0" * 16), "12 bytes", "hold 16")

    def test_negative_dimension(self):
        self.refused(st.pack({"w": self.entry(shape=(-1, 4))}, b"\0" * 16), "negative")

    def test_huge_dimensions(self):
        for shape in [(1 << 40, 1 << 40), ((1 << 62),), ((1 << 63) + 5,), (0, 1 << 62, 1 << 62)]:
            with self.subTest(shape=shape):
                self.refused(st.pack({"w": self.entry(shape=shape)}, b"\0" * 16), "w")

    def test_not_a_json_object(self):
        for text in [b"[1, 2, 3]", b'"string"', b"{not json", b"{" + b'"a":{' * 100 + b"}" * 101]:
            with self.subTest(text=text[:20]):
                self.refused(st.pack(text, b""), "safetensors header")

    def test_truncated_file(self):
        data = read_bytes(os.path.join(fixture("hf_st"), "model.safetensors"))
        self.refused(data[: len(data) // 2], "past the end of the data")
        self.refused(data[:5], "too short")

    def test_unknown_dtype_and_bad_entries(self):
        cases = [({"w": self.entry(dtype="F8_E4M3", shape=(16,))}, "F8_E4M3"),
                 ({"w": self.entry(offsets=(16, 0))}, "end before"),
                 ({"w": self.entry(offsets=(0,))}, "data_offsets"),
                 ({"w": {"dtype": "F32", "shape": [4.5], "data_offsets": [0, 16]}}, "not an integer"),
                 ({"w": [1]}, "not an object"),
                 ({"__metadata__": {"format": 1}, "w": self.entry()}, "__metadata__")]
        for header, needle in cases:
            with self.subTest(needle=needle):
                self.refused(st.pack(header, b"\0" * 16), needle)


def add_to_safetensors(path, name, tensor):
    """Rewrites a safetensors file with one more tensor after the others (read with a few lines of
    Python here, not by shardforge)."""
    data = read_bytes(path)
    (n,) = struct.unpack("<Q", data[:8])
    header, body = json.loads(data[8:8 + n]), data[8 + n:]
    extra = st.raw_bytes(tensor)
    header[name] = {"dtype": st.DTYPES[tensor.dtype], "shape": list(tensor.shape),
                    "data_offsets": [len(body), len(body) + len(extra)]}
    write_bytes(path, st.pack(header, body + extra))


def add_to_torch_save(path, name, tensor):
    sd = torch.load(path)
    sd[name] = tensor
    torch.save(sd, path)


class ConvertRefusal(TempDirTest):
    def refused(self, src, *needles):
        """convert exits 1 with one line holding every needle; returns the line."""
        p = run("convert", src, "-o", self.path("out"))
        self.assertEqual(p.returncode, 1, p.stderr)
        lines = p.stderr.strip().splitlines()
        self.assertEqual(len(lines), 1, p.stderr)
        for n in needles:
            self.assertIn(n, lines[0])
        return lines[0]


class ShardedIndex(ConvertRefusal):
    # Each sharded container: fixture, index, shard file names, how to add a tensor to a shard.
    CONTAINERS = [("hf_st_sharded", "model.safetensors.index.json", "model-0000{}-of-00002.safetensors",
                   add_to_safetensors),
                  ("hf_sharded", "pytorch_model.bin.index.json", "pytorch_model-0000{}-of-00002.bin",
                   add_to_torch_save)]

    def sharded(self, fixture_name="hf_st_sharded", index_name="model.safetensors.index.json"):
        d = self.path("src")
        shutil.rmtree(d, ignore_errors=True)
        shutil.copytree(fixture(fixture_name), d)
        return d, os.path.join(d, index_name)


    def test_shard_outside_the_directory(self):
        d, index = self.sharded()
        m = read_json(index)
        m["weight_map"]["lm_head.weight"] = "../model-00001-of-00002.safetensors"
        write_json(index, m)
        self.refused(d, index, "outside the directory")

    def test_shard_lacks_an_assigned_tensor(self):
        d, index = self.sharded()
        m = read_json(index)
        m["weight_map"]["model.norm.weight"] = "model-00001-of-00002.safetensors"
        write_json(index, m)
        self.refused(d, "model-00001-of-00002.safetensors", "lacks tensor model.norm.weight")

    def test_shard_holds_a_tensor_the_index_does_not_list(self):
        # Left unread, it would be a weight silently dropped; a single file holding it is refused too.
        for name, index_name, shard, add in self.CONTAINERS:
            with self.subTest(container=name):
                d, index = self.sharded(name, index_name)
                first = os.path.join(d, shard.format(1))
                add(first, "extra.weight", torch.zeros(2, 2))
                self.refused(d, first, "holds tensor extra.weight", index + " does not list")

    def test_needed_tensor_in_a_shard_but_not_in_the_index(self):
        # Reported as in that shard but not in the index, not merely as a missing tensor.
        for name, index_name, shard, add in self.CONTAINERS:
            with self.subTest(container=name):
                d, index = self.sharded(name, index_name)
                m = read_json(index)
                self.assertEqual(m["weight_map"].pop("model.norm.weight"), shard.format(2))
                write_json(index, m)
                self.refused(d, os.path.join(d, shard.format(2)), "holds tensor model.norm.weight",
                             index + " does not list")

    def test_tensor_in_two_shards(self):
        d, index = self.sharded()
        m = read_json(index)
        first = os.path.join(d, "model-00001-of-00002.safetensors")
        name = next(n for n, s in m["weight_map"].items() if s.startswith("model-00002"))
        other = next(n for n, s in m["weight_map"].items() if s.startswith("model-00001"))
        st.save({other: torch.zeros(1), name: torch.zeros(1)}, first)  # also holds a tensor of shard 2
        m["weight_map"] = {other: "model-00001-of-00002.safetensors", name: "model-00002-of-00002.safetensors"}
        write_json(index, m)
        self.refused(d, first, "holds tensor " + name)


class ModelParallel(ConvertRefusal):
    """Copies of meta_mp2 (two ranks) with one part changed."""

    def parts(self):
        d = self.path("mp")
        shutil.copytree(fixture("meta_mp2"), d)
        return d, [os.path.join(d, f"consolidated.{r:02d}.pth") for r in range(2)]

    def edit(self, path, change):
        sd = torch.load(path)
        change(sd)
        torch.save(sd, path)


    def test_shape_disagrees_outside_the_split_axis(self):
        d, (p0, p1) = self.parts()
        self.edit(p1, lambda sd: sd.update({"layers.1.attention.wq.weight": torch.zeros(32, 65)}))
        self.refused(d, p1, "layers.1.attention.wq.weight", "[32, 65]", "consolidated.00.pth")

    def test_replicated_norm_differs(self):
        d, (p0, p1) = self.parts()
        self.edit(p1, lambda sd: sd["layers.0.ffn_norm.weight"].mul_(1.001))
        self.refused(d, p1, "layers.0.ffn_norm.weight", "differs", "consolidated.00.pth")

    def test_missing_part(self):
        d, (p0, p1) = self.parts()
        shutil.copy(p1, os.path.join(d, "consolidated.02.pth"))
        os.remove(p1)
        self.refused(d, p1, "is missing")

    def test_missing_and_extra_names(self):
        d, (p0, p1) = self.parts()
        self.edit(p1, lambda sd: sd.pop("rope.freqs"))
        self.refused(d, p1, "lacks tensor rope.freqs")
        self.edit(p1, lambda sd: sd.update({"rope.freqs": torch.zeros(8), "extra.weight": torch.zeros(2)}))
        self.refused(d, p1, "holds tensor extra.weight")

    def test_dtype_disagrees(self):
        d, (p0, p1) = self.parts()
        self.edit(p1, lambda sd: sd.update({"layers.0.feed_forward.w2.weight": sd["layers.0.feed_forward.w2.weight"].half()}))
        self.refused(d, p1, "layers.0.feed_forward.w2.weight", "f16", "f32")

    def test_embedding_fitting_neither_split_is_refused(self):
        # Llama 3 layout (rows) on rank 0, half the columns on rank 1: neither layout for dim 64.
        d = self.path("mp3")
        shutil.copytree(fixture("meta_mp2_llama3"), d)
        p0, p1 = (os.path.join(d, f"consolidated.{r:02d}.pth") for r in range(2))
        self.edit(p1, lambda sd: sd.update({"tok_embeddings.weight": sd["tok_embeddings.weight"][:, :32].clone()}))
        self.refused(d, p0, "tok_embeddings.weight", "[150, 64] in consolidated.00.pth",
                     "[150, 32] in consolidated.01.pth", "dim 64")

    def test_embedding_split_needs_dim(self):
        d, (p0, p1) = self.parts()
        params = os.path.join(d, "params.json")
        write_json(params, {k: v for k, v in read_json(params).items() if k != "dim"})
        self.refused(d, p0, "tok_embeddings.weight", "needs the model's dim")

    def test_one_rank_named_alone_is_refused(self):
        d, (p0, p1) = self.parts()
        self.refused(p0, p0, "one of 2 model-parallel parts")


if __name__ == "__main__":
    import unittest
    unittest.main()
