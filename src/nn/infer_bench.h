#pragma once
// Server-side inference speed, measured in one run: the engine (src/engine, on
// the exported ONNX file), libtorch (PrepareForInference: the deployed net on
// oneDNN tensors; the services' path before the engine), the same fused net on
// channels-last dense tensors, and onnxruntime (native, through
// onnxruntime-node) on the same exported model.
#include <string>

#include "nn/model.h"

namespace da::nn {

struct InferBenchOptions {
  int threads = 0;         // all runtimes; 0: all cores
  int runs = 300;          // batch-1 timings (median is reported)
  int batch = 64;          // throughput batch size
  double seconds = 2.0;    // time spent measuring throughput, per runtime and round
  int rounds = 3;          // alternating rounds over the runtimes; medians are reported
  std::string ort_script;  // web/tools/ort-bench.mjs
};

struct Timing {
  double latency_ms = 0;  // median, batch 1
  double throughput = 0;  // images/s at the benchmark's batch size
};

struct InferBenchResult {
  int threads = 0;
  Timing engine, torch, channels_last, ort;  // medians over rounds
  // engine / onnxruntime and libtorch / onnxruntime, per-round medians
  double latency_ratio = 0, throughput_ratio = 0, torch_latency_ratio = 0,
         torch_throughput_ratio = 0;
};

// Throws UserError when node or onnxruntime-node cannot run.
InferBenchResult BenchInfer(NetImpl& net, const InferBenchOptions& opts);

}  // namespace da::nn
