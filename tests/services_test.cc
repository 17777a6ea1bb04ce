// Integration tests of the services: real `deepadapter cloud` and `edge`
// processes on free loopback ports, spoken to over HTTP.
#include <atomic>
#include <cstring>
#include <mutex>

#include "common/sha256.h"
#include "services_util.h"

using namespace services;

TEST(Services, MatchThenDownloadWithHashCheckAndOneFetchPerMiss) {
  auto cloud = StartCloud((Tmp() / "repo1").string());
  auto edge = StartEdge(cloud->url(), (Tmp() / "state1").string(), {"--policy", "lru"});
  ASSERT_TRUE(WaitFor(*edge, "/healthz", Ready));
  json m = Post(*edge, "/v1/match", kNetContext);
  ASSERT_TRUE(m.contains("model")) << m;
  EXPECT_EQ(m["ideal"], "net");
  for (const char* k : {"url", "bytes", "sha256", "threshold", "expected", "context", "predicted",
                        "ideal_cached"})
    EXPECT_TRUE(m.contains(k)) << k;
  EXPECT_TRUE(m["predicted"].contains("download_ms") && m["predicted"].contains("energy_mj"));
  EXPECT_FALSE(m["ideal_cached"].get<bool>());  // cold cache
  // 16 concurrent downloads of the missing model: one cloud fetch.
  std::atomic<int> ok{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < 16; ++i)
    threads.emplace_back([&] {
      auto res = edge->Client().Get(m["url"].get<std::string>());
      if (res && res->status == 200 && da::Sha256Hex(res->body) == m["sha256"] &&
          res->get_header_value("ETag") == "\"" + m["sha256"].get<std::string>() + "\"")
        ++ok;
    });
  for (auto& t : threads) t.join();
  EXPECT_EQ(ok, 16);
  EXPECT_EQ(Metric(*edge, "model_fetches_total"), 1);
  // Now cached: a hit, and a conditional GET is 304.
  EXPECT_TRUE(WaitFor(*edge, "/v1/stats", [](const json& s) { return s["content"].size() == 1; }));
  EXPECT_TRUE(Post(*edge, "/v1/match", kNetContext)["ideal_cached"].get<bool>());
  auto res = edge->Client().Get(m["url"].get<std::string>(),
                                {{"If-None-Match", "\"" + m["sha256"].get<std::string>() + "\""}});
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 304);
  EXPECT_EQ(Metric(*edge, "model_fetches_total"), 1);
  // The offload share to expect: the collaborative rule's for the served
  // model in this context (validation), at most its one threshold's.
  double offload = -1, tau = -1;
  const json catalog = Get(*cloud, "/v1/catalog");
  for (const json& c : catalog["models"])
    if (c["id"] == m["model"])
      offload = c["threshold"]["val_offload_fraction"], tau = c["threshold"]["tau"];
  ASSERT_GE(offload, 0) << m["model"] << " is not in the catalog";
  const double expected = m["expected"]["offload"].get<double>();
  EXPECT_LE(expected, offload);
  EXPECT_LE(m["threshold"].get<double>(), tau);
  EXPECT_NEAR(Get(*edge, "/v1/stats")["expected_offload"].get<double>(), expected, 1e-9);
}

TEST(Services, CloudDownKeepsServingCachedModelsDegraded) {
  auto cloud = StartCloud((Tmp() / "repo2").string());
  auto edge = StartEdge(cloud->url(), (Tmp() / "state2").string(), {"--policy", "lru"});
  ASSERT_TRUE(WaitFor(*edge, "/healthz", Ready));
  json m = Post(*edge, "/v1/match", kNetContext);
  ASSERT_TRUE(WaitFor(*edge, "/v1/stats", [](const json& s) {
    return s["content"].size() == 1 && s["content"][0]["on_disk"].get<bool>();
  }));
  cloud->Kill(SIGKILL);
  ASSERT_TRUE(WaitFor(*edge, "/healthz", [](const json& h) { return h["status"] == "degraded"; }));
  json again = Post(*edge, "/v1/match", kNetContext);
  EXPECT_EQ(again["model"], m["model"]);
  EXPECT_TRUE(again["degraded"].get<bool>());
  auto res = edge->Client().Get(m["url"].get<std::string>());
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 200);
  EXPECT_EQ(da::Sha256Hex(res->body), m["sha256"]);
  // A context whose ideal is not cached gets the best cached model instead.
  json fallback =
      Post(*edge, "/v1/match",
           R"({"device": "high", "network": "wifi", "budget_ms": 0.5, "inferences": 100})");
  EXPECT_EQ(fallback["model"], m["model"]);
  EXPECT_NE(fallback["ideal"], m["model"]);
  EXPECT_TRUE(fallback["degraded"].get<bool>());
  // An uncached model cannot be fetched: a clear 503, not a hang.
  json other = Get(*edge, "/v1/models/cpu.onnx", 503);
  EXPECT_TRUE(other.contains("error"));
  // Collaborative inference runs on the edge alone.
  json r = Post(*edge, "/v2/models/base/infer", InferBody(1));
  EXPECT_EQ(r["outputs"].size(), 2u);
}

