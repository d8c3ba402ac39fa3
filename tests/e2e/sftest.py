"""Helpers shared by the end-to-end tests: where the binary, fixtures and shared data are."""
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import unittest
import warnings

import numpy as np

warnings.simplefilter("ignore", ResourceWarning)

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
SF = os.environ.get("SHARDFORGE", os.path.join(ROOT, "build", "shardforge"))
FIXTURES = os.environ.get("SF_FIXTURES", os.path.join(ROOT, "build", "fixtures"))
SHARED = os.environ.get("SF_SHARED", os.path.join(ROOT, "..", "shared"))
STORIES = os.path.join(SHARED, "models", "stories260K")
CORPUS = os.path.join(SHARED, "corpus")
SAMPLE = os.path.join(ROOT, "samples", "jargon-llama")
HELDOUT = os.path.join(ROOT, "samples", "heldout.txt")


# The sanitized build (scripts/test.sh's build-san): the same suites, where a conversion is several times slower.
SANITIZED = bool(os.environ.get("SF_SANITIZED"))

# Checks of numbers (perplexity orderings, bytes across thread counts, bit budgets) that run many
# calibrated conversions: minutes each under the sanitizers, for code paths the other tests of the
# same suite already take through the sanitized binary. They run in the release build only.
release_only = unittest.skipIf(SANITIZED,
                               "numeric check, run in the release build only (many conversions: minutes under ASan)")


def sf(*args, check=True, **kw):
    """Runs shardforge; returns the CompletedProcess. check=True asserts exit code 0."""
    p = subprocess.run([SF, *map(str, args)], capture_output=True, text=True, **kw)
    if check and p.returncode != 0:
        raise AssertionError(f"shardforge {' '.join(map(str, args))} exited {p.returncode}:\n{p.stderr}")
    return p


def error_line(test, p, code, *needles):
    """Asserts exit `code` and a stderr of exactly one line `shardforge: error: ...` holding every needle."""
    test.assertEqual(p.returncode, code, p.stderr)
    lines = p.stderr.splitlines()
    test.assertEqual(len(lines), 1, p.stderr)
    test.assertTrue(lines[0].startswith("shardforge: error: "), p.stderr)
    for n in needles:
        test.assertIn(n, lines[0])
    return lines[0]


def read_bytes(path):
    with open(path, "rb") as f:
        return f.read()


def write_bytes(path, data):
    with open(path, "wb") as f:
        f.write(data.encode() if isinstance(data, str) else data)


def write_json(path, obj):
    with open(path, "w") as f:
        json.dump(obj, f)


def read_json(path):
    with open(path) as f:
        return json.load(f)


def sf_json(*args):
    return json.loads(sf(*args, "--json").stdout)


class TempDirTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="sf-test-")

    def tearDown(self):
        shutil.rmtree(self.tmp, ignore_errors=True)

    def path(self, *parts):
        return os.path.join(self.tmp, *parts)


def write_meta_checkpoint(src, d, ffn, layers, vocab, seed=0):
    """A random Meta-layout LLaMA (consolidated.00.pth + params.json) in directory `src`, large
    enough that converting it takes a while: tests use it to act on a conversion midway."""
    import torch
    os.makedirs(src, exist_ok=True)
    torch.manual_seed(seed)
    sd = {"tok_embeddings.weight": torch.randn(vocab, d), "norm.weight": torch.ones(d),
          "output.weight": torch.randn(vocab, d)}
    for i in range(layers):
        p = f"layers.{i}."
        for n, shape in [("attention.wq.weight", (d, d)), ("attention.wk.weight", (d, d)),
                         ("attention.wv.weight", (d, d)), ("attention.wo.weight", (d, d)),
                         ("feed_forward.w1.weight", (ffn, d)), ("feed_forward.w2.weight", (d, ffn)),
                         ("feed_forward.w3.weight", (ffn, d))]:
            sd[p + n] = torch.randn(*shape)
        sd[p + "attention_norm.weight"] = torch.ones(d)
        sd[p + "ffn_norm.weight"] = torch.ones(d)
    torch.save(sd, os.path.join(src, "consolidated.00.pth"))
    write_json(os.path.join(src, "params.json"), {"dim": d, "n_layers": layers, "n_heads": 8, "vocab_size": vocab})
    return src


