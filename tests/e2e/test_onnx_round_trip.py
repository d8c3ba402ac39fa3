"""What `--format onnx` writes, read back by our own ONNX reader (converters/onnx): the dequantizing
subgraphs of every storage type (Cast of f16/bf16, DequantizeLinear per row and block-wise, the
asymmetric minimum, rows gathered before dequantizing) are read as the weights they give. The f32
model read back runs in our executor to onnxruntime's logits for the quantized graph (the real
runtime decoding the same codes), describes the same model as the quantized artifact, requantizes
to the same codes, and whole and `--split blocks` graphs read the same; GPT-2 and ChatGLM2, written
with separate q, k, v projections, read back into their fused checkpoint tensors. Malformed
dequantizations are refused in one line."""
import json
import os
import shutil
import unittest

from sftest import SANITIZED, TempDirTest, error_line, read_bytes, release_only, sf
# The module, not its TestCase class: a class imported by name would be collected and run here too.
import test_onnx_writer as writer
from test_onnx_writer import PROMPT, ensure_onnxruntime, onnx_run, rel

# (fixture, --quant, extra convert arguments), each pattern once or twice: bf16 (Cast), q4_0 (INT4
# block-wise, ggml's nibble order), hf_tied with a quantized embedding (its rows gathered before
# dequantizing for the lookup, the whole table for the tied head: int8 per row, q8_0 block-wise
# INT8, the asymmetric 4-bit minimum), and grouped k/v at asymmetric int4 in SPLIT.
CASES = [("hf_gqa", "bf16", ()), ("hf_gqa", "q4_0", ()),
         ("hf_tied", "int8", ("--tensor-quant", "embed.weight=int8")),
         ("hf_tied", "q8_0", ("--tensor-quant", "embed.weight=q8_0")),
         ("hf_tied", "int4:g32:asym", ("--tensor-quant", "embed.weight=int4:g32:asym"))]
SPLIT = [("hf_gqa", "int4:g32:asym", ()), ("hf_tied", "int8", ("--tensor-quant", "embed.weight=int8"))]
# GPT-2 and ChatGLM2 as the writer gives them: separate q, k, v (and gate, up) projections, read
# back into the fused c_attn / query_key_value / dense_h_to_4h the checkpoints store.
FAMILIES = [("gpt2_hub", "int8", ()), ("chatglm2_6b", "bf16", ())]
FAMILIES_SPLIT = [("gpt2_hub", "q8_0", ()), ("chatglm2_6b", "int4:g32", ())]
if SANITIZED:  # the smallest subset: every pattern once (Cast, per-row gathered rows, asymmetric 4-bit)
    CASES = [CASES[0], CASES[2]]
    SPLIT = SPLIT[:1]
    FAMILIES = FAMILIES[:1]
    FAMILIES_SPLIT = FAMILIES_SPLIT[1:]


