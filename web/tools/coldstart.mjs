// Cold starts of the page in headless Chromium (used by `deepadapter bench
// coldstart`): for each network preset and DevTools CPU throttling factor, a
// first visit on a fresh profile and a repeat visit on the same profile, with
// onnxruntime-web and with DeepAdapter's runtime, each with and without the
// progressive start. Per visit: time from navigation start to the first
// answer and to the first answer by the matched model, bytes on the wire per
// asset (CDP's encodedDataLength: headers and compressed bodies; and bodies
// alone, 0 for a 304 or a cached answer), the matched
// model's warm single-image time. Then, without network emulation, both
// runtimes' warm single-image time on every model of the family, interleaved.
// usage: node coldstart.mjs EDGE_URL OUT.json --models a,b,c
//          [--throttle 1,4,6] [--networks 3g,slow4g,goal,4g,wifi]
//          [--variants ort,ort-progressive,deepadapter,deepadapter-progressive] [--budget 30]
//          [--contexts FILE: the models' contexts, matched once first so the edge caches them]
import { readFileSync, writeFileSync } from 'node:fs';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { cli, launch } from './common.mjs';

const { args, fail, opt } = cli('coldstart');
const throttles = opt('--throttle', '1,4,6').split(',').map(Number);
const networkNames = opt('--networks', '3g,slow4g,goal,4g,wifi').split(',');
const variants = opt('--variants', 'ort,ort-progressive,deepadapter,deepadapter-progressive').split(',');
const models = (opt('--models', '') || fail('--models is required')).split(',');
const budget = Number(opt('--budget', '30'));
const contextsFile = opt('--contexts', null);  // the models' contexts (default: profiles/contexts.json)
if (args.length !== 2 || !throttles.every((t) => t >= 1 && t <= 20) || !(budget > 0))
  fail('usage: node coldstart.mjs EDGE_URL OUT.json --models a,b [--throttle 1,4,6] [--networks ...] [--variants ...] [--budget MS]');
const [edge, outPath] = args;
for (const v of variants)
  if (!/^(ort|deepadapter)(-progressive)?$/.test(v)) fail(`unknown variant '${v}'`);

const profiles = join(dirname(fileURLToPath(import.meta.url)), '../../profiles');
const presets = JSON.parse(readFileSync(join(profiles, 'networks.json'), 'utf8')).networks;
// The issue's goal condition: DevTools' raw 'Slow 4G' (1.6 Mbit/s, 150 ms).
presets.push({ name: 'goal', label: '1.6 Mbit/s, 150 ms', downlink_kbps: 1600, uplink_kbps: 750, rtt_ms: 150 });
const networks = networkNames.map((n) => presets.find((p) => p.name === n) ?? fail(`no network preset '${n}'`));

const started = Date.now();
const total = networks.length * throttles.length * variants.length;
let done = 0;
const progress = (what) => {
  const el = (Date.now() - started) / 1000, eta = done ? (el / done) * (total - done) : NaN;
  console.log(`coldstart  ${done}/${total}  elapsed ${el.toFixed(0)} s  ETA ${Number.isNaN(eta) ? '?' : eta.toFixed(0) + ' s'}  ${what}`);
};

// The edge in its steady state before timing (a visit's match depends on what
// the edge has cached): the models' contexts are matched and the cache
// refreshed until every context's ideal model is cached.
const standard = JSON.parse(readFileSync(contextsFile ?? join(profiles, 'contexts.json'), 'utf8')).contexts
  .filter((c) => models.includes(c.name));
for (let i = 0; ; i++) {
  const missing = [];
  for (const c of standard) {
    const m = await (await fetch(`${edge}/v1/match`, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(c) })).json();
    if (!m.ideal_cached) missing.push(m.ideal);
  }
  if (!missing.length) break;
  if (i === 60) fail(`the edge did not cache ${[...new Set(missing)].join(', ')}; give it room (--cache-bytes)`);
  await (await fetch(`${edge}/v1/cache/refresh`, { method: 'POST' })).arrayBuffer();
  await new Promise((r) => setTimeout(r, 500));
}
// The server compresses each file once, on first request: made before timing.
const ref = await (await fetch(`${edge}/v1/reference`)).json();
const warmUrls = [...Object.values(ref.runtimes.deepadapter), ...Object.values(ref.runtimes.ort),
                  ...models.map((m) => `/v1/models/${m}.onnx`)];
