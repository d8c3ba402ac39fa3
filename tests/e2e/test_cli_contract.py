"""The command-line contract: every failure is one line `shardforge: error: ...` with exit 1 (bad
input) or 2 (usage), no option is silently ignored, thread counts and context lengths are bounded,
and weights that are not finite, or that the chosen type cannot hold, are refused."""
import os
import resource
import shutil
import tempfile
import unittest

from sftest import SAMPLE, HELDOUT, TempDirTest, error_line, fixture, read_json, sf, sf_json, write_bytes, write_json

GQA = "hf_gqa"  # fixture: 2 blocks, vocab 300, max_seq 128, no tokenizer


def checkpoint_with(out, tensor, row, col, value):
    """The hf_gqa fixture with one weight replaced, written by torch.save like any checkpoint."""
    try:
        import torch
    except ImportError:
        raise unittest.SkipTest("python3-torch is needed to write a checkpoint")
    src = fixture(GQA)
    os.makedirs(out)
    shutil.copy(os.path.join(src, "config.json"), out)
    sd = torch.load(os.path.join(src, "pytorch_model.bin"))
    sd[tensor][row, col] = value
    torch.save(sd, os.path.join(out, "pytorch_model.bin"))
    return out


class WithSample(TempDirTest):
    """The bundled sample (max_seq 256, with a tokenizer) converted once for the class."""

    @classmethod
    def setUpClass(cls):
        cls.shared = tempfile.mkdtemp(prefix="sf-cli-")
        cls.art = os.path.join(cls.shared, "sample")
        sf("convert", SAMPLE, "-o", cls.art, "--quant", "int8")

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.shared, ignore_errors=True)


class Threads(WithSample):
    def test_negative_thread_count_is_a_usage_error(self):
        for cmd in [["run", self.art, "--ids", "1", "-n", "1"], ["bench", self.art, "-p", "2", "-n", "1"],
                    ["eval", "ppl", self.art, "--text", HELDOUT], ["convert", fixture(GQA), "-o", self.path("o")],
                    ["compare", SAMPLE, "--text", HELDOUT, "--schemes", "f32"]]:
            for flag in ["-t", "--threads"]:
                with self.subTest(cmd=cmd[0], flag=flag):
                    error_line(self, sf(*cmd, flag, "-1", check=False), 2, "-t/--threads -1")
        self.assertFalse(os.path.exists(self.path("o")))

    def test_huge_thread_count_is_clamped_with_a_warning(self):
        p = sf("bench", self.art, "-p", 4, "-n", 2, "-t", 100000, "--json")
        threads = __import__("json").loads(p.stdout)["rows"][0]["threads"]
        self.assertLessEqual(threads, 256)
        self.assertLessEqual(threads, 4 * os.cpu_count())
        lines = p.stderr.splitlines()
        self.assertEqual(len(lines), 1, p.stderr)
        self.assertTrue(lines[0].startswith("shardforge: warning: -t/--threads 100000"), p.stderr)
        self.assertIn(f"using {threads}", lines[0])


