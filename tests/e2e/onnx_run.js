// Runs graphs written by `shardforge convert --format onnx` in onnxruntime (the npm package
// onnxruntime-node, found under $SF_ORT_DIR/node_modules) and prints JSON on stdout.
//
//   node onnx_run.js MODEL.onnx IDS [STEPS]
//
// IDS is a comma-separated prompt. The prompt runs in one call with an empty cache; its logits rows
// are printed as "logits". With STEPS > 0, greedy decoding follows: each step feeds the argmax (the
// first of equal maxima) back with the previous call's present.N.key/.value as
// past_key_values.N.key/.value; "generated" lists the ids and "step_logits" the logits of each step
// after the prompt. Graph optimisation is "basic" (above it onnxruntime fuses DequantizeLinear with
// MatMul into kernels that quantize activations, which would hide differences).
"use strict";
const path = require("path");
const ort = require(path.join(process.env.SF_ORT_DIR || ".", "node_modules", "onnxruntime-node"));

function argmax(row) {
  let best = 0;
  for (let i = 1; i < row.length; ++i) if (row[i] > row[best]) best = i;
  return best;
}

function rows(tensor) {
  const [, seq, vocab] = tensor.dims;
  const out = [];
  for (let t = 0; t < seq; ++t) out.push(Array.from(tensor.data.subarray(t * vocab, (t + 1) * vocab)));
  return out;
}

async function main() {
  const [model, idsArg, stepsArg] = process.argv.slice(2);
  const ids = idsArg.split(",").map(Number);
  const steps = Number(stepsArg || 0);
  const session = await ort.InferenceSession.create(model, { graphOptimizationLevel: process.env.SF_ORT_OPT || "basic", intraOpNumThreads: 1 });
  // Cache inputs: [1, kv_heads, 0, head_dim] to start, from the graph's own input shapes.
  const feeds = {};
  const caches = session.inputNames.filter((n) => n.startsWith("past_key_values."));
  const meta = session.inputMetadata;
  for (const name of caches) {
    const m = Array.isArray(meta) ? meta.find((x) => x.name === name) : meta[name];
    const [, kv, , hd] = m.shape;
    feeds[name] = new ort.Tensor("float32", new Float32Array(0), [1, kv, 0, hd]);
  }
  const run = async (tokens) => {
    feeds.input_ids = new ort.Tensor("int64", BigInt64Array.from(tokens.map(BigInt)), [1, tokens.length]);
    const out = await session.run(feeds);
    for (const name of caches) feeds[name] = out[name.replace("past_key_values.", "present.")];
    return out.logits;
  };
  let logits = await run(ids);
  const result = { logits: rows(logits), generated: [], step_logits: [] };
  for (let s = 0; s < steps; ++s) {
    const last = rows(logits).pop();
    const next = argmax(last);
    result.generated.push(next);
    if (s + 1 === steps) break;
    logits = await run([next]);
    result.step_logits.push(rows(logits)[0]);
  }
  process.stdout.write(JSON.stringify(result));
}

main().catch((e) => {
  process.stderr.write(String(e && e.stack ? e.stack : e) + "\n");
  process.exit(1);
});
