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
  r.threads = opts.threads > 0 ? opts.threads : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  SetThreads(r.threads);
  const ModelSpec& s = net.spec();
  Net model = PrepareForInference(net);
  {
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
    r.ours_latency_ms = 1e3 * t[t.size() / 2];
    auto xb = torch::rand({opts.batch, s.channels, s.height, s.width});
    for (int i = 0; i < 3; ++i) model->forward(xb);
    int64_t images = 0;
    double t0 = Now(), t1 = t0;
    while (t1 - t0 < opts.seconds) {
      model->forward(xb);
      images += opts.batch;
      t1 = Now();
    }
    r.ours_throughput = images / (t1 - t0);
  }
  auto path = std::filesystem::temp_directory_path() / ("deepadapter-bench-" + std::to_string(::getpid()) + ".onnx");
  ExportOnnx(net, path.string());
  std::string out;
  try {
    out = RunCommand("node '" + opts.ort_script + "' '" + path.string() + "' " + std::to_string(r.threads) + " " +
                     std::to_string(opts.runs) + " " + std::to_string(opts.batch) + " " +
                     std::to_string(opts.seconds) + " " + std::to_string(s.channels) + " " +
                     std::to_string(s.height) + " " + std::to_string(s.width));
  } catch (...) {
    std::filesystem::remove(path);
    throw;
  }
  std::filesystem::remove(path);
  try {
    auto j = nlohmann::json::parse(out);
    r.ort_latency_ms = j.at("latency_ms").get<double>();
    r.ort_throughput = j.at("throughput").get<double>();
  } catch (const nlohmann::json::exception& e) {
    throw UserError("unexpected output from " + opts.ort_script + ": " + out.substr(0, 200));
  }
  return r;
}

}  // namespace da::nn