class ContextLength(WithSample):
    def test_run_bench_and_eval_refuse_more_than_the_model_context(self):
        cases = [["run", self.art, "-p", "hi", "-n", 100000],
                 ["bench", self.art, "-p", 100000],
                 ["bench", self.art, "-p", 200, "-n", 300],  # tg300: a short prompt + 300 positions
                 ["eval", "ppl", self.art, "--text", HELDOUT, "--ctx", 1024],
                 ["eval", "kld", self.art, "--ref", self.art, "--text", HELDOUT, "--ctx", 1024]]
        for cmd in cases:
            with self.subTest(cmd=cmd):
                p = sf(*cmd, check=False, timeout=60)  # refused up front, not after minutes of decoding
                error_line(self, p, 2, self.art, "context length of 256", "--allow-long-context")

    def test_compare_refuses_a_window_longer_than_the_model_before_converting(self):
        tmp = self.path("tmp")
        os.makedirs(tmp)
        p = sf("compare", SAMPLE, "--text", HELDOUT, "--schemes", "f32,int8", "--ctx", 512, check=False, timeout=60,
               env={**os.environ, "TMPDIR": tmp})
        error_line(self, p, 2, SAMPLE, "context length of 256", "--allow-long-context")
        self.assertEqual(os.listdir(tmp), [], "compare converted before refusing")

    def test_allow_long_context_proceeds_with_a_warning(self):
        p = sf("run", self.art, "--ids", "1", "-n", 300, "--ignore-eos", "--allow-long-context", "--json", timeout=120)
        self.assertEqual(len(__import__("json").loads(p.stdout)["ids"]), 300)
        self.assertTrue(p.stderr.startswith("shardforge: warning: "), p.stderr)
        self.assertIn("context length of 256", p.stderr)

    def test_within_the_context_is_accepted(self):
        # The last generated token is never run: 1 + 256 tokens take 256 positions.
        r = sf_json("run", self.art, "--ids", "1", "-n", 256, "--ignore-eos")
        self.assertEqual(len(r["ids"]), 256)
        p = sf("run", self.art, "--ids", "1", "-n", 257, "--ignore-eos", check=False)
        error_line(self, p, 2, self.art, "257 positions", "context length of 256")

    def test_learned_positions_cannot_run_past_their_table(self):
        # GPT-2's position table has n_positions rows: no flag runs past it, and none is suggested.
        art = self.path("gpt2")
        sf("convert", fixture("gpt2_hub"), "-o", art)
        rows = read_json(os.path.join(art, "manifest.json"))["model"]["max_seq"]
        ids = ",".join(str(1 + i % 250) for i in range(rows - 8))
        self.assertEqual(len(sf_json("run", art, "--ids", ids, "-n", 9)["ids"]), 9)
        for extra in [[], ["--allow-long-context"]]:
            p = sf("run", art, "--ids", ids, "-n", 10, *extra, check=False)
            error_line(self, p, 2, art, f"context length of {rows}", "learned position table")
            self.assertNotIn("--allow-long-context runs past it", p.stderr)

    def test_eval_default_window_fits_the_model(self):
        r = sf_json("eval", "ppl", self.art, "--text", HELDOUT, "--chunks", 1)
        self.assertEqual(r["ctx"], 256)

    def test_out_of_memory_names_the_artifact(self):
        if os.environ.get("SF_SANITIZED"):
            self.skipTest("AddressSanitizer cannot run under an address-space limit")
        # 10^6 positions need ~2 GiB of KV cache; with 1 GiB of address space the allocation fails.
        def limit():
            resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))
        p = sf("run", self.art, "--ids", "1", "-n", 1000000, "-t", 1, "--allow-long-context", check=False,
               preexec_fn=limit, timeout=60)
        self.assertEqual(p.returncode, 1, p.stderr)
        self.assertEqual(p.stderr.splitlines()[-1], f"shardforge: error: {self.art}: out of memory")


class KldReadsTextAlike(WithSample):
    def test_a_model_without_a_tokenizer_is_refused_on_either_side(self):
        bare = self.path("bare")
        sf("convert", SAMPLE, "-o", bare)
        m = read_json(os.path.join(bare, "manifest.json"))
        self.assertIsNotNone(m["tokenizer"])
        # The same weights without their tokenizer (--tokenizer cannot remove one: rebuild the source).
        src = self.path("src")
        shutil.copytree(SAMPLE, src)
        for f in os.listdir(src):
            if f.endswith(".model"):
                os.remove(os.path.join(src, f))
        notok = self.path("notok")
        sf("convert", src, "-o", notok)
        for a, b in [(notok, self.art), (self.art, notok)]:
            with self.subTest(model=a):
                p = sf("eval", "kld", a, "--ref", b, "--text", HELDOUT, "--chunks", 1, check=False)
                self.assertEqual(p.returncode, 1, p.stderr)
                self.assertEqual(len(p.stderr.splitlines()), 1, p.stderr)
                self.assertIn("no tokenizer", p.stderr)


