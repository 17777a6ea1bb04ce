// The edge's background work and the cache's files (see edge_impl.h).
#include <spdlog/spdlog.h>

#include <filesystem>

#include "common/error.h"
#include "common/fs.h"
#include "common/sha256.h"
#include "edge/edge_impl.h"
#include "repo/repo.h"

namespace da::edge {
namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

std::string Edge::Impl::Fetch(const std::string& id, const std::string& sha) {
  // During an outage a browser never waits on the cloud.
  if (!cloud.up()) throw HttpError(503, "model " + id + " is not cached and " + cloud.problem());
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
      std::string data = cloud.Get("/v1/models/" + id + ".onnx");
      if (Sha256Hex(data) != sha) throw std::runtime_error("the cloud sent a corrupt model " + id);
      metrics.Add("model_fetches_total");
      Keep(id, sha, data);
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
    spdlog::warn("edge: fetching {}: {}", id, e.what());
    throw HttpError(503, "model " + id + " is not cached and could not be fetched");
  }
}

void Edge::Impl::Keep(const std::string& id, const std::string& sha, const std::string& data) {
  std::lock_guard io(io_mu);
  {
    std::lock_guard lock(mu);
    // Wanted, or room for it: keep it (the policy may evict it later).
    if (!cache.Contains(id) && !cache.Restore(id, static_cast<int64_t>(data.size()))) return;
    if (on_disk.count(id)) return;
  }
  try {
    store.Put(id, sha, data);
  } catch (const std::exception& e) {
    spdlog::error("edge: storing {}: {}", id, e.what());
    return;
  }
  std::lock_guard lock(mu);
  on_disk[id] = sha;  // if the content dropped it meanwhile, the next Sync removes it
}

bool Edge::Impl::Sync(bool recompute) {
  if (!cloud.up()) return true;
  std::vector<std::pair<std::string, std::string>> fetch;  // id, sha
  {
    std::lock_guard lock(mu);
    if (recompute) cache.Refresh(models, WallSeconds(), nullptr, nullptr);
    std::vector<std::string> gone;  // no longer in the catalog
    for (const auto& [id, bytes] : cache.content()) {
      auto r = records.find(id);
      if (r == records.end())
        gone.push_back(id);
      else if (!on_disk.count(id))
        fetch.push_back({id, r->second.at("onnx").at("sha256")});
    }
    for (const std::string& id : gone) cache.Drop(id);
  }
  for (const auto& [id, sha] : fetch) {
    try {
      Fetch(id, sha);
    } catch (const std::exception& e) {
      return false;  // try again later; keep what is on disk
    }
  }
  // Everything the content wants is on disk: remove what left it.
  std::lock_guard io(io_mu);
  std::vector<std::string> drop;
  {
    std::lock_guard lock(mu);
    for (auto it = on_disk.begin(); it != on_disk.end();) {
      if (cache.Contains(it->first)) {
        ++it;
      } else {
        drop.push_back(it->first);
        it = on_disk.erase(it);
      }
    }
  }
  for (const std::string& id : drop) store.Remove(id);
  return true;
}

bool Edge::Impl::SetCatalog(const nlohmann::json& j) {
  try {
    std::vector<CatalogModel> ms;
    std::map<std::string, nlohmann::json> recs;
    int64_t input = 784;
    for (const auto& m : j.at("models")) {
      const std::string id = m.at("id");
      if (!repo::ValidId(id) || !IsSha256Hex(m.at("onnx").at("sha256").get<std::string>()))
        throw std::runtime_error("bad model entry");
      recs[id] = m;
      if (m.value("kind", "branch") == "base") {  // the base runs here, not in browsers
        if (m.contains("spec") && m["spec"].contains("input")) {
          input = 1;
          for (const auto& d : m["spec"]["input"]) input *= d.get<int64_t>();
          if (input < 1 || input > (int64_t{1} << 30)) throw std::runtime_error("bad input shape");
        }
        continue;
      }
      const double accuracy = m.at("val_accuracy").get<double>();
      ms.push_back({id, m.at("onnx").at("bytes").get<int64_t>(), accuracy,
                    m.at("reference_ms").get<double>(),
                    m.contains("threshold") ? ParseCurve(m["threshold"], accuracy)
                                            : std::vector<CurvePoint>{}});
    }
    std::lock_guard lock(mu);
    models = std::move(ms);
    records = std::move(recs);
    input_bytes = input;
    return true;
  } catch (const std::exception& e) {
    spdlog::warn("ignoring a malformed catalog: {}", e.what());
    return false;
  }
}

