#!/usr/bin/env bash
# The main job on the bundled sample: convert samples/jargon-llama with eight schemes and print, for
# each, bits per weight, size, held-out perplexity ± standard error, its change against f32,
# KL-divergence and top-1 agreement with f32, and prefill and decode speed - one `shardforge compare`
# run, which also draws perplexity against bits per weight in demo-out/compare.svg.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh build >/dev/null
SF=build/shardforge

echo "sample: samples/jargon-llama (LLaMA architecture, trained on the Jargon File; see samples/README.md)"
$SF inspect samples/jargon-llama --json | /usr/bin/python3 -c '
import json, sys
m = json.load(sys.stdin)["model"]
print("model: %d layers, d_model %d, %d heads / %d kv heads, ffn %d, vocab %d" % (
    m["n_layers"], m["d_model"], m["n_heads"], m["n_kv_heads"], m["ffn_dim"], m["vocab_size"]))'
echo "held-out text: samples/heldout.txt, windows of 128 tokens, second half scored; reference: f32"
echo
KEEP=$(mktemp -d /tmp/shardforge-demo.XXXXXX)
trap 'rm -rf "$KEEP"' EXIT
mkdir -p demo-out
$SF compare samples/jargon-llama --schemes f32,f16,bf16,int8,q8_0,int4:g128,int4:g32,q4_0 \
    --text samples/heldout.txt --ctx 128 --bench-reps 3 --keep "$KEEP" --plot demo-out/compare.svg
echo
echo "plot: $(pwd)/demo-out/compare.svg (perplexity ± stderr against bits per weight, one point per scheme)"
echo
echo "greedy continuation from the int4:g32 artifact:"
$SF run "$KEEP/int4_g32" -p "A hacker is a person who" -n 40
