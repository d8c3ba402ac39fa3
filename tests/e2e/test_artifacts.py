"""Artifacts: verify, determinism, safe writing, the quantization policy, and the CLI contract."""
import glob
import hashlib
import os
import shutil
import signal
import subprocess
import time
import zipfile

import torch

from sftest import HELDOUT, SAMPLE, SF, TempDirTest, fixture, read_bytes, read_json, reseal, sf, sf_json, write_bytes, write_json, write_meta_checkpoint


def tree_digest(d):
    return {f: hashlib.sha256(read_bytes(os.path.join(d, f))).hexdigest() for f in sorted(os.listdir(d))}


class Verify(TempDirTest):
    def setUp(self):
        super().setUp()
        self.art = self.path("art")
        sf("convert", fixture("hf_gqa"), "-o", self.art, "--quant", "int4:g32")

    def test_clean_artifact_verifies(self):
        r = sf_json("verify", self.art)
        self.assertTrue(r["ok"])
        self.assertEqual(r["problems"], [])

    def test_flipped_byte_is_caught(self):
        shard = os.path.join(self.art, "block_001.shard")
        data = bytearray(read_bytes(shard))
        data[len(data) - 10] ^= 0x01
        write_bytes(shard, bytes(data))
        p = sf("verify", self.art, check=False)
        self.assertEqual(p.returncode, 1)
        self.assertIn("block_001.shard", p.stderr)
        self.assertIn("sha256", p.stderr)

    def test_missing_file_is_caught(self):
        os.remove(os.path.join(self.art, "head.shard"))
        p = sf("verify", self.art, check=False)
        self.assertEqual(p.returncode, 1)
        self.assertIn("head.shard: missing", p.stderr)

    def test_unlisted_file_is_caught(self):
        write_bytes(os.path.join(self.art, "stray.bin"), "x")
        p = sf("verify", self.art, check=False)
        self.assertEqual(p.returncode, 1)
        self.assertIn("stray.bin", p.stderr)

    def test_directory_without_manifest_is_not_an_artifact(self):
        os.remove(os.path.join(self.art, "manifest.json"))
        p = sf("verify", self.art, check=False)
        self.assertEqual(p.returncode, 1)
        self.assertIn("manifest.json is missing", p.stderr)
        p = sf("eval", "ppl", self.art, "--text", __file__, check=False)
        self.assertEqual(p.returncode, 1)

    def edit_manifest(self, fn, seal):
        mpath = os.path.join(self.art, "manifest.json")
        m = read_json(mpath)
        fn(m)
        write_json(mpath, m)
        if seal:
            reseal(self.art)

    def assert_refused(self, *needles):
        for args in [["verify", self.art], ["run", self.art, "--ids", "1,2", "-n", 1], ["inspect", self.art]]:
            p = sf(*args, check=False)
            self.assertEqual(p.returncode, 1, args)
            self.assertEqual(p.stdout, "", args)
            for n in needles:
                self.assertIn(n, p.stderr, args)

    def test_edited_manifest_is_caught_by_its_own_hash(self):
        self.edit_manifest(lambda m: m["summary"].update(bits_per_weight=1.0), seal=False)
        self.assert_refused("manifest_sha256 differs")
        os.remove(os.path.join(self.art, "manifest.json"))
        sf("convert", fixture("hf_gqa"), "-o", self.path("b"))
        m = read_json(os.path.join(self.path("b"), "manifest.json"))
        del m["manifest_sha256"]
        write_json(os.path.join(self.art, "manifest.json"), m)
        self.assert_refused("no manifest_sha256")

    def test_manifest_paths_stay_inside_the_artifact(self):
        # Even with a correct manifest_sha256, a name that leaves the directory is refused before
        # any file is opened.
        escapes = [("tokenizer.files[].name", lambda m, v: m.__setitem__(
                        "tokenizer", {"kind": "sentencepiece", "files": [{"name": v, "sha256": "0"}]})),
                   ("units.embedding.file", lambda m, v: m["units"]["embedding"].__setitem__("file", v)),
                   ("units.head", lambda m, v: m["units"].__setitem__("head", v)),
                   ("units.positions", lambda m, v: m["units"].__setitem__("positions", v)),
                   ("units.blocks[]", lambda m, v: m["units"]["blocks"].__setitem__(0, v)),
                   ("files[].path", lambda m, v: m["files"][0].__setitem__("path", v))]
        original = read_bytes(os.path.join(self.art, "manifest.json"))
        for field, set_it in escapes:
            for bad in ["../../etc/passwd", "/etc/passwd", "", "..", "manifest.json", "a\u0000b".encode().decode("unicode_escape")]:
                write_bytes(os.path.join(self.art, "manifest.json"), original)
                self.edit_manifest(lambda m: set_it(m, bad), seal=True)
                self.assert_refused(field, "plain names inside the artifact")

    def test_settings_the_executor_does_not_implement_are_refused(self):
        # A manifest is never run with a forward pass it was not made for: every setting is a closed
        # set, and settings that contradict each other or the tensors are refused too.
        original = read_bytes(os.path.join(self.art, "manifest.json"))
        cases = [
            (lambda m: m["model"].update(norm="group"), ["norm 'group'", "rms, layer"]),
            (lambda m: m["model"].update(positional="alibi"), ["positional 'alibi'", "rope, rope_2d, learned"]),
            (lambda m: m["model"].update(ffn="relu"), ["ffn 'relu'"]),
            (lambda m: m["model"].update(mask="sliding_window"), ["mask 'sliding_window'"]),
            (lambda m: m["model"].update(residual="post_norm"), ["residual 'post_norm'"]),
            (lambda m: m["model"].update(norm_bias=True), ["RMSNorm takes no bias"]),
            (lambda m: m["model"].pop("biases"), ["'biases'"]),
            (lambda m: m["model"].update(rope_layout="half"), ["rope_layout"]),
            (lambda m: m["model"].update(positional="learned", rope_dims=0), ["embed.pos.weight"]),
        ]
        for edit, needles in cases:
            with self.subTest(needles=needles):
                write_bytes(os.path.join(self.art, "manifest.json"), original)
                self.edit_manifest(edit, seal=True)
                self.assert_refused(*needles)

    def test_learned_position_table_is_listed_exactly_for_learned_positions(self):
        # hf_gqa has RoPE: a positions shard named in its manifest is refused.
        self.edit_manifest(lambda m: m["units"].__setitem__("positions", "head.shard"), seal=True)
        self.assert_refused("units.positions is listed but the model has no learned positions")
        # GPT-2's table is positions.shard; without it the artifact lacks embed.pos.weight.
        shutil.rmtree(self.art)
        sf("convert", fixture("gpt2_hub"), "-o", self.art, "--quant", "int8")
        self.assertTrue(sf_json("verify", self.art)["ok"])
        self.assertEqual(read_json(os.path.join(self.art, "manifest.json"))["units"]["positions"], "positions.shard")
        self.edit_manifest(lambda m: m["units"].pop("positions"), seal=True)
        self.assert_refused("embed.pos.weight")

    def test_settings_contradicting_the_tensors_are_refused(self):
        # Settings naming tensors the shards lack, or shards holding tensors the settings leave out:
        # refused by every command that opens the artifact, never run with weights ignored.
        gpt2 = self.path("gpt2")
        sf("convert", fixture("gpt2_hub"), "-o", gpt2)
        original = read_bytes(os.path.join(gpt2, "manifest.json"))
        cases = [
            (gpt2, lambda m: m["model"]["biases"].update(qkv=False), ["holds tensor blocks.0.attn.q.bias"]),
            (gpt2, lambda m: m["model"].update(norm="rms", norm_bias=False), ["holds tensor blocks.0.attn_norm.bias"]),
            (gpt2, lambda m: m["model"].update(norm_bias=False), ["holds tensor blocks.0.attn_norm.bias"]),
            (gpt2, lambda m: m["model"]["biases"].update(ffn=False), ["holds tensor blocks.0.ffn.up.bias"]),
        ]
        for art, edit, needles in cases:
            with self.subTest(needles=needles):
                write_bytes(os.path.join(art, "manifest.json"), original)
                m = read_json(os.path.join(art, "manifest.json"))
                edit(m)
                write_json(os.path.join(art, "manifest.json"), m)
                reseal(art)
                for args in [["verify", art], ["run", art, "--ids", "1,2", "-n", 1]]:
                    p = sf(*args, check=False)
                    self.assertEqual(p.returncode, 1, args)
                    for n in needles:
                        self.assertIn(n, p.stderr, args)
        # The other way round: settings naming tensors the shards do not hold.
        self.edit_manifest(lambda m: m["model"].update(norm="layer", norm_bias=True), seal=True)
        self.assert_refused("lacks tensor blocks.0.attn_norm.bias")

    def test_version_1_artifact_is_refused_with_advice(self):
        self.edit_manifest(lambda m: m.update(format_version=1), seal=True)
        self.assert_refused("format version 1 is not supported", "convert the source again")


