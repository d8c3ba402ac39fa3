"""convert --format gguf: the file's layout parsed by an independent reader written here from the
GGUF v3 specification, q8_0 / q4_0 tensor bytes against numpy implementations of ggml's reference
quantizers (quantize_row_q8_0_ref / quantize_row_q4_0_ref), the executor on a GGUF against the shard
artifact of the same scheme (bit-identical logits), refusals, output safety and hostile files."""
import glob
import json
import os
import shutil
import struct

import numpy as np

from sftest import HELDOUT, STORIES, TempDirTest, fixture, read_bytes, read_json, sf, sf_json, write_bytes

# ---- an independent GGUF reader (GGUF v3: little-endian; strings are u64 length + bytes) ----
SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
GGML = {0: ("f32", 1, 4), 1: ("f16", 1, 2), 2: ("q4_0", 32, 18), 8: ("q8_0", 32, 34), 30: ("bf16", 1, 2)}


class Gguf:
    def __init__(self, path):
        self.buf = read_bytes(path)
        self.pos = 0
        assert self.buf[:4] == b"GGUF", "magic"
        self.pos = 4
        self.version = self.u("<I")
        n_tensors, n_kv = self.u("<Q"), self.u("<Q")
        self.kv = {}
        for _ in range(n_kv):
            key = self.string()
            self.kv[key] = self.value(self.u("<I"))
        self.alignment = self.kv.get("general.alignment", 32)
        self.tensors = {}
        for _ in range(n_tensors):
            name = self.string()
            ne = [self.u("<Q") for _ in range(self.u("<I"))]
            ggml_type, offset = self.u("<I"), self.u("<Q")
            self.tensors[name] = (ne, ggml_type, offset)
        self.data_start = (self.pos + self.alignment - 1) // self.alignment * self.alignment

    def u(self, fmt):
        (v,) = struct.unpack_from(fmt, self.buf, self.pos)
        self.pos += struct.calcsize(fmt)
        return v

    def string(self):
        n = self.u("<Q")
        s = self.buf[self.pos:self.pos + n].decode("utf-8", "replace")
        self.pos += n
        return s

    def value(self, t):
        if t == 8:
            return self.string()
        if t == 9:
            elem, count = self.u("<I"), self.u("<Q")
            return [self.value(elem) for _ in range(count)]
        return self.u(SCALARS[t])

    def tensor_bytes(self, name):
        ne, t, offset = self.tensors[name]
        _, block, size = GGML[t]
        rows = int(np.prod(ne[1:])) if len(ne) > 1 else 1
        n = ne[0] // block * size * rows
        start = self.data_start + offset
        return self.buf[start:start + n]

    def type_name(self, name):
        return GGML[self.tensors[name][1]][0]


# ---- rewriting a GGUF's metadata: raw entries kept, tensor infos and data carried over as they are ----
def _value_end(buf, pos, t):
    if t == 8:
        (n,) = struct.unpack_from("<Q", buf, pos)
        return pos + 8 + n
    if t == 9:
        elem, count = struct.unpack_from("<IQ", buf, pos)
        pos += 12
        for _ in range(count):
            pos = _value_end(buf, pos, elem)
        return pos
    return pos + struct.calcsize(SCALARS[t])


