// Batch-1 inference time of ONNX models on onnxruntime-web's WASM backend, one
// thread, in node: the mobile-web runtime the latency predictor is built from.
// usage: node ort-web-time.mjs LIST.json
//   LIST.json: {"min_runs": R, "min_seconds": S,
//               "models": [{"path": P, "inputs": [[C, H, W], ...]}, ...]}  (shapes without the batch)
// Prints one line per model as it finishes: {"index": i, "ms": median, "runs": n}.
import * as ort from 'onnxruntime-web';
import { readFileSync } from 'node:fs';

const fail = (msg) => {
  console.error(`ort-web-time: ${msg}`);
  process.exit(2);
};
if (process.argv.length !== 3) fail('usage: node ort-web-time.mjs LIST.json');
let list;
try {
  list = JSON.parse(readFileSync(process.argv[2], 'utf8'));
} catch (e) {
  fail(`cannot read ${process.argv[2]}: ${e.message}`);
}
const minRuns = list.min_runs ?? 20;
const minSeconds = list.min_seconds ?? 0.2;
if (!Array.isArray(list.models) || !(minRuns > 0) || !(minSeconds >= 0)) fail('bad list');

ort.env.wasm.numThreads = 1;
ort.env.logLevel = 'error';
const now = () => Number(process.hrtime.bigint()) / 1e6;

for (const [index, m] of list.models.entries()) {
  let session;
  try {
    // Bytes, not a path: onnxruntime-web in node cannot fetch a file path.
    session = await ort.InferenceSession.create(readFileSync(m.path), {
      executionProviders: ['wasm'],
      graphOptimizationLevel: 'all',
    });
  } catch (e) {
    fail(`cannot load ${m.path}: ${e.message}`);
  }
  if (!Array.isArray(m.inputs) || m.inputs.length !== session.inputNames.length) fail(`${m.path}: expected ${session.inputNames.length} input shapes`);
  const feed = {};
  session.inputNames.forEach((name, i) => {
    const dims = [1, ...m.inputs[i]];
    const size = dims.reduce((a, b) => a * b, 1);
    feed[name] = new ort.Tensor('float32', Float32Array.from({ length: size }, Math.random), dims);
  });
  for (let i = 0; i < 3; i++) await session.run(feed);
  const times = [];
  const start = now();
  while (times.length < minRuns || now() - start < minSeconds * 1000) {
    const t0 = now();
    await session.run(feed);
    times.push(now() - t0);
    if (times.length >= 100000) break;
  }
  await session.release();
  times.sort((a, b) => a - b);
  console.log(JSON.stringify({ index, ms: times[times.length >> 1], runs: times.length }));
}