for (const u of warmUrls) await (await fetch(edge + u, { headers: { 'Accept-Encoding': 'br, gzip' } })).arrayBuffer();

// One visit of `url` on `page`: its answer times and its bytes by asset.
async function visit(page, cdp, url) {
  const requests = new Map();
  const onResponse = (e) => {
    const r = requests.get(e.requestId) ?? {};
    const cached = e.response.fromDiskCache || e.response.fromPrefetchCache || e.response.fromServiceWorker;
    requests.set(e.requestId, { ...r, url: e.response.url, status: e.response.status, cached: r.cached || cached,
      headerBytes: e.response.encodedDataLength ?? 0,
      encoding: e.response.headers['content-encoding'] ?? e.response.headers['Content-Encoding'] ?? '' });
  };
  const onFinished = (e) => requests.set(e.requestId, { ...(requests.get(e.requestId) ?? {}), bytes: e.encodedDataLength });
  const onCached = (e) => requests.set(e.requestId, { ...(requests.get(e.requestId) ?? {}), cached: true });
  cdp.on('Network.responseReceived', onResponse);
  cdp.on('Network.loadingFinished', onFinished);
  cdp.on('Network.requestServedFromCache', onCached);
  try {
    await page.goto(url, { waitUntil: 'commit', timeout: 300000 });
    await page.waitForFunction(() => window.coldstart?.done, null, { timeout: 600000, polling: 100 });
    const r = await page.evaluate(() => window.coldstart);
    if (r.error) throw new Error(`${url}: ${r.error}`);
    const assets = {};
    for (const q of requests.values()) {
      if (!q.url || q.url.startsWith('data:')) continue;
      const path = new URL(q.url).pathname;
      const key = path.startsWith('/v1/probe') ? '/v1/probe' : path;
      const a = (assets[key] ??= { requests: 0, bytes: 0, body_bytes: 0, statuses: [], encodings: [] });
      a.requests++;
      a.bytes += q.cached ? 0 : q.bytes ?? 0;  // on the wire: headers and (compressed) bodies
      a.body_bytes += q.cached ? 0 : Math.max(0, (q.bytes ?? 0) - q.headerBytes);  // a 304's: 0
      a.statuses.push(q.cached ? 'cache' : q.status);
      if (q.encoding && !a.encodings.includes(q.encoding)) a.encodings.push(q.encoding);
    }
    const bytes = Object.values(assets).reduce((s, a) => s + a.bytes, 0);
    return { first_ms: r.first.ms, first_model: r.first.model, provisional: r.first.provisional,
             matched_ms: r.matched.ms, matched_model: r.matched.model, warm_ms: r.warm_ms,
             runtime: r.runtime, timings: r.timings, context: r.context, bytes, assets };
  } finally {
    cdp.off('Network.responseReceived', onResponse);
    cdp.off('Network.loadingFinished', onFinished);
    cdp.off('Network.requestServedFromCache', onCached);
  }
}

const visits = [];
for (const net of networks)
  for (const throttle of throttles)
    for (const variant of variants) {
      const [runtime, progressive] = [variant.split('-')[0], variant.endsWith('-progressive')];
      progress(`${net.name}, CPU ${throttle}x, ${variant}`);
      const context = await launch();
      try {
        const page = context.pages()[0] ?? (await context.newPage());
        const cdp = await context.newCDPSession(page);
        await cdp.send('Network.enable');
        await cdp.send('Network.emulateNetworkConditions', {
          offline: false, latency: net.rtt_ms,
          downloadThroughput: (net.downlink_kbps * 1000) / 8, uploadThroughput: (net.uplink_kbps * 1000) / 8,
        });
        await cdp.send('Emulation.setCPUThrottlingRate', { rate: throttle });
        const url = `${edge}/app/coldstart.html?runtime=${runtime}&progressive=${progressive ? 1 : 0}&budget=${budget}`;
        const first = await visit(page, cdp, url);
        const repeat = await visit(page, cdp, url);
        visits.push({ network: net.name, network_label: net.label, throttle, variant, runtime, progressive, first, repeat });
        const f = (v) => `first answer ${(v.first_ms / 1000).toFixed(2)} s (${v.first_model}), matched ${(v.matched_ms / 1000).toFixed(2)} s (${v.matched_model}), ${(v.bytes / 1000).toFixed(1)} kB`;
        console.log(`  first visit: ${f(first)}; warm ${first.warm_ms.toFixed(2)} ms`);
        console.log(`  repeat:      ${f(repeat)}`);
      } finally {
        await context.close();
      }
      done++;
    }
