#pragma once
// The base model's Open Inference Protocol routes, shared by the cloud and the
// edge: GET /v2/health/ready, GET /v2/models/base, POST /v2/models/base/infer,
// with their metrics (request latency, images per forward pass).
#include <functional>
#include <memory>
#include <string>

#include "common/http.h"
#include "infer/batcher.h"

namespace da::infer {

// The metrics label of an Open Inference Protocol path (a route, or "other").
std::string Endpoint(const std::string& path);

class BaseService {
 public:
  // `base()` returns the model, or nullptr while there is none (503 saying
  // `missing`). Declares the metrics in `metrics`.
  BaseService(Metrics& metrics, std::function<std::shared_ptr<Batcher>()> base,
              std::string missing);
  void AddRoutes(httplib::Server& server);
  // `o` with an on_batch that records batch sizes.
  BatchOptions Observed(BatchOptions o);

 private:
  std::shared_ptr<Batcher> Require();
  Metrics& metrics_;
  std::function<std::shared_ptr<Batcher>()> base_;
  std::string missing_;
};

}  // namespace da::infer
