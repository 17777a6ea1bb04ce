// deepadapter bench system against running services: the live throughput run
// (emulated phones, issue 11 §3) and the browser check (the demo page in
// Chromium against the simulator, §4).
#include <httplib.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <mutex>
#include <thread>

#include "cli/bench_system.h"
#include "cli/local_services.h"
#include "cloud/cloud.h"
#include "common/error.h"
#include "common/fs.h"
#include "common/process.h"
#include "edge/edge.h"

namespace da::cli {
namespace {
namespace fs = std::filesystem;

using Clock = std::chrono::steady_clock;

// One scheme driven for real against running services: `clients` emulated
// phones, each taking users of the workload in turn and running their sessions
// back to back (no think time: saturation). On-device compute is slept for its
// predicted time (phones are separate machines); matches, model downloads and
// inferences are real HTTP requests to the edge (or the cloud).
struct Live {
  std::string scheme;
  double rps = 0, p50 = 0, p99 = 0, server_rps = 0;
  int64_t failed = 0;
};

Live Drive(const std::string& scheme, int edge_port, int cloud_port, const sim::SystemInput& in,
           const sim::Workload& w, const std::vector<sim::User>& users, const nn::Images& images,
           int clients, double seconds) {
  std::atomic<size_t> next_user{0};
  std::atomic<int64_t> done{0}, server{0}, failed{0};
  std::mutex mu;
  std::vector<double> lat;
  const auto end = Clock::now() + std::chrono::duration_cast<Clock::duration>(
                                      std::chrono::duration<double>(seconds));
  const bool da = scheme.starts_with("deepadapter");
  // Fallbacks as the SDK sends them: a JSON header, then the raw pixels.
  const int64_t n = images.PixelsPerImage();
  const std::string head =
      nlohmann::json{{"inputs",
                      {{{"name", "input"},
                        {"shape", {1, images.channels, images.height, images.width}},
                        {"datatype", "UINT8"},
                        {"parameters", {{"binary_data_size", n}}}}}}}
          .dump();
  const httplib::Headers headers = {
      {"Inference-Header-Content-Length", std::to_string(head.size())}};
  auto infer_body = [&](int img) {
    return head +
           std::string(images.pixels.begin() + img * n, images.pixels.begin() + (img + 1) * n);
  };
  std::vector<std::thread> threads;
  for (int t = 0; t < clients; ++t)
    threads.emplace_back([&] {
      httplib::Client c("127.0.0.1", scheme == "cloud-only" ? cloud_port : edge_port);
      c.set_read_timeout(30);
      std::vector<double> mine;
      auto post = [&](const std::string& path, const std::string& body, bool binary = false) {
        auto res = binary ? c.Post(path, headers, body, "application/octet-stream")
                          : c.Post(path, body, "application/json");
        if (!res || res->status != 200) {
          ++failed;
          return std::string();
        }
        return res->body;
      };
      while (Clock::now() < end) {
        const sim::User& u = users[next_user++ % users.size()];
        const sim::SystemModel* model = nullptr;
        double device_ms = 0, fit_ms = 0, tau = 0;
        auto session_start = Clock::now();
        if (da) {
          const std::string m = post("/v1/match", nlohmann::json{{"device", u.c.device},
                                                                 {"network", u.c.network},
                                                                 {"budget_ms", u.c.budget_ms},
                                                                 {"inferences", u.c.inferences}}
                                                      .dump());
          if (m.empty()) continue;
          const nlohmann::json j = nlohmann::json::parse(m);
          auto res = c.Get(j.at("url").get<std::string>());
          if (!res || res->status != 200) {
            ++failed;
            continue;
          }
          for (const auto& b : in.branches)
            if (b.id == j.at("model")) model = &b;
          if (!model) throw UserError("the edge served an unknown model " + j.dump());
          device_ms = u.c.slowdown * model->reference_ms;
          fit_ms = sim::FallbackMs(u.c, in, w);
          // Ours: the edge's threshold for this context; -fit: the branch's one.
          tau = scheme == "deepadapter" ? j.at("threshold").get<double>() : model->threshold;
        }
        for (size_t k = 0; k < u.t.size() && Clock::now() < end; ++k) {
          const auto start = k == 0 ? session_start : Clock::now();
          const int img = u.image[k];
          bool ask = !da;
          if (da) {
            std::this_thread::sleep_for(std::chrono::duration<double, std::milli>(device_ms));
            ask = model->top[size_t(img)] < tau &&
                  (scheme == "deepadapter" || fit_ms <= u.c.budget_ms);
          }
          if (ask) {
            if (post("/v2/models/base/infer", infer_body(img), true).empty()) continue;
            ++server;
          }
          mine.push_back(std::chrono::duration<double, std::milli>(Clock::now() - start).count());
          ++done;
        }
      }
      std::lock_guard lock(mu);
      lat.insert(lat.end(), mine.begin(), mine.end());
    });
  for (auto& t : threads) t.join();
  std::sort(lat.begin(), lat.end());
  auto pct = [&](double p) {
    return lat.empty() ? NAN : lat[std::min(lat.size() - 1, size_t(p * double(lat.size())))];
  };
  return {scheme, double(done) / seconds, pct(0.5), pct(0.99), double(server) / seconds, failed};
}

// §4: the demo page visited in headless Chromium as phones of a few standard
// contexts (web/tools/visit.mjs), against what the simulator predicts for the
// same context, model and images: the model's download, and the mean latency
// of the page's requests (on the device, plus the edge's answers for unsure
// images). Returns the rows; appends a summary to `report`.
nlohmann::json BrowserCheck(const SystemFlags& f, const sim::SystemInput& in,
                            const sim::Workload& w, const context::Profiles& profiles,
                            const std::string& edge, std::string* report) {
  const auto contexts = context::LoadContexts(SourcePath("profiles/contexts.json"), profiles);
  std::string names;
  for (const auto& n : f.browser_contexts) {
    if (std::none_of(contexts.begin(), contexts.end(), [&](const auto& c) { return c.name == n; }))
      throw UserError("--browser-contexts: no standard context '" + n + "'");
    names += (names.empty() ? "" : ",") + n;
  }
  const std::string dir = (fs::path(f.out) / "browser").string();
  const std::string json_path = (fs::path(dir) / "visits.json").string();
  fs::create_directories(dir);
  std::printf("\nbrowser check: the demo page in headless Chromium as %s\n", names.c_str());
  RunCommand("node " + ShellQuote(SourcePath("web/tools/visit.mjs")) + " " + ShellQuote(edge) +
                 " " + ShellQuote(dir) + " --contexts " + ShellQuote(names) + " --images " +
                 std::to_string(f.browser_images) + " --json " + ShellQuote(json_path),
             [](const std::string& line) { std::printf("  %s\n", line.c_str()); });
  const nlohmann::json visits = nlohmann::json::parse(ReadFile(json_path)).at("visits");
  nlohmann::json rows = nlohmann::json::array();
  std::string table =
      "\nsimulator against the browser (Chromium, DevTools throttling and network emulation; "
      "the page's costs at slowdown 1: " +
      Fmt("%.1f ms per request, ", w.page_request_ms) +
      Fmt("%.1f more per download", w.page_download_ms) + ")\n";
  char line[256];
  std::snprintf(line, sizeof line, "%-16s %-16s %12s %12s %8s %12s %12s %8s\n", "context", "model",
                "dl pred ms", "dl meas ms", "error", "req pred ms", "req meas ms", "error");
  table += line;
  bool all_ok = true;
  for (const auto& v : visits) {
    const std::string name = v.at("name");
    const context::Context& c = *std::find_if(contexts.begin(), contexts.end(),
                                              [&](const auto& x) { return x.name == name; });
    const sim::SystemModel* m = nullptr;
    for (const auto& b : in.branches)
      if (b.id == v.at("model")) m = &b;
    if (!m) throw UserError("the page ran a model the family lacks: " + v.at("model").dump());
    const double dl_pred = c.slowdown * (w.page_request_ms + w.page_download_ms) + c.rtt_ms +
                           double(m->bytes) * 8 / c.downlink_kbps;
    const double dl_meas = v.at("loadMs");
    const double device_ms = c.slowdown * m->reference_ms;
    const double fallback_ms = sim::FallbackMs(c, in, w);
    // The page follows the edge's threshold for its context (edge/cache.h).
    const double tau = edge::PlanModel(c, m->Catalog(), fallback_ms).tau;
    double pred = 0, meas = 0;
    const auto& results = v.at("results");
    for (const auto& r : results) {
      const size_t i = r.at("index");
      if (i >= m->top.size()) throw UserError("the page classified an image past the answers");
      pred += device_ms + (m->top[i] < tau ? fallback_ms : 0);
      meas += r.at("ms").get<double>();
    }
    pred /= double(results.size()), meas /= double(results.size());
    const double dl_err = (dl_pred - dl_meas) / dl_meas, req_err = (pred - meas) / meas;
    all_ok = all_ok && std::abs(dl_err) <= 0.15 && std::abs(req_err) <= 0.15;
    std::snprintf(line, sizeof line, "%-16s %-16s %12.1f %12.1f %+7.1f%% %12.2f %12.2f %+7.1f%%\n",
                  name.c_str(), m->id.c_str(), dl_pred, dl_meas, 100 * dl_err, pred, meas,
                  100 * req_err);
    table += line;
    rows.push_back({{"context", name},
                    {"model", m->id},
                    {"download_predicted_ms", dl_pred},
                    {"download_measured_ms", dl_meas},
                    {"request_predicted_ms", pred},
                    {"request_measured_ms", meas},
                    {"images", results.size()}});
  }
  table += std::string("goal: every row within 15%: ") + (all_ok ? "met" : "NOT met") + "\n";
  std::printf("%s", table.c_str());
  *report += table;
  return rows;
}

}  // namespace

AgainstServices RunServices(const SystemFlags& f, const sim::SystemInput& in,
                            const sim::Workload& w, const context::Profiles& profiles,
                            const std::vector<sim::User>& users, const nn::Images& images,
                            std::string* report) {
  AgainstServices out;
  TempDir tmp("da-bench-system");
  cloud::CloudConfig cc = FamilyCloud(tmp.path().string(), f.family, f.profiles, f.table);
  cc.data_dir = f.data;
  cc.batching.max_batch = f.max_batch;
  cc.server.threads = f.clients + 32;
  LocalCloud cloud(cc);
  edge::EdgeConfig ec;
  ec.cloud_url = cloud.url();
  ec.state_dir = (tmp.path() / "state").string();
  ec.profiles_dir = f.profiles;
  ec.web_dir = SourcePath("web");  // the demo page, for --browser
  // No prune requests: a pruning job in the cloud would compete with the
  // measurement for the cores (it did, in the first full run).
  ec.prune_interval_s = 1e8;
  ec.data_dir = f.data;
  int64_t family_bytes = 0;
  for (const auto& b : in.branches) family_bytes += b.bytes;
  ec.cache_bytes = std::max<int64_t>(1, int64_t(f.cache_fraction * double(family_bytes)));
  ec.batching.max_batch = f.max_batch;
  ec.server.threads = f.clients + 32;
  LocalEdge e(ec);
  if (f.browser) out.browser = BrowserCheck(f, in, w, profiles, e.url(), report);
  if (f.live_seconds > 0) {
    std::printf("\nlive: cloud and edge on loopback, %d emulated phones, %.0f s per scheme\n",
                f.clients, f.live_seconds);
    std::printf("%-16s %14s %10s %10s %16s %8s\n", "scheme", "user req/s", "p50 ms", "p99 ms",
                "server req/s", "failed");
    std::vector<Live> lives;
    for (const char* scheme : {"edge-only", "cloud-only", "deepadapter", "deepadapter-fit"}) {
      Drive(scheme, e.port(), cloud.port(), in, w, users, images, f.clients, 1);  // warm-up
      lives.push_back(
          Drive(scheme, e.port(), cloud.port(), in, w, users, images, f.clients, f.live_seconds));
      const Live& l = lives.back();
      std::printf("%-16s %14.0f %10.2f %10.2f %16.0f %8lld\n", l.scheme.c_str(), l.rps, l.p50,
                  l.p99, l.server_rps, (long long)l.failed);
      out.live.push_back({{"scheme", l.scheme},
                          {"user_rps", l.rps},
                          {"p50_ms", l.p50},
                          {"p99_ms", l.p99},
                          {"server_rps", l.server_rps},
                          {"failed", l.failed}});
    }
    std::string line;
    for (size_t i = 2; i < lives.size(); ++i)  // the DeepAdapter variants against edge-only
      line += lives[i].scheme + " / edge-only: " + Fmt("%.2fx", lives[i].rps / lives[0].rps) +
              (lives[i].rps >= 3 * lives[0].rps ? " (goal >= 3x: met)" : " (goal >= 3x: NOT met)") +
              "\n";
    std::printf("live throughput, %s", line.c_str());
    *report += "\nlive throughput (" + std::to_string(f.clients) + " emulated phones, " +
               Fmt("%.0f", f.live_seconds) + " s per scheme):\n" + line;
  }
  return out;
}

}  // namespace da::cli
