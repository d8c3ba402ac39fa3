#!/usr/bin/python3
"""Writes a large LLaMA-architecture checkpoint (Meta naming, random weights) for memory benchmarks.

Usage: make_big_checkpoint.py OUTDIR [--dim 1024] [--layers 16] [--ffn 2816] [--vocab 32000]
Tensors are generated and saved one by one through a state dict of views into a single flat storage
per tensor, so this script itself needs about the checkpoint's size in memory.
"""
import argparse
import json
import os
from collections import OrderedDict

import torch


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--dim", type=int, default=1024)
    ap.add_argument("--layers", type=int, default=16)
    ap.add_argument("--ffn", type=int, default=2816)
    ap.add_argument("--vocab", type=int, default=32000)
    ap.add_argument("--heads", type=int, default=16)
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    g = torch.Generator().manual_seed(0)
    d, f = a.dim, a.ffn
    sd = OrderedDict()

    def w(*shape):
        return torch.randn(*shape, generator=g) * (1.0 / shape[-1] ** 0.5)

    sd["tok_embeddings.weight"] = w(a.vocab, d)
    for i in range(a.layers):
        p = f"layers.{i}."
        sd[p + "attention_norm.weight"] = torch.ones(d)
        for n in ("wq", "wk", "wv", "wo"):
            sd[p + f"attention.{n}.weight"] = w(d, d)
        sd[p + "ffn_norm.weight"] = torch.ones(d)
        sd[p + "feed_forward.w1.weight"] = w(f, d)
        sd[p + "feed_forward.w3.weight"] = w(f, d)
        sd[p + "feed_forward.w2.weight"] = w(d, f)
    sd["norm.weight"] = torch.ones(d)
    sd["output.weight"] = w(a.vocab, d)
    torch.save(sd, os.path.join(a.out, "consolidated.00.pth"))
    with open(os.path.join(a.out, "params.json"), "w") as fh:
        json.dump({"dim": d, "n_layers": a.layers, "n_heads": a.heads, "vocab_size": a.vocab, "norm_eps": 1e-5}, fh)
    size = os.path.getsize(os.path.join(a.out, "consolidated.00.pth"))
    print(f"wrote {a.out}/consolidated.00.pth: {size / 2**30:.2f} GiB, {a.layers} blocks")


if __name__ == "__main__":
    main()