def write_padded_llama(src, vocab, top, d=16, seed=0):
    """A Meta-layout LLaMA (consolidated.00.pth + params.json) of `vocab` rows whose blocks add
    nothing (zero output projections) and whose output rows `top` are equal and far above the
    others: every step's distribution is the ids in `top`, evenly (anything else has e^-50 of it),
    so greedy picks top[0] and --temp 1 picks among them. For ids a tokenizer has no piece for."""
    import torch
    os.makedirs(src, exist_ok=True)
    torch.manual_seed(seed)
    out = torch.randn(vocab, d) * 0.01
    for t in top:
        out[t] = 4.0  # the normalized state is positive (so is every embedding): a logit near 4 * d
    sd = {"tok_embeddings.weight": torch.rand(vocab, d) + 0.5, "norm.weight": torch.ones(d), "output.weight": out}
    for n, shape in [("attention.wq.weight", (d, d)), ("attention.wk.weight", (d, d)),
                     ("attention.wv.weight", (d, d)), ("attention.wo.weight", (d, d)),
                     ("feed_forward.w1.weight", (2 * d, d)), ("feed_forward.w2.weight", (d, 2 * d)),
                     ("feed_forward.w3.weight", (2 * d, d))]:
        sd["layers.0." + n] = torch.zeros(*shape) if n in ("attention.wo.weight", "feed_forward.w2.weight") \
            else torch.randn(*shape)
    sd["layers.0.attention_norm.weight"] = torch.ones(d)
    sd["layers.0.ffn_norm.weight"] = torch.ones(d)
    torch.save(sd, os.path.join(src, "consolidated.00.pth"))
    write_json(os.path.join(src, "params.json"), {"dim": d, "n_layers": 1, "n_heads": 2, "vocab_size": vocab})
    return src


def fixture(name):
    p = os.path.join(FIXTURES, name)
    if not os.path.exists(p):
        raise unittest.SkipTest(f"fixture {p} missing: run tests/fixtures/make_fixtures.py (ctest does)")
    return p


def need_stories():
    if not os.path.exists(os.path.join(STORIES, "stories260K.pt")):
        raise unittest.SkipTest(f"real model not found at {STORIES}: ../shared is absent, skipping")


def reseal(art):
    """Recomputes files[].bytes/sha256, tokenizer.files[].sha256 and manifest_sha256
    (docs/format.md) after a test edits an artifact on purpose, so the check under test is the one
    that must catch the edit."""
    mpath = os.path.join(art, "manifest.json")
    m = read_json(mpath)
    for f in m.get("files", []):
        p = os.path.join(art, f["path"])
        if os.path.isfile(p) and "/" not in f["path"]:
            data = read_bytes(p)
            f["bytes"], f["sha256"] = len(data), hashlib.sha256(data).hexdigest()
    tokenizer = m.get("tokenizer")
    if isinstance(tokenizer, dict) and isinstance(tokenizer.get("files"), list):
        listed = {f.get("path"): f.get("sha256") for f in m.get("files", []) if isinstance(f, dict)}
        for f in tokenizer["files"]:
            if isinstance(f, dict) and f.get("name") in listed:
                f["sha256"] = listed[f["name"]]
    m.pop("manifest_sha256", None)
    m["manifest_sha256"] = hashlib.sha256(
        json.dumps(m, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()).hexdigest()
    with open(mpath, "w") as f:
        json.dump(m, f, indent=2)


def convert_and_logits(test, name, *extra):
    """Converts fixture `name` (with extra convert flags) into test's temp dir and runs its reference
    prompt for 32 greedy tokens. Returns (ref.json, run's JSON, every logits row run computed: the
    prompt's then each generated step's, the reference's prompt rows, the artifact)."""
    src = fixture(name)
    ref = read_json(os.path.join(src, "ref.json"))
    tag = name + "_" + "_".join(extra).replace(":", "_").replace("-", "")
    out = test.path(tag)
    sf("convert", src, "-o", out, *extra)
    dump = test.path(tag + ".f32")
    got = sf_json("run", out, "--ids", ",".join(map(str, ref["prompt_ids"])), "-n", 32, "--logits", dump)
    rows = np.fromfile(dump, dtype="<f4").reshape(-1, ref["vocab_size"])
    want = np.fromfile(os.path.join(src, "ref_logits.f32"), dtype="<f4").reshape(-1, ref["vocab_size"])
    test.assertGreaterEqual(len(rows), len(want), f"{name}: fewer logit rows than prompt tokens")
    return ref, got, rows, want, out
