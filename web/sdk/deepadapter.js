// DeepAdapter browser SDK: measures the visitor's context, gets the branch
// model the edge matches to it, runs it in the page (with DeepAdapter's own
// WebAssembly runtime, engine.js, or onnxruntime-web), and asks the edge's
// base model when the page's answer is not confident.
//
//   import { DeepAdapter } from '/sdk/deepadapter.js';
//   const da = await DeepAdapter.connect('https://edge.example', { budgetMs: 30 });
//   const r = await da.classify(canvas);   // {label, probabilities, ranOn, model, times, ...}
//
// A first visit answers at once from the family's smallest branch model
// (`provisional: true` in results) while the SDK measures the context and
// downloads the matched model in the background; `da.ready` resolves when the
// matched model has taken over. A repeat visit answers at once with the
// model it was matched to last (from Cache Storage, the runtime from the HTTP
// cache) and asks the edge again in the background. The network is measured
// again when the browser says the connection changed or an answer from the
// edge takes far from what the measured network predicts.

import { loadEngine } from './engine.js';

/** Every failure of the SDK: `code` says which, `message` says what to do. */
export class DeepAdapterError extends Error {
  constructor(code, message, cause) {
    super(message);
    this.name = 'DeepAdapterError';
    this.code = code; // 'edge-unreachable' | 'edge-error' | 'hash-mismatch' | 'wasm-unavailable' | 'bad-input' | 'insecure-context'
    if (cause) this.cause = cause;
  }
}

const CACHE = 'deepadapter-models-v1';
const STORED = 'deepadapter-context-v1:'; // + edge URL, in localStorage
const DEVICE = 'deepadapter-device-v1:'; // + runtime + ':' + edge URL: the device's last measurement
const now = () => performance.now();
const quantile = (xs, q) => [...xs].sort((a, b) => a - b)[Math.floor(q * (xs.length - 1))];

async function sha256Hex(bytes) {
  if (!globalThis.crypto?.subtle)
    throw new DeepAdapterError('insecure-context', 'WebCrypto is unavailable: serve the page over HTTPS (or from localhost)');
  const d = new Uint8Array(await crypto.subtle.digest('SHA-256', bytes));
  return Array.from(d, (b) => b.toString(16).padStart(2, '0')).join('');
}

export class DeepAdapter {
  /**
   * Opens a model to answer with: the smallest branch at once (progressive),
   * or the matched one after measuring. Options: budgetMs (50), inferences
   * (100: expected inferences per download), runtime ('deepadapter': the
   * edge's WebAssembly runtime, ~40 kB; 'ort': onnxruntime-web, ~3.7 MB), ort
   * (an onnxruntime-web module, implies runtime 'ort'), progressive (true),
   * rememberMs (86400000: how long a measured context, and apart from it the
   * device's measurement, is reused by the next visits; 0: never),
   * rematchEveryMs (0: the network is measured again only when the browser
   * says the connection changed or an answer from the edge takes far from
   * what the measured network predicts; N: also every N ms), margin (0.3:
   * relative change of the network that triggers a new match), probeBytes
   * (131072: the largest bandwidth probe), timeoutMs (10000), threshold
   * (overrides the match's: the confidence below which the edge answers;
   * above 1: always the edge).
   */
  static async connect(edgeUrl, options = {}) {
    const da = new DeepAdapter(edgeUrl, options);
    await da.#start();
    return da;
  }

  constructor(edgeUrl, options) {
    this.edge = new URL(edgeUrl, globalThis.location?.href).href.replace(/\/$/, '');
    this.options = {
      budgetMs: 50, inferences: 100, runtime: options.ort ? 'ort' : 'deepadapter', progressive: true,
      rememberMs: 86400000, rematchEveryMs: 0, margin: 0.3, probeBytes: 128 << 10, timeoutMs: 10000, ...options,
    };
    this.context = null; // {slowdown, downlink_kbps, rtt_ms, hint}
    this.match = null; // the edge's answer to /v1/match
    this.reference = null; // the edge's answer to /v1/reference
    this.edgeReachable = true;
    this.listeners = new Set();
    this.ready = null; // resolves when the matched model answers
    this.timings = {}; // ms since connect(): runtime, firstModel, matched
  }

