// Integration tests: real `deepadapter cloud` and `edge` processes on free
// loopback ports, spoken to over HTTP.
#include <gtest/gtest.h>
#include <httplib.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <mutex>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <regex>
#include <thread>

#include "common/fs.h"
#include "common/sha256.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

const fs::path& Tmp() {
  static const fs::path d = [] {
    fs::path p = fs::temp_directory_path() / ("da-services-" + std::to_string(::getpid()));
    fs::remove_all(p);
    fs::create_directories(p);
    return p;
  }();
  return d;
}

// Runs `deepadapter args...` to completion; true on exit code 0.
bool RunCli(const std::vector<std::string>& args) {
  std::string cmd = DA_BINARY;
  for (const auto& a : args) cmd += " '" + a + "'";
  cmd += " >>'" + (Tmp() / "cli.log").string() + "' 2>&1";
  return std::system(cmd.c_str()) == 0;
}

// A tiny trained base and its family of two branches (built once).
const fs::path& Family() {
  static const fs::path fam = [] {
    const fs::path base = Tmp() / "base", out = Tmp() / "family";
    da::WriteFileAtomic((Tmp() / "ctx.json").string(),
                        R"({"contexts": [
      {"name": "net", "device": "low", "network": "3g", "budget_ms": 22, "inferences": 100},
      {"name": "cpu", "device": "high", "network": "wifi", "budget_ms": 0.5, "inferences": 100}]})");
    EXPECT_TRUE(RunCli({"train", "--widths", "8/16/16 fc16", "--epochs", "2", "--limit", "5000",
                        "--out", base.string()}));
    EXPECT_TRUE(RunCli({"prune", "--base", base.string(), "--contexts",
                        (Tmp() / "ctx.json").string(), "--out", out.string(), "--limit", "500",
                        "--short-steps", "2", "--long-epochs", "0", "--val-images", "200"}));
    return out;
  }();
  return fam;
}