class HostileArtifacts(TempDirTest):
    """Artifacts and configs edited to attack the readers: refused in one line, in bounded time."""

    def setUp(self):
        super().setUp()
        self.art = self.path("art")
        sf("convert", fixture("hf_gqa"), "-o", self.art)

    def refused(self, cmd, *needles):
        p = sf(*cmd, check=False, timeout=60)
        self.assertEqual(p.returncode, 1, p.stderr)
        lines = p.stderr.splitlines()
        self.assertEqual(len(lines), 1 if cmd[0] != "verify" else len(lines), p.stderr)
        self.assertTrue(lines and all(l.startswith("shardforge: ") for l in lines), p.stderr)
        for n in needles:
            self.assertIn(n, p.stderr)

    def test_deeply_nested_manifest_is_refused_everywhere(self):
        mpath = os.path.join(self.art, "manifest.json")
        text = read_bytes(mpath).decode()
        start = text.index('"pipeline"')
        end = text.index('"source"')  # keys are sorted: pipeline is followed by source
        deep = '"pipeline": ' + "[" * 100_000 + "]" * 100_000 + ",\n  "
        write_bytes(mpath, text[:start] + deep + text[end:])
        for cmd in (["inspect", self.art], ["verify", self.art], ["run", self.art, "--ids", "1", "-n", "1"]):
            with self.subTest(cmd=cmd[0]):
                self.refused(cmd, "manifest.json", "nested deeper than")

    def test_shard_replaced_by_a_fifo_is_refused_without_blocking(self):
        shard = os.path.join(self.art, "block_000.shard")
        os.remove(shard)
        os.mkfifo(shard)
        for cmd in (["verify", self.art], ["run", self.art, "--ids", "1", "-n", "1"], ["inspect", self.art]):
            with self.subTest(cmd=cmd[0]):
                self.refused(cmd, "block_000.shard", "FIFO")

    def test_artifact_truncated_while_running_is_one_error_line(self):
        art = self.path("sample")
        sf("convert", SAMPLE, "-o", art)
        proc = subprocess.Popen([SF, "eval", "ppl", art, "--text", HELDOUT, "--ctx", "128", "-t", "1"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(0.5)
        if proc.poll() is not None:
            self.skipTest("evaluation finished before the file could be truncated under it")
        proc.send_signal(signal.SIGSTOP)  # the truncation lands mid-run, whatever the machine's speed
        for name in ("block_001.shard", "block_002.shard", "block_003.shard", "head.shard"):
            os.truncate(os.path.join(art, name), 64)
        proc.send_signal(signal.SIGCONT)
        _, err = proc.communicate(timeout=120)
        self.assertEqual(proc.returncode, 1, err)  # not 135 (SIGBUS)
        self.assertEqual(len(err.strip().splitlines()), 1, err)
        self.assertRegex(err.strip(), r"^shardforge: error: .*\.shard: file was truncated or replaced")

    def test_tokenizer_larger_than_the_vocabulary_is_refused(self):
        # hf_gqa has 300 embeddings; the sample's tokenizer has 512 pieces. Resealed, so only the
        # mismatch itself can stop it (ids past 300 would index past the logits).
        write_bytes(os.path.join(self.art, "tokenizer.model"), read_bytes(os.path.join(SAMPLE, "tokenizer.model")))
        m = read_json(os.path.join(self.art, "manifest.json"))
        m["tokenizer"] = {"kind": "sentencepiece", "files": [{"name": "tokenizer.model", "sha256": ""}]}
        m["files"].append({"path": "tokenizer.model"})
        write_json(os.path.join(self.art, "manifest.json"), m)
        reseal(self.art)
        for cmd in (["verify", self.art], ["run", self.art, "-p", "hello", "-n", "1"],
                    ["eval", "ppl", self.art, "--text", HELDOUT, "--ctx", "64"],
                    ["eval", "kld", self.art, "--ref", self.art, "--text", HELDOUT, "--ctx", "64"]):
            with self.subTest(cmd=cmd[1]):
                self.refused(cmd, "512 pieces but the model only 300")

    def test_embedding_row_bytes_must_match_its_type(self):
        m = read_json(os.path.join(self.art, "manifest.json"))
        m["units"]["embedding"]["row_bytes"] = 1
        write_json(os.path.join(self.art, "manifest.json"), m)
        reseal(self.art)
        for cmd in (["verify", self.art], ["run", self.art, "--ids", "1", "-n", "1"]):
            with self.subTest(cmd=cmd[0]):
                self.refused(cmd, "row_bytes")

    def test_deeply_nested_config_is_refused(self):
        src = self.path("src")
        shutil.copytree(fixture("hf_gqa"), src)
        write_bytes(os.path.join(src, "config.json"), '{"a": ' + "[" * 100_000 + "]" * 100_000 + "}")
        p = sf("convert", src, "-o", self.path("out"), check=False, timeout=60)
        self.assertEqual(p.returncode, 1, p.stderr)
        self.assertEqual(len(p.stderr.splitlines()), 1, p.stderr)
        self.assertIn("config.json", p.stderr)
        self.assertIn("nested deeper than", p.stderr)
        self.assertFalse(os.path.exists(self.path("out")))


class Determinism(TempDirTest):
    def test_same_bytes_whatever_the_thread_count(self):
        for scheme in ["int4:g64:asym", "bf16"]:
            a, b = self.path("a" + scheme), self.path("b" + scheme)
            sf("convert", fixture("meta_params"), "-o", a, "--quant", scheme, "--threads", 1)
            sf("convert", fixture("meta_params"), "-o", b, "--quant", scheme, "--threads", 2)
            self.assertEqual(tree_digest(a), tree_digest(b))


class SourceVariants(TempDirTest):
    """The same weights stored differently must give the same artifact, byte for byte."""

    def baseline(self):
        out = self.path("base")
        sf("convert", fixture("hf_gqa"), "-o", out, "--quant", "int8")
        return tree_digest(out)

    def variant_dir(self, name):
        d = self.path(name)
        os.makedirs(d)
        shutil.copy(os.path.join(fixture("hf_gqa"), "config.json"), d)
        return d

    def test_compressed_zip_entries_read_through_libzip(self):
        base = self.baseline()
        d = self.variant_dir("deflated")
        with zipfile.ZipFile(os.path.join(fixture("hf_gqa"), "pytorch_model.bin")) as zin, \
                zipfile.ZipFile(os.path.join(d, "pytorch_model.bin"), "w", zipfile.ZIP_DEFLATED) as zout:
            for item in zin.infolist():
                zout.writestr(item.filename, zin.read(item.filename))
        with zipfile.ZipFile(os.path.join(d, "pytorch_model.bin")) as z:
            self.assertTrue(any(i.compress_type == zipfile.ZIP_DEFLATED and "/data/" in i.filename for i in z.infolist()))
        out = self.path("out_deflated")
        sf("convert", d, "-o", out, "--quant", "int8")
        got = tree_digest(out)
        self.assertEqual({k: v for k, v in got.items() if k != "manifest.json"},
                         {k: v for k, v in base.items() if k != "manifest.json"})

    def test_every_pickle_protocol(self):
        base = self.baseline()
        sd = torch.load(os.path.join(fixture("hf_gqa"), "pytorch_model.bin"))
        for proto in [3, 4, 5]:
            with self.subTest(protocol=proto):
                d = self.variant_dir(f"p{proto}")
                torch.save(sd, os.path.join(d, "pytorch_model.bin"), pickle_protocol=proto)
                out = self.path(f"out_p{proto}")
                sf("convert", d, "-o", out, "--quant", "int8")
                got = tree_digest(out)
                self.assertEqual({k: v for k, v in got.items() if k != "manifest.json"},
                                 {k: v for k, v in base.items() if k != "manifest.json"})


class Writing(TempDirTest):
    def test_existing_output_needs_force(self):
        out = self.path("art")
        sf("convert", fixture("hf_gqa"), "-o", out)
        before = tree_digest(out)
        p = sf("convert", fixture("hf_gqa"), "-o", out, "--quant", "int8", check=False)
        self.assertEqual(p.returncode, 1)
        self.assertIn("already exists", p.stderr)
        self.assertEqual(tree_digest(out), before)
        sf("convert", fixture("hf_gqa"), "-o", out, "--quant", "int8", "--force")
        self.assertEqual(read_json(os.path.join(out, "manifest.json"))["pipeline"]["stages"][1]["params"]["scheme"], "int8")

    def test_progress_bar_only_on_a_terminal(self):
        out = self.path("tty")
        # `script` gives the command a pseudo-terminal, as an interactive user has.
        p = subprocess.run(["script", "-qec", f"{SF} convert {fixture('hf_gqa')} -o {out}", "/dev/null"],
                           capture_output=True, text=True)
        self.assertEqual(p.returncode, 0, p.stdout)
        self.assertIn("convert [", p.stdout)
        self.assertIn("head", p.stdout)
        p = sf("convert", SAMPLE, "-o", self.path("notty"))  # a source with nothing to warn about
        self.assertNotIn("convert [", p.stderr)
        self.assertEqual(p.stderr, "")

    def test_conversion_killed_midway_leaves_no_manifest(self):
        # A checkpoint big enough that conversion takes a while: 16 blocks of d_model 512.
        src = write_meta_checkpoint(self.path("big"), d=512, ffn=1536, layers=16, vocab=2048)
        out = self.path("out")
        proc = subprocess.Popen([SF, "convert", src, "-o", out, "--quant", "int4:g32:asym", "--threads", "1"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 120
        while time.time() < deadline and not glob.glob(out + ".partial-*/block_001.shard") and proc.poll() is None:
            time.sleep(0.005)
        self.assertIsNone(proc.poll(), "conversion finished before it could be killed")
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        self.assertFalse(os.path.exists(out))
        leftovers = glob.glob(out + "*")
        self.assertTrue(leftovers, "expected the partial directory of the killed run")
        for d in leftovers:
            self.assertFalse(os.path.exists(os.path.join(d, "manifest.json")), f"{d} looks complete")
        for d in leftovers:
            shutil.rmtree(d)
        # SIGTERM (or Ctrl-C) is caught between units: exit 1, and the partial directory is removed.
        proc = subprocess.Popen([SF, "convert", src, "-o", out, "--quant", "int4:g32:asym", "--threads", "1"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        deadline = time.time() + 120
        while time.time() < deadline and not glob.glob(out + ".partial-*/block_001.shard") and proc.poll() is None:
            time.sleep(0.005)
        self.assertIsNone(proc.poll(), "conversion finished before it could be interrupted")
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate()
        self.assertEqual(proc.returncode, 1)
        self.assertIn("interrupted", err)
        self.assertEqual(glob.glob(out + "*"), [])
        # A full run afterwards completes.
        sf("convert", src, "-o", out, "--quant", "int8")
        self.assertTrue(sf_json("verify", out)["ok"])


class Policy(TempDirTest):
    def types(self, out):
        return {t["name"]: (t["type"], t.get("group")) for t in sf_json("inspect", out)["tensors"]}

    def test_defaults(self):
        out = self.path("q4")
        sf("convert", fixture("hf_gqa"), "-o", out, "--quant", "int4:g64")
        t = self.types(out)
        self.assertEqual(t["blocks.0.attn_norm.weight"], ("f32", None))
        self.assertEqual(t["head.norm.weight"], ("f32", None))
        self.assertEqual(t["embed.weight"], ("int8", None))
        self.assertEqual(t["head.output.weight"], ("int8", None))
        self.assertEqual(t["blocks.1.ffn.down.weight"], ("int4_sym", 64))
        out = self.path("bf")
        sf("convert", fixture("hf_gqa"), "-o", out, "--dtype", "bf16")
        t = self.types(out)
        self.assertEqual(t["embed.weight"], ("bf16", None))
        self.assertEqual(t["blocks.0.ffn_norm.weight"], ("f32", None))

    def test_overrides_by_pattern(self):
        out = self.path("ov")
        sf("convert", fixture("hf_gqa"), "-o", out, "--quant", "int4", "--tensor-quant", "blocks.*.ffn.down.weight=int8",
           "--tensor-quant", "embed.weight=f16", "--tensor-quant", "blocks.1.ffn.down.weight=int4:g128:asym")
        t = self.types(out)
        self.assertEqual(t["blocks.0.ffn.down.weight"], ("int8", None))
        self.assertEqual(t["blocks.1.ffn.down.weight"], ("int4_asym", 128))  # the last match wins
        self.assertEqual(t["embed.weight"], ("f16", None))
        self.assertEqual(t["blocks.0.ffn.up.weight"], ("int4_sym", 32))

    def test_group_larger_than_row_and_ragged_rows(self):
        # ffn_dim 100: rows of ffn.down are 100 wide, so g32 leaves a 4-wide last group; g128 > row.
        for scheme in ["int4:g32", "int4:g128:asym"]:
            out = self.path(scheme.replace(":", "_"))
            sf("convert", fixture("hf_gqa"), "-o", out, "--quant", scheme)
            self.assertTrue(sf_json("verify", out)["ok"])
            ref = read_json(os.path.join(fixture("hf_gqa"), "ref.json"))
            r = sf_json("run", out, "--ids", ",".join(map(str, ref["prompt_ids"])), "-n", 4)
            self.assertEqual(len(r["ids"]), 4)

    def test_pipeline_file(self):
        spec = self.path("p.json")
        write_json(spec, {"stages": [{"name": "load"}, {"name": "quantize", "params": {"scheme": "int8"}},
                                     {"name": "write"}]})
        out = self.path("pf")
        sf("convert", fixture("hf_gqa"), "-o", out, "--pipeline", spec)
        stages = read_json(os.path.join(out, "manifest.json"))["pipeline"]["stages"]
        self.assertEqual([s["name"] for s in stages], ["load", "quantize", "write"])
        self.assertEqual(self.types(out)["blocks.0.attn.q.weight"], ("int8", None))
        write_json(spec, {"stages": [{"name": "load"}, {"name": "shuffle"}, {"name": "write"}]})
        p = sf("convert", fixture("hf_gqa"), "-o", self.path("bad"), "--pipeline", spec, check=False)
        self.assertEqual(p.returncode, 2)  # a pipeline file is part of the command line: usage error
        self.assertIn("unknown pipeline stage 'shuffle'", p.stderr)


class Cli(TempDirTest):
    def test_help_and_usage_errors(self):
        for cmd in [[], ["inspect"], ["convert"], ["verify"], ["run"], ["eval", "ppl"], ["eval", "kld"], ["bench"],
                    ["compare"]]:
            with self.subTest(cmd=cmd):
                p = sf(*cmd, "--help", check=False)
                self.assertEqual(p.returncode, 0)
                self.assertIn("Usage", p.stdout)
        self.assertEqual(sf(check=False).returncode, 2)
        self.assertEqual(sf("convert", fixture("hf_gqa"), check=False).returncode, 2)  # no -o
        self.assertEqual(sf("convert", fixture("hf_gqa"), "-o", self.path("x"), "--bogus", check=False).returncode, 2)
        self.assertEqual(sf("convert", fixture("hf_gqa"), "-o", self.path("x"), "--dtype", "int8", check=False).returncode, 2)
        p = sf("convert", fixture("hf_gqa"), "-o", self.path("x"), "--quant", "int3", check=False)
        self.assertEqual(p.returncode, 2)
        self.assertIn("unknown quantization scheme 'int3'", p.stderr)
        self.assertFalse(os.path.exists(self.path("x")))

    def test_manifest_records_how_it_was_made(self):
        out = self.path("m")
        sf("convert", fixture("hf_gqa"), "-o", out, "--quant", "int4:g32:asym", "--tensor-quant", "embed.weight=bf16")
        m = read_json(os.path.join(out, "manifest.json"))
        self.assertEqual(m["format"], "shardforge")
        self.assertEqual(m["source"]["architecture"], "llama/hf")
        src_sha = hashlib.sha256(read_bytes(os.path.join(fixture("hf_gqa"), "pytorch_model.bin"))).hexdigest()
        self.assertEqual(m["source"]["files"][0]["sha256"], src_sha)
        q = m["pipeline"]["stages"][1]
        self.assertEqual(q["params"], {"scheme": "int4:g32:asym", "overrides": ["embed.weight=bf16"]})
        listed = {f["path"]: f for f in m["files"]}
        self.assertEqual(set(listed) | {"manifest.json"}, set(os.listdir(out)))
        for name, f in listed.items():
            data = read_bytes(os.path.join(out, name))
            self.assertEqual(f["bytes"], len(data))
            self.assertEqual(f["sha256"], hashlib.sha256(data).hexdigest())

    def test_bench_reports_speed_and_memory(self):
        out = self.path("b")
        sf("convert", fixture("hf_gqa"), "-o", out, "--quant", "int8")
        r = sf_json("bench", out, "-p", 16, "-n", 8, "-t", 1)
        for k in ["load_seconds", "peak_rss_bytes"]:
            self.assertGreater(r[k], 0, k)
        self.assertEqual([(x["test"], x["n_prompt"], x["n_gen"]) for x in r["rows"]], [("pp16", 16, 0), ("tg8", 16, 8)])
        for x in r["rows"]:
            self.assertGreater(x["tokens_per_s"]["median"], 0, x)


if __name__ == "__main__":
    import unittest
    unittest.main()
