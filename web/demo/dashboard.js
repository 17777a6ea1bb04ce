// The edge dashboard: polls /v1/stats and /metrics every 2 s and plots the
// hit rate (of all matches so far) and the request rates with uPlot.
import uPlot from '/lib/uplot/uPlot.esm.js';

const $ = (id) => document.getElementById(id);
const PERIOD = 2000, KEEP = 300; // samples kept: 10 minutes
const series = { t: [], hit: [], match: [], download: [], infer: [] };
let last = null;

// Sum of a Prometheus counter's lines, optionally only those whose labels contain `has`.
function counter(text, name, has = '') {
  let sum = 0;
  for (const line of text.split('\n'))
    if (line.startsWith(name) && (line[name.length] === '{' || line[name.length] === ' ') && line.includes(has))
      sum += Number(line.slice(line.lastIndexOf(' ') + 1));
  return sum;
}

const kb = (b) => (b >= 1e6 ? (b / 1e6).toFixed(2) + ' MB' : (b / 1e3).toFixed(1) + ' kB');
const axis = { stroke: '#8a94a8', grid: { stroke: '#263044' }, ticks: { stroke: '#263044' } };
function chart(el, s, y = {}) {
  return new uPlot({
    width: el.clientWidth, height: 220, series: [{}, ...s], axes: [axis, axis],
    legend: { live: false }, scales: { x: { time: true }, y },
  }, [[]].concat(s.map(() => [])), el);
}
const hitChart = chart($('chart-hit'), [{ label: 'hit rate %', stroke: '#4fc3f7', width: 2 }],
                       { range: [0, 100] });
const rpsChart = chart($('chart-rps'), [
  { label: 'matches/s', stroke: '#66bb6a', width: 2 },
  { label: 'model downloads/s', stroke: '#ab47bc', width: 2 },
  { label: 'fallback inferences/s', stroke: '#ffb74d', width: 2 },
]);

function showStats(s) {
  $('d-status').textContent = s.degraded ? 'degraded' : 'ok';
  $('d-status').style.color = s.degraded ? 'var(--bad)' : 'var(--ok)';
  $('d-hit').textContent = s.matches ? (100 * s.hit_rate).toFixed(1) + '%' : '—';
  $('d-matches').textContent = s.matches;
  $('d-offload').textContent = s.matches ? (100 * s.expected_offload).toFixed(1) + '%' : '—';
  $('d-prune').textContent = s.prune_requests_forwarded;
  $('d-policy').textContent = `(${s.policy})`;
  const used = Math.min(1, s.used_bytes / Math.max(1, s.capacity_bytes));
  $('d-used').style.width = (100 * used).toFixed(1) + '%';
  $('d-usage').textContent = `${kb(s.used_bytes)} of ${kb(s.capacity_bytes)} · ${s.cached.length} model(s) on disk`;
  const demand = Object.fromEntries(s.demand.map((d) => [d.id, d.decayed]));
  const rows = s.content.map((m) => `<tr><td>${m.id}</td><td>${kb(m.bytes)}</td><td>${m.on_disk ? 'yes' : 'fetching'}</td><td>${(demand[m.id] ?? 0).toFixed(1)}</td></tr>`);
  $('d-content').innerHTML = rows.join('') || '<tr><td colspan="4" class="dim">empty</td></tr>';
}

async function poll() {
  try {
    const [stats, metrics] = await Promise.all([
      fetch('/v1/stats').then((r) => r.json()),
      fetch('/metrics').then((r) => r.text()),
    ]);
    showStats(stats);
    const now = Date.now() / 1000;
    const cur = {
      matches: stats.matches,
      downloads: counter(metrics, 'model_downloads_total'),
      infers: counter(metrics, 'infer_latency_seconds_count'),
    };
    if (last) {
      const dt = now - last.t, dm = cur.matches - last.matches;
      series.t.push(now);
      series.hit.push(stats.matches ? 100 * stats.hit_rate : null);
      series.match.push(dm / dt);
      series.download.push((cur.downloads - last.downloads) / dt);
      series.infer.push((cur.infers - last.infers) / dt);
      for (const k in series) if (series[k].length > KEEP) series[k].shift();
      // At least the last minute: from one sample alone, uPlot's range spans years.
      const x = { min: Math.min(series.t[0], now - 60), max: now };
      hitChart.setData([series.t, series.hit], false);
      rpsChart.setData([series.t, series.match, series.download, series.infer], false);
      for (const c of [hitChart, rpsChart]) c.setScale('x', x);
    }
    last = { t: now, ...cur };
  } catch (e) {
    $('d-status').textContent = 'unreachable';
    $('d-status').style.color = 'var(--bad)';
  }
}

window.addEventListener('resize', () => {
  for (const [c, el] of [[hitChart, $('chart-hit')], [rpsChart, $('chart-rps')]]) c.setSize({ width: el.clientWidth, height: 220 });
});
poll();
setInterval(poll, PERIOD);
window.dashboard = { samples: () => series.t.length };
