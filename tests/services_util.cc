#include "services_util.h"

#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>

#include "common/fs.h"

namespace services {
namespace {

// A server may close a connection whose body it refused while the client still
// writes: the test client must see an error, not die of SIGPIPE.
const bool kIgnoreSigpipe = [] { return ::signal(SIGPIPE, SIG_IGN) != SIG_ERR; }();
}  // namespace

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

std::unique_ptr<Server> StartCloud(const std::string& repo, std::vector<std::string> extra) {
  std::vector<std::string> args = {"cloud",
                                   "--repo",
                                   repo,
                                   "--family",
                                   Family().string(),
                                   "--port",
                                   "0",
                                   "--limit",
                                   "500",
                                   "--short-steps",
                                   "1",
                                   "--long-epochs",
                                   "0",
                                   "--val-images",
                                   "100"};
  args.insert(args.end(), extra.begin(), extra.end());
  return std::make_unique<Server>("cloud", args);
}

std::unique_ptr<Server> StartEdge(const std::string& cloud_url, const std::string& state,
                                  std::vector<std::string> extra) {
  std::vector<std::string> args = {"edge", "--cloud", cloud_url, "--state", state, "--port", "0"};
  std::vector<std::pair<std::string, std::string>> defaults = {
      {"--catalog-refresh", "0.5"}, {"--refresh", "0.3"}, {"--prune-interval", "0.2"}};
  for (const auto& [flag, value] : defaults)
    if (std::find(extra.begin(), extra.end(), flag) == extra.end())
      args.insert(args.end(), {flag, value});
  args.insert(args.end(), extra.begin(), extra.end());
  return std::make_unique<Server>("edge", args);
}

json Get(const Server& s, const std::string& path, int expect) {
  auto res = s.Client().Get(path);
  EXPECT_TRUE(res) << path;
  if (!res) return json();
  EXPECT_EQ(res->status, expect) << path << ": " << res->body;
  return json::parse(res->body, nullptr, false);
}

json Post(const Server& s, const std::string& path, const std::string& body, int expect) {
  auto res = s.Client().Post(path, body, "application/json");
  EXPECT_TRUE(res) << path;
  if (!res) return json();
  EXPECT_EQ(res->status, expect) << path << ": " << res->body;
  return json::parse(res->body, nullptr, false);
}

// ThreadSanitizer's programs run 5-15x slower: 4x the time.
bool WaitFor(const Server& s, const std::string& path,
             const std::function<bool(const json&)>& pred, double seconds) {
#ifdef __SANITIZE_THREAD__
  seconds *= 4;
#endif
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
  while (std::chrono::steady_clock::now() < deadline) {
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

const char* const kNetContext =
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
std::string Raw(int port, const std::string& head, const std::string& body, int pieces,
                std::chrono::milliseconds gap, std::chrono::seconds timeout) {
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

std::string Describe(const httplib::Result& res) {
  return res ? std::to_string(res->status) + " " + res->body.substr(0, 200)
             : httplib::to_string(res.error());
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

const char* const kCpuContext =
    R"({"device": "high", "network": "wifi", "budget_ms": 0.5, "inferences": 100})";

}  // namespace services
