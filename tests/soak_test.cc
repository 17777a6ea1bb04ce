// Load (issue 16 §6): 200 emulated browsers against one edge for a bounded
// time (DA_SOAK_SECONDS, 30 s by default; `./run test` under CI=true runs
// 600 s), mixing matches, model downloads with and without If-None-Match
// and fallback inference, with think times between requests. Loopback only;
// it stops by itself.
#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <map>
#include <mutex>
#include <random>

#include "common/sha256.h"
#include "services_util.h"

using namespace services;
using Clock = std::chrono::steady_clock;

namespace {

constexpr int kBrowsers = 200;
// The edge's resident memory, at most (ThreadSanitizer's shadow memory
// multiplies it: not checked there).
constexpr double kRssBoundMb = 512;
#ifdef __SANITIZE_THREAD__
constexpr bool kCheckRss = false;
#else
constexpr bool kCheckRss = true;
#endif

double RssMb(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  for (std::string line; std::getline(in, line);)
    if (line.starts_with("VmRSS:")) return std::stod(line.substr(6)) / 1024;
  return -1;
}

double Quantile(std::vector<double> v, double q) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(q * static_cast<double>(v.size())))];
}

}  // namespace

TEST(Soak, TwoHundredBrowsers) {
  const char* env = std::getenv("DA_SOAK_SECONDS");
  const double seconds = env ? std::atof(env) : 30;
  ASSERT_TRUE(seconds > 0 && seconds <= 3600) << "DA_SOAK_SECONDS must be in (0, 3600]";
  auto cloud = StartCloud((Tmp() / "repo-soak").string());
  auto edge = StartEdge(cloud->url(), (Tmp() / "state-soak").string());
  ASSERT_TRUE(WaitFor(*edge, "/healthz", Ready));
  const std::vector<std::string> contexts = {
      kNetContext, R"({"device": "high", "network": "wifi", "budget_ms": 3, "inferences": 100})",
      R"({"device": "mid", "network": "4g", "budget_ms": 10, "inferences": 100})"};

  std::mutex mu;
  std::map<std::string, std::vector<double>> ms;  // per kind of request
  std::vector<std::string> errors;
  int error_count = 0;
  std::atomic<int> resent{0};
  // As a browser does, a request whose kept-alive connection the server
  // closed (idle, as it may) before the request or its answer went through
  // is sent again, once, on a new connection; counted and reported.
  auto send = [&](auto&& request) {
    httplib::Result r = request();
    if (!r && (r.error() == httplib::Error::Write || r.error() == httplib::Error::Read)) {
      ++resent;
      r = request();
    }
    return r;
  };
  auto record = [&](const std::string& kind, Clock::time_point start, const std::string& error) {
    const double took = std::chrono::duration<double, std::milli>(Clock::now() - start).count();
    std::lock_guard lock(mu);
    ms[kind].push_back(took);
    if (!error.empty()) {
      ++error_count;
      if (errors.size() < 10) errors.push_back(kind + ": " + error);
    }
  };
  const auto end = Clock::now() + std::chrono::duration_cast<Clock::duration>(
                                      std::chrono::duration<double>(seconds));
  std::vector<std::thread> browsers;
  for (int b = 0; b < kBrowsers; ++b)
    browsers.emplace_back([&, b] {
      std::mt19937 rng(b);
      std::uniform_int_distribution<int> think(20, 200), images(1, 4), fallbacks(1, 5);
      std::map<std::string, std::string> etags;  // url -> ETag, the browser's cache
      auto pause = [&] { std::this_thread::sleep_for(std::chrono::milliseconds(think(rng))); };
      while (Clock::now() < end) {  // one visit per loop
        httplib::Client c("127.0.0.1", edge->port());
        c.set_keep_alive(true);
        c.set_read_timeout(30);
        auto t = Clock::now();
        const std::string& context = contexts[rng() % contexts.size()];
        auto m = send([&] { return c.Post("/v1/match", context, "application/json"); });
        json j = m ? json::parse(m->body, nullptr, false) : json();
        if (!m || m->status != 200 || j.is_discarded() || !j.contains("url")) {
          record("match", t, Describe(m));
          pause();
          continue;
        }
        record("match", t, "");
        pause();
        const std::string url = j["url"], sha = j["sha256"];
        httplib::Headers h;
        if (etags.count(url)) h.emplace("If-None-Match", etags[url]);
        t = Clock::now();
        auto d = send([&] { return c.Get(url, h); });
        const bool conditional = !h.empty();
        if (d && d->status == 304 && conditional) {
          record("download 304", t, "");
        } else if (d && d->status == 200 && da::Sha256Hex(d->body) == sha) {
          record("download", t, "");
          etags[url] = d->get_header_value("ETag");
        } else {
          record(conditional ? "download 304" : "download", t,
                 d && d->status == 200 ? "sha256 mismatch" : Describe(d));
        }
        for (int f = fallbacks(rng); f > 0 && Clock::now() < end; --f) {
          pause();
          t = Clock::now();
          const std::string body = InferBody(images(rng));
          auto r = send([&] { return c.Post("/v2/models/base/infer", body, "application/json"); });
          record("fallback", t, r && r->status == 200 ? "" : Describe(r));
        }
        pause();
      }
    });
  // The edge's resident memory, every second.
  std::vector<double> rss;
  while (Clock::now() < end) {
    rss.push_back(RssMb(edge->pid()));
    std::this_thread::sleep_for(std::chrono::seconds(1));
  }
  for (auto& t : browsers) t.join();
  rss.push_back(RssMb(edge->pid()));

  size_t total = 0;
  std::cout << "soak: " << kBrowsers << " browsers for " << seconds << " s\n";
  for (const auto& [kind, v] : ms) {
    total += v.size();
    std::printf("  %-13s %7zu requests  p50 %7.1f ms  p99 %7.1f ms  max %7.1f ms\n", kind.c_str(),
                v.size(), Quantile(v, 0.5), Quantile(v, 0.99), Quantile(v, 1.0));
  }
  const double peak = *std::max_element(rss.begin(), rss.end());
  std::printf("  %zu requests, %d errors, %d sent again on a new connection; edge resident memory %.0f MB after 1 s, %.0f MB after "
              "a tenth of the run, %.0f MB at the end, peak %.0f MB (bound %.0f MB)\n",
              total, error_count, resent.load(), rss.front(), rss[rss.size() / 10], rss.back(), peak,
              kRssBoundMb);
  std::fflush(stdout);
  EXPECT_EQ(error_count, 0) << errors.front();
  if (kCheckRss) {
    EXPECT_LT(peak, kRssBoundMb);
  }
  EXPECT_GT(ms["fallback"].size(), static_cast<size_t>(kBrowsers));
  EXPECT_GT(ms["download 304"].size(), 0u);
}
