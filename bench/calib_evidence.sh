#!/usr/bin/env bash
# Calibration evidence: for each model and scheme, the held-out perplexity of f32, round-to-nearest (RTN)
# and every calibration method (`shardforge convert --calib FILE --calib-method M`), one markdown table
# per model with the best method, how much of RTN's loss it recovers, (RTN - best) / (RTN - f32), and the
# bits per weight of RTN and of every calibrated artifact (`inspect --json`), which must be equal:
# calibration changes the codes, not the size. A method worse than RTN is flagged. A method M+tune is M
# followed by end-to-end scale tuning (--calib-method M --calib-tune-steps N).
#
# Usage: bench/calib_evidence.sh [-t THREADS] [--models sample,stories] [--schemes int4:g128,int4:g32,q4_0]
#                                [--methods mse,awq,gptq,gptq+tune] [--tune-steps 100] [--out DIR] [--json FILE]
#
# Settings (fixed in bench/lib/calib_models.sh so runs compare): sample on samples/calib.txt /
# samples/heldout.txt at --ctx 128; stories260K (from ../shared, skipped when absent) calibrated and
# evaluated on disjoint parts of tinystories_valid_head.txt at --ctx 256, 200 windows.
#   --out DIR    keep the artifacts there (default: a temporary directory, removed)
#   SHARDFORGE   binary (default: build/shardforge; built with scripts/setup.sh build when missing)
# A full run (2 models x 3 schemes x 6 artifacts) takes about 35 minutes on 2 cores, most of it the tuning.
set -uo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=lib/common.sh
. bench/lib/common.sh

T=2 MODELS=sample,stories SCHEMES=int4:g128,int4:g32,q4_0 METHODS=mse,awq,gptq,gptq+tune TUNE_STEPS=100 OUT="" JSON=""
while [ $# -gt 0 ]; do
  case $1 in
    -t) T=${2:?}; shift 2 ;;
    --models) MODELS=${2:?}; shift 2 ;;
    --schemes) SCHEMES=${2:?}; shift 2 ;;
    --methods) METHODS=${2:?}; shift 2 ;;
    --tune-steps) TUNE_STEPS=${2:?}; shift 2 ;;
    --out) OUT=${2:?}; shift 2 ;;
    --json) JSON=${2:?}; shift 2 ;;
    -h|--help) sed -n '2,/^set -uo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument $1 (see --help)" ;;
  esac
done
SF=${SHARDFORGE:-build/shardforge}
if [ ! -x "$SF" ]; then
  [ -z "${SHARDFORGE:-}" ] || die "$SF: not found"
  note "no $SF; building it (scripts/setup.sh build)"
  scripts/setup.sh build >/dev/null || die "scripts/setup.sh build failed"
fi
WORK=$OUT
use_work_dir sf-calib-evidence
RESULTS=$WORK/results.tsv  # model, scheme, method, ppl, bits per weight, file bytes
: >"$RESULTS"
. bench/lib/calib_models.sh

convert() {  # MODEL NAME ARGS...: convert MODEL's source to WORK/MODEL/NAME
  local model=$1
  shift
  convert_model "$model" "${SRC[$model]}" "$@"
}
measure() {  # MODEL SCHEME METHOD NAME: perplexity and size of WORK/MODEL/NAME into RESULTS
  local model=$1 scheme=$2 method=$3 a=$WORK/$1/$4 ppl bpw
  ppl=$(model_ppl "$model" "$4")
  bpw=$("$SF" inspect "$a" --json | $PY -c 'import json,sys; d=json.load(sys.stdin); print(d["summary"]["bits_per_weight"], d["file_bytes"])')
  printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$model" "$scheme" "$method" "$ppl" ${bpw:-"" ""} >>"$RESULTS"
  note "$model $scheme $method: ppl $ppl"
}