TEST(Services, SigkillAndRestartKeepStatisticsAndCache) {
  auto cloud = StartCloud((Tmp() / "repo3").string());
  const std::string state = (Tmp() / "state3").string();
  json m, before;
  {
    auto edge = StartEdge(cloud->url(), state);
    ASSERT_TRUE(WaitFor(*edge, "/healthz", Ready));
    for (int i = 0; i < 5; ++i) m = Post(*edge, "/v1/match", kNetContext);
    // utility: the next refresh caches it; statistics are saved every second.
    ASSERT_TRUE(WaitFor(*edge, "/v1/stats", [](const json& s) {
      return s["content"].size() == 1 && s["content"][0]["on_disk"].get<bool>();
    }));
    std::this_thread::sleep_for(std::chrono::milliseconds(1300));
    before = Get(*edge, "/v1/stats");
    edge->Kill(SIGKILL);
  }
  cloud->Kill(SIGKILL);  // the restarted edge must manage on its own state
  auto edge = StartEdge("http://127.0.0.1:1", state);
  json stats = Get(*edge, "/v1/stats");
  ASSERT_EQ(stats["demand"].size(), 1u);
  EXPECT_EQ(stats["demand"][0]["total"], 5);
  EXPECT_EQ(stats["content"], before["content"]);
  json again = Post(*edge, "/v1/match", kNetContext);  // from the saved catalog
  EXPECT_EQ(again["model"], m["model"]);
  EXPECT_TRUE(again["ideal_cached"].get<bool>());
  auto res = edge->Client().Get(m["url"].get<std::string>());
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 200);
  EXPECT_EQ(da::Sha256Hex(res->body), m["sha256"]);
}

TEST(Services, SixtyFourConcurrentClientsMixingRequests) {
  auto cloud = StartCloud((Tmp() / "repo4").string());
  auto edge = StartEdge(cloud->url(), (Tmp() / "state4").string());
  ASSERT_TRUE(WaitFor(*edge, "/healthz", Ready));
  std::atomic<int> ok{0}, bad{0};
  std::mutex mu;
  std::string failures;
  std::vector<std::thread> threads;
  for (int t = 0; t < 64; ++t)
    threads.emplace_back([&, t] {
      httplib::Client c = edge->Client();
      for (int i = 0; i < 6; ++i) {
        const int kind = (t + i) % 3;
        const auto start = std::chrono::steady_clock::now();
        auto res = kind == 0 ? c.Post("/v1/match", kNetContext, "application/json")
                   : kind == 1
                       ? c.Get("/v1/models/net.onnx")
                       : c.Post("/v2/models/base/infer", InferBody(1 + t % 4), "application/json");
        if (res && res->status == 200) {
          ++ok;
        } else {
          ++bad;
          std::lock_guard lock(mu);
          failures += "kind " + std::to_string(kind) + " request " + std::to_string(i) +
                      " after " + std::to_string(Seconds(start)) + " s: " + Describe(res) + "\n";
        }
      }
    });
  for (auto& t : threads) t.join();
  EXPECT_EQ(bad, 0) << failures;
  EXPECT_EQ(ok, 64 * 6);
  // Dynamic batching put concurrent requests together.
  EXPECT_GT(Metric(*edge, "infer_batch_images_count"), 0);
  EXPECT_LT(Metric(*edge, "infer_batch_images_count"), 128);
}

