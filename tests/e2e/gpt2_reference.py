"""An independent GPT-2 byte-level BPE in plain Python, to check shardforge's on texts the
published test vectors do not cover (the shared corpora, mixed scripts).

It shares no code or approach with tokenizers/gpt2_*.cpp beyond the published definition:
- the pre-tokenizer is GPT-2's pattern run by Python's `re` engine (backtracking and all), with
  \\p{L} and \\p{N} spelled out as character classes from `unicodedata` categories, and \\s as the
  Unicode White_Space property (PropList.txt; Python's own \\s also matches U+001C..U+001F);
- BPE is GPT-2's original loop: repeatedly take the adjacent pair of lowest merge rank and merge
  every occurrence of it, left to right.
"""
import json
import re
import sys
import unicodedata

# Unicode White_Space (PropList.txt), stable since Unicode 6.3.
WHITE_SPACE = [(0x09, 0x0D), (0x20, 0x20), (0x85, 0x85), (0xA0, 0xA0), (0x1680, 0x1680), (0x2000, 0x200A),
               (0x2028, 0x2029), (0x202F, 0x202F), (0x205F, 0x205F), (0x3000, 0x3000)]


def _ranges(pred):
    out, start = [], None
    for cp in range(sys.maxunicode + 1):
        if pred(cp):
            if start is None:
                start = cp
        elif start is not None:
            out.append((start, cp - 1))
            start = None
    if start is not None:
        out.append((start, sys.maxunicode))
    return out


def _class(ranges):
    return "".join(f"\\U{a:08x}-\\U{b:08x}" for a, b in ranges)


def _pattern():
    letters = _class(_ranges(lambda cp: unicodedata.category(chr(cp))[0] == "L"))
    numbers = _class(_ranges(lambda cp: unicodedata.category(chr(cp))[0] == "N"))
    space = _class(WHITE_SPACE)
    return re.compile(f"'s|'t|'re|'ve|'m|'ll|'d| ?[{letters}]+| ?[{numbers}]+| ?[^{space}{letters}{numbers}]+"
                      f"|[{space}]+(?![^{space}])|[{space}]+")


def _bytes_to_unicode():
    """GPT-2's byte-level alphabet: printable Latin-1 bytes as themselves, the rest from U+0100 up."""
    kept = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    table, extra = {}, 0
    for b in range(256):
        if b in kept:
            table[b] = chr(b)
        else:
            table[b] = chr(0x100 + extra)
            extra += 1
    return table


class Gpt2Reference:
    END_OF_TEXT = "<|endoftext|>"

    def __init__(self, vocab_path, merges_path):
        with open(vocab_path, encoding="utf-8") as f:
            self.vocab = json.load(f)
        with open(merges_path, encoding="utf-8") as f:
            lines = [l for l in f.read().split("\n") if l and not l.startswith("#version")]
        self.ranks = {tuple(l.split(" ")): i for i, l in enumerate(lines)}
        self.shown = _bytes_to_unicode()
        self.pattern = _pattern()
        self.cache = {}

    def _bpe(self, word):
        if word in self.cache:
            return self.cache[word]
        parts = list(word)
        while len(parts) > 1:
            pairs = {(parts[i], parts[i + 1]) for i in range(len(parts) - 1)}
            best = min(pairs, key=lambda p: self.ranks.get(p, float("inf")))
            if best not in self.ranks:
                break
            merged, i = [], 0
            while i < len(parts):
                if i + 1 < len(parts) and (parts[i], parts[i + 1]) == best:
                    merged.append(parts[i] + parts[i + 1])
                    i += 2
                else:
                    merged.append(parts[i])
                    i += 1
            parts = merged
        self.cache[word] = parts
        return parts

    def encode(self, text):
        ids = []
        for n, segment in enumerate(text.split(self.END_OF_TEXT)):
            if n:
                ids.append(self.vocab[self.END_OF_TEXT])
            for piece in self.pattern.findall(segment):
                word = "".join(self.shown[b] for b in piece.encode("utf-8"))
                ids.extend(self.vocab[p] for p in self._bpe(word))
        return ids

    def decode(self, ids):
        byte_of = {c: b for b, c in self.shown.items()}
        token_of = {i: t for t, i in self.vocab.items()}
        return bytes(byte_of[c] for i in ids for c in token_of[i])
