#pragma once
// Server-side inference speed: our path (PrepareForInference: the deployed net the
// edge runs, on oneDNN tensors), the same fused net on channels-last dense tensors,
// and onnxruntime (native, through onnxruntime-node) on the same exported model,
// measured in one run.
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
  Timing ours, channels_last, ort;                 // medians over rounds
  double latency_ratio = 0, throughput_ratio = 0;  // ours / onnxruntime, per-round median
};

// Throws UserError when node or onnxruntime-node cannot run.
InferBenchResult BenchInfer(NetImpl& net, const InferBenchOptions& opts);

}  // namespace da::nn