TEST(Services, OpenInferenceProtocolClientAndBadInput) {
  auto cloud = StartCloud((Tmp() / "repo5").string());
  auto edge = StartEdge(cloud->url(), (Tmp() / "state5").string());
  ASSERT_TRUE(WaitFor(*edge, "/healthz", Ready));
  EXPECT_EQ(Get(*edge, "/v2/health/ready")["ready"], true);
  json meta = Get(*edge, "/v2/models/base");
  EXPECT_EQ(meta["inputs"][0]["shape"], json({-1, 1, 28, 28}));
  json r = Post(*edge, "/v2/models/base/infer", InferBody(3));
  EXPECT_EQ(r["id"], "1");
  EXPECT_EQ(r["model_name"], "base");
  ASSERT_EQ(r["outputs"].size(), 2u);
  const json& probs =
      r["outputs"][0]["name"] == "probabilities" ? r["outputs"][0] : r["outputs"][1];
  EXPECT_EQ(probs["shape"], json({3, 10}));
  double sum = 0;
  for (int k = 0; k < 10; ++k) sum += probs["data"][k].get<double>();
  EXPECT_NEAR(sum, 1.0, 1e-4);
  // The cloud's base model answers the same.
  EXPECT_EQ(Post(*cloud, "/v2/models/base/infer", InferBody(3))["outputs"], r["outputs"]);

  const std::vector<std::pair<std::string, std::string>> bad_posts = {
      {"/v1/match", "{not json"},
      {"/v1/match", "[1, 2]"},
      {"/v1/match", R"({"device": "mid", "network": "4g", "inferences": 100})"},
      {"/v1/match", R"({"device": "mid", "network": "4g", "budget_ms": -5, "inferences": 100})"},
      {"/v1/match",
       R"({"device": "mid", "network": "4g", "budget_ms": "fast", "inferences": 100})"},
      {"/v1/match", R"({"device": "phone", "network": "4g", "budget_ms": 5, "inferences": 100})"},
      {"/v1/match",
       R"({"device": "mid", "network": "4g", "budget_ms": 5, "inferences": 1, "x": 1})"},
      {"/v2/models/base/infer",
       R"({"inputs": [{"name": "input", "shape": [1, 5], "datatype": "FP32", "data": [1,2,3,4,5]}]})"},
      {"/v2/models/base/infer",
       R"({"inputs": [{"name": "input", "shape": [1, 784], "datatype": "BOOL", "data": []}]})"},
      {"/v1/cache/refresh?x=1", "{}"}};
  for (const auto& [path, body] : bad_posts) {
    auto res = edge->Client().Post(path, body, "application/json");
    ASSERT_TRUE(res) << path;
    if (path.starts_with("/v1/cache")) continue;  // not bad: parameters are ignored
    EXPECT_GE(res->status, 400) << path << " " << body;
    EXPECT_LT(res->status, 500) << path << " " << body;
    EXPECT_TRUE(json::parse(res->body, nullptr, false).contains("error")) << res->body;
  }
  for (const char* path : {"/v1/models/nope.onnx", "/v1/models/..%2F..%2Fetc%2Fpasswd.onnx",
                           "/v1/models/%2e%2e.onnx", "/v1/models/../state.db", "/v1/probe?bytes=-1",
                           "/v1/probe?bytes=999999999999", "/v1/probe?bytes=12abc", "/nowhere"}) {
    auto res = edge->Client().Get(path);
    ASSERT_TRUE(res) << path;
    EXPECT_GE(res->status, 400) << path;
    EXPECT_LT(res->status, 500) << path;
    EXPECT_TRUE(json::parse(res->body, nullptr, false).contains("error")) << path << res->body;
  }
  // An oversized body: 413, and the server stays up.
  auto big = edge->Client().Post("/v1/match", std::string(9 << 20, ' '), "application/json");
  if (big) {
    EXPECT_EQ(big->status, 413);
  }
  auto probe = edge->Client().Get("/v1/probe?bytes=1000");
  ASSERT_TRUE(probe);
  EXPECT_EQ(probe->status, 200);
  EXPECT_EQ(probe->body.size(), 1000u);
}

