// deepadapter bench: benchmarks that print measured figures beside their baseline.
#include <algorithm>
#include <cmath>
#include <random>

#include "cli/commands.h"
#include "common/progress.h"
#include "context/latency.h"
#include "nn/infer_bench.h"
#include "nn/model_dir.h"
#include "nn/onnx_export.h"

namespace da::cli {
namespace {

// A random width setting of `base`: every width uniform in [max(1, w/5), w].
nn::ModelSpec RandomWidths(const nn::ModelSpec& base, std::mt19937& rng) {
  auto pick = [&](int w) { return std::uniform_int_distribution<int>(std::max(1, w / 5), w)(rng); };
  nn::ModelSpec s = base;
  for (auto& stage : s.stages)
    for (int& w : stage) w = pick(w);
  for (int& w : s.residual) w = pick(w);
  if (s.hidden) s.hidden = pick(s.hidden);
  return s;
}

void AddPredictorBench(CLI::App& bench) {
  struct Flags {
    std::string table = SourcePath("profiles/latency.json");
    int count = 20;
    unsigned seed = 1;
    std::vector<int> input = {1, 28, 28};
    std::vector<double> throttles;
    context::WasmTimerOptions timer;
  };
  auto f = std::make_shared<Flags>();
  f->timer.min_seconds = 0.5;
  auto* cmd = bench.add_subcommand(
      "predictor",
      "Latency predictor: predicted vs measured onnxruntime-web time of random width settings "
      "(in node, or in Chromium at several CPU throttling factors)");
  cmd->add_option("--table", f->table, "Latency table")->capture_default_str();
  cmd->add_option("--count", f->count, "Random width settings per family")
      ->capture_default_str()
      ->check(CLI::Range(1, 10000));
  cmd->add_option("--seed", f->seed, "Random seed")->capture_default_str();
  AddInputOption(cmd, f->input, "Input shape C,H,W");
  AddWasmTimerOptions(cmd, f->timer);
  cmd->add_option("--throttle", f->throttles,
                  "With --browser: DevTools CPU throttling factors (default 1,4,6)")
      ->delimiter(',')
      ->check(CLI::Range(1.0, 100.0));
  cmd->callback([f] {
    context::LatencyTable table = context::LatencyTable::Load(f->table);
    if (f->throttles.empty())
      f->throttles = f->timer.browser ? std::vector<double>{1, 4, 6} : std::vector<double>{1};
    std::mt19937 rng(f->seed);
    std::vector<nn::ModelSpec> specs;
    std::vector<context::WasmModel> models;
    torch::manual_seed(f->seed);
    for (nn::Family fam : {nn::Family::kVgg, nn::Family::kResnet}) {
      nn::ModelSpec base = nn::ModelSpec::Default(fam, f->input[0], f->input[1], f->input[2]);
      for (int i = 0; i < f->count; ++i) specs.push_back(RandomWidths(base, rng));
    }
    for (const nn::ModelSpec& spec : specs) {
      nn::Net net(spec);
      models.push_back({nn::OnnxModelBytes(*net), {{spec.channels, spec.height, spec.width}}});
    }
    // In the browser the prediction is the system's: the table's time x the
    // slowdown measured on a reference model in the same browser, chosen by the
    // edge's rule for /v1/reference (the smallest with a table time >= 1 ms,
    // else the slowest) and left out of the errors. In node, the table's own
    // runtime, the slowdown is 1.
    size_t ref = 0;
    for (size_t i = 0; i < specs.size(); ++i) {
      const double ms = table.ModelMs(specs[i]), best = table.ModelMs(specs[ref]);
      if ((ms >= 1.0 && (best < 1.0 || ms < best)) || (best < 1.0 && ms > best)) ref = i;
    }
    std::printf("table: %s\n  measured on %s\n", f->table.c_str(), table.runtime.c_str());
    std::vector<std::string> summary;
    bool met = true;
    for (double throttle : f->throttles) {
      context::WasmTimerOptions timer = f->timer;
      UseBrowser(timer, throttle);
      Progress progress("timing", static_cast<int64_t>(models.size()));
      size_t done = 0;
      std::vector<double> measured = context::TimeOnWasm(
          models, timer, [&](size_t) { progress.Update(static_cast<int64_t>(++done)); });
      progress.Finish();
      const double slowdown = timer.browser ? measured[ref] / table.ModelMs(specs[ref]) : 1.0;
      std::printf("\n%s\n", RuntimeDescription(timer).c_str());
      if (timer.browser)
        std::printf("slowdown %.3f: reference %s measured %.3f ms, table %.3f ms\n", slowdown,
                    specs[ref].Summary().c_str(), measured[ref], table.ModelMs(specs[ref]));
      std::printf("%-52s %10s %10s %8s\n", "width setting", "predicted", "measured", "error");
      std::vector<double> errors;
      for (size_t i = 0; i < specs.size(); ++i) {
        if (timer.browser && i == ref) continue;
        const double p = slowdown * table.ModelMs(specs[i]);
        errors.push_back(std::abs(p - measured[i]) / measured[i]);
        std::printf("%-52s %7.3f ms %7.3f ms %+7.1f%%\n", specs[i].Summary().c_str(), p,
                    measured[i], 100 * (p - measured[i]) / measured[i]);
      }
      std::sort(errors.begin(), errors.end());
      const double median = errors[errors.size() / 2], worst = errors.back();
      met = met && median <= 0.10 && worst <= 0.25;
      char name[32], line[160];
      std::snprintf(name, sizeof name, timer.browser ? "chromium %gx" : "node", throttle);
      std::snprintf(line, sizeof line, "%-12s %8.3f %13.1f%% %8.1f%%", name, slowdown, 100 * median,
                    100 * worst);
      summary.push_back(line);
    }
    std::printf("\nabsolute error over %zu models (%s)\n%-12s %8s %14s %9s\n",
                specs.size() - (f->timer.browser ? 1 : 0),
                f->timer.browser ? "the reference left out" : "all", "runtime", "slowdown",
                "median error", "worst");
    for (const std::string& l : summary) std::printf("%s\n", l.c_str());
    std::printf("goal: median <= 10%%, worst <= 25%% at every factor: %s\n",
                met ? "met" : "NOT met");
  });
}

}  // namespace

void AddBench(CLI::App& app) {
  auto* bench =
      app.add_subcommand("bench", "Benchmarks (each prints its baseline from the same run)");
  bench->require_subcommand(1);
  struct Flags {
    std::string dir;
    nn::InferBenchOptions opts;
  };
  auto f = std::make_shared<Flags>();
  f->opts.ort_script = SourcePath("web/tools/ort-bench.mjs");
  auto* infer = bench->add_subcommand(
      "infer", "Server-side inference: the engine and libtorch vs onnxruntime (native) on the same model");
  infer->add_option("dir", f->dir, "Model directory")->required();
  infer->add_option("--threads", f->opts.threads, "Threads for both runtimes (0: all cores)")
      ->capture_default_str()
      ->check(CLI::Range(0, 1024));
  infer->add_option("--runs", f->opts.runs, "Batch-1 runs timed")
      ->capture_default_str()
      ->check(CLI::Range(10, 1000000));
  infer->add_option("--batch", f->opts.batch, "Throughput batch size")
      ->capture_default_str()
      ->check(CLI::Range(1, 4096));
  infer->add_option("--seconds", f->opts.seconds, "Seconds of throughput measurement per runtime")
      ->capture_default_str()
      ->check(CLI::Range(0.1, 600.0));
  infer->add_option("--rounds", f->opts.rounds, "Alternating measurement rounds (medians reported)")
      ->capture_default_str()
      ->check(CLI::Range(1, 100));
  infer->add_option("--ort-script", f->opts.ort_script, "The onnxruntime-node timing script")
      ->capture_default_str();
  infer->callback([f] {
    nn::Net net = nn::LoadModelDir(f->dir);
    nn::InferBenchResult r = nn::BenchInfer(*net, f->opts);
    std::printf("model %s (%s), %d threads\n", f->dir.c_str(), net->spec().Summary().c_str(),
                r.threads);
    std::printf("%-28s %14s %18s\n", "", "batch-1 median",
                ("batch-" + std::to_string(f->opts.batch) + " throughput").c_str());
    auto row = [](const char* name, const nn::Timing& t) {
      std::printf("%-28s %11.3f ms %13.0f img/s\n", name, t.latency_ms, t.throughput);
    };
    row("engine (ONNX on oneDNN)", r.engine);
    row("libtorch (the old path)", r.torch);
    row("  same, channels-last dense", r.channels_last);
    row("onnxruntime native (node)", r.ort);
    std::printf("%-28s %13.2fx %17.2fx\n", "engine / onnxruntime", r.latency_ratio,
                r.throughput_ratio);
    std::printf("%-28s %13.2fx %17.2fx\n", "libtorch / onnxruntime", r.torch_latency_ratio,
                r.torch_throughput_ratio);
    std::printf("(medians of %d alternating rounds; ratios are per-round medians)\n",
                f->opts.rounds);
    std::printf("goal: engine latency ratio <= 1.00 (%s), throughput ratio >= 1.00 (%s)\n",
                r.latency_ratio <= 1.0 ? "met" : "NOT met",
                r.throughput_ratio >= 1.0 ? "met" : "NOT met");
  });
  AddPredictorBench(*bench);
  AddPruneBench(*bench);
  AddEdgeBench(*bench);
  AddSystemBench(*bench);
  AddColdstartBench(*bench);
}

}  // namespace da::cli
