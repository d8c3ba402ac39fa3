#!/usr/bin/env bash
# Conversion speed: times `shardforge convert SOURCE --quant SCHEME -t THREADS` RUNS times with the
# source in the page cache (read once first) and prints each run's MB/s of source and the median.
# MB/s counts the bytes of the source's files (a directory: every file in it) per second of wall
# time, the whole command included (opening, hashing, quantizing, writing, reading back).
#
# Usage: bench/convert_speed.sh SOURCE [SCHEME=int4:g32] [THREADS=2] [RUNS=5] [BUILD_DIR=build]
# Example source (~600 MB f32): /usr/bin/python3 bench/make_big_checkpoint.py /tmp/big151 \
#   --dim 1024 --layers 12 --ffn 2816 --vocab 512 --heads 16
set -euo pipefail
if [ $# -lt 1 ]; then
  sed -n '2,10p' "$0" >&2
  exit 2
fi
SRC=$1
SCHEME=${2:-int4:g32}
THREADS=${3:-2}
RUNS=${4:-5}
BUILD=${5:-build}
SF="$BUILD/shardforge"
[ -x "$SF" ] || { echo "no $SF; build it first (scripts/setup.sh $BUILD)" >&2; exit 1; }

if [ -d "$SRC" ]; then
  FILES=$(find "$SRC" -maxdepth 1 -type f)
else
  FILES=$SRC
fi
# shellcheck disable=SC2086
BYTES=$(stat -c %s $FILES | awk '{s += $1} END {print s}')
# shellcheck disable=SC2086
cat $FILES >/dev/null  # into the page cache: the disk is not what is measured

OUT=$(mktemp -d /tmp/convert-speed.XXXXXX)
trap 'rm -rf "$OUT"' EXIT
RATES=()
for i in $(seq "$RUNS"); do
  rm -rf "$OUT/art"
  START=$(date +%s.%N)
  "$SF" convert "$SRC" -o "$OUT/art" --quant "$SCHEME" -t "$THREADS" >/dev/null 2>"$OUT/err" ||
    { cat "$OUT/err" >&2; exit 1; }
  END=$(date +%s.%N)
  RATE=$(awk -v b="$BYTES" -v s="$START" -v e="$END" 'BEGIN {printf "%.0f", b / (e - s) / 1e6}')
  echo "run $i: $(awk -v s="$START" -v e="$END" 'BEGIN {printf "%.2f", e - s}') s, $RATE MB/s"
  RATES+=("$RATE")
done
MEDIAN=$(printf '%s\n' "${RATES[@]}" | sort -n | awk '{a[NR] = $1} END {print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2}')
echo "convert --quant $SCHEME -t $THREADS, $(awk -v b="$BYTES" 'BEGIN {printf "%.0f", b / 1e6}') MB of source: median $MEDIAN MB/s over $RUNS runs"
