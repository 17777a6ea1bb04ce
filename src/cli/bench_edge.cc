// deepadapter bench edge: the model cache update mechanism against LRU and LFU
// on generated traces, base-model inference throughput with and without
// dynamic batching, and match latency.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <map>
#include <thread>

#include "cli/commands.h"
#include "cli/local_services.h"
#include "cloud/cloud.h"
#include "common/error.h"
#include "common/fs.h"
#include "common/plot.h"
#include "common/process.h"
#include "common/progress.h"
#include "edge/edge.h"
#include "nn/dataset.h"
#include "nn/model_dir.h"
#include "prune/family.h"
#include "sim/cache_sim.h"

namespace da::cli {
namespace {
namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

struct Flags {
  std::string family, out, profiles = SourcePath("profiles"),
                           table = SourcePath("profiles/latency.json");
  sim::TraceOptions trace;
  sim::CacheSimOptions sim;
  std::vector<double> budgets_ms = {3, 200}, budgets_of_base = {0.1, 0.6};
  std::vector<double> capacities = {0.2, 0.3, 0.4, 0.5};
  int clients = 32;
  double seconds = 10;
  double jitter = 1.25;
  bool cache_only = false;
};

// A model's time on the reference runtime (from the table when its metrics
// predate reference_ms).
double ReferenceMs(const nlohmann::json& m, const context::LatencyTable& table) {
  return m.contains("reference_ms") ? m["reference_ms"].get<double>()
                                    : table.ModelMs(nn::ModelSpec::FromJson(m.at("spec")));
}

// What the cache benchmark needs of a family: its branches as the edge sees
// them, the contexts they were made for, and the base model.
struct Family {
  std::vector<edge::CatalogModel> models;
  std::vector<context::Context> made_for;
  sim::BaseModel base;
};

Family LoadFamily(const std::string& dir, const context::LatencyTable& table,
                  const context::Profiles& profiles) {
  nlohmann::json fam = prune::ReadFamily(dir);
  auto metrics = [&](const nlohmann::json& entry) {
    return nn::ReadMetrics((fs::path(dir) / entry.at("dir").get<std::string>()).string());
  };
  Family out;
  for (const auto& b : fam.at("branches")) {
    nlohmann::json m = metrics(b);
    out.made_for.push_back(context::Context::FromJson(m.at("context"), profiles));
    out.models.push_back(
        {b.at("context"), m.at("bytes"), m.at("val_accuracy"), ReferenceMs(m, table)});
  }
  if (out.models.empty()) throw UserError(dir + ": no branch models");
  nlohmann::json m = metrics(fam.at("base"));
  out.base = {ReferenceMs(m, table), m.at("bytes").get<int64_t>()};
  return out;
}

double Percentile(std::vector<double> v, double p) {
  if (v.empty()) return NAN;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(p * static_cast<double>(v.size())))];
}

