#!/usr/bin/python3
"""Writes the seed corpus of every libFuzzer target in tests/fuzz: small real inputs (torch.save
checkpoints, shards and artifacts converted by shardforge itself, real configuration files) and
hand-made inputs with the shapes that broke readers before (deep nesting, self-referential
containers, zip64 records, storages and lengths that lie).

Usage: make_seeds.py OUT --fixtures DIR --shardforge BIN [--findings DIR]

OUT/<target>/       the seeds of each target (rewritten on every run, so a run is repeatable)
OUT/work/<target>/  empty: libFuzzer adds the inputs it finds there, never to the seeds
OUT/pending/<target>/  seeds that reproduce a reported, not yet fixed finding (PENDING below); run
                    them with `build-san/tests/fuzz/TARGET OUT/pending/TARGET/*`
--findings DIR      created if missing: where the CTest runs leave crashing inputs
"""
import argparse
import io
import hashlib
import json
import os
import pickle
import re
import shutil
import struct
import subprocess
import sys
import warnings
import zipfile
from collections import OrderedDict

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures"))
import safetensors_writer as st  # noqa: E402

TARGETS = ["fuzz_pickle", "fuzz_torch_zip", "fuzz_shard", "fuzz_artifact", "fuzz_json_config", "fuzz_tokenizer", "fuzz_safetensors",
           "fuzz_gguf", "fuzz_onnx", "fuzz_zip_bundle"]

# A LLaMA small enough that its shards and artifacts fuzz quickly, large enough for int4 groups
# of 32: width 32, 1 block, 4 heads over 2 KV heads, FFN 64, vocabulary 64.
TINY = {"vocab": 64, "dim": 32, "layers": 1, "heads": 4, "kv_heads": 2, "ffn": 64}
# Seeds that still crash their target: each reproduces a finding reported for a fix in library code
# (issue 5). They are kept out of the CI corpus so CI stays green, and written to OUT/pending/ so
# they are not lost; delete an entry once its fix is merged, and the seed joins the corpus.
PENDING = set()  # every reported finding is fixed; add (target, seed name) pairs here while one is open

SCHEMES = ["f32", "f16", "bf16", "int8", "int4:g32", "int4:g32:asym", "int4:g16"]


class Seeds:
    def __init__(self, out):
        self.out = out
        self.count = {}

    def add(self, target, name, data):
        if isinstance(data, str):
            data = data.encode()
        name = re.sub(r"[^A-Za-z0-9_.-]+", "_", name)
        folder = os.path.join(self.out, "pending", target) if (target, name) in PENDING else os.path.join(self.out, target)
        os.makedirs(folder, exist_ok=True)
        with open(os.path.join(folder, name), "wb") as f:
            f.write(data)
        if (target, name) not in PENDING:
            self.count[target] = self.count.get(target, 0) + 1


# ---------------------------------------------------------------- pickles

def ustr(text):
    b = text.encode()
    return b"X" + struct.pack("<I", len(b)) + b


class StorageRecord:
    def __init__(self, numel):
        self.numel = numel


class TensorRecord:
    """Pickles like a torch tensor over storage '0' with the view we choose (true or not)."""
    def __init__(self, numel, offset, size, stride):
        self.numel, self.offset, self.size, self.stride = numel, offset, size, stride

    def __reduce__(self):
        return torch._utils._rebuild_tensor_v2, (StorageRecord(self.numel), self.offset, self.size, self.stride,
                                                  False, OrderedDict())


class TorchPickler(pickle.Pickler):
    def persistent_id(self, obj):
        if isinstance(obj, StorageRecord):
            return ("storage", torch.FloatStorage, "0", "cpu", obj.numel)
        return None


def torch_pickle(obj, protocol=2):
    buf = io.BytesIO()
    TorchPickler(buf, protocol=protocol).dump(obj)
    return buf.getvalue()


def lying_tensor_pickles():
    """Tensor records whose view and storage disagree, or whose numbers overflow."""
    views = {
        "view_past_storage": TensorRecord(100, 50, (10, 10), (10, 1)),
        "huge_numel": TensorRecord(1 << 62, 0, (1 << 31, 1 << 31), (1 << 31, 1)),
        "negative_stride": TensorRecord(100, 99, (10, 10), (-10, -1)),
        "negative_size": TensorRecord(100, 0, (-1, 10), (10, 1)),
        "negative_offset": TensorRecord(100, -5, (10,), (1,)),
        "overflowing_stride": TensorRecord(16, 0, (2, 2), ((1 << 63) - 1, 1)),
        "zero_size": TensorRecord(0, 0, (0, 4), (4, 1)),
        "rank_5": TensorRecord(32, 0, (2, 2, 2, 2, 2), (16, 8, 4, 2, 1)),
    }
    return {name: torch_pickle(OrderedDict([("w", rec)])) for name, rec in views.items()}