def edit_gguf(buf, changes, alignment=32):
    """The GGUF with metadata entries replaced, added or (value None) removed: changes maps a key to
    (value type, value bytes). The data section is re-padded to `alignment` after the header."""
    n_tensors, n_kv = struct.unpack_from("<QQ", buf, 8)
    pos, kv = 24, []
    for _ in range(n_kv):
        (n,) = struct.unpack_from("<Q", buf, pos)
        key = buf[pos + 8:pos + 8 + n].decode()
        pos += 8 + n
        (t,) = struct.unpack_from("<I", buf, pos)
        end = _value_end(buf, pos + 4, t)
        kv.append((key, t, buf[pos + 4:end]))
        pos = end
    infos = pos
    for _ in range(n_tensors):
        (n,) = struct.unpack_from("<Q", buf, pos)
        (nd,) = struct.unpack_from("<I", buf, pos + 8 + n)
        pos += 8 + n + 4 + 8 * nd + 12
    old_align = dict((k, v) for k, _, v in kv).get("general.alignment")
    old_align = struct.unpack("<I", old_align)[0] if old_align else 32
    data = buf[(pos + old_align - 1) // old_align * old_align:]
    out = dict((k, (t, v)) for k, t, v in kv)
    order = [k for k, _, _ in kv] + [k for k in changes if k not in out]
    out.update(changes)
    h = b"GGUF" + struct.pack("<IQQ", 3, n_tensors, sum(1 for k in order if out[k] is not None))
    for k in order:
        if out[k] is not None:
            h += struct.pack("<Q", len(k.encode())) + k.encode() + struct.pack("<I", out[k][0]) + out[k][1]
    h += buf[infos:pos]
    return h + b"\0" * (-len(h) % alignment) + data


def gguf_str(s):
    b = s.encode()
    return (8, struct.pack("<Q", len(b)) + b)


def gguf_u8s(b):
    return (9, struct.pack("<IQ", 0, len(b)) + b)


# ---- ggml's reference quantizers, from their published definition (ggml-quants.c) ----
def fp16_bytes(x):
    return np.asarray(x, dtype=np.float32).astype(np.float16).tobytes()


def round_half_away(v):
    """C's roundf on float32 values, computed exactly in float64."""
    a = np.abs(v.astype(np.float64))
    return (np.sign(v) * np.floor(a + 0.5)).astype(np.int64)


def q8_0_ref(row):
    """Per block of 32: d = amax / 127 (f32), codes roundf(x * (1/d)), d stored as f16."""
    out = b""
    for b in np.asarray(row, dtype=np.float32).reshape(-1, 32):
        amax = np.float32(np.max(np.abs(b)))
        d = np.float32(amax / np.float32(127))
        idv = np.float32(1) / d if d != 0 else np.float32(0)
        q = round_half_away((b * idv).astype(np.float32))
        out += fp16_bytes(d) + q.astype(np.int8).tobytes()
    return out


def q4_0_ref(row):
    """Per block of 32: max = the first value of largest magnitude, d = max / -8 (f32), codes
    min(15, (int8)(x * (1/d) + 8.5f)); byte j holds element j (low nibble) and j + 16 (high)."""
    out = b""
    for b in np.asarray(row, dtype=np.float32).reshape(-1, 32):
        amax, mx = np.float32(0), np.float32(0)
        for v in b:
            if amax < abs(v):
                amax, mx = np.float32(abs(v)), v
        d = np.float32(mx / np.float32(-8))
        idv = np.float32(1) / d if d != 0 else np.float32(0)
        q = np.minimum(15, np.trunc((b * idv).astype(np.float32) + np.float32(8.5)).astype(np.int64))
        out += fp16_bytes(d) + bytes(int(q[j]) | (int(q[16 + j]) << 4) for j in range(16))
    return out


def edge_rows(rows, cols, seed):
    """Rows holding the cases a quantizer gets wrong first, then random rows."""
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((rows, cols)).astype(np.float32) * 0.05
    k = np.arange(32, dtype=np.float32)
    w[0, :32] = np.where(k % 2 == 0, 1, -1) * (k + 0.5)   # ties at .5 steps, amax 31.5
    w[0, 31] = -127.0                                      # d = 1 for q8_0: .5 steps are exact ties
    w[1, :32] = 0.0                                        # an all-zero block
    w[1, 32:64] = np.linspace(-1, 1, 32)
    w[2, :32] = rng.standard_normal(32) * 0.1
    w[2, 7] = -3.0                                         # the largest magnitude is negative
    w[3, :32] = rng.standard_normal(32) * 0.1
    w[3, 4], w[3, 9] = 2.0, -2.0                           # equal magnitudes, opposite signs (first wins)
    w[4, :32] = rng.standard_normal(32) * 0.1
    w[4, 4], w[4, 9] = -2.0, 2.0
    w[5, :32] = (np.arange(32) - 16).astype(np.float32) * 0.5  # d = 1 for q4_0: x + 8.5 lands on .5 and integers
    w[5, 0] = -8.0
    w[6, :32] = -8.0 * np.ones(32, dtype=np.float32)       # every value the extreme
    return w


class GgufLayoutAndQuantizers(TempDirTest):
    @classmethod
    def setUpClass(cls):
        import torch
        cls.torch = torch

    def source(self):
        """hf_gqa with edge-case rows in tensors the LLaMA map does not reorder (v, up, embedding)."""
        src = self.path("src")
        shutil.copytree(fixture("hf_gqa"), src)
        sd = self.torch.load(os.path.join(src, "pytorch_model.bin"))
        self.v = edge_rows(32, 64, 1)
        self.up = edge_rows(100, 64, 2)
        self.embed = edge_rows(300, 64, 3)
        sd["model.layers.0.self_attn.v_proj.weight"] = self.torch.from_numpy(self.v.copy())
        sd["model.layers.1.mlp.up_proj.weight"] = self.torch.from_numpy(self.up.copy())
        sd["model.embed_tokens.weight"] = self.torch.from_numpy(self.embed.copy())
        self.down = sd["model.layers.0.mlp.down_proj.weight"].numpy().copy()
        self.torch.save(sd, os.path.join(src, "pytorch_model.bin"))
        return src

    def convert(self, src, quant):
        out = self.path(f"m-{quant}.gguf")
        sf("convert", src, "--quant", quant, "--format", "gguf", "-o", out)
        return Gguf(out)

    def test_header_metadata_and_shapes(self):
        g = self.convert(fixture("hf_gqa"), "q4_0")
        self.assertEqual(g.version, 3)
        self.assertEqual(g.kv["general.architecture"], "llama")
        self.assertEqual(g.kv["general.alignment"], 32)
        self.assertEqual(g.kv["general.file_type"], 2)  # LLAMA_FTYPE_MOSTLY_Q4_0
        cfg = read_json(os.path.join(fixture("hf_gqa"), "config.json"))
        self.assertEqual(g.kv["llama.embedding_length"], cfg["hidden_size"])
        self.assertEqual(g.kv["llama.block_count"], cfg["num_hidden_layers"])
        self.assertEqual(g.kv["llama.feed_forward_length"], cfg["intermediate_size"])
        self.assertEqual(g.kv["llama.attention.head_count"], cfg["num_attention_heads"])
        self.assertEqual(g.kv["llama.attention.head_count_kv"], cfg["num_key_value_heads"])
        self.assertEqual(g.kv["llama.rope.dimension_count"], cfg["hidden_size"] // cfg["num_attention_heads"])
        self.assertAlmostEqual(g.kv["llama.attention.layer_norm_rms_epsilon"], cfg["rms_norm_eps"], places=9)
        # ggml order: ne[0] is the row length.
        self.assertEqual(g.tensors["token_embd.weight"][0], [cfg["hidden_size"], cfg["vocab_size"]])
        self.assertEqual(g.tensors["blk.0.attn_k.weight"][0], [64, 32])
        self.assertEqual(g.tensors["blk.1.ffn_down.weight"][0], [100, 64])
        for name, (_, _, offset) in g.tensors.items():
            self.assertEqual(offset % 32, 0, name)
        self.assertEqual(g.data_start % 32, 0)

    def test_q8_0_bytes_match_ggml_reference(self):
        g = self.convert(self.source(), "q8_0")
        self.assertEqual(g.type_name("blk.0.attn_v.weight"), "q8_0")
        self.assertEqual(g.tensor_bytes("blk.0.attn_v.weight"), b"".join(q8_0_ref(r) for r in self.v))
        self.assertEqual(g.tensor_bytes("blk.1.ffn_up.weight"), b"".join(q8_0_ref(r) for r in self.up))
        self.assertEqual(g.tensor_bytes("token_embd.weight"), b"".join(q8_0_ref(r) for r in self.embed))

    def test_q4_0_bytes_match_ggml_reference_and_the_embedding_is_q8_0(self):
        g = self.convert(self.source(), "q4_0")
        self.assertEqual(g.type_name("blk.0.attn_v.weight"), "q4_0")
        self.assertEqual(g.tensor_bytes("blk.0.attn_v.weight"), b"".join(q4_0_ref(r) for r in self.v))
        self.assertEqual(g.tensor_bytes("blk.1.ffn_up.weight"), b"".join(q4_0_ref(r) for r in self.up))
        self.assertEqual(g.type_name("token_embd.weight"), "q8_0")
        self.assertEqual(g.tensor_bytes("token_embd.weight"), b"".join(q8_0_ref(r) for r in self.embed))
        self.assertEqual(g.type_name("output.weight"), "q8_0")

    def test_rows_that_are_not_whole_blocks_are_f16(self):
        g = self.convert(self.source(), "q4_0")  # ffn_down rows have 100 elements
        self.assertEqual(g.type_name("blk.0.ffn_down.weight"), "f16")
        self.assertEqual(g.tensor_bytes("blk.0.ffn_down.weight"), self.down.astype(np.float16).tobytes())
        self.assertEqual(g.type_name("blk.0.attn_norm.weight"), "f32")

    def test_sentencepiece_tokenizer_metadata(self):
        if not os.path.exists(os.path.join(STORIES, "tok512.model")):
            self.skipTest("shared stories260K missing")
        out = self.path("st.gguf")
        sf("convert", os.path.join(STORIES, "stories260K.pt"), "--tokenizer", os.path.join(STORIES, "tok512.model"),
           "--quant", "q8_0", "--format", "gguf", "-o", out)
        g = Gguf(out)
        import sentencepiece as spm
        sp = spm.SentencePieceProcessor(model_file=os.path.join(STORIES, "tok512.model"))
        self.assertEqual(g.kv["tokenizer.ggml.model"], "llama")
        self.assertEqual(g.kv["tokenizer.ggml.tokens"], [sp.id_to_piece(i) for i in range(sp.get_piece_size())])
        np.testing.assert_array_equal(np.float32(g.kv["tokenizer.ggml.scores"]),
                                      np.float32([sp.get_score(i) for i in range(sp.get_piece_size())]))
        types = [2 if sp.is_unknown(i) else 3 if sp.is_control(i) else 6 if sp.is_byte(i) else 5 if sp.is_unused(i) else 1
                 for i in range(sp.get_piece_size())]
        self.assertEqual(g.kv["tokenizer.ggml.token_type"], types)
        self.assertEqual(g.kv["tokenizer.ggml.bos_token_id"], sp.bos_id())
        self.assertEqual(g.kv["tokenizer.ggml.eos_token_id"], sp.eos_id())
        self.assertTrue(g.kv["tokenizer.ggml.add_bos_token"])
        # The .model file rides along byte for byte, so shardforge reads text through the GGUF alone:
        # run -p and eval give what they give on the artifact of the same scheme.
        self.assertEqual(bytes(g.kv["shardforge.tokenizer.file.tokenizer.model"]),
                         read_bytes(os.path.join(STORIES, "tok512.model")))
        art = self.path("st-art")
        sf("convert", os.path.join(STORIES, "stories260K.pt"), "--tokenizer", os.path.join(STORIES, "tok512.model"),
           "--quant", "q8_0", "--tensor-quant", "blocks.*.ffn.down.weight=f16", "-o", art)
        for cmd in (["run", "{}", "-p", "Once upon a time", "-n", "12", "--json"],
                    ["eval", "ppl", "{}", "--text", HELDOUT, "--ctx", "64", "--chunks", "2", "--json"]):
            a = sf(*[art if c == "{}" else c for c in cmd]).stdout
            b = sf(*[out if c == "{}" else c for c in cmd]).stdout
            self.assertEqual(a.replace(art, "X"), b.replace(out, "X"), cmd)

    def test_gpt2_fuses_qkv_by_rows_and_writes_the_tied_output(self):
        out = self.path("g.gguf")
        sf("convert", fixture("gpt2_hub"), "--quant", "f32", "--format", "gguf", "-o", out)
        g = Gguf(out)
        import torch
        sd = torch.load(os.path.join(fixture("gpt2_hub"), "pytorch_model.bin"))
        c_attn = sd["h.0.attn.c_attn.weight"].numpy()  # Conv1D: [d, 3d]; rows of q, k, v are its columns
        self.assertEqual(g.kv["general.architecture"], "gpt2")
        self.assertEqual(g.tensor_bytes("blk.0.attn_qkv.weight"), np.ascontiguousarray(c_attn.T).astype(np.float32).tobytes())
        self.assertEqual(g.tensor_bytes("blk.0.attn_qkv.bias"), sd["h.0.attn.c_attn.bias"].numpy().tobytes())
        self.assertEqual(g.tensor_bytes("output.weight"), g.tensor_bytes("token_embd.weight"))
        self.assertEqual(g.tensor_bytes("position_embd.weight"), sd["wpe.weight"].numpy().tobytes())


def logits(model, ids, path):
    sf("run", model, "--ids", ",".join(map(str, ids)), "-n", "4", "--logits", path)
    return read_bytes(path)


class GgufRunsLikeTheArtifact(TempDirTest):
    """run on the GGUF gives the logits of run on the shard artifact of the same scheme, bit for bit.
    Tensors GGUF keeps in f16 (rows that are not whole blocks) are given f16 in the artifact too."""

    def check(self, name, quant):
        src = fixture(name)
        gg = self.path(f"{name}-{quant}.gguf")
        sf("convert", src, "--quant", quant, "--format", "gguf", "-o", gg)
        info = sf_json("inspect", gg)
        overrides = []
        for t in sf_json("inspect", src)["tensors"]:
            if len(t["shape"]) == 2 and t["shape"][1] % 32 != 0:
                overrides += ["--tensor-quant", f"{t['name']}=f16"]
        art = self.path(f"{name}-{quant}-art")
        # A name that matches no tensor would be refused: only those that exist are listed above.
        sf("convert", src, "--quant", quant, "-o", art, *overrides)
        ids = read_json(os.path.join(src, "ref.json"))["prompt_ids"]
        a = logits(art, ids, self.path("a.f32"))
        b = logits(gg, ids, self.path("b.f32"))
        self.assertGreater(len(a), 0)
        self.assertEqual(a, b, f"{name} {quant}: logits differ")
        self.assertEqual(info["model"]["family"], sf_json("inspect", art)["model"]["family"])

    def test_llama(self):
        for q in ["f16", "q8_0", "q4_0"]:
            self.check("hf_gqa", q)
        self.check("meta_args_tied", "q4_0")

    def test_gpt2(self):
        self.check("gpt2_hub", "q4_0")

    def test_internlm2(self):
        self.check("internlm2_gqa", "q4_0")

    def test_chatglm2(self):
        self.check("chatglm2_6b", "q8_0")


class GgufRefusals(TempDirTest):
    def refused(self, args, code, *needles):
        p = sf("convert", *args, check=False)
        self.assertEqual(p.returncode, code, p.stderr)
        self.assertTrue(p.stderr.startswith("shardforge: error: "), p.stderr)
        self.assertEqual(p.stderr.count("\n"), 1, p.stderr)
        for n in needles:
            self.assertIn(n, p.stderr)
        self.assertEqual(glob.glob(self.path("*partial*")), [])
        return p

    def test_int_schemes_are_refused_naming_what_gguf_takes(self):
        for q in ["int8", "int4"]:
            self.refused([fixture("hf_gqa"), "--quant", q, "--format", "gguf", "-o", self.path("x.gguf")], 2,
                         q, "f32, f16, bf16, q8_0, q4_0")
        self.assertFalse(os.path.exists(self.path("x.gguf")))

    def test_families_llama_cpp_cannot_run(self):
        self.refused([fixture("chatglm_6b"), "--format", "gguf", "-o", self.path("x.gguf")], 1, "ChatGLM-6B")
        self.refused([fixture("internlm2_bias"), "--format", "gguf", "-o", self.path("x.gguf")], 1, "biases")
        self.refused([fixture("chatglm3_6b"), "--format", "gguf", "-o", self.path("x.gguf")], 1, "head_dim")

    def test_a_fused_group_of_mixed_types_is_refused_before_any_unit_is_converted(self):
        # A copy of the ChatGLM2 fixture with a NaN in the embedding, the first unit converted: an
        # override splitting the LAST block's q/k/v (one GGUF attn_qkv) must be refused before the
        # NaN is reached, so the plan is checked up front and not when that block comes.
        import torch
        src = self.path("glm2")
        shutil.copytree(fixture("chatglm2_6b"), src)
        sd = torch.load(os.path.join(src, "pytorch_model.bin"), map_location="cpu")
        (embed,) = [k for k in sd if k.endswith("word_embeddings.weight")]
        sd[embed][0, 0] = float("nan")
        torch.save(sd, os.path.join(src, "pytorch_model.bin"))
        last = read_json(os.path.join(src, "config.json"))["num_layers"] - 1
        out = self.path("c2.gguf")
        self.refused([src, "--format", "gguf", "--quant", "q8_0", "-o", out], 1, "nan")  # the NaN is hit without it
        q, k, v = (f"blocks.{last}.attn.{x}.weight" for x in "qkv")
        p = self.refused([src, "--format", "gguf", "--quant", "q8_0", "--tensor-quant", f"{q}=q4_0", "-o", out], 2,
                         f"blk.{last}.attn_qkv.weight", f"{q} (q4_0)", f"{k} (q8_0)", f"{v} (q8_0)", "--tensor-quant")
        self.assertNotIn("nan", p.stderr)
        # ChatGLM's gate and up are one ffn_up: the same for them.
        self.refused([src, "--format", "gguf", "--quant", "f16", "--tensor-quant", f"blocks.{last}.ffn.up.weight=bf16",
                      "-o", out], 2, f"blk.{last}.ffn_up.weight", f"blocks.{last}.ffn.gate.weight (f16)",
                     f"blocks.{last}.ffn.up.weight (bf16)")
        self.assertFalse(os.path.exists(out))
        # The same override on all of q, k and v is one type: converted.
        sf("convert", fixture("chatglm2_6b"), "--format", "gguf", "--quant", "q8_0", "--tensor-quant",
           f"blocks.{last}.attn.[qkv].weight=q4_0", "-o", out)
        self.assertTrue(os.path.exists(out))

    def test_trim_vocab_is_refused(self):
        self.refused([fixture("hf_gqa"), "--trim-vocab", "range:0-99", "--format", "gguf", "-o", self.path("x.gguf")],
                     2, "--trim-vocab")

    def test_existing_output_needs_force_and_force_replaces_only_a_gguf(self):
        out = self.path("x.gguf")
        write_bytes(out, b"not a model")
        self.refused([fixture("hf_gqa"), "--format", "gguf", "-o", out], 1, "already exists")
        self.refused([fixture("hf_gqa"), "--format", "gguf", "-o", out, "--force"], 1, "not a GGUF file")
        self.assertEqual(read_bytes(out), b"not a model")
        os.unlink(out)
        sf("convert", fixture("hf_gqa"), "--format", "gguf", "-o", out)
        first = read_bytes(out)
        sf("convert", fixture("hf_gqa"), "--quant", "q8_0", "--format", "gguf", "-o", out, "--force")
        self.assertNotEqual(read_bytes(out), first)
        self.assertEqual(Gguf(out).kv["general.file_type"], 7)
        self.assertEqual(sorted(os.listdir(self.tmp)), ["x.gguf"])


    def test_a_live_conversion_s_partial_file_is_respected(self):
        import subprocess
        out = self.path("x.gguf")
        # A live process whose command name is shardforge (Linux names it after the file executed).
        bindir = self.path("bin")
        os.mkdir(bindir)
        os.symlink(shutil.which("sleep"), os.path.join(bindir, "shardforge"))
        proc = subprocess.Popen([os.path.join(bindir, "shardforge"), "60"])
        try:
            live = f"{out}.partial-{proc.pid}"
            write_bytes(live, b"")
            p = sf("convert", fixture("hf_gqa"), "--format", "gguf", "-o", out, check=False)
            self.assertEqual(p.returncode, 1, p.stderr)
            self.assertIn(f"process {proc.pid} is writing", p.stderr)
            self.assertEqual(sorted(os.listdir(self.tmp)), sorted(["bin", os.path.basename(live)]))
        finally:
            proc.kill()
            proc.wait()

    def test_a_live_pid_that_is_not_shardforge_does_not_block(self):
        out = self.path("x.gguf")
        stale = f"{out}.partial-{os.getpid()}"  # this test's process: alive, but python, not shardforge
        write_bytes(stale, b"")
        p = sf("convert", fixture("hf_gqa"), "--format", "gguf", "-o", out)
        self.assertIn("not shardforge", p.stderr)
        self.assertEqual(Gguf(out).kv["general.architecture"], "llama")
        self.assertEqual(read_bytes(stale), b"")  # left in place: it could be anyone's

    def test_o_naming_a_directory_is_refused_before_anything_is_created(self):
        newdir = self.path("newdir")
        self.refused([fixture("hf_gqa"), "--format", "gguf", "-o", newdir + "/"], 2, "names a directory", "give the file's name")
        self.assertFalse(os.path.exists(newdir))
        os.mkdir(newdir)
        self.refused([fixture("hf_gqa"), "--format", "gguf", "-o", newdir, "--force"], 2, "names a directory")
        self.assertEqual(os.listdir(newdir), [])

    def test_a_gguf_is_not_a_convert_source(self):
        g = self.path("m.gguf")
        sf("convert", fixture("hf_gqa"), "--format", "gguf", "-o", g)
        p = self.refused([g, "-o", self.path("art")], 1, g, "GGUF", "convert reads checkpoints")
        self.assertNotIn("not a recognised", p.stderr)
        self.assertFalse(os.path.exists(self.path("art")))


class HostileGguf(TempDirTest):
    """A damaged or lying GGUF is one error line naming the file, exit 1, for inspect and run."""

    @classmethod
    def setUpClass(cls):
        import tempfile
        cls.dir = tempfile.mkdtemp(prefix="sf-gguf-")
        cls.good = os.path.join(cls.dir, "good.gguf")
        sf("convert", fixture("hf_gqa"), "--quant", "q4_0", "--format", "gguf", "-o", cls.good)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.dir, ignore_errors=True)

    def bad(self, data, *needles, commands=("inspect", "run")):
        path = self.path("bad.gguf")
        write_bytes(path, data)
        for cmd in ([c, path] + (["--ids", "1,2", "-n", "1"] if c == "run" else []) for c in commands):
            p = sf(*cmd, check=False)
            self.assertEqual(p.returncode, 1, (cmd, p.stderr))
            self.assertTrue(p.stderr.startswith("shardforge: error: "), p.stderr)
            self.assertEqual(p.stderr.count("\n"), 1, p.stderr)
            self.assertIn(path, p.stderr)
            for n in needles:
                self.assertIn(n, p.stderr)

    def test_verify_accepts_the_good_file_and_names_what_is_wrong_with_a_damaged_one(self):
        p = sf("verify", self.good, "--json")
        self.assertTrue(json.loads(p.stdout)["ok"], p.stdout)
        path = self.path("cut.gguf")
        write_bytes(path, read_bytes(self.good)[:-1])
        p = sf("verify", path, check=False)
        self.assertEqual(p.returncode, 1, p.stderr)
        self.assertEqual(p.stderr.count("\n"), 1, p.stderr)
        self.assertIn(path, p.stderr)
        self.assertIn("truncated", p.stderr)

    def test_truncations(self):
        data = read_bytes(self.good)
        g = Gguf(self.good)
        for cut in [5, 12, 30, 200, g.data_start - 1, g.data_start + 100, len(data) - 1]:
            self.bad(data[:cut], "truncated")

    def test_lying_counts_and_lengths(self):
        data = bytearray(read_bytes(self.good))
        self.bad(bytes(data[:16]) + struct.pack("<Q", 2**62) + bytes(data[24:]), "metadata entries")
        self.bad(bytes(data[:8]) + struct.pack("<Q", 2**62) + bytes(data[16:]), "tensors")
        # The first key's length.
        self.bad(bytes(data[:24]) + struct.pack("<Q", 2**63) + bytes(data[32:]), "bytes long")
        self.bad(b"GGUF" + struct.pack("<I", 1) + bytes(data[8:]), "version 1")

    def test_tensor_infos(self):
        g = Gguf(self.good)
        data = bytearray(read_bytes(self.good))
        # Locate the first tensor info: its name, then n_dims, dims, type and offset.
        name = b"token_embd.weight"
        at = data.index(struct.pack("<Q", len(name)) + name) + 8 + len(name)
        ndims = at

        def patched(off, fmt, value):
            d = bytearray(data)
            struct.pack_into(fmt, d, off, value)
            return bytes(d)

        self.bad(patched(ndims, "<I", 5), "dimensions")
        self.bad(patched(ndims + 4, "<Q", 2**40), "truncated")                 # ne0: far past the file
        self.bad(patched(ndims + 4, "<Q", 2**63 + 1), "dimension")
        self.bad(patched(ndims + 4, "<Q", 33), "blocks")                       # q8_0 rows of 33
        self.bad(patched(ndims + 20, "<I", 12), "blocks of 256")               # q4_K: rows of 64 are no whole block
        # i8 (ggml type 24) with rows of 64 is a valid GGUF inspect shows, but not one the executor runs.
        self.bad(patched(ndims + 20, "<I", 24), "does not run", commands=("run",))
        self.bad(patched(ndims + 24, "<Q", 2**64 - 32), "")                    # offset overflow
        self.bad(patched(ndims + 24, "<Q", 7), "aligned")
        self.bad(patched(ndims + 24, "<Q", g.tensors["blk.0.attn_norm.weight"][2]), "overlap")

    def test_not_gguf(self):
        self.bad(b"GGUF", "truncated")

    def test_alignment_below_32_is_refused(self):
        data = read_bytes(self.good)
        for a in (1, 8, 16):
            self.bad(edit_gguf(data, {"general.alignment": (4, struct.pack("<I", a))}, alignment=a),
                     f"general.alignment {a} ", "at least 32")
        # The same rewrite with 32 kept reads and runs: the refusal is the alignment's.
        path = self.path("a32.gguf")
        write_bytes(path, edit_gguf(data, {"general.alignment": (4, struct.pack("<I", 32))}))
        sf("run", path, "--ids", "1,2", "-n", "1")

    def test_too_many_tensors_is_refused_at_once(self):
        # A header claiming one tensor more than the cap: refused before any tensor is read.
        self.bad(b"GGUF" + struct.pack("<IQQ", 3, 65537, 0) + bytes(4096), "65537 tensors", "65536")

    def test_65536_tiny_tensors_are_read_in_bounded_time_and_memory(self):
        import resource
        n = 65536
        h = b"GGUF" + struct.pack("<IQQ", 3, n, 1) + struct.pack("<Q", 20) + b"general.architecture" + \
            struct.pack("<I", 8) + struct.pack("<Q", 5) + b"llama"
        for i in range(n):
            name = f"t{i}".encode()
            h += struct.pack("<Q", len(name)) + name + struct.pack("<IQIQ", 1, 1, 0, 32 * i)
        path = self.path("many.gguf")
        write_bytes(path, h + bytes(-len(h) % 32) + bytes(32 * n))
        # Bounded time as CPU seconds of the child (a quadratic lookup would take minutes), not wall
        # time, which other work on the machine stretches.
        def cpu():
            r = resource.getrusage(resource.RUSAGE_CHILDREN)
            return r.ru_utime + r.ru_stime
        start = cpu()
        info = sf_json("inspect", path)
        seconds = cpu() - start
        self.assertEqual(len(info["tensors"]), n)
        self.assertIn("token_embd.weight", info["model_problem"])  # every tensor looked up: none is a model's
        self.assertLess(seconds, 10)
        self.assertLess(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, 512 * 1024)  # KiB

    def test_max_seq_must_agree_with_context_length(self):
        g = Gguf(self.good)
        model = __import__("json").loads(g.kv["shardforge.model"])
        ctx = g.kv["llama.context_length"]
        model["max_seq"] = ctx * 1024
        data = edit_gguf(read_bytes(self.good), {"shardforge.model": gguf_str(__import__("json").dumps(model))})
        self.bad(data, "max_seq", str(ctx * 1024), f"llama.context_length {ctx}", commands=("run",))
        self.assertIn("contradicts", sf_json("inspect", self.path("bad.gguf"))["model_problem"])

    def test_a_bad_shardforge_model_is_named_once(self):
        data = edit_gguf(read_bytes(self.good), {"shardforge.model": gguf_str("[" * 100 + "]" * 100)})
        self.bad(data, "nested", commands=("run",))
        p = sf("run", self.path("bad.gguf"), "--ids", "1", check=False)
        self.assertEqual(p.stderr.count("shardforge.model"), 1, p.stderr)
        self.assertEqual(p.stderr.count(self.path("bad.gguf")), 1, p.stderr)


class GgufEmbeddedTokenizerErrors(TempDirTest):
    """A damaged tokenizer inside a GGUF is reported against the GGUF and its key, not the temporary
    file it was extracted to. run --ids fails too (it prints the text of what it generates): the
    tokenizer is part of the model file, and a damaged one is damage, not an absent one."""

    def setUp(self):
        super().setUp()
        if not os.path.exists(os.path.join(STORIES, "tok512.model")):
            self.skipTest("shared stories260K missing")
        self.good = self.path("st.gguf")
        sf("convert", os.path.join(STORIES, "stories260K.pt"), "--tokenizer", os.path.join(STORIES, "tok512.model"),
           "--format", "gguf", "-o", self.good)

    def refused(self, changes, *needles):
        path = self.path("bad.gguf")
        write_bytes(path, edit_gguf(read_bytes(self.good), changes))
        for args in (["-p", "Once"], ["--ids", "1,2"]):
            p = sf("run", path, *args, "-n", "2", check=False)
            self.assertEqual(p.returncode, 1, p.stderr)
            self.assertEqual(p.stderr.count("\n"), 1, p.stderr)
            for n in needles:
                self.assertIn(n, p.stderr)
            self.assertNotIn("shardforge-gguf-", p.stderr)  # the temporary directory
            self.assertNotIn("manifest.json", p.stderr)

    def test_a_file_that_is_not_a_sentencepiece_model(self):
        self.refused({"shardforge.tokenizer.file.tokenizer.model": gguf_u8s(b"\xff" * 64)},
                     self.path("bad.gguf") + ": shardforge.tokenizer.file.tokenizer.model: not a SentencePiece model")

    def test_an_unknown_kind(self):
        self.refused({"shardforge.tokenizer.kind": gguf_str("evil")},
                     self.path("bad.gguf") + ": shardforge.tokenizer.kind: ", '"evil" is unknown')

    def test_the_good_file_reads_text(self):
        p = sf("run", self.good, "-p", "Once", "-n", "2")
        self.assertTrue(p.stdout.startswith("Once"), p.stdout)
