// Runs graphs written by `shardforge convert --format onnx` in onnxruntime (the npm package
// onnxruntime-node, found under $SF_ORT_DIR/node_modules) and prints JSON on stdout.
//
//   node onnx_run.js MODEL IDS [STEPS]
//
// MODEL is a model.onnx, or the directory of a --split blocks output: embedding.onnx, then each
// block_NNN.onnx on the previous one's hidden_states_out (with the attention_mask and rope tables
// embedding.onnx computed), then head.onnx, chained here call by call.
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

// A whole graph: one session, the caches fed back by name.
async function wholeModel(file, options) {
  const session = await ort.InferenceSession.create(file, options);
  const caches = cacheFeeds(session);
  return async (tokens) => {
    caches.input_ids = idsTensor(tokens);
    const out = await session.run(caches);
    for (const name of Object.keys(caches))
      if (name.startsWith("past_key_values.")) caches[name] = out[name.replace("past_key_values.", "present.")];
    return out.logits;
  };
}

// Per-unit graphs chained: what embedding.onnx computes once goes to every block.
async function splitModel(dir, options) {
  const fs = require("fs");
  const blocks = fs.readdirSync(dir).filter((f) => /^block_[0-9]+\.onnx$/.test(f)).sort();
  const embedding = await ort.InferenceSession.create(path.join(dir, "embedding.onnx"), options);
  const head = await ort.InferenceSession.create(path.join(dir, "head.onnx"), options);
  const sessions = [];
  for (const b of blocks) {
    const s = await ort.InferenceSession.create(path.join(dir, b), options);
    sessions.push({ session: s, caches: cacheFeeds(s) });
  }
  let past = 0;
  return async (tokens) => {
    const e = await embedding.run({ input_ids: idsTensor(tokens), past_length: new ort.Tensor("int64", BigInt64Array.from([BigInt(past)]), [1]) });
    let hidden = e.hidden_states;
    for (const { session, caches } of sessions) {
      const feeds = { ...caches, hidden_states: hidden };
      for (const name of session.inputNames) if (name in e && name !== "hidden_states") feeds[name] = e[name];
      const out = await session.run(feeds);
      for (const name of Object.keys(caches)) caches[name] = out[name.replace("past_key_values.", "present.")];
      hidden = out.hidden_states_out;
    }
    past += tokens.length;
    return (await head.run({ hidden_states: hidden })).logits;
  };
}

// Empty caches [1, kv_heads, 0, head_dim] for a session's past_key_values.N.* inputs.
function cacheFeeds(session) {
  const feeds = {};
  const meta = session.inputMetadata;
  for (const name of session.inputNames.filter((n) => n.startsWith("past_key_values."))) {
    const m = Array.isArray(meta) ? meta.find((x) => x.name === name) : meta[name];
    const [, kv, , hd] = m.shape;
    feeds[name] = new ort.Tensor("float32", new Float32Array(0), [1, kv, 0, hd]);
  }
  return feeds;
}

function idsTensor(tokens) {
  return new ort.Tensor("int64", BigInt64Array.from(tokens.map(BigInt)), [1, tokens.length]);
}

async function main() {
  const [model, idsArg, stepsArg] = process.argv.slice(2);
  const ids = idsArg.split(",").map(Number);
  const steps = Number(stepsArg || 0);
  const options = { graphOptimizationLevel: process.env.SF_ORT_OPT || "basic", intraOpNumThreads: 1 };
  const run = model.endsWith(".onnx") ? await wholeModel(model, options) : await splitModel(model, options);
  let logits = await run(ids);
  const result = { logits: rows(logits), generated: [], step_logits: [] };
  for (let s = 0; s < steps; ++s) {
    const next = argmax(rows(logits).pop());
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
