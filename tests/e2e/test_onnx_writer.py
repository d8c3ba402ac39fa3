"""--format onnx: the written graphs run in onnxruntime (the npm package onnxruntime-node, installed
once into the build directory; graph optimisation "basic") and give our executor's logits on the same
weights: f32 and f16 within 1e-4 of the largest logit for every family the writer generates, 32
greedy tokens through the KV-cache inputs equal to `shardforge run`'s, quantized weights (int8 per
row, int4 block-wise, q8_0/q4_0) within the executor's activation rounding; byte-identical output for any -t;
refusals in one line."""
import json
import os
import shutil
import subprocess
import unittest

import sys

import numpy as np

from sftest import FIXTURES, HERE, ROOT, SF, TempDirTest, error_line, read_bytes, sf

sys.path.insert(0, os.path.join(ROOT, "tests", "fixtures"))

ORT_DIR = os.environ.get("SF_ORT_DIR", os.path.join(os.path.dirname(os.path.abspath(SF)), "onnxruntime-node"))
RUNNER = os.path.join(HERE, "onnx_run.js")
PROMPT = [1, 17, 254, 3, 99, 180, 42, 7, 250, 61, 128, 5]
STEPS = 32
# Fixtures of every family the writer generates (ChatGLM-6B's 2-D RoPE is refused).
FAMILIES = ["hf_gqa", "meta_params", "hf_tied", "gpt2_hub", "internlm2_bias", "internlm2_gqa", "chatglm2_6b"]
NETWORK_ERRORS = ("ENOTFOUND", "EAI_AGAIN", "ETIMEDOUT", "ECONNREFUSED", "ENETUNREACH", "ECONNRESET", "network")


def ensure_onnxruntime():
    """Installs onnxruntime-node under ORT_DIR once. Returns None, or why the tests must skip."""
    if os.path.isdir(os.path.join(ORT_DIR, "node_modules", "onnxruntime-node")):
        return None
    if not shutil.which("node") or not shutil.which("npm"):
        return "node/npm not installed"
    os.makedirs(ORT_DIR, exist_ok=True)
    p = subprocess.run(["npm", "install", "--prefix", ORT_DIR, "--ignore-scripts", "--no-audit", "--no-fund",
                        "onnxruntime-node"], capture_output=True, text=True, timeout=600)
    if p.returncode != 0:
        if any(e in p.stderr for e in NETWORK_ERRORS):
            return "npm registry unreachable, onnxruntime-node not installed: " + p.stderr.strip().splitlines()[-1]
        raise AssertionError("npm install onnxruntime-node failed:\n" + p.stderr)
    return None


def onnx_run(model, ids, steps=0):
    env = dict(os.environ, SF_ORT_DIR=ORT_DIR)
    p = subprocess.run(["node", RUNNER, model, ",".join(map(str, ids)), str(steps)], capture_output=True,
                       text=True, env=env)
    if p.returncode != 0:
        raise AssertionError(f"onnxruntime on {model} failed:\n{p.stderr}")
    r = json.loads(p.stdout)
    return np.array(r["logits"], dtype=np.float64), r["generated"], np.array(r["step_logits"], dtype=np.float64)


def fields(buf):
    """(field number, wire type, value) of a protobuf message: ints for varints, bytes otherwise."""
    i = 0
    while i < len(buf):
        key, i = varint(buf, i)
        num, wire = key >> 3, key & 7
        if wire == 0:
            v, i = varint(buf, i)
        elif wire == 2:
            n, i = varint(buf, i)
            v, i = buf[i:i + n], i + n
        elif wire in (1, 5):
            n = 8 if wire == 1 else 4
            v, i = buf[i:i + n], i + n
        else:
            raise AssertionError(f"wire type {wire}")
        yield num, wire, v


def varint(buf, i):
    v = shift = 0
    while True:
        b = buf[i]
        i += 1
        v |= (b & 0x7F) << shift
        shift += 7
        if b < 0x80:
            return v, i


