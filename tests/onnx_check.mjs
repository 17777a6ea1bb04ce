// Runs exported models with onnxruntime-node and compares them to libtorch's
// logits (NAME.logits) and, where present, the engine's (NAME.engine).
// usage: node onnx_check.mjs DIR   (DIR/cases.json lists NAME.onnx, NAME.input, NAME.logits)
import { createRequire } from 'node:module';
import { readFileSync, existsSync } from 'node:fs';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

const require = createRequire(join(dirname(fileURLToPath(import.meta.url)), '../web/package.json'));
const ort = require('onnxruntime-node');
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
  const out = (await session.run({ input: new ort.Tensor('float32', floats(`${c.name}.input`), c.shape) })).logits;
  for (const [who, file] of [['libtorch', `${c.name}.logits`], ['engine', `${c.name}.engine`]]) {
    if (who === 'engine' && !existsSync(join(dir, file))) continue;
    const want = floats(file);
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
}
process.exit(failed ? 1 : 0);
