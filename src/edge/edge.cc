#include "edge/edge.h"

#include <spdlog/spdlog.h>

#include <cmath>
#include <condition_variable>
#include <filesystem>
#include <future>
#include <map>
#include <random>
#include <set>
#include <thread>

#include "common/error.h"
#include "common/fs.h"
#include "common/sha256.h"
#include "context/context.h"
#include "context/predictor.h"
#include "edge/cache.h"
#include "edge/store.h"
#include "repo/repo.h"

namespace da::edge {
namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

void EdgeConfig::Validate() const {
  server.Validate();
  batching.Validate();
  if (!cloud_url.starts_with("http://") && !cloud_url.starts_with("https://"))
    throw UserError("the cloud's URL must start with http:// or https://, not '" + cloud_url + "'");
  if (cache_bytes < 0) throw UserError("cache capacity must be >= 0 bytes");
  if (state_dir.empty()) throw UserError("a state directory is required");
  ParsePolicy(policy);
  for (double v : {half_life_s, refresh_s, catalog_refresh_s, retry_max_s, prune_interval_s})
    if (!(v > 0) || !std::isfinite(v)) throw UserError("intervals must be positive seconds");
  if (probe_max_bytes < 1) throw UserError("probe cap must be >= 1 byte");
}

namespace {

double WallSeconds() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// A metrics label per route (not per path: scanners must not grow the metrics).
std::string Endpoint(const std::string& path) {
  if (path.starts_with("/v1/models/")) return "/v1/models/{id}";
  for (const char* route : {"/healthz", "/metrics", "/v1/stats", "/v1/match", "/v1/cache/refresh",
                            "/v1/probe", "/v2/health/ready", "/v2/models/base",
                            "/v2/models/base/infer"})
    if (path == route) return path;
  return "other";
}

}  // namespace

struct Edge::Impl {
  EdgeConfig cfg;
  context::Profiles profiles;
  Store store;
  Metrics metrics;
  infer::BaseService base_service{metrics, [this] { return Base(); },
                                  "the base model is not loaded yet"};
  httplib::Server server;
  int port = 0;

  // Catalog and cache: guarded by mu.
  std::mutex mu;
  std::vector<CatalogModel> models;
  std::map<std::string, nlohmann::json> records;  // id -> catalog record
  ModelCache cache;
  std::map<std::string, std::string> on_disk;  // id -> sha256 of stored files
  std::map<std::string, std::shared_future<std::string>> fetching;  // id -> file content
  std::map<std::string, nlohmann::json> prune_queue;  // context key -> context, to forward
  std::set<std::string> prune_sent;
  bool degraded = false;
  std::string cloud_error;

  std::shared_ptr<infer::Batcher> base;  // set once loaded (guarded by mu)
  std::string probe_bytes;

  bool stopping = false;  // guarded by mu
  std::condition_variable cv;
  std::thread worker;

  explicit Impl(const EdgeConfig& c)
      : cfg((c.Validate(), c)),
        profiles(context::Profiles::Load(c.profiles_dir)),
        store(c.state_dir),
        cache(ParsePolicy(c.policy), c.cache_bytes, c.half_life_s) {
    for (const std::string& p : store.problems()) spdlog::warn("edge state: {}", p);
    cache.LoadDemand(store.LoadDemand());
    if (auto saved = store.Value("catalog")) SetCatalog(nlohmann::json::parse(*saved, nullptr, false));
    for (const CachedFile& f : store.Files()) {
      if (cache.Restore(f.id, f.bytes))
        on_disk[f.id] = f.sha256;
      else
        store.Remove(f.id);  // capacity shrank since
    }
    std::mt19937 rng(1);
    probe_bytes.resize(static_cast<size_t>(std::min<int64_t>(cfg.probe_max_bytes, 64 << 20)));
    for (char& ch : probe_bytes) ch = static_cast<char>(rng());
    Declare();
    http::Configure(server, cfg.server, metrics, Endpoint);
    Routes();
    port = http::Bind(server, cfg.server);
    worker = std::thread([this] { Loop(); });
  }