def hand_made_pickles():
    p2, stop = b"\x80\x02", b"."
    deep = 100_000
    return {
        # nesting deep enough to overflow a recursive reader or printer
        "deep_lists": p2 + b"(" * deep + b"l" * deep + stop,
        "deep_tuples": p2 + b"(" * deep + b"t" * deep + stop,
        "deep_dicts": p2 + b"}" + b"X\x01\x00\x00\x00a}" * 5000 + b"s" * 5000 + stop,
        # containers that hold themselves: EMPTY_LIST BINPUT 0 BINGET 0 APPEND
        "self_list": p2 + b"]q\x00h\x00a" + stop,
        "self_dict": p2 + b"}q\x00X\x01\x00\x00\x00ah\x00s" + stop,
        "self_ordered_dict": p2 + b"ccollections\nOrderedDict\nq\x00)Rq\x01X\x01\x00\x00\x00ah\x01s" + stop,
        "mutual_lists": p2 + b"]q\x00]q\x01h\x00a" + b"h\x01h\x00a0h\x00" + stop,
        # lengths that lie
        "unicode_len_max": p2 + b"X\xff\xff\xff\xffabc" + stop,
        "bytes_len_max": b"\x80\x03B\xff\xff\xff\xffabc" + stop,
        "bytes8_len_max": b"\x80\x04\x8e" + b"\xff" * 8 + b"abc" + stop,
        "long4_len_max": p2 + b"\x8b\xff\xff\xff\x7f\x01" + stop,
        "frame_len_max": b"\x80\x04\x95" + b"\xff" * 8 + b"N" + stop,
        "memo_get_missing": p2 + b"j\xff\xff\xff\x7f" + stop,
        "memo_put_huge": p2 + b"Nr\xff\xff\xff\x7f" + stop,
        "memoize_empty_stack": b"\x80\x04\x94" + stop,
        # stack and mark misuse
        "empty_stack_append": p2 + b"a" + stop,
        "stop_on_empty": p2 + stop,
        "tuple_without_mark": p2 + b"t" + stop,
        "pop_mark_without_mark": p2 + b"1" + stop,
        "setitems_odd": p2 + b"}(X\x01\x00\x00\x00au" + stop,
        "no_stop": p2 + b"]",
        "unknown_opcode": p2 + b"\xfe" + stop,
        "protocol_99": b"\x80\x63N" + stop,
        # globals that must never be called
        "os_system": p2 + b"cos\nsystem\n(" + ustr("true") + b"tR" + stop,
        "builtins_getattr": p2 + b"cbuiltins\ngetattr\n(cbuiltins\n__import__\n(" + ustr("os") + b"tR" +
                            ustr("system") + b"tR" + stop,
        "storage_called": p2 + b"ctorch\nFloatStorage\n)R" + stop,
        "build_on_global": p2 + b"ctorch\nFloatStorage\n}b" + stop,
        "persistent_id_not_tuple": p2 + b"NQ" + stop,
        "numbers": p2 + b"(G\x7f\xf0\x00\x00\x00\x00\x00\x00G\x7f\xf8\x00\x00\x00\x00\x00\x01J\xff\xff\xff\xff"
                        b"\x8a\x09\xff\xff\xff\xff\xff\xff\xff\xff\x7fI99999999999999999999999\nt" + stop,
        **lying_tensor_pickles(),
    }


# ---------------------------------------------------------------- zips

