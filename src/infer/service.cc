#include "infer/service.h"

#include <chrono>

#include "common/error.h"

namespace da::infer {

BaseService::BaseService(Metrics& metrics, std::function<std::shared_ptr<Batcher>()> base,
                         std::string missing)
    : metrics_(metrics), base_(std::move(base)), missing_(std::move(missing)) {
  metrics_.DeclareHistogram("infer_latency_seconds", "Base-model inference request latency",
                            {0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2});
  metrics_.DeclareHistogram("infer_batch_images", "Images per base-model forward pass",
                            {1, 2, 4, 8, 16, 32, 64, 128, 256});
}

BatchOptions BaseService::Observed(BatchOptions o) {
  o.on_batch = [this](int64_t n) { metrics_.Observe("infer_batch_images", double(n)); };
  return o;
}

std::shared_ptr<Batcher> BaseService::Require() {
  auto b = base_();
  if (!b) throw HttpError(503, missing_);
  return b;
}

std::string Endpoint(const std::string& path) {
  for (const char* route : {"/v2", "/v2/health/live", "/v2/health/ready", "/v2/models/base",
                            "/v2/models/base/ready", "/v2/models/base/infer"})
    if (path == route) return path;
  return path.starts_with("/v2/models/base/versions/1") ? "/v2/models/base/versions/1{...}"
                                                        : "other";
}

void BaseService::AddRoutes(httplib::Server& server) {
  using httplib::Request;
  using httplib::Response;
  // Server and base-model routes; a model's routes also under versions/1.
  server.Get("/v2", [](const Request&, Response& res) {
    http::Json(
        res, {{"name", "deepadapter"}, {"version", "1"}, {"extensions", nlohmann::json::array()}});
  });
  server.Get("/v2/health/live", [](const Request&, Response& res) {
    http::Json(res, {{"live", true}});
  });
  auto ready = [this](const Request&, Response& res) {
    const bool ok = base_() != nullptr;
    http::Json(res, {{"ready", ok}}, ok ? 200 : 503);
  };
  server.Get("/v2/health/ready", ready);
  server.Get(R"(/v2/models/base(?:/versions/1)?/ready)", ready);
  server.Get(R"(/v2/models/base(?:/versions/1)?)", [this](const Request&, Response& res) {
    http::Json(res, ModelMetadata("base", Require()->shape()));
  });
  server.Post(
      R"(/v2/models/base(?:/versions/1)?/infer)", [this](const Request& req, Response& res) {
        const auto start = std::chrono::steady_clock::now();
        auto b = Require();
        std::optional<size_t> header;
        if (req.has_header("Inference-Header-Content-Length")) {
          const std::string v = req.get_header_value("Inference-Header-Content-Length");
          if (v.empty() || v.size() > 12 || v.find_first_not_of("0123456789") != std::string::npos)
            throw HttpError(400, "Inference-Header-Content-Length must be a byte count");
          header = std::stoull(v);
        }
        InferRequest r = ParseInferRequest(req.body, b->shape(), 1024, header);
        std::future<std::vector<float>> done;
        try {
          done = b->Submit(std::move(r.pixels), r.count);
        } catch (const Overloaded& e) {
          res.set_header("Retry-After", "1");
          throw HttpError(503, e.what());
        }
        if (done.wait_for(std::chrono::seconds(30)) != std::future_status::ready) {
          res.set_header("Retry-After", "5");
          throw HttpError(503, "inference did not finish within 30 s; try again later");
        }
        std::vector<float> probs = done.get();
        std::optional<size_t> out_header;
        std::string out = InferResponseBody("base", r, probs, b->shape().classes, &out_header);
        if (out_header) {
          res.set_header("Inference-Header-Content-Length", std::to_string(*out_header));
          res.set_content(std::move(out), "application/octet-stream");
        } else {
          res.set_content(std::move(out), "application/json");
        }
        metrics_.Observe(
            "infer_latency_seconds",
            std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
      });
  // Any other model or version (after the base's routes: the first match
  // wins): the protocol's error body, 404.
  auto unknown = [](const Request& req, Response&) {
    throw HttpError(404, "unknown model or version '" + req.matches[1].str() +
                             "': this server serves 'base' (version 1)");
  };
  server.Get(R"(/v2/models/([^/]+(?:/versions/[^/]+)?)(?:/ready)?)", unknown);
  server.Post(R"(/v2/models/([^/]+(?:/versions/[^/]+)?)/infer)", unknown);
}

}  // namespace da::infer