#include "edge/edge.h"

#include <spdlog/spdlog.h>

#include <cmath>
#include <filesystem>
#include <random>

#include "common/error.h"
#include "common/fs.h"
#include "common/sha256.h"
#include "context/predictor.h"
#include "edge/edge_impl.h"
#include "nn/dataset.h"
#include "repo/repo.h"

namespace da::edge {
namespace fs = std::filesystem;

void EdgeConfig::Validate() const {
  server.Validate();
  batching.Validate();
  if (!cloud_url.starts_with("http://") && !cloud_url.starts_with("https://"))
    throw UserError("the cloud's URL must start with http:// or https://, not '" + cloud_url + "'");
  if (cache_bytes < 0) throw UserError("cache capacity must be >= 0 bytes");
  if (state_dir.empty()) throw UserError("a state directory is required");
  ParsePolicy(policy);
  for (double v :
       {half_life_s, refresh_s, catalog_refresh_s, retry_max_s, prune_interval_s, heartbeat_s})
    if (!(v > 0) || !std::isfinite(v)) throw UserError("intervals must be positive seconds");
  if (probe_max_bytes < 1) throw UserError("probe cap must be >= 1 byte");
  if (!(match_margin >= 0 && match_margin < 1))
    throw UserError("the match margin must be an accuracy in [0, 1)");
  for (double v : {fallback_page_ms, fallback_server_ms})
    if (!(v >= 0) || !std::isfinite(v)) throw UserError("fallback costs must be >= 0 ms");
}

double WallSeconds() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

namespace {

std::string Base64(const std::vector<uint8_t>& in) {
  static const char* t = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  out.reserve((in.size() + 2) / 3 * 4);
  for (size_t i = 0; i < in.size(); i += 3) {
    uint32_t v = uint32_t(uint8_t(in[i])) << 16;
    if (i + 1 < in.size()) v |= uint32_t(uint8_t(in[i + 1])) << 8;
    if (i + 2 < in.size()) v |= uint8_t(in[i + 2]);
    out += t[(v >> 18) & 63];
    out += t[(v >> 12) & 63];
    out += i + 1 < in.size() ? t[(v >> 6) & 63] : '=';
    out += i + 2 < in.size() ? t[v & 63] : '=';
  }
  return out;
}

// A metrics label per route (not per path: scanners must not grow the metrics).
std::string Endpoint(const std::string& path) {
  if (path.starts_with("/v1/models/")) return "/v1/models/{id}";
  for (const char* prefix : {"/app/", "/sdk/", "/ort/", "/engine/", "/lib/"})
    if (path.starts_with(prefix)) return std::string(prefix) + "{file}";
  for (const char* route : {"/", "/dashboard", "/healthz", "/metrics", "/v1/stats", "/v1/match",
                            "/v1/cache/refresh", "/v1/probe", "/v1/reference", "/v1/samples"})
    if (path == route) return path;
  if (path.starts_with("/v2")) return infer::Endpoint(path);
  return "other";
}

}  // namespace

Edge::Impl::Impl(const EdgeConfig& c)
    : cfg((c.Validate(), c)),
      profiles(context::Profiles::Load(c.profiles_dir)),
      store(c.state_dir),
      cloud(CloudLinkOptions{
          .url = c.cloud_url, .token = c.cloud_token, .heartbeat_s = c.heartbeat_s}),
      cache(ParsePolicy(c.policy), c.cache_bytes, c.half_life_s) {
  for (const std::string& p : store.problems()) spdlog::warn("edge state: {}", p);
  cache.LoadDemand(store.LoadDemand());
  if (auto saved = store.Value("catalog"))
    SetCatalog(nlohmann::json::parse(*saved, nullptr, false));
  for (const CachedFile& f : store.Files()) {
    if (cache.Restore(f.id, f.bytes))
      on_disk[f.id] = f.sha256;
    else
      store.Remove(f.id);  // capacity shrank since
  }
  std::mt19937 rng(1);
  probe_bytes.resize(static_cast<size_t>(std::min<int64_t>(cfg.probe_max_bytes, 64 << 20)));
  for (char& ch : probe_bytes) ch = static_cast<char>(rng());
  metrics.Declare("match_total", "counter", "Matches by whether the ideal model was cached");
  metrics.Declare("match_expected_offload_sum", "counter",
                  "Sum over matches of the served model's offload fraction on validation images");
  metrics.Declare("cache_bytes", "gauge", "Bytes of models in the cache");
  metrics.Declare("cache_models", "gauge", "Models in the cache");
  metrics.Declare("model_fetches_total", "counter", "Model files fetched from the cloud");
  metrics.Declare("model_downloads_total", "counter", "Model files served, by cache outcome");
  metrics.Declare("prune_requests_forwarded_total", "counter",
                  "Contexts forwarded to the cloud as prune requests");
  http::Configure(server, cfg.server, metrics, Endpoint);
  Routes();
  port = http::Bind(server, cfg.server);
  worker = std::thread([this] { Loop(); });
}

Edge::Impl::~Impl() {
  server.stop();
  {
    std::lock_guard lock(mu);
    stopping = true;
  }
  cv.notify_all();
  worker.join();
  SaveDemand();
}

void Edge::Impl::Routes() {
  using httplib::Request;
  using httplib::Response;
  server.Get("/healthz", [this](const Request&, Response& res) {
    const bool up = cloud.up();
    std::lock_guard lock(mu);
    nlohmann::json j = {{"status", up ? "ok" : "degraded"},
                        {"catalog_models", models.size()},
                        {"cached_models", on_disk.size()},
                        {"base_ready", base != nullptr},
                        {"problems", store.problems()}};
    if (!up) j["cloud_error"] = cloud.problem();
    http::Json(res, j);
  });
  server.Get("/metrics", [this](const Request&, Response& res) {
    {
      std::lock_guard lock(mu);
      metrics.Set("cache_bytes", "", static_cast<double>(cache.used()));
      metrics.Set("cache_models", "", static_cast<double>(cache.content().size()));
    }
    res.set_content(metrics.Text(), "text/plain; version=0.0.4");
  });
  server.Get("/v1/stats", [this](const Request&, Response& res) { http::Json(res, Stats()); });
  server.Post("/v1/match", [this](const Request& req, Response& res) {
    http::Json(res, MatchRequest(http::JsonBody(req)));
  });
  server.Post("/v1/cache/refresh", [this](const Request& req, Response& res) {
    http::RequireToken(req, cfg.server);
    Sync(true);
    http::Json(res, Stats());
  });
  server.Get(R"(/v1/models/([^/]+)\.onnx)",
             [this](const Request& req, Response& res) { Download(req, res, req.matches[1]); });
  server.Get("/v1/probe", [this](const Request& req, Response& res) {
    const int64_t n = http::IntParam(req, "bytes", 0, 0, cfg.probe_max_bytes);
    res.set_header("Cache-Control", "no-store");
    res.set_content(probe_bytes.substr(0, static_cast<size_t>(n)), "application/octet-stream");
  });
  model_service.AddRoutes(server);
  WebRoutes();
}

nlohmann::json Edge::Impl::MatchRequest(nlohmann::json body) {
  if (!body.contains("name")) body["name"] = "visitor";
  const context::Context c = context::Context::FromJson(body, profiles);
  const bool degraded = !cloud.up();
  std::unique_lock lock(mu);
  if (models.empty()) throw HttpError(503, "no catalog yet: the cloud has not been reached");
  // While the cloud is down only cached models can be downloaded.
  MatchOptions mo;
  mo.fallback_ms = FallbackMs(c, input_bytes + kUploadOverheadBytes, cfg.fallback_server_ms,
                              cfg.fallback_page_ms);
  mo.margin = cfg.match_margin;
  mo.only_cached = degraded;
  Match m = MatchContext(
      c, models, [&](int i) { return on_disk.count(models[size_t(i)].id) > 0; }, mo);
  const CatalogModel& ideal = models[static_cast<size_t>(m.ideal)];
  const CatalogModel& served = models[static_cast<size_t>(m.served)];
  // lru/lfu admit the ideal (the worker fetches it), but not during an outage:
  // what they would evict could not be replaced.
  cache.Request(ideal, WallSeconds(), nullptr, nullptr, /*admit=*/!degraded);
  if (!m.meets_budget) {
    nlohmann::json key = c.ToJson();
    key.erase("name");
    if (!prune_sent.count(key.dump()) && prune_queue.size() < 64) prune_queue[key.dump()] = body;
  }
  const nlohmann::json& rec = records.at(served.id);
  const context::Prediction p = context::Predict(c, served.reference_ms, served.bytes);
  nlohmann::json out = {
      {"model", served.id},
      {"url", http::VersionedUrl("/v1/models/" + served.id + ".onnx", rec.at("onnx").at("sha256"))},
      {"bytes", served.bytes},
      {"sha256", rec.at("onnx").at("sha256")},
      // The collaborative rule in this context: the threshold, and what the
      // pipeline is expected to give (validation accuracy, offload, latency).
      {"threshold", m.plan.tau},
      {"expected",
       {{"accuracy", m.plan.accuracy},
        {"offload", m.plan.offload},
        {"latency_ms", m.plan.latency_ms}}},
      {"val_accuracy", served.accuracy},
      {"spec", rec.value("spec", nlohmann::json())},
      {"reference_ms", served.reference_ms},
      {"predicted",
       {{"latency_ms", p.total_ms},
        {"download_ms", p.download_ms},
        {"compute_ms", p.compute_ms},
        {"energy_mj", p.energy_mj}}},
      {"budget_ms", c.budget_ms},
      // The device class and network preset nearest to what the visitor measured.
      {"context", {{"device", c.device}, {"network", c.network}}},
      {"meets_budget", m.plan.latency_ms <= c.budget_ms},
      {"ideal", ideal.id},
      {"ideal_cached", m.ideal_cached},
      {"cached", on_disk.count(served.id) > 0},
      {"degraded", degraded}};
  // The share of its answers the served model leaves to the edge in this
  // context (validation): summed over matches, the offload share to expect.
  const double offload = m.plan.offload;
  lock.unlock();
  metrics.Add("match_total", Label("ideal_cached", m.ideal_cached ? "true" : "false"));
  metrics.Add("match_expected_offload_sum", "", offload);
  return out;
}

void Edge::Impl::Download(const httplib::Request& req, httplib::Response& res,
                          const std::string& id) {
  std::string sha;
  bool cached = false;
  {
    std::lock_guard lock(mu);
    auto it = repo::ValidId(id) ? records.find(id) : records.end();
    if (it == records.end()) throw HttpError(404, "unknown model '" + id + "'");
    sha = it->second.at("onnx").at("sha256");
    if (id == "base") {  // kept in the state directory by the worker
      if (base_onnx_sha != sha) throw HttpError(503, "the base model is not loaded yet");
      cached = true;
    } else {
      auto d = on_disk.find(id);
      cached = d != on_disk.end() && d->second == sha;
    }
  }
  if (id != "base") metrics.Add("model_downloads_total", Label("cache", cached ? "hit" : "miss"));
  if (http::NotModified(req, res, sha, http::Immutable(req, sha) ? http::kImmutable : "no-cache"))
    return;
  http::ServeAsset(req, res, model_assets.Get(id, sha, "application/octet-stream", [&] {
    if (id == "base") return ReadFile((fs::path(cfg.state_dir) / "base.onnx").string());
    if (cached) {
      try {
        return ReadFile(store.Path(sha));
      } catch (const UserError&) {  // removed meanwhile: fetch it
      }
    }
    return Fetch(id, sha);
  }));
}

infer::Lookup Edge::Impl::FindModel(const std::string& name) {
  if (name == "base") return {Base(), 503, "the base model is not loaded yet"};
  std::string sha;
  {
    std::lock_guard lock(mu);
    auto it = repo::ValidId(name) ? records.find(name) : records.end();
    if (it == records.end()) return {nullptr, 404, "unknown model '" + name + "'"};
    auto d = on_disk.find(name);
    if (d == on_disk.end() || d->second != it->second.at("onnx").at("sha256"))
      return {nullptr, 404,
              "model '" + name + "' is not in this edge's cache; the cloud serves every model"};
    sha = d->second;
  }
  std::lock_guard lock(models_mu);  // (the worker drops batchers whose files left)
  auto& [have, batcher] = branches[name];
  if (!batcher || have != sha) {
    try {
      batcher = std::make_shared<infer::Batcher>(ReadFile(store.Path(sha)),
                                                 model_service.Observed(cfg.batching));
      have = sha;
    } catch (const UserError& e) {  // removed meanwhile, or unreadable
      branches.erase(name);
      return {nullptr, 404, "model '" + name + "' is not in this edge's cache: " + e.what()};
    }
  }
  return {batcher, 200, ""};
}

void Edge::Impl::ForgetUncached() {
  std::map<std::string, std::string> disk;
  {
    std::lock_guard lock(mu);
    disk = on_disk;
  }
  std::lock_guard lock(models_mu);
  std::erase_if(branches, [&](const auto& b) {
    auto d = disk.find(b.first);
    return d == disk.end() || d->second != b.second.first;
  });
}

nlohmann::json Edge::Impl::Stats() {
  const double hits = metrics.Get("match_total", Label("ideal_cached", "true"));
  const double misses = metrics.Get("match_total", Label("ideal_cached", "false"));
  const bool degraded = !cloud.up();
  std::lock_guard lock(mu);
  nlohmann::json content = nlohmann::json::array(), demand = nlohmann::json::array(),
                 cached = nlohmann::json::array();
  for (const auto& [id, bytes] : cache.content())
    content.push_back({{"id", id}, {"bytes", bytes}, {"on_disk", on_disk.count(id) > 0}});
  for (const auto& [id, sha] : on_disk) cached.push_back(id);
  const double now = WallSeconds();
  for (const auto& [id, d] : cache.demand())
    demand.push_back({{"id", id},
                      {"decayed", d.count * std::exp2(-(now - d.at) / cfg.half_life_s)},
                      {"total", d.total}});
  return {{"policy", cfg.policy},
          {"capacity_bytes", cache.capacity()},
          {"used_bytes", cache.used()},
          {"content", content},
          {"cached", cached},
          {"demand", demand},
          {"matches", hits + misses},
          {"ideal_cached", hits},
          {"hit_rate", hits + misses > 0 ? hits / (hits + misses) : 0.0},
          {"expected_offload",
           hits + misses > 0 ? metrics.Get("match_expected_offload_sum") / (hits + misses) : 0.0},
          {"catalog_models", models.size()},
          {"prune_requests_forwarded", prune_sent.size()},
          {"degraded", degraded}};
}

void Edge::Impl::WebRoutes() {
  using httplib::Request;
  using httplib::Response;
  server.Get("/v1/reference",
             [this](const Request&, Response& res) { http::Json(res, Reference()); });
  server.Get("/v1/samples", [this](const Request& req, Response& res) {
    http::Json(res, Samples(http::IntParam(req, "offset", 0, 0, 1 << 30),
                            http::IntParam(req, "count", 64, 0, 1024)));
  });
  if (cfg.web_dir.empty()) return;
  const fs::path w = cfg.web_dir;
  web.Alias("/", (w / "demo" / "index.html").string());
  web.Alias("/dashboard", (w / "demo" / "dashboard.html").string());
  web.Mount("/app/", (w / "demo").string());
  web.Mount("/sdk/", (w / "sdk").string());
  web.Mount("/ort/", (w / "node_modules" / "onnxruntime-web" / "dist").string());
  web.Mount("/engine/", (w / "engine" / "dist").string());
  web.Mount("/lib/uplot/", (w / "node_modules" / "uplot" / "dist").string());
  web.AddRoutes(server);
}

// The model browsers time to measure their device: the smallest branch that
// takes at least 1 ms on the reference runtime (the slowest, if none does):
// tiny models are timed mostly as per-call overhead, and the measured
// slowdown then wanders between visits. Its reference_ms (from the same
// latency table the predictions use) turns the measured time into a slowdown.
nlohmann::json Edge::Impl::Reference() {
  std::lock_guard lock(mu);
  if (models.empty()) throw HttpError(503, "no catalog yet: the cloud has not been reached");
  const CatalogModel *best = nullptr, *slowest = nullptr;
  for (const CatalogModel& m : models) {
    if (!slowest || m.reference_ms > slowest->reference_ms) slowest = &m;
    if (m.reference_ms >= 1.0 && (!best || m.reference_ms < best->reference_ms)) best = &m;
  }
  if (!best) best = slowest;
  const CatalogModel* smallest = nullptr;
  for (const CatalogModel& m : models)
    if (m.id != "base" && (!smallest || m.bytes < smallest->bytes)) smallest = &m;
  auto describe = [&](const CatalogModel& m) {
    const nlohmann::json& rec = records.at(m.id);
    const std::string sha = rec.at("onnx").at("sha256");
    return nlohmann::json{
        {"model", m.id},
        {"url", http::VersionedUrl("/v1/models/" + m.id + ".onnx", sha)},
        {"sha256", sha},
        {"bytes", m.bytes},
        {"reference_ms", m.reference_ms},
        {"threshold", rec.contains("threshold") ? rec["threshold"].value("tau", 0.0) : 0.0},
        {"spec", rec.value("spec", nlohmann::json())}};
  };
  nlohmann::json out = describe(*best);
  // The model a first visit answers with while it measures and downloads its
  // match: the fewest bytes.
  out["first"] = describe(smallest ? *smallest : *best);
  // The browser runtimes' files at content-versioned (immutable) URLs.
  if (!cfg.web_dir.empty())
    out["runtimes"] = {
        {"deepadapter",
         {{"mjs", web.Versioned("/engine/da-engine.mjs")},
          {"wasm", web.Versioned("/engine/da-engine.wasm")}}},
        {"ort",
         {{"module", web.Versioned("/ort/ort.wasm.min.mjs")},
          {"mjs", web.Versioned("/ort/ort-wasm-simd-threaded.mjs")},
          {"wasm", web.Versioned("/ort/ort-wasm-simd-threaded.wasm")}}}};
  return out;
}

nlohmann::json Edge::Impl::Samples(int64_t offset, int64_t count) {
  std::shared_ptr<const SampleSet> set;
  {
    std::lock_guard lock(samples_mu);
    if (!samples) {
      if (cfg.data_dir.empty()) throw HttpError(404, "this edge serves no sample images");
      try {
        nn::Dataset d = nn::LoadDataset(cfg.data_dir);
        samples = std::make_shared<const SampleSet>(
            SampleSet{d.name, std::move(d.class_names), std::move(d.test)});
      } catch (const std::exception& e) {
        spdlog::error("edge: sample images: {}", e.what());
        throw HttpError(503, "the sample images could not be loaded");
      }
    }
    set = samples;
  }
  const nn::Images& test = set->test;
  const nn::Images part =
      test.Slice(std::min(offset, test.count), std::min(test.count, offset + count));
  return {{"dataset", set->dataset}, {"split", "test"},
          {"classes", set->classes}, {"shape", {test.channels, test.height, test.width}},
          {"total", test.count},     {"offset", std::min(offset, test.count)},
          {"labels", part.labels},   {"pixels_base64", Base64(part.pixels)}};
}

Edge::Edge(const EdgeConfig& config) : impl_(std::make_unique<Impl>(config)) {}
Edge::~Edge() = default;
int Edge::port() const { return impl_->port; }
void Edge::Run() { impl_->server.listen_after_bind(); }
void Edge::Stop() { impl_->server.stop(); }

}  // namespace da::edge
