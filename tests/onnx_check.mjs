// Runs exported models with onnxruntime-node and compares them to libtorch's
// logits (NAME.logits), the engine's backends where present (NAME.engine:
// oneDNN, NAME.portable: portable) and the browser runtime (the portable
// backend in WebAssembly, web/engine/dist); the browser runtime also gets
// truncated and mutated files, which it must refuse with the engine's errors
// or run, never trap.
// usage: node onnx_check.mjs DIR   (DIR/cases.json lists NAME.onnx, NAME.input, NAME.logits)
import { createRequire } from 'node:module';
import { readFileSync, existsSync } from 'node:fs';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

const require = createRequire(join(dirname(fileURLToPath(import.meta.url)), '../web/package.json'));
const ort = require('onnxruntime-node');
const runtime = join(dirname(fileURLToPath(import.meta.url)), '../web/engine/dist/da-engine-node.cjs');
if (!existsSync(runtime)) {
  console.error(`${runtime} is missing: build the web_engine target (needs the emscripten package)`);
  process.exit(1);
}
const { wrapEngine } = await import('../web/sdk/engine.js');
const wasm = wrapEngine(await require(runtime)());
const dir = process.argv[2];
const floats = (f) => {
  const b = readFileSync(join(dir, f));
  return new Float32Array(b.buffer, b.byteOffset, b.byteLength / 4);
};
let failed = 0;
for (const c of JSON.parse(readFileSync(join(dir, 'cases.json'), 'utf8'))) {
  const session = await ort.InferenceSession.create(readFileSync(join(dir, `${c.name}.onnx`)));
  if (session.inputNames[0] !== 'input' || session.outputNames[0] !== 'logits') {
    console.error(`${c.summary}: names ${session.inputNames} -> ${session.outputNames}`);
    failed++;
    continue;
  }
  const input = floats(`${c.name}.input`);
  const out = (await session.run({ input: new ort.Tensor('float32', input, c.shape) })).logits;
  const bytes = readFileSync(join(dir, `${c.name}.onnx`));
  const model = wasm.open(bytes);
  const wasmLogits = model.run(input, c.shape[0]);
  model.release();
  for (const [who, file] of [['libtorch', `${c.name}.logits`], ['engine', `${c.name}.engine`],
                             ['portable', `${c.name}.portable`], ['wasm', null]]) {
    if (file && who !== 'libtorch' && !existsSync(join(dir, file))) continue;
    const want = file ? floats(file) : wasmLogits;
    let maxDiff = 0, argmaxSame = 0, maxAbs = 0;
    const n = c.shape[0], k = c.classes;
    for (let i = 0; i < n; i++) {
      let a = 0, b = 0;
      for (let j = 0; j < k; j++) {
        maxDiff = Math.max(maxDiff, Math.abs(out.data[i * k + j] - want[i * k + j]));
        maxAbs = Math.max(maxAbs, Math.abs(want[i * k + j]));
        if (out.data[i * k + j] > out.data[i * k + a]) a = j;
        if (want[i * k + j] > want[i * k + b]) b = j;
      }
      argmaxSame += a === b;
    }
    const ok = out.dims.join() === `${n},${k}` && want.length === n * k && maxDiff <= 1e-4 && argmaxSame === n;
    console.log(`${ok ? 'ok  ' : 'FAIL'} ${c.summary} against ${who}: max |diff| ${maxDiff.toExponential(2)} (max |logit| ${maxAbs.toFixed(1)}), argmax same ${argmaxSame}/${n}`);
    failed += !ok;
  }
  // Hostile files: a clear "ONNX model: ..." error or a model that runs.
  let seed = 7;
  const rand = (n) => ((seed = (seed * 1103515245 + 12345) >>> 0) >>> 8) % n;
  const cases = [bytes.subarray(0, bytes.length >> 1), new Uint8Array(0), new TextEncoder().encode('not a model')];
  for (let i = 0; i < 200; i++) {
    const b = Uint8Array.from(bytes);
    for (let e = 0; e <= rand(4); e++) b[rand(b.length)] = rand(256);
    cases.push(b);
  }
  let refused = 0, ran = 0, bad = 0;
  for (const [i, b] of cases.entries()) {
    let m;
    try {
      m = wasm.open(b);
      if (i < 3) throw new Error('a truncated, empty or text file was accepted');
    } catch (e) {
      if (/^ONNX model: /.test(e.message)) refused++;
      else console.error(`FAIL wasm: ${e.message}`), bad++;
      continue;
    }
    try {
      m.run(new Float32Array(m.input.reduce((a, b) => a * b, 1)).fill(0.5));
      ran++;
    } catch (e) {
      console.error(`FAIL wasm run of a mutated file: ${e.message}`), bad++;
    } finally {
      m.release();
    }
  }
  console.log(`${bad ? 'FAIL' : 'ok  '} ${c.summary}: the browser runtime refused ${refused} hostile files with the engine's errors, ran ${ran}`);
  failed += bad > 0;
}
process.exit(failed ? 1 : 0);
