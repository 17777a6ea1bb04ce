// Integration tests: real `deepadapter cloud` and `edge` processes on free
// loopback ports, spoken to over HTTP.
#include <gtest/gtest.h>
#include <httplib.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <nlohmann/json.hpp>
#include <regex>
#include <thread>

#include "common/fs.h"
#include "common/sha256.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

// A server may close a connection whose body it refused while the client still
// writes: the test client must see an error, not die of SIGPIPE.
const bool kIgnoreSigpipe = [] { return ::signal(SIGPIPE, SIG_IGN) != SIG_ERR; }();

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
  ~Server() {
    if (pid_ > 0) ::kill(pid_, SIGCONT);
    Kill(SIGTERM);
  }
  void Signal(int sig) { ::kill(pid_, sig); }
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
  std::vector<std::string> args = {"edge", "--cloud", cloud_url, "--state", state, "--port", "0"};
  std::vector<std::pair<std::string, std::string>> defaults = {
      {"--catalog-refresh", "0.5"}, {"--refresh", "0.3"}, {"--prune-interval", "0.2"}};
  for (const auto& [flag, value] : defaults)
    if (std::find(extra.begin(), extra.end(), flag) == extra.end())
      args.insert(args.end(), {flag, value});
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
bool WaitFor(const Server& s, const std::string& path,
             const std::function<bool(const json&)>& pred) {
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

bool Ready(const json& h) {
  return h.value("base_ready", false) && h.value("catalog_models", 0) > 0;
}

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
              {"inputs",
               {{{"name", "input"},
                 {"shape", {n, 1, 28, 28}},
                 {"datatype", "FP32"},
                 {"data", std::vector<float>(static_cast<size_t>(n) * 784, 0.3f)},
                 {"parameters", json::object()}}}},
              {"outputs",
               {{{"name", "probabilities"}, {"parameters", {{"binary_data", false}}}},
                {{"name", "label"}}}}}
      .dump();
}

// Sends `head` (and then `body` in `pieces`, one every `gap`) on a raw
// connection to 127.0.0.1:port; returns what the server answered (until it
// closes or `timeout`). Stops sending once an answer arrives.
std::string Raw(int port, const std::string& head, const std::string& body = "", int pieces = 1,
                std::chrono::milliseconds gap = {},
                std::chrono::seconds timeout = std::chrono::seconds(20)) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    ::close(fd);
    return "";
  }
  std::string out;
  auto readable = [&](int ms) {
    pollfd p{fd, POLLIN, 0};
    return ::poll(&p, 1, ms) > 0;
  };
  auto drain = [&]() {
    char buf[65536];
    for (;;) {
      ssize_t n = ::recv(fd, buf, sizeof buf, MSG_DONTWAIT);
      if (n <= 0) return n == 0;
      out.append(buf, static_cast<size_t>(n));
    }
  };
  ::send(fd, head.data(), head.size(), MSG_NOSIGNAL);
  const size_t step = body.empty() ? 0 : (body.size() + pieces - 1) / static_cast<size_t>(pieces);
  for (size_t at = 0; at < body.size() && !readable(0); at += step) {
    if (::send(fd, body.data() + at, std::min(step, body.size() - at), MSG_NOSIGNAL) < 0) break;
    if (gap.count()) std::this_thread::sleep_for(gap);
  }
  const auto end = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < end) {
    if (!readable(100)) continue;
    if (drain()) break;
  }
  ::close(fd);
  return out;
}

int StatusOf(const std::string& answer) {
  return answer.starts_with("HTTP/1.1 ") ? std::atoi(answer.c_str() + 9) : 0;
}

double Seconds(std::chrono::steady_clock::time_point since) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - since).count();
}

json Catalog(const Server& cloud) { return Get(cloud, "/v1/catalog"); }

json Record(const json& catalog, const std::string& id) {
  for (const json& m : catalog["models"])
    if (m["id"] == id) return m;
  return json();
}

bool Cached(const Server& edge, const std::string& id) {
  json s = Get(edge, "/v1/stats");
  for (const json& c : s["cached"])
    if (c == id) return true;
  return false;
}

const char* kCpuContext =
    R"({"device": "high", "network": "wifi", "budget_ms": 0.5, "inferences": 100})";

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
          failures +=
              "kind " + std::to_string(kind) + " request " + std::to_string(i) + " after " +
              std::to_string(
                  std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count()) +
              " s: " +
              (res ? std::to_string(res->status) + " " + res->body
                   : httplib::to_string(res.error())) +
              "\n";
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
  EXPECT_TRUE(WaitFor(*cloud, "/v1/catalog",
                      [&](const json& c) { return c["models"].size() == before + 1; }));
  json added = Get(*cloud, "/v1/catalog")["models"].back();
  json status = Get(*cloud, "/v1/prune-requests/" + added["id"].get<std::string>());
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