// A `deepadapter` server process; its port is read from its first output line.
class Server {
 public:
  Server(const std::string& name, const std::vector<std::string>& args)
      : log_(Tmp() / (name + "-" + std::to_string(++count_) + ".log")) {
    pid_ = ::fork();
    if (pid_ == 0) {
      std::FILE* f = std::freopen(log_.c_str(), "a", stdout);
      (void)f;
      ::dup2(::fileno(stdout), 2);
      std::vector<char*> argv = {const_cast<char*>(DA_BINARY)};
      for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
      argv.push_back(nullptr);
      ::execv(DA_BINARY, argv.data());
      ::_exit(127);
    }
    const std::regex re(name + R"(:\s+http://127\.0\.0\.1:(\d+)/)");
    for (int i = 0; i < 300 && port_ == 0; ++i) {
      std::ifstream in(log_);
      std::string text((std::istreambuf_iterator<char>(in)), {});
      std::smatch m;
      if (std::regex_search(text, m, re)) port_ = std::stoi(m[1]);
      if (port_ == 0) std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    EXPECT_GT(port_, 0) << name << " did not start; see " << log_;
  }
  ~Server() { Kill(SIGTERM); }
  void Kill(int sig) {
    if (pid_ <= 0) return;
    ::kill(pid_, sig);
    int status = 0;
    ::waitpid(pid_, &status, 0);
    if (sig == SIGTERM) {
      EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << log_;
    }
    pid_ = -1;
  }
  int port() const { return port_; }
  std::string url() const { return "http://127.0.0.1:" + std::to_string(port_); }
  httplib::Client Client() const {
    httplib::Client c("127.0.0.1", port_);
    c.set_read_timeout(30);
    return c;
  }

 private:
  static inline int count_ = 0;
  fs::path log_;
  pid_t pid_ = -1;
  int port_ = 0;
};

std::unique_ptr<Server> StartCloud(const std::string& repo) {
  return std::make_unique<Server>(
      "cloud", std::vector<std::string>{"cloud", "--repo", repo, "--family", Family().string(),
                                        "--port", "0", "--limit", "500", "--short-steps", "1",
                                        "--long-epochs", "0", "--val-images", "100"});
}

std::unique_ptr<Server> StartEdge(const std::string& cloud_url, const std::string& state,
                                  std::vector<std::string> extra = {}) {
  std::vector<std::string> args = {"edge", "--cloud", cloud_url, "--state", state, "--port", "0",
                                   "--catalog-refresh", "0.5", "--refresh", "0.3",
                                   "--prune-interval", "0.2"};
  args.insert(args.end(), extra.begin(), extra.end());
  return std::make_unique<Server>("edge", args);
}

json Get(const Server& s, const std::string& path, int expect = 200) {
  auto res = s.Client().Get(path);
  EXPECT_TRUE(res) << path;
  if (!res) return json();
  EXPECT_EQ(res->status, expect) << path << ": " << res->body;
  return json::parse(res->body, nullptr, false);
}

json Post(const Server& s, const std::string& path, const std::string& body, int expect = 200) {
  auto res = s.Client().Post(path, body, "application/json");
  EXPECT_TRUE(res) << path;
  if (!res) return json();
  EXPECT_EQ(res->status, expect) << path << ": " << res->body;
  return json::parse(res->body, nullptr, false);
}

// Waits until `pred(GET path)` holds (at most ~30 s).
bool WaitFor(const Server& s, const std::string& path, const std::function<bool(const json&)>& pred) {
  for (int i = 0; i < 300; ++i) {
    auto res = s.Client().Get(path);
    if (res && res->status == 200) {
      json j = json::parse(res->body, nullptr, false);
      if (!j.is_discarded() && pred(j)) return true;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return false;
}

bool Ready(const json& h) { return h.value("base_ready", false) && h.value("catalog_models", 0) > 0; }

const char* kNetContext =
    R"({"device": "low", "network": "3g", "budget_ms": 22.5, "inferences": 100})";

double Metric(const Server& s, const std::string& line_prefix) {
  auto res = s.Client().Get("/metrics");
  if (!res) return -1;
  std::istringstream in(res->body);
  double sum = 0;
  for (std::string line; std::getline(in, line);)
    if (line.starts_with(line_prefix)) sum += std::stod(line.substr(line.rfind(' ') + 1));
  return sum;
}

std::string InferBody(int n) {
  return json{{"id", "1"},
              {"inputs", {{{"name", "input"},
                           {"shape", {n, 1, 28, 28}},
                           {"datatype", "FP32"},
                           {"data", std::vector<float>(static_cast<size_t>(n) * 784, 0.3f)},
                           {"parameters", json::object()}}}},
              {"outputs", {{{"name", "probabilities"}, {"parameters", {{"binary_data", false}}}},
                           {{"name", "label"}}}}}
      .dump();
}

}  // namespace

TEST(Services, MatchThenDownloadWithHashCheckAndOneFetchPerMiss) {
  auto cloud = StartCloud((Tmp() / "repo1").string());
  auto edge = StartEdge(cloud->url(), (Tmp() / "state1").string(), {"--policy", "lru"});
  ASSERT_TRUE(WaitFor(*edge, "/healthz", Ready));
  json m = Post(*edge, "/v1/match", kNetContext);
  ASSERT_TRUE(m.contains("model")) << m;
  EXPECT_EQ(m["ideal"], "net");
  for (const char* k : {"url", "bytes", "sha256", "threshold", "predicted", "ideal_cached"})
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
  json fallback = Post(*edge, "/v1/match",
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
        auto res = kind == 0   ? c.Post("/v1/match", kNetContext, "application/json")
                   : kind == 1 ? c.Get("/v1/models/net.onnx")
                               : c.Post("/v2/models/base/infer", InferBody(1 + t % 4),
                                        "application/json");
        if (res && res->status == 200) {
          ++ok;
        } else {
          ++bad;
          std::lock_guard lock(mu);
          failures += "kind " + std::to_string(kind) + " request " + std::to_string(i) + " after " +
                      std::to_string(std::chrono::duration<double>(
                                         std::chrono::steady_clock::now() - start).count()) +
                      " s: " +
                      (res ? std::to_string(res->status) + " " + res->body
                           : httplib::to_string(res.error())) + "\n";
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
  const json& probs = r["outputs"][0]["name"] == "probabilities" ? r["outputs"][0] : r["outputs"][1];
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
      {"/v1/match", R"({"device": "mid", "network": "4g", "budget_ms": "fast", "inferences": 100})"},
      {"/v1/match", R"({"device": "phone", "network": "4g", "budget_ms": 5, "inferences": 100})"},
      {"/v1/match", R"({"device": "mid", "network": "4g", "budget_ms": 5, "inferences": 1, "x": 1})"},
      {"/v2/models/base/infer", R"({"inputs": [{"name": "input", "shape": [1, 5], "datatype": "FP32", "data": [1,2,3,4,5]}]})"},
      {"/v2/models/base/infer", R"({"inputs": [{"name": "input", "shape": [1, 784], "datatype": "BOOL", "data": []}]})"},
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
  EXPECT_TRUE(WaitFor(*cloud, "/v1/catalog",
                      [&](const json& c) { return c["models"].size() == before + 1; }));
  json added = Get(*cloud, "/v1/catalog")["models"].back();
  json status = Get(*cloud, "/v1/prune-requests/" + added["id"].get<std::string>());
  EXPECT_EQ(status["state"], "done");
  EXPECT_EQ(status["model"], added["id"]);
  // The edge learns the new branch from the catalog (it counts branches only:
  // the base is not matched, so `before` = its old count + 1).
  EXPECT_TRUE(WaitFor(*edge, "/v1/stats",
                      [&](const json& s) { return s["catalog_models"] == before; }));
  // Same context again: deduplicated by the cloud.
  json dup = Post(*cloud, "/v1/prune-requests",
                  R"({"device": "low", "network": "3g", "budget_ms": 1, "inferences": 100})");
  EXPECT_EQ(dup["id"], added["id"]);
  Get(*cloud, "/v1/prune-requests/pr-nonexistent", 404);
  Post(*cloud, "/v1/prune-requests", R"({"device": "low"})", 400);
}
