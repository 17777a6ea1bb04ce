#include "cloud/cloud.h"

#include <spdlog/spdlog.h>

#include <condition_variable>
#include <deque>
#include <filesystem>
#include <map>
#include <thread>

#include "common/error.h"
#include "common/fs.h"
#include "common/sha256.h"
#include "context/context.h"
#include "context/latency.h"
#include "nn/dataset.h"
#include "nn/model_dir.h"
#include "prune/family.h"
#include "repo/repo.h"

namespace da::cloud {
namespace fs = std::filesystem;

namespace {

struct Cancelled {};

constexpr size_t kKeepFinished = 256;  // finished prune requests remembered
constexpr const char* kRequestsFile = "prune-requests.json";

struct PruneRequest {
  std::string id, state = "queued", model, error;
  nlohmann::json context;
  double progress = 0;
  nlohmann::json ToJson() const {
    nlohmann::json j = {{"id", id}, {"state", state}, {"progress", progress}, {"context", context}};
    if (!model.empty()) j["model"] = model;
    if (!error.empty()) j["error"] = error;
    return j;
  }
  static PruneRequest FromJson(const nlohmann::json& j) {
    PruneRequest r;
    r.id = j.at("id");
    r.state = j.at("state");
    r.progress = j.value("progress", 0.0);
    r.context = j.at("context");
    r.model = j.value("model", "");
    r.error = j.value("error", "");
    return r;
  }
};

// A metrics label per route (not per path: scanners must not grow the metrics).
std::string Endpoint(const std::string& path) {
  for (const char* prefix : {"/v1/models/", "/v1/prune-requests/"})
    if (path.starts_with(prefix)) return std::string(prefix) + "{id}";
  for (const char* route : {"/healthz", "/metrics", "/v1/catalog", "/v1/prune-requests"})
    if (path == route) return path;
  if (path.starts_with("/v2")) return infer::Endpoint(path);
  return "other";
}

}  // namespace

struct Cloud::Impl {
  CloudConfig cfg;
  repo::Repository repo;
  context::Profiles profiles;
  context::LatencyTable table;
  std::vector<context::Context> standard;
  Metrics metrics;
  infer::ModelService model_service{metrics,
                                    [this](const std::string& name) { return Find(name); }};
  std::shared_ptr<infer::Batcher> base;  // set once, in the constructor; stops first
  std::mutex models_mu;
  std::map<std::string, std::shared_ptr<infer::Batcher>> branches;  // loaded on first request

  // A model of the repository for the Open Inference Protocol routes.
  infer::Lookup Find(const std::string& name) {
    if (name == "base") return {base, 503, "the repository has no base model"};
    std::lock_guard lock(models_mu);
    if (auto it = branches.find(name); it != branches.end()) return {it->second, 200, ""};
    const auto path = repo::ValidId(name) ? repo.ArtifactPath(name, "onnx") : std::nullopt;
    if (!path) return {nullptr, 404, "unknown model '" + name + "'"};
    try {
      auto b =
          std::make_shared<infer::Batcher>(ReadFile(*path), model_service.Observed(cfg.batching));
      branches[name] = b;
      return {b, 200, ""};
    } catch (const UserError& e) {
      return {nullptr, 500, "model '" + name + "' cannot be loaded: " + e.what()};
    }
  }
  http::Server server{cfg.server};
  int port = 0;

  std::mutex mu;
  std::condition_variable cv;
  std::map<std::string, PruneRequest> requests;
  std::deque<std::string> queue;     // ids waiting, in order
  std::deque<std::string> finished;  // ids done or failed, oldest first
  bool stopping = false;
  std::unique_ptr<nn::Dataset> data;  // loaded by the first prune request
  std::thread worker;

  explicit Impl(const CloudConfig& c)
      : cfg(c),
        repo(c.repo_dir),
        profiles(context::Profiles::Load(c.profiles_dir)),
        table(context::LatencyTable::Load(c.table_path)),
        standard(context::LoadContexts(c.standard_path, profiles)) {
    cfg.search.Validate();
    for (const std::string& p : repo.problems()) spdlog::warn("repository {}: {}", c.repo_dir, p);
    if (!c.family_dir.empty()) {
      int added = repo.ImportFamily(c.family_dir);
      if (added) spdlog::info("imported {} models from {}", added, c.family_dir);
    }
    if (auto b = repo.Find("base"))
      base = std::make_shared<infer::Batcher>(ReadFile(*repo.ArtifactPath("base", "onnx")),
                                              model_service.Observed(cfg.batching));
    else
      spdlog::warn("repository {} has no base model: inference and prune requests are off",
                   c.repo_dir);
    metrics.Declare("prune_requests_total", "counter", "Prune requests by outcome");
    LoadRequests();
    http::Configure(server, cfg.server, metrics, Endpoint);
    Routes();
    port = http::Bind(server, cfg.server);
    worker = std::thread([this] { Worker(); });
  }

