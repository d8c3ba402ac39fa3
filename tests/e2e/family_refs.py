"""Shared by test_families.py and test_family_refs.py: the family fixtures, what each must be
recognised as, and how to load one back into its PyTorch reference."""
import os
import sys

import torch

from sftest import ROOT, fixture, read_json

sys.path.insert(0, os.path.join(ROOT, "tests", "fixtures"))
import chatglm_ref  # noqa: E402
import chatglm2_ref  # noqa: E402
import gpt2_ref  # noqa: E402
import internlm2_ref  # noqa: E402

# fixture directory: (family the C++ side reports before '/', tied embeddings)
EXPECT = {
    "chatglm_6b": ("chatglm", False),
    "chatglm2_6b": ("chatglm2", False),
    "chatglm3_6b": ("chatglm2", False),  # ChatGLM3 is the ChatGLM2 architecture (+ rope_ratio)
    "internlm2_gqa": ("internlm2", False),
    "internlm2_bias": ("internlm2", False),
    "gpt2_hub": ("gpt2", True),
    "gpt2_prefixed": ("gpt2", True),
}
FIXTURES = list(EXPECT)


def _build(name, cfg_json):
    family = EXPECT[name][0]
    if family == "chatglm":
        return chatglm_ref.ChatGLM6B(chatglm_ref.config_from_hf(cfg_json))
    if family == "chatglm2":
        return chatglm2_ref.ChatGLM2(chatglm2_ref.config_from_hf(cfg_json))
    if family == "internlm2":
        return internlm2_ref.InternLM2(internlm2_ref.config_from_hf(cfg_json))
    return gpt2_ref.GPT2(gpt2_ref.config_from_hf(cfg_json), persistent_buffers=name == "gpt2_hub")


def load_fixture(name):
    """(reference model with the fixture's weights, its state dict as saved, ref.json, ref logits)."""
    import numpy as np
    src = fixture(name)
    model = _build(name, read_json(os.path.join(src, "config.json")))
    sd = torch.load(os.path.join(src, "pytorch_model.bin"), map_location="cpu")
    # The hub GPT-2 file is GPT2Model's state dict: it loads into the body, the head is tied to wte.
    target = model.transformer if name == "gpt2_hub" else model
    target.load_state_dict(sd, strict=True)
    model.eval()
    ref = read_json(os.path.join(src, "ref.json"))
    want = np.fromfile(os.path.join(src, "ref_logits.f32"), dtype="<f4").reshape(-1, ref["vocab_size"])
    return model, sd, ref, torch.from_numpy(want)
