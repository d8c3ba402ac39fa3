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