  ~Impl() {
    server.stop();
    {
      std::lock_guard lock(mu);
      stopping = true;
    }
    cv.notify_all();
    worker.join();
  }

  // Prune requests survive a restart: queued and interrupted ones run again.
  void LoadRequests() {
    const fs::path path = fs::path(cfg.repo_dir) / kRequestsFile;
    if (!fs::exists(path)) return;
    try {
      const nlohmann::json saved = nlohmann::json::parse(ReadFile(path.string()));
      for (const auto& j : saved.at("requests")) {
        PruneRequest r = PruneRequest::FromJson(j);
        if (r.state == "queued" || r.state == "running") {
          r.state = "queued";
          r.progress = 0;
          queue.push_back(r.id);
        } else {
          finished.push_back(r.id);
        }
        requests[r.id] = r;
      }
    } catch (const std::exception& e) {
      spdlog::warn("{}: unreadable ({}); prune requests start afresh", path.string(), e.what());
      requests.clear(), queue.clear(), finished.clear();
    }
  }

  // Writes the requests atomically (queued first, then finished); mu held.
  void SaveRequests() {
    nlohmann::json list = nlohmann::json::array();
    for (const auto* ids : {&queue, &finished})
      for (const std::string& id : *ids) list.push_back(requests.at(id).ToJson());
    for (const auto& [id, r] : requests)
      if (r.state == "running") list.push_back(r.ToJson());
    try {
      WriteFileAtomic((fs::path(cfg.repo_dir) / kRequestsFile).string(),
                      nlohmann::json{{"requests", list}}.dump());
    } catch (const std::exception& e) {
      spdlog::error("saving prune requests: {}", e.what());
    }
  }

  // Marks `id` finished (done or failed) and forgets the oldest beyond the bound; mu held.
  void Finish(const std::string& id) {
    finished.push_back(id);
    while (finished.size() > kKeepFinished) {
      requests.erase(finished.front());
      finished.pop_front();
    }
    SaveRequests();
  }

  void Routes() {
    using httplib::Request;
    using httplib::Response;
    server.Get("/healthz", [this](const Request&, Response& res) {
      std::lock_guard lock(mu);
      http::Json(res, {{"status", "ok"},
                       {"models", repo.Catalog()["models"].size()},
                       {"problems", repo.problems()},
                       {"prune_queue", queue.size()}});
    });
    server.Get("/metrics", [this](const Request&, Response& res) {
      res.set_content(metrics.Text(), "text/plain; version=0.0.4");
    });
    server.Get("/v1/catalog",
               [this](const Request&, Response& res) { http::Json(res, repo.Catalog()); });
    server.Get(R"(/v1/models/([^/]+)\.(onnx|pt))", [this](const Request& req, Response& res) {
      const std::string id = req.matches[1], ext = req.matches[2];
      const char* kind = ext == "onnx" ? "onnx" : "weights";
      auto m = repo::ValidId(id) ? repo.Find(id) : std::nullopt;
      if (!m) throw HttpError(404, "unknown model '" + id + "'");
      http::ServeImmutable(req, res, *repo.ArtifactPath(id, kind), m->at(kind).at("sha256"),
                           "application/octet-stream");
    });
    model_service.AddRoutes(server);
    server.Post("/v1/prune-requests", [this](const Request& req, Response& res) {
      http::RequireToken(req, cfg.server);
      nlohmann::json body = http::JsonBody(req);
      if (!body.contains("name")) body["name"] = "request";
      context::Context c = context::Context::FromJson(body, profiles);
      bool queued = false;
      nlohmann::json status = Submit(c, queued);
      http::Json(res, status, queued ? 202 : 200);
    });
    server.Get(R"(/v1/prune-requests/([^/]+))", [this](const Request& req, Response& res) {
      std::lock_guard lock(mu);
      auto it = requests.find(req.matches[1]);
      if (it == requests.end())
        throw HttpError(404, "unknown prune request '" + std::string(req.matches[1]) + "'");
      http::Json(res, it->second.ToJson());
    });
  }

