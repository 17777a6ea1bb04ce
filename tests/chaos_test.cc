// Crash safety (issue 16 §4): SIGKILL the edge, and the cloud, at 50 random
// moments while clients use them, restart each time, and check that nothing
// acknowledged was lost and nothing corrupt was served.
#include <atomic>
#include <map>
#include <mutex>
#include <random>
#include <set>

#include "common/sha256.h"
#include "services_util.h"

using namespace services;
using Clock = std::chrono::steady_clock;

namespace {

constexpr int kKills = 50;
const char* const kCpuMatch =
    R"({"device": "high", "network": "wifi", "budget_ms": 3, "inferences": 100})";

// What the clients saw, shared between their threads.
struct Log {
  std::mutex mu;
  std::vector<Clock::time_point> matched;  // when each acknowledged match came back
  int downloads = 0, not_modified = 0, fallbacks = 0, cut = 0;
  std::set<std::string> acknowledged;  // ids /v1/stats reported on disk
  std::vector<std::string> errors;
  void Error(std::string e) {
    std::lock_guard lock(mu);
    if (errors.size() < 20) errors.push_back(std::move(e));
  }
};

}  // namespace

// Four clients (matches, model downloads with and without If-None-Match,
// fallback inference, statistics) run against the edge; it is killed at a
// random moment (one in five during its start, the rest while it serves),
// restarted on the same state, and checked.
TEST(Chaos, SigkillTheEdgeFiftyTimes) {
  auto cloud = StartCloud((Tmp() / "repo-chaos-edge").string());
  std::map<std::string, std::string> sha;  // model id -> ONNX sha256, from the cloud
  const json catalog = Catalog(*cloud);
  for (const json& m : catalog["models"]) sha[m["id"]] = m["onnx"]["sha256"];
  ASSERT_EQ(sha.size(), 3u);
  const std::string state = (Tmp() / "state-chaos").string();
  std::atomic<int> port{0};
  std::atomic<bool> stop{false};
  Log log;

  auto client = [&](auto&& body) {
    return std::thread([&, body] {
      while (!stop) {
        const int p = port;
        if (p == 0) {
          std::this_thread::sleep_for(std::chrono::milliseconds(5));
          continue;
        }
        httplib::Client c("127.0.0.1", p);
        c.set_connection_timeout(2);
        c.set_read_timeout(10);
        body(c, p);
      }
    });
  };
  // The answer of a request the kill may have cut: false when it was cut.
  auto answered = [&](const httplib::Result& res, int p) {
    if (res) return true;
    std::lock_guard lock(log.mu);
    ++log.cut;
    if (port == p) log.errors.push_back("no answer from a live edge: " + Describe(res));
    return false;
  };
  std::vector<std::thread> clients;
  clients.push_back(client([&](httplib::Client& c, int p) {
    bool net = true;
    for (int i = 0; i < 20 && port == p; ++i, net = !net) {
      auto res = c.Post("/v1/match", net ? kNetContext : kCpuMatch, "application/json");
      if (!answered(res, p)) return;
      if (res->status != 200) return log.Error("match: " + Describe(res));
      std::lock_guard lock(log.mu);
      log.matched.push_back(Clock::now());
    }
  }));
  clients.push_back(client([&](httplib::Client& c, int p) {
    for (const auto& [id, hash] : sha) {
      for (bool conditional : {false, true}) {
        httplib::Headers h;
        if (conditional) h.emplace("If-None-Match", "\"" + hash + "\"");
        auto res = c.Get("/v1/models/" + id + ".onnx", h);
        if (!answered(res, p)) return;
        std::lock_guard lock(log.mu);
        if (res->status == 304 && conditional) {
          ++log.not_modified;
        } else if (res->status == 200 && da::Sha256Hex(res->body) == hash) {
          ++log.downloads;
        } else {
          log.errors.push_back("download " + id + ": " + std::to_string(res->status) + " " +
                               std::to_string(res->body.size()) + " bytes, sha256 " +
                               da::Sha256Hex(res->body));
        }
      }
    }
  }));
  clients.push_back(client([&](httplib::Client& c, int p) {
    auto res = c.Post("/v2/models/base/infer", InferBody(2), "application/json");
    if (!answered(res, p)) return;
    json j = json::parse(res->body, nullptr, false);
    if (res->status != 200 || j.is_discarded() || j["outputs"].size() != 2)
      return log.Error("fallback: " + Describe(res));
    std::lock_guard lock(log.mu);
    ++log.fallbacks;
  }));
  clients.push_back(client([&](httplib::Client& c, int p) {
    auto res = c.Get("/v1/stats");
    if (!answered(res, p)) return;
    json j = json::parse(res->body, nullptr, false);
    if (res->status != 200 || j.is_discarded()) return log.Error("stats: " + Describe(res));
    std::lock_guard lock(log.mu);
    for (const json& id : j["cached"]) log.acknowledged.insert(id);
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }));

  std::mt19937 rng(16);
  std::uniform_real_distribution<double> serving(0.05, 3.0), starting(0.0, 0.3);
  double saved = 0, worst_lag = 0;  // matches in the saved statistics; seconds
  Clock::time_point kill_at;
  int killed_starting = 0;
  for (int k = 0; k <= kKills; ++k) {
    auto edge = StartEdge(cloud->url(), state);
    ASSERT_GT(edge->port(), 0);
    const bool during_start = k < kKills && rng() % 5 == 0;
    if (during_start) {
      std::this_thread::sleep_for(std::chrono::duration<double>(starting(rng)));
      edge->Kill(SIGKILL);
      ++killed_starting;
      continue;
    }
    ASSERT_TRUE(WaitFor(*edge, "/healthz", Ready)) << "restart " << k;
    // After the restart every model acknowledged as cached is still on disk,
    // and the statistics hold every match acknowledged more than one flush
    // interval (1 s, plus 0.5 s for the loop's tick and the write) before
    // the kill.
    json stats = Get(*edge, "/v1/stats");
    {
      std::lock_guard lock(log.mu);
      std::set<std::string> cached;
      for (const json& id : stats["cached"]) cached.insert(id);
      for (const std::string& id : log.acknowledged)
        EXPECT_TRUE(cached.count(id)) << "restart " << k << ": " << id << " was lost";
      double total = 0;
      for (const json& d : stats["demand"]) total += d["total"].get<double>();
      const auto& acked = log.matched;  // this cycle's, in order
      const double kept = total - saved;
      EXPECT_GE(kept, 0) << "restart " << k << ": saved statistics went back";
      // At most one match was in flight when the kill came.
      EXPECT_LE(kept, static_cast<double>(acked.size() + 1)) << "restart " << k;
      if (kept >= 0 && kept < static_cast<double>(acked.size()))
        worst_lag = std::max(worst_lag, std::chrono::duration<double>(
                                            kill_at - acked[static_cast<size_t>(kept)])
                                            .count());
      saved = total;
      log.matched.clear();
    }
    if (k == kKills) break;
    port = edge->port();
    std::this_thread::sleep_for(std::chrono::duration<double>(serving(rng)));
    port = 0;  // before the kill: requests failing from now on were cut by it
    kill_at = Clock::now();
    edge->Kill(SIGKILL);
  }
  stop = true;
  for (auto& t : clients) t.join();
  EXPECT_LE(worst_lag, 1.5) << "acknowledged matches missing from the saved statistics";
  EXPECT_TRUE(log.errors.empty()) << log.errors.front();
  std::cout << "edge killed " << kKills << " times (" << killed_starting
            << " while starting): " << log.downloads << " downloads and " << log.not_modified
            << " 304s, all intact; " << log.fallbacks << " fallbacks; " << log.cut
            << " requests cut by kills; unsaved statistics at most " << worst_lag << " s\n";
  EXPECT_GT(log.downloads, kKills);
  EXPECT_GT(log.fallbacks, kKills);
}

