#!/usr/bin/env bash
# Side by side with llama.cpp: the same checkpoint, the same quantization types (q4_0, q8_0), the
# same -p/-n/-t, the same GGUF files (written by `shardforge convert --format gguf`), run interleaved (llama.cpp, then shardforge, R rounds), medians printed in one table
# with ours/llama.cpp per row, and the roofline: weight bytes read per decoded token ÷ read bandwidth.
#
# Usage: LLAMA_CPP_BIN=/path/to/llama.cpp/build/bin bench/vs_llamacpp.sh SOURCE [TOKENIZER]
#
# llama.cpp is never a dependency: this script does not fetch, build or install it. Point
# LLAMA_CPP_BIN at a build you made yourself (llama-bench, llama-batched-bench, llama-perplexity).
# SOURCE is anything `shardforge convert` reads; TOKENIZER is given to it as --tokenizer.
#
# Settings (environment):
#   SHARDFORGE   shardforge binary                         (default: build/shardforge)
#   R            rounds                                    (default: 5)
#   P N T        prompt tokens, generated tokens, threads  (default: 128 32 2)
#   BATCHES      batch sizes for the batched rows          (default: 1,8)
#   SCHEMES      quantization schemes                      (default: "q4_0 q8_0")
#   TEXT CTX CHUNKS  perplexity text, window, windows      (default: ../shared/corpus/tinystories_valid_head.txt 256 4)
#   PPL_R        rounds of the perplexity rows             (default: R; the value is deterministic, only its time varies)
#   READ_BW_GBS  machine read bandwidth in GB/s for the roofline row; otherwise a bandwidth benchmark
#                of SF_BENCH_KERNELS (default: build/bench/sf_bench_kernels) when it has one
#   WORK         directory for the converted files and raw results (default: a temporary one, removed);
#                GGUFs already there (WORK/SCHEME.gguf) are reused, not redone
set -uo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=lib/common.sh
. bench/lib/common.sh

