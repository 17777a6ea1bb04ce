// The C interface the browser runtime (da-engine.mjs) calls: the engine's
// portable backend, built to WebAssembly by web/engine/build.sh. Handles
// instead of pointers, so a wrong call from JavaScript is an error code,
// never a stray write.
#include <emscripten/emscripten.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>

#include "common/error.h"
#include "engine/portable.h"

namespace {

std::map<int, std::unique_ptr<da::engine::PortableModel>> models;
int next_handle = 1;
std::string error;

da::engine::PortableModel* Find(int h) {
  auto it = models.find(h);
  if (it != models.end()) return it->second.get();
  error = "no model with handle " + std::to_string(h);
  return nullptr;
}

}  // namespace

extern "C" {

// The last error's message.
EMSCRIPTEN_KEEPALIVE const char* da_error() { return error.c_str(); }

// Loads an ONNX file: a handle (> 0), or 0 with da_error() saying why.
EMSCRIPTEN_KEEPALIVE int da_load(const char* bytes, int size) {
  try {
    auto m = std::make_unique<da::engine::PortableModel>(std::string(bytes, size_t(size)));
    models[next_handle] = std::move(m);
    return next_handle++;
  } catch (const std::exception& e) {  // UserError, or bad_alloc past the memory limit
    error = e.what();
    return 0;
  }
}

// The input [C, H, W] and the number of classes into shape[0..3]; 0, or -1.
EMSCRIPTEN_KEEPALIVE int da_shape(int h, int32_t* shape) {
  auto* m = Find(h);
  if (!m) return -1;
  shape[0] = int32_t(m->channels()), shape[1] = int32_t(m->height());
  shape[2] = int32_t(m->width()), shape[3] = int32_t(m->classes());
  return 0;
}

// Logits of n NCHW images; 0, or -1 with da_error().
EMSCRIPTEN_KEEPALIVE int da_run(int h, const float* images, int n, float* logits) {
  auto* m = Find(h);
  if (!m) return -1;
  try {
    m->Run(images, n, logits);
    return 0;
  } catch (const std::exception& e) {
    error = e.what();
    return -1;
  }
}

EMSCRIPTEN_KEEPALIVE void da_free(int h) { models.erase(h); }

}  // extern "C"
