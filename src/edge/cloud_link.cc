#include "edge/cloud_link.h"

#include <httplib.h>
#include <spdlog/spdlog.h>

#include <chrono>
#include <stdexcept>

namespace da::edge {
namespace {

std::unique_ptr<httplib::Client> Client(const CloudLinkOptions& o, double read_timeout_s) {
  auto c = std::make_unique<httplib::Client>(o.url);
  auto us = [](double s) { return std::chrono::microseconds(static_cast<int64_t>(s * 1e6)); };
  c->set_connection_timeout(us(o.connect_timeout_s));
  c->set_read_timeout(us(read_timeout_s));
  c->set_write_timeout(us(read_timeout_s));
  return c;
}

std::string Why(const httplib::Result& res) {
  return res ? "status " + std::to_string(res->status)
             : "unreachable (" + httplib::to_string(res.error()) + ")";
}

}  // namespace

CloudLink::CloudLink(CloudLinkOptions o) : o_(std::move(o)) {
  heartbeat_ = std::thread([this] { Heartbeat(); });
}

CloudLink::~CloudLink() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  heartbeat_.join();
}

std::string CloudLink::problem() const {
  std::lock_guard lock(mu_);
  return up_ ? "" : problem_;
}

void CloudLink::Mark(bool ok, const std::string& why) {
  std::lock_guard lock(mu_);
  if (ok) {
    if (!up_) spdlog::info("edge: the cloud at {} is reachable", o_.url);
    up_ = true;
    return;
  }
  problem_ = "the cloud is " + why;
  if (up_) spdlog::warn("edge: the cloud at {} is {}; serving from the cache", o_.url, why);
  up_ = false;
}

std::string CloudLink::Get(const std::string& path) {
  auto res = Client(o_, o_.read_timeout_s)->Get(path);
  Mark(static_cast<bool>(res), Why(res));
  if (!res || res->status != 200) throw std::runtime_error("cloud GET " + path + ": " + Why(res));
  return res->body;
}

int CloudLink::Post(const std::string& path, const std::string& body, std::string* answer) {
  httplib::Headers headers;
  if (!o_.token.empty()) headers.emplace("Authorization", "Bearer " + o_.token);
  auto res = Client(o_, o_.read_timeout_s)->Post(path, headers, body, "application/json");
  Mark(static_cast<bool>(res), Why(res));
  if (!res) return -1;
  if (answer) *answer = res->body;
  return res->status;
}

void CloudLink::Heartbeat() {
  auto period = std::chrono::microseconds(static_cast<int64_t>(o_.heartbeat_s * 1e6));
  int timeouts = 0;  // in a row
  for (;;) {
    auto res = Client(o_, o_.heartbeat_timeout_s)->Get("/healthz");
    // Refused: the cloud is gone. A timeout may be a busy cloud: twice in a row.
    const bool refused = !res && res.error() == httplib::Error::Connection;
    if (res && res->status == 200) {
      timeouts = 0;
      Mark(true, "");
    } else if (refused || ++timeouts >= 2) {
      Mark(false, Why(res));
    }
    std::unique_lock lock(mu_);
    if (cv_.wait_for(lock, period, [&] { return stopping_; })) return;
  }
}

}  // namespace da::edge
