#pragma once
// deepadapter bench system, shared by its two files: bench_system.cc (the
// simulation and its report) and bench_system_services.cc (the live run and
// the browser check against services started on loopback).
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "cli/commands.h"
#include "context/context.h"
#include "nn/dataset.h"
#include "sim/system_sim.h"

namespace da::cli {

struct SystemFlags {
  std::string family, out, data = nn::kFashionMnistDir, profiles = SourcePath("profiles"),
                           workload = SourcePath("profiles/workload.json"),
                           table = SourcePath("profiles/latency.json"), static_model;
  int users = 2000;
  int64_t images = 0;
  uint64_t seed = 1;
  double cache_fraction = 0.3;
  int max_batch = 64;
  double live_seconds = 10;  // per scheme against running services (0: skip)
  int clients = 256;
  bool browser = false;  // §4: the simulator against the demo page in Chromium
  std::vector<std::string> browser_contexts = {"high-wifi-3", "mid-slow4g-20", "mid-4g-10",
                                               "low-3g-30"};
  int browser_images = 100;
};

// The live run (§3) and the browser check (§4), against a cloud and an edge
// started here on loopback. Appends their summaries to `report`.
struct AgainstServices {
  nlohmann::json live = nlohmann::json::array(), browser = nlohmann::json::array();
};
AgainstServices RunServices(const SystemFlags& f, const sim::SystemInput& in,
                            const sim::Workload& w, const context::Profiles& profiles,
                            const std::vector<sim::User>& users, const nn::Images& images,
                            std::string* report);

}  // namespace da::cli
