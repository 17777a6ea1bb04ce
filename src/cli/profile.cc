// deepadapter profile: measure the latency predictor's per-layer table on the
// mobile-web runtime (onnxruntime-web, WASM, one thread, in node or, with
// --browser, in headless Chromium).
#include <cctype>
#include <fstream>

#include "cli/commands.h"
#include "common/error.h"
#include "common/fs.h"
#include "common/process.h"
#include "context/latency.h"
#include "nn/model_dir.h"

namespace da::cli {

std::string RuntimeDescription(const context::WasmTimerOptions& timer) {
  std::string ort = "?";
  try {
    ort =
        nlohmann::json::parse(ReadFile(SourcePath("web/node_modules/onnxruntime-web/package.json")))
            .value("version", "?");
  } catch (const std::exception&) {
  }
  auto trimmed = [](std::string v) {
    while (!v.empty() && std::isspace(static_cast<unsigned char>(v.back()))) v.pop_back();
    return v;
  };
  std::string where = "node " + trimmed(RunCommand("node --version"));
  if (timer.browser) {
    std::string v = trimmed(RunCommand("/usr/bin/chromium --version 2>/dev/null"));
    where = "headless " + v.substr(0, v.find(" built on"));
    if (timer.throttle != 1) where += " at CPU throttling " + Fmt("%g", timer.throttle) + "x";
  }
  std::string cpu = "unknown CPU";
  std::ifstream info("/proc/cpuinfo");
  for (std::string line; std::getline(info, line);) {
    if (line.rfind("model name", 0) == 0 && line.find(':') != std::string::npos) {
      cpu = line.substr(line.find(':') + 2);
      break;
    }
  }
  return "onnxruntime-web " + ort + " (WASM, 1 thread) in " + where + " on " + cpu;
}

void AddInputOption(CLI::App* cmd, std::vector<int>& input, const std::string& help) {
  cmd->add_option("--input", input, help)
      ->delimiter(',')
      ->expected(3)
      ->capture_default_str()
      ->check(CLI::Range(1, 4096));
}

void AddWasmTimerOptions(CLI::App* cmd, context::WasmTimerOptions& timer) {
  if (timer.script.empty()) timer.script = SourcePath("web/tools/ort-web-time.mjs");
  cmd->add_option("--min-runs", timer.min_runs, "Timed runs per model (median kept)")
      ->capture_default_str()
      ->check(CLI::Range(1, 100000));
  cmd->add_option("--min-seconds", timer.min_seconds, "Least time spent timing each model")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 60.0));
  cmd->add_option("--script", timer.script, "The onnxruntime-web timing script")
      ->capture_default_str();
  cmd->add_flag("--browser", timer.browser,
                "Time in headless Chromium (web/tools/browser-time.mjs), the SDK's own runtime, "
                "instead of node");
}

void UseBrowser(context::WasmTimerOptions& timer, double throttle) {
  if (!timer.browser) {
    if (throttle != 1) throw UserError("--throttle needs --browser (node cannot be throttled)");
    return;
  }
  if (timer.script == SourcePath("web/tools/ort-web-time.mjs"))
    timer.script = SourcePath("web/tools/browser-time.mjs");
  timer.throttle = throttle;
  timer.args = {"--throttle", Fmt("%g", throttle)};
}

void AddProfile(CLI::App& app) {
  struct Flags {
    std::vector<std::string> families = {"vgg", "resnet"};
    std::vector<std::string> bases;
    std::vector<int> input = {1, 28, 28};
    int classes = 10;
    std::string out = SourcePath("profiles/latency.json");
    context::WasmTimerOptions timer;
    double throttle = 1;
  };
  auto f = std::make_shared<Flags>();
  auto* cmd = app.add_subcommand(
      "profile",
      "Measure the latency table: every layer shape of the models, alone, on onnxruntime-web "
      "(WASM, 1 thread) over a grid of widths up to the models' widths");
  cmd->add_option("--families", f->families, "Profile the default model of these families")
      ->delimiter(',')
      ->capture_default_str();
  cmd->add_option("--base", f->bases, "Profile these model directories' specs instead");
  AddInputOption(cmd, f->input, "Input shape C,H,W of the default models");
  cmd->add_option("--classes", f->classes, "Classes of the default models")
      ->capture_default_str()
      ->check(CLI::Range(1, 100000));
  cmd->add_option("--out", f->out, "Table to write")->capture_default_str();
  AddWasmTimerOptions(cmd, f->timer);
  cmd->add_option("--throttle", f->throttle,
                  "With --browser: DevTools CPU throttling factor while measuring")
      ->capture_default_str()
      ->check(CLI::Range(1.0, 100.0));
  cmd->callback([f] {
    UseBrowser(f->timer, f->throttle);
    std::vector<nn::ModelSpec> specs;
    for (const std::string& dir : f->bases) specs.push_back(nn::LoadModelDir(dir)->spec());
    if (f->bases.empty()) {
      for (const std::string& fam : f->families)
        specs.push_back(nn::ModelSpec::Default(nn::ParseFamily(fam), f->input[0], f->input[1],
                                               f->input[2], f->classes));
    }
    for (const auto& s : specs) std::printf("profiling layers of %s\n", s.Summary().c_str());
    context::LatencyTable t =
        context::ProfileLatency(specs, f->timer, RuntimeDescription(f->timer));
    t.Save(f->out);
    size_t cells = 0;
    for (const auto& [key, e] : t.entries) cells += e.ms.size();
    std::printf(
        "%s: %zu layer shapes, %zu grid points, overhead %.4f ms; whole models: scale %.3f, "
        "%.4f ms per layer\n  (%s)\n",
        f->out.c_str(), t.entries.size(), cells, t.overhead_ms, t.scale, t.per_layer_ms,
        t.runtime.c_str());
    for (const auto& s : specs)
      std::printf("  %-50s predicted %.3f ms\n", s.Summary().c_str(), t.ModelMs(s));
  });
}

}  // namespace da::cli
