#!/usr/bin/env bash
# Peak memory and time of calibrated conversion at a 7B model's block shape: the statistics GPTQ
# keeps (Σ x xᵀ of a group's inputs, the cross sums with the reference stream, the drift sums) grow
# with the square of a layer's width, not with the model's depth, so one block of LLaMA-7B's shape
# (d_model 4096, 32 heads, FFN 11008: a 11008-channel Hessian for ffn.down) shows what a 7B model
# costs per block. Random weights (bench/make_big_checkpoint.py, Meta naming) and random token ids
# for calibration; each method in its own process under /usr/bin/time -v.
#
# Usage: bench/calib_memory.sh [--layers N] [--tokens N] [--ctx N] [--methods gptq,mse,awq] [-t THREADS]
#   --layers   blocks in the checkpoint (default 2: the peak must not grow with the second)
#   --tokens   calibration tokens (default 2048), --ctx tokens per sequence (default 512)
# Needs about 2 GiB of disk in /tmp for the checkpoint (f32). Slow: gptq int4:g128 with 1024 tokens
# took 35 CPU-minutes per block (2555 s of calibration for one block and the head at 0.82 of a CPU;
# peak RSS 5762 MiB), ffn.down's 11008-channel Hessian about half of it: docs/quantization.md.
set -uo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=lib/common.sh
. bench/lib/common.sh

LAYERS=2 TOKENS=2048 CTX=512 METHODS=gptq T=2 SCHEME=int4:g128
while [ $# -gt 0 ]; do
  case $1 in
    --layers) LAYERS=${2:?}; shift 2 ;;
    --tokens) TOKENS=${2:?}; shift 2 ;;
    --ctx) CTX=${2:?}; shift 2 ;;
    --methods) METHODS=${2:?}; shift 2 ;;
    --quant) SCHEME=${2:?}; shift 2 ;;
    -t) T=${2:?}; shift 2 ;;
    -h|--help) sed -n '2,/^set -uo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument $1 (see --help)" ;;
  esac
done
SF=${SHARDFORGE:-build/shardforge}
[ -x "$SF" ] || die "$SF: not found (build it with scripts/setup.sh build)"
use_work_dir sf-calib-memory

$PY bench/make_big_checkpoint.py "$WORK/src" --dim 4096 --heads 32 --ffn 11008 --layers "$LAYERS" --vocab 512 >&2 ||
  die "could not write the checkpoint"
CKPT=$(stat -c %s "$WORK/src/consolidated.00.pth")
$PY -c "import random; r = random.Random(0); print(' '.join(str(r.randrange(1, 512)) for _ in range($TOKENS)))" \
  >"$WORK/calib.ids"

printf '| method | scheme | blocks | checkpoint | calibration tokens | peak RSS | calibration s | convert s |\n'
printf '| --- | --- | --- | --- | --- | --- | --- | --- |\n'
for method in ${METHODS//,/ }; do
  /usr/bin/time -v "$SF" convert "$WORK/src" -o "$WORK/out" --force --quant "$SCHEME" --calib "ids:$WORK/calib.ids" \
    --calib-method "$method" --calib-tokens "$TOKENS" --calib-ctx "$CTX" -t "$T" >"$WORK/out.txt" 2>"$WORK/time.txt" ||
    { note "$method: $(grep -v '^\s' "$WORK/time.txt" | tail -n1)"; continue; }
  rss_kb=$(awk -F: '/Maximum resident set size/ {gsub(/ /, "", $2); print $2}' "$WORK/time.txt")
  secs=$(awk -F': ' '/Elapsed \(wall clock\)/ {print $2}' "$WORK/time.txt")
  calib_s=$(sed -n 's/.* tokens), \([0-9.]*\) s, peak memory.*/\1/p' "$WORK/out.txt")
  awk -v m="$method" -v q="$SCHEME" -v l="$LAYERS" -v c="$CKPT" -v n="$TOKENS" -v r="$rss_kb" -v cs="$calib_s" -v t="$secs" \
    'BEGIN { printf "| %s | %s | %d | %.0f MiB | %d | %.0f MiB | %s | %s |\n", m, q, l, c/1048576, n, r/1024, cs, t }'
done