// The cloud is killed at a random moment of a prune job (uniform over 0.3x to
// 1.6x the time one takes after a start), restarted on the same repository, and checked: every
// model it listed is still listed and served intact, every request it
// acknowledged is still known, and the interrupted job finishes.
TEST(Chaos, SigkillTheCloudFiftyTimesDuringPruneJobs) {
  const std::string repo = (Tmp() / "repo-chaos-cloud").string();
  auto cloud = StartCloud(repo);
  int next_budget = 0;
  auto submit = [&] {
    // Just under the base's 24 ms: a short search (each a new request).
    const std::string body = R"({"device": "low", "network": "3g", "inferences": 100, "budget_ms": )" +
                             std::to_string(21 + 0.01 * next_budget++) + "}";
    return Post(*cloud, "/v1/prune-requests", body, 202)["id"].get<std::string>();
  };
  auto state = [&](const std::string& id) {
    return Get(*cloud, "/v1/prune-requests/" + id)["state"].get<std::string>();
  };
  // How long one job takes here.
  auto t0 = Clock::now();
  std::string pending = submit();
  ASSERT_TRUE(WaitFor(*cloud, "/v1/prune-requests/" + pending,
                      [](const json& s) { return s["state"] == "done"; }, kPruneWaitSeconds));
  const double job_s = Seconds(t0);
  std::map<std::string, std::string> listed;  // model id -> ONNX sha256, once listed
  std::set<std::string> acknowledged = {pending}, done;
  pending.clear();
  std::mt19937 rng(16);
  std::uniform_real_distribution<double> moment(0.3 * job_s, 1.6 * job_s);
  int interrupted = 0;
  for (int k = 0; k <= kKills; ++k) {
    // Everything acknowledged is still there, and intact.
    json catalog = Catalog(*cloud);
    std::set<std::string> now;
    for (const json& m : catalog["models"]) {
      const std::string id = m["id"];
      now.insert(id);
      EXPECT_TRUE(!listed.count(id) || listed[id] == m["onnx"]["sha256"]) << id << " changed";
      listed[id] = m["onnx"]["sha256"];
      auto res = cloud->Client().Get("/v1/models/" + id + ".onnx");
      ASSERT_TRUE(res) << "restart " << k;
      EXPECT_EQ(res->status, 200) << "restart " << k << ": " << id;
      EXPECT_EQ(da::Sha256Hex(res->body), listed[id]) << "restart " << k << ": " << id;
    }
    for (const auto& [id, sha] : listed)
      EXPECT_TRUE(now.count(id)) << "restart " << k << ": model " << id << " was lost";
    EXPECT_TRUE(Get(*cloud, "/healthz")["problems"].empty()) << "restart " << k;
    for (const std::string& id : acknowledged) {
      const std::string s = state(id);
      EXPECT_NE(s, "failed") << "restart " << k << ": " << id;
      if (done.count(id)) {
        EXPECT_EQ(s, "done") << "restart " << k << ": " << id;
      }
      if (s == "done") {
        done.insert(id);
        EXPECT_TRUE(now.count(id)) << "restart " << k << ": " << id << " is done but not listed";
      }
    }
    if (k == kKills) break;
    if (pending.empty() || done.count(pending)) {
      pending = submit();
      acknowledged.insert(pending);
    }
    std::this_thread::sleep_for(std::chrono::duration<double>(moment(rng)));
    if (state(pending) != "done") ++interrupted;
    cloud->Kill(SIGKILL);
    cloud = StartCloud(repo);
  }
  // The last job finishes after the restart.
  EXPECT_TRUE(WaitFor(*cloud, "/v1/prune-requests/" + pending,
                      [](const json& s) { return s["state"] == "done"; }, kPruneWaitSeconds));
  EXPECT_EQ(Catalog(*cloud)["models"].size(), 3 + acknowledged.size());
  EXPECT_EQ(state(pending), "done");
  std::cout << "cloud killed " << kKills << " times, " << interrupted
            << " during a prune job (one takes " << job_s << " s): " << acknowledged.size()
            << " requests, all done, " << listed.size() << " models, all intact\n";
  // Both kinds of moment happened: during a job, and after one finished.
  EXPECT_GE(interrupted, kKills / 5);
  EXPECT_GE(acknowledged.size(), 5u);

  // The narrowest window, made certain: killed after the model entered the
  // catalog but before the request was saved as done.
  cloud->Kill(SIGKILL);
  const fs::path requests = fs::path(repo) / "prune-requests.json";
  json saved = json::parse(std::ifstream(requests));
  for (json& r : saved["requests"])
    if (r["id"] == pending) r["state"] = "running";
  std::ofstream(requests) << saved.dump();
  cloud = StartCloud(repo);
  EXPECT_TRUE(WaitFor(*cloud, "/v1/prune-requests/" + pending,
                      [](const json& s) { return s["state"] != "queued" && s["state"] != "running"; },
                      kPruneWaitSeconds));
  EXPECT_EQ(state(pending), "done");
  EXPECT_EQ(Catalog(*cloud)["models"].size(), 3 + acknowledged.size());
}
