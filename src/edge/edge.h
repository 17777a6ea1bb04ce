#pragma once
// The edge service: matches each visitor's context to a branch model, serves
// model files from its cache (fetching misses from the cloud), answers for the
// browser with the base model (collaborative inference, dynamic batching), and
// forwards contexts the family cannot serve to the cloud as prune requests.
//   POST /v1/match                  body: the browser's context -> chosen model
//   GET  /v1/models/{id}.onnx       from the cache (ETag, immutable); misses fetched
//                                   (base.onnx: the whole model, kept in the state)
//   POST /v2/models/base/infer      Open Inference Protocol; GET /v2/models/base,
//                                   /v2/health/ready
//   POST /v1/cache/refresh          recompute the cache content now
//   GET  /v1/probe?bytes=N          N bytes for bandwidth measurement (capped)
//   GET  /healthz, /metrics, /v1/stats
//   GET  /v1/reference              the model browsers time to measure their device
//   GET  /v1/samples?offset=&count= test images with labels (the demo's grid)
//   GET  /, /dashboard, /app/, /sdk/, /ort/, /lib/   the browser's files
// State (cache index, request statistics, last catalog) lives in SQLite under
// the state directory: a restart keeps it. With the cloud unreachable (a
// heartbeat notices within seconds) the edge keeps matching among what it
// knows and serving what it caches, marks answers degraded, never waits on the
// cloud for a browser, and never shrinks the cached set until it is back.
#include <memory>
#include <string>

#include "common/http.h"
#include "infer/service.h"

namespace da::edge {

struct EdgeConfig {
  http::ServerOptions server;
  std::string cloud_url;          // e.g. http://127.0.0.1:8081
  std::string cloud_token;        // the cloud's token, sent with prune requests
  int64_t cache_bytes = 4 << 20;  // model cache capacity
  std::string state_dir;
  std::string policy = "utility";  // utility, lru, lfu
  double half_life_s = 600;        // decay of request counts
  double refresh_s = 5;            // cache content recomputed this often
  double catalog_refresh_s = 30;   // catalog re-read from the cloud this often
  double retry_max_s = 30;         // backoff cap of failed cache fills
  double heartbeat_s = 1;          // the cloud's health checked this often
  double prune_interval_s = 30;    // at most one prune request forwarded per interval
  int64_t probe_max_bytes = 8 << 20;
  // Matching (edge/cache.h): a model within this much validation accuracy of
  // the most accurate one in budget wins when faster; and what one fallback
  // costs beyond the network: the page's own request work at slowdown 1
  // (profiles/workload.json "page"), the edge's wait for a batch and a
  // batch-1 pass of the base model (2 ms + 0.57 ms measured, docs/RESULTS.md).
  double match_margin = 0.0025;
  double fallback_page_ms = 2.7, fallback_server_ms = 3;
  infer::BatchOptions batching;
  std::string profiles_dir;
  std::string web_dir;    // web/ of the repo: demo page, SDK, onnxruntime-web ("" : none)
  std::string data_dir;   // dataset whose test images /v1/samples serves ("" : none)
  void Validate() const;  // UserError when out of range
};

class Edge {
 public:
  // Opens the state (verifying cached files), binds, starts the background
  // worker (catalog, base model, cache refresh). UserError when it cannot.
  explicit Edge(const EdgeConfig& config);
  ~Edge();
  int port() const;
  void Run();   // serves until Stop()
  void Stop();  // from any thread

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace da::edge
