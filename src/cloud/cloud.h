#pragma once
// The cloud service: the model repository over HTTP, base-model inference, and
// prune requests (a context the family serves badly gets its own branch model,
// made by a background worker and added to the repository atomically).
//   GET  /v1/catalog                     the repository's catalog
//   GET  /v1/models/{id}.onnx            model file (ETag = sha256, immutable)
//   GET  /v1/models/{id}.pt              server-side weights (for the edge's base model)
//   POST /v2/models/base/infer           Open Inference Protocol, base model
//   GET  /v2/models/base, /v2/health/ready
//   POST /v1/prune-requests              body: a context; 202 queued (200 when known)
//   GET  /v1/prune-requests/{id}         queued / running (progress) / done (model) / failed (reason)
//   GET  /healthz, /metrics
#include <memory>
#include <string>

#include "common/http.h"
#include "infer/service.h"
#include "prune/search.h"

namespace da::cloud {

struct CloudConfig {
  http::ServerOptions server;
  std::string repo_dir;     // the model repository (created when absent)
  std::string family_dir;   // optional: a family (prune's output) imported at start
  infer::BatchOptions batching;
  // Prune requests: what the search needs.
  std::string profiles_dir, table_path, standard_path, data_dir;
  prune::SearchOptions search;  // search.train.limit: fine-tune on the first N images
  int max_pending = 16;     // queued prune requests; more are refused (503)
};

class Cloud {
 public:
  // Opens the repository (reporting corrupt models), imports the family, loads
  // the base model, binds. UserError when any of that fails.
  explicit Cloud(const CloudConfig& config);
  ~Cloud();  // stops serving and abandons a running prune request
  int port() const;
  void Run();   // serves until Stop()
  void Stop();  // from any thread

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace da::cloud