TEST(Services, UnservableContextsBecomePruneRequestsThatAddABranch) {
  auto cloud = StartCloud((Tmp() / "repo6").string());
  auto edge = StartEdge(cloud->url(), (Tmp() / "state6").string());
  ASSERT_TRUE(WaitFor(*edge, "/healthz", Ready));
  const size_t before = Get(*cloud, "/v1/catalog")["models"].size();
  // Nothing in the family meets 1 ms on 3G: flagged, and forwarded to the cloud.
  json m = Post(*edge, "/v1/match",
                R"({"device": "low", "network": "3g", "budget_ms": 1, "inferences": 100})");
  EXPECT_FALSE(m["meets_budget"].get<bool>());
  EXPECT_TRUE(WaitFor(*edge, "/v1/stats",
                      [](const json& s) { return s["prune_requests_forwarded"] == 1; }));
  EXPECT_TRUE(WaitFor(
      *cloud, "/v1/catalog", [&](const json& c) { return c["models"].size() == before + 1; },
      kPruneWaitSeconds));
  json added = Get(*cloud, "/v1/catalog")["models"].back();
  // The request is marked done just after its model enters the catalog.
  const std::string request = "/v1/prune-requests/" + added["id"].get<std::string>();
  EXPECT_TRUE(WaitFor(*cloud, request, [](const json& s) { return s["state"] == "done"; }));
  json status = Get(*cloud, request);
  EXPECT_EQ(status["state"], "done");
  EXPECT_EQ(status["model"], added["id"]);
  // The edge learns the new branch from the catalog (it counts branches only:
  // the base is not matched, so `before` = its old count + 1).
  EXPECT_TRUE(
      WaitFor(*edge, "/v1/stats", [&](const json& s) { return s["catalog_models"] == before; }));
  // Same context again: deduplicated by the cloud.
  json dup = Post(*cloud, "/v1/prune-requests",
                  R"({"device": "low", "network": "3g", "budget_ms": 1, "inferences": 100})");
  EXPECT_EQ(dup["id"], added["id"]);
  Get(*cloud, "/v1/prune-requests/pr-nonexistent", 404);
  Post(*cloud, "/v1/prune-requests", R"({"device": "low"})", 400);
  // Prune requests survive a restart of the cloud.
  cloud.reset();
  cloud = StartCloud((Tmp() / "repo6").string());
  EXPECT_EQ(Get(*cloud, "/v1/prune-requests/" + added["id"].get<std::string>())["state"], "done");
}

// Endpoints that change state take a bearer token when one is set; the edge
// sends the cloud's with the prune requests it forwards.
TEST(Services, StateChangingEndpointsTakeTheToken) {
  const std::string token = "test-token-0123456789";
  auto cloud = StartCloud((Tmp() / "repo-token").string(), {"--token", token});
  auto edge = StartEdge(cloud->url(), (Tmp() / "state-token").string(),
                        {"--token", token, "--cloud-token", token});
  ASSERT_TRUE(WaitFor(*edge, "/healthz", Ready));
  const httplib::Headers auth = {{"Authorization", "Bearer " + token}};
  Post(*edge, "/v1/cache/refresh", "{}", 401);
  auto res = edge->Client().Post("/v1/cache/refresh", auth, "{}", "application/json");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 200) << res->body;
  const std::string ctx =
      R"({"device": "low", "network": "3g", "budget_ms": 1, "inferences": 100})";
  Post(*cloud, "/v1/prune-requests", ctx, 401);
  Post(*edge, "/v1/match", ctx);  // nothing meets 1 ms on 3G: forwarded, with the token
  EXPECT_TRUE(WaitFor(*edge, "/v1/stats",
                      [](const json& s) { return s["prune_requests_forwarded"] == 1; }));
}

