// How stable the SDK's device measurement is: fresh pages of headless Chromium
// at each DevTools CPU throttling rate, each connecting to the edge (which
// measures the device once) and measuring it again --repeats times. Every
// measurement's timed groups give both estimators side by side: the SDK's
// (measured_ms) and the median of the groups (the SDK's before issue 26).
// With --busy N, N Web Workers spin in the page while it measures (another
// tab, an ad, a phone's background work): the CPU the page gets is shared.
// usage: node device-spread.mjs EDGE|FAMILY_DIR [--throttles 1,4,6] [--visits 5] [--repeats 2] [--busy 0]
//          [--runtime deepadapter|ort] [--json FILE] [--bin build/deepadapter]
//   FAMILY_DIR: a family (prune's output) served on loopback for the run by `BIN serve`.
// Prints one JSON line per visit, then a table: per rate, the slowdown's
// median over all measurements, its spread within visits (max / min - 1, the
// worst visit) and across them, and the device classes the edge matched.
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { cli, launch, startServe } from './common.mjs';

const { args, fail, opt } = cli('device-spread');
const throttles = opt('--throttles', '1,4,6').split(',').map(Number);
const visits = Number(opt('--visits', '5')), repeats = Number(opt('--repeats', '2')), busy = Number(opt('--busy', '0'));
const jsonOut = opt('--json', null), runtime = opt('--runtime', 'deepadapter'), bin = opt('--bin', 'build/deepadapter');
if (args.length !== 1 || !['deepadapter', 'ort'].includes(runtime) || !throttles.every((r) => r >= 1 && r <= 100) || !(visits >= 1) || !(repeats >= 0) || !(busy >= 0))
  fail('usage: node device-spread.mjs EDGE|FAMILY_DIR [--throttles 1,4,6] [--visits N>=1] [--repeats N>=0] [--busy N>=0] [--runtime deepadapter|ort] [--json FILE] [--bin PATH]');

// The edge: the one given, or `bin serve` of the family given.
let edge = args[0].replace(/\/$/, ''), server = null;
const tmp = mkdtempSync(join(tmpdir(), 'da-device-spread-'));
if (!/^https?:/.test(edge)) {
  if (!existsSync(join(edge, 'family.json'))) fail(`${edge}: neither a URL nor a family directory`);
  ({ edge, server } = await startServe(bin, edge, tmp).catch((e) => fail(e.message)));
  for (let i = 0; i < 100; i++) {  // the edge has its catalog
    const h = await (await fetch(`${edge}/healthz`)).json();
    if (h.catalog_models > 0) break;
    await new Promise((r) => setTimeout(r, 100));
  }
}

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[s.length >> 1] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};
const spread = (xs) => Math.max(...xs) / Math.min(...xs) - 1;

const context = await launch();
const rows = [];
try {
  for (const rate of throttles) {
    for (let v = 0; v < visits; v++) {
      const page = await context.newPage();
      await page.goto(`${edge}/sdk/package.json`);  // any page of the edge's origin
      const cdp = await context.newCDPSession(page);
      await cdp.send('Emulation.setCPUThrottlingRate', { rate });
      const r = await page.evaluate(async ({ repeats, busy, runtime }) => {
        const spin = 'for (;;) { let x = 0; for (let i = 0; i < 1e7; i++) x += i; }';
        const url = URL.createObjectURL(new Blob([spin], { type: 'text/javascript' }));
        const workers = Array.from({ length: busy }, () => new Worker(url));
        try {
          const { DeepAdapter } = await import('/sdk/deepadapter.js');
          const da = await DeepAdapter.connect(location.origin, { runtime, progressive: false, rememberMs: 0, rematchEveryMs: 0, probeBytes: 64 << 10 });
          const m = [{ slowdown: da.context.slowdown, measured_ms: da.context.measured_ms, groups_ms: da.context.groups_ms }];
          for (let i = 0; i < repeats; i++) m.push(await da.measureDevice());
          await da.close();
          return { measurements: m.map(({ slowdown, measured_ms, groups_ms }) => ({ slowdown, measured_ms, groups_ms })),
                   device: da.match.context?.device, model: da.match.model, reference_ms: da.reference.first?.reference_ms ?? da.reference.reference_ms };
        } finally {
          workers.forEach((w) => w.terminate());
        }
      }, { repeats, busy, runtime });
      await page.close();
      const sdk = r.measurements.map((m) => m.slowdown);
      const scale = r.measurements[0].slowdown / r.measurements[0].measured_ms;  // slowdown per ms
      const old = r.measurements.map((m) => median(m.groups_ms) * scale);
      const row = { rate, busy, visit: v, device: r.device, model: r.model, sdk, median_of_groups: old };
      console.log(JSON.stringify(row));
      rows.push({ ...row, groups: r.measurements.map((m) => m.groups_ms.map((g) => +(g * scale).toFixed(3))) });
    }
  }
} finally {
  await context.close();
  server?.kill('SIGTERM');
  rmSync(tmp, { recursive: true, force: true });
}
if (jsonOut) writeFileSync(jsonOut, JSON.stringify({ busy, visits, repeats, rows }, null, 1));

const pct = (x) => `${(100 * x).toFixed(1)}%`;
console.log(`\ndevice measurement, ${visits} fresh pages per rate, ${repeats + 1} measurements each${busy ? `, ${busy} busy worker(s) in the page` : ''}`);
console.log('rate  estimator          median slowdown  within a visit (worst)  across visits  classes matched');
for (const rate of throttles) {
  const rs = rows.filter((r) => r.rate === rate);
  const classes = Object.entries(rs.reduce((n, r) => ((n[r.device] = (n[r.device] ?? 0) + 1), n), {}))
    .map(([k, n]) => `${k} ${n}`).join(', ');
  for (const [name, key] of [['sdk', 'sdk'], ['median of groups', 'median_of_groups']]) {
    const all = rs.flatMap((r) => r[key]);
    const within = Math.max(...rs.map((r) => spread(r[key])));
    const across = spread(rs.map((r) => r[key][0]));
    console.log(`${`${rate}x`.padEnd(5)} ${name.padEnd(18)} ${median(all).toFixed(2).padStart(15)}  ${pct(within).padStart(22)}  ${pct(across).padStart(13)}  ${key === 'sdk' ? classes : ''}`);
  }
}
