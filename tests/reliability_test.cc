// Reliability of the services (issue 16): outages, a frozen cloud, hostile
// HTTP, a full inference queue. Real processes, as in services_test.cc;
// docs/RELIABILITY.md lists what each test guarantees.
#include <atomic>

#include "common/sha256.h"
#include "services_util.h"

using namespace services;

// Reliability §1: an outage must not shrink the cached set, under any policy,
// and what the edge reports cached stays downloadable.
TEST(Services, OutageNeverShrinksTheCache) {
  for (const std::string policy : {"lru", "lfu", "utility"}) {
    SCOPED_TRACE(policy);
    auto cloud = StartCloud((Tmp() / ("repo-outage-" + policy)).string());
    const json catalog = Catalog(*cloud);
    const int64_t net = Record(catalog, "net")["onnx"]["bytes"],
                  cpu = Record(catalog, "cpu")["onnx"]["bytes"];
    // Room for either branch, not both: admitting one evicts the other.
    auto edge = StartEdge(cloud->url(), (Tmp() / ("state-outage-" + policy)).string(),
                          {"--policy", policy, "--cache-bytes",
                           std::to_string(std::max(net, cpu) + std::min(net, cpu) / 2)});
    ASSERT_TRUE(WaitFor(*edge, "/healthz", Ready));
    json m = Post(*edge, "/v1/match", kNetContext);
    ASSERT_EQ(m["model"], "net");
    auto got = edge->Client().Get("/v1/models/net.onnx");
    ASSERT_TRUE(got && got->status == 200);
    ASSERT_TRUE(
        WaitFor(*edge, "/v1/stats", [](const json& s) { return s["cached"] == json{"net"}; }));
    cloud->Kill(SIGKILL);
    ASSERT_TRUE(
        WaitFor(*edge, "/healthz", [](const json& h) { return h["status"] == "degraded"; }));
    // Visitors now want the other branch, again and again (utility: its demand
    // overtakes; lru/lfu: each miss would admit it).
    for (int i = 0; i < 30; ++i) {
      json other = Post(*edge, "/v1/match", kCpuContext);
      EXPECT_EQ(other["model"], "net");  // the only cached model, marked degraded
      EXPECT_TRUE(other["degraded"].get<bool>());
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(800));  // refreshes run (--refresh 0.3)
    EXPECT_TRUE(Cached(*edge, "net"));
    auto res = edge->Client().Get("/v1/models/net.onnx");
    ASSERT_TRUE(res);
    EXPECT_EQ(res->status, 200);
    EXPECT_EQ(da::Sha256Hex(res->body), m["sha256"]);
    // The 503 for an uncached model names no internal address.
    auto miss = edge->Client().Get("/v1/models/cpu.onnx");
    ASSERT_TRUE(miss);
    EXPECT_EQ(miss->status, 503);
    EXPECT_EQ(miss->body.find("127.0.0.1"), std::string::npos) << miss->body;
  }
}

// A frozen cloud: downloads fail within the read timeout, the heartbeat marks
// the edge degraded within seconds, and then nothing waits on the cloud.
TEST(Services, FrozenCloudIsNoticedAndNeverBlocksBrowsers) {
  auto cloud = StartCloud((Tmp() / "repo-frozen").string());
  auto edge = StartEdge(cloud->url(), (Tmp() / "state-frozen").string());
  ASSERT_TRUE(WaitFor(*edge, "/healthz", Ready));
  ASSERT_TRUE(WaitFor(*edge, "/healthz", [](const json& h) { return h["status"] == "ok"; }));
  cloud->Signal(SIGSTOP);
  auto start = std::chrono::steady_clock::now();
  auto res = edge->Client().Get("/v1/models/cpu.onnx");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 503);
  EXPECT_LT(Seconds(start), 8);
  start = std::chrono::steady_clock::now();
  ASSERT_TRUE(WaitFor(*edge, "/healthz", [](const json& h) { return h["status"] == "degraded"; }));
  EXPECT_LT(Seconds(start), 8);
  start = std::chrono::steady_clock::now();
  res = edge->Client().Get("/v1/models/cpu.onnx");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 503);
  EXPECT_LT(Seconds(start), 0.5);
  json m = Post(*edge, "/v1/match", kNetContext);
  EXPECT_TRUE(m["degraded"].get<bool>());
  cloud->Signal(SIGCONT);
  EXPECT_TRUE(WaitFor(*edge, "/healthz", [](const json& h) { return h["status"] == "ok"; }));
  res = edge->Client().Get("/v1/models/cpu.onnx");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 200);
}

