#!/usr/bin/python3
"""Train the bundled sample: a small LLaMA-architecture model on the Jargon File (public domain).

Reproduce with:  apt-get install jargon-text python3-torch python3-sentencepiece
                 /usr/bin/python3 samples/train_sample.py --out samples/jargon-llama
Writes: pytorch_model.bin (torch.save, HF LlamaForCausalLM names), config.json, tokenizer.model,
and samples/heldout.txt (the last 4% of the text, never seen in training).
"""
import argparse, gzip, json, math, os, re, sys, time
import torch
import sentencepiece as spm

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures"))
from llama_ref import Config, HFLlama, windowed_ppl  # noqa: E402

SOURCE = "/usr/share/doc/jargon-text/jargon.txt.gz"


def load_text():
    raw = gzip.open(SOURCE, "rt", encoding="utf-8").read()
    paras, cur = [], []
    for line in raw.splitlines():
        if re.search(r"[\u2500-\u257f]", line):  # table borders
            continue
        line = " ".join(line.split())
        if not line:
            if cur:
                paras.append(" ".join(cur))
                cur = []
            continue
        cur.append(line)
    if cur:
        paras.append(" ".join(cur))
    return "\n".join(p for p in paras if len(p) > 1) + "\n"


CALIB_BYTES = 60000


def write_calib(text, cut, here):
    """calib.txt: the last whole paragraphs of the training text, about CALIB_BYTES long. Text the
    model was trained on, disjoint from heldout.txt: what calibrated quantization
    (convert --calib) reads, so evaluating on heldout.txt stays honest."""
    start = text.index("\n", cut - CALIB_BYTES) + 1
    with open(os.path.join(here, "calib.txt"), "w", encoding="utf-8") as f:
        f.write(text[start:cut])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="samples/jargon-llama")
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--calib-only", action="store_true", help="only write calib.txt (no training)")
    args = ap.parse_args()
    torch.manual_seed(args.seed)
    torch.set_num_threads(1)
    os.makedirs(args.out, exist_ok=True)

    text = load_text()
    cut = int(len(text) * 0.96)
    cut = text.index("\n", cut) + 1
    train_text, held = text[:cut], text[cut:]
    here = os.path.dirname(os.path.abspath(__file__))
    write_calib(text, cut, here)
    if args.calib_only:
        return
    with open(os.path.join(here, "heldout.txt"), "w", encoding="utf-8") as f:
        f.write(held)
    tmp_train = os.path.join(args.out, "train.txt.tmp")
    with open(tmp_train, "w", encoding="utf-8") as f:
        f.write(train_text)

    prefix = os.path.join(args.out, "tokenizer")
    spm.SentencePieceTrainer.train(
        input=tmp_train, model_prefix=prefix, vocab_size=512, model_type="bpe",
        byte_fallback=True, character_coverage=1.0, unk_id=0, bos_id=1, eos_id=2, pad_id=-1,
        max_sentence_length=100000, num_threads=2, minloglevel=2)
    os.remove(prefix + ".vocab")
    os.remove(tmp_train)
    sp = spm.SentencePieceProcessor(model_file=prefix + ".model")
    ids = torch.tensor(sp.encode(train_text), dtype=torch.long)
    held_ids = sp.encode(held)
    print(f"train tokens {len(ids)}, held-out tokens {len(held_ids)}")

    cfg = Config(vocab_size=512, dim=128, n_layers=4, n_heads=4, n_kv_heads=2, ffn_dim=352,
                 norm_eps=1e-5, rope_theta=10000.0, tied=False, max_seq=256)
    model = HFLlama(cfg)
    for n, p in model.named_parameters():
        if p.dim() == 2:
            torch.nn.init.normal_(p, std=0.02)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.05, betas=(0.9, 0.95))
    seq, batch = 128, 32
    t0 = time.time()
    for step in range(args.steps):
        lr = 3e-3 * min(1.0, (step + 1) / 100) * 0.5 * (1 + math.cos(math.pi * step / args.steps))
        for g in opt.param_groups:
            g["lr"] = lr
        starts = torch.randint(0, len(ids) - seq - 1, (batch,))
        x = torch.stack([ids[s:s + seq] for s in starts])
        y = torch.stack([ids[s + 1:s + seq + 1] for s in starts])
        loss = torch.nn.functional.cross_entropy(model(x).reshape(-1, cfg.vocab_size), y.reshape(-1))
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % 100 == 0 or step == args.steps - 1:
            print(f"step {step} loss {loss.item():.3f} lr {lr:.2e} {time.time() - t0:.0f}s", flush=True)

    model.eval()
    r = windowed_ppl(model, held_ids, 128)
    print("held-out", json.dumps(r))
    torch.save(model.state_dict(), os.path.join(args.out, "pytorch_model.bin"))
    with open(os.path.join(args.out, "config.json"), "w") as f:
        json.dump(model.hf_config(), f, indent=2)
        f.write("\n")


if __name__ == "__main__":
    main()
