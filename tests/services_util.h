#pragma once
// What the services tests share: real `deepadapter cloud` and `edge`
// processes on free loopback ports, a tiny family built once per test
// process, and HTTP helpers (httplib and raw sockets).
#include <gtest/gtest.h>
#include <httplib.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <regex>
#include <string>
#include <thread>
#include <vector>

namespace services {
namespace fs = std::filesystem;
using nlohmann::json;

const fs::path& Tmp();  // this process's scratch directory
// Runs `deepadapter args...` to completion; true on exit code 0.
bool RunCli(const std::vector<std::string>& args);
// A tiny trained base and its family of two branches, "net" and "cpu" (built once).
const fs::path& Family();

// A `deepadapter` server process; its port is read from its first output line.
class Server {
 public:
  Server(const std::string& name, const std::vector<std::string>& args)
      : log_(Tmp() / (name + "-" + std::to_string(++count_) + ".log")) {
    std::cout.flush();  // else the child writes what the parent had buffered again
    std::fflush(nullptr);
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
  pid_t pid() const { return pid_; }
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

std::unique_ptr<Server> StartCloud(const std::string& repo, std::vector<std::string> extra = {});
// An edge with short refresh intervals; `extra` flags override them.
std::unique_ptr<Server> StartEdge(const std::string& cloud_url, const std::string& state,
                                  std::vector<std::string> extra = {});
json Get(const Server& s, const std::string& path, int expect = 200);
json Post(const Server& s, const std::string& path, const std::string& body, int expect = 200);
// Waits until `pred(GET path)` holds, at most `seconds` (4x that under TSan).
bool WaitFor(const Server& s, const std::string& path,
             const std::function<bool(const json&)>& pred, double seconds = 30);
// How long a test waits for the cloud's prune job: it fine-tunes with libtorch,
// ~15 s here unsanitized; under ASan in CI it had not finished after 60 s.
constexpr double kPruneWaitSeconds = 300;
bool Ready(const json& health);  // catalog and base model loaded
// Sum of the metric lines starting with `line_prefix`.
double Metric(const Server& s, const std::string& line_prefix);
std::string InferBody(int n);  // an Open Inference Protocol request of n images
// Sends `head` (then `body` in `pieces`, one every `gap`) on a raw connection;
// returns what the server answered (until it closes or `timeout`). Stops
// sending once an answer arrives.
std::string Raw(int port, const std::string& head, const std::string& body = "", int pieces = 1,
                std::chrono::milliseconds gap = {},
                std::chrono::seconds timeout = std::chrono::seconds(20));
int StatusOf(const std::string& answer);
// A result for a failure message: status and the body's start, or the error.
std::string Describe(const httplib::Result& res);
double Seconds(std::chrono::steady_clock::time_point since);
json Catalog(const Server& cloud);
json Record(const json& catalog, const std::string& id);
bool Cached(const Server& edge, const std::string& id);  // on the edge's disk
extern const char* const kNetContext;                    // low-end phone on 3G: the "net" branch
extern const char* const kCpuContext;                    // high-end phone on WiFi: the "cpu" branch

}  // namespace services
