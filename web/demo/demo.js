// The demo page: real Fashion-MNIST test images classified in the page by the
// branch model the edge matched to this visitor, with the edge answering the
// unsure ones. `window.demo` exposes the same actions to the browser tests.
import { DeepAdapter } from '/sdk/deepadapter.js';

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const state = { da: null, samples: null, offset: Number(params.get('offset') ?? 0), total: 0, results: new Map() };
const fmt = {
  // The page's clock ticks every 0.1 ms unless it is cross-origin isolated.
  ms: (v) => (v >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(1) : v >= 0.1 ? v.toFixed(2) : '< 0.1') + ' ms',
  kbps: (v) => (v >= 1000 ? (v / 1000).toFixed(1) + ' Mbit/s' : v.toFixed(0) + ' kbit/s'),
  bytes: (v) => (v >= 1e6 ? (v / 1e6).toFixed(2) + ' MB' : (v / 1e3).toFixed(1) + ' kB'),
  pct: (v) => (100 * v).toFixed(1) + '%',
};

function status(text, error = false) {
  $('status').textContent = text;
  $('status').className = error ? 'status error' : 'status';
}

function widths(spec) {
  if (!spec) return '—';
  const stages = spec.stages.map((s) => s.join(',')).join(' / ');
  return spec.family + ' ' + stages + (spec.hidden ? ` fc${spec.hidden}` : '');
}

function showContext() {
  const c = state.da.context, m = state.da.match;
  $('c-slowdown').textContent = `${c.slowdown.toFixed(2)}× the reference runtime`;
  $('c-downlink').textContent = fmt.kbps(c.downlink_kbps);
  $('c-rtt').textContent = fmt.ms(c.rtt_ms);
  $('m-id').textContent = m.model + (m.cached ? ' (cached at the edge)' : '');
  $('m-bytes').textContent = fmt.bytes(m.bytes);
  $('m-widths').textContent = widths(m.spec);
  $('m-acc').textContent = fmt.pct(m.val_accuracy);
  $('m-pred').textContent = `${fmt.ms(m.predicted.latency_ms)} (compute ${fmt.ms(m.predicted.compute_ms)})` +
    (m.meets_budget ? '' : ' — over budget');
  $('m-thr').textContent = m.threshold > 1 ? 'always' : `confidence ${m.threshold.toFixed(2)}`;
}

function showStats() {
  const rs = [...state.results.values()];
  if (!rs.length) return;
  const correct = rs.filter((r) => r.label === r.truth).length;
  const edge = rs.filter((r) => r.ranOn === 'edge').length;
  const lat = rs.map((r) => r.times.totalMs ?? r.times.inferenceMs).sort((a, b) => a - b);
  const device = rs.filter((r) => r.ranOn === 'device').map((r) => r.times.inferenceMs).sort((a, b) => a - b);
  $('s-acc').textContent = fmt.pct(correct / rs.length);
  $('s-off').textContent = fmt.pct(edge / rs.length);
  $('s-lat').textContent = fmt.ms(lat[lat.length >> 1]);
  if (device.length) $('m-meas').textContent = `${fmt.ms(device[device.length >> 1])} median on this device`;
}

async function loadSamples(offset, count = 48) {
  const j = await (await fetch(`/v1/samples?offset=${offset}&count=${count}`)).json();
  const raw = atob(j.pixels_base64);
  const [C, H, W] = j.shape, per = C * H * W;
  const images = j.labels.map((label, i) => {
    const img = new ImageData(W, H);
    for (let p = 0; p < H * W; p++) {
      const v = raw.charCodeAt(i * per + p);
      img.data.set([v, v, v, 255], 4 * p);
    }
    return { index: j.offset + i, label, img };
  });
  state.samples = { classes: j.classes, images };
  state.total = j.total;
  state.results.clear();
  const grid = $('grid');
  grid.replaceChildren();
  for (const s of images) {
    const cell = document.createElement('div');
    cell.className = 'cell';
    cell.id = `cell-${s.index}`;
    const cv = document.createElement('canvas');
    cv.width = W, cv.height = H;
    cv.getContext('2d').putImageData(s.img, 0, 0);
    cell.append(cv);
    cell.insertAdjacentHTML('beforeend', `<div class="t">${j.classes[s.label]}</div><div class="p"></div><div class="where"></div>`);
    cell.onclick = () => classifyOne(s);
    grid.append(cell);
  }
}

