#!/usr/bin/env bash
# Long fuzzing runs: every libFuzzer target (or the ones named) for SECONDS each, from the same
# generated seeds as CI (tests/fuzz/make_seeds.py), then one line per target with the executions
# and the coverage reached (libFuzzer's final "cov:" edges and "ft:" features). Crashing inputs are
# left in WORK/crash-TARGET-*; exit 1 if any target found one. bench/README.md records the figures.
# Usage: bench/fuzz.sh FUZZ_BUILD_DIR [SECONDS] [TARGET...]
#   FUZZ_BUILD_DIR: a build with -DSHARDFORGE_FUZZ=ON, e.g. build-san from scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."
FUZZ=$(realpath "${1:?usage: bench/fuzz.sh FUZZ_BUILD_DIR [SECONDS] [TARGET...]}")
SECONDS_EACH=${2:-60}
shift $(( $# >= 2 ? 2 : 1 ))
TARGETS=("$@")
[ ${#TARGETS[@]} -gt 0 ] || TARGETS=(fuzz_pickle fuzz_torch_zip fuzz_shard fuzz_artifact fuzz_json_config fuzz_tokenizer fuzz_safetensors)
[ -x "$FUZZ/shardforge" ] || { echo "fuzz.sh: $FUZZ/shardforge missing (scripts/setup.sh build build-san)" >&2; exit 2; }

WORK=$(mktemp -d /tmp/shardforge-fuzz.XXXXXX)
echo "fuzz work directory: $WORK"
/usr/bin/python3 tests/fixtures/make_fixtures.py "$WORK/fixtures" >/dev/null
/usr/bin/python3 tests/fuzz/make_seeds.py "$WORK/seeds" --fixtures "$WORK/fixtures" --shardforge "$FUZZ/shardforge"

status=0
rows=()
for target in "${TARGETS[@]}"; do
  echo "== $target ($SECONDS_EACH s)"
  log="$WORK/$target.log"
  # New inputs go to WORK/seeds/work/TARGET; the generated seeds are read only.
  "$FUZZ/tests/fuzz/$target" -max_total_time="$SECONDS_EACH" -timeout=20 -rss_limit_mb=2048 -print_final_stats=1 \
      -artifact_prefix="$WORK/crash-$target-" "$WORK/seeds/work/$target" "$WORK/seeds/$target" >"$log" 2>&1 || true
  grep -E "^==[0-9]+==ERROR|^SUMMARY|Test unit written" "$log" || true
  # The last status line ("#RUNS DONE cov: C ft: F corp: N/SIZE ...", or the last before a crash).
  last=$(grep -E "^#[0-9]+" "$log" | tail -1)
  runs=$(sed -E 's/^#([0-9]+).*/\1/' <<<"$last")
  cov=$(sed -nE 's/.* cov: ([0-9]+).*/\1/p' <<<"$last")
  ft=$(sed -nE 's/.* ft: ([0-9]+).*/\1/p' <<<"$last")
  corp=$(sed -nE 's/.* corp: ([0-9]+)\/.*/\1/p' <<<"$last")
  rate=$(sed -nE 's/.* exec\/s: ([0-9]+).*/\1/p' <<<"$last")
  result=ok
  if ls "$WORK"/crash-"$target"-* "$WORK"/timeout-"$target"-* "$WORK"/oom-"$target"-* >/dev/null 2>&1 ||
     ! grep -qE "^Done [0-9]+ runs" "$log"; then
    result="FINDING (see $log)"
    status=1
  fi
  rows+=("$(printf '%-17s %7s s %10s runs %8s exec/s  cov %5s  ft %6s  corpus %5s  %s' "$target" "$SECONDS_EACH" \
           "$runs" "$rate" "$cov" "$ft" "$corp" "$result")")
done
echo
printf '%s\n' "${rows[@]}"
[ "$status" -eq 0 ] && rm -rf "$WORK"
exit $status
