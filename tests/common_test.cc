#include <gtest/gtest.h>

#include <filesystem>
#include <thread>

#include "common/error.h"
#include "common/fs.h"
#include "common/http.h"
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