class NonFiniteWeights(TempDirTest):
    def test_nan_is_refused_naming_tensor_row_and_column(self):
        src = checkpoint_with(self.path("nan"), "model.layers.0.mlp.up_proj.weight", 3, 5, float("nan"))
        out = self.path("out")
        error_line(self, sf("convert", src, "-o", out, check=False), 1, src, "blocks.0.ffn.up.weight", "nan",
                   "row 3, column 5", "--allow-non-finite")
        self.assertFalse(os.path.exists(out))
        sf("convert", src, "-o", out, "--allow-non-finite")
        params = read_json(os.path.join(out, "manifest.json"))["pipeline"]["stages"][1]["params"]
        self.assertIs(params["allow_non_finite"], True)

    def test_infinity_is_refused(self):
        src = checkpoint_with(self.path("inf"), "model.embed_tokens.weight", 7, 1, float("-inf"))
        error_line(self, sf("convert", src, "-o", self.path("o"), "--quant", "bf16", check=False), 1,
                   "embed.weight", "-inf", "row 7, column 1")

    def test_value_the_type_cannot_hold_is_refused(self):
        src = checkpoint_with(self.path("big"), "model.layers.1.mlp.down_proj.weight", 2, 7, 1e6)
        for scheme in ["f16", "int4", "int4:g64:asym"]:
            with self.subTest(scheme=scheme):
                out = self.path("o-" + scheme)
                error_line(self, sf("convert", src, "-o", out, "--quant", scheme, check=False), 1,
                           "blocks.1.ffn.down.weight", "1e+06", "row 2, column 7", "bf16")
                self.assertFalse(os.path.exists(out))
        for scheme in ["bf16", "int8", "f32"]:  # these hold 1e6
            with self.subTest(scheme=scheme):
                sf("convert", src, "-o", self.path("ok-" + scheme), "--quant", scheme)
        # The suggested override works.
        sf("convert", src, "-o", self.path("fixed"), "--quant", "f16", "--tensor-quant", "blocks.1.ffn.down.weight=bf16")


class OptionsThatWouldDoNothing(TempDirTest):
    def convert(self, *args, out="o"):
        return sf("convert", fixture(GQA), "-o", self.path(out), *args, check=False)

    def test_tensor_quant_matching_nothing(self):
        error_line(self, self.convert("--tensor-quant", "blocks.*.ffn.up.weight=int8", "--tensor-quant",
                                      "blocks.*.mlp.up_proj.weight=int8"), 2, "blocks.*.mlp.up_proj.weight=int8",
                   "matches no tensor")
        self.assertFalse(os.path.exists(self.path("o")))
        sf("convert", fixture(GQA), "-o", self.path("ok"), "--tensor-quant", "blocks.*.ffn.up.weight=int8")

    def test_scheme_options_beside_pipeline(self):
        spec = self.path("p.json")
        write_json(spec, {"stages": [{"name": "load"}, {"name": "quantize"}, {"name": "write"}]})
        for extra in [["--quant", "int8"], ["--dtype", "f16"], ["--tensor-quant", "embed.weight=f16"],
                      ["--allow-non-finite"]]:
            with self.subTest(extra=extra):
                error_line(self, self.convert("--pipeline", spec, *extra), 2, extra[0], "--pipeline")

    def test_unknown_pipeline_parameters(self):
        spec = self.path("p.json")
        cases = [({"name": "quantize", "params": {"shceme": "int8"}}, "unknown parameter 'shceme'"),
                 ({"name": "quantize", "param": {"scheme": "int8"}}, "unknown key 'param'"),
                 ({"name": "quantize", "params": {"scheme": 8}}, "'scheme' must be"),
                 ({"name": "quantize", "params": {"allow_non_finite": "yes"}}, "'allow_non_finite' must be"),
                 ({"name": "quantize", "params": {"overrides": ["nothing.matches=int8"]}}, "matches no tensor")]
        for stage, needle in cases:
            with self.subTest(needle=needle):
                write_json(spec, {"stages": [{"name": "load"}, stage, {"name": "write"}]})
                error_line(self, self.convert("--pipeline", spec), 2, spec, needle)
        write_json(spec, {"stages": [{"name": "load", "params": {"scheme": "int8"}}, {"name": "quantize"},
                                     {"name": "write"}]})
        error_line(self, self.convert("--pipeline", spec), 2, "stage 'load': unknown parameter 'scheme'")

    def test_pipelines_that_cannot_run_are_refused_when_read(self):
        spec = self.path("p.json")
        load, quant, write = {"name": "load"}, {"name": "quantize"}, {"name": "write"}
        for stages, needle in [([load, write], "exactly one 'quantize'"),
                               ([load, quant, quant, write], "exactly one 'quantize'"),
                               ([load, quant, write, write], "exactly one 'write'"),
                               ([quant, load, write], "order load, quantize, write")]:
            with self.subTest(needle=needle):
                write_json(spec, {"stages": stages})
                error_line(self, self.convert("--pipeline", spec), 2, spec, needle)

    def test_unknown_architecture_or_format_is_a_usage_error(self):
        error_line(self, self.convert("--arch", "bogus"), 2, "--arch", "bogus")
        # gguf, hdf5 and onnx are formats now (test_gguf.py, test_hdf5.py, test_onnx_writer.py).
        error_line(self, self.convert("--format", "parquet"), 2, "--format", "parquet", "shards, gguf, hdf5, onnx, zip")

    def test_bad_schemes_are_usage_errors(self):
        for scheme, needle in [("int4:sym:asym", "sym or asym once"), ("int4:asym:asym", "sym or asym once"),
                               ("int4:g32:g64", "one group size"), ("int4:g32:g32", "one group size"),
                               ("int4:", "empty option"), ("int4:g3", "even"), ("int8:g32", "takes no options"),
                               ("int3", "unknown quantization scheme 'int3'"), ("", "--quant: needs a value, got an empty one")]:
            with self.subTest(scheme=scheme):
                error_line(self, self.convert("--quant", scheme), 2, needle)
        error_line(self, self.convert("--tensor-quant", "embed.weight="), 2, "PATTERN=SCHEME")
        error_line(self, self.convert("--tensor-quant", "embed.weight=int4:sym:asym"), 2, "sym or asym once")
        self.assertFalse(os.path.exists(self.path("o")))

    def test_run_prompt_ids_and_temperature(self):
        art = self.path("art")
        sf("convert", fixture(GQA), "-o", art)
        for ids in ["", "1,,2", "1,", "one", "1 2"]:
            with self.subTest(ids=ids):
                error_line(self, sf("run", art, "--ids", ids, "-n", 1, check=False), 2, "--ids")
        error_line(self, sf("run", art, "--ids", "1,300", "-n", 1, check=False), 2, "token id 300", "0 to 299")
        for temp in ["nan", "inf", "-1", "101"]:
            with self.subTest(temp=temp):
                error_line(self, sf("run", art, "--ids", "1", "--temp", temp, check=False), 2, "--temp",
                           "0 to 100")
        self.assertEqual(len(sf_json("run", art, "--ids", "1,2", "-n", 2)["ids"]), 2)


