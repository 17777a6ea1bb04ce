// DeepAdapter's own browser runtime: src/engine's portable backend compiled to
// WebAssembly SIMD (web/engine/build.sh), about 46 kB gzipped against
// onnxruntime-web's 3.7 MB. It reads the same ONNX files the edge runs, with
// the same checks and messages.
//
//   const engine = await loadEngine(`${edge}/engine/`);    // the page
//   const engine = wrapEngine(await require('.../da-engine-node.cjs')());  // node
//   const model = engine.open(onnxBytes);   // throws Error(message) on a bad file
//   const logits = model.run(float32NCHW);  // Float32Array of classes * n
//   model.release();

/** The runtime from the edge: `base` serves da-engine.mjs and da-engine.wasm. */
export async function loadEngine(base, files = {}) {
  const mjs = files.mjs ?? 'da-engine.mjs', wasm = files.wasm ?? 'da-engine.wasm';
  const { default: factory } = await import(/* webpackIgnore: true */ new URL(mjs, base).href);
  return wrapEngine(await factory({ locateFile: () => new URL(wasm, base).href }));
}

/** The runtime around an instantiated emscripten module (page or node build). */
export function wrapEngine(M) {
  const fail = () => new Error(M.UTF8ToString(M._da_error()));
  return {
    name: 'deepadapter-wasm',
    open(bytes) {
      const b = bytes instanceof Uint8Array ? bytes : new Uint8Array(bytes);
      const p = M._malloc(Math.max(1, b.byteLength));
      if (!p) throw new Error(`cannot allocate ${b.byteLength} bytes for the model`);
      M.HEAPU8.set(b, p);
      let h = M._da_load(p, b.byteLength);
      M._free(p);
      if (!h) throw fail();
      const s = M._malloc(16);
      M._da_shape(h, s);
      const [C, H, W, K] = M.HEAP32.slice(s >> 2, (s >> 2) + 4);
      M._free(s);
      const pixels = C * H * W;
      let cap = 0, x = 0, y = 0; // buffers for the largest batch so far
      return {
        input: [C, H, W],
        classes: K,
        /** Logits of n NCHW images (n * C * H * W floats). */
        run(data, n = 1) {
          if (!h) throw new Error('the model was released');
          if (data.length !== n * pixels) throw new Error(`expected ${n} x ${pixels} floats, got ${data.length}`);
          if (n > cap) {
            M._free(x), M._free(y);
            x = M._malloc(n * pixels * 4), y = M._malloc(n * K * 4), cap = n;
            if (!x || !y) throw new Error(`cannot allocate a batch of ${n}`);
          }
          M.HEAPF32.set(data, x >> 2); // HEAPF32 is re-read: memory growth replaces it
          if (M._da_run(h, x, n, y) !== 0) throw fail();
          return M.HEAPF32.slice(y >> 2, (y >> 2) + n * K);
        },
        release() {
          if (!h) return;
          M._free(x), M._free(y), M._da_free(h);
          x = y = cap = h = 0;
        },
      };
    },
  };
}
