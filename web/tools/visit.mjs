// Visits the edge's demo page in headless Chromium as phones in emulated
// contexts (DevTools CPU throttling at the device class's slowdown, the network
// preset's bandwidth and round trip) and prints what each saw: the measured
// context, the matched model, accuracy on the page's images, offload share and
// latency; screenshots go to OUT_DIR. Used by `./run demo`.
// usage: node visit.mjs EDGE_URL OUT_DIR [--contexts a,b,c] [--images N] [--json FILE]
//        node visit.mjs EDGE_URL --page-costs
//   --json: also write every visit's figures and per-image results (for `bench system --browser`)
//   contexts: names from profiles/contexts.json (default: high-wifi-3, mid-4g-10, low-3g-30)
//   --page-costs: instead, the page's own cost per HTTP request and per model
//     download (hash check, Cache Storage), unthrottled and without network
//     emulation over loopback, where the network itself costs next to nothing:
//     the figures of profiles/workload.json's "page" (medians of 3 visits).
import { readFileSync, writeFileSync, mkdirSync } from 'node:fs';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { cli, launch } from './common.mjs';

const { args, fail, opt, flag } = cli('visit');
const pageCosts = flag('--page-costs');
const names = opt('--contexts', 'high-wifi-3,mid-4g-10,low-3g-30').split(',');
const images = Number(opt('--images', '100'));
const jsonOut = opt('--json', null);
if (args.length !== (pageCosts ? 1 : 2) || !(images >= 1 && images <= 1000))
  fail('usage: node visit.mjs EDGE_URL OUT_DIR [--contexts a,b,c] [--images N (1..1000)] [--json FILE] | EDGE_URL --page-costs');
const [edge, out] = args;

if (pageCosts) {
  // Per request: the SDK's empty probe; per download: the SDK's path for a
  // model (fetch, SHA-256, Cache Storage) minus one request. Each a median.
  const visits = [];
  for (let i = 0; i < 3; i++) {
    const context = await launch({ viewport: { width: 1280, height: 1100 } });
    try {
      const page = context.pages()[0] ?? (await context.newPage());
      await page.goto(`${edge}/sdk/package.json`);
      visits.push(await page.evaluate(async () => {
        const med = (xs) => xs.sort((a, b) => a - b)[xs.length >> 1];
        const ms = async (f) => { const t = performance.now(); await f(); return performance.now() - t; };
        const m = await (await fetch('/v1/match', { method: 'POST', headers: { 'Content-Type': 'application/json' },
          body: JSON.stringify({ slowdown: 2, downlink_kbps: 10000, uplink_kbps: 5000, rtt_ms: 50, budget_ms: 30, inferences: 100 }) })).json();
        const cache = await caches.open('page-costs');
        const request = [], download = [];
        for (let k = 0; k < 21; k++)
          request.push(await ms(async () => (await fetch(`/v1/probe?bytes=0&r=${Math.random()}`, { cache: 'no-store' })).arrayBuffer()));
        for (let k = 0; k < 7; k++)
          download.push(await ms(async () => {
            const bytes = await (await fetch(m.url, { cache: 'no-store' })).arrayBuffer();
            await crypto.subtle.digest('SHA-256', bytes);
            await cache.put(`/x${k}`, new Response(bytes));
          }));
        return { request_ms: med(request), download_ms: Math.max(0, med(download) - med(request)), model: m.model, bytes: m.bytes };
      }));
    } finally {
      await context.close();
    }
  }
  const med = (k) => visits.map((v) => v[k]).sort((a, b) => a - b)[1];
  console.log(JSON.stringify({ request_ms: med('request_ms'), download_ms: med('download_ms'), visits }));
  process.exit(0);
}
mkdirSync(out, { recursive: true });

const profiles = join(dirname(fileURLToPath(import.meta.url)), '../../profiles');
const load = (f) => JSON.parse(readFileSync(join(profiles, f), 'utf8'));
const contexts = load('contexts.json').contexts, devices = load('devices.json').devices, networks = load('networks.json').networks;
const visits = names.map((name) => {
  const c = contexts.find((x) => x.name === name);
  if (!c) fail(`no context '${name}' in profiles/contexts.json`);
  return { ...c, dev: devices.find((d) => d.name === c.device), net: networks.find((n) => n.name === c.network) };
});