def torch_zip(pickle_bytes, storages=None, prefix="archive", compression=zipfile.ZIP_STORED, zip64=False,
              extra_entries=()):
    """A zip laid out as torch.save lays it out, with our own data.pkl."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression) as z:
        def put(name, data):
            with z.open(zipfile.ZipInfo(name), "w", force_zip64=zip64) as f:
                f.write(data.encode() if isinstance(data, str) else data)
        put(f"{prefix}/data.pkl", pickle_bytes)
        put(f"{prefix}/version", "3\n")
        for key, data in (storages or {}).items():
            put(f"{prefix}/data/{key}", data)
        for name, data in extra_entries:
            put(name, data)
    return buf.getvalue()


def with_zip64_end_records(data):
    """Adds the zip64 end-of-central-directory record and locator, as a writer must for more than
    65535 entries or offsets past 4 GiB, and points the classic record at them (all fields 0xFF)."""
    e = data.rfind(b"PK\x05\x06")
    _, disk, cd_disk, n_here, n_total, cd_size, cd_offset, comment_len = struct.unpack("<4s4H2LH", data[e:e + 22])
    record = struct.pack("<4sQ2H2L4Q", b"PK\x06\x06", 44, 45, 45, disk, cd_disk, n_here, n_total, cd_size, cd_offset)
    locator = struct.pack("<4sLQL", b"PK\x06\x07", 0, e, 1)
    classic = struct.pack("<4s4H2LH", b"PK\x05\x06", 0xFFFF, 0xFFFF, 0xFFFF, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0)
    return data[:e] + record + locator + classic


def torch_save_bytes(obj, **kw):
    buf = io.BytesIO()
    torch.save(obj, buf, **kw)
    return buf.getvalue()


def data_pkl(zip_bytes):
    with zipfile.ZipFile(io.BytesIO(zip_bytes)) as z:
        return z.read(next(n for n in z.namelist() if n.endswith("data.pkl")))


def tiny_state_dict(seed=0):
    g = torch.Generator().manual_seed(seed)
    v, d, f, kv = TINY["vocab"], TINY["dim"], TINY["ffn"], TINY["dim"] * TINY["kv_heads"] // TINY["heads"]
    sd = OrderedDict([("model.embed_tokens.weight", torch.randn(v, d, generator=g))])
    for i in range(TINY["layers"]):
        p = f"model.layers.{i}."
        for name, shape in [("input_layernorm.weight", (d,)), ("self_attn.q_proj.weight", (d, d)),
                            ("self_attn.k_proj.weight", (kv, d)), ("self_attn.v_proj.weight", (kv, d)),
                            ("self_attn.o_proj.weight", (d, d)), ("post_attention_layernorm.weight", (d,)),
                            ("mlp.gate_proj.weight", (f, d)), ("mlp.up_proj.weight", (f, d)),
                            ("mlp.down_proj.weight", (d, f))]:
            sd[p + name] = torch.randn(*shape, generator=g) * (1.0 if len(shape) == 1 else 0.2)
    sd["model.norm.weight"] = torch.ones(d)
    sd["lm_head.weight"] = torch.randn(v, d, generator=g) * 0.2
    return sd


def tiny_config():
    return {"architectures": ["LlamaForCausalLM"], "vocab_size": TINY["vocab"], "hidden_size": TINY["dim"],
            "num_hidden_layers": TINY["layers"], "num_attention_heads": TINY["heads"],
            "num_key_value_heads": TINY["kv_heads"], "intermediate_size": TINY["ffn"], "rms_norm_eps": 1e-5,
            "rope_theta": 10000.0, "max_position_embeddings": 128, "hidden_act": "silu",
            "tie_word_embeddings": False}


def checkpoints(fixtures):
    """Small real torch.save checkpoints: every dtype, views, protocols, layouts."""
    small = OrderedDict([("w", torch.arange(12, dtype=torch.float32).reshape(3, 4)),
                         ("h", torch.arange(6, dtype=torch.float16)), ("b", torch.arange(5, dtype=torch.bfloat16))])
    big = torch.arange(40, dtype=torch.float32)
    views = OrderedDict([("offset", big[10:22].view(3, 4)), ("strided", big.view(4, 10)[:, ::3]),
                         ("transposed", torch.arange(12.0).reshape(3, 4).t()), ("shared", big[:4])])
    cks = {
        "tiny_llama": torch_save_bytes(tiny_state_dict()),
        "small_p2": torch_save_bytes(small),
        "small_p4": torch_save_bytes(small, pickle_protocol=4),
        "views": torch_save_bytes(views),
        "model_args": torch_save_bytes({"model": OrderedDict(("_orig_mod." + k, v) for k, v in small.items()),
                                        "model_args": {"dim": 4, "n_layers": 1, "n_heads": 1},
                                        "iter_num": 1000, "best_val_loss": 1.5}),
        "scalar_and_empty": torch_save_bytes(OrderedDict([("s", torch.tensor(3.0)), ("e", torch.zeros(0, 4))])),
    }
    dtypes = os.path.join(fixtures, "dtypes.pt")
    if os.path.exists(dtypes):
        with open(dtypes, "rb") as f:
            cks["fixture_dtypes"] = f.read()
    return cks


def hand_made_zips(real):
    pkl = data_pkl(real)
    storages = {}
    with zipfile.ZipFile(io.BytesIO(real)) as z:
        prefix = z.namelist()[0].split("/")[0]
        for n in z.namelist():
            if "/data/" in n:
                storages[n.split("/data/")[1]] = z.read(n)
    one = torch_pickle(OrderedDict([("w", TensorRecord(100, 0, (10, 10), (10, 1)))]))
    pickles = hand_made_pickles()
    zips = {
        "zip64_extras": torch_zip(pkl, storages, prefix, zip64=True),
        "zip64_end_records": with_zip64_end_records(real),
        "zip64_both": with_zip64_end_records(torch_zip(pkl, storages, prefix, zip64=True)),
        "deflated": torch_zip(pkl, storages, prefix, compression=zipfile.ZIP_DEFLATED),
        "storage_short": torch_zip(one, {"0": b"\0" * 40}),
        "view_past_storage": torch_zip(torch_pickle(OrderedDict([("w", TensorRecord(100, 50, (10, 10), (10, 1)))])),
                                       {"0": b"\0" * 400}),
        "storage_missing": torch_zip(one),
        "duplicate_entry": torch_zip(one, {"0": b"\0" * 400}, extra_entries=[("archive/data/0", b"\1" * 400)]),
        "two_data_pkl": torch_zip(one, {"0": b"\0" * 400}, extra_entries=[("other/data.pkl", pkl)]),
        "no_data_pkl": real.replace(b"data.pkl", b"data.pkx"),
        "big_endian": torch_zip(pkl, storages, prefix, extra_entries=[(f"{prefix}/byteorder", "big")]),
        "truncated_half": real[: len(real) // 2],
        "truncated_cd": real[:-30],
        "self_list_pickle": torch_zip(pickles["self_list"]),
        "deep_lists_pickle": torch_zip(pickles["deep_lists"]),
        "os_system_pickle": torch_zip(pickles["os_system"]),
        # How the pre-zip torch.save format begins (magic number, protocol, sys_info pickles); not
        # torch.save itself, whose legacy output names storages by object id and so changes per run.
        "legacy_format": b"".join(pickle.dumps(x, protocol=2) for x in [
            0x1950A86A20F9469CFC6C, 1001, {"protocol_version": 1001, "little_endian": True}]),
        "not_a_zip": b"this is not a checkpoint\n" * 4,
    }
    return zips


# ---------------------------------------------------------------- safetensors

def safetensors_files():
    """Small real safetensors files (every dtype, empty and scalar tensors, metadata, the tiny
    LLaMA in f32 and bf16) and hand-made headers that lie in each way the reader checks."""
    base = torch.arange(-6, 6, dtype=torch.float64).reshape(3, 4)
    dtypes = OrderedDict((f"t_{dt}".replace("torch.", ""), (base if dt.is_floating_point or dt == torch.bool
                                                            else base + 6).to(dt)) for dt in st.DTYPES)
    files = {
        "every_dtype": st.to_bytes(dtypes, {"format": "pt"}),
        "tiny_llama_f32": st.to_bytes(tiny_state_dict()),
        "tiny_llama_bf16": st.to_bytes(OrderedDict((k, v.to(torch.bfloat16)) for k, v in tiny_state_dict(1).items())),
        "empty_and_scalar": st.to_bytes(OrderedDict([("e", torch.zeros(0, 4)), ("s", torch.tensor(2.5)),
                                                     ("v", torch.ones(3))])),
        "no_tensors": st.pack({"__metadata__": {"format": "pt"}}, b""),
    }
    def entry(dtype="F32", shape=(4,), offsets=(0, 16)):
        return {"dtype": dtype, "shape": list(shape), "data_offsets": list(offsets)}
    d16 = b"\0" * 16
    lies = {
        "offsets_past_end": ({"w": entry(offsets=(0, 32))}, d16),
        "overlapping": ({"a": entry(shape=(3,), offsets=(0, 12)), "b": entry(shape=(2,), offsets=(8, 16))}, d16),
        "bytes_not_numel": ({"w": entry(shape=(3,))}, d16),
        "negative_dim": ({"w": entry(shape=(-1, 4))}, d16),
        "huge_dims": ({"w": entry(shape=(1 << 32, 1 << 32))}, d16),
        "huge_empty": ({"w": entry(shape=(0, 1 << 62, 1 << 62), offsets=(0, 0))}, d16),
        "dim_past_int64": ({"w": entry(shape=((1 << 64) - 1,))}, d16),
        "offsets_reversed": ({"w": entry(offsets=(16, 0))}, d16),
        "offsets_max": ({"w": entry(offsets=((1 << 64) - 1, (1 << 64) - 1))}, d16),
        "unknown_dtype": ({"w": entry(dtype="F8_E4M3", shape=(16,))}, d16),
        "float_dim": ({"w": {"dtype": "F32", "shape": [4.0], "data_offsets": [0, 16]}}, d16),
        "metadata_not_strings": ({"__metadata__": {"a": [1]}, "w": entry()}, d16),
        "entry_not_object": ({"w": [1, 2]}, d16),
        "not_object": (b"[1, 2, 3]", d16),
        "deep": (b"{\"a\":" + b"[" * 100_000 + b"]" * 100_000 + b"}", b""),
        "invalid_json": (b'{"w": {"dtype": "F32", ', d16),
    }
    for name, (header, data) in lies.items():
        files[name] = st.pack(header, data)
    real = files["tiny_llama_f32"]
    files.update({
        "header_len_2_pow_60": struct.pack("<Q", 1 << 60) + real[8:],
        "header_len_past_end": struct.pack("<Q", len(real)) + real[8:],
        "truncated_half": real[: len(real) // 2],
        "truncated_header": real[:40],
        "short": b"\x02\0\0",
    })
    return files


# ---------------------------------------------------------------- shards and artifacts

def convert_tiny(shardforge, work):
    """The tiny model as a Hugging Face directory, converted with every scheme; {scheme: artifact dir}."""
    src = os.path.join(work, "tiny_hf")
    os.makedirs(src, exist_ok=True)
    torch.save(tiny_state_dict(), os.path.join(src, "pytorch_model.bin"))
    with open(os.path.join(src, "config.json"), "w") as f:
        json.dump(tiny_config(), f)
    arts = {}
    for scheme in SCHEMES:
        out = os.path.join(work, "art_" + scheme.replace(":", "_"))
        subprocess.run([shardforge, "convert", src, "-o", out, "--quant", scheme, "--threads", "1"],
                       check=True, capture_output=True)
        arts[scheme] = out
    mixed = os.path.join(work, "art_mixed")
    subprocess.run([shardforge, "convert", src, "-o", mixed, "--quant", "int4:g32", "--threads", "1",
                    "--tensor-quant", "blocks.*.ffn.down.weight=int8", "--tensor-quant", "embed.weight=bf16"],
                   check=True, capture_output=True)
    arts["mixed"] = mixed
    trimmed = os.path.join(work, "art_trim")  # vocab_map.bin and its manifest entry
    subprocess.run([shardforge, "convert", src, "-o", trimmed, "--quant", "int8", "--threads", "1",
                    "--trim-vocab", "range:1-5,9-"], check=True, capture_output=True)
    arts["trim"] = trimmed
    # ONNX outputs (docs/onnx.md): a whole graph and one graph per unit, over one data file; and the
    # asymmetric 4-bit pattern with an 8-bit embedding's rows gathered before dequantizing (the
    # reader's DequantizeLinear folding, converters/onnx/onnx_dequant.cpp).
    for tag, quant, extra in (("onnx", "int4:g32", []), ("onnx_split", "int4:g32", ["--split", "blocks"]),
                              ("onnx_asym", "int4:g32:asym", ["--tensor-quant", "embed.weight=int8"])):
        out = os.path.join(work, "art_" + tag)
        subprocess.run([shardforge, "convert", src, "-o", out, "--quant", quant, "--format", "onnx", "--threads", "1",
                        *extra], check=True, capture_output=True)
        arts[tag] = out
    return arts


# ---------------------------------------------------------------- GGUF

def convert_tiny_gguf(shardforge, work, fixtures):
    """The tiny model as GGUF files of every type GGUF takes, and the GPT-2 fixture (fused attn_qkv)."""
    src = os.path.join(work, "tiny_hf")
    out = {}
    for scheme in ["f32", "f16", "bf16", "q8_0", "q4_0"]:
        path = os.path.join(work, f"tiny_{scheme}.gguf")
        subprocess.run([shardforge, "convert", src, "-o", path, "--quant", scheme, "--format", "gguf", "--threads", "1"],
                       check=True, capture_output=True)
        out["tiny_" + scheme] = path
    path = os.path.join(work, "gpt2_q4_0.gguf")
    subprocess.run([shardforge, "convert", os.path.join(fixtures, "gpt2_hub"), "-o", path, "--quant", "q4_0",
                    "--format", "gguf", "--threads", "1"], check=True, capture_output=True)
    out["gpt2_q4_0"] = path
    return {name: open(p, "rb").read() for name, p in out.items()}


def gguf_str(s):
    b = s.encode() if isinstance(s, str) else s
    return struct.pack("<Q", len(b)) + b


def gguf_first_tensor_info(data):
    """Offset of the first tensor info's n_dims (after its name, token_embd.weight)."""
    name = b"token_embd.weight"
    return data.index(struct.pack("<Q", len(name)) + name) + 8 + len(name)