  ~Impl() {
    server.stop();
    {
      std::lock_guard lock(mu);
      stopping = true;
    }
    cv.notify_all();
    worker.join();
    SaveDemand();
  }

  void SaveDemand() {
    std::map<std::string, ModelCache::Demand> d;
    {
      std::lock_guard lock(mu);
      d = cache.demand();
    }
    store.SaveDemand(d);
  }

  void Declare() {
    metrics.Declare("match_total", "counter", "Matches by whether the ideal model was cached");
    metrics.Declare("cache_bytes", "gauge", "Bytes of models in the cache");
    metrics.Declare("cache_models", "gauge", "Models in the cache");
    metrics.Declare("model_fetches_total", "counter", "Model files fetched from the cloud");
    metrics.Declare("model_downloads_total", "counter", "Model files served, by cache outcome");
    metrics.Declare("prune_requests_forwarded_total", "counter",
                    "Contexts forwarded to the cloud as prune requests");
  }

  // Installs a catalog ({"models": [...]}); false when it is not one.
  bool SetCatalog(const nlohmann::json& j) {
    try {
      std::vector<CatalogModel> ms;
      std::map<std::string, nlohmann::json> recs;
      for (const auto& m : j.at("models")) {
        const std::string id = m.at("id");
        if (!repo::ValidId(id) || !IsSha256Hex(m.at("onnx").at("sha256").get<std::string>()))
          throw std::runtime_error("bad model entry");
        recs[id] = m;
        if (m.value("kind", "branch") == "base") continue;  // the base runs here, not in browsers
        ms.push_back({id, m.at("onnx").at("bytes").get<int64_t>(),
                      m.at("val_accuracy").get<double>(), m.at("reference_ms").get<double>()});
      }
      std::lock_guard lock(mu);
      models = std::move(ms);
      records = std::move(recs);
      return true;
    } catch (const std::exception& e) {
      spdlog::warn("ignoring a malformed catalog: {}", e.what());
      return false;
    }
  }

  std::unique_ptr<httplib::Client> Cloud(int read_timeout_s = 30) {
    auto c = std::make_unique<httplib::Client>(cfg.cloud_url);
    c->set_connection_timeout(2);
    c->set_read_timeout(read_timeout_s);
    return c;
  }

  // GET from the cloud; throws std::runtime_error (and marks degraded) on failure.
  std::string CloudGet(const std::string& path) {
    auto res = Cloud()->Get(path);
    if (!res || res->status != 200) {
      std::string why = res ? "status " + std::to_string(res->status)
                            : "unreachable (" + httplib::to_string(res.error()) + ")";
      {
        std::lock_guard lock(mu);
        degraded = !res;
        if (!res) cloud_error = why;
      }
      throw std::runtime_error("cloud " + cfg.cloud_url + path + ": " + why);
    }
    std::lock_guard lock(mu);
    degraded = false;
    return res->body;
  }

  // The model file for `id` (fetched once however many ask at the same time),
  // stored when the cache wants it. Throws HttpError.
  std::string Fetch(const std::string& id, const std::string& sha) {
    std::promise<std::string> mine;
    std::shared_future<std::string> f;
    bool owner = false;
    {
      std::lock_guard lock(mu);
      auto it = fetching.find(id);
      if (it != fetching.end()) {
        f = it->second;
      } else {
        f = mine.get_future().share();
        fetching[id] = f;
        owner = true;
      }
    }
    if (owner) {
      try {
        std::string data = CloudGet("/v1/models/" + id + ".onnx");
        if (Sha256Hex(data) != sha) throw std::runtime_error("cloud sent a corrupt model " + id);
        metrics.Add("model_fetches_total");
        bool keep;
        {
          std::lock_guard lock(mu);
          keep = cache.Contains(id);
        }
        if (keep) {
          store.Put(id, sha, data);
          std::lock_guard lock(mu);
          if (cache.Contains(id)) on_disk[id] = sha;
          else store.Remove(id);  // dropped while we fetched
        }
        mine.set_value(std::move(data));
      } catch (...) {
        mine.set_exception(std::current_exception());
      }
      std::lock_guard lock(mu);
      fetching.erase(id);
    }
    try {
      return f.get();
    } catch (const std::exception& e) {
      throw HttpError(503, std::string("model not cached and ") + e.what());
    }
  }

