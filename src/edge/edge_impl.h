#pragma once
// The edge's parts, private to src/edge. One mutex `mu` guards the catalog,
// the cache's content and the on-disk index; it is never held during disk or
// network I/O. `io_mu` orders the store's file changes (put, remove) with the
// on-disk index, so a model is indexed exactly while its file is there.
//   edge.cc         construction, HTTP routes (match, download, stats, probe)
//   edge_worker.cc  the background worker: catalog, base model, cache fills
//                   and removals, statistics, prune-request forwarding
//   cloud_link.cc   calls to the cloud and its health
#include <condition_variable>
#include <future>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "common/http.h"
#include "common/static_files.h"
#include "context/context.h"
#include "edge/cache.h"
#include "edge/cloud_link.h"
#include "edge/edge.h"
#include "edge/store.h"
#include "infer/service.h"
#include "nn/dataset.h"

namespace da::edge {

double WallSeconds();

struct Edge::Impl {
  explicit Impl(const EdgeConfig& c);
  ~Impl();

  // edge.cc: routes.
  void Routes();
  nlohmann::json MatchRequest(nlohmann::json body);
  void Download(const httplib::Request& req, httplib::Response& res, const std::string& id);
  nlohmann::json Stats();
  nlohmann::json Reference();
  nlohmann::json Samples(int64_t offset, int64_t count);
  void WebRoutes();

  // edge_worker.cc.
  // The model file for `id` (fetched from the cloud once however many ask at
  // the same time) and kept when the cache wants it or has room. HttpError(503)
  // when the cloud cannot give it.
  std::string Fetch(const std::string& id, const std::string& sha);
  void Keep(const std::string& id, const std::string& sha, const std::string& data);
  // Makes the disk follow the cache's content (recomputed first when
  // `recompute`): fetches what joined, then removes what left once everything
  // that joined is on disk. Does nothing while the cloud is down, so an outage
  // never shrinks the cached set. False when a fetch failed.
  bool Sync(bool recompute);
  bool SetCatalog(const nlohmann::json& j);  // false when `j` is not a catalog
  void LoadCatalog();
  void LoadBase();
  void ForwardPruneRequests();
  void SaveDemand();
  void Loop();

  EdgeConfig cfg;
  context::Profiles profiles;
  Store store;
  Metrics metrics;
  CloudLink cloud;
  infer::ModelService model_service{metrics,
                                    [this](const std::string& name) { return FindModel(name); }};
  http::Server server{cfg.server};
  int port = 0;
  std::string probe_bytes;

  std::mutex mu;
  std::vector<CatalogModel> models;               // branches (browsers run these)
  std::map<std::string, nlohmann::json> records;  // id -> catalog record, base included
  int64_t input_bytes = 784;                      // one image as uploaded (the base's input)
  ModelCache cache;
  std::map<std::string, std::string> on_disk;                       // id -> sha256 of stored files
  std::map<std::string, std::shared_future<std::string>> fetching;  // id -> file content
  std::map<std::string, nlohmann::json> prune_queue;  // context key -> context, to forward
  std::set<std::string> prune_sent;
  std::shared_ptr<infer::Batcher> base;
  std::string base_onnx_sha;  // base.onnx in the state directory, once verified
  bool stopping = false;
  std::condition_variable cv;

  std::mutex io_mu;
  std::thread worker;

  http::StaticFiles web;
  http::AssetCache model_assets{64 << 20};  // model files with their compressed forms
  struct SampleSet {
    std::string dataset;
    std::vector<std::string> classes;
    nn::Images test;
  };
  std::mutex samples_mu;
  std::shared_ptr<const SampleSet> samples;  // test images, loaded on first use

  std::shared_ptr<infer::Batcher> Base() {
    std::lock_guard lock(mu);
    return base;
  }

  // edge.cc: a model for the Open Inference Protocol routes: the base, or a
  // cached branch (its batcher made on first request, dropped with the file).
  infer::Lookup FindModel(const std::string& name);
  void ForgetUncached();
  std::mutex models_mu;
  std::map<std::string, std::pair<std::string, std::shared_ptr<infer::Batcher>>>
      branches;  // id -> (sha256, batcher)
};

}  // namespace da::edge
