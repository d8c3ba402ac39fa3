#!/usr/bin/env bash
# Runs every libFuzzer target for SECONDS each, seeded from real torch.save checkpoints, their
# pickles and real shards. Crashes are left in WORK/crash-*; exit 1 if any target found one.
# Usage: bench/fuzz.sh FUZZ_BUILD_DIR [SECONDS]   (build: see tests/fuzz/CMakeLists.txt; needs build/shardforge)
set -euo pipefail
cd "$(dirname "$0")/.."
FUZZ=${1:?usage: bench/fuzz.sh FUZZ_BUILD_DIR [SECONDS]}
SECONDS_EACH=${2:-60}
WORK=$(mktemp -d /tmp/shardforge-fuzz.XXXXXX)
echo "fuzz work directory: $WORK"
mkdir -p "$WORK"/{pickle,zip,shard}

/usr/bin/python3 tests/fixtures/make_fixtures.py "$WORK/fixtures" >/dev/null
/usr/bin/python3 - "$WORK" <<'PY'
import glob, os, shutil, sys, zipfile
work = sys.argv[1]
for i, ck in enumerate(sorted(glob.glob(f"{work}/fixtures/*/*.bin") + glob.glob(f"{work}/fixtures/*/*.pt*") +
                          glob.glob(f"{work}/fixtures/*.pt"))):
    if os.path.getsize(ck) > 200_000:
        continue
    shutil.copy(ck, f"{work}/zip/seed{i}")
    with zipfile.ZipFile(ck) as z:
        pkl = next(n for n in z.namelist() if n.endswith("data.pkl"))
        open(f"{work}/pickle/seed{i}", "wb").write(z.read(pkl))
PY
[ -x build/shardforge ] || { echo "fuzz.sh: build/shardforge missing (run scripts/setup.sh first)" >&2; exit 2; }
build/shardforge convert "$WORK/fixtures/hf_gqa" -o "$WORK/art" --quant int4:g32:asym >/dev/null
cp "$WORK"/art/*.shard "$WORK/shard/"

status=0
for t in pickle:fuzz_pickle zip:fuzz_torch_zip shard:fuzz_shard; do
  corpus=${t%%:*} target=${t##*:}
  echo "== $target ($SECONDS_EACH s)"
  if ! (cd "$WORK" && "$OLDPWD/$FUZZ/tests/fuzz/$target" -max_total_time="$SECONDS_EACH" -max_len=200000 \
          -artifact_prefix="$WORK/crash-$target-" "$WORK/$corpus" 2>&1 | grep -E "^Done [0-9]+ runs|ERROR|SUMMARY" ); then
    :
  fi
  ls "$WORK"/crash-"$target"-* >/dev/null 2>&1 && { echo "$target: crash found"; status=1; }
done
[ "$status" -eq 0 ] && rm -rf "$WORK"
exit $status
