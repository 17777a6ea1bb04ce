// onnxruntime (native, via onnxruntime-node) timings for `deepadapter bench infer`.
// usage: node ort-bench.mjs MODEL.onnx THREADS RUNS BATCH SECONDS C H W
// prints {"latency_ms": median batch-1 latency, "throughput": images/s at BATCH}
import * as ort from 'onnxruntime-node';
import { readFileSync } from 'node:fs';

const [model, threads, runs, batch, seconds, c, h, w] = process.argv.slice(2).map((v, i) => (i ? Number(v) : v));
if (!model || ![threads, runs, batch, seconds, c, h, w].every((v) => +v > 0)) {
  console.error('usage: node ort-bench.mjs MODEL.onnx THREADS RUNS BATCH SECONDS C H W');
  process.exit(2);
}
const session = await ort.InferenceSession.create(readFileSync(model), {
  intraOpNumThreads: +threads,
  interOpNumThreads: 1,
  executionMode: 'sequential',
  graphOptimizationLevel: 'all',
});
const feed = (n) => ({ input: new ort.Tensor('float32', Float32Array.from({ length: n * c * h * w }, Math.random), [n, c, h, w]) });

const one = feed(1);
for (let i = 0; i < 20; i++) await session.run(one);
const times = [];
for (let i = 0; i < +runs; i++) {
  const t0 = process.hrtime.bigint();
  await session.run(one);
  times.push(Number(process.hrtime.bigint() - t0) / 1e6);
}
times.sort((a, b) => a - b);

const big = feed(+batch);
for (let i = 0; i < 3; i++) await session.run(big);
let images = 0;
const start = process.hrtime.bigint();
let elapsed = 0;
while (elapsed < +seconds) {
  await session.run(big);
  images += +batch;
  elapsed = Number(process.hrtime.bigint() - start) / 1e9;
}
console.log(JSON.stringify({ latency_ms: times[Math.floor(times.length / 2)], throughput: images / elapsed }));