GGUF_SCALAR_SIZE = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}


def gguf_with_keys(real, extra):
    """The GGUF `real` with metadata entries `extra` (encoded key/value bytes, one per entry) added
    after its own, the data moved to the new aligned start (alignment 32)."""
    pos = 24
    n_tensors, n_kv = struct.unpack_from("<QQ", real, 8)

    def skip_value(pos, t):
        if t == 8:
            return pos + 8 + struct.unpack_from("<Q", real, pos)[0]
        if t == 9:
            elem, count = struct.unpack_from("<IQ", real, pos)
            pos += 12
            if elem != 8:
                return pos + GGUF_SCALAR_SIZE[elem] * count
            for _ in range(count):
                pos = skip_value(pos, 8)
            return pos
        return pos + GGUF_SCALAR_SIZE[t]

    for _ in range(n_kv):
        pos += 8 + struct.unpack_from("<Q", real, pos)[0]
        (t,) = struct.unpack_from("<I", real, pos)
        pos = skip_value(pos + 4, t)
    kv_end = pos
    for _ in range(n_tensors):
        pos += 8 + struct.unpack_from("<Q", real, pos)[0]
        (n_dims,) = struct.unpack_from("<I", real, pos)
        pos += 4 + 8 * n_dims + 4 + 8
    data_start = (pos + 31) // 32 * 32
    header = real[:16] + struct.pack("<Q", n_kv + len(extra)) + real[24:kv_end] + b"".join(extra) + real[kv_end:pos]
    return header + b"\0" * ((-len(header)) % 32) + real[data_start:]


def gguf_tokenizer_keys(kind, files):
    """shardforge.tokenizer.* entries for `files` [(name, bytes)]."""
    out = [gguf_str("shardforge.tokenizer.kind") + struct.pack("<I", 8) + gguf_str(kind),
           gguf_str("shardforge.tokenizer.files") + struct.pack("<IIQ", 9, 8, len(files)) +
           b"".join(gguf_str(n) for n, _ in files)]
    for n, data in files:
        out.append(gguf_str("shardforge.tokenizer.file." + n) + struct.pack("<IIQ", 9, 0, len(data)) + data)
    return out


