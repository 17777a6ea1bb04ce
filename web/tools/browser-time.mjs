// Batch-1 inference time of ONNX models on onnxruntime-web's WASM backend, one
// thread, in headless Chromium (the SDK's own runtime), optionally under
// DevTools CPU throttling. Same protocol as ort-web-time.mjs (node).
// usage: node browser-time.mjs LIST.json [--throttle R]
//   LIST.json: {"min_runs": R, "min_seconds": S,
//               "models": [{"path": P, "inputs": [[C, H, W], ...]}, ...]}  (shapes without the batch)
// Prints one line per model as it finishes: {"index": i, "ms": median, "runs": n}.
//
// The page's clock is coarse (100 us; 5 us when cross-origin isolated, as this
// page is), so runs are timed in groups of at least 10 ms and the median is taken
// over the groups' per-run means.
import { chromium } from 'playwright-core';
import { createServer } from 'node:http';
import { readFileSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname, normalize } from 'node:path';
import { fileURLToPath } from 'node:url';

const fail = (msg) => {
  console.error(`browser-time: ${msg}`);
  process.exit(2);
};
const args = process.argv.slice(2);
let throttle = 1;
const ti = args.indexOf('--throttle');
if (ti >= 0) {
  throttle = Number(args[ti + 1]);
  args.splice(ti, 2);
}
if (args.length !== 1 || !(throttle >= 1 && throttle <= 100)) fail('usage: node browser-time.mjs LIST.json [--throttle R (1..100)]');
let list;
try {
  list = JSON.parse(readFileSync(args[0], 'utf8'));
} catch (e) {
  fail(`cannot read ${args[0]}: ${e.message}`);
}
const minRuns = list.min_runs ?? 20;
const minSeconds = list.min_seconds ?? 0.2;
if (!Array.isArray(list.models) || !(minRuns > 0) || !(minSeconds >= 0)) fail('bad list');

// The page, onnxruntime-web and the models, from loopback.
const dist = join(dirname(fileURLToPath(import.meta.url)), '../node_modules/onnxruntime-web/dist');
const types = { '.mjs': 'text/javascript', '.wasm': 'application/wasm', '.html': 'text/html' };
const server = createServer((req, res) => {
  const path = new URL(req.url, 'http://x').pathname;
  let body, type = 'application/octet-stream';
  try {
    if (path === '/') body = '<!doctype html><title>timing</title>', type = types['.html'];
    else if (path.startsWith('/ort/') && !normalize(path).includes('..')) {
      body = readFileSync(join(dist, path.slice(5)));
      type = types[path.slice(path.lastIndexOf('.'))] ?? type;
    } else if (path.startsWith('/m/')) body = readFileSync(list.models[Number(path.slice(3))].path);
    else throw new Error('not found');
  } catch {
    res.writeHead(404).end();
    return;
  }
  // Cross-origin isolated: a finer clock (threads stay at 1).
  res.writeHead(200, { 'Content-Type': type, 'Cross-Origin-Opener-Policy': 'same-origin',
                       'Cross-Origin-Embedder-Policy': 'require-corp' });
  res.end(body);
});
await new Promise((r) => server.listen(0, '127.0.0.1', r));
const origin = `http://127.0.0.1:${server.address().port}`;

const profile = mkdtempSync(join(tmpdir(), 'da-chromium-'));
let context;
try {
  context = await chromium.launchPersistentContext(profile, {
    executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium', headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking',
           '--disable-component-update', '--disable-sync'],
  });
} catch (e) {
  server.close();
  rmSync(profile, { recursive: true, force: true });
  fail(`cannot start Chromium: ${e.message}`);
}
try {
  const page = context.pages()[0] ?? (await context.newPage());
  await page.goto(`${origin}/`);
  if (throttle !== 1) {
    const cdp = await context.newCDPSession(page);
    await cdp.send('Emulation.setCPUThrottlingRate', { rate: throttle });
  }
  await page.evaluate(async () => {
    window.ort = await import('/ort/ort.wasm.min.mjs');
    ort.env.wasm.numThreads = 1;
    ort.env.wasm.wasmPaths = '/ort/';
    ort.env.logLevel = 'error';
  });
  // The first model is timed twice, the first time unreported: a fresh page's
  // WASM code is still being optimized (V8 tiers up while it runs), which made
  // the first model look four times slower than later.
  const order = list.models.length ? [0, ...list.models.keys()] : [];
  for (const [n, index] of order.entries()) {
    const m = list.models[index];
    const r = await page.evaluate(async ({ index, inputs, minRuns, minSeconds }) => {
      const bytes = new Uint8Array(await (await fetch(`/m/${index}`)).arrayBuffer());
      let session;
      try {
        session = await ort.InferenceSession.create(bytes, { executionProviders: ['wasm'], graphOptimizationLevel: 'all' });
      } catch (e) {
        return { error: `cannot load model ${index}: ${e.message}` };
      }
      if (!Array.isArray(inputs) || inputs.length !== session.inputNames.length)
        return { error: `model ${index}: expected ${session.inputNames.length} input shapes` };
      const feed = {};
      session.inputNames.forEach((name, i) => {
        const dims = [1, ...inputs[i]];
        const size = dims.reduce((a, b) => a * b, 1);
        feed[name] = new ort.Tensor('float32', Float32Array.from({ length: size }, Math.random), dims);
      });
      for (let i = 0; i < 3; i++) await session.run(feed);
      let t = performance.now(), k = 0;
      while (performance.now() - t < 10) await session.run(feed), k++;
      const perGroup = Math.max(1, k);
      const means = [];
      let runs = 0;
      const start = performance.now();
      while (runs < minRuns || means.length < 5 || performance.now() - start < minSeconds * 1000) {
        t = performance.now();
        for (let i = 0; i < perGroup; i++) await session.run(feed);
        means.push((performance.now() - t) / perGroup);
        runs += perGroup;
        if (runs >= 100000) break;
      }
      await session.release();
      means.sort((a, b) => a - b);
      return { ms: means[means.length >> 1], runs };
    }, { index, inputs: m.inputs, minRuns, minSeconds });
    if (r.error) fail(r.error);
    if (n > 0) console.log(JSON.stringify({ index, ms: r.ms, runs: r.runs }));
  }
} finally {
  await context.close();
  server.close();
  rmSync(profile, { recursive: true, force: true });
}