class SourceWarnings(TempDirTest):
    def test_a_source_without_tokenizer_converts_with_one_warning(self):
        out = self.path("out")
        p = sf("convert", fixture(GQA), "-o", out)
        lines = p.stderr.splitlines()
        self.assertEqual(len(lines), 1, p.stderr)
        self.assertTrue(lines[0].startswith("shardforge: warning: no tokenizer beside the checkpoint"), p.stderr)
        self.assertIsNone(read_json(os.path.join(out, "manifest.json"))["tokenizer"])

    def test_no_warning_when_the_tokenizer_is_beside_the_checkpoint(self):
        p = sf("convert", SAMPLE, "-o", self.path("out"))
        self.assertEqual(p.stderr, "")


class TiedOutput(TempDirTest):
    def edited(self, name, **changes):
        d = self.path(name)
        shutil.copytree(fixture(name), d)
        cfg = read_json(os.path.join(d, "config.json"))
        cfg.update(changes)
        write_json(os.path.join(d, "config.json"), cfg)
        return d

    def test_separate_head_of_a_tied_config_is_named_as_unused(self):
        p = sf("convert", self.edited(GQA, tie_word_embeddings=True), "-o", self.path("out"))
        self.assertIn("lm_head.weight in the checkpoint is not used", p.stderr)
        self.assertTrue(read_json(os.path.join(self.path("out"), "manifest.json"))["model"]["tied_embeddings"])

    def test_untied_config_without_head_is_refused(self):
        import torch
        d = self.edited("hf_tied", tie_word_embeddings=False)
        ckpt = os.path.join(d, "pytorch_model.bin")
        sd = torch.load(ckpt)
        del sd["lm_head.weight"]
        torch.save(sd, ckpt)
        p = sf("convert", d, "-o", self.path("out"), check=False)
        error_line(self, p, 1, "tie_word_embeddings is false", "no lm_head.weight")