for model in ${MODELS//,/ }; do
  prepare_model "$model" || continue
  echo "$model: ${SRC[$model]}; ${DESC[$model]}; threads $T"
  convert "$model" f32 --dtype f32 && measure "$model" - f32 f32
  for scheme in ${SCHEMES//,/ }; do
    s=${scheme//:/_}
    convert "$model" "${s}_rtn" --quant "$scheme" && measure "$model" "$scheme" rtn "${s}_rtn"
    for m in ${METHODS//,/ }; do
      tune=()
      [ "${m%+tune}" != "$m" ] && tune=(--calib-tune-steps "$TUNE_STEPS")
      convert "$model" "${s}_${m/+/_}" --quant "$scheme" --calib "${CALIB[$model]}" --calib-method "${m%+tune}" \
        "${tune[@]}" && measure "$model" "$scheme" "$m" "${s}_${m/+/_}"
    done
  done
done

$PY - "$RESULTS" "$METHODS" "$JSON" <<'PYEOF'
import json, sys
res, methods, out = sys.argv[1], sys.argv[2].split(","), sys.argv[3]
rows = [l.rstrip("\n").split("\t") for l in open(res) if l.strip()]
num = lambda v: float(v) if v else None
data = {}
for model, scheme, method, ppl, bpw, size in rows:
    data.setdefault(model, {}).setdefault(scheme, {})[method] = {
        "ppl": num(ppl), "bits_per_weight": num(bpw), "file_bytes": int(size) if size else None}
summary = {}
print("\nbest recovers = (RTN - best) / (RTN - f32): the share of RTN's perplexity loss the best method wins back")
for model, schemes in data.items():
    f32 = schemes.get("-", {}).get("f32", {}).get("ppl")
    print(f"\n### {model}" + (f" (f32 ppl {f32:.4f})" if f32 else ""))
    print("| scheme | f32 | RTN | " + " | ".join(methods) + " | best | best recovers | bpw RTN | bpw calibrated |")
    print("|" + " --- |" * (len(methods) + 7))
    flags = []
    for scheme, r in schemes.items():
        if scheme == "-": continue
        rtn = r.get("rtn", {}).get("ppl")
        got = {m: r[m]["ppl"] for m in methods if r.get(m, {}).get("ppl") is not None}
        best = min(got, key=got.get) if got else None
        rec = None
        if best and rtn is not None and f32 is not None and rtn != f32:
            rec = (rtn - got[best]) / (rtn - f32) * 100
        bpws = {m: r[m]["bits_per_weight"] for m in r if m != "rtn" and r[m]["bits_per_weight"] is not None}
        rbpw = r.get("rtn", {}).get("bits_per_weight")
        same = all(abs(b - rbpw) < 1e-9 for b in bpws.values()) if rbpw is not None else False
        for m, p in got.items():
            if rtn is not None and p > rtn: flags.append(f"{scheme} {m}: {p:.4f} is worse than RTN {rtn:.4f}")
        if not same: flags.append(f"{scheme}: calibrated bits per weight {bpws} differ from RTN's {rbpw}")
        fmt = lambda v: f"{v:.4f}" if v is not None else "failed"
        cal = ", ".join(sorted({f"{b:.4f}" for b in bpws.values()})) or "-"
        print(f"| {scheme} | {fmt(f32)} | {fmt(rtn)} | " + " | ".join(fmt(r.get(m, {}).get("ppl")) for m in methods)
              + f" | {best or '-'} | {f'{rec:.1f}%' if rec is not None else '-'} | {fmt(rbpw)} | {cal}"
              + (" (same)" if same else " (DIFFERENT)") + " |")
        summary.setdefault(model, {})[scheme] = {"best": best, "best_recovers_pct": rec, "same_size": same}
    for f in flags: print(f"- FLAG: {f}")
if out:
    json.dump({"results": data, "summary": summary}, open(out, "w"), indent=2)
    print(f"\nnumbers written to {out}")
PYEOF
