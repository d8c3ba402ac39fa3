"""Damaged files never crash shardforge: every mutation gives exit 0 or a one-line error with exit 1."""
import os
import random
import shutil
import zipfile

from sftest import TempDirTest, fixture, read_bytes, sf, write_bytes

MUTATIONS = 150


def mutate(data, rng, lo, hi):
    b = bytearray(data)
    kind = rng.randrange(4)
    pos = rng.randrange(lo, hi)
    if kind == 0:                       # flip bits
        b[pos] ^= 1 << rng.randrange(8)
    elif kind == 1:                     # random byte run
        for i in range(pos, min(hi, pos + rng.randrange(1, 8))):
            b[i] = rng.randrange(256)
    elif kind == 2:                     # truncate
        del b[pos:]
    else:                               # large little-endian integer (a length or offset)
        b[pos:pos + 4] = rng.choice([b"\xff\xff\xff\x7f", b"\x00\x00\x00\x80", b"\xff\xff\xff\xff"])
    return bytes(b)


class Corruption(TempDirTest):
    def check(self, proc, what):
        self.assertIn(proc.returncode, (0, 1), f"{what}: exit {proc.returncode} (a crash?)\n{proc.stderr[-2000:]}")
        if proc.returncode == 1:
            self.assertEqual(len(proc.stderr.strip().splitlines()), 1, f"{what}: {proc.stderr}")

    def test_mutated_checkpoints(self):
        rng = random.Random(1234)
        src_dir = fixture("hf_gqa")
        original = read_bytes(os.path.join(src_dir, "pytorch_model.bin"))
        with zipfile.ZipFile(os.path.join(src_dir, "pytorch_model.bin")) as z:
            pkl = next(i for i in z.infolist() if i.filename.endswith("data.pkl"))
            pkl_lo = pkl.header_offset + 30 + len(pkl.filename) + len(pkl.extra)
            pkl_hi = pkl_lo + pkl.file_size
        cd_lo = original.rfind(b"PK\x01\x02", 0, len(original))  # somewhere in the central directory
        d = self.path("m")
        os.makedirs(d)
        shutil.copy(os.path.join(src_dir, "config.json"), d)
        for i in range(MUTATIONS):
            region = [(pkl_lo, pkl_hi), (cd_lo - 200, len(original)), (0, len(original))][i % 3]
            write_bytes(os.path.join(d, "pytorch_model.bin"), mutate(original, rng, *region))
            out = self.path(f"out{i}")
            self.check(sf("convert", d, "-o", out, check=False), f"mutation {i}")
            shutil.rmtree(out, ignore_errors=True)

    def test_mutated_shards(self):
        rng = random.Random(99)
        art = self.path("art")
        sf("convert", fixture("hf_gqa"), "-o", art, "--quant", "int4:g32")
        shard = os.path.join(art, "block_000.shard")
        original = read_bytes(shard)
        header_end = 16 + int.from_bytes(original[12:16], "little")
        for i in range(MUTATIONS // 3):
            write_bytes(shard, mutate(original, rng, 0, header_end))
            self.check(sf("verify", art, check=False), f"verify {i}")
            self.check(sf("run", art, "--ids", "1,2,3", "-n", 2, check=False), f"run {i}")


if __name__ == "__main__":
    import unittest
    unittest.main()