void CacheBench(const Flags& f, const std::vector<edge::CatalogModel>& models,
                const std::vector<context::Context>& contexts,
                const std::vector<sim::Request>& trace, const std::string& visitors,
                const std::string& plot_name) {
  int64_t total = 0;
  for (const auto& m : models) total += m.bytes;
  // How much of the family the trace ever needs: its ideal models' bytes.
  std::map<std::string, int64_t> needed;
  for (const auto& q : trace) {
    const auto& m = models[size_t(
        edge::MatchContext(contexts[size_t(q.context)], models, [](int) { return false; }).ideal)];
    needed[m.id] = m.bytes;
  }
  int64_t needed_bytes = 0;
  for (const auto& [id, b] : needed) needed_bytes += b;
  std::printf(
      "\ncache, visitors with %s: %zu branch models (%.0f KB in all); the trace's ideal models: "
      "%zu (%.0f%% of the bytes)\n%d contexts, %lld requests (Zipf s=%.2f, "
      "%.0f%% of ranks reshuffled every %lld requests, seed %llu)\n",
      visitors.c_str(), models.size(), double(total) / 1024, needed.size(),
      100.0 * double(needed_bytes) / double(total), f.trace.contexts, (long long)f.trace.requests,
      f.trace.zipf_s, 100 * f.trace.drift_fraction, (long long)f.trace.drift_every,
      (unsigned long long)f.trace.seed);
  std::printf("%-9s %-8s %8s %9s %7s %10s %10s %10s\n", "capacity", "policy", "hit %", "fallback%",
              "cloud%", "served acc", "ideal acc", "fetched MB");
  std::vector<Series> series = {{"utility (ours)", "#d62728", {}, {}, true},
                                {"LRU", "#1f77b4", {}, {}, true},
                                {"LFU", "#2ca02c", {}, {}, true}};
  const sim::CacheSimOptions& so = f.sim;
  for (double frac : f.capacities) {
    const int64_t cap = static_cast<int64_t>(frac * double(total));
    double best_baseline = 0, ours = 0;
    int k = 0;
    for (edge::Policy p : {edge::Policy::kUtility, edge::Policy::kLru, edge::Policy::kLfu}) {
      sim::CacheResult r = sim::SimulateCache(p, cap, models, contexts, trace, so);
      std::printf("%7.0f%%  %-8s %8.2f %9.2f %7.2f %10.2f %10.2f %10.1f\n", 100 * frac,
                  r.policy.c_str(), 100 * r.hit_rate, 100 * r.fallback_rate, 100 * r.cloud_rate,
                  100 * r.served_accuracy, 100 * r.ideal_accuracy, double(r.bytes_fetched) / 1e6);
      (p == edge::Policy::kUtility ? ours : best_baseline) =
          p == edge::Policy::kUtility ? r.hit_rate : std::max(best_baseline, r.hit_rate);
      series[size_t(k)].x.push_back(100 * frac);
      series[size_t(k++)].y.push_back(100 * r.hit_rate);
    }
    std::printf(
        "%7.0f%%  utility - best of LRU/LFU: %+.2f points hit rate (no policy could gain more "
        "than %.2f)\n",
        100 * frac, 100 * (ours - best_baseline), 100 * (1 - best_baseline));
  }
  const std::string plot = (fs::path(f.out) / plot_name).string();
  WriteFileAtomic(plot, SvgPlot("Edge model cache: hit rate, visitors with " + visitors,
                                "capacity (% of the family's bytes)", "hit rate (%)", series));
  std::printf("plot: %s\n", plot.c_str());
}

// 32 clients sending one-image requests for `seconds`; returns requests/s and latencies.
std::pair<double, std::vector<double>> Load(int port, int clients, double seconds) {
  nlohmann::json body = {{"inputs",
                          {{{"name", "input"},
                            {"shape", {1, 1, 28, 28}},
                            {"datatype", "UINT8"},
                            {"data", std::vector<int>(784, 100)}}}}};
  const std::string text = body.dump();
  std::atomic<int64_t> done{0}, failed{0};
  std::mutex mu;
  std::vector<double> lat;
  const auto end = Clock::now() + std::chrono::duration_cast<Clock::duration>(
                                      std::chrono::duration<double>(seconds));
  std::vector<std::thread> threads;
  for (int t = 0; t < clients; ++t)
    threads.emplace_back([&] {
      httplib::Client c("127.0.0.1", port);
      c.set_read_timeout(30);
      std::vector<double> mine;
      while (Clock::now() < end) {
        const auto s = Clock::now();
        auto res = c.Post("/v2/models/base/infer", text, "application/json");
        if (!res || res->status != 200) {
          ++failed;
          continue;
        }
        mine.push_back(std::chrono::duration<double, std::milli>(Clock::now() - s).count());
        ++done;
      }
      std::lock_guard lock(mu);
      lat.insert(lat.end(), mine.begin(), mine.end());
    });
  for (auto& t : threads) t.join();
  if (failed)
    throw std::runtime_error(std::to_string(failed.load()) + " inference requests failed");
  return {double(done) / seconds, lat};
}

