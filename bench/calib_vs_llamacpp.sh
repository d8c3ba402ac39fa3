#!/usr/bin/env bash
# Calibrated q4_0 beside llama.cpp's own: the same checkpoint and the same calibration text give
#   - shardforge's q4_0 GGUF by round-to-nearest and by each calibration method (convert --calib),
#   - llama.cpp's q4_0 from llama-quantize, without and with an importance matrix from llama-imatrix
#     run on the calibration text (over an f32 GGUF that shardforge wrote),
# and every file's perplexity on a held-out text, by llama-perplexity and by `shardforge eval ppl`.
#
# Usage: LLAMA_CPP_BIN=/path/to/llama.cpp/build/bin bench/calib_vs_llamacpp.sh SOURCE CALIB TEXT [TOKENIZER]
#
# llama.cpp is never a dependency: this script does not fetch, build or install it. Point
# LLAMA_CPP_BIN at a build you made yourself (llama-imatrix, llama-quantize, llama-perplexity).
# CALIB and TEXT must not overlap (the held-out perplexity would flatter every calibrated file).
#
# Settings (environment):
#   SHARDFORGE    shardforge binary                              (default: build/shardforge)
#   METHODS       shardforge calibration methods; M+tune adds     (default: "mse awq gptq gptq+tune")
#                 --calib-tune-steps TUNE_STEPS
#   TUNE_STEPS    scale tuning steps for M+tune                  (default: 100)
#   CALIB_TOKENS  calibration tokens (both tools)                (default: 16384)
#   CTX           calibration and evaluation window              (default: 128)
#   CHUNKS        evaluation windows (-1: all the text holds)    (default: -1)
#   T             threads                                        (default: 2)
#   WORK          directory for the files (default: a temporary one, removed)
set -uo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=lib/common.sh
. bench/lib/common.sh

