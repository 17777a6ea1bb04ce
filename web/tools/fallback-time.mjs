// Times fallbacks to the edge from headless Chromium under each network
// preset's emulation: the same real test images sent as an Open Inference
// Protocol JSON body (UINT8 numbers, the SDK before) and with the binary
// tensor extension (the SDK now). Prints a JSON line per preset and body:
// mean request bytes and the median time from fetch to parsed answer.
// usage: node fallback-time.mjs EDGE_URL [--networks 3g,4g] [--images N]
import { readFileSync } from 'node:fs';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { cli, launch } from './common.mjs';

const { args, fail, opt } = cli('fallback-time');
const names = opt('--networks', '3g,4g').split(',');
const images = Number(opt('--images', '10'));
if (args.length !== 1 || !(images >= 1 && images <= 200)) fail('usage: node fallback-time.mjs EDGE_URL [--networks 3g,4g] [--images N (1..200)]');
const edge = args[0];
const profiles = join(dirname(fileURLToPath(import.meta.url)), '../../profiles');
const networks = JSON.parse(readFileSync(join(profiles, 'networks.json'), 'utf8')).networks;
const chosen = names.map((n) => networks.find((x) => x.name === n) ?? fail(`no network preset '${n}'`));

const context = await launch();
try {
  const page = context.pages()[0] ?? (await context.newPage());
  await page.goto(`${edge}/sdk/package.json`);
  const cdp = await context.newCDPSession(page);
  await cdp.send('Network.enable');
  for (const net of chosen) {
    await cdp.send('Network.emulateNetworkConditions', {
      offline: false, latency: net.rtt_ms,
      downloadThroughput: (net.downlink_kbps * 1000) / 8, uploadThroughput: (net.uplink_kbps * 1000) / 8,
    });
    const rows = await page.evaluate(async (n) => {
      const j = await (await fetch(`/v1/samples?offset=0&count=${n}`)).json();
      const px = Uint8Array.from(atob(j.pixels_base64), (c) => c.charCodeAt(0));
      const size = j.shape.reduce((a, b) => a * b, 1), shape = [1, ...j.shape];
      const bodies = {
        json: (img) => ({ body: JSON.stringify({ inputs: [{ name: 'input', shape, datatype: 'UINT8', data: Array.from(img) }] }),
                          headers: { 'Content-Type': 'application/json' } }),
        binary: (img) => {
          const head = new TextEncoder().encode(JSON.stringify({
            inputs: [{ name: 'input', shape, datatype: 'UINT8', parameters: { binary_data_size: img.length } }],
            outputs: [{ name: 'label' }, { name: 'probabilities' }] }));
          const body = new Uint8Array(head.length + img.length);
          body.set(head);
          body.set(img, head.length);
          return { body, headers: { 'Content-Type': 'application/octet-stream', 'Inference-Header-Content-Length': String(head.length) } };
        },
      };
      const out = [];
      for (const [kind, make] of Object.entries(bodies)) {
        const ms = [];
        let bytes = 0;
        for (let i = 0; i < n; i++) {
          const { body, headers } = make(px.subarray(i * size, (i + 1) * size));
          bytes += typeof body === 'string' ? new TextEncoder().encode(body).length : body.length;
          const t0 = performance.now();
          const res = await fetch('/v2/models/base/infer', { method: 'POST', body, headers });
          if (!res.ok) throw new Error(`${kind}: HTTP ${res.status}`);
          await res.json();
          ms.push(performance.now() - t0);
        }
        ms.sort((a, b) => a - b);
        out.push({ body: kind, bytes: bytes / n, median_ms: ms[ms.length >> 1], images: n });
      }
      return out;
    }, images);
    for (const r of rows) console.log(JSON.stringify({ network: net.name, uplink_kbps: net.uplink_kbps, rtt_ms: net.rtt_ms, ...r }));
  }
} finally {
  await context.close();
}
