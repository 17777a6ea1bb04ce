#include "nn/infer_bench.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <functional>
#include <nlohmann/json.hpp>
#include <thread>

#include "common/error.h"
#include "common/fs.h"
#include "common/process.h"
#include "engine/engine.h"
#include "nn/onnx_export.h"

namespace da::nn {
namespace {
double Now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

double Median(std::vector<double> v) {
  std::nth_element(v.begin(), v.begin() + v.size() / 2, v.end());
  return v[v.size() / 2];
}

// Median latency of `run(1)` and throughput of `run(opts.batch)` (images/s).
Timing Measure(const std::function<void(int64_t n)>& run, const InferBenchOptions& opts) {
  Timing t;
  for (int i = 0; i < 20; ++i) run(1);
  std::vector<double> times;
  for (int i = 0; i < opts.runs; ++i) {
    double t0 = Now();
    run(1);
    times.push_back(Now() - t0);
  }
  t.latency_ms = 1e3 * Median(times);
  for (int i = 0; i < 3; ++i) run(opts.batch);
  int64_t images = 0;
  double t0 = Now(), t1 = t0;
  while (t1 - t0 < opts.seconds) {
    run(opts.batch);
    images += opts.batch;
    t1 = Now();
  }
  t.throughput = images / (t1 - t0);
  return t;
}

// `model` on inputs in `layout`.
Timing MeasureTorch(Net& model, torch::MemoryFormat layout, const InferBenchOptions& opts) {
  const ModelSpec& s = model->spec();
  c10::InferenceMode guard;
  auto x1 = torch::rand({1, s.channels, s.height, s.width}).contiguous(layout);
  auto xb = torch::rand({opts.batch, s.channels, s.height, s.width}).contiguous(layout);
  return Measure([&](int64_t n) { model->forward(n == 1 ? x1 : xb); }, opts);
}

// The same measurement by the engine.
Timing MeasureEngine(engine::Model& m, const InferBenchOptions& opts) {
  const int64_t pixels = m.channels() * m.height() * m.width();
  auto x1 = torch::rand({1, pixels}), xb = torch::rand({opts.batch, pixels});
  std::vector<float> y(static_cast<size_t>(opts.batch * m.classes()));
  return Measure([&](int64_t n) { m.Run((n == 1 ? x1 : xb).data_ptr<float>(), n, y.data()); },
                 opts);
}

// The same measurement by onnxruntime-node on the exported model at `onnx`.
Timing MeasureOrt(const std::string& onnx, const ModelSpec& s, int threads,
                  const InferBenchOptions& opts) {
  std::string out = RunCommand("node " + ShellQuote(opts.ort_script) + " " + ShellQuote(onnx) +
                               " " + std::to_string(threads) + " " + std::to_string(opts.runs) +
                               " " + std::to_string(opts.batch) + " " +
                               std::to_string(opts.seconds) + " " + std::to_string(s.channels) +
                               " " + std::to_string(s.height) + " " + std::to_string(s.width));
  try {
    auto j = nlohmann::json::parse(out);
    return {j.at("latency_ms").get<double>(), j.at("throughput").get<double>()};
  } catch (const nlohmann::json::exception&) {
    throw UserError("unexpected output from " + opts.ort_script + ": " + out.substr(0, 200));
  }
}

}  // namespace

InferBenchResult BenchInfer(NetImpl& net, const InferBenchOptions& opts) {
  InferBenchResult r;
  r.threads = opts.threads > 0
                  ? opts.threads
                  : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  SetThreads(r.threads);
  Net ours = PrepareForInference(net);
  Net channels_last = Fuse(net);
  channels_last->ToChannelsLast();
  TempDir tmp("deepadapter-bench");
  const std::string onnx = (tmp.path() / "model.onnx").string();
  ExportOnnx(net, onnx);
  engine::Model engine(ReadFile(onnx));

  // The machine's speed drifts by tens of percent within minutes: alternate the
  // runtimes over several rounds and report medians.
  std::vector<Timing> e, o, c, x;
  std::vector<double> lat_ratio, thr_ratio, torch_lat_ratio, torch_thr_ratio;
  for (int round = 0; round < opts.rounds; ++round) {
    e.push_back(MeasureEngine(engine, opts));
    o.push_back(MeasureTorch(ours, torch::MemoryFormat::Contiguous, opts));
    c.push_back(MeasureTorch(channels_last, torch::MemoryFormat::ChannelsLast, opts));
    x.push_back(MeasureOrt(onnx, net.spec(), r.threads, opts));
    lat_ratio.push_back(e.back().latency_ms / x.back().latency_ms);
    thr_ratio.push_back(e.back().throughput / x.back().throughput);
    torch_lat_ratio.push_back(o.back().latency_ms / x.back().latency_ms);
    torch_thr_ratio.push_back(o.back().throughput / x.back().throughput);
  }
  auto median = [](const std::vector<Timing>& v) {
    std::vector<double> lat, thr;
    for (const Timing& t : v) lat.push_back(t.latency_ms), thr.push_back(t.throughput);
    return Timing{Median(lat), Median(thr)};
  };
  r.engine = median(e), r.torch = median(o), r.channels_last = median(c), r.ort = median(x);
  r.latency_ratio = Median(lat_ratio), r.throughput_ratio = Median(thr_ratio);
  r.torch_latency_ratio = Median(torch_lat_ratio);
  r.torch_throughput_ratio = Median(torch_thr_ratio);
  return r;
}

}  // namespace da::nn