[ $# -ge 3 ] && [ $# -le 4 ] || die "usage: LLAMA_CPP_BIN=DIR $0 SOURCE CALIB TEXT [TOKENIZER]"
SOURCE=$1 CALIB=$2 TEXT=$3 TOKENIZER=${4:-}
need_llama_cpp llama-imatrix llama-quantize llama-perplexity
SF=${SHARDFORGE:-build/shardforge}
[ -x "$SF" ] || die "$SF: not found (build shardforge, or set SHARDFORGE)"
[ -r "$CALIB" ] || die "$CALIB: no such calibration text"
[ -r "$TEXT" ] || die "$TEXT: no such evaluation text"
METHODS=${METHODS-mse awq gptq gptq+tune} TUNE_STEPS=${TUNE_STEPS:-100} CALIB_TOKENS=${CALIB_TOKENS:-16384} CTX=${CTX:-128} CHUNKS=${CHUNKS:--1} T=${T:-2}
use_work_dir sf-calib-vs-llamacpp
TOK_ARGS=()
[ -n "$TOKENIZER" ] && TOK_ARGS=(--tokenizer "$TOKENIZER")
ROWS=$WORK/rows.tsv  # file, made by, how
: >"$ROWS"

convert() {  # NAME ARGS...: shardforge convert SOURCE to WORK/NAME.gguf
  local name=$1
  shift
  "$SF" convert "$SOURCE" "${TOK_ARGS[@]}" --format gguf -o "$WORK/$name.gguf" --force -t "$T" "$@" \
    >/dev/null 2>"$WORK/err" || die "convert $*: $(tail -n1 "$WORK/err")"
}

# --- shardforge: the f32 reference (llama-imatrix and llama-quantize read it too), RTN, calibrated.
convert f32 --quant f32
printf 'f32\tshardforge\tf32\n' >>"$ROWS"
convert q4_0_rtn --quant q4_0
printf 'q4_0_rtn\tshardforge\tq4_0, round to nearest\n' >>"$ROWS"
for m in $METHODS; do
  tune=() how="--calib-method ${m%+tune}"
  [ "${m%+tune}" != "$m" ] && tune=(--calib-tune-steps "$TUNE_STEPS") how+=" --calib-tune-steps $TUNE_STEPS"
  convert "q4_0_${m/+/_}" --quant q4_0 --calib "$CALIB" --calib-method "${m%+tune}" "${tune[@]}" \
    --calib-tokens "$CALIB_TOKENS" --calib-ctx "$CTX"
  printf 'q4_0_%s\tshardforge\tq4_0, %s\n' "${m/+/_}" "$how" >>"$ROWS"
done

# --- llama.cpp: q4_0 from the same f32 file, without and with an importance matrix of the same text.
# The embedding and output projection in q8_0, as shardforge's policy stores them for a q4_0 base
# (llama-quantize's own choice is q4_0 / q6_K), so every file has the same types and bytes.
LQ_TYPES=(--token-embedding-type q8_0 --output-tensor-type q8_0)
CHUNKS_CALIB=$(( CALIB_TOKENS / CTX ))
"$LLAMA_CPP_BIN/llama-imatrix" -m "$WORK/f32.gguf" -f "$CALIB" -c "$CTX" -b "$CTX" --chunks "$CHUNKS_CALIB" \
  -t "$T" -o "$WORK/imatrix.dat" >"$WORK/imatrix.log" 2>&1 || die "llama-imatrix failed: $(tail -n2 "$WORK/imatrix.log")"
"$LLAMA_CPP_BIN/llama-quantize" "${LQ_TYPES[@]}" "$WORK/f32.gguf" "$WORK/llama_q4_0.gguf" q4_0 "$T" >"$WORK/quantize.log" 2>&1 ||
  die "llama-quantize failed: $(tail -n2 "$WORK/quantize.log")"
printf 'llama_q4_0\tllama.cpp\tllama-quantize q4_0\n' >>"$ROWS"
"$LLAMA_CPP_BIN/llama-quantize" "${LQ_TYPES[@]}" --imatrix "$WORK/imatrix.dat" "$WORK/f32.gguf" "$WORK/llama_q4_0_imatrix.gguf" q4_0 "$T" \
  >"$WORK/quantize_imatrix.log" 2>&1 || die "llama-quantize --imatrix failed: $(tail -n2 "$WORK/quantize_imatrix.log")"
printf 'llama_q4_0_imatrix\tllama.cpp\tllama-imatrix + llama-quantize q4_0\n' >>"$ROWS"

# --- Perplexity of every file by both tools (one window per batch, BOS first, second half scored).
RESULTS=$WORK/results.tsv
: >"$RESULTS"
SF_CHUNKS=()
[ "$CHUNKS" != -1 ] && SF_CHUNKS=(--chunks "$CHUNKS")
while IFS=$'\t' read -r name by how; do
  g=$WORK/$name.gguf
  lp=""
  if out=$("$LLAMA_CPP_BIN/llama-perplexity" -m "$g" -f "$TEXT" -c "$CTX" -b "$CTX" --chunks "$CHUNKS" -t "$T" 2>&1); then
    lp=$(grep -oE 'Final estimate: PPL = [0-9.]+' <<<"$out" | grep -oE '[0-9.]+$')
  else note "llama-perplexity $name failed: $(tail -n1 <<<"$out")"; fi
  sp=""
  if out=$("$SF" eval ppl "$g" --text "$TEXT" --ctx "$CTX" "${SF_CHUNKS[@]}" -t "$T" --json 2>"$WORK/err"); then
    sp=$($PY -c 'import json,sys; print(json.load(sys.stdin)["ppl"])' <<<"$out")
  else note "shardforge eval ppl $name failed: $(tail -n1 "$WORK/err")"; fi
  printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$by" "$how" "$(stat -c %s "$g")" "${lp:-}" "${sp:-}" >>"$RESULTS"
done <"$ROWS"

$PY - "$RESULTS" "$CALIB" "$TEXT" "$CALIB_TOKENS" "$CTX" <<'EOF'
import sys
res, calib, text, tokens, ctx = sys.argv[1:]
rows = [l.rstrip("\n").split("\t") for l in open(res)]
ref = {i: rows[0][i] for i in (4, 5)}  # the f32 row
print(f"calibration: {calib} ({tokens} tokens, windows of {ctx}); evaluation: {text} (windows of {ctx})")
print("| file | made by | bytes | llama-perplexity PPL | Δ vs f32 | shardforge eval PPL | Δ vs f32 |")
print("| --- | --- | --- | --- | --- | --- | --- |")
def delta(v, i):
    try: return f"{(float(v) / float(ref[i]) - 1) * 100:+.2f}%"
    except (ValueError, ZeroDivisionError): return ""
for name, by, how, size, lp, sp in rows:
    print(f"| {how} | {by} | {int(size):,} | {lp or 'failed'} | {delta(lp, 4)} | {sp or 'failed'} | {delta(sp, 5)} |")
EOF
