#!/usr/bin/env bash
# The main job on the bundled sample: convert samples/jargon-llama to several schemes, then print
# scheme, bits per weight, artifact size and held-out perplexity (with standard error).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh build >/dev/null
SF=build/shardforge
OUT=$(mktemp -d /tmp/shardforge-demo.XXXXXX)
trap 'rm -rf "$OUT"' EXIT

echo "sample: samples/jargon-llama (LLaMA architecture, trained on the Jargon File; see samples/README.md)"
$SF inspect samples/jargon-llama --json | /usr/bin/python3 -c '
import json, sys
m = json.load(sys.stdin)["model"]
print("model: %d layers, d_model %d, %d heads / %d kv heads, ffn %d, vocab %d" % (
    m["n_layers"], m["d_model"], m["n_heads"], m["n_kv_heads"], m["ffn_dim"], m["vocab_size"]))'
echo "held-out text: samples/heldout.txt, windows of 128 tokens, second half scored"
echo

rows=()
for scheme in f32 f16 bf16 int8 int4:g32 int4:g128; do
  dir="$OUT/${scheme//:/_}"
  $SF convert samples/jargon-llama -o "$dir" --quant "$scheme" --json > "$OUT/convert.json"
  $SF verify "$dir" >/dev/null
  $SF eval ppl "$dir" --text samples/heldout.txt --ctx 128 --json > "$OUT/ppl.json"
  rows+=("$(/usr/bin/python3 - "$scheme" "$OUT/convert.json" "$OUT/ppl.json" <<'PY'
import json, sys
scheme, conv, ppl = sys.argv[1], json.load(open(sys.argv[2])), json.load(open(sys.argv[3]))
size = sum(f["bytes"] for f in conv["files"])
print("%-10s %6.2f %10.1f KiB   %8.3f ± %.3f" % (scheme, conv["summary"]["bits_per_weight"], size / 1024,
                                             ppl["ppl"], ppl["ppl_stderr"]))
PY
)")
done
printf '%-10s %6s %14s   %s\n' scheme bits/w size "PPL ± stderr"
printf '%s\n' "-----------------------------------------------------"
printf '%s\n' "${rows[@]}"
echo
echo "greedy continuation (int4:g32): "
$SF run "$OUT/int4_g32" -p "A hacker is a person who" -n 40