class ErrorContract(TempDirTest):
    def test_empty_option_values_are_usage_errors(self):
        # What a script passes when a variable is unset: never "no file" or "the default" in silence.
        for cmd, opt in [(["convert", SAMPLE, "-o", ""], "--out"),
                         (["convert", SAMPLE, "-o", self.path("o"), "--pipeline", ""], "--pipeline"),
                         (["convert", SAMPLE, "-o", self.path("o"), "--tokenizer", ""], "--tokenizer"),
                         (["bench", self.path("a"), "-t", ""], "--threads"),
                         (["eval", "ppl", self.path("a"), "--text", ""], "--text"),
                         (["compare", SAMPLE, "--text", HELDOUT, "--out", ""], "--out")]:
            with self.subTest(cmd=cmd[0], opt=opt):
                error_line(self, sf(*cmd, check=False), 2, opt, "empty")
        self.assertFalse(os.path.exists(self.path("o")))

    def test_same_scheme_twice_in_compare(self):
        p = sf("compare", SAMPLE, "--text", HELDOUT, "--schemes", "f32,int4:g32,int4:g32:sym", check=False)
        error_line(self, p, 2, "int4:g32:sym is the same scheme")

    def test_parse_errors_are_one_line_with_exit_2(self):
        for args, needle in [(["convert", fixture(GQA)], "--out is required"),
                             (["convert", fixture(GQA), "-o", self.path("x"), "--bogus"], "--bogus"),
                             (["run", "x"], "--prompt or --ids"),
                             (["eval"], "eval"),
                             (["bench", "x", "-n", "abc"], "-n"),
                             ([], "")]:
            with self.subTest(args=args):
                error_line(self, sf(*args, check=False), 2, needle)

    def test_range_errors_state_the_real_bound(self):
        for args, bound in [(["run", "x", "--ids", "1", "-n", "2000000"], "0 to 1000000"),
                            (["bench", "x", "-p", "0"], "1 to 1000000"),
                            (["eval", "ppl", "x", "--text", "t", "--chunks", "0"], "1 to"),
                            (["eval", "ppl", "x", "--text", "t", "--ctx", "1"], "2 to 1048576")]:
            with self.subTest(args=args):
                line = error_line(self, sf(*args, check=False), 2, bound)
                self.assertNotIn("1.797", line)

    def test_unknown_command_and_help_command(self):
        error_line(self, sf("frobnicate", check=False), 2, "unknown command 'frobnicate'", "convert")
        for cmd in [["run"], ["convert"], ["eval", "ppl"], ["eval", "kld"], ["compare"]]:
            with self.subTest(cmd=cmd):
                p = sf("help", *cmd)
                self.assertIn("Usage: shardforge " + " ".join(cmd), p.stdout)
                self.assertEqual(p.stdout, sf(*cmd, "--help").stdout)
        self.assertIn("Usage: shardforge", sf("help").stdout)
        error_line(self, sf("help", "frobnicate", check=False), 2, "unknown command 'frobnicate'")
        error_line(self, sf("help", "eval", "frobnicate", check=False), 2, "unknown command 'eval frobnicate'")

    def test_tokenizer_that_is_not_one_gives_our_words(self):
        tok = self.path("tok.model")
        write_bytes(tok, b"\x0a\x05hello not a sentencepiece model\x00\xff")
        line = error_line(self, sf("convert", fixture(GQA), "-o", self.path("o"), "--tokenizer", tok, check=False),
                          1, tok, "not a SentencePiece model")
        for internal in ["sentencepiece_processor", ".cc", "libprotobuf", "INTERNAL", "Status"]:
            self.assertNotIn(internal, line)

    def test_tokenizer_fifo_or_proc_is_refused_without_blocking(self):
        fifo = self.path("tok.fifo")
        os.mkfifo(fifo)
        for tok in [fifo, "/proc/self/status"]:
            with self.subTest(tok=tok):
                p = sf("convert", fixture(GQA), "-o", self.path("o"), "--tokenizer", tok, check=False, timeout=30)
                error_line(self, p, 1, tok, "not a regular file")


if __name__ == "__main__":
    unittest.main()