def gguf_variants(real):
    """A real GGUF with its header changed the ways a damaged or hostile one would be."""
    def patched(off, fmt, value):
        d = bytearray(real)
        struct.pack_into(fmt, d, off, value)
        return bytes(d)
    info = gguf_first_tensor_info(real)
    header = b"GGUF" + struct.pack("<IQQ", 3, 0, 1)
    return {
        "truncated_header": real[:40],
        "truncated_data": real[:-9],
        "version_1": patched(4, "<I", 1),
        "tensor_count_huge": patched(8, "<Q", 1 << 62),
        "kv_count_huge": patched(16, "<Q", 1 << 62),
        "key_length_huge": patched(24, "<Q", 1 << 63),
        "n_dims_5": patched(info, "<I", 5),
        "dim_zero": patched(info + 4, "<Q", 0),
        "dim_huge": patched(info + 4, "<Q", 1 << 62),
        "rows_not_blocks": patched(info + 4, "<Q", 33),
        "type_unknown": patched(info + 20, "<I", 99),
        "type_q6_k": patched(info + 20, "<I", 14),
        "offset_overflow": patched(info + 24, "<Q", (1 << 64) - 32),
        "offset_unaligned": patched(info + 24, "<Q", 7),
        "string_value_huge": header + gguf_str("general.name") + struct.pack("<IQ", 8, 1 << 62),
        "array_of_arrays": header + gguf_str("a") + struct.pack("<IIQ", 9, 9, 1) + struct.pack("<IQ", 6, 1) + b"\0" * 4,
        "array_count_huge": header + gguf_str("a") + struct.pack("<IIQ", 9, 6, 1 << 61),
        "strings_count_huge": header + gguf_str("a") + struct.pack("<IIQ", 9, 8, 1 << 60),
        "value_type_unknown": header + gguf_str("a") + struct.pack("<I", 77),
        "alignment_zero": header + gguf_str("general.alignment") + struct.pack("<II", 4, 0),
        "alignment_odd": header + gguf_str("general.alignment") + struct.pack("<II", 4, 48),
        "magic_only": b"GGUF",
    }


# ---------------------------------------------------------------- ONNX

def onnx_dirs(work):
    """A TINY LLaMA exported by torch.onnx.export, inline and with external data (one shared file,
    one per tensor), a TINY GPT-2 and a TINY ChatGLM2 inline, and hand-made graphs: a cycle, an escaping location, a lying length."""
    import onnx
    from onnx import TensorProto, helper
    import onnx_export
    from llama_ref import Config, MetaLlama
    os.makedirs(work, exist_ok=True)
    cfg = Config(vocab_size=TINY["vocab"], dim=TINY["dim"], n_layers=TINY["layers"], n_heads=TINY["heads"],
                 n_kv_heads=TINY["kv_heads"], ffn_dim=TINY["ffn"], max_seq=16)
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        onnx_export.export(MetaLlama(cfg), os.path.join(work, "inline", "model.onnx"), 14, [1, 2, 3, 4])
    out = {"tiny_inline": read_dir(os.path.join(work, "inline"))}
    # GPT-2's recovery (LayerNorm as torch decomposes it at opset 14, fused QKV Gemm and Split).
    import gpt2_ref
    gpt2 = gpt2_ref.GPT2(gpt2_ref.GPT2Config(vocab_size=TINY["vocab"], n_embd=TINY["dim"], n_head=TINY["heads"],
                                             n_layer=TINY["layers"], n_positions=16, n_inner=TINY["ffn"]))
    with torch.no_grad():
        for p in gpt2.parameters():  # Conv1D's weights start as torch.empty
            p.normal_(0.0, 0.1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        onnx_export.export(gpt2, os.path.join(work, "gpt2", "model.onnx"), 14, [1, 2, 3, 4])
    out["tiny_gpt2_inline"] = read_dir(os.path.join(work, "gpt2"))
    # ChatGLM2's recovery (fused query_key_value with bias, k/v groups, the rotary cache, chunked gate/up).
    import chatglm2_ref
    glm = chatglm2_ref.ChatGLM2(chatglm2_ref.GLM2Config(
        padded_vocab_size=TINY["vocab"], hidden_size=TINY["dim"], num_attention_heads=TINY["heads"],
        num_layers=TINY["layers"], kv_channels=TINY["dim"] // TINY["heads"], multi_query_group_num=TINY["kv_heads"],
        ffn_hidden_size=TINY["ffn"], seq_length=16))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        onnx_export.export(glm, os.path.join(work, "chatglm2", "model.onnx"), 14, [1, 2, 3, 4])
    out["tiny_chatglm2_inline"] = read_dir(os.path.join(work, "chatglm2"))
    for tag, one_file in (("tiny_external_one", True), ("tiny_external_each", False)):
        d = os.path.join(work, tag)
        os.makedirs(d)
        onnx_export.to_external(os.path.join(work, "inline", "model.onnx"), os.path.join(d, "model.onnx"), one_file)
        out[tag] = read_dir(d)

    def model(nodes, inits):
        g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])], inits)
        return helper.make_model(g).SerializeToString()

    def external(location, length):
        t = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[4], data_location=TensorProto.EXTERNAL)
        for k, v in (("location", location), ("length", str(length))):
            e = t.external_data.add()
            e.key, e.value = k, v
        return t
    identity = [helper.make_node("Identity", ["x"], ["y"])]
    out["cycle"] = [("model.onnx", model([helper.make_node("Add", ["x", "b"], ["a"]), helper.make_node("Relu", ["a"], ["b"]),
                                          helper.make_node("Identity", ["a"], ["y"])], []))]
    out["escape"] = [("model.onnx", model(identity, [external("../w.bin", 16)])), ("w.bin", bytes(16))]
    out["lying_length"] = [("model.onnx", model(identity, [external("w.bin", 1 << 31)])), ("w.bin", bytes(16))]
    out["if_subgraph"] = [("model.onnx", model([helper.make_node(
        "If", ["x"], ["y"], then_branch=helper.make_graph([], "t", [], [], [external("w.bin", 16)]),
        else_branch=helper.make_graph([], "e", [], []))], [])), ("w.bin", bytes(16))]
    return out