def external_refs(model_bytes):
    """Initializer name -> (location, offset, length) of each external one (ModelProto.graph = 7,
    GraphProto.initializer = 5, TensorProto.name = 8, external_data = 13)."""
    refs = {}
    graph = next(v for n, _, v in fields(model_bytes) if n == 7)
    for n, _, t in fields(graph):
        if n != 5:
            continue
        name, ext = None, {}
        for tn, _, tv in fields(t):
            if tn == 8:
                name = tv.decode()
            elif tn == 13:
                kv = {k: v.decode() for k, _, v in fields(tv)}
                ext[kv[1]] = kv[2]
        if ext:
            refs[name] = (ext["location"], int(ext["offset"]), int(ext["length"]))
    return refs


def rel(a, b):
    return float(np.abs(a - b).max() / np.abs(b).max())



def odd_width_source(src):
    """An HF LLaMA checkpoint in directory src with ffn_dim 101 (odd rows of 4-bit codes, a last
    group of 5 at g32); returns src."""
    import torch
    from llama_ref import Config, HFLlama
    from make_fixtures import init_weights
    m = HFLlama(Config(vocab_size=300, ffn_dim=101))
    init_weights(m, 11)
    os.makedirs(src)
    torch.save(m.state_dict(), os.path.join(src, "pytorch_model.bin"))
    with open(os.path.join(src, "config.json"), "w") as f:
        json.dump(m.hf_config(), f)
    return src

