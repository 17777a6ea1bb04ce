#pragma once
// The latency predictor's lookup table, NetAdapt-style: each layer type and shape
// timed alone on the mobile-web runtime (onnxruntime-web, WASM, one thread, in
// node) on a grid of input/output widths; a model's time is the per-run overhead
// plus the sum of its layers' interpolated times.
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "nn/spec.h"

namespace da::context {

// A layer of a spec with the key of its table entry ("conv3s1r@28x28",
// "maxpool@28x28", "add_r@14x14", "gap@7x7", "linear_r", ...).
struct KeyedLayer {
  nn::Layer layer;
  int in_h = 1, in_w = 1;
  std::string key;
  bool two_d = false;  // entry indexed by (in_ch, out_ch); else by channels alone
};
std::vector<KeyedLayer> KeyedLayers(const nn::ModelSpec& spec);

class LatencyTable {
 public:
  struct Entry {
    std::vector<int> in, out;  // grid; `out` empty for entries indexed by channels
    std::vector<double> ms;    // time alone minus overhead, row-major [in][out]
  };
  std::string runtime;     // what the table was measured on
  double overhead_ms = 0;  // time of an empty-ish model: paid once per inference
  // A whole model runs differently from the sum of its layers alone (caches,
  // memory planning, per-op dispatch): time = scale x (overhead + sum of layers)
  // + per_layer_ms x layers, both fitted to whole models measured in the same
  // run (the profiled models at 1, 1/2 and 1/4 of their widths).
  double scale = 1, per_layer_ms = 0;
  std::map<std::string, Entry> entries;

  // UserError naming the problem for malformed tables.
  static LatencyTable FromJson(const nlohmann::json& j);
  static LatencyTable Load(const std::string& path);
  nlohmann::json ToJson() const;
  void Save(const std::string& path) const;  // atomic

  // A layer's time (ms, overhead excluded) interpolated bilinearly on the grid,
  // extrapolated linearly past its ends. UserError when the table has no entry.
  double LayerMs(const KeyedLayer& l) const;
  // Batch-1 time of a whole model on the reference runtime.
  double ModelMs(const nn::ModelSpec& spec) const;
};

struct WasmModel {
  std::string onnx;                          // serialized model
  std::vector<std::vector<int64_t>> inputs;  // shape of each input, without the batch
};

struct WasmTimerOptions {
  int min_runs = 20;         // timed runs per model (median reported) ...
  double min_seconds = 0.1;  // ... and at least this long
  std::string script;        // web/tools/ort-web-time.mjs (node) or browser-time.mjs (Chromium)
  std::vector<std::string> args;  // after the list's path, e.g. {"--throttle", "4"}
  bool browser = false;           // `script` times in Chromium ...
  double throttle = 1;            // ... at this DevTools CPU throttling
};

// Median batch-1 time (ms) of each model on onnxruntime-web (WASM, one thread)
// as `script` runs it (in node or in headless Chromium); `on_done(i)` after each. UserError when
// node or the script fails.
std::vector<double> TimeOnWasm(const std::vector<WasmModel>& models, const WasmTimerOptions& opts,
                               const std::function<void(size_t)>& on_done = {});

// Measures the table for every layer type and shape of `specs`, on grids up to
// their widths, and whole models for the calibration, with a progress line.
// `runtime` describes the runtime.
LatencyTable ProfileLatency(const std::vector<nn::ModelSpec>& specs, const WasmTimerOptions& opts,
                            const std::string& runtime, bool quiet = false);

}  // namespace da::context