[ $# -ge 1 ] && [ $# -le 2 ] || die "usage: LLAMA_CPP_BIN=DIR $0 SOURCE [TOKENIZER]"
SOURCE=$1
TOKENIZER=${2:-}
need_llama_cpp llama-bench llama-batched-bench llama-perplexity
SF=${SHARDFORGE:-build/shardforge}
[ -x "$SF" ] || die "$SF: not found (build shardforge, or set SHARDFORGE)"
R=${R:-5} P=${P:-128} N=${N:-32} T=${T:-2} BATCHES=${BATCHES:-1,8} SCHEMES=${SCHEMES:-q4_0 q8_0}
TEXT=${TEXT:-../shared/corpus/tinystories_valid_head.txt} CTX=${CTX:-256} CHUNKS=${CHUNKS:-4}
PPL_R=${PPL_R:-$R}
[ -r "$TEXT" ] || die "$TEXT: no such text (set TEXT)"
use_work_dir sf-vs-llamacpp
RESULTS=$WORK/results.tsv  # tool, scheme, row, round, value
: >"$RESULTS"
LOAD_BEFORE=$(uptime)
TOK_ARGS=()
[ -n "$TOKENIZER" ] && TOK_ARGS=(--tokenizer "$TOKENIZER")

record() { printf '%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" "$5" >>"$RESULTS"; }
now() { date +%s.%N; }

SF_JSON=(-o json)
SF_REPS=(-r 1)

# --- Convert with our tool to GGUF: both tools then run the very same file.
declare -A GGUF
for s in $SCHEMES; do
  GGUF[$s]=$WORK/$s.gguf
  [ -e "${GGUF[$s]}" ] ||
    "$SF" convert "$SOURCE" "${TOK_ARGS[@]}" --quant "$s" --format gguf -o "${GGUF[$s]}" >/dev/null ||
    die "convert --quant $s --format gguf failed"
done

# --- Parsers (python, so a changed field is an error naming it rather than a silent zero).
parse_llama_bench() {  # JSON array from llama-bench -o json -> "prefill V\ndecode V"
  $PY -c '
import json, sys
for t in json.load(sys.stdin):
    if t["n_prompt"] > 0 and t["n_gen"] == 0: print("prefill", t["avg_ts"])
    if t["n_gen"] > 0 and t["n_prompt"] == 0: print("decode", t["avg_ts"])'
}
parse_batched_bench() {  # JSONL from llama-batched-bench --output-format jsonl -> "batch B V" (aggregate decode tok/s)
  $PY -c '
import json, sys
for line in sys.stdin:
    line = line.strip()
    if line.startswith("{"):
        t = json.loads(line)
        print("batch%d" % t["pl"], t["speed_tg"])'
}
parse_sf_bench() {  # shardforge bench -o json -> "prefill V", "decode V" (batch 1) and "batchB V" per batch size
  $PY -c '
import json, sys
doc = json.load(sys.stdin)
for row in doc["rows"]:
    v = row["tokens_per_s"]["median"]
    if row["test"].startswith("pp"):
        print("prefill", v)
    else:
        if row["batch"] == 1: print("decode", v)
        print("batch%d" % row["batch"], v)  # aggregate over the batch, as llama-batched-bench S_TG
'
}

# --- Rounds, interleaved: within a round llama.cpp then shardforge on each measurement, scheme by scheme.
SF_DECODE_PROMPT=16  # shardforge bench: each sequence of a tg row first prefills 16 untimed tokens
KV=$(( (SF_DECODE_PROMPT + N) * $(tr , '\n' <<<"$BATCHES" | sort -n | tail -1) ))
KV=$(( KV < CTX ? CTX : KV ))
for ((r = 1; r <= R; ++r)); do
  note "round $r of $R ($(cut -d, -f3- <<<"$(uptime)" | sed 's/^ *//'))"
  for s in $SCHEMES; do
    [ -n "${GGUF[$s]:-}" ] || continue
    g=${GGUF[$s]}
    if out=$("$LLAMA_CPP_BIN/llama-bench" -m "$g" -p "$P" -n "$N" -t "$T" -r 1 -o json 2>"$WORK/err"); then
      while read -r row v; do record llama.cpp "$s" "$row" "$r" "$v"; done < <(parse_llama_bench <<<"$out")
    else note "llama-bench $s failed: $(tail -n1 "$WORK/err")"; fi
    # The batched rows decode N tokens per sequence after a prompt of SF_DECODE_PROMPT tokens, as
    # shardforge's tg rows do; llama-batched-bench's S_TG is the same aggregate rate.
    if out=$("$LLAMA_CPP_BIN/llama-batched-bench" -m "$g" -c "$KV" -npp "$SF_DECODE_PROMPT" -ntg "$N" -npl "$BATCHES" \
      -t "$T" -tb "$T" --output-format jsonl 2>"$WORK/err"); then
      while read -r row v; do record llama.cpp "$s" "$row" "$r" "$v"; done < <(parse_batched_bench <<<"$out")
    else note "llama-batched-bench $s failed: $(tail -n1 "$WORK/err")"; fi
    if out=$("$SF" bench "$g" -p "$P" -n "$N" -t "$T" --batch "$BATCHES" "${SF_REPS[@]}" "${SF_JSON[@]}" 2>"$WORK/err"); then
      while read -r row v; do record shardforge "$s" "$row" "$r" "$v"; done < <(parse_sf_bench <<<"$out")
    else note "shardforge bench $s failed: $(tail -n1 "$WORK/err")"; fi

    [ "$r" -le "$PPL_R" ] || continue
    # One window per batch (-b CTX), as shardforge runs them; both put BOS first and score the second half.
    t0=$(now)
    if out=$("$LLAMA_CPP_BIN/llama-perplexity" -m "$g" -f "$TEXT" -c "$CTX" -b "$CTX" --chunks "$CHUNKS" -t "$T" -tb "$T" 2>&1); then
      t1=$(now)
      ppl=$(grep -oE 'Final estimate: PPL = [0-9.]+' <<<"$out" | grep -oE '[0-9.]+$')
      [ -n "$ppl" ] && record llama.cpp "$s" ppl "$r" "$ppl"
      record llama.cpp "$s" ppl_seconds "$r" "$($PY -c "print($t1 - $t0)")"
    else note "llama-perplexity $s failed: $(tail -n1 <<<"$out")"; fi
    t0=$(now)
    if out=$("$SF" eval ppl "$g" --text "$TEXT" --ctx "$CTX" --chunks "$CHUNKS" -t "$T" --json 2>"$WORK/err"); then
      t1=$(now)
      record shardforge "$s" ppl "$r" "$($PY -c 'import json,sys; print(json.load(sys.stdin)["ppl"])' <<<"$out")"
      record shardforge "$s" ppl_seconds "$r" "$($PY -c "print($t1 - $t0)")"
    else note "shardforge eval ppl $s failed: $(tail -n1 "$WORK/err")"; fi
  done
done
LOAD_AFTER=$(uptime)

# --- Roofline: bytes each decoded token reads (every weight once, one row of an untied embedding).
if [ -z "${READ_BW_GBS:-}" ]; then
  BK=${SF_BENCH_KERNELS:-build/bench/sf_bench_kernels}
  if [ -x "$BK" ] && name=$("$BK" --benchmark_list_tests 2>/dev/null | grep -E "^BM_MemoryRead/$T/" | head -n1) && [ -n "$name" ]; then
    READ_BW_GBS=$("$BK" --benchmark_filter="^${name}\$" --benchmark_format=json 2>/dev/null |
      $PY -c 'import json,sys; print(json.load(sys.stdin)["benchmarks"][0]["bytes_per_second"] / 1e9)') || READ_BW_GBS=
  else
    note "no READ_BW_GBS and no bandwidth benchmark in $BK: the roofline row is n/a"
  fi
fi
for s in $SCHEMES; do
  [ -n "${GGUF[$s]:-}" ] || continue
  record llama.cpp "$s" weight_bytes 1 "$($PY - "${GGUF[$s]}" <<'EOF'
# GGUF v2/v3 header walk: tensor infos give name, dims and type; bytes = elements / block * block bytes.
import struct, sys
BLOCK = {0: (1, 4), 1: (1, 2), 30: (1, 2), 2: (32, 18), 3: (32, 20), 6: (32, 22), 7: (32, 24), 8: (32, 34),
         10: (256, 84), 11: (256, 110), 12: (256, 144), 13: (256, 176), 14: (256, 210), 15: (256, 292)}
SCALAR = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
f = open(sys.argv[1], "rb")
def u(fmt): return struct.unpack("<" + fmt, f.read(struct.calcsize("<" + fmt)))[0]
def string(): return f.read(u("Q"))
def value(t):
    if t == 8: string()
    elif t == 9:
        et, n = u("I"), u("Q")
        if et in SCALAR: f.seek(SCALAR[et] * n, 1)
        else:
            for _ in range(n): value(et)
    else: f.seek(SCALAR[t], 1)
assert f.read(4) == b"GGUF" and u("I") in (2, 3)
nt, nkv = u("Q"), u("Q")
for _ in range(nkv): string(); value(u("I"))
tensors = {}
for _ in range(nt):
    name = string().decode()
    dims = [u("Q") for _ in range(u("I"))]
    typ = u("I"); u("Q")
    n = 1
    for d in dims: n *= d
    blk, size = BLOCK[typ]
    tensors[name] = (n // blk * size, dims)
total = sum(b for b, _ in tensors.values())
emb = tensors.get("token_embd.weight")
if emb and "output.weight" in tensors:  # untied: the embedding gives one row per token
    total -= emb[0] - emb[0] // emb[1][1]
print(total)
EOF
)"
done

# --- The table: medians over rounds, ours / llama.cpp.
$PY - "$RESULTS" "${READ_BW_GBS:-}" "$P" "$N" "$T" "$CTX" "$CHUNKS" "$R" "$PPL_R" "$LOAD_BEFORE" "$LOAD_AFTER" \
  "$SCHEMES" <<'EOF'
import statistics, sys
res, bw, P, N, T, ctx, chunks, R, ppl_r, load0, load1, order = sys.argv[1:]
order = order.split()
vals = {}
for line in open(res):
    tool, scheme, row, _, v = line.rstrip("\n").split("\t")
    vals.setdefault((tool, scheme, row), []).append(float(v))
med = {k: statistics.median(v) for k, v in vals.items()}
schemes = sorted({k[1] for k in vals}, key=lambda s: (s not in order, order.index(s) if s in order else s))
rows = [("prefill", f"prefill tok/s (-p {P})"), ("decode", f"decode tok/s (-n {N})")]
rows += [(r, f"batch {r[5:]} decode tok/s (all sequences)") for r in sorted({k[2] for k in vals if k[2].startswith("batch")}, key=lambda r: int(r[5:]))]
rows += [("ppl", f"perplexity (ctx {ctx}, {chunks} windows)"), ("ppl_seconds", "perplexity wall s (lower is better)")]
print(f"threads {T}, {R} rounds interleaved ({ppl_r} for perplexity), medians; both tools ran the same GGUF files")
print(f"load before: {load0.strip()}\nload after:  {load1.strip()}\n")
print("| scheme | row | llama.cpp | shardforge | ours / llama.cpp |")
print("| --- | --- | --- | --- | --- |")
def cell(x): return "n/a" if x is None else (f"{x:.2f}" if x < 1000 else f"{x:.0f}")
for s in schemes:
    for key, label in rows:
        a, b = med.get(("llama.cpp", s, key)), med.get(("shardforge", s, key))
        if a is None and b is None: continue
        ratio = f"{b / a:.2f}" if a and b is not None else "n/a"
        print(f"| {s} | {label} | {cell(a)} | {cell(b)} | {ratio} |")
    wa = wb = med.get(("llama.cpp", s, "weight_bytes"))  # one GGUF for both tools
    if bw:
        g = float(bw) * 1e9
        ra, rb = (g / wa if wa else None), (g / wb if wb else None)
        print(f"| {s} | roofline decode tok/s ({float(bw):.1f} GB/s ÷ MB/token {wa / 1e6 if wa else 0:.1f} / {wb / 1e6 if wb else 0:.1f}) "
              f"| {cell(ra)} | {cell(rb)} | {rb / ra if ra and rb else float('nan'):.2f} |")
        da, db = med.get(("llama.cpp", s, "decode")), med.get(("shardforge", s, "decode"))
        fa = f"{100 * da / ra:.0f}%" if da and ra else "n/a"
        fb = f"{100 * db / rb:.0f}%" if db and rb else "n/a"
        print(f"| {s} | decode as share of its roofline | {fa} | {fb} | |")
    else:
        print(f"| {s} | roofline | n/a (set READ_BW_GBS) | | |")
EOF