void ServiceBench(const Flags& f) {
  TempDir tmp("da-bench-edge");
  cloud::CloudConfig cc = FamilyCloud(tmp.path().string(), f.family, f.profiles, f.table);
  cc.data_dir = nn::kFashionMnistDir;
  LocalCloud cloud(cc);
  struct Run {
    const char* name;
    bool batching;
    double rps = 0, p50 = 0, p99 = 0;
  };
  std::vector<Run> runs = {{"dynamic batching", true}, {"one request at a time", false}};
  std::vector<double> match_ms;
  for (Run& run : runs) {
    edge::EdgeConfig ec;
    ec.cloud_url = cloud.url();
    ec.state_dir = (tmp.path() / (std::string("state-") + (run.batching ? "b" : "n"))).string();
    ec.profiles_dir = f.profiles;
    ec.batching.enabled = run.batching;
    LocalEdge e(ec);
    httplib::Client c("127.0.0.1", e.port());
    Load(e.port(), f.clients, 1);  // warm-up
    auto [rps, lat] = Load(e.port(), f.clients, f.seconds);
    run.rps = rps, run.p50 = Percentile(lat, 0.5), run.p99 = Percentile(lat, 0.99);
    if (run.batching) {
      const std::string ctx =
          R"({"device": "mid", "network": "4g", "budget_ms": 12, "inferences": 100})";
      for (int i = 0; i < 2000; ++i) {
        const auto s = Clock::now();
        auto res = c.Post("/v1/match", ctx, "application/json");
        if (!res || res->status != 200) throw std::runtime_error("match failed");
        match_ms.push_back(std::chrono::duration<double, std::milli>(Clock::now() - s).count());
      }
    }
  }
  std::printf("\ninference: %d concurrent clients, one image per request, %.0f s each\n", f.clients,
              f.seconds);
  for (const Run& r : runs)
    std::printf("  %-22s %8.1f requests/s   latency p50 %.2f ms, p99 %.2f ms\n", r.name, r.rps,
                r.p50, r.p99);
  std::printf("  throughput ratio (batching / none): %.2fx\n", runs[0].rps / runs[1].rps);
  std::printf("match over HTTP (one client, 2000 requests): p50 %.3f ms, p99 %.3f ms\n",
              Percentile(match_ms, 0.5), Percentile(match_ms, 0.99));
}

void MatchCompute(const std::vector<edge::CatalogModel>& models,
                  const std::vector<context::Context>& contexts) {
  std::vector<double> us;
  int sink = 0;
  for (int rep = 0; rep < 20; ++rep)
    for (const auto& c : contexts) {
      const auto s = Clock::now();
      sink += edge::MatchContext(c, models, [](int i) { return i % 2 == 0; }).served;
      us.push_back(std::chrono::duration<double, std::micro>(Clock::now() - s).count());
    }
  std::printf("match computation (%zu models): p50 %.2f us, p99 %.2f us%s\n", models.size(),
              Percentile(us, 0.5), Percentile(us, 0.99), sink < 0 ? " " : "");
}

}  // namespace

