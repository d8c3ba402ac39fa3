#!/usr/bin/env bash
# Peak resident memory of `convert` against the checkpoint's size: streaming means it should scale
# with one block, not the model. Prints one table row per scheme.
# Usage: bench/memory.sh [BUILD_DIR] [extra make_big_checkpoint.py args...]
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${1:-build}
shift || true
WORK=$(mktemp -d /tmp/shardforge-mem.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
/usr/bin/python3 bench/make_big_checkpoint.py "$WORK/src" "$@"
CKPT=$(stat -c %s "$WORK/src/consolidated.00.pth")
printf '%-10s %12s %12s %8s %8s\n' scheme checkpoint peak_rss ratio seconds
for scheme in f16 int8 int4:g32; do
  /usr/bin/time -v "$BUILD/shardforge" convert "$WORK/src" -o "$WORK/out" --quant "$scheme" --force \
    >/dev/null 2>"$WORK/time.txt"
  rss_kb=$(awk -F: '/Maximum resident set size/ {gsub(/ /, "", $2); print $2}' "$WORK/time.txt")
  secs=$(awk -F': ' '/Elapsed \(wall clock\)/ {print $2}' "$WORK/time.txt")
  awk -v s="$scheme" -v c="$CKPT" -v r="$rss_kb" -v t="$secs" \
    'BEGIN { printf "%-10s %9.0f MiB %9.0f MiB %7.1f%% %8s\n", s, c/1048576, r/1024, 100*r*1024/c, t }'
done

# Low-memory execution: peak RSS of `run` against the f32 artifact's size for several
# --resident-blocks (0 = all resident), each a process of its own, and the logits of each compared
# with full residency's. Then `bench`'s own table (tokens/s and peak RSS per setting).
"$BUILD/shardforge" convert "$WORK/src" -o "$WORK/f32" --quant f32 --force >/dev/null
ART=$(du -sb "$WORK/f32" | cut -f1)
echo
printf '%-9s %12s %12s %8s %8s %s\n' resident artifact peak_rss ratio seconds logits
for n in 0 1 2 4 8; do
  /usr/bin/time -v "$BUILD/shardforge" run "$WORK/f32" --ids 1,5,9,100 -n 16 -t 2 --resident-blocks "$n" \
    --logits "$WORK/logits.$n" >/dev/null 2>"$WORK/time.txt"
  rss_kb=$(awk -F: '/Maximum resident set size/ {gsub(/ /, "", $2); print $2}' "$WORK/time.txt")
  secs=$(awk -F': ' '/Elapsed \(wall clock\)/ {print $2}' "$WORK/time.txt")
  same=$(cmp -s "$WORK/logits.0" "$WORK/logits.$n" && echo identical || echo DIFFERENT)
  awk -v s="$n" -v c="$ART" -v r="$rss_kb" -v t="$secs" -v l="$same" \
    'BEGIN { printf "%-9s %9.0f MiB %9.0f MiB %7.1f%% %8s %s\n", (s == 0 ? "all" : s), c/1048576, r/1024, 100*r*1024/c, t, l }'
done
echo
"$BUILD/shardforge" bench "$WORK/f32" -p 64 -n 16 -r 3 -t 2 --resident-blocks 1,2,4,0
