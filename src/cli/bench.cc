// deepadapter bench: benchmarks that print measured figures beside their baseline.
#include "cli/commands.h"
#include "nn/infer_bench.h"
#include "nn/model_dir.h"

#ifndef DA_SOURCE_DIR
#define DA_SOURCE_DIR "."
#endif

namespace da::cli {

void AddBench(CLI::App& app) {
  auto* bench =
      app.add_subcommand("bench", "Benchmarks (each prints its baseline from the same run)");
  bench->require_subcommand(1);
  struct Flags {
    std::string dir;
    nn::InferBenchOptions opts;
  };
  auto f = std::make_shared<Flags>();
  f->opts.ort_script = std::string(DA_SOURCE_DIR) + "/web/tools/ort-bench.mjs";
  auto* infer = bench->add_subcommand(
      "infer", "Server-side inference: our path vs onnxruntime (native) on the same model");
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
    row("ours (libtorch on oneDNN)", r.ours);
    row("  same, channels-last dense", r.channels_last);
    row("onnxruntime native (node)", r.ort);
    std::printf("%-28s %13.2fx %17.2fx\n", "ours / onnxruntime", r.latency_ratio,
                r.throughput_ratio);
    std::printf("(medians of %d alternating rounds; ratios are per-round medians)\n",
                f->opts.rounds);
    std::printf("goal: latency ratio <= 1.20 (%s), throughput ratio >= 1.00 (%s)\n",
                r.latency_ratio <= 1.2 ? "met" : "NOT met",
                r.throughput_ratio >= 1.0 ? "met" : "NOT met");
  });
}

}  // namespace da::cli
