#!/usr/bin/env bash
# Side by side with llama.cpp: the same checkpoint, the same quantization types (q4_0, q8_0), the
# same -p/-n/-t, run interleaved (llama.cpp, then shardforge, R rounds), medians printed in one table
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
#   GGUF_<scheme>  a GGUF to use when `shardforge convert --format gguf` is not available (GGUF_q4_0=...)
#   WORK         directory for the converted files and raw results (default: a temporary one, removed);
#                conversions already there (WORK/SCHEME.art, WORK/SCHEME.gguf) are reused, not redone
set -uo pipefail
cd "$(dirname "$0")/.."
PY=/usr/bin/python3

die() { echo "vs_llamacpp: $*" >&2; exit 2; }
note() { echo "vs_llamacpp: $*" >&2; }

[ $# -ge 1 ] && [ $# -le 2 ] || die "usage: LLAMA_CPP_BIN=DIR $0 SOURCE [TOKENIZER]"
SOURCE=$1
TOKENIZER=${2:-}
[ -n "${LLAMA_CPP_BIN:-}" ] || die "set LLAMA_CPP_BIN to a llama.cpp build's bin directory (this script never builds or downloads it)"
for tool in llama-bench llama-batched-bench llama-perplexity; do
  [ -x "$LLAMA_CPP_BIN/$tool" ] || die "$LLAMA_CPP_BIN/$tool: not found or not executable"
done
SF=${SHARDFORGE:-build/shardforge}
[ -x "$SF" ] || die "$SF: not found (build shardforge, or set SHARDFORGE)"
R=${R:-5} P=${P:-128} N=${N:-32} T=${T:-2} BATCHES=${BATCHES:-1,8} SCHEMES=${SCHEMES:-q4_0 q8_0}
TEXT=${TEXT:-../shared/corpus/tinystories_valid_head.txt} CTX=${CTX:-256} CHUNKS=${CHUNKS:-4}
PPL_R=${PPL_R:-$R}
[ -r "$TEXT" ] || die "$TEXT: no such text (set TEXT)"
if [ -n "${WORK:-}" ]; then
  mkdir -p "$WORK" || die "$WORK: cannot create"
else
  WORK=$(mktemp -d /tmp/sf-vs-llamacpp.XXXXXX)
  trap 'rm -rf "$WORK"' EXIT
fi
RESULTS=$WORK/results.tsv  # tool, scheme, row, round, value
: >"$RESULTS"
LOAD_BEFORE=$(uptime)
TOK_ARGS=()
[ -n "$TOKENIZER" ] && TOK_ARGS=(--tokenizer "$TOKENIZER")

record() { printf '%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" "$5" >>"$RESULTS"; }
now() { date +%s.%N; }

# --- What this shardforge can do: the bench interface grows (-r, --batch, -o json); say what is missing.
BENCH_HELP=$("$SF" bench --help 2>&1)
has_opt() { grep -qE -- "(^|[ ,])$1([ ,=]|$)" <<<"$BENCH_HELP"; }
SF_JSON=(--json)
has_opt "-o" && SF_JSON=(-o json)
SF_REPS=()
has_opt "-r" && SF_REPS=(-r 1)
SF_BATCH=1
has_opt "--batch" || { SF_BATCH=0; note "shardforge bench has no --batch: the batch rows show shardforge as n/a"; }

# --- Convert with our tool: GGUF for llama.cpp (and for shardforge once it runs GGUF), our artifact.
declare -A GGUF ART SF_TARGET
for s in $SCHEMES; do
  ART[$s]=$WORK/$s.art
  if [ ! -e "${ART[$s]}" ]; then
    "$SF" convert "$SOURCE" "${TOK_ARGS[@]}" --quant "$s" -o "${ART[$s]}" >/dev/null || die "convert $s to an artifact failed"
  fi
  GGUF[$s]=$WORK/$s.gguf
  if [ ! -e "${GGUF[$s]}" ] &&
    ! "$SF" convert "$SOURCE" "${TOK_ARGS[@]}" --quant "$s" --format gguf -o "${GGUF[$s]}" >/dev/null 2>"$WORK/gguf-$s.err"; then
    var=GGUF_$s
    if [ -n "${!var:-}" ] && [ -r "${!var}" ]; then
      note "shardforge cannot write GGUF ($(head -c 200 "$WORK/gguf-$s.err")); using $var=${!var}"
      GGUF[$s]=${!var}
    else
      note "shardforge cannot write GGUF ($(head -c 200 "$WORK/gguf-$s.err")) and $var is unset: skipping $s"
      unset "GGUF[$s]"
      continue
    fi
  fi
  # shardforge benches the very GGUF llama.cpp reads when its executor takes one, else its artifact.
  if "$SF" bench "${GGUF[$s]}" -p 1 -n 1 -t "$T" >/dev/null 2>&1; then
    SF_TARGET[$s]=${GGUF[$s]}
  else
    SF_TARGET[$s]=${ART[$s]}
  fi
done
[ ${#GGUF[@]} -gt 0 ] || die "no scheme has a GGUF to compare on"

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
parse_sf_bench() {  # shardforge bench JSON -> "prefill V\ndecode V\nbatchB V..."
  $PY -c '
import json, sys
doc = json.load(sys.stdin)
def num(x):
    if isinstance(x, dict):
        for k in ("median", "value"):
            if isinstance(x.get(k), (int, float)): return x[k]
        return None
    return x if isinstance(x, (int, float)) and not isinstance(x, bool) else None
def find(o, keys):
    if isinstance(o, dict):
        for k in keys:
            if k in o and num(o[k]) is not None: return num(o[k])
        for v in o.values():
            r = find(v, keys)
            if r is not None: return r
    elif isinstance(o, list):
        for v in o:
            r = find(v, keys)
            if r is not None: return r
    return None
top = {k: v for k, v in doc.items() if not isinstance(v, list)} if isinstance(doc, dict) else {}
for row in ("prefill", "decode"):
    v = find(top, (row + "_tokens_per_s", row))
    if v is None and isinstance(doc, dict) and isinstance(doc.get(row), dict):  # {"decode": {"tokens_per_s": ...}}
        v = find(doc[row], ("tokens_per_s", "median"))
    if v is not None: print(row, v)
# Batched decode: a list of objects each naming its batch size; the aggregate rate over all sequences
# is what llama-batched-bench calls S_TG.
def batches(o):
    if isinstance(o, list) and o and all(isinstance(e, dict) for e in o):
        if any(k in o[0] for k in ("batch", "batch_size", "sequences")):
            return o
    if isinstance(o, dict):
        for v in o.values():
            r = batches(v)
            if r: return r
    return None
for e in batches(doc) or []:
    b = next(e[k] for k in ("batch", "batch_size", "sequences") if k in e)
    v = find(e, ("aggregate_decode_tokens_per_s", "decode_tokens_per_s_total", "total_decode_tokens_per_s",
                 "decode_tokens_per_s", "tokens_per_s"))
    if v is not None: print("batch%d" % b, v)'
}

# --- Rounds, interleaved: within a round llama.cpp then shardforge on each measurement, scheme by scheme.
KV=$(( (P + N) * $(tr , '\n' <<<"$BATCHES" | sort -n | tail -1) ))
KV=$(( KV < CTX ? CTX : KV ))
for ((r = 1; r <= R; ++r)); do
  note "round $r of $R ($(cut -d, -f3- <<<"$(uptime)" | sed 's/^ *//'))"
  for s in $SCHEMES; do
    [ -n "${GGUF[$s]:-}" ] || continue
    g=${GGUF[$s]} a=${SF_TARGET[$s]}
    if out=$("$LLAMA_CPP_BIN/llama-bench" -m "$g" -p "$P" -n "$N" -t "$T" -r 1 -o json 2>"$WORK/err"); then
      while read -r row v; do record llama.cpp "$s" "$row" "$r" "$v"; done < <(parse_llama_bench <<<"$out")
    else note "llama-bench $s failed: $(tail -n1 "$WORK/err")"; fi
    if out=$("$SF" bench "$a" -p "$P" -n "$N" -t "$T" "${SF_REPS[@]}" "${SF_JSON[@]}" 2>"$WORK/err"); then
      rows=$(parse_sf_bench <<<"$out")
      grep -q '^decode ' <<<"$rows" || note "no decode tok/s found in shardforge bench's JSON: $(head -c 300 <<<"$out")"
      while read -r row v; do [[ $row == batch* ]] || record shardforge "$s" "$row" "$r" "$v"; done <<<"$rows"
    else note "shardforge bench $s failed: $(tail -n1 "$WORK/err")"; fi

    if out=$("$LLAMA_CPP_BIN/llama-batched-bench" -m "$g" -c "$KV" -npp "$P" -ntg "$N" -npl "$BATCHES" -t "$T" -tb "$T" \
      --output-format jsonl 2>"$WORK/err"); then
      while read -r row v; do record llama.cpp "$s" "$row" "$r" "$v"; done < <(parse_batched_bench <<<"$out")
    else note "llama-batched-bench $s failed: $(tail -n1 "$WORK/err")"; fi
    if [ "$SF_BATCH" = 1 ]; then
      if out=$("$SF" bench "$a" -p "$P" -n "$N" -t "$T" --batch "$BATCHES" "${SF_REPS[@]}" "${SF_JSON[@]}" 2>"$WORK/err"); then
        rows=$(parse_sf_bench <<<"$out")
        grep -q '^batch' <<<"$rows" || note "no per-batch decode tok/s found in shardforge bench --batch's JSON: $(head -c 300 <<<"$out")"
        while read -r row v; do [[ $row == batch* ]] && record shardforge "$s" "$row" "$r" "$v"; done <<<"$rows"
      else note "shardforge bench --batch $s failed: $(tail -n1 "$WORK/err")"; fi
    fi

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
    if out=$("$SF" eval ppl "$a" --text "$TEXT" --ctx "$CTX" --chunks "$CHUNKS" -t "$T" --json 2>"$WORK/err"); then
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
  if [ -x "$BK" ] && name=$("$BK" --benchmark_list_tests 2>/dev/null | grep -iE 'bandwidth' | head -n1) && [ -n "$name" ]; then
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
  record shardforge "$s" weight_bytes 1 "$("$SF" inspect "${ART[$s]}" --json | $PY -c '
import json, sys
ts = json.load(sys.stdin)["tensors"]
total = sum(t["bytes"] for t in ts)
if any(t["role"] == "output" for t in ts):  # untied: the embedding gives one row per token
    for t in ts:
        if t["role"] == "token_embedding": total -= t["bytes"] - t["bytes"] // t["shape"][0]
print(total)')"
done

# --- The table: medians over rounds, ours / llama.cpp.
$PY - "$RESULTS" "${READ_BW_GBS:-}" "$P" "$N" "$T" "$CTX" "$CHUNKS" "$R" "$PPL_R" "$LOAD_BEFORE" "$LOAD_AFTER" \
  "$(for s in "${!SF_TARGET[@]}"; do [[ ${SF_TARGET[$s]} == *.gguf ]] && echo "$s:gguf" || echo "$s:artifact"; done)" "$SCHEMES" <<'EOF'
import statistics, sys
res, bw, P, N, T, ctx, chunks, R, ppl_r, load0, load1, targets, order = sys.argv[1:]
order = order.split()
what = dict(t.split(":") for t in targets.split())
vals = {}
for line in open(res):
    tool, scheme, row, _, v = line.rstrip("\n").split("\t")
    vals.setdefault((tool, scheme, row), []).append(float(v))
med = {k: statistics.median(v) for k, v in vals.items()}
schemes = sorted({k[1] for k in vals}, key=lambda s: (s not in order, order.index(s) if s in order else s))
rows = [("prefill", f"prefill tok/s (-p {P})"), ("decode", f"decode tok/s (-n {N})")]
rows += [(r, f"batch {r[5:]} decode tok/s (all sequences)") for r in sorted({k[2] for k in vals if k[2].startswith("batch")}, key=lambda r: int(r[5:]))]
rows += [("ppl", f"perplexity (ctx {ctx}, {chunks} windows)"), ("ppl_seconds", "perplexity wall s (lower is better)")]
print(f"threads {T}, {R} rounds interleaved ({ppl_r} for perplexity), medians; shardforge ran its " +
      ", ".join(f"{s} {w}" for s, w in sorted(what.items())))
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
    wa, wb = med.get(("llama.cpp", s, "weight_bytes")), med.get(("shardforge", s, "weight_bytes"))
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