const rows = [];
for (const v of visits) {
  const t0 = Date.now();
  // A phone that visited before: onnxruntime-web (14 MB) is in its HTTP cache
  // (on disk: a fresh profile per visit), loaded here unthrottled; the models,
  // the measurements, the images and the edge's answers go through the
  // emulated network.
  const context = await launch({ viewport: { width: 1280, height: 1100 } });
  try {
    const page = context.pages()[0] ?? (await context.newPage());
    const errors = [];
    page.on('pageerror', (e) => errors.push(e.message));
    await page.goto(`${edge}/sdk/package.json`);
    await page.evaluate(async () => {
      for (const f of ['ort.wasm.min.mjs', 'ort-wasm-simd-threaded.mjs', 'ort-wasm-simd-threaded.wasm'])
        await (await fetch(`/ort/${f}`)).arrayBuffer();
    });
    const cdp = await context.newCDPSession(page);
    await cdp.send('Emulation.setCPUThrottlingRate', { rate: Math.max(1, v.dev.slowdown) });
    await cdp.send('Network.enable');
    await cdp.send('Network.emulateNetworkConditions', {
      offline: false, latency: v.net.rtt_ms,
      downloadThroughput: (v.net.downlink_kbps * 1000) / 8, uploadThroughput: (v.net.uplink_kbps * 1000) / 8,
    });
    await page.goto(`${edge}/?budget=${v.budget_ms}&probe=65536`);
    await page.evaluate(() => window.demo.ready);
    // Where the round trip is over a second (3G), a quarter of the images:
    // every answer the edge gives there takes that round trip.
    await page.evaluate((n) => window.demo.loadSamples(0, n), v.net.rtt_ms > 1000 ? Math.ceil(images / 4) : images);
    const results = await page.evaluate(async () => { await window.demo.classifyAll(); return window.demo.results(); });
    const { context: m, match } = await page.evaluate(() => ({ context: window.demo.da.context, match: window.demo.da.match }));
    await page.screenshot({ path: join(out, `visit-${v.name}.png`), fullPage: true });
    if (errors.length) fail(`${v.name}: page errors: ${errors.join('; ')}`);
    const device = results.filter((r) => r.ranOn === 'device').map((r) => r.times.inferenceMs).sort((a, b) => a - b);
    const edgeMs = results.filter((r) => r.ranOn === 'edge').map((r) => r.times.totalMs).sort((a, b) => a - b);
    const all = results.map((r) => r.times.totalMs ?? r.times.inferenceMs).sort((a, b) => a - b);
    const med = (xs) => (xs.length ? xs[xs.length >> 1] : NaN);
    rows.push({
      name: v.name, label: `${v.dev.label}, ${v.net.label}, budget ${v.budget_ms} ms`,
      slowdown: m.slowdown, downlink: m.downlink_kbps, rtt: m.rtt_ms,
      model: match.model, bytes: match.bytes, predicted: match.predicted.latency_ms, meets: match.meets_budget,
      accuracy: results.filter((r) => r.label === r.truth).length / results.length,
      offload: 1 - device.length / results.length, n: results.length,
      deviceMs: med(device), edgeMs: med(edgeMs), allMs: med(all), seconds: (Date.now() - t0) / 1000,
      loadMs: match.load_ms,
      results: results.map((x) => ({ index: x.index, ranOn: x.ranOn, label: x.label, truth: x.truth,
                                     ms: x.times.totalMs ?? x.times.inferenceMs, inferenceMs: x.times.inferenceMs })),
    });
    const r = rows.at(-1);
    console.log(`${r.name} (${r.label}), ${r.seconds.toFixed(0)} s:\n` +
      `  measured: slowdown ${r.slowdown.toFixed(2)}, downlink ${r.downlink.toFixed(0)} kbit/s, rtt ${r.rtt.toFixed(0)} ms\n` +
      `  matched:  ${r.model} (${(r.bytes / 1000).toFixed(1)} kB), predicted ${r.predicted.toFixed(2)} ms per inference${r.meets ? '' : ' (over budget: the fastest)'}\n` +
      `  ${r.n} test images: accuracy ${(100 * r.accuracy).toFixed(1)}%, offloaded ${(100 * r.offload).toFixed(1)}%, ` +
      `median latency ${r.allMs.toFixed(2)} ms (on the device ${r.deviceMs.toFixed(2)} ms, via the edge ${Number.isNaN(r.edgeMs) ? '-' : r.edgeMs.toFixed(0) + ' ms'})`);
  } finally {
    await context.close();
  }
}
console.log(`screenshots: ${out}/visit-*.png`);
if (jsonOut) writeFileSync(jsonOut, JSON.stringify({ visits: rows }));
