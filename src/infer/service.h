#pragma once
// The Open Inference Protocol's REST routes, shared by the cloud and the edge:
// GET /v2, /v2/health/live, /v2/health/ready; for every model the server holds
// (the base model, and the edge's cached or the cloud's stored branches) by
// name, also under versions/1: GET /v2/models/NAME, GET .../ready and
// POST .../infer (JSON or binary tensors); with their metrics (request latency,
// images per forward pass). Each model runs on its own batch queue.
#include <functional>
#include <memory>
#include <string>

#include "common/http.h"
#include "infer/batcher.h"

namespace da::infer {

// The metrics label of an Open Inference Protocol path: the route with model
// names other than "base" as {model} (a bounded set), or "other".
std::string Endpoint(const std::string& path);

// What a server's lookup gives for a model name: its batcher, or the HTTP
// status and message why not (404: not held here; 503: not loaded yet).
struct Lookup {
  std::shared_ptr<Batcher> batcher;
  int status = 404;
  std::string why;
};

class ModelService {
 public:
  // `find(name)` for any name in a URL (validated by the caller's lookup).
  // The server is ready when find("base") has a batcher. Declares the metrics
  // in `metrics`.
  ModelService(Metrics& metrics, std::function<Lookup(const std::string& name)> find);
  void AddRoutes(httplib::Server& server);
  // `o` with an on_batch that records batch sizes.
  BatchOptions Observed(BatchOptions o);

 private:
  Lookup Find(const httplib::Request& req);
  std::shared_ptr<Batcher> Require(const httplib::Request& req);
  Metrics& metrics_;
  std::function<Lookup(const std::string&)> find_;
};

}  // namespace da::infer
