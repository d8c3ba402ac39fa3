#!/usr/bin/env bash
# How far perplexity moves for the same model: each seed is a copy of the model with its FFN hidden
# channels permuted (bench/permute_ffn.py; the f32 model computes the same logits), converted with
# round-to-nearest and with each calibration method, and scored as bench/calib_evidence.sh scores.
# The permutation changes which channels share a quantization group in ffn.down, so the rounding
# lands differently: the spread of the share of RTN's loss a method recovers over the seeds is how
# much of a single run's figure is that luck, and its mean is the method's figure with the luck
# averaged out. Seed 0 is the model as published (calib_evidence.sh's run).
#
# Usage: bench/calib_spread.sh [-t THREADS] [--models sample,stories] [--schemes int4:g128,int4:g32,q4_0]
#                              [--methods gptq] [--seeds 0,1,2,3,4,5,6] [--out DIR] [--json FILE]
# Settings: bench/lib/calib_models.sh (the same texts and windows as calib_evidence.sh).
# Cost: seeds x schemes x (1 + methods) conversions; stories260K with gptq, 7 seeds x 3 schemes:
# about 40 minutes on 2 cores.
set -uo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=lib/common.sh
. bench/lib/common.sh

T=2 MODELS=sample,stories SCHEMES=int4:g128,int4:g32,q4_0 METHODS=gptq SEEDS=0,1,2,3,4,5,6 OUT="" JSON=""
while [ $# -gt 0 ]; do
  case $1 in
    -t) T=${2:?}; shift 2 ;;
    --models) MODELS=${2:?}; shift 2 ;;
    --schemes) SCHEMES=${2:?}; shift 2 ;;
    --methods) METHODS=${2:?}; shift 2 ;;
    --seeds) SEEDS=${2:?}; shift 2 ;;
    --out) OUT=${2:?}; shift 2 ;;
    --json) JSON=${2:?}; shift 2 ;;
    -h|--help) sed -n '2,/^set -uo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument $1 (see --help)" ;;
  esac
done
SF=${SHARDFORGE:-build/shardforge}
[ -x "$SF" ] || die "$SF: not found (build it with scripts/setup.sh build)"
WORK=$OUT
use_work_dir sf-calib-spread
# shellcheck source=lib/calib_models.sh
. bench/lib/calib_models.sh
RESULTS=$WORK/results.tsv  # model, seed, scheme, method, ppl
: >"$RESULTS"

for model in ${MODELS//,/ }; do
  prepare_model "$model" || continue
  echo "$model: ${SRC[$model]}; ${DESC[$model]}; threads $T; seeds $SEEDS"
  convert_model "$model" "${SRC[$model]}" f32 --dtype f32 &&
    printf '%s\t-\t-\tf32\t%s\n' "$model" "$(model_ppl "$model" f32)" >>"$RESULTS"
  for seed in ${SEEDS//,/ }; do
    src=${SRC[$model]}
    if [ "$seed" != 0 ]; then
      src=$WORK/$model/permuted_$seed
      [ -d "${SRC[$model]}" ] || src=$src.pt
      $PY bench/permute_ffn.py "${SRC[$model]}" "$src" --seed "$seed" >/dev/null || die "permute_ffn.py failed on ${SRC[$model]}"
    fi
    for scheme in ${SCHEMES//,/ }; do
      for m in rtn ${METHODS//,/ }; do
        name=s${seed}_${scheme//:/_}_$m args=(--quant "$scheme")
        [ "$m" = rtn ] || args+=(--calib "${CALIB[$model]}" --calib-method "$m")
        convert_model "$model" "$src" "$name" "${args[@]}" || continue
        ppl=$(model_ppl "$model" "$name")
        printf '%s\t%s\t%s\t%s\t%s\n' "$model" "$seed" "$scheme" "$m" "$ppl" >>"$RESULTS"
        note "$model seed $seed $scheme $m: ppl $ppl"
        rm -rf "${WORK:?}/$model/$name"
      done
    done
    [ "$seed" = 0 ] || rm -rf "$src"
  done
done

$PY - "$RESULTS" "$METHODS" "$JSON" <<'PYEOF'
import json, statistics, sys
res, methods, out = sys.argv[1], sys.argv[2].split(","), sys.argv[3]
rows = [l.rstrip("\n").split("\t") for l in open(res) if l.strip()]
f32, ppl = {}, {}
for model, seed, scheme, method, p in rows:
    if not p: continue
    if method == "f32": f32[model] = float(p)
    else: ppl.setdefault(model, {}).setdefault(scheme, {}).setdefault(method, {})[seed] = float(p)
summary = {}
print("\nrecovers = (RTN - method) / (RTN - f32), RTN and method on the same permuted copy")
for model, schemes in ppl.items():
    f = f32.get(model)
    if f is None: continue
    print(f"\n### {model} (f32 ppl {f:.4f})")
    print("| scheme | method | seeds | RTN ppl (min–max) | method ppl (min–max) | recovers: mean | sd | min | max |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for scheme, by in schemes.items():
        rtn = by.get("rtn", {})
        for m in methods:
            got = by.get(m, {})
            seeds = sorted(set(rtn) & set(got), key=int)
            rec = [(rtn[s] - got[s]) / (rtn[s] - f) * 100 for s in seeds if rtn[s] != f]
            if not rec: continue
            sd = statistics.stdev(rec) if len(rec) > 1 else 0.0
            r = [rtn[s] for s in seeds]; g = [got[s] for s in seeds]
            print(f"| {scheme} | {m} | {len(rec)} | {min(r):.4f}–{max(r):.4f} | {min(g):.4f}–{max(g):.4f} | "
                  f"{statistics.mean(rec):.1f}% | {sd:.1f} | {min(rec):.1f}% | {max(rec):.1f}% |")
            summary.setdefault(model, {}).setdefault(scheme, {})[m] = {
                "seeds": seeds, "rtn": [rtn[s] for s in seeds], "ppl": [got[s] for s in seeds], "recovers_pct": rec,
                "mean_pct": statistics.mean(rec), "sd": sd}
if out:
    json.dump({"f32": f32, "summary": summary}, open(out, "w"), indent=2)
    print(f"\nnumbers written to {out}")
PYEOF
