#!/usr/bin/env bash
# Builds the browser runtime: src/engine's ONNX reader, fusion and portable
# kernels with web/engine/api.cc, to WebAssembly SIMD with Debian's emscripten.
#   OUT/da-engine.mjs + OUT/da-engine.wasm  the ES module for the page
#   OUT/da-engine-node.cjs                  one file for node (tests, benchmarks)
# Usage: web/engine/build.sh OUT   (CMake's web_engine target runs it when a source changed)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
out=${1:?usage: build.sh OUT}
export NODE_PATH=/usr/share/nodejs  # emscripten's JS passes need node-acorn
# Debian's emscripten keeps its system-library cache under /usr/share, which a
# user other than root cannot write: a private cache then.
[[ -w /usr/share/emscripten/cache ]] || export EM_CACHE=${EM_CACHE:-$HOME/.cache/emscripten}

sources=("$root"/src/engine/{onnx_reader,graph,portable}.cc "$here/api.cc")
mkdir -p "$out"
cflags=(-std=c++20 -O3 -DNDEBUG -msimd128 -fwasm-exceptions -I "$root/src" -Wall -Wextra)
objs=()
for s in "${sources[@]}"; do
  o="$out/obj/$(basename "${s%.cc}").o"
  mkdir -p "$out/obj"
  em++ "${cflags[@]}" -c "$s" -o "$o"
  objs+=("$o")
done
link=(-O3 -msimd128 -fwasm-exceptions -sMODULARIZE=1 -sEXPORT_NAME=DeepAdapterEngine
  -sALLOW_MEMORY_GROWTH=1 -sMAXIMUM_MEMORY=1gb -sFILESYSTEM=0
  -sEXPORTED_FUNCTIONS=_malloc,_free,_da_error,_da_load,_da_shape,_da_run,_da_free
  -sEXPORTED_RUNTIME_METHODS=UTF8ToString)
em++ "${objs[@]}" "${link[@]}" -sENVIRONMENT=web,worker -sEXPORT_ES6=1 -o "$out/da-engine.mjs"
em++ "${objs[@]}" "${link[@]}" -sENVIRONMENT=node -sSINGLE_FILE=1 -o "$out/da-engine-node.cjs"
rm -rf "$out/obj"