// The Open Inference Protocol's REST routes, as KServe and Triton clients call
// them; other models and versions are 404 with the protocol's error body.
TEST(Services, OpenInferenceProtocolRoutes) {
  auto cloud = StartCloud((Tmp() / "repo-oip").string());
  ASSERT_TRUE(
      WaitFor(*cloud, "/v2/health/ready", [](const json& j) { return j["ready"] == true; }));
  EXPECT_EQ(Get(*cloud, "/v2")["name"], "deepadapter");
  EXPECT_EQ(Get(*cloud, "/v2/health/live")["live"], true);
  EXPECT_EQ(Get(*cloud, "/v2/models/base/ready")["ready"], true);
  EXPECT_EQ(Get(*cloud, "/v2/models/base/versions/1/ready")["ready"], true);
  EXPECT_EQ(Get(*cloud, "/v2/models/base/versions/1"), Get(*cloud, "/v2/models/base"));
  const json a = Post(*cloud, "/v2/models/base/infer", InferBody(2));
  const json b = Post(*cloud, "/v2/models/base/versions/1/infer", InferBody(2));
  EXPECT_EQ(a["outputs"], b["outputs"]);
  EXPECT_TRUE(Get(*cloud, "/v2/models/other", 404).contains("error"));
  EXPECT_TRUE(Get(*cloud, "/v2/models/base/versions/2/ready", 404).contains("error"));
  EXPECT_TRUE(Post(*cloud, "/v2/models/other/infer", InferBody(1), 404).contains("error"));
  EXPECT_EQ(Get(*cloud, "/v2")["extensions"], json::array({"binary_tensor_data"}));
  // Every model of the repository by name, each on its own queue: the branch
  // answers differ from the base's somewhere (another model), and the
  // versions/1 route gives the same.
  EXPECT_EQ(Get(*cloud, "/v2/models/net/ready")["ready"], true);
  EXPECT_EQ(Get(*cloud, "/v2/models/net/versions/1")["name"], "net");
  const json net = Post(*cloud, "/v2/models/net/infer", InferBody(8));
  EXPECT_EQ(net["model_name"], "net");
  EXPECT_EQ(net["outputs"],
            Post(*cloud, "/v2/models/net/versions/1/infer", InferBody(8))["outputs"]);
  EXPECT_NE(net["outputs"], Post(*cloud, "/v2/models/base/infer", InferBody(8))["outputs"]);
  EXPECT_TRUE(Get(*cloud, "/v2/models/net/versions/2", 404).contains("error"));
  EXPECT_TRUE(Get(*cloud, "/v2/models/..", 404).contains("error"));
  // The edge: a model in its cache by name, with the cloud's answers; one it
  // does not hold is a 404 that says so.
  auto edge = StartEdge(cloud->url(), (Tmp() / "state-oip").string(), {"--policy", "lru"});
  ASSERT_TRUE(WaitFor(*edge, "/healthz", Ready));
  EXPECT_EQ(Get(*edge, "/v2/models/net/ready", 404)["error"].get<std::string>().find(
                "not in this edge's cache") != std::string::npos,
            true);
  Post(*edge, "/v1/match", kNetContext);  // LRU admits the ideal, "net"
  ASSERT_TRUE(WaitFor(*edge, "/v1/stats", [](const json& s) {
    return s["content"].size() == 1 && s["content"][0]["on_disk"].get<bool>();
  }));
  EXPECT_EQ(Get(*edge, "/v2/models/net/ready")["ready"], true);
  EXPECT_EQ(Post(*edge, "/v2/models/net/infer", InferBody(8))["outputs"], net["outputs"]);
  EXPECT_TRUE(Post(*edge, "/v2/models/cpu/infer", InferBody(1), 404).contains("error"));
  EXPECT_GE(Metric(*edge, "infer_latency_seconds_count"), 1);
  // Binary tensors: the same image as raw bytes after a JSON header gives the
  // same answer, in binary when asked.
  std::vector<int> px(784);
  std::string raw(784, '\0');
  for (int i = 0; i < 784; ++i) px[size_t(i)] = (i * 7) % 256, raw[size_t(i)] = char((i * 7) % 256);
  const json as_json = Post(
      *cloud, "/v2/models/base/infer",
      json{{"inputs",
            {{{"name", "input"}, {"shape", {1, 1, 28, 28}}, {"datatype", "UINT8"}, {"data", px}}}}}
          .dump());
  const std::string head =
      json{{"inputs",
            {{{"name", "input"},
              {"shape", {1, 1, 28, 28}},
              {"datatype", "UINT8"},
              {"parameters", {{"binary_data_size", 784}}}}}},
           {"outputs", {{{"name", "label"}, {"parameters", {{"binary_data", true}}}}}}}
          .dump();
  auto res = cloud->Client().Post(
      "/v2/models/base/infer", {{"Inference-Header-Content-Length", std::to_string(head.size())}},
      head + raw, "application/octet-stream");
  ASSERT_TRUE(res);
  ASSERT_EQ(res->status, 200) << res->body;
  const size_t n = std::stoul(res->get_header_value("Inference-Header-Content-Length"));
  ASSERT_EQ(res->body.size(), n + 8);
  int64_t label;
  std::memcpy(&label, res->body.data() + n, 8);
  EXPECT_EQ(label, as_json["outputs"][0]["data"][0].get<int64_t>());
  // A header length past the body is a 400.
  res =
      cloud->Client().Post("/v2/models/base/infer", {{"Inference-Header-Content-Length", "999999"}},
                           head + raw, "application/octet-stream");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 400);
}
