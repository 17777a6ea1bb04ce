#include "infer/service.h"

#include <chrono>
#include <regex>

#include "common/error.h"

namespace da::infer {

ModelService::ModelService(Metrics& metrics, std::function<Lookup(const std::string&)> find)
    : metrics_(metrics), find_(std::move(find)) {
  metrics_.DeclareHistogram("infer_latency_seconds", "Inference request latency",
                            {0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2});
  metrics_.DeclareHistogram("infer_batch_images", "Images per forward pass",
                            {1, 2, 4, 8, 16, 32, 64, 128, 256});
}

BatchOptions ModelService::Observed(BatchOptions o) {
  o.on_batch = [this](int64_t n) { metrics_.Observe("infer_batch_images", double(n)); };
  return o;
}

// The model of a route's match: [1] the name, [2] the version (empty: none).
Lookup ModelService::Find(const httplib::Request& req) {
  const std::string name = req.matches[1], version = req.matches[2];
  if (!version.empty() && version != "1")
    return {nullptr, 404,
            "unknown version '" + version + "' of model '" + name +
                "': every model has version 1 only"};
  return find_(name);
}

std::shared_ptr<Batcher> ModelService::Require(const httplib::Request& req) {
  Lookup l = Find(req);
  if (!l.batcher) throw HttpError(l.status, l.why);
  return l.batcher;
}

std::string Endpoint(const std::string& path) {
  for (const char* route : {"/v2", "/v2/health/live", "/v2/health/ready"})
    if (path == route) return path;
  static const std::regex model(R"(/v2/models/([^/]+)(/versions/[^/]+)?(/ready|/infer)?)");
  std::smatch m;
  if (!std::regex_match(path, m, model)) return "other";
  return std::string("/v2/models/") + (m[1] == "base" ? "base" : "{model}") +
         (m[2].matched ? "/versions/{version}" : "") + m[3].str();
}

void ModelService::AddRoutes(httplib::Server& server) {
  using httplib::Request;
  using httplib::Response;
  // The server's routes, then each model's, also under versions/N.
  server.Get("/v2", [](const Request&, Response& res) {
    http::Json(res, {{"name", "deepadapter"},
                     {"version", "1"},
                     {"extensions", nlohmann::json::array({"binary_tensor_data"})}});
  });
  server.Get("/v2/health/live", [](const Request&, Response& res) {
    http::Json(res, {{"live", true}});
  });
  server.Get("/v2/health/ready", [this](const Request&, Response& res) {
    const bool ok = find_("base").batcher != nullptr;
    http::Json(res, {{"ready", ok}}, ok ? 200 : 503);
  });
  const std::string model = R"(/v2/models/([^/]+)(?:/versions/([^/]+))?)";
  server.Get(model + "/ready", [this](const Request& req, Response& res) {
    Lookup l = Find(req);  // unknown: 404; known but not loaded (503): not ready
    if (!l.batcher && l.status != 503) throw HttpError(l.status, l.why);
    http::Json(res, {{"ready", l.batcher != nullptr}}, l.batcher ? 200 : 503);
  });
  server.Get(model, [this](const Request& req, Response& res) {
    http::Json(res, ModelMetadata(req.matches[1], Require(req)->shape()));
  });
  server.Post(model + "/infer", [this](const Request& req, Response& res) {
    const auto start = std::chrono::steady_clock::now();
    auto b = Require(req);
    const std::string name = req.matches[1];
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
    std::string out = InferResponseBody(name, r, probs, b->shape().classes, &out_header);
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
}

}  // namespace da::infer