// A cloud answering garbage (200s whose bodies are not what was asked): the
// edge keeps its catalog, serves its cached model intact, and sends no
// browser a byte it did not verify.
TEST(Services, GarbageFromTheCloudIsRefusedAndTheEdgeKeepsServing) {
  auto cloud = StartCloud((Tmp() / "repo-garbage").string());
  const std::string state = (Tmp() / "state-garbage").string();
  json m;
  {
    auto edge = StartEdge(cloud->url(), state);
    ASSERT_TRUE(WaitFor(*edge, "/healthz", Ready));
    m = Post(*edge, "/v1/match", kNetContext);
    auto res = edge->Client().Get(m["url"].get<std::string>());
    ASSERT_TRUE(res && res->status == 200);
    ASSERT_TRUE(Cached(*edge, m["model"]));
  }
  httplib::Server garbage;
  std::atomic<int> asked{0};
  auto answer = [&](const httplib::Request&, httplib::Response& res) {
    const int n = ++asked;
    res.set_content(std::string(1, '\0') + R"({"models": [{"id": "../x"}]})" +
                        std::string(static_cast<size_t>(n % 7), 'z'),
                    n % 2 ? "application/json" : "application/octet-stream");
  };
  garbage.Get(".*", answer);
  garbage.Post(".*", answer);
  const int port = garbage.bind_to_any_port("127.0.0.1");
  std::thread serving([&] { garbage.listen_after_bind(); });
  {
    auto edge = StartEdge("http://127.0.0.1:" + std::to_string(port), state);
    ASSERT_TRUE(WaitFor(*edge, "/healthz", Ready));
    const auto start = std::chrono::steady_clock::now();
    while (Seconds(start) < 3) {  // several catalog refreshes and cache fills
      json again = Post(*edge, "/v1/match", kNetContext);
      EXPECT_EQ(again["model"], m["model"]);
      auto res = edge->Client().Get(m["url"].get<std::string>());
      ASSERT_TRUE(res);
      EXPECT_EQ(res->status, 200);
      EXPECT_EQ(da::Sha256Hex(res->body), m["sha256"]);
      // The branch it never had: refused, not garbage.
      res = edge->Client().Get("/v1/models/cpu.onnx");
      ASSERT_TRUE(res);
      EXPECT_EQ(res->status, 503) << res->body.substr(0, 200);
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
    EXPECT_GT(asked, 0);
    EXPECT_TRUE(Cached(*edge, m["model"]));
    EXPECT_EQ(Get(*edge, "/v1/stats")["catalog_models"], 2);
  }
  garbage.stop();
  serving.join();
}

// A model fetched for a visitor is kept when there is room (no second fetch),
// and the base model's file is served from the edge's state.
TEST(Services, FetchedModelsAreKeptAndTheBaseIsServedLocally) {
  auto cloud = StartCloud((Tmp() / "repo-keep").string());
  auto edge = StartEdge(cloud->url(), (Tmp() / "state-keep").string(), {"--refresh", "60"});
  ASSERT_TRUE(WaitFor(*edge, "/healthz", Ready));
  auto res = edge->Client().Get("/v1/models/cpu.onnx");
  ASSERT_TRUE(res && res->status == 200);
  EXPECT_TRUE(Cached(*edge, "cpu"));  // before any refresh
  res = edge->Client().Get("/v1/models/cpu.onnx");
  ASSERT_TRUE(res && res->status == 200);
  EXPECT_EQ(Metric(*edge, "model_fetches_total"), 1);
  const json base = Record(Catalog(*cloud), "base");
  const std::string cloud_models = "http_requests_total{endpoint=\"GET /v1/models/{id}\"";
  for (int i = 0; i < 100; ++i) {  // the worker stores base.onnx after loading the base
    res = edge->Client().Get("/v1/models/base.onnx");
    if (res && res->status == 200) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  const double before = Metric(*cloud, cloud_models);
  for (int i = 0; i < 3; ++i) {
    res = edge->Client().Get("/v1/models/base.onnx");
    ASSERT_TRUE(res);
    ASSERT_EQ(res->status, 200);
    EXPECT_EQ(da::Sha256Hex(res->body), base["onnx"]["sha256"]);
  }
  EXPECT_EQ(Metric(*cloud, cloud_models), before);
}

// Hostile HTTP: compressed bodies, bodies past the limit however framed,
// ranges, and slow clients.
TEST(Services, HostileRequestsAreBounded) {
  auto cloud = StartCloud((Tmp() / "repo-hostile").string());
  auto edge = StartEdge(cloud->url(), (Tmp() / "state-hostile").string(),
                        {"--max-body", "65536", "--server-threads", "8", "--request-timeout", "3"});
  ASSERT_TRUE(WaitFor(*edge, "/healthz", Ready));
  // gzip body: refused before it is read.
  std::string a = Raw(edge->port(),
                      "POST /v1/match HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                      "Content-Encoding: gzip\r\nContent-Length: 408000\r\n\r\n");
  EXPECT_EQ(StatusOf(a), 415) << a;
  // Chunked past the limit: 413 (or the connection cut), never accepted.
  std::string chunks;
  for (int i = 0; i < 64; ++i) chunks += "1000\r\n" + std::string(4096, ' ') + "\r\n";
  chunks += "0\r\n\r\n";
  a = Raw(edge->port(),
          "POST /v1/match HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
          "Transfer-Encoding: chunked\r\n\r\n",
          chunks, 64);
  EXPECT_TRUE(StatusOf(a) == 413 || a.empty()) << a.substr(0, 200);
  // A body without a length, read until close: bounded too.
  a = Raw(edge->port(),
          "POST /v1/match HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\r\n",
          std::string(300000, ' '), 30);
  EXPECT_NE(StatusOf(a), 200) << a.substr(0, 200);
  // A header past the head's bound: refused, never read on.
  a = Raw(edge->port(), "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + std::string(100000, 'a') +
                            "\r\n\r\n");
  EXPECT_TRUE(a.empty() || (StatusOf(a) >= 400 && StatusOf(a) < 500)) << a.substr(0, 200);
  // Ranges are ignored: the whole model, 200.
  const std::string sha = Post(*edge, "/v1/match", kNetContext)["sha256"];
  for (const char* range : {"bytes=0-9", "bytes=0-1,2-3,4-5,6-7"}) {
    auto res = edge->Client().Get("/v1/models/net.onnx", {{"Range", range}});
    ASSERT_TRUE(res);
    EXPECT_EQ(res->status, 200) << range;
    EXPECT_EQ(da::Sha256Hex(res->body), sha) << range;
  }
  // As many trickling clients as server threads: the edge still answers
  // others at once, and cuts the trickles off within the request timeout.
  std::vector<std::thread> slow;
  std::vector<std::string> answers(8);
  const auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < 8; ++i)
    slow.emplace_back([&, i] {
      answers[size_t(i)] = Raw(edge->port(), "POST /v1/match HTTP/1.1\r\n",
                               "Host: x\r\nContent-Length: 200\r\n\r\n" + std::string(200, ' '),
                               200, std::chrono::milliseconds(500), std::chrono::seconds(30));
    });
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  const auto asked = std::chrono::steady_clock::now();
  auto health = edge->Client().Get("/healthz");
  ASSERT_TRUE(health);
  EXPECT_EQ(health->status, 200);
  EXPECT_LT(Seconds(asked), 2.0);
  for (auto& t : slow) t.join();
  EXPECT_LT(Seconds(start), 6.0);
  for (const std::string& ans : answers)
    EXPECT_TRUE(ans.empty() || StatusOf(ans) == 408) << ans.substr(0, 200);
  EXPECT_EQ(Get(*edge, "/healthz")["status"], "ok");
}

// Past its queue the base model answers 503 with Retry-After, not an
// unbounded wait.
TEST(Services, FullInferenceQueueAnswers503WithRetryAfter) {
  auto cloud = StartCloud((Tmp() / "repo-queue").string());
  auto edge = StartEdge(cloud->url(), (Tmp() / "state-queue").string(),
                        {"--max-queue", "64", "--max-batch", "64", "--max-delay-us", "500000"});
  ASSERT_TRUE(WaitFor(*edge, "/healthz", Ready));
  std::thread first([&] { Post(*edge, "/v2/models/base/infer", InferBody(40)); });
  std::this_thread::sleep_for(std::chrono::milliseconds(150));
  auto res = edge->Client().Post("/v2/models/base/infer", InferBody(40), "application/json");
  first.join();
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 503) << res->body;
  EXPECT_EQ(res->get_header_value("Retry-After"), "1");
  Post(*edge, "/v2/models/base/infer", InferBody(40));  // room again
}