  #runtime = null; // {name, open(bytes, input) -> {run(x, n), release()}}
  #session = null; // {session, match, inflight, retired, provisional}
  #timer = null;
  #onConnection = null;
  #rematching = null;

  /**
   * Calls `fn(event)` on 'ready' (the matched model answers), 'upgrade-failed',
   * 'rematch', 'edge-down', 'edge-up'. Returns an unsubscribe function.
   */
  on(fn) {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }
  #emit(type, detail) {
    for (const fn of this.listeners) fn({ type, ...detail });
  }

  async #start() {
    const t0 = now(), since = () => now() - t0;
    if (!(await this.#resume(since))) {
      // Its time is the network's first round trip sample (a small body, never cached).
      const r0 = now();
      this.reference = await (await this.#fetch('/v1/reference', { cache: 'no-store' })).json();
      this.#rtts = [(this.#firstRtt = now() - r0)];
      const first = this.reference.first ?? this.reference;
      // The runtime and the first model download side by side.
      const [runtime, firstBytes] = await Promise.all([
        this.#loadRuntime().then((r) => ((this.timings.runtime = since()), r)),
        this.options.progressive ? this.#timedModel(first) : null,
      ]);
      this.#runtime = runtime;
      const upgrade = async () => {
        this.context = await this.measure();
        await this.#matchAndLoad();
        this.#remember();
        this.timings.matched = since();
        this.#emit('ready', { match: this.match, timings: this.timings });
      };
      if (firstBytes) {
        this.#session = { session: await this.#open(firstBytes, first.spec.input), match: first, inflight: 0, retired: false, provisional: true };
        this.timings.firstModel = since();
        this.ready = upgrade();
        this.ready.catch((e) => this.#emit('upgrade-failed', { error: e }));
      } else {
        await upgrade();
        this.ready = Promise.resolve();
      }
    }
    if (this.options.rematchEveryMs > 0)
      this.#timer = setInterval(() => this.rematchIfMoved().catch(() => {}), this.options.rematchEveryMs);
    const conn = navigator.connection;
    if (conn?.addEventListener) {
      this.#onConnection = () => this.rematchIfMoved().catch(() => {});
      conn.addEventListener('change', this.#onConnection);
    }
  }

  // A repeat visit: the last visit's context, match and runtime files, the
  // model from Cache Storage and the runtime from the HTTP cache, without a
  // request to the edge; the edge is asked again in the background (`ready`),
  // and a different match there swaps models.
  async #resume(since) {
    const s = this.#stored();
    if (!s) return false;
    try {
      const bytes = await this.#model(s.match.url, s.match.sha256, { cachedOnly: true });
      if (!bytes) return false;
      this.reference = s.reference;
      this.#runtime = await this.#loadRuntime();
      this.timings.runtime = since();
      this.#session = { session: await this.#open(bytes, s.match.spec.input), match: s.match, inflight: 0, retired: false, provisional: false };
    } catch {
      this.reference = null;
      return false; // a first visit's path instead
    }
    this.context = s.context;
    this.match = s.match;
    this.timings.firstModel = this.timings.matched = since();
    this.ready = (async () => {
      this.reference = await (await this.#fetch('/v1/reference')).json();
      await this.#matchAndLoad();
      this.#remember();
      this.#emit('ready', { match: this.match, timings: this.timings });
    })();
    this.ready.catch((e) => this.#emit('upgrade-failed', { error: e }));
    return true;
  }

  // What the last visit measured and was matched to: when recent, on the same
  // runtime, budget and inferences, and the browser's connection hints (where it has them) about the
  // same: the same effective type, downlink and RTT within a factor of 2.
  #stored() {
    try {
      const s = JSON.parse(globalThis.localStorage?.getItem(STORED + this.edge) ?? 'null');
      if (!s?.context || !s.match?.spec || !s.reference) return null;
      const c = navigator.connection, hint = s.context.hint;
      const near = (a, b) => (a > 0 && b > 0 ? Math.abs(Math.log(a / b)) <= Math.log(2) : a === b);
      const same = !c || !hint || (c.effectiveType === hint.effectiveType && near(c.downlink, hint.downlink_mbps) && near(c.rtt, hint.rtt_ms));
      const o = this.options;
      if (same && now() + performance.timeOrigin - s.at < o.rememberMs && s.runtime === o.runtime &&
          s.budgetMs === o.budgetMs && s.inferences === o.inferences) return s;
    } catch {}
    return null;
  }

  #remember() {
    try {
      globalThis.localStorage?.setItem(STORED + this.edge, JSON.stringify({
        at: now() + performance.timeOrigin, runtime: this.options.runtime, budgetMs: this.options.budgetMs,
        inferences: this.options.inferences, context: this.context, match: this.match, reference: this.reference,
      }));
    } catch {}
  }

  // {name, open(bytes, [C, H, W]) -> {run(x, n) -> logits, release()}} for the runtime chosen.
  async #loadRuntime() {
    const files = this.reference.runtimes ?? {};
    try {
      if (this.options.runtime !== 'ort') {
        const f = files.deepadapter ?? { mjs: '/engine/da-engine.mjs', wasm: '/engine/da-engine.wasm' };
        return await loadEngine(`${this.edge}/`, f);
      }
      const f = files.ort ?? { module: '/ort/ort.wasm.min.mjs', mjs: '/ort/ort-wasm-simd-threaded.mjs', wasm: '/ort/ort-wasm-simd-threaded.wasm' };
      const ort = this.options.ort ?? (await import(/* webpackIgnore: true */ this.edge + f.module));
      ort.env.wasm.numThreads = globalThis.crossOriginIsolated ? Math.min(4, navigator.hardwareConcurrency || 1) : 1;
      ort.env.logLevel = 'error';
      if (!this.options.ort) ort.env.wasm.wasmPaths = { mjs: this.edge + f.mjs, wasm: this.edge + f.wasm };
      return {
        name: 'onnxruntime-web',
        async open(bytes, input) {
          const s = await ort.InferenceSession.create(new Uint8Array(bytes), { executionProviders: ['wasm'], graphOptimizationLevel: 'all' });
          return {
            async run(x, n = 1) {
              return (await s.run({ input: new ort.Tensor('float32', x, [n, ...input]) })).logits.data;
            },
            release: () => s.release(),
          };
        },
      };
    } catch (e) {
      throw new DeepAdapterError('wasm-unavailable', `cannot load the ${this.options.runtime} runtime from the edge: ${e.message}`, e);
    }
  }

  async #fetch(path, init = {}) {
    const ctrl = new AbortController();
    const t = setTimeout(() => ctrl.abort(), this.options.timeoutMs);
    let res;
    try {
      res = await fetch(path.startsWith('http') ? path : this.edge + path, { ...init, signal: ctrl.signal });
    } catch (e) {
      this.#setReachable(false);
      throw new DeepAdapterError('edge-unreachable', `the edge at ${this.edge} is unreachable (${e.message})`, e);
    } finally {
      clearTimeout(t);
    }
    this.#setReachable(true);
    if (!res.ok && res.status !== 304) {
      let why = `${res.status}`;
      try {
        why = (await res.json()).error ?? why;
      } catch {}
      throw new DeepAdapterError('edge-error', `${init.method ?? 'GET'} ${path}: ${why}`);
    }
    return res;
  }

  #edgeRetryAt = 0;
  #edgeBackoffMs = 0;
  #rtts = []; // round trips timed on the way (the reference request), for measureNetwork
  #firstRtt = 0; // the reference request's time on a first visit
  #firstLoadMs; // how long a first visit's first model took to load
  #checkedAt = -Infinity; // when an answer from the edge last started a re-measurement

  #setReachable(ok) {
    this.#edgeBackoffMs = ok ? 0 : Math.min(60000, Math.max(1000, 2 * this.#edgeBackoffMs));
    this.#edgeRetryAt = ok ? 0 : now() + this.#edgeBackoffMs;
    if (ok === this.edgeReachable) return;
    this.edgeReachable = ok;
    this.#emit(ok ? 'edge-up' : 'edge-down', {});
  }

  /**
   * The network, with as few bytes as a useful estimate allows: the RTT is
   * the quickest of two round trips (the reference request's on a first
   * visit, plus empty probes), the downlink from a 16 kB probe and, when that
   * took under 250 ms past the round trip, one more sized to take about
   * 250 ms at the rate it saw (at most probeBytes).
   */
  async measureNetwork() {
    const rtts = this.#rtts.splice(0);
    while (rtts.length < 2) {
      const t0 = now();
      await (await this.#fetch(`/v1/probe?bytes=0&r=${Math.random()}`, { cache: 'no-store' })).arrayBuffer();
      rtts.push(now() - t0);
    }
    const rtt = Math.min(...rtts);
    // A transfer takes at least the round trip, taken off each probe's time.
    // When what is left is within the round trips' noise (under 5% of the
    // probe: a fast link), the whole time is used: a lower bound on the rate,
    // never the 0.05 ms floor's tens of Gbit/s.
    let rate = 0;
    for (let n = Math.min(16 << 10, this.options.probeBytes), i = 0; i < 2; i++) {
      const t0 = now();
      const got = (await (await this.#fetch(`/v1/probe?bytes=${n}&r=${Math.random()}`, { cache: 'no-store' })).arrayBuffer()).byteLength;
      const elapsed = now() - t0;
      const ms = Math.max(0.05, elapsed - rtt > 0.05 * elapsed ? elapsed - rtt : elapsed);
      rate = (got * 8) / ms; // bits per ms = kbit/s
      if (ms >= 250) break;
      n = Math.round(Math.min(this.options.probeBytes, Math.max(16 << 10, (rate / 8) * 250)));
    }
    const conn = navigator.connection;
    return {
      downlink_kbps: Math.max(1, rate),
      rtt_ms: Math.max(0.1, rtt),
      hint: conn ? { effectiveType: conn.effectiveType, downlink_mbps: conn.downlink, rtt_ms: conn.rtt } : null,
    };
  }

  /**
   * The device: the time of a model here over its time on the reference
   * runtime (the latency table's). onnxruntime-web times the edge's
   * reference model (>= 1 ms there: its per-call overhead would dominate a
   * tiny one); DeepAdapter's runtime, whose calls cost next to nothing, times
   * the smallest branch, which a first visit already has. The time is the
   * lower quartile of groups of runs: other work on the phone (another tab, a
   * worker, the system) only ever makes a group slower, so the faster groups
   * are the device's own speed (docs/RESULTS.md, issue 26).
   */
  async measureDevice() {
    const ref = this.#deviceModel();
    const bytes = await this.#model(ref.url, ref.sha256);
    const session = await this.#open(bytes, ref.spec.input);
    try {
      const x = new Float32Array(ref.spec.input.reduce((a, b) => a * b, 1)).fill(0.5);
      // A warm-up of >= 150 ms: V8 optimizes the WASM code while it runs, and
      // a fresh page measured before that looked up to 1.5x slower. Then runs
      // are timed in groups of >= 10 ms: the page's clock may tick only every
      // 100 us, and a CPU paused in slices (DevTools throttling, a phone's
      // scheduler) would let single short runs miss the pauses.
      let t = now(), perGroup = 0;
      for (let i = 0; i < 3 || now() - t < 150; i++) await session.run(x);
      t = now();
      while (now() - t < 10) await session.run(x), perGroup++;
      const group = async () => {
        const g = now();
        for (let i = 0; i < perGroup; i++) await session.run(x);
        return (now() - g) / perGroup;
      };
      // ... and on until three groups in a row agree within 5% (V8 may still
      // be optimizing: a loaded machine delays it), at most 1.5 s.
      const warm = [];
      while (now() - t < 1500) {
        warm.push(await group());
        const last = warm.slice(-3);
        if (last.length === 3 && Math.max(...last) <= 1.05 * Math.min(...last)) break;
      }
      const means = [];
      const t0 = now();
      while (means.length < 9 || (now() - t0 < 300 && means.length < 30)) means.push(await group());
      const ms = quantile(means, 0.25);
      return { slowdown: Math.min(100, Math.max(0.05, ms / ref.reference_ms)), reference_model: ref.model, measured_ms: ms, groups_ms: means };
    } finally {
      await session.release();
    }
  }

  // The model that times the device (see measureDevice).
  #deviceModel() {
    return this.options.runtime === 'ort' ? this.reference : this.reference.first ?? this.reference;
  }

  /**
   * Measures both; the result is what /v1/match receives. The device's
   * measurement is kept (per edge and runtime, for rememberMs) apart from the
   * network's: a visit whose network changed measures only the network, and a
   * measurement taken while the phone was busy cannot move the next visits.
   */
  async measure() {
    const net = await this.measureNetwork();
    const key = DEVICE + this.options.runtime + ':' + this.edge;
    const ref = this.#deviceModel();
    let dev = null;
    try {
      const d = JSON.parse(globalThis.localStorage?.getItem(key) ?? 'null');
      if (d && d.reference_model === ref.model && d.reference_ms === ref.reference_ms &&
          now() + performance.timeOrigin - d.at < this.options.rememberMs) dev = d.device;
    } catch {}
    if (!dev) {
      dev = await this.measureDevice();
      try {
        globalThis.localStorage?.setItem(key, JSON.stringify({
          at: now() + performance.timeOrigin, reference_model: ref.model, reference_ms: ref.reference_ms, device: dev }));
      } catch {}
    }
    return { ...dev, ...net };
  }

  async #matchAndLoad() {
    const c = this.context;
    const body = {
      slowdown: c.slowdown, downlink_kbps: c.downlink_kbps, uplink_kbps: c.downlink_kbps,
      rtt_ms: c.rtt_ms, budget_ms: this.options.budgetMs, inferences: this.options.inferences,
    };
    const m = await (await this.#fetch('/v1/match', {
      method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body),
    })).json();
    if (this.#session && this.#session.match.model === m.model) {
      // (The first model was the match: its load is the first download's.)
      this.match = this.#session.provisional && this.#firstLoadMs !== undefined ? { ...m, load_ms: this.#firstLoadMs } : m;
      this.#session.match = m;
      this.#session.provisional = false; // the first model was the match
      return false;
    }
    const t0 = now();
    const bytes = await this.#model(m.url, m.sha256);
    const loadMs = now() - t0;
    const session = await this.#open(bytes, m.spec.input);
    const old = this.#session;
    this.#session = { session, match: m, inflight: 0, retired: false, provisional: false };
    this.match = { ...m, load_ms: loadMs };
    if (old) this.#retire(old);
    return true;
  }

  #retire(s) {
    s.retired = true;
    if (s.inflight === 0) s.session.release();
  }

  /** Re-measures the network; matches again (and swaps models) when it moved past the margin. */
  async rematchIfMoved() {
    if (!this.context) return false; // still measuring (progressive start)
    if (this.#rematching) return this.#rematching;
    this.#rematching = (async () => {
      const net = await this.measureNetwork();
      const moved = (a, b) => Math.abs(Math.log(a / b)) > Math.log(1 + this.options.margin);
      if (!moved(net.downlink_kbps, this.context.downlink_kbps) && !moved(net.rtt_ms, this.context.rtt_ms)) return false;
      this.context = { ...this.context, ...net };
      const swapped = await this.#matchAndLoad();
      this.#remember();
      this.#emit('rematch', { context: this.context, match: this.match, swapped });
      return swapped;
    })().finally(() => (this.#rematching = null));
    return this.#rematching;
  }

  /** A new latency budget: matches again now. */
  async setBudget(ms) {
    await this.ready;
    this.options.budgetMs = ms;
    const swapped = await this.#matchAndLoad();
    this.#remember();
    this.#emit('rematch', { context: this.context, match: this.match, swapped });
    return this.match;
  }

  async #timedModel(m) {
    const t0 = now();
    const bytes = await this.#model(m.url, m.sha256);
    this.#firstLoadMs = now() - t0;
    return bytes;
  }

  // The model file: from Cache Storage when there (hash checked), else downloaded and cached.
  async #model(url, sha, { cachedOnly = false } = {}) {
    const full = this.edge + url;
    const cache = globalThis.caches ? await caches.open(CACHE) : null;
    const hit = await cache?.match(full);
    if (hit) {
      const bytes = await hit.arrayBuffer();
      if ((await sha256Hex(bytes)) === sha) return bytes;
      await cache.delete(full);
    }
    if (cachedOnly) return null;
    const bytes = await (await this.#fetch(url)).arrayBuffer();
    const got = await sha256Hex(bytes);
    if (got !== sha) throw new DeepAdapterError('hash-mismatch', `${url}: sha256 ${got}, expected ${sha}`);
    await cache?.put(full, new Response(bytes, { headers: { 'Content-Type': 'application/octet-stream' } }));
    return bytes;
  }

  async #open(bytes, input) {
    try {
      return await this.#runtime.open(bytes, input);
    } catch (e) {
      throw new DeepAdapterError('wasm-unavailable', `${this.#runtime.name} cannot run the model: ${e.message}`, e);
    }
  }

  /** Which runtime runs the models: 'deepadapter-wasm' or 'onnxruntime-web'. */
  get runtime() {
    return this.#runtime?.name;
  }

  /** The model's input [C, H, W]. */
  get inputShape() {
    return this.#session.match.spec.input;
  }

  // Pixels / 255 in NCHW, and the exact bytes when the input was an image.
  #pixels(input) {
    const [C, H, W] = this.inputShape;
    if (input instanceof Float32Array) {
      if (input.length !== C * H * W) throw new DeepAdapterError('bad-input', `expected ${C}x${H}x${W} = ${C * H * W} floats, got ${input.length}`);
      return { x: input, bytes: null };
    }
    let img = input;
    if (typeof HTMLCanvasElement !== 'undefined' && input instanceof HTMLCanvasElement) {
      const c = document.createElement('canvas');
      c.width = W, c.height = H;
      const g = c.getContext('2d');
      g.drawImage(input, 0, 0, W, H);
      img = g.getImageData(0, 0, W, H);
    }
    if (!(typeof ImageData !== 'undefined' && img instanceof ImageData))
      throw new DeepAdapterError('bad-input', 'classify takes an ImageData, a canvas or a Float32Array');
    if (img.width !== W || img.height !== H) throw new DeepAdapterError('bad-input', `the image must be ${W}x${H}, not ${img.width}x${img.height}`);
    const x = new Float32Array(C * H * W), bytes = new Uint8Array(C * H * W);
    for (let p = 0; p < H * W; p++) {
      for (let ch = 0; ch < C; ch++) {
        const v = C === 1 ? Math.round((img.data[4 * p] + img.data[4 * p + 1] + img.data[4 * p + 2]) / 3) : img.data[4 * p + ch];
        bytes[ch * H * W + p] = v;
        x[ch * H * W + p] = v / 255;
      }
    }
    return { x, bytes };
  }

  /**
   * Classifies one image in the page; below the model's threshold the edge's
   * base model answers instead. With the edge unreachable the page's answer is
   * returned, marked `confident: false`.
   */
  async classify(input) {
    const s = this.#session;
    const { x, bytes } = this.#pixels(input);
    const [C, H, W] = this.inputShape;
    s.inflight++;
    let probs, inferenceMs;
    try {
      const t0 = now();
      const logits = await s.session.run(x);
      inferenceMs = now() - t0;
      probs = softmax(logits);
    } finally {
      if (--s.inflight === 0 && s.retired) s.session.release();
    }
    const label = argmax(probs);
    const threshold = this.options.threshold ?? s.match.threshold;
    const base = { model: s.match.model, provisional: s.provisional, threshold, times: { inferenceMs } };
    if (probs[label] >= threshold) return { ...base, ranOn: 'device', label, probabilities: probs, confident: true };
    // Provisional answers (the network not measured yet) ask the edge only
    // when the one round trip timed so far fits the budget.
    if (s.provisional && this.#firstRtt > this.options.budgetMs)
      return { ...base, ranOn: 'device', label, probabilities: probs, confident: false };
    // An edge that failed is asked again only after a backoff (1 s, doubling
    // to 60 s): while it is down, unsure answers come back at once, marked.
    if (!this.edgeReachable && now() < this.#edgeRetryAt)
      return { ...base, ranOn: 'device', label, probabilities: probs, confident: false, edgeError: 'the edge is unreachable; retrying later' };
    try {
      const t0 = now();
      const r = await this.#askEdge(x, bytes, [C, H, W]);
      const edgeMs = now() - t0;
      this.#checkAnswerTime(edgeMs, bytes?.byteLength ?? x.byteLength);
      return { ...base, ranOn: 'edge', label: r.label, probabilities: r.probabilities, confident: true,
               deviceLabel: label, times: { inferenceMs, edgeMs, totalMs: inferenceMs + edgeMs } };
    } catch (e) {
      return { ...base, ranOn: 'device', label, probabilities: probs, confident: false, edgeError: e.message };
    }
  }

  // An answer from the edge far from what the measured network predicts (a
  // round trip and the upload, at the measured downlink's rate) means the
  // network moved: it is measured again (and matched again if it moved past
  // the margin), at most once every 30 s. This replaces probing every minute.
  #checkAnswerTime(ms, bytes) {
    const c = this.context;
    if (!c || now() - this.#checkedAt < 30000) return;
    const expected = c.rtt_ms + (bytes * 8) / c.downlink_kbps;
    // Off by 2x and by 50 ms (a few ms either way on a fast link is noise).
    if (Math.abs(ms - expected) > 50 && (ms > 2 * expected || ms < 0.5 * expected)) {
      this.#checkedAt = now();
      this.rematchIfMoved().catch(() => {});
    }
  }

  // The Open Inference Protocol's binary tensor extension: a JSON header, then
  // the raw bytes (784 for a 28x28 image, against about 3 KB as JSON text).
  async #askEdge(x, bytes, shape) {
    const payload = bytes ?? new Uint8Array(x.buffer, x.byteOffset, x.byteLength);
    const head = new TextEncoder().encode(JSON.stringify({
      inputs: [{ name: 'input', shape: [1, ...shape], datatype: bytes ? 'UINT8' : 'FP32',
                 parameters: { binary_data_size: payload.byteLength } }],
      outputs: [{ name: 'label' }, { name: 'probabilities' }],
    }));
    const body = new Uint8Array(head.length + payload.byteLength);
    body.set(head);
    body.set(payload, head.length);
    const res = await this.#fetch('/v2/models/base/infer', {
      method: 'POST', body,
      headers: { 'Content-Type': 'application/octet-stream', 'Inference-Header-Content-Length': String(head.length) },
    });
    const j = await res.json();
    const out = Object.fromEntries(j.outputs.map((o) => [o.name, o.data]));
    return { label: Number(out.label[0]), probabilities: Float32Array.from(out.probabilities) };
  }

  /** Stops background re-matching and frees the model. */
  async close() {
    clearInterval(this.#timer);
    if (this.#onConnection) navigator.connection.removeEventListener('change', this.#onConnection);
    if (this.#session) this.#retire(this.#session);
    this.#session = null;
  }
}

function softmax(logits) {
  let m = -Infinity;
  for (const v of logits) m = Math.max(m, v);
  const p = new Float32Array(logits.length);
  let sum = 0;
  for (let i = 0; i < logits.length; i++) sum += p[i] = Math.exp(logits[i] - m);
  for (let i = 0; i < p.length; i++) p[i] /= sum;
  return p;
}

function argmax(p) {
  let k = 0;
  for (let i = 1; i < p.length; i++) if (p[i] > p[k]) k = i;
  return k;
}
