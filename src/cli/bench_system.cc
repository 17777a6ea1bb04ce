// deepadapter bench system: the paper's headline comparison on our models
// (sim/system_sim.h): six schemes on one workload of users, with every answer
// from the real models on real test images.
#include <httplib.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <thread>

#include "cli/commands.h"
#include "cloud/cloud.h"
#include "common/error.h"
#include "common/fs.h"
#include "common/plot.h"
#include "common/process.h"
#include "common/progress.h"
#include "common/sha256.h"
#include "context/latency.h"
#include "edge/edge.h"
#include "infer/batcher.h"
#include "nn/dataset.h"
#include "nn/model_dir.h"
#include "nn/train.h"
#include "prune/family.h"
#include "sim/system_sim.h"

namespace da::cli {
namespace {
namespace fs = std::filesystem;

struct Flags {
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

// A model's answers on the images, cached in OUT/answers by the hash of its
// weights and the image count.
sim::SystemModel Answers(const std::string& dir, const std::string& id, const nn::Images& images,
                         int classes, const std::string& cache_dir) {
  const nlohmann::json m = nn::ReadMetrics(dir);
  sim::SystemModel s;
  s.id = id;
  s.bytes = m.at("bytes");
  s.reference_ms = m.at("reference_ms");
  s.val_accuracy = m.at("val_accuracy");
  s.threshold = m.contains("threshold") ? m["threshold"].value("tau", 0.0) : 0.0;
  const std::string key =
      Sha256Hex(ReadFile((fs::path(dir) / "weights.pt").string())).substr(0, 16) + "-" +
      std::to_string(images.count);
  const std::string path = (fs::path(cache_dir) / (id + "-" + key + ".json")).string();
  if (fs::exists(path)) {
    const nlohmann::json j = nlohmann::json::parse(ReadFile(path));
    s.predicted = j.at("predicted").get<std::vector<int64_t>>();
    s.top = j.at("top").get<std::vector<float>>();
    return s;
  }
  nn::Net net = nn::LoadModelDir(dir);
  nn::EvalResult r = nn::Evaluate(net, images, classes);
  s.predicted = r.predicted, s.top = r.top;
  WriteFileAtomic(path, nlohmann::json{{"predicted", s.predicted}, {"top", s.top}}.dump());
  return s;
}

// The places the base can be cut: after each layer whose output is the only
// tensor still needed, plus "nothing on the phone".
std::vector<sim::Split> Splits(const nn::ModelSpec& spec, const context::LatencyTable& table) {
  const std::vector<context::KeyedLayer> layers = context::KeyedLayers(spec);
  std::vector<double> ms;
  std::vector<int64_t> params;
  double total_ms = 0;
  int64_t total_params = 0;
  for (const auto& k : layers) {
    const nn::Layer& l = k.layer;
    int64_t p = 0;
    if (l.kind == nn::Layer::Kind::kConv)
      p = int64_t{l.in_ch} * l.out_ch * l.kernel * l.kernel + l.out_ch;
    if (l.kind == nn::Layer::Kind::kLinear) p = int64_t{l.in_ch} * l.out_ch + l.out_ch;
    ms.push_back(table.LayerMs(k)), params.push_back(p);
    total_ms += ms.back(), total_params += p;
  }
  std::vector<sim::Split> out = {{0, 0, int64_t{spec.channels} * spec.height * spec.width}};
  double head_ms = 0;
  int64_t head_params = 0;
  for (size_t i = 0; i < layers.size(); ++i) {
    head_ms += ms[i], head_params += params[i];
    // Values are numbered: 0 the input, i + 1 layer i's output.
    bool alone = true;
    for (size_t j = i + 1; j < layers.size(); ++j) {
      const nn::Layer& l = layers[j].layer;
      for (int v : {l.input, l.input2})
        if (v >= 0 && v <= static_cast<int>(i)) alone = false;  // an older value still needed
    }
    if (!alone) continue;
    const nn::Layer& l = layers[i].layer;
    const bool last = i + 1 == layers.size();
    out.push_back({last ? 1.0 : head_ms / total_ms,
                   last ? 1.0 : double(head_params) / double(std::max<int64_t>(1, total_params)),
                   last ? 0 : 4 * int64_t{l.out_ch} * l.out_h * l.out_w});
  }
  return out;
}

// The base model's batch service times on the servers' inference path.
sim::ServiceCurve MeasureService(const std::string& base_dir, int max_batch) {
  const nlohmann::json spec =
      nlohmann::json::parse(ReadFile((fs::path(base_dir) / "spec.json").string()));
  infer::BatchOptions o;
  o.enabled = false;  // each Submit is one forward pass of its images
  o.max_batch = max_batch;
  infer::Batcher b(spec, (fs::path(base_dir) / "weights.pt").string(), o);
  const int64_t pixels = int64_t{b.shape().channels} * b.shape().height * b.shape().width;
  sim::ServiceCurve curve;
  for (int n : {1, 8, 32, 64}) {
    if (n > max_batch) break;
    std::vector<double> ms;
    for (int i = 0; i < 25; ++i) {
      auto t0 = std::chrono::steady_clock::now();
      b.Submit(std::vector<float>(static_cast<size_t>(pixels * n), 0.5f), n).get();
      ms.push_back(
          std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
    }
    std::sort(ms.begin(), ms.end());
    curve.batch.push_back(n);
    curve.ms.push_back(ms[ms.size() / 2]);
  }
  return curve;
}

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
        double device_ms = 0, fit_ms = 0;
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
        }
        for (size_t k = 0; k < u.t.size() && Clock::now() < end; ++k) {
          const auto start = k == 0 ? session_start : Clock::now();
          const int img = u.image[k];
          bool ask = !da;
          if (da) {
            std::this_thread::sleep_for(std::chrono::duration<double, std::milli>(device_ms));
            ask = model->top[size_t(img)] < model->threshold &&
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
nlohmann::json BrowserCheck(const Flags& f, const sim::SystemInput& in, const sim::Workload& w,
                            const context::Profiles& profiles, const std::string& edge,
                            std::string* report) {
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
      "\nsimulator against the browser (Chromium, DevTools throttling and network emulation)\n";
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
    const double dl_pred = c.rtt_ms + double(m->bytes) * 8 / c.downlink_kbps;
    const double dl_meas = v.at("loadMs");
    const double device_ms = c.slowdown * m->reference_ms;
    const double fallback_ms = sim::FallbackMs(c, in, w);
    double pred = 0, meas = 0;
    const auto& results = v.at("results");
    for (const auto& r : results) {
      const size_t i = r.at("index");
      if (i >= m->top.size()) throw UserError("the page classified an image past the answers");
      pred += device_ms + (m->top[i] < m->threshold ? fallback_ms : 0);
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

// The live run (§3) and the browser check (§4), against a cloud and an edge
// started here on loopback. Appends their summaries to `report`.
struct AgainstServices {
  nlohmann::json live = nlohmann::json::array(), browser = nlohmann::json::array();
};
AgainstServices RunServices(const Flags& f, const sim::SystemInput& in, const sim::Workload& w,
                            const context::Profiles& profiles, const std::vector<sim::User>& users,
                            const nn::Images& images, std::string* report) {
  AgainstServices out;
  TempDir tmp("da-bench-system");
  cloud::CloudConfig cc;
  cc.repo_dir = (tmp.path() / "repo").string();
  cc.family_dir = f.family;
  cc.profiles_dir = f.profiles;
  cc.table_path = f.table;
  cc.standard_path = SourcePath("profiles/contexts.json");
  cc.data_dir = f.data;
  cc.batching.max_batch = f.max_batch;
  cc.server.threads = f.clients + 32;
  cloud::Cloud cloud(cc);
  std::thread cloud_thread([&] { cloud.Run(); });
  edge::EdgeConfig ec;
  ec.cloud_url = "http://127.0.0.1:" + std::to_string(cloud.port());
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
  edge::Edge e(ec);
  std::thread edge_thread([&] { e.Run(); });
  httplib::Client hc("127.0.0.1", e.port());
  for (int i = 0; i < 600; ++i) {
    auto res = hc.Get("/healthz");
    if (res && res->status == 200) {
      const auto h = nlohmann::json::parse(res->body);
      if (h.value("base_ready", false) && h.value("catalog_models", 0) > 0) break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  if (f.browser)
    out.browser =
        BrowserCheck(f, in, w, profiles, "http://127.0.0.1:" + std::to_string(e.port()), report);
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
  e.Stop();
  edge_thread.join();
  cloud.Stop();
  cloud_thread.join();
  return out;
}

}  // namespace

void AddSystemBench(CLI::App& bench) {
  auto f = std::make_shared<Flags>();
  auto* cmd = bench.add_subcommand(
      "system",
      "The system evaluation: mobile-only, edge-only, cloud-only, static, Neurosurgeon-style "
      "split and DeepAdapter on one workload of users (latency, mobile energy, throughput, "
      "accuracy, offload share, cache hit rate)");
  cmd->add_option("--family", f->family, "Family made by prune")->required();
  cmd->add_option("--out", f->out, "Results folder (JSON, Markdown, SVG; answers cached)")
      ->required();
  cmd->add_option("--users", f->users, "Users")
      ->capture_default_str()
      ->check(CLI::Range(1, 1000000));
  cmd->add_option("--images", f->images, "Test images used (0: all)")
      ->capture_default_str()
      ->check(CLI::Range(int64_t{0}, int64_t{1} << 30));
  cmd->add_option("--seed", f->seed, "Random seed")->capture_default_str();
  cmd->add_option("--workload", f->workload, "Workload file")->capture_default_str();
  cmd->add_option("--profiles", f->profiles, "Profiles folder")->capture_default_str();
  cmd->add_option("--table", f->table, "Latency table (for split points)")->capture_default_str();
  cmd->add_option("--data", f->data, "Dataset folder")->capture_default_str();
  cmd->add_option("--cache-fraction", f->cache_fraction,
                  "DeepAdapter's edge cache, a fraction of the branches' bytes")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 1.0));
  cmd->add_option("--max-batch", f->max_batch, "Servers' largest batch")
      ->capture_default_str()
      ->check(CLI::Range(1, 4096));
  cmd->add_option("--live-seconds", f->live_seconds,
                  "Seconds per scheme driving running services (cloud and edge on loopback) "
                  "with emulated phones; 0 skips it")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 600.0));
  cmd->add_option("--clients", f->clients, "Emulated phones in the live run")
      ->capture_default_str()
      ->check(CLI::Range(1, 2000));
  cmd->add_flag("--browser", f->browser,
                "Also check the simulator against the demo page in headless Chromium (CPU "
                "throttling and network emulation per context): predicted against measured "
                "download and per-request latency");
  cmd->add_option("--browser-contexts", f->browser_contexts,
                  "Standard contexts visited (profiles/contexts.json)")
      ->delimiter(',')
      ->capture_default_str();
  cmd->add_option("--browser-images", f->browser_images, "Test images classified per visit")
      ->capture_default_str()
      ->check(CLI::Range(4, 1000));
  cmd->add_option("--static-model", f->static_model,
                  "The static scheme's branch (default: the branch of median size)");
  cmd->callback([f] {
    const context::Profiles profiles = context::Profiles::Load(f->profiles);
    const sim::Workload workload = sim::Workload::Load(f->workload, profiles);
    const context::LatencyTable table = context::LatencyTable::Load(f->table);
    const nlohmann::json fam = prune::ReadFamily(f->family);
    nn::Dataset data = nn::LoadDataset(f->data);
    if (f->images > 0) data.test = data.test.First(f->images);
    fs::create_directories(fs::path(f->out) / "answers");
    const std::string answers = (fs::path(f->out) / "answers").string();

    sim::SystemInput in;
    const std::string base_dir =
        (fs::path(f->family) / fam.at("base").at("dir").get<std::string>()).string();
    const auto& branches = fam.at("branches");
    Progress progress("answers on " + std::to_string(data.test.count) + " test images",
                      static_cast<int64_t>(branches.size()) + 1);
    in.base = Answers(base_dir, "base", data.test, data.Classes(), answers);
    progress.Update(1);
    for (const auto& b : branches) {
      in.branches.push_back(Answers((fs::path(f->family) / b.at("dir").get<std::string>()).string(),
                                    b.at("context"), data.test, data.Classes(), answers));
      progress.Update(static_cast<int64_t>(in.branches.size()) + 1);
    }
    progress.Finish();
    for (uint8_t l : data.test.labels) in.labels.push_back(l);
    in.splits = Splits(
        nn::ModelSpec::FromJson(nlohmann::json::parse(ReadFile(base_dir + "/spec.json"))), table);
    in.image_bytes = data.test.PixelsPerImage();
    std::printf("measuring the base model's batch service time (the servers' inference path)\n");
    in.edge = in.cloud = MeasureService(base_dir, f->max_batch);
    in.max_batch = f->max_batch;
    in.cache_fraction = f->cache_fraction;
    in.static_model = f->static_model;
    for (size_t i = 0; i < in.edge.batch.size(); ++i)
      std::printf("  batch %3d: %8.3f ms (%7.0f images/s)\n", in.edge.batch[i], in.edge.ms[i],
                  1000.0 * in.edge.batch[i] / in.edge.ms[i]);

    const std::vector<sim::User> users =
        sim::MakeUsers(workload, profiles, f->users, data.test.count, f->seed);
    size_t requests = 0;
    for (const auto& u : users) requests += u.t.size();
    std::printf("%d users, %zu requests over %.0f s\n", f->users, requests, users.back().t.front());
    const std::vector<sim::SchemeResult> rs = sim::SimulateSystem(in, workload, users);

    std::string table_md =
        "| scheme | mean latency (ms) | p95 (ms) | energy/request (mJ) | throughput (req/s) | "
        "bottleneck | accuracy (%) | offload | hit rate |\n|---|---|---|---|---|---|---|---|---|\n";
    std::printf("\n%-16s %10s %10s %12s %12s %-14s %9s %8s %8s\n", "scheme", "mean ms", "p95 ms",
                "energy mJ", "req/s", "bottleneck", "acc %", "offload", "hit");
    nlohmann::json out = nlohmann::json::array();
    for (const auto& r : rs) {
      std::printf("%-16s %10.2f %10.2f %12.2f %12.0f %-14s %9.2f %7.1f%% %8s\n", r.scheme.c_str(),
                  r.mean_ms, r.p95_ms, r.energy_mj, r.throughput, r.bottleneck.c_str(),
                  100 * r.accuracy, 100 * r.offload,
                  r.hit_rate < 0 ? "-" : Fmt("%.1f%%", 100 * r.hit_rate).c_str());
      table_md += "| " + r.scheme + " | " + Fmt("%.2f", r.mean_ms) + " | " + Fmt("%.2f", r.p95_ms) +
                  " | " + Fmt("%.2f", r.energy_mj) + " | " + Fmt("%.0f", r.throughput) + " | " +
                  r.bottleneck + " | " + Fmt("%.2f", 100 * r.accuracy) + " | " +
                  Fmt("%.1f%%", 100 * r.offload) + " | " +
                  (r.hit_rate < 0 ? "-" : Fmt("%.1f%%", 100 * r.hit_rate)) + " |\n";
      out.push_back({{"scheme", r.scheme},
                     {"mean_ms", r.mean_ms},
                     {"p95_ms", r.p95_ms},
                     {"energy_mj", r.energy_mj},
                     {"throughput", r.throughput},
                     {"bottleneck", r.bottleneck},
                     {"accuracy", r.accuracy},
                     {"offload", r.offload},
                     {"hit_rate", r.hit_rate}});
    }
    // Mean latency per network preset: where each scheme's time goes. Users'
    // requests are in user order in every result.
    std::vector<std::string> nets;
    for (const auto& u : users)
      if (std::find(nets.begin(), nets.end(), u.c.network) == nets.end())
        nets.push_back(u.c.network);
    std::string by_net = "\nmean latency (ms) by network\n" + std::string(16, ' ');
    for (const auto& n : nets) by_net += std::string(10 - std::min<size_t>(9, n.size()), ' ') + n;
    by_net += "\n";
    for (const auto& r : rs) {
      by_net += r.scheme + std::string(16 - std::min<size_t>(15, r.scheme.size()), ' ');
      for (const auto& n : nets) {
        double sum = 0;
        size_t count = 0, k = 0;
        for (const auto& u : users)
          for (size_t i = 0; i < u.t.size(); ++i, ++k)
            if (u.c.network == n) sum += r.latency_ms[k], ++count;
        by_net += Fmt("%10.1f", count ? sum / double(count) : NAN);
      }
      by_net += "\n";
    }
    std::printf("%s", by_net.c_str());
    table_md += "\n```" + by_net + "```\n";
    // Each DeepAdapter variant against the five other schemes, and the goals.
    std::string ratios;
    const sim::SchemeResult& mobile = rs.front();  // the base model's answers on the same images
    for (const auto& da : rs) {
      if (!da.scheme.starts_with("deepadapter")) continue;
      ratios += "\n" + da.scheme +
                " against each scheme (latency and energy: theirs / ours; throughput: ours / "
                "theirs)\n";
      double best_ms = INFINITY, best_mj = INFINITY;
      const sim::SchemeResult* edge_only = nullptr;
      for (const auto& r : rs) {
        if (r.scheme.starts_with("deepadapter")) continue;
        if (r.scheme == "edge-only") edge_only = &r;
        best_ms = std::min(best_ms, r.mean_ms), best_mj = std::min(best_mj, r.energy_mj);
        ratios += "  " + r.scheme + ": latency " + Fmt("%.2fx", r.mean_ms / da.mean_ms) +
                  ", energy " + Fmt("%.2fx", r.energy_mj / da.energy_mj) + ", throughput " +
                  Fmt("%.2fx", da.throughput / r.throughput) + ", accuracy " +
                  Fmt("%+.2f points", 100 * (da.accuracy - r.accuracy)) + "\n";
      }
      const bool lat_ok = best_ms / da.mean_ms >= 1.5, mj_ok = best_mj / da.energy_mj >= 1.6,
                 tp_ok = edge_only && da.throughput / edge_only->throughput >= 3,
                 acc_ok = da.accuracy >= mobile.accuracy - 0.005;
      ratios += "goals: latency >= 1.5x the best other (" + Fmt("%.2fx", best_ms / da.mean_ms) +
                (lat_ok ? ", met" : ", NOT met") + "); energy >= 1.6x the best other (" +
                Fmt("%.2fx", best_mj / da.energy_mj) + (mj_ok ? ", met" : ", NOT met") +
                "); throughput >= 3x edge-only (" +
                Fmt("%.2fx", edge_only ? da.throughput / edge_only->throughput : 0) +
                (tp_ok ? ", met" : ", NOT met") + "); accuracy >= base - 0.5 points (" +
                Fmt("%+.2f", 100 * (da.accuracy - mobile.accuracy)) +
                (acc_ok ? ", met" : ", NOT met") + ")\n";
    }
    std::printf("%s", ratios.c_str());

    AgainstServices services;
    if (f->live_seconds > 0 || f->browser)
      services = RunServices(*f, in, workload, profiles, users, data.test, &ratios);

    // Files: JSON, Markdown, plots.
    const fs::path dir = f->out;
    WriteFileAtomic((dir / "system.json").string(),
                    nlohmann::json{{"family", f->family},
                                   {"users", f->users},
                                   {"requests", requests},
                                   {"images", data.test.count},
                                   {"seed", f->seed},
                                   {"service_ms", {{"batch", in.edge.batch}, {"ms", in.edge.ms}}},
                                   {"schemes", out},
                                   {"live", services.live},
                                   {"browser", services.browser}}
                        .dump(1));
    WriteFileAtomic((dir / "summary.md").string(),
                    "# System evaluation\n\n`deepadapter bench system --family " + f->family +
                        " --out " + f->out + " --users " + std::to_string(f->users) +
                        "`: " + std::to_string(requests) + " requests on " +
                        std::to_string(data.test.count) + " test images.\n\n" + table_md + ratios);
    const char* colors[] = {"#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd",
                            "#8c564b", "#d62728", "#e377c2"};
    std::vector<Series> cdf, acc;
    for (size_t i = 0; i < rs.size(); ++i) {
      std::vector<double> v = rs[i].latency_ms;
      std::sort(v.begin(), v.end());
      Series s{rs[i].scheme, colors[i % 7], {}, {}, true};
      const size_t step = std::max<size_t>(1, v.size() / 400);
      for (size_t k = 0; k < v.size(); k += step)
        s.x.push_back(std::log10(std::max(0.01, v[k]))),
            s.y.push_back(double(k + 1) / double(v.size()));
      cdf.push_back(std::move(s));
      acc.push_back({rs[i].scheme, colors[i % 7], {rs[i].mean_ms}, {100 * rs[i].accuracy}});
    }
    WriteFileAtomic(
        (dir / "latency-cdf.svg").string(),
        SvgPlot("Latency per request (CDF)", "log10 latency (ms)", "share of requests", cdf));
    WriteFileAtomic(
        (dir / "accuracy-latency.svg").string(),
        SvgPlot("Accuracy against mean latency", "mean latency (ms)", "accuracy (%)", acc));
    std::vector<Series> energy;
    for (size_t i = 0; i < rs.size(); ++i)
      energy.push_back({rs[i].scheme, colors[i % 7], {double(i + 1)}, {rs[i].energy_mj}});
    WriteFileAtomic((dir / "energy.svg").string(),
                    SvgPlot("Mobile energy per request", "scheme (legend)", "energy (mJ)", energy));
    std::printf(
        "written: %s/{system.json,summary.md,latency-cdf.svg,accuracy-latency.svg,energy.svg}\n",
        f->out.c_str());
  });
}

}  // namespace da::cli