void AddEdgeBench(CLI::App& bench) {
  auto f = std::make_shared<Flags>();
  auto* cmd = bench.add_subcommand(
      "edge", "Edge: cache update mechanism vs LRU/LFU, inference batching, match latency");
  cmd->add_option("--family", f->family, "A branch-model family (prune's output)")->required();
  cmd->add_option("--out", f->out, "Output directory (plot)")->required();
  cmd->add_option("--profiles", f->profiles, "Device and network profiles")->capture_default_str();
  cmd->add_option("--table", f->table, "Latency table")->capture_default_str();
  cmd->add_option("--contexts", f->trace.contexts, "Distinct visitor contexts")
      ->capture_default_str();
  cmd->add_option("--requests", f->trace.requests, "Requests in the trace")->capture_default_str();
  cmd->add_option("--zipf", f->trace.zipf_s, "Zipf exponent of context popularity")
      ->capture_default_str();
  cmd->add_option("--drift-every", f->trace.drift_every, "Requests between popularity drifts")
      ->capture_default_str();
  cmd->add_option("--drift", f->trace.drift_fraction, "Share of ranks reshuffled per drift")
      ->capture_default_str();
  cmd->add_option("--seed", f->trace.seed, "Trace seed")->capture_default_str();
  cmd->add_option("--half-life", f->sim.half_life_s, "Utility: demand half-life, s of trace time")
      ->capture_default_str();
  cmd->add_option("--refresh", f->sim.refresh_s, "Utility: refresh period, s of trace time")
      ->capture_default_str();
  cmd->add_option("--capacities", f->capacities, "Cache capacities (fractions of the family)")
      ->capture_default_str();
  cmd->add_option("--clients", f->clients, "Concurrent inference clients")->capture_default_str();
  cmd->add_option("--seconds", f->seconds, "Seconds per inference run")->capture_default_str();
  cmd->add_option("--budgets-ms", f->budgets_ms, "Visitors' budgets, ms (low high)")
      ->expected(2)
      ->capture_default_str();
  cmd->add_option("--budgets-of-base", f->budgets_of_base,
                  "Second trace: budgets as fractions of the base's predicted latency (low high)")
      ->expected(2)
      ->capture_default_str();
  cmd->add_option("--jitter", f->jitter,
                  "Third trace: visitors' figures within this factor of the branches' contexts")
      ->capture_default_str();
  cmd->add_flag("--cache-only", f->cache_only, "Only the cache simulation and match computation");
  cmd->callback([f] {
    for (double c : f->capacities)
      if (!(c > 0 && c <= 1)) throw UserError("capacities must be fractions in (0, 1]");
    for (const auto* b : {&f->budgets_ms, &f->budgets_of_base})
      if (!((*b)[0] > 0 && (*b)[0] <= (*b)[1] && std::isfinite((*b)[1])))
        throw UserError("budget ranges must satisfy 0 < low <= high");
    if (!(f->jitter >= 1 && f->jitter <= 100)) throw UserError("jitter must be in [1, 100]");
    if (!(f->sim.half_life_s > 0) || !(f->sim.refresh_s > 0) || !std::isfinite(f->sim.refresh_s))
      throw UserError("half-life and refresh period must be positive");
    if (f->clients < 1 || f->clients > 1024) throw UserError("clients must be in 1..1024");
    if (!(f->seconds > 0 && f->seconds <= 3600)) throw UserError("seconds must be in (0, 3600]");
    const auto profiles = context::Profiles::Load(f->profiles);
    const auto table = context::LatencyTable::Load(f->table);
    const Family fam = LoadFamily(f->family, table, profiles);
    fs::create_directories(f->out);
    const auto trace = sim::ZipfTrace(f->trace);
    auto contexts = sim::RandomContexts(f->trace, profiles, f->budgets_ms[0], f->budgets_ms[1]);
    char label[96];
    std::snprintf(label, sizeof label, "budgets %g-%g ms", f->budgets_ms[0], f->budgets_ms[1]);
    CacheBench(*f, fam.models, contexts, trace, label, "cache-hit-rate.svg");
    MatchCompute(fam.models, contexts);
    contexts = sim::RandomContexts(f->trace, profiles, f->budgets_of_base[0], f->budgets_of_base[1],
                                   &fam.base);
    std::snprintf(label, sizeof label, "budgets %g-%g of the base model's latency",
                  f->budgets_of_base[0], f->budgets_of_base[1]);
    CacheBench(*f, fam.models, contexts, trace, label, "cache-hit-rate-relative.svg");
    contexts = sim::ContextsNear(f->trace, profiles, fam.made_for, f->jitter);
    std::snprintf(label, sizeof label, "contexts within x%g of the branches' own", f->jitter);
    CacheBench(*f, fam.models, contexts, trace, label, "cache-hit-rate-near.svg");
    if (!f->cache_only) ServiceBench(*f);
  });
}

}  // namespace da::cli
