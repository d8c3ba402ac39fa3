#!/usr/bin/python3
"""Writes a copy of a LLaMA checkpoint whose FFN hidden channels are permuted: the same function.

Usage: permute_ffn.py SOURCE OUT --seed N
  SOURCE  a torch.save file (llama2.c's {"model": ..., "model_args": ...} or a plain state dict) or a
          directory holding pytorch_model.bin (its other files are copied beside OUT's)
  OUT     a file (SOURCE a file) or a directory (SOURCE a directory)
  --seed  0 keeps the order (a plain copy); N > 0 draws block i's permutation p from one generator
          seeded N, in block order: p = argsort(rand(ffn), descending)
Rows p of gate and up and columns p of down: silu(gate x) * (up x) is permuted and down undoes it,
so the f32 model computes the same logits (up to float summation order). A quantizer whose groups
run along a row then groups different hidden channels in down, and its rounding lands differently:
bench/calib_spread.sh uses such copies to show how far perplexity moves for the same model.
"""
import argparse
import os
import re
import shutil

import torch

# (gate, up, down) weight names of block N, by naming convention.
PATTERNS = [
    ("layers.{}.feed_forward.w1.weight", "layers.{}.feed_forward.w3.weight", "layers.{}.feed_forward.w2.weight"),
    ("model.layers.{}.mlp.gate_proj.weight", "model.layers.{}.mlp.up_proj.weight",
     "model.layers.{}.mlp.down_proj.weight"),
]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("source")
    ap.add_argument("out")
    ap.add_argument("--seed", type=int, required=True)
    a = ap.parse_args()
    src_file = os.path.join(a.source, "pytorch_model.bin") if os.path.isdir(a.source) else a.source
    ck = torch.load(src_file, map_location="cpu", weights_only=False)
    sd = ck["model"] if isinstance(ck, dict) and "model" in ck else ck
    blocks = sorted({int(m.group(1)) for k in sd for m in [re.match(r"(?:model\.)?layers\.(\d+)\.", k)] if m})
    g = torch.Generator().manual_seed(a.seed)
    permuted = 0
    for i in blocks:
        names = next((tuple(p.format(i) for p in pat) for pat in PATTERNS if pat[0].format(i) in sd), None)
        if names is None:
            raise SystemExit(f"{src_file}: block {i} has no gate/up/down under a known naming")
        gate, up, down = names
        n = sd[gate].shape[0]
        if a.seed == 0:
            continue
        p = torch.argsort(torch.rand(n, generator=g), descending=True)
        sd[gate], sd[up], sd[down] = sd[gate][p].clone(), sd[up][p].clone(), sd[down][:, p].clone()
        permuted += 1
    if os.path.isdir(a.source):
        os.makedirs(a.out, exist_ok=True)
        for f in os.listdir(a.source):
            if f != "pytorch_model.bin":
                shutil.copy(os.path.join(a.source, f), os.path.join(a.out, f))
        torch.save(ck, os.path.join(a.out, "pytorch_model.bin"))
    else:
        torch.save(ck, a.out)
    print(f"{a.out}: {permuted} of {len(blocks)} blocks permuted (seed {a.seed})")


if __name__ == "__main__":
    main()
