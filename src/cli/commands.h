#pragma once
// The `deepadapter` subcommands; each file adds one to the app and only parses
// flags, calls the modules and prints.
#include <CLI/CLI.hpp>

#include "context/latency.h"
#include "prune/search.h"

namespace da::cli {

void AddTrain(CLI::App& app);
void AddEval(CLI::App& app);
void AddExport(CLI::App& app);
void AddBench(CLI::App& app);
void AddProfile(CLI::App& app);
void AddPrune(CLI::App& app);          // prune, predict
void AddPruneBench(CLI::App& bench);   // bench prune
void AddServe(CLI::App& app);          // cloud, edge, serve
void AddEdgeBench(CLI::App& bench);    // bench edge
void AddSystemBench(CLI::App& bench);  // bench system
void AddColdstartBench(CLI::App& bench);  // bench coldstart
void AddClient(CLI::App& app);         // client

// A path inside the source tree (profiles/, web/), for flag defaults.
std::string SourcePath(const std::string& relative);
// What the latency table is measured on: onnxruntime-web, node or Chromium
// (and its throttling), CPU.
std::string RuntimeDescription(const context::WasmTimerOptions& timer);

// --input C,H,W (each in [1, 4096]).
void AddInputOption(CLI::App* cmd, std::vector<int>& input, const std::string& help);
// --min-runs, --min-seconds, --script and --browser of the onnxruntime-web
// timer; the script defaults to web/tools/ort-web-time.mjs.
void AddWasmTimerOptions(CLI::App* cmd, context::WasmTimerOptions& timer);
// After parsing: with --browser, the Chromium script at `throttle`; without,
// UserError unless `throttle` is 1.
void UseBrowser(context::WasmTimerOptions& timer, double throttle);

// The context-aware search's flags (--importance, --step, --short-steps, ...,
// --limit, --threads, --seed); `importance` is parsed by the caller.
void AddSearchOptions(CLI::App* cmd, prune::SearchOptions& search, std::string& importance);

// "1,234,567"
std::string Thousands(long long n);
// One number formatted with a printf format ("%.2f", "%g").
std::string Fmt(const char* format, double v);

}  // namespace da::cli