  void Routes() {
    using httplib::Request;
    using httplib::Response;
    server.Get("/healthz", [this](const Request&, Response& res) {
      std::lock_guard lock(mu);
      nlohmann::json j = {{"status", degraded ? "degraded" : "ok"},
                          {"cloud", cfg.cloud_url},
                          {"catalog_models", models.size()},
                          {"cached_models", on_disk.size()},
                          {"base_ready", base != nullptr},
                          {"problems", store.problems()}};
      if (degraded) j["cloud_error"] = cloud_error;
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
    server.Post("/v1/cache/refresh", [this](const Request&, Response& res) {
      Sync(true);
      http::Json(res, Stats());
    });
    server.Get(R"(/v1/models/([^/]+)\.onnx)", [this](const Request& req, Response& res) {
      Download(req, res, req.matches[1]);
    });
    server.Get("/v1/probe", [this](const Request& req, Response& res) {
      int64_t n = 0;
      const std::string s = req.get_param_value("bytes");
      try {
        size_t used = 0;
        n = std::stoll(s, &used);
        if (used != s.size()) throw std::invalid_argument(s);
      } catch (const std::exception&) {
        throw HttpError(400, "bytes must be an integer");
      }
      if (n < 0 || n > cfg.probe_max_bytes)
        throw HttpError(400, "bytes must be in 0.." + std::to_string(cfg.probe_max_bytes));
      res.set_header("Cache-Control", "no-store");
      res.set_content(probe_bytes.substr(0, static_cast<size_t>(n)), "application/octet-stream");
    });
    base_service.AddRoutes(server);
  }

  std::shared_ptr<infer::Batcher> Base() {
    std::lock_guard lock(mu);
    return base;
  }

  nlohmann::json MatchRequest(nlohmann::json body) {
    if (!body.contains("name")) body["name"] = "visitor";
    const context::Context c = context::Context::FromJson(body, profiles);
    std::unique_lock lock(mu);
    if (models.empty()) throw HttpError(503, "no catalog yet: the cloud has not been reached");
    // While the cloud is down only cached models can be downloaded.
    Match m = MatchContext(
        c, models, [&](int i) { return on_disk.count(models[size_t(i)].id) > 0; }, degraded);
    const CatalogModel& ideal = models[static_cast<size_t>(m.ideal)];
    const CatalogModel& served = models[static_cast<size_t>(m.served)];
    cache.Request(ideal, WallSeconds(), nullptr, nullptr);  // lru/lfu: the worker fetches it
    if (!m.meets_budget) {
      nlohmann::json key = c.ToJson();
      key.erase("name");
      if (!prune_sent.count(key.dump()) && prune_queue.size() < 64) prune_queue[key.dump()] = body;
    }
    const nlohmann::json& rec = records.at(served.id);
    const context::Prediction p = context::Predict(c, served.reference_ms, served.bytes);
    nlohmann::json out = {
        {"model", served.id},
        {"url", "/v1/models/" + served.id + ".onnx"},
        {"bytes", served.bytes},
        {"sha256", rec.at("onnx").at("sha256")},
        {"threshold", rec.contains("threshold") ? rec["threshold"].value("tau", 0.0) : 0.0},
        {"val_accuracy", served.accuracy},
        {"predicted",
         {{"latency_ms", p.total_ms},
          {"download_ms", p.download_ms},
          {"compute_ms", p.compute_ms},
          {"energy_mj", p.energy_mj}}},
        {"budget_ms", c.budget_ms},
        {"meets_budget", p.total_ms <= c.budget_ms},
        {"ideal", ideal.id},
        {"ideal_cached", m.ideal_cached},
        {"cached", on_disk.count(served.id) > 0},
        {"degraded", degraded}};
    lock.unlock();
    metrics.Add("match_total", Label("ideal_cached", m.ideal_cached ? "true" : "false"));
    return out;
  }

  void Download(const httplib::Request& req, httplib::Response& res, const std::string& id) {
    std::string sha;
    bool cached = false;
    {
      std::lock_guard lock(mu);
      auto it = repo::ValidId(id) ? records.find(id) : records.end();
      if (it == records.end()) throw HttpError(404, "unknown model '" + id + "'");
      sha = it->second.at("onnx").at("sha256");
      auto d = on_disk.find(id);
      cached = d != on_disk.end() && d->second == sha;
    }
    metrics.Add("model_downloads_total", Label("cache", cached ? "hit" : "miss"));
    if (cached) {
      try {
        http::ServeImmutable(req, res, store.Path(sha), sha, "application/octet-stream");
        return;
      } catch (const UserError&) {  // removed meanwhile: fetch it
      }
    }
    const std::string etag = "\"" + sha + "\"";
    res.set_header("ETag", etag);
    res.set_header("Cache-Control", "public, max-age=31536000, immutable");
    if (req.get_header_value("If-None-Match") == etag) {
      res.status = 304;
      return;
    }
    res.set_content(Fetch(id, sha), "application/octet-stream");
  }

  nlohmann::json Stats() {
    const double hits = metrics.Get("match_total", Label("ideal_cached", "true"));
    const double misses = metrics.Get("match_total", Label("ideal_cached", "false"));
    std::lock_guard lock(mu);
    nlohmann::json content = nlohmann::json::array(), demand = nlohmann::json::array();
    for (const auto& [id, bytes] : cache.content())
      content.push_back({{"id", id}, {"bytes", bytes}, {"on_disk", on_disk.count(id) > 0}});
    const double now = WallSeconds();
    for (const auto& [id, d] : cache.demand())
      demand.push_back({{"id", id},
                        {"decayed", d.count * std::exp2(-(now - d.at) / cfg.half_life_s)},
                        {"total", d.total}});
    return {{"policy", cfg.policy},
            {"capacity_bytes", cache.capacity()},
            {"used_bytes", cache.used()},
            {"content", content},
            {"demand", demand},
            {"matches", hits + misses},
            {"ideal_cached", hits},
            {"hit_rate", hits + misses > 0 ? hits / (hits + misses) : 0.0},
            {"catalog_models", models.size()},
            {"prune_requests_forwarded", prune_sent.size()},
            {"degraded", degraded}};
  }

  // Recomputes the content (utility) when `recompute`, then makes the disk
  // follow the content: drops what left it, fetches what joined it.
  void Sync(bool recompute) {
    std::vector<std::pair<std::string, std::string>> fetch;  // id, sha
    {
      std::lock_guard lock(mu);
      if (recompute) cache.Refresh(models, WallSeconds(), nullptr, nullptr);
      for (auto it = on_disk.begin(); it != on_disk.end();) {
        if (!cache.Contains(it->first)) {
          store.Remove(it->first);
          it = on_disk.erase(it);
        } else {
          ++it;
        }
      }
      for (const auto& [id, bytes] : cache.content()) {
        auto r = records.find(id);
        if (r != records.end() && !on_disk.count(id))
          fetch.push_back({id, r->second.at("onnx").at("sha256")});
      }
    }
    for (const auto& [id, sha] : fetch) {
      try {
        Fetch(id, sha);
      } catch (const std::exception& e) {
        spdlog::warn("cache fill: {}", e.what());
        break;  // cloud trouble: try again next round
      }
    }
  }

  void LoadCatalog() {
    std::string body = CloudGet("/v1/catalog");
    nlohmann::json j = nlohmann::json::parse(body, nullptr, false);
    if (j.is_discarded() || !SetCatalog(j)) throw std::runtime_error("cloud sent a bad catalog");
    store.SetValue("catalog", body);
  }

  void LoadBase() {
    nlohmann::json rec;
    {
      std::lock_guard lock(mu);
      auto it = records.find("base");
      if (it == records.end() || base) return;
      rec = it->second;
    }
    const std::string sha = rec.at("weights").at("sha256");
    const std::string path = (fs::path(cfg.state_dir) / "base.pt").string();
    if (!fs::exists(path) || Sha256Hex(ReadFile(path)) != sha) {
      std::string data = CloudGet("/v1/models/base.pt");
      if (Sha256Hex(data) != sha) throw std::runtime_error("cloud sent corrupt base weights");
      WriteFileAtomic(path, data);
    }
    auto b = std::make_shared<infer::Batcher>(rec.at("spec"), path,
                                              base_service.Observed(cfg.batching));
    std::lock_guard lock(mu);
    base = std::move(b);
    spdlog::info("edge: base model loaded");
  }

  void ForwardPruneRequests() {
    nlohmann::json ctx;
    std::string key;
    {
      std::lock_guard lock(mu);
      if (prune_queue.empty()) return;
      key = prune_queue.begin()->first;
      ctx = prune_queue.begin()->second;
      prune_queue.erase(prune_queue.begin());
      prune_sent.insert(key);
    }
    auto res = Cloud()->Post("/v1/prune-requests", ctx.dump(), "application/json");
    if (res && (res->status == 200 || res->status == 202)) {
      metrics.Add("prune_requests_forwarded_total");
      spdlog::info("edge: forwarded a prune request: {}", res->body);
    } else {
      std::lock_guard lock(mu);
      prune_sent.erase(key);
      if (!res || res->status == 503) prune_queue[key] = ctx;  // retry later
    }
  }

  // Catalog (with backoff while the cloud is down), base model, cache content,
  // statistics persistence, prune-request forwarding.
  void Loop() {
    auto after = [](double s) {
      return Clock::now() +
             std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(s));
    };
    auto next_catalog = Clock::now(), next_refresh = after(cfg.refresh_s);
    auto next_save = after(1), next_prune = Clock::now();
    double backoff = 0.25;
    for (;;) {
      {
        std::unique_lock lock(mu);
        cv.wait_for(lock, std::chrono::milliseconds(100), [&] { return stopping; });
        if (stopping) return;
      }
      const auto now = Clock::now();
      if (now >= next_catalog) {
        try {
          LoadCatalog();
          backoff = 0.25;
          next_catalog = after(cfg.catalog_refresh_s);
        } catch (const std::exception& e) {
          spdlog::warn("edge: {}; retrying in {:.2f} s", e.what(), backoff);
          next_catalog = after(backoff);
          backoff = std::min(cfg.retry_max_s, backoff * 2);
        }
        try {
          LoadBase();  // from the state too, when the cloud is down
        } catch (const std::exception& e) {
          spdlog::warn("edge: base model: {}", e.what());
        }
      }
      const bool recompute = now >= next_refresh;
      if (recompute) next_refresh = after(cfg.refresh_s);
      Sync(recompute);
      if (now >= next_save) {
        SaveDemand();
        next_save = after(1);
      }
      if (now >= next_prune) {
        ForwardPruneRequests();
        next_prune = after(cfg.prune_interval_s);
      }
    }
  }
};

Edge::Edge(const EdgeConfig& config) : impl_(std::make_unique<Impl>(config)) {}
Edge::~Edge() = default;
int Edge::port() const { return impl_->port; }
void Edge::Run() { impl_->server.listen_after_bind(); }
void Edge::Stop() { impl_->server.stop(); }

}  // namespace da::edge
