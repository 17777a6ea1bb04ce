#include "nn/infer_bench.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <thread>

#include "common/error.h"
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

std::string RunCommand(const std::string& cmd) {
  FILE* p = ::popen(cmd.c_str(), "r");
  if (!p) throw UserError("cannot run: " + cmd);
  std::string out;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  int rc = ::pclose(p);
  if (rc != 0) throw UserError("'" + cmd + "' failed (exit status " + std::to_string(rc) + ")");
  return out;
}
}  // namespace

InferBenchResult BenchInfer(NetImpl& net, const InferBenchOptions& opts) {
  InferBenchResult r;
  r.threads = opts.threads > 0
                  ? opts.threads
                  : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  SetThreads(r.threads);
  const ModelSpec& s = net.spec();
  Net model = PrepareForInference(net);
  auto measure_ours = [&](double& latency_ms, double& throughput) {
    c10::InferenceMode guard;
    auto x1 = torch::rand({1, s.channels, s.height, s.width});
    for (int i = 0; i < 20; ++i) model->forward(x1);
    std::vector<double> t;
    for (int i = 0; i < opts.runs; ++i) {
      double t0 = Now();
      model->forward(x1);
      t.push_back(Now() - t0);
    }
    std::nth_element(t.begin(), t.begin() + t.size() / 2, t.end());
    latency_ms = 1e3 * t[t.size() / 2];
    auto xb = torch::rand({opts.batch, s.channels, s.height, s.width});
    for (int i = 0; i < 3; ++i) model->forward(xb);
    int64_t images = 0;
    double t0 = Now(), t1 = t0;
    while (t1 - t0 < opts.seconds) {
      model->forward(xb);
      images += opts.batch;
      t1 = Now();
    }
    throughput = images / (t1 - t0);
  };
  auto path = std::filesystem::temp_directory_path() /
              ("deepadapter-bench-" + std::to_string(::getpid()) + ".onnx");
  ExportOnnx(net, path.string());
  auto measure_ort = [&](double& latency_ms, double& throughput) {
    std::string out;
    try {
      out = RunCommand("node '" + opts.ort_script + "' '" + path.string() + "' " +
                       std::to_string(r.threads) + " " + std::to_string(opts.runs) + " " +
                       std::to_string(opts.batch) + " " + std::to_string(opts.seconds) + " " +
                       std::to_string(s.channels) + " " + std::to_string(s.height) + " " +
                       std::to_string(s.width));
    } catch (...) {
      std::filesystem::remove(path);
      throw;
    }
    try {
      auto j = nlohmann::json::parse(out);
      latency_ms = j.at("latency_ms").get<double>();
      throughput = j.at("throughput").get<double>();
    } catch (const nlohmann::json::exception& e) {
      std::filesystem::remove(path);
      throw UserError("unexpected output from " + opts.ort_script + ": " + out.substr(0, 200));
    }
  };
  // The machine's speed drifts by tens of percent within minutes: alternate the
  // two runtimes over several rounds and report medians.
  std::vector<double> ol, ot, rl, rt, lat_ratio, thr_ratio;
  for (int round = 0; round < opts.rounds; ++round) {
    double a, b, c, d;
    measure_ours(a, b);
    measure_ort(c, d);
    ol.push_back(a), ot.push_back(b), rl.push_back(c), rt.push_back(d);
    lat_ratio.push_back(a / c), thr_ratio.push_back(b / d);
  }
  std::filesystem::remove(path);
  r.ours_latency_ms = Median(ol), r.ours_throughput = Median(ot);
  r.ort_latency_ms = Median(rl), r.ort_throughput = Median(rt);
  r.latency_ratio = Median(lat_ratio), r.throughput_ratio = Median(thr_ratio);
  return r;
}

}  // namespace da::nn
