#pragma once
// Predicted latency and energy of a model in a context (docs/DESIGN.md):
//   latency = (RTT + bytes / downlink) / inferences + slowdown x reference time
//   energy  = compute power x inference time
//             + (radio power x transfer time + tail energy) / inferences
// The download is paid once per model, so its time and energy are spread over
// the inferences expected per download.
#include <cstdint>

#include "context/context.h"
#include "context/latency.h"

namespace da::context {

struct Prediction {
  double download_ms = 0;  // per inference
  double compute_ms = 0;   // on the context's device
  double total_ms = 0;
  double energy_mj = 0;  // per inference
};

// `reference_ms`: the model's time on the reference runtime; `bytes`: its download size.
Prediction Predict(const Context& c, double reference_ms, int64_t bytes);

// The same for a spec, its time from `table` and its size from the ONNX exporter.
Prediction Predict(const Context& c, const LatencyTable& table, const nn::ModelSpec& spec);

}  // namespace da::context