def pack_dir(files):
    """fuzz_file.h's directory layout: u8 name length, name, u32 data length, data."""
    out = b""
    for name, data in files:
        n = name.encode()
        out += bytes([len(n)]) + n + struct.pack("<I", len(data)) + data
    return out


def read_dir(path):
    files = []
    for name in sorted(os.listdir(path), key=lambda n: (n != "manifest.json", n)):
        with open(os.path.join(path, name), "rb") as f:
            files.append((name, f.read()))
    return files


def with_manifest(files, edit):
    m = json.loads(files[0][1])
    edit(m)
    return [("manifest.json", json.dumps(m).encode())] + files[1:]


def set_path(keys, value):
    def edit(m):
        d = m
        for k in keys[:-1]:
            d = d[k]
        d[keys[-1]] = value
    return edit


def artifact_variants(files):
    """The real artifact with the manifest or the file set changed the ways a damaged one would be."""
    shard = next(d for n, d in files if n.endswith(".shard"))
    header_len = struct.unpack("<I", shard[12:16])[0]
    return {
        "n_layers_huge": with_manifest(files, set_path(["model", "n_layers"], 1 << 40)),
        "n_layers_zero": with_manifest(files, set_path(["model", "n_layers"], 0)),
        "d_model_negative": with_manifest(files, set_path(["model", "d_model"], -32)),
        "vocab_float": with_manifest(files, set_path(["model", "vocab_size"], 64.5)),
        "vocab_huge": with_manifest(files, set_path(["model", "vocab_size"], (1 << 63) - 1)),
        "heads_zero": with_manifest(files, set_path(["model", "n_heads"], 0)),
        "row_bytes_lie": with_manifest(files, set_path(["units", "embedding", "row_bytes"], 1 << 62)),
        "embedding_shape_lie": with_manifest(files, set_path(["units", "embedding", "shape"], [1 << 40, 1 << 40])),
        "embedding_type_unknown": with_manifest(files, set_path(["units", "embedding", "type"], "int3")),
        "blocks_outside": with_manifest(files, set_path(["units", "blocks"], ["../block_000.shard"])),
        "blocks_not_list": with_manifest(files, set_path(["units", "blocks"], {"a": 1})),
        "files_outside": with_manifest(files, lambda m: m["files"].append(
            {"path": "/etc/passwd", "bytes": 1, "sha256": "0" * 64})),
        "files_bytes_lie": with_manifest(files, lambda m: m["files"][0].update(bytes=1 << 62)),
        "format_version_2": with_manifest(files, set_path(["format_version"], 2)),
        "format_not_string": with_manifest(files, set_path(["format"], {})),
        "format_version_string": with_manifest(files, set_path(["format_version"], "1")),
        "manifest_deep": [("manifest.json", b"[" * 100_000 + b"]" * 100_000)] + files[1:],
        "manifest_not_object": [("manifest.json", b"[1, 2, 3]")] + files[1:],
        "manifest_missing": files[1:],
        "shard_missing": [f for f in files if not f[0].startswith("block_")],
        "shard_truncated": [(n, d[: len(d) // 2] if n.startswith("block_") else d) for n, d in files],
        "shard_header_len_lie": [(n, d[:12] + b"\xff\xff\xff\x7f" + d[16:] if n.startswith("block_") else d)
                                 for n, d in files],
        "shard_header_deep": [(n, d[:16] + b"[" * header_len if n.startswith("block_") else d) for n, d in files],
        "extra_file": files + [("unlisted.bin", b"\0" * 8)],
        "embedding_truncated": [(n, d[:-1] if n == "embedding.bin" else d) for n, d in files],
    }


def resealed(files):
    """files[] sizes and hashes, vocab_map.sha256 and manifest_sha256 recomputed (docs/format.md), so
    that the lie reaches the checks past the hashes."""
    m = json.loads(files[0][1])
    data = dict(files)
    for f in m.get("files", []):
        if f.get("path") in data:
            f["bytes"], f["sha256"] = len(data[f["path"]]), hashlib.sha256(data[f["path"]]).hexdigest()
    if isinstance(m.get("vocab_map"), dict) and "vocab_map.bin" in data:
        m["vocab_map"]["sha256"] = hashlib.sha256(data["vocab_map.bin"]).hexdigest()
    m.pop("manifest_sha256", None)
    m["manifest_sha256"] = hashlib.sha256(
        json.dumps(m, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()).hexdigest()
    return [("manifest.json", json.dumps(m).encode())] + files[1:]


def trimmed_variants(files):
    """A trimmed artifact whose vocab_map entry or file lies (resealed: only the map's own checks
    can refuse it)."""
    def map_file(edit):
        return [(n, edit(bytearray(d)) if n == "vocab_map.bin" else d) for n, d in files]

    def swapped(b):
        b[4:8], b[8:12] = b[8:12], b[4:8]
        return bytes(b)

    return {
        "vocab_map_old_huge": with_manifest(files, set_path(["vocab_map", "old_vocab_size"], 1 << 40)),
        "vocab_map_kept_lie": with_manifest(files, set_path(["vocab_map", "kept"], 3)),
        "vocab_map_outside": with_manifest(files, set_path(["vocab_map", "file"], "../vocab_map.bin")),
        "vocab_map_not_object": with_manifest(files, set_path(["vocab_map"], [1])),
        "vocab_map_truncated": map_file(lambda b: bytes(b[:-2])),
        "vocab_map_permuted": map_file(swapped),
    }


# ---------------------------------------------------------------- JSON configurations

def json_configs(fixtures, manifest):
    configs = {"tiny_config": tiny_config(), "pipeline_default": manifest["pipeline"],
               "pipeline_int8_override": {"stages": [{"name": "load"}, {"name": "quantize", "params": {
                   "scheme": "int8", "overrides": ["blocks.*.ffn.down.weight=f16"]}}, {"name": "write"}]},
               "pipeline_unknown_stage": {"stages": [{"name": "exec"}]},
               "pipeline_trim": {"stages": [{"name": "load"}, {"name": "trim_vocab", "params": {
                   "spec": "range:0-9,20-,5"}}, {"name": "quantize"}, {"name": "write"}]}}
    for name in ["hf_gqa/config.json", "hf_tied/config.json", "meta_params/params.json",
                 "hf_sharded/pytorch_model.bin.index.json"]:
        path = os.path.join(fixtures, name)
        if os.path.exists(path):
            with open(path) as f:
                configs[name.replace("/", "_").replace(".", "_")] = json.load(f)
    # The fixture shapes fuzz_json_config pairs configurations with: hf_gqa's.
    gqa = configs.get("hf_gqa_config_json", {})
    meta = {"dim": 64, "n_layers": 2, "n_heads": 4, "n_kv_heads": 2, "vocab_size": -1, "norm_eps": 1e-5,
            "hidden_dim": 100}
    configs["meta_matching"] = meta
    configs["model_args_matching"] = {**meta, "vocab_size": 300, "max_seq_len": 128}
    for key, value in [("num_hidden_layers", 1 << 40), ("num_hidden_layers", -1), ("num_attention_heads", 0),
                       ("hidden_size", 64.0), ("head_dim", 0), ("hidden_act", 1), ("hidden_act", "gelu"),
                       ("rope_scaling", {"type": "linear", "factor": 2.0}), ("tie_word_embeddings", "yes"),
                       ("vocab_size", 18446744073709551615), ("rms_norm_eps", "1e-5"), ("architectures", [1]),
                       ("architectures", "LlamaForCausalLM"), ("max_position_embeddings", -(1 << 62))]:
        configs[f"gqa_{key}_{value!r}"[:80]] = {**gqa, key: value}
    texts = {name: json.dumps(c) for name, c in configs.items()}
    texts.update({
        "depth_64": "[" * 64 + "]" * 64,
        "depth_65": "[" * 65 + "]" * 65,
        "depth_100000": "[" * 100_000 + "]" * 100_000,
        "object_depth_100000": '{"a":' * 100_000 + "1" + "}" * 100_000,
        "number_too_big": '{"hidden_size": 1e400, "vocab_size": 123456789012345678901234567890}',
        "nul_and_escapes": '{"architectures": ["Llama\\u0000ForCausalLM"], "x": "\\ud800"}',
        "invalid_utf8": b'{"architectures": ["\xff\xfe"]}',
        "bom": b"\xef\xbb\xbf" + json.dumps(gqa).encode(),
        "duplicate_keys": '{"hidden_size": 64, "hidden_size": 65}',
        "trailing_garbage": json.dumps(gqa) + " }",
        "empty": "",
        "not_object": "[1, 2, 3]",
    })
    return texts


# ---------------------------------------------------------------- GPT-2 BPE tokenizers

def gpt2_alphabet():
    """GPT-2's byte-to-unicode map: printable Latin-1 bytes as themselves, the rest from U+0100 up."""
    kept = set(range(ord("!"), ord("~") + 1)) | set(range(0xA1, 0xAD)) | set(range(0xAE, 0x100))
    shown, extra = {}, 0
    for b in range(256):
        shown[b] = chr(b) if b in kept else chr(0x100 + extra)
        extra += b not in kept
    return shown


def tokenizer_dirs():
    """Small GPT-2 BPE directories for fuzz_tokenizer: the 256 byte tokens, a few merges (so merges
    chain: "Ġ t" then "Ġt he"), <|endoftext|>, texts in several scripts; then damaged variants."""
    shown = gpt2_alphabet()
    word = lambda s: "".join(shown[b] for b in s.encode())
    merges = [(word(" "), "t"), ("h", "e"), (word(" t"), "he"), ("i", "n"), (word(" "), "a"), ("e", "r"),
              ("o", "n"), (word(" "), word("l")), ("ð", "Ł"), (word("\n"), word("\n"))]
    vocab = {shown[b]: b for b in range(256)}
    for a, b in merges:
        vocab.setdefault(a + b, len(vocab))
    vocab["<|endoftext|>"] = len(vocab)
    merges_txt = "#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges)
    texts = {
        "english": "The then in on a lane.\n\n  the there's they'll we've I'd   \n",
        "mixed": "Führer нещо 我想在apple工作1314151天～ 🦙.cpp  ½ ² e\u0301 \u00a0 \u3000x\t\r\n",
        "eot": "one<|endoftext|>two <|endoftext|><|endoftext|>",
        "invalid_utf8": b"caf\xc3 \xe2\x82 \xf0\x9f\xa6 \xed\xa0\x80 \xc0\xaf \xff\xfe end\xf4",
        "long_space_run": " " * 5000 + "x",
        "empty": "",
    }
    enc = lambda t: t if isinstance(t, bytes) else t.encode()
    good = [("vocab.json", json.dumps(vocab).encode()), ("merges.txt", merges_txt.encode())]
    dirs = {f"bpe_{name}": good + [("text", enc(text))] for name, text in texts.items()}
    text = ("text", enc(texts["english"]))
    edit = lambda change: [("vocab.json", json.dumps(change(dict(vocab))).encode()), good[1], text]
    dirs.update({
        "bpe_no_merges": [good[0], text],
        "bpe_no_vocab": [good[1], text],
        "bpe_vocab_not_json": [("vocab.json", b'{"a": 1,'), good[1], text],
        "bpe_vocab_list": [("vocab.json", b"[1, 2]"), good[1], text],
        "bpe_id_out_of_range": edit(lambda v: {**v, "he": 1 << 40}),
        "bpe_id_negative": edit(lambda v: {**v, "he": -1}),
        "bpe_id_duplicate": edit(lambda v: {**v, "he": 0}),
        "bpe_id_float": edit(lambda v: {**v, "he": 2.5}),
        "bpe_no_end_of_text": edit(lambda v: {k: i for k, i in v.items() if k != "<|endoftext|>"}),
        "bpe_missing_byte": edit(lambda v: {(k if k != "a" else "zz"): i for k, i in v.items()}),
        "bpe_merge_unknown": [good[0], ("merges.txt", merges_txt.encode() + b"q zz\n"), text],
        "bpe_merge_result_unknown": [good[0], ("merges.txt", merges_txt.encode() + b"a b\n"), text],
        "bpe_merge_three_parts": [good[0], ("merges.txt", b"h e r\n"), text],
        "bpe_merge_repeated": [good[0], ("merges.txt", merges_txt.encode() + b"h e\n"), text],
        "bpe_merges_crlf": [good[0], ("merges.txt", merges_txt.replace("\n", "\r\n").encode()), text],
    })
    return dirs


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out")
    ap.add_argument("--fixtures", required=True)
    ap.add_argument("--shardforge", required=True)
    ap.add_argument("--findings")
    args = ap.parse_args()
    torch.manual_seed(0)
    warnings.filterwarnings("ignore", "Duplicate name")  # the duplicate_entry seed means it
    shutil.rmtree(args.out, ignore_errors=True)
    for t in TARGETS:
        os.makedirs(os.path.join(args.out, t))
        os.makedirs(os.path.join(args.out, "work", t))
    if args.findings:
        os.makedirs(args.findings, exist_ok=True)
    seeds = Seeds(args.out)

    cks = checkpoints(args.fixtures)
    for name, data in cks.items():
        seeds.add("fuzz_torch_zip", name, data)
        seeds.add("fuzz_pickle", name, data_pkl(data))
    for name, data in hand_made_zips(cks["tiny_llama"]).items():
        seeds.add("fuzz_torch_zip", name, data)
    for name, data in hand_made_pickles().items():
        seeds.add("fuzz_pickle", name, data)

    for name, data in safetensors_files().items():
        seeds.add("fuzz_safetensors", name, data)

    work = os.path.join(args.out, "work", "convert")
    arts = convert_tiny(args.shardforge, work)
    onnx_written = {tag: read_dir(arts[tag]) for tag in ("onnx", "onnx_split", "onnx_asym")}  # work is removed below
    for scheme, art in arts.items():
        tag = scheme.replace(":", "_")
        files = read_dir(art)
        for name, data in files:
            if name.endswith(".shard"):
                seeds.add("fuzz_shard", f"{tag}_{name}", data)
        seeds.add("fuzz_artifact", tag, pack_dir(files))
    files = read_dir(arts["int4:g32"])
    for name, variant in artifact_variants(files).items():
        seeds.add("fuzz_artifact", name, pack_dir(variant))
    for name, variant in trimmed_variants(read_dir(arts["trim"])).items():
        seeds.add("fuzz_artifact", name, pack_dir(resealed(variant)))
    shard = dict(files)["block_000.shard"]
    seeds.add("fuzz_shard", "header_len_max", shard[:12] + b"\xff\xff\xff\xff" + shard[16:])
    seeds.add("fuzz_shard", "version_2", shard[:8] + b"\x02\0\0\0" + shard[12:])
    seeds.add("fuzz_shard", "truncated_data", shard[:-7])
    seeds.add("fuzz_shard", "header_only", shard[:16 + struct.unpack("<I", shard[12:16])[0]])

    for name, data in convert_tiny_gguf(args.shardforge, work, args.fixtures).items():
        seeds.add("fuzz_gguf", name, data)
        if name == "tiny_q4_0":
            for vname, variant in gguf_variants(data).items():
                seeds.add("fuzz_gguf", vname, variant)
            # Carried tokenizer files (extracted to a temporary directory when opened): a real
            # byte-level BPE pair, and names or kinds that must be refused.
            bpe = [(n, d) for n, d in tokenizer_dirs()["bpe_english"] if n in ("vocab.json", "merges.txt")]
            seeds.add("fuzz_gguf", "tokenizer_gpt2", gguf_with_keys(data, gguf_tokenizer_keys("gpt2_bpe", bpe)))
            seeds.add("fuzz_gguf", "tokenizer_path_escape",
                      gguf_with_keys(data, gguf_tokenizer_keys("sentencepiece", [("../tokenizer.model", b"x")])))
            seeds.add("fuzz_gguf", "tokenizer_kind_unknown",
                      gguf_with_keys(data, gguf_tokenizer_keys("bogus", [("tokenizer.model", b"\x0a\x00")])))
            seeds.add("fuzz_gguf", "tokenizer_named_twice",
                      gguf_with_keys(data, gguf_tokenizer_keys("gpt2_bpe", [("vocab.json", b"{}"), ("vocab.json", b"{}")])))

    # Zip bundles (--format zip): the tiny model, and the same cut short and with its central
    # directory's first local-header offset pointing elsewhere.
    bundle = os.path.join(work, "tiny.zip")
    subprocess.run([args.shardforge, "convert", os.path.join(work, "tiny_hf"), "-o", bundle, "--quant", "q4_0",
                    "--format", "zip", "--threads", "1"], check=True, capture_output=True)
    data = open(bundle, "rb").read()
    seeds.add("fuzz_zip_bundle", "tiny_q4_0", data)
    seeds.add("fuzz_zip_bundle", "truncated", data[:len(data) // 2])
    cd = struct.unpack_from("<I", data, len(data) - 6)[0]
    seeds.add("fuzz_zip_bundle", "lho_moved", data[:cd + 42] + struct.pack("<I", 4096) + data[cd + 46:])

    manifest = json.loads(dict(files)["manifest.json"])
    for name, text in json_configs(args.fixtures, manifest).items():
        seeds.add("fuzz_json_config", name, text)
    shutil.rmtree(work)
    for name, files in tokenizer_dirs().items():
        seeds.add("fuzz_tokenizer", name, pack_dir(files))
    for name, files in onnx_dirs(os.path.join(args.out, "work", "onnx")).items():
        seeds.add("fuzz_onnx", name, pack_dir(files))
    # What the ONNX writer writes, as a source: a whole graph, and unit graphs read as their join.
    for tag in ("onnx", "onnx_split", "onnx_asym"):
        seeds.add("fuzz_onnx", "written_" + tag, pack_dir([f for f in onnx_written[tag] if f[0] != "manifest.json"]))

    print("fuzz seeds written to", args.out + ":", ", ".join(f"{t} {seeds.count.get(t, 0)}" for t in TARGETS))
    if any(seeds.count.get(t, 0) == 0 for t in TARGETS):
        sys.exit("make_seeds.py: a target has no seeds")


if __name__ == "__main__":
    main()