progress('the runtimes side by side on every model');

// Warm single-image time, both runtimes in one page, each model: groups of
// >= 10 ms alternate between the runtimes until 9 groups each; medians.
const warm = [];
for (const throttle of throttles) {
  const context = await launch();
  try {
    const page = context.pages()[0] ?? (await context.newPage());
    await page.goto(`${edge}/sdk/package.json`);  // any page of the edge's origin
    const cdp = await context.newCDPSession(page);
    await cdp.send('Emulation.setCPUThrottlingRate', { rate: throttle });
    const rows = await page.evaluate(async ({ models, ref }) => {
      const { loadEngine } = await import('/sdk/engine.js');
      const ours = await loadEngine(`${location.origin}/`, ref.runtimes.deepadapter);
      const ort = await import(ref.runtimes.ort.module);
      ort.env.wasm.numThreads = 1;
      ort.env.logLevel = 'error';
      ort.env.wasm.wasmPaths = { mjs: ref.runtimes.ort.mjs, wasm: ref.runtimes.ort.wasm };
      const med = (xs) => [...xs].sort((a, b) => a - b)[xs.length >> 1];
      const out = [];
      for (const id of models) {
        const bytes = new Uint8Array(await (await fetch(`/v1/models/${id}.onnx`)).arrayBuffer());
        const a = ours.open(bytes);
        const s = await ort.InferenceSession.create(bytes, { executionProviders: ['wasm'], graphOptimizationLevel: 'all' });
        const x = new Float32Array(a.input.reduce((p, q) => p * q, 1)).map((_, i) => (i % 7) / 7);
        const runs = {
          deepadapter: async () => a.run(x),
          ort: async () => (await s.run({ input: new ort.Tensor('float32', x, [1, ...a.input]) })).logits.data,
        };
        const per = {};
        for (const [k, f] of Object.entries(runs)) {  // warm-up >= 150 ms, and the group size
          let t = performance.now(), n = 0;
          while (performance.now() - t < 150) await f();
          t = performance.now();
          while (performance.now() - t < 10) await f(), n++;
          per[k] = { n, ms: [] };
        }
        for (let g = 0; g < 9; g++)
          for (const [k, f] of Object.entries(runs)) {
            const t = performance.now();
            for (let i = 0; i < per[k].n; i++) await f();
            per[k].ms.push((performance.now() - t) / per[k].n);
          }
        out.push({ model: id, bytes: bytes.length, deepadapter_ms: med(per.deepadapter.ms), ort_ms: med(per.ort.ms) });
        a.release();
        await s.release();
      }
      return out;
    }, { models, ref });
    for (const r of rows) {
      warm.push({ throttle, ...r, ratio: r.deepadapter_ms / r.ort_ms });
      console.log(`  CPU ${throttle}x ${r.model}: deepadapter ${r.deepadapter_ms.toFixed(3)} ms, onnxruntime-web ${r.ort_ms.toFixed(3)} ms (${(r.deepadapter_ms / r.ort_ms).toFixed(2)}x)`);
    }
  } finally {
    await context.close();
  }
}
writeFileSync(outPath, JSON.stringify({ networks, throttles, variants, budget_ms: budget, visits, warm }, null, 1));
console.log(`coldstart  ${total}/${total}  elapsed ${((Date.now() - started) / 1000).toFixed(0)} s  done`);
