#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <future>
#include <mutex>
#include <set>
#include <filesystem>
#include <thread>

#include "common/error.h"
#include "common/fs.h"
#include "common/http.h"
#include "common/static_files.h"
#include "common/progress.h"

namespace fs = std::filesystem;

TEST(Fs, WriteFileAtomicCreatesReplacesAndLeavesNoTempFiles) {
  fs::path dir = fs::temp_directory_path() / ("da_fs_test_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  std::string path = (dir / "sub" / "file.txt").string();
  da::WriteFileAtomic(path, "first");
  EXPECT_EQ(da::ReadFile(path), "first");
  da::WriteFileAtomic(path, std::string(100000, 'x'));
  EXPECT_EQ(da::ReadFile(path), std::string(100000, 'x'));
  int files = 0;
  for (auto& e : fs::directory_iterator(dir / "sub")) files += e.is_regular_file();
  EXPECT_EQ(files, 1);
  fs::remove_all(dir);
}

TEST(Fs, ReadFileNamesMissingFile) {
  try {
    da::ReadFile("/nonexistent/da/file");
    FAIL();
  } catch (const da::UserError& e) {
    EXPECT_NE(std::string(e.what()).find("/nonexistent/da/file"), std::string::npos);
  }
}

TEST(Fs, WriteFileAtomicIntoUnwritablePlaceIsUserError) {
  EXPECT_THROW(da::WriteFileAtomic("/proc/da_cannot_write_here/x", "a"), da::UserError);
}

TEST(Progress, FormatsDurations) {
  EXPECT_EQ(da::Progress::FormatDuration(5), "5s");
  EXPECT_EQ(da::Progress::FormatDuration(65), "1m05s");
  EXPECT_EQ(da::Progress::FormatDuration(3725), "1h02m");
  EXPECT_EQ(da::Progress::FormatDuration(-1), "?");
}

TEST(Http, StateChangingEndpointsNeedATokenBeyondLoopback) {
  da::http::ServerOptions o;
  httplib::Request req;
  EXPECT_NO_THROW(da::http::RequireToken(req, o));  // loopback, no token
  o.host = "0.0.0.0";
  try {
    da::http::RequireToken(req, o);
    ADD_FAILURE() << "no token beyond loopback was accepted";
  } catch (const da::HttpError& e) {
    EXPECT_EQ(e.status(), 403);
  }
  o.token = "0123456789abcdef-secret";
  for (const char* bad :
       {"", "Bearer wrong", "Bearer 0123456789abcdef-secre", "0123456789abcdef-secret"}) {
    httplib::Request r;
    if (*bad) r.set_header("Authorization", bad);
    try {
      da::http::RequireToken(r, o);
      ADD_FAILURE() << "accepted '" << bad << "'";
    } catch (const da::HttpError& e) {
      EXPECT_EQ(e.status(), 401);
    }
  }
  req.set_header("Authorization", "Bearer 0123456789abcdef-secret");
  EXPECT_NO_THROW(da::http::RequireToken(req, o));
  o.token = "short";
  EXPECT_THROW(o.Validate(), da::UserError);
  o.token.clear();
  o.cors_origins = {"app.example"};
  EXPECT_THROW(o.Validate(), da::UserError);
}

TEST(Http, CorsOnlyForConfiguredOrigins) {
  da::Metrics metrics;
  da::http::ServerOptions o;
  o.cors_origins = {"https://app.example"};
  da::http::Server server(o);
  da::http::Configure(server, o, metrics, [](const std::string&) { return "x"; });
  server.Get("/x", [](const httplib::Request&, httplib::Response& res) {
    da::http::Json(res, {{"ok", true}});
  });
  const int port = da::http::Bind(server, o);
  std::thread t([&] { server.listen_after_bind(); });
  httplib::Client c("127.0.0.1", port);
  auto allowed = c.Get("/x", {{"Origin", "https://app.example"}});
  ASSERT_TRUE(allowed);
  EXPECT_EQ(allowed->get_header_value("Access-Control-Allow-Origin"), "https://app.example");
  auto other = c.Get("/x", {{"Origin", "https://evil.example"}});
  ASSERT_TRUE(other);
  EXPECT_EQ(other->status, 200);
  EXPECT_FALSE(other->has_header("Access-Control-Allow-Origin"));
  auto missing = c.Get("/nothing", {{"Origin", "https://app.example"}});
  ASSERT_TRUE(missing);
  EXPECT_EQ(missing->status, 404);
  EXPECT_EQ(missing->get_header_value("Access-Control-Allow-Origin"), "https://app.example");
  auto preflight = c.Options(
      "/x", {{"Origin", "https://app.example"}, {"Access-Control-Request-Method", "POST"}});
  ASSERT_TRUE(preflight);
  EXPECT_EQ(preflight->status, 204);
  EXPECT_NE(preflight->get_header_value("Access-Control-Allow-Methods").find("POST"),
            std::string::npos);
  auto refused = c.Options("/x", {{"Origin", "https://evil.example"}});
  ASSERT_TRUE(refused);
  EXPECT_EQ(refused->status, 403);
  server.stop();
  t.join();
}

// Beyond `threads` connections served and as many waiting, a connection gets
// 503 with Retry-After at once; the waiting ones are served when threads free.
TEST(Http, BeyondCapacityConnectionsGet503WithRetryAfter) {
  da::Metrics metrics;
  da::http::ServerOptions o;
  o.threads = 2;
  da::http::Server server(o);
  da::http::Configure(server, o, metrics, [](const std::string&) { return "x"; });
  std::mutex mu;
  std::condition_variable cv;
  bool release = false;
  std::atomic<int> busy{0};
  server.Get("/hold", [&](const httplib::Request&, httplib::Response& res) {
    ++busy;
    std::unique_lock lock(mu);
    cv.wait(lock, [&] { return release; });
    da::http::Json(res, {{"ok", true}});
  });
  const int port = da::http::Bind(server, o);
  std::thread t([&] { server.listen_after_bind(); });
  auto get = [port] {
    httplib::Client c("127.0.0.1", port);
    c.set_read_timeout(20);
    return c.Get("/hold");
  };
  // Two served (holding both threads), then two waiting.
  std::vector<std::future<httplib::Result>> held;
  for (int i = 0; i < 2; ++i) held.push_back(std::async(std::launch::async, get));
  for (int i = 0; i < 200 && busy < 2; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  ASSERT_EQ(busy, 2);
  for (int i = 0; i < 2; ++i) held.push_back(std::async(std::launch::async, get));
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  // The next ones are turned away at once.
  for (int i = 0; i < 3; ++i) {
    const auto start = std::chrono::steady_clock::now();
    auto res = get();
    ASSERT_TRUE(res) << httplib::to_string(res.error());
    EXPECT_EQ(res->status, 503);
    EXPECT_EQ(res->get_header_value("Retry-After"), "1");
    EXPECT_NE(res->body.find("capacity"), std::string::npos);
    EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(), 2);
  }
  {
    std::lock_guard lock(mu);
    release = true;
  }
  cv.notify_all();
  for (auto& f : held) {
    auto res = f.get();
    ASSERT_TRUE(res);
    EXPECT_EQ(res->status, 200);
  }
  EXPECT_EQ(busy, 4);
  server.stop();
  t.join();
}

// Static files: the smallest encoding the client accepts, ETag/304, immutable
// caching only for URLs that name the content, no way out of the mount.
TEST(Http, StaticFilesArePrecompressedAndVersioned) {
  const fs::path dir = fs::temp_directory_path() / ("da_static_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  std::string js;
  for (int i = 0; i < 2000; ++i) js += "export const x" + std::to_string(i) + " = " + std::to_string(i) + ";\n";
  da::WriteFileAtomic((dir / "pub" / "a.js").string(), js);
  da::WriteFileAtomic((dir / "secret.txt").string(), "secret");
  da::Metrics metrics;
  da::http::ServerOptions o;
  da::http::Server server(o);
  da::http::Configure(server, o, metrics, [](const std::string&) { return "x"; });
  da::http::StaticFiles files;
  files.Mount("/s/", (dir / "pub").string());
  files.AddRoutes(server);
  const int port = da::http::Bind(server, o);
  std::thread t([&] { server.listen_after_bind(); });
  httplib::Client raw("127.0.0.1", port), plain("127.0.0.1", port);
  raw.set_decompress(false);
  auto get = [&](const std::string& path, httplib::Headers h = {}) {
    auto r = raw.Get(path, h);
    EXPECT_TRUE(r);
    return r;
  };
  auto identity = get("/s/a.js");
  EXPECT_EQ(identity->body, js);
  EXPECT_FALSE(identity->has_header("Content-Encoding"));
  EXPECT_EQ(identity->get_header_value("Vary"), "Accept-Encoding");
  EXPECT_EQ(identity->get_header_value("Cache-Control"), "no-cache");
  auto gz = get("/s/a.js", {{"Accept-Encoding", "gzip"}});
  EXPECT_EQ(gz->get_header_value("Content-Encoding"), "gzip");
  auto br = get("/s/a.js", {{"Accept-Encoding", "gzip, deflate, br"}});
  EXPECT_EQ(br->get_header_value("Content-Encoding"), "br");
  EXPECT_LT(br->body.size(), gz->body.size());
  EXPECT_LT(gz->body.size(), js.size() / 4);
  EXPECT_EQ(get("/s/a.js", {{"Accept-Encoding", "gzip, br;q=0"}})->get_header_value("Content-Encoding"), "gzip");
  for (const char* enc : {"gzip", "br"}) {  // what a browser decodes is the file
    auto r = plain.Get("/s/a.js", {{"Accept-Encoding", enc}});
    ASSERT_TRUE(r);
    EXPECT_EQ(r->body, js) << enc;
  }
  // Versioned URLs are cached for good; a stale or wrong version is not.
  const std::string v = files.Versioned("/s/a.js");
  ASSERT_NE(v.find("?v="), std::string::npos);
  EXPECT_EQ(get(v)->get_header_value("Cache-Control"), da::http::kImmutable);
  EXPECT_EQ(get("/s/a.js?v=0000000000000000")->get_header_value("Cache-Control"), "no-cache");
  const std::string etag = identity->get_header_value("ETag");
  EXPECT_EQ(get("/s/a.js", {{"If-None-Match", etag}})->status, 304);
  // A changed file is served changed.
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  da::WriteFileAtomic((dir / "pub" / "a.js").string(), "changed");
  EXPECT_EQ(get("/s/a.js")->body, "changed");
  EXPECT_EQ(get("/s/a.js", {{"If-None-Match", etag}})->status, 200);
  EXPECT_NE(files.Versioned("/s/a.js"), v);
  for (const char* bad : {"/s/../secret.txt", "/s/%2e%2e/secret.txt", "/s/.hidden", "/s/nothing.js"})
    EXPECT_EQ(get(bad)->status, 404) << bad;
  server.stop();
  t.join();
  fs::remove_all(dir);
}

TEST(Http, AssetCacheKeepsTheRecentlyUsedWithinItsBytes) {
  da::http::AssetCache cache(3500);  // three entries of ~1040 bytes (body and compressed forms)
  int loads = 0;
  auto get = [&](const std::string& key, const std::string& version) {
    return cache.Get(key, version, "x", [&] {
      ++loads;
      return std::string(1000, key[0]);  // about 1000 bytes kept (compressed forms are tiny)
    });
  };
  get("a", "1"), get("b", "1"), get("a", "1");
  EXPECT_EQ(loads, 2);
  get("a", "2");  // a new version is loaded again
  EXPECT_EQ(loads, 3);
  get("c", "1"), get("d", "1");  // over 3500 bytes: b, the least recently used, goes
  get("a", "2");
  EXPECT_EQ(loads, 5);
  get("b", "1");
  EXPECT_EQ(loads, 6);
}

TEST(Http, AssetCacheLoadsOnceForConcurrentCallers) {
  da::http::AssetCache cache;
  std::atomic<int> loads = 0, asked = 0;
  std::mutex mu;
  std::condition_variable cv;
  bool go = false, fail = true;
  // The first load waits until every caller has asked, then fails: all of
  // them see its error, and a later call loads again.
  auto get = [&] {
    ++asked;
    return cache.Get("m", "1", "x", [&] {
      ++loads;
      std::unique_lock lock(mu);
      cv.wait(lock, [&] { return go; });
      if (fail) throw da::UserError("the cloud is down");
      return std::string(1000, 'm');
    });
  };
  for (int round = 0; round < 2; ++round) {
    std::vector<std::future<std::shared_ptr<const da::http::Asset>>> callers;
    asked = 0;
    for (int i = 0; i < 8; ++i) callers.push_back(std::async(std::launch::async, get));
    while (asked < 8 || loads == round) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    std::this_thread::sleep_for(std::chrono::milliseconds(100));  // all inside Get
    {
      std::lock_guard lock(mu);
      go = true;
    }
    cv.notify_all();
    std::set<const da::http::Asset*> got;
    int errors = 0;
    for (auto& c : callers) {
      try {
        got.insert(c.get().get());
      } catch (const da::UserError&) {
        ++errors;
      }
    }
    if (round == 0) {
      EXPECT_EQ(errors, 8);
    } else {
      EXPECT_EQ(errors, 0);
      EXPECT_EQ(got.size(), 1u);
    }
    EXPECT_EQ(loads, round + 1);
    std::lock_guard lock(mu);
    go = false, fail = false;
  }
}