async function classifyOne(s) {
  const r = await state.da.classify(s.img);
  const result = { ...r, truth: s.label, index: s.index };
  state.results.set(s.index, result);
  const cell = $(`cell-${s.index}`);
  cell.className = 'cell ' + (r.label === s.label ? 'ok' : 'bad');
  cell.querySelector('.p').textContent = state.samples.classes[r.label];
  const where = cell.querySelector('.where');
  const ms = r.times.totalMs ?? r.times.inferenceMs;
  where.textContent = `${r.ranOn === 'edge' ? 'edge' : 'this device'} · ${fmt.ms(ms)}` + (r.confident ? '' : ' · unsure');
  where.className = 'where' + (r.ranOn === 'edge' ? ' edge' : '');
  showStats();
  return result;
}

async function classifyAll() {
  $('all').disabled = true;
  try {
    const out = [];
    for (const s of state.samples.images) out.push(await classifyOne(s));
    return out;
  } finally {
    $('all').disabled = false;
  }
}

// Drawing: white strokes on black, like Fashion-MNIST.
function setupDrawing() {
  const cv = $('draw'), g = cv.getContext('2d');
  const clear = () => { g.fillStyle = '#000'; g.fillRect(0, 0, cv.width, cv.height); };
  clear();
  let down = false;
  const at = (e) => { const r = cv.getBoundingClientRect(); return [(e.clientX - r.left) * cv.width / r.width, (e.clientY - r.top) * cv.height / r.height]; };
  cv.onpointerdown = (e) => { down = true; g.beginPath(); g.moveTo(...at(e)); };
  cv.onpointermove = (e) => { if (!down) return; g.lineTo(...at(e)); g.strokeStyle = '#fff'; g.lineWidth = 16; g.lineCap = 'round'; g.stroke(); };
  window.addEventListener('pointerup', () => (down = false));
  $('draw-clear').onclick = () => { clear(); $('draw-out').textContent = ''; };
  $('draw-go').onclick = async () => {
    const r = await state.da.classify(cv);
    $('draw-out').textContent = `${state.samples.classes[r.label]} (${fmt.pct(r.probabilities[r.label])}, on ${r.ranOn === 'edge' ? 'the edge' : 'this device'})`;
  };
}

async function main() {
  const budget = Number(params.get('budget') ?? 30);
  $('budget').value = budget;
  $('budget-out').textContent = `${budget} ms`;
  await loadSamples(state.offset);
  status('Measuring this device and network…');
  const probe = Number(params.get('probe'));  // bytes per downlink probe (the SDK's default when absent)
  state.da = await DeepAdapter.connect(location.origin, { budgetMs: budget, inferences: 100, ...(probe > 0 && { probeBytes: probe }) });
  state.da.on((e) => {
    if (e.type === 'rematch') showContext();
    if (e.type === 'edge-down') status('The edge is unreachable: answering on this device only.', true);
    if (e.type === 'edge-up') status('Connected.');
  });
  if (!state.da.match) {  // a first visit: the smallest model answers while the match downloads
    status(`Answering with ${state.da.reference.first.model} (the smallest model) while measuring this device and network…`);
    await state.da.ready;
  }
  showContext();
  status(`Ready: ${state.da.match.model}${state.da.match.load_ms === undefined ? '' : ` loaded in ${fmt.ms(state.da.match.load_ms)}`} · ${state.da.runtime}.`);
  $('all').onclick = classifyAll;
  $('more').onclick = () => loadSamples((state.offset = (state.offset + 48) % Math.max(1, state.total - 48)));
  $('budget').oninput = () => ($('budget-out').textContent = `${$('budget').value} ms`);
  $('budget').onchange = async () => {
    status('Matching again…');
    await state.da.setBudget(Number($('budget').value));
    showContext();
    status(`Ready: ${state.da.match.model}.`);
  };
  setupDrawing();
}

const ready = main().catch((e) => {
  status(`${e.code ?? 'error'}: ${e.message}`, true);
  throw e;
});
window.demo = {
  ready,
  get da() { return state.da; },
  loadSamples: (offset, count) => loadSamples(offset, count),
  classifyAll,
  results: () => [...state.results.values()].map((r) => ({ index: r.index, truth: r.truth, label: r.label, ranOn: r.ranOn, confident: r.confident, model: r.model, top: r.probabilities[r.label], times: r.times })),
};
