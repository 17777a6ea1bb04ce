#pragma once
// The edge's link to the cloud: every call bounded by timeouts, and whether
// the cloud is reachable, learnt from those calls and from a heartbeat
// (GET /healthz every `heartbeat_s`): a refused connection marks it down at
// once, two failed heartbeats in a row (a frozen cloud) too, one success up.
// Errors never name the cloud's address (browsers see them); the log does.
#include <atomic>
#include <condition_variable>
#include <mutex>
#include <string>
#include <thread>

namespace da::edge {

struct CloudLinkOptions {
  std::string url;    // http://host:port
  std::string token;  // sent as a bearer token with POSTs when set
  double connect_timeout_s = 1;
  double read_timeout_s = 5;  // per read, not per transfer
  double heartbeat_s = 1;
  double heartbeat_timeout_s = 2;
};

class CloudLink {
 public:
  explicit CloudLink(CloudLinkOptions o);  // starts the heartbeat
  ~CloudLink();

  bool up() const { return up_; }
  std::string problem() const;  // why it is down ("" while up)

  // GET: the body of a 200 answer; otherwise std::runtime_error naming the
  // path and what went wrong.
  std::string Get(const std::string& path);
  // POST a JSON body: the status, or -1 when the cloud was not reached.
  int Post(const std::string& path, const std::string& body, std::string* answer = nullptr);

 private:
  void Heartbeat();
  void Mark(bool ok, const std::string& why);

  CloudLinkOptions o_;
  std::atomic<bool> up_{false};
  mutable std::mutex mu_;
  std::string problem_ = "not reached yet";
  bool stopping_ = false;
  std::condition_variable cv_;
  std::thread heartbeat_;
};

}  // namespace da::edge