class OnnxRoundTrip(TempDirTest):
    convert = writer.OnnxWriter.convert
    ours = writer.OnnxWriter.ours

    @classmethod
    def setUpClass(cls):
        why = ensure_onnxruntime()
        if why:
            raise unittest.SkipTest(why)

    def onnxruntime(self, model):
        """onnxruntime's logits for the prompt, once per graph (node's start-up is most of a run)."""
        cache = self.__dict__.setdefault("_ort", {})
        if model not in cache:
            cache[model] = onnx_run(model, PROMPT)[0]
        return cache[model]

    def model_of(self, art):
        return json.loads(read_bytes(os.path.join(art, "manifest.json")))["model"]

    def read_back(self, fixture, quant, extra, split=()):
        onnx_dir = self.convert(fixture, "onnx", quant, "_x" if extra else "", *extra)
        src = onnx_dir
        if split:
            src = self.convert(fixture, "onnx", quant, "_split" + ("_x" if extra else ""), *extra, *split)
        back = src + "_back"
        if not os.path.exists(back):
            sf("convert", src, "-o", back)
        return onnx_dir, back

    def check(self, fixture, quant, extra, split=(), family=None):
        onnx_dir, back = self.read_back(fixture, quant, extra, split)
        # onnxruntime at "basic" dequantizes the codes to f32 and multiplies in f32: our executor on
        # the f32 weights read back computes the same products.
        want = self.onnxruntime(os.path.join(onnx_dir, "model.onnx"))
        got, _, _ = self.ours(back, 1)
        self.assertEqual(got.shape, want.shape)
        self.assertLess(rel(got, want), 1e-4)
        model = self.model_of(self.convert(fixture, "shards", quant, "_x" if extra else "", *extra))
        got_model = self.model_of(back)
        if family:  # read back as another family with the same settings
            self.assertEqual(got_model["family"], family)
            got_model["family"] = model["family"]
        if model["max_seq"] == 0:  # a source without a stated context gets the RoPE table's rows
            self.assertEqual(got_model.pop("max_seq"), 4096)
            model.pop("max_seq")
        self.assertEqual(got_model, model)
        return got

    def test_every_storage_type_reads_back_to_the_graphs_weights(self):
        for fixture, quant, extra in CASES:
            with self.subTest(fixture=fixture, quant=quant, extra=extra):
                self.check(fixture, quant, extra)

    def test_split_blocks_read_back_as_the_whole_graph(self):
        for fixture, quant, extra in SPLIT:
            with self.subTest(fixture=fixture, quant=quant, extra=extra):
                whole = self.check(fixture, quant, extra)
                split = self.check(fixture, quant, extra, ("--split", "blocks"))
                self.assertEqual(whole.tolist(), split.tolist())

    def test_gpt2_and_chatglm2_read_back_from_separate_projections(self):
        for fixture, quant, extra in FAMILIES:
            with self.subTest(fixture=fixture, quant=quant):
                self.check(fixture, quant, extra)
        for fixture, quant, extra in FAMILIES_SPLIT:
            with self.subTest(fixture=fixture, quant=quant, split=True):
                whole = self.check(fixture, quant, extra)
                split = self.check(fixture, quant, extra, ("--split", "blocks"))
                self.assertEqual(whole.tolist(), split.tolist())

    @release_only
    def test_odd_widths_read_back(self):
        # ffn_dim 101: the down projection's 4-bit codes are packed across row boundaries and its last
        # group holds 5 columns (the asymmetric minimum's Slice cuts the repeated groups to the row).
        src = writer.odd_width_source(self.path("odd_src"))
        for quant in ["int4:g32:asym", "q4_0"]:
            with self.subTest(quant=quant):
                self.check(src, quant, ())

    def test_internlm2_reads_back_as_llama_and_its_biases_are_refused(self):
        # InternLM2's written graph is LLaMA's (the same settings, so the same forward); with biases
        # it is not, and a bias left unread would change the logits: refused rather than read as LLaMA.
        self.check("internlm2_gqa", "f32", (), family="llama")
        bias = self.convert("internlm2_bias", "onnx", "f32")
        error_line(self, sf("convert", bias, "-o", self.path("bias_back"), check=False), 1, "followed by a bias")

    def test_requantizing_with_the_same_scheme_gives_the_same_codes(self):
        # The decoded weights are exactly the dequantized codes, so quantizing them again with the
        # scheme that made them finds the same scales and codes: the shards are byte for byte the
        # artifact converted from the source.
        for quant in ["int4:g32:asym"] if SANITIZED else ["int8", "int4:g32:asym", "q4_0"]:
            with self.subTest(quant=quant):
                onnx_dir = self.convert("hf_gqa", "onnx", quant)
                again = onnx_dir + "_again"
                sf("convert", onnx_dir, "-o", again, "--quant", quant)
                direct = self.convert("hf_gqa", "shards", quant)
                shards = [f for f in os.listdir(direct) if f.endswith(".shard") or f == "embedding.bin"]
                self.assertGreater(len(shards), 2)
                for f in shards:
                    self.assertEqual(read_bytes(os.path.join(again, f)), read_bytes(os.path.join(direct, f)), f)

    def test_malformed_dequantizations_are_refused_in_one_line(self):
        import onnx  # Debian's python3-onnx: edits the written graph, external data left in place
        src = self.convert("hf_gqa", "onnx", "int4:g32")
        int8 = self.convert("hf_gqa", "onnx", "int8")

        def dq(model, weight):
            return next(n for n in model.graph.node if n.op_type == "DequantizeLinear" and n.input[0] == weight + ".q")

        def init(model, name):
            return next(t for t in model.graph.initializer if t.name == name)

        def set_attr(node, name, value):
            for a in node.attribute:
                if a.name == name:
                    a.i = value
                    return
            node.attribute.append(onnx.helper.make_attribute(name, value))

        w = "blocks.0.attn.q.weight"
        kw = "blocks.0.attn.k.weight"  # [kv_heads x head_dim, d_model]: not square (grouped k/v)
        def zero_point_of_ones(m):
            scale = init(m, w + ".scale")
            m.graph.initializer.append(onnx.helper.make_tensor("zp", onnx.TensorProto.INT8, scale.dims, [1] * scale.dims[0]))
            dq(m, w).input.append("zp")

        def reshape(name, dims):
            return lambda m: (init(m, name).ClearField("dims"), init(m, name).dims.extend(dims))

        cases = [  # (graph, edit, what the message names)
            (src, lambda m: set_attr(dq(m, w), "block_size", 0), "block_size 0 is not positive"),
            (src, lambda m: set_attr(dq(m, w), "block_size", 4096), "block_size 4096 is larger than a row"),
            # 16-element blocks claimed over scales written for blocks of 32: the scale count lies.
            (src, lambda m: set_attr(dq(m, w), "block_size", 16), "in blocks of 16"),
            (src, lambda m: set_attr(dq(m, w), "axis", 0), "blocks must run along the rows"),
            # The codes claim [cols, rows] (the same bytes): the scales no longer fit them.
            (src, lambda m: reshape(kw + ".q", list(reversed(init(m, kw + ".q").dims)))(m), "is not ["),
            (int8, lambda m: reshape(w + ".scale", [2, init(m, w + ".scale").dims[0] // 2])(m), "is not one per row"),
            (int8, zero_point_of_ones, "is not all zeros"),
        ]
        for k, (graph, edit, needle) in enumerate(cases):
            with self.subTest(needle=needle):
                bad = self.path(f"bad_{k}")
                os.makedirs(bad)
                shutil.copy(os.path.join(graph, "model.onnx_data"), bad)
                m = onnx.load(os.path.join(graph, "model.onnx"), load_external_data=False)
                edit(m)
                onnx.save(m, os.path.join(bad, "model.onnx"))
                p = sf("convert", bad, "-o", self.path(f"bad_{k}_out"), check=False)
                node = dq(m, kw if "is not [" in needle else w).name
                error_line(self, p, 1, "model.onnx", node, needle)
                self.assertFalse(os.path.exists(self.path(f"bad_{k}_out")))