  // Queues a prune request for `c` (deduplicated on everything but its name).
  nlohmann::json Submit(context::Context c, bool& queued) {
    if (!base) throw HttpError(503, "the repository has no base model");
    nlohmann::json key = c.ToJson();
    key.erase("name");
    const std::string id = "pr-" + Sha256Hex(key.dump()).substr(0, 12);
    std::lock_guard lock(mu);
    if (auto it = requests.find(id); it != requests.end() && it->second.state != "failed") {
      metrics.Add("prune_requests_total", Label("outcome", "duplicate"));
      return it->second.ToJson();
    }
    if (static_cast<int>(queue.size()) >= cfg.max_pending) {
      metrics.Add("prune_requests_total", Label("outcome", "refused"));
      throw HttpError(503, "prune queue is full; try again later");
    }
    c.name = id;
    PruneRequest r;
    r.id = id;
    r.context = c.ToJson();
    if (requests.count(id)) std::erase(finished, id);  // failed before: forget that
    requests[id] = r;
    queue.push_back(id);
    SaveRequests();
    queued = true;
    metrics.Add("prune_requests_total", Label("outcome", "queued"));
    cv.notify_all();
    return r.ToJson();
  }

  void Set(const std::string& id, const std::function<void(PruneRequest&)>& f) {
    std::lock_guard lock(mu);
    f(requests.at(id));
  }

  void Worker() {
    for (;;) {
      std::string id;
      nlohmann::json ctx_json;
      {
        std::unique_lock lock(mu);
        cv.wait(lock, [&] { return stopping || !queue.empty(); });
        if (stopping) return;
        id = queue.front();
        queue.pop_front();
        requests.at(id).state = "running";
        ctx_json = requests.at(id).context;
        SaveRequests();
      }
      spdlog::info("prune request {}: running", id);
      try {
        RunPrune(id, ctx_json);
        std::lock_guard lock(mu);
        PruneRequest& r = requests.at(id);
        r.state = "done", r.model = id, r.progress = 1;
        Finish(id);
        metrics.Add("prune_requests_total", Label("outcome", "done"));
        spdlog::info("prune request {}: done, model {}", id, id);
      } catch (const Cancelled&) {
        // Saved as running: the next start runs it again.
        return;
      } catch (const std::exception& e) {
        std::lock_guard lock(mu);
        PruneRequest& r = requests.at(id);
        r.state = "failed", r.error = e.what();
        Finish(id);
        metrics.Add("prune_requests_total", Label("outcome", "failed"));
        spdlog::warn("prune request {}: failed: {}", id, e.what());
      }
    }
  }

  void RunPrune(const std::string& id, const nlohmann::json& ctx_json) {
    // Its model entered the catalog before a crash cut the request's own save.
    if (repo.Find(id)) return;
    // The search reads the base as a model directory; written by the first request.
    const auto rec = *repo.Find("base");
    const fs::path base_dir =
        fs::path(cfg.repo_dir) / "work" /
        ("base-" + rec.at("weights").at("sha256").get<std::string>().substr(0, 12));
    if (!fs::exists(base_dir / nn::kWeightsFile)) {
      WriteFileAtomic((base_dir / nn::kSpecFile).string(), rec.at("spec").dump());
      WriteFileAtomic((base_dir / nn::kWeightsFile).string(),
                      ReadFile(*repo.ArtifactPath("base", "weights")));
    }
    if (!data) {
      auto d = std::make_unique<nn::Dataset>(nn::LoadDataset(cfg.data_dir));
      if (cfg.search.train.limit > 0) d->train = d->train.First(cfg.search.train.limit);
      data = std::move(d);
    }
    context::Context c = context::Context::FromJson(ctx_json, profiles);
    prune::SearchOptions o = cfg.search;
    o.quiet = true;
    o.on_progress = [this, id](double f) {
      {
        std::lock_guard lock(mu);
        if (stopping) throw Cancelled{};
      }
      // The search is most of the work; long-term fine-tuning follows it.
      Set(id, [&](PruneRequest& r) { r.progress = 0.9 * f; });
    };
    const fs::path work = fs::path(cfg.repo_dir) / "work" / id;
    fs::remove_all(work);
    prune::FamilyInputs in{base_dir.string(), {c}, standard, &table, data.get()};
    prune::BuildFamily(in, o, prune::Method::kContextAware, work.string(), false);
    repo.Add(id, (work / "branches" / id).string(), {{"kind", "branch"}, {"prune_request", id}});
    fs::remove_all(work);
  }
};

Cloud::Cloud(const CloudConfig& config) : impl_(std::make_unique<Impl>(config)) {}
Cloud::~Cloud() = default;
int Cloud::port() const { return impl_->port; }
void Cloud::Run() { impl_->server.listen_after_bind(); }
void Cloud::Stop() { impl_->server.stop(); }

}  // namespace da::cloud