class OnnxWriter(TempDirTest):
    @classmethod
    def setUpClass(cls):
        why = ensure_onnxruntime()
        if why:
            raise unittest.SkipTest(why)

    def convert(self, fixture, fmt, quant, tag="", *extra):
        """fixture: a name under FIXTURES, or a source directory."""
        src = fixture if os.path.isabs(fixture) else os.path.join(FIXTURES, fixture)
        out = self.path(f"{os.path.basename(fixture)}_{fmt}_{quant.replace(':', '_')}{tag}")
        if not os.path.exists(out):  # converted already by this test
            sf("convert", src, "-o", out, "--format", fmt, "--quant", quant, *extra)
        return out

    def ours(self, artifact, steps):
        """Our executor: the prompt's logits rows, the generated ids, each decode step's logits."""
        dump = artifact + ".f32"
        p = sf("run", artifact, "--ids", ",".join(map(str, PROMPT)), "-n", steps, "--logits", dump, "--json")
        vocab = json.loads(read_bytes(os.path.join(artifact, "manifest.json")))["model"]["vocab_size"]
        rows = np.fromfile(dump, dtype="<f4").reshape(-1, vocab).astype(np.float64)
        return rows[: len(PROMPT)], json.loads(p.stdout)["ids"], rows[len(PROMPT):]

    def test_float_logits_and_greedy_decoding_match_the_executor(self):
        for fixture in FAMILIES:
            for quant in ["f32", "f16"] if fixture == "hf_gqa" else ["f32"]:
                with self.subTest(fixture=fixture, quant=quant):
                    onnx_dir = self.convert(fixture, "onnx", quant)
                    logits, gen, steps = onnx_run(os.path.join(onnx_dir, "model.onnx"), PROMPT, STEPS)
                    want, want_gen, want_steps = self.ours(self.convert(fixture, "shards", quant), STEPS)
                    self.assertEqual(logits.shape, want.shape)
                    self.assertLess(rel(logits, want), 1e-4)
                    # Greedy decoding feeds each present.N.* back as past_key_values.N.*.
                    self.assertEqual(gen, want_gen)
                    self.assertEqual(len(gen), STEPS)
                    self.assertEqual(steps.shape, want_steps.shape)
                    self.assertLess(rel(steps, want_steps), 1e-4)

    def quantized_close_to_the_executor(self, source, schemes, *extra):
        # The executor multiplies integer weights by activations rounded to 8-bit blocks; onnxruntime
        # (at "basic") dequantizes the same codes and scales to f32. What remains is that rounding
        # (about 2% of the largest logit here), far less than what int4 weights change.
        f32_onnx, _, _ = onnx_run(os.path.join(self.convert(source, "onnx", "f32"), "model.onnx"), PROMPT)
        for quant in schemes:
            with self.subTest(source=source, quant=quant):
                tag = "_x" if extra else ""
                logits, _, _ = onnx_run(os.path.join(self.convert(source, "onnx", quant, tag, *extra), "model.onnx"), PROMPT)
                want, _, _ = self.ours(self.convert(source, "shards", quant, tag, *extra), 1)
                err = rel(logits, want)
                self.assertLess(err, 0.05)
                if "4" in quant:
                    self.assertGreater(rel(f32_onnx, want), 4 * err)  # onnxruntime ran the 4-bit weights

    def test_quantized_weights_within_the_executors_activation_rounding(self):
        self.quantized_close_to_the_executor("hf_gqa", ["int8", "int4:g32", "int4:g32:asym", "int4:g64", "q8_0", "q4_0"])
        # A quantized embedding that is also the tied head: dequantized once, gathered and multiplied.
        self.quantized_close_to_the_executor("hf_tied", ["int4:g32"], "--tensor-quant", "embed.weight=int4:g32")
        # An 8-bit one: its rows gathered before dequantizing for the lookup, the whole table for the head.
        self.quantized_close_to_the_executor("hf_tied", ["int8"], "--tensor-quant", "embed.weight=int8")

    def test_an_8_bit_embedding_is_dequantized_only_at_the_rows_read(self):
        import onnx

        def consumers(art, name):
            graph = onnx.load(os.path.join(art, "model.onnx"), load_external_data=False).graph
            return sorted(n.op_type for n in graph.node if name in n.input)

        for quant in ("int8", "q8_0"):
            with self.subTest(quant=quant):
                art = self.convert("hf_gqa", "onnx", quant, "_emb8", "--tensor-quant", "embed.weight=" + quant)
                self.assertEqual(consumers(art, "embed.weight.q"), ["Gather"])
                self.assertEqual(consumers(art, "embed.weight.scale"), ["Gather"])
        tied = self.convert("hf_tied", "onnx", "int8", "_emb8", "--tensor-quant", "embed.weight=int8")
        self.assertEqual(consumers(tied, "embed.weight.q"), ["DequantizeLinear", "Gather"])
        # 4-bit codes cannot be gathered (ONNX's Gather takes no int4): the table is dequantized whole.
        art4 = self.convert("hf_gqa", "onnx", "q4_0", "_emb4", "--tensor-quant", "embed.weight=q4_0")
        self.assertEqual(consumers(art4, "embed.weight.q"), ["DequantizeLinear"])

    def test_odd_widths_repack_int4_codes_across_rows(self):
        # ffn_dim 101: the down projection's rows have an odd number of 4-bit codes, which ONNX packs
        # across row boundaries, and a last group of 5.
        src = odd_width_source(self.path("odd_src"))
        self.quantized_close_to_the_executor(src, ["int8", "int4:g32", "int4:g32:asym"])

    def test_stored_codes_decode_to_the_weights_within_a_step(self):
        # Independently of both executors: decode model.onnx_data as ONNX defines the types (int8;
        # int4 two per byte, low nibble first, signed or not; scales per row or per block) and compare
        # with the f32 weights: every element within one quantization step of its group.
        f32 = self.convert("hf_gqa", "onnx", "f32")
        f32_refs = external_refs(read_bytes(os.path.join(f32, "model.onnx")))
        f32_data = read_bytes(os.path.join(f32, "model.onnx_data"))

        def raw(data, ref, dtype):
            _, off, length = ref
            return np.frombuffer(data[off:off + length], dtype=dtype)

        def nibbles(data, ref, n, signed):
            b = raw(data, ref, np.uint8)
            v = np.stack([b & 15, b >> 4], axis=1).reshape(-1)[:n].astype(np.int32)
            return np.where(v > 7, v - 16, v) if signed else v

        name = "blocks.1.ffn.down.weight"  # [64, 100]: a last group of 4 with g32
        w = raw(f32_data, f32_refs[name], "<f4").reshape(64, 100).astype(np.float64)
        # q8_0 / q4_0 (ggml's blocks of 32) are written as int8 / int4 codes with a scale per block.
        for quant, group in [("int8", None), ("int4:g32", 32), ("int4:g32:asym", 32), ("q8_0", 32), ("q4_0", 32)]:
            with self.subTest(quant=quant):
                out = self.convert("hf_gqa", "onnx", quant)
                refs, data = external_refs(read_bytes(os.path.join(out, "model.onnx"))), read_bytes(os.path.join(out, "model.onnx_data"))
                if group is None:
                    q = raw(data, refs[name + ".q"], np.int8).reshape(64, 100)
                    step = raw(data, refs[name + ".scale"], "<f4").astype(np.float64)[:, None]
                    deq = q * step
                else:
                    scale = raw(data, refs[name + ".scale"], "<f2").astype(np.float64).reshape(64, 4)
                    step = np.repeat(scale, group, axis=1)[:, :100]
                    if quant == "q8_0":
                        q = raw(data, refs[name + ".q"], np.int8).reshape(64, 100)
                    else:
                        q = nibbles(data, refs[name + ".q"], 64 * 100, signed="asym" not in quant).reshape(64, 100)
                    deq = q * step
                    if "asym" in quant:
                        deq += np.repeat(raw(data, refs[name + ".min"], "<f2").astype(np.float64).reshape(64, 4), group, axis=1)[:, :100]
                err, step = np.abs(deq - w), np.abs(step)  # a symmetric int4 scale is negative when its extreme is
                self.assertTrue(np.all(err <= 1.001 * step + 1e-6), float((err / step).max()))
                self.assertLess(float((err / step).mean()), 0.5)  # rounding, not an arrangement that is merely bounded

    def test_split_blocks_chained_equal_the_whole_graph(self):
        for fixture, quant in [("hf_gqa", "int4:g32"), ("gpt2_hub", "f32"), ("hf_tied", "f16")]:
            with self.subTest(fixture=fixture, quant=quant):
                whole = self.convert(fixture, "onnx", quant)
                split = self.convert(fixture, "onnx", quant, "_split", "--split", "blocks")
                layers = json.loads(read_bytes(os.path.join(split, "manifest.json")))["model"]["n_layers"]
                graphs = ["embedding.onnx"] + [f"block_{i:03d}.onnx" for i in range(layers)] + ["head.onnx"]
                self.assertEqual(sorted(os.listdir(split)), sorted(graphs + ["manifest.json", "model.onnx_data"]))
                # The same weights at the same offsets; only the graphs differ.
                self.assertEqual(read_bytes(os.path.join(whole, "model.onnx_data")),
                                 read_bytes(os.path.join(split, "model.onnx_data")))
                want, want_gen, want_steps = onnx_run(os.path.join(whole, "model.onnx"), PROMPT, 8)
                logits, gen, steps = onnx_run(split, PROMPT, 8)
                self.assertLess(rel(logits, want), 1e-6)
                self.assertLess(rel(steps, want_steps), 1e-6)
                self.assertEqual(gen, want_gen)
                self.assertIn("OK", sf("verify", split).stdout)
        p = sf("convert", os.path.join(FIXTURES, "hf_gqa"), "-o", self.path("bad"), "--format", "onnx", "--split",
               "layers", check=False)
        error_line(self, p, 2, "--split")
        p = sf("convert", os.path.join(FIXTURES, "hf_gqa"), "-o", self.path("bad"), "--split", "blocks", check=False)
        error_line(self, p, 2, "--split", "onnx")

    def test_round_trip_through_our_onnx_reader(self):
        # The written f32 graph, read back by converters/onnx (structure recovered from the data flow),
        # converts to the same model: same description and logits as converting the fixture directly.
        for fixture, split in [("hf_gqa", ()), ("meta_params", ()), ("hf_tied", ()), ("hf_gqa", ("--split", "blocks")),
                               ("hf_tied", ("--split", "blocks"))]:
            with self.subTest(fixture=fixture, split=split):
                # One graph per unit is read as their join: block i's hidden_states are block i-1's output.
                onnx_dir = self.convert(fixture, "onnx", "f32", "_".join(("",) + split), *split)
                back = self.path(fixture + "_back" + "_".join(("",) + split))
                sf("convert", onnx_dir, "-o", back)
                direct = self.convert(fixture, "shards", "f32")
                want_model = json.loads(read_bytes(os.path.join(direct, "manifest.json")))["model"]
                got_model = json.loads(read_bytes(os.path.join(back, "manifest.json")))["model"]
                # A source that does not state its context gets the RoPE table's rows (docs/onnx.md).
                if want_model["max_seq"] == 0:
                    self.assertEqual(got_model.pop("max_seq"), 4096)
                    want_model.pop("max_seq")
                self.assertEqual(got_model, want_model)
                got, _, _ = self.ours(back, 1)
                want, _, _ = self.ours(direct, 1)
                self.assertLess(rel(got, want), 1e-6)

    def test_unit_graphs_that_do_not_chain_are_refused(self):
        split = self.convert("hf_gqa", "onnx", "f32", "_split", "--split", "blocks")
        os.rename(os.path.join(split, "block_001.onnx"), os.path.join(split, "block_002.onnx"))
        error_line(self, sf("convert", split, "-o", self.path("back"), check=False), 1, "one graph per unit")

    def test_layout_and_determinism(self):
        a = self.convert("hf_gqa", "onnx", "int4:g32", "_t1", "-t", "1")
        b = self.convert("hf_gqa", "onnx", "int4:g32", "_t3", "-t", "3")
        self.assertEqual(sorted(os.listdir(a)), ["manifest.json", "model.onnx", "model.onnx_data"])
        for name in os.listdir(a):
            self.assertEqual(read_bytes(os.path.join(a, name)), read_bytes(os.path.join(b, name)), name)
        m = json.loads(read_bytes(os.path.join(a, "manifest.json")))
        self.assertEqual(m["onnx"]["graphs"], ["model.onnx"])
        self.assertEqual(m["onnx"]["alignment"], 4096)
        # Every weight in model.onnx_data at a 4 KiB-aligned offset, inside the file, none overlapping.
        refs = external_refs(read_bytes(os.path.join(a, "model.onnx")))
        self.assertIn("blocks.0.attn.q.weight.q", refs)
        self.assertIn("blocks.0.attn.q.weight.scale", refs)
        size = os.path.getsize(os.path.join(a, "model.onnx_data"))
        end = 0
        for name, (loc, off, length) in sorted(refs.items(), key=lambda kv: kv[1][1]):
            self.assertEqual(loc, "model.onnx_data", name)
            self.assertEqual(off % 4096, 0, name)
            self.assertGreaterEqual(off, end, name)
            end = off + length
        self.assertLessEqual(end, size)
        self.assertEqual({f["path"] for f in m["files"]}, {"model.onnx", "model.onnx_data"})
        # The graph carries the model description (ModelProto.metadata_props = 14).
        props = {}
        for n, _, v in fields(read_bytes(os.path.join(a, "model.onnx"))):
            if n == 14:
                kv = {k: x.decode() for k, _, x in fields(v)}
                props[kv[1]] = kv[2]
        self.assertEqual(json.loads(props["shardforge.model"]), m["model"])
        self.assertEqual(props["shardforge.graph"], "model.onnx")
        # verify checks the files' sha256 and the graph's references; run says what the output is.
        self.assertIn("OK", sf("verify", a).stdout)
        error_line(self, sf("run", a, "--ids", "1,2", check=False), 1, "ONNX export")

    def test_refusals_are_one_line(self):
        p = sf("convert", os.path.join(FIXTURES, "chatglm_6b"), "-o", self.path("glm"), "--format", "onnx",
               check=False)
        error_line(self, p, 1, "2-D RoPE", "onnx")
        p = sf("convert", os.path.join(FIXTURES, "hf_gqa"), "-o", self.path("vec"), "--format", "onnx",
               "--tensor-quant", "blocks.0.attn_norm.weight=int8", check=False)
        error_line(self, p, 2, "blocks.0.attn_norm.weight", "vector")
        self.assertFalse(os.path.exists(self.path("vec")))


if __name__ == "__main__":
    unittest.main()