void Edge::Impl::LoadCatalog() {
  std::string body = cloud.Get("/v1/catalog");
  nlohmann::json j = nlohmann::json::parse(body, nullptr, false);
  if (j.is_discarded() || !SetCatalog(j)) throw std::runtime_error("the cloud sent a bad catalog");
  store.SetValue("catalog", body);
}

void Edge::Impl::LoadBase() {
  nlohmann::json rec;
  {
    std::lock_guard lock(mu);
    auto it = records.find("base");
    if (it == records.end()) return;
    rec = it->second;
    if (base && base_onnx_sha == rec.at("onnx").at("sha256")) return;
  }
  // The ONNX file: the engine runs it here, and browsers that run the whole
  // model (mobile-only) download it. Kept in the state: an outage keeps it.
  const std::string sha = rec.at("onnx").at("sha256");
  const std::string path = (fs::path(cfg.state_dir) / "base.onnx").string();
  std::string data = fs::exists(path) ? ReadFile(path) : "";
  if (Sha256Hex(data) != sha) {
    data = cloud.Get("/v1/models/base.onnx");
    if (Sha256Hex(data) != sha) throw std::runtime_error("the cloud sent a corrupt base model");
    WriteFileAtomic(path, data);
  }
  auto b = std::make_shared<infer::Batcher>(data, model_service.Observed(cfg.batching));
  std::lock_guard lock(mu);
  base = std::move(b);
  base_onnx_sha = sha;
  spdlog::info("edge: base model loaded");
}

void Edge::Impl::ForwardPruneRequests() {
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
  std::string answer;
  const int status = cloud.Post("/v1/prune-requests", ctx.dump(), &answer);
  if (status == 200 || status == 202) {
    metrics.Add("prune_requests_forwarded_total");
    spdlog::info("edge: forwarded a prune request: {}", answer);
  } else {
    std::lock_guard lock(mu);
    prune_sent.erase(key);
    if (status < 0 || status == 503) prune_queue[key] = ctx;  // retry later
  }
}

void Edge::Impl::SaveDemand() {
  std::map<std::string, ModelCache::Demand> d;
  {
    std::lock_guard lock(mu);
    d = cache.demand();
  }
  try {
    store.SaveDemand(d);
  } catch (const std::exception& e) {
    spdlog::error("edge: saving statistics: {}", e.what());
  }
}

// Every 100 ms: the catalog (every catalog_refresh_s while the cloud is up;
// the heartbeat tells when it comes back), the base model, the cache's files
// (with backoff after a failed fill), statistics every second, prune requests.
void Edge::Impl::Loop() {
  auto after = [](double s) {
    return Clock::now() +
           std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(s));
  };
  auto next_catalog = Clock::now(), next_refresh = after(cfg.refresh_s), next_fill = Clock::now();
  auto next_save = after(1), next_prune = Clock::now(), next_base = Clock::now();
  double fill_backoff = 0.5;
  bool was_up = false;
  for (;;) {
    {
      std::unique_lock lock(mu);
      cv.wait_for(lock, std::chrono::milliseconds(100), [&] { return stopping; });
      if (stopping) return;
    }
    const auto now = Clock::now();
    const bool up = cloud.up();
    if (up && (!was_up || now >= next_catalog)) {
      try {
        LoadCatalog();
        next_catalog = after(cfg.catalog_refresh_s);
      } catch (const std::exception& e) {
        spdlog::warn("edge: {}", e.what());
        next_catalog = after(1);
      }
    }
    if (up && !was_up) next_fill = now;
    was_up = up;
    if (now >= next_base) {
      try {
        LoadBase();  // from the state too, when the cloud is down
      } catch (const std::exception& e) {
        spdlog::warn("edge: base model: {}", e.what());
        next_base = after(5);
      }
    }
    const bool recompute = now >= next_refresh;
    if (recompute) next_refresh = after(cfg.refresh_s);
    if (now >= next_fill) {
      const bool synced = Sync(recompute);
      ForgetUncached();  // batchers of models that left the disk
      if (synced) {
        fill_backoff = 0.5;
      } else {
        spdlog::warn("edge: cache fill failed; retrying in {:.1f} s", fill_backoff);
        next_fill = after(fill_backoff);
        fill_backoff = std::min(cfg.retry_max_s, fill_backoff * 2);
      }
    }
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

}  // namespace da::edge
