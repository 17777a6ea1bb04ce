// The HTTP server: cpp-httplib's with the per-request limits, the bounded
// connection pool and the CORS handling http.h describes, and its setup
// (error answers, request metrics, binding).
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <mutex>
#include <set>
#include <thread>

#include "common/error.h"
#include "common/http.h"

namespace da::http {
namespace {

using Clock = std::chrono::steady_clock;
constexpr double kWriteTimeoutS = 10;                 // a client must take each write within this
constexpr size_t kHeadBytes = 64 << 10;               // request line + headers
constexpr auto kSlowAfter = std::chrono::seconds(1);  // a request still arriving is slow

// What went wrong with the request being read on this thread's connection
// (one thread serves a connection), for the error handler's message.
struct Guard {
  bool too_large = false, too_slow = false, head_done = false;
  bool close = false;  // the body was not read: the connection cannot go on
};
thread_local Guard* current_guard = nullptr;

// A socket stream with a per-request deadline and byte budget (httplib's own
// stream times out each read separately, so a trickle never ends).
class GuardedStream : public httplib::Stream {
 public:
  GuardedStream(socket_t sock, const ServerOptions& o, std::atomic<int>& slow)
      : sock_(sock), o_(o), slow_(slow), max_slow_(std::max(1, o.threads / 4)) {}
  ~GuardedStream() override { Unslow(); }

  // A new request starts: its clock and budget restart.
  void Start(Guard* g) {
    Unslow();
    guard_ = g;
    start_ = Clock::now();
    read_ = 0;
  }
  bool buffered() const { return off_ < len_; }

  bool is_readable() const override { return buffered() || Poll(POLLIN, o_.request_timeout_s) > 0; }
  bool is_writable() const override { return Poll(POLLOUT, kWriteTimeoutS) > 0; }
  ssize_t read(char* ptr, size_t size) override {
    if (!buffered() && !Fill()) return -1;
    const size_t n = std::min(size, len_ - off_);
    std::memcpy(ptr, buf_ + off_, n);
    off_ += n;
    return static_cast<ssize_t>(n);
  }
  ssize_t write(const char* ptr, size_t size) override {
    if (!is_writable()) return -1;
    return ::send(sock_, ptr, size, MSG_NOSIGNAL);
  }
  void get_remote_ip_and_port(std::string& ip, int& port) const override {
    Address(::getpeername, ip, port);
  }
  void get_local_ip_and_port(std::string& ip, int& port) const override {
    Address(::getsockname, ip, port);
  }
  socket_t socket() const override { return sock_; }

 private:
  int Poll(short events, double timeout_s) const {
    pollfd p{sock_, events, 0};
    return ::poll(&p, 1, static_cast<int>(timeout_s * 1000));
  }
  bool Fill() {
    const auto deadline = start_ + std::chrono::duration_cast<Clock::duration>(
                                       std::chrono::duration<double>(o_.request_timeout_s));
    for (;;) {
      const auto now = Clock::now();
      if (now >= deadline) return Fail(&Guard::too_slow);
      auto until = deadline;
      if (!slow_counted_) {
        if (now - start_ >= kSlowAfter) {
          if (slow_.fetch_add(1) >= max_slow_) {
            slow_.fetch_sub(1);
            return Fail(&Guard::too_slow);
          }
          slow_counted_ = true;
        } else {
          until = start_ + kSlowAfter;
        }
      }
      const double wait = std::chrono::duration<double>(until - now).count();
      const int r = Poll(POLLIN, std::max(0.001, wait));
      if (r < 0 && errno != EINTR) return false;
      if (r <= 0) continue;
      const ssize_t n = ::recv(sock_, buf_, sizeof buf_, 0);
      if (n <= 0) return false;
      read_ += static_cast<size_t>(n);
      const size_t budget = kHeadBytes + (guard_ && guard_->head_done ? o_.max_body_bytes : 0);
      if (read_ > budget) return Fail(&Guard::too_large);
      off_ = 0;
      len_ = static_cast<size_t>(n);
      return true;
    }
  }
  bool Fail(bool Guard::*what) {
    if (guard_) guard_->*what = true;
    return false;
  }
  void Unslow() {
    if (slow_counted_) slow_.fetch_sub(1);
    slow_counted_ = false;
  }
  void Address(int (*get)(int, sockaddr*, socklen_t*), std::string& ip, int& port) const {
    sockaddr_storage addr{};
    socklen_t len = sizeof addr;
    char host[NI_MAXHOST] = "", serv[NI_MAXSERV] = "";
    if (get(sock_, reinterpret_cast<sockaddr*>(&addr), &len) == 0 &&
        ::getnameinfo(reinterpret_cast<sockaddr*>(&addr), len, host, sizeof host, serv, sizeof serv,
                      NI_NUMERICHOST | NI_NUMERICSERV) == 0) {
      ip = host;
      port = std::atoi(serv);
    }
  }

  socket_t sock_;
  const ServerOptions& o_;
  std::atomic<int>& slow_;
  const int max_slow_;
  Guard* guard_ = nullptr;
  Clock::time_point start_;
  size_t read_ = 0;
  bool slow_counted_ = false;
  char buf_[16 << 10];
  size_t off_ = 0, len_ = 0;
};

bool CorsAllowed(const ServerOptions& o, const httplib::Request& req) {
  const std::string origin = req.get_header_value("Origin");
  return !origin.empty() && std::any_of(o.cors_origins.begin(), o.cors_origins.end(),
                                        [&](const auto& x) { return x == "*" || x == origin; });
}

void AddCors(const ServerOptions& o, const httplib::Request& req, httplib::Response& res) {
  if (!CorsAllowed(o, req) || res.has_header("Access-Control-Allow-Origin")) return;
  res.set_header("Access-Control-Allow-Origin", req.get_header_value("Origin"));
  res.set_header("Vary", "Origin");
  res.set_header("Access-Control-Expose-Headers", "ETag, Inference-Header-Content-Length");
}

thread_local bool overloaded = false;  // this connection is to be turned away

// Answers a connection turned away for lack of threads: what of its request
// already arrived is read (so closing does not reset the connection before
// the answer is read), then 503 with Retry-After.
void TurnAway(socket_t sock) {
  char buf[16384];
  while (::recv(sock, buf, sizeof buf, MSG_DONTWAIT) > 0) {
  }
  static const std::string body =
      R"({"error": "the server is at capacity; retry after the time in Retry-After"})";
  const std::string answer =
      "HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Type: "
      "application/json\r\nContent-Length: " +
      std::to_string(body.size()) + "\r\nConnection: close\r\n\r\n" + body;
  ::send(sock, answer.data(), answer.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
}

}  // namespace

class Server::Pool : public httplib::TaskQueue {
 public:
  Pool(int threads, size_t max_waiting) : max_waiting_(max_waiting) {
    for (int i = 0; i < threads; ++i) threads_.emplace_back([this] { Work(false); });
    threads_.emplace_back([this] { Work(true); });  // turns connections away
  }
  void enqueue(std::function<void()> fn) override {
    {
      std::lock_guard lock(mu_);
      (jobs_.size() < max_waiting_ ? jobs_ : away_).push_back(std::move(fn));
    }
    cv_.notify_all();
  }
  void shutdown() override {
    {
      std::lock_guard lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    for (auto& t : threads_) t.join();
  }
  bool Waiting() {
    std::lock_guard lock(mu_);
    return !jobs_.empty();
  }

 private:
  void Work(bool turn_away) {
    overloaded = turn_away;
    auto& queue = turn_away ? away_ : jobs_;
    for (;;) {
      std::function<void()> fn;
      {
        std::unique_lock lock(mu_);
        cv_.wait(lock, [&] { return stop_ || !queue.empty(); });
        if (queue.empty()) return;  // stopping, nothing left
        fn = std::move(queue.front());
        queue.pop_front();
      }
      fn();
    }
  }
  const size_t max_waiting_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> jobs_, away_;
  std::vector<std::thread> threads_;
  bool stop_ = false;
};

Server::Server(const ServerOptions& o) : opts_(o) {
  opts_.Validate();
  new_task_queue = [this] {
    pool_ = new Pool(opts_.threads, static_cast<size_t>(opts_.threads));
    return pool_;
  };
  // Our connection loop below honours these; httplib announces them in Keep-Alive.
  set_keep_alive_max_count(100);
  set_keep_alive_timeout(2);
  // Compressed bodies are refused before their body is read (the routing
  // handlers run after it); the connection is closed after the answer.
  // CORS preflights of allowed origins are answered here; others get 403.
  set_pre_routing_handler([this](const httplib::Request& req, httplib::Response& res) {
    const std::string enc = req.get_header_value("Content-Encoding");
    if (!enc.empty() && enc != "identity") {
      Error(res, 415, "compressed request bodies (Content-Encoding: " + enc + ") are not accepted");
      res.set_header("Connection", "close");
      if (current_guard) current_guard->close = true;
      return HandlerResponse::Handled;
    }
    if (req.method != "OPTIONS" || !req.has_header("Origin")) return HandlerResponse::Unhandled;
    if (!CorsAllowed(opts_, req)) {
      Error(res, 403, "origin not allowed");
      return HandlerResponse::Handled;
    }
    AddCors(opts_, req, res);
    res.set_header("Access-Control-Allow-Methods", "GET, POST");
    res.set_header("Access-Control-Allow-Headers",
                   "Content-Type, Authorization, Inference-Header-Content-Length, If-None-Match");
    res.set_header("Access-Control-Max-Age", "600");
    res.status = 204;
    return HandlerResponse::Handled;
  });
}

bool Server::process_and_close_socket(socket_t sock) {
  bool ret = false;
  // Head and body go out in separate writes: without this, Nagle's algorithm
  // and the client's delayed ACK hold every small answer back ~40 ms.
  const int one = 1;
  ::setsockopt(sock, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  if (overloaded) {
    TurnAway(sock);
  } else {
    GuardedStream strm(sock, opts_, slow_);
    for (size_t left = keep_alive_max_count_; left > 0 && svr_sock_ != INVALID_SOCKET; --left) {
      // Wait for the next request (keep-alive), watching for stop() and for
      // connections waiting for a thread.
      bool ready = strm.buffered();
      for (auto until = Clock::now() + std::chrono::seconds(keep_alive_timeout_sec_);
           !ready && svr_sock_ != INVALID_SOCKET && Clock::now() < until &&
           !(left < keep_alive_max_count_ && pool_->Waiting());) {
        pollfd p{sock, POLLIN, 0};
        ready = ::poll(&p, 1, 100) > 0;
      }
      if (!ready) break;
      Guard guard;
      current_guard = &guard;
      strm.Start(&guard);
      bool closed = false;
      ret = process_request(strm, left == 1, closed, [&guard](httplib::Request& req) {
        guard.head_done = true;
        req.ranges.clear();  // always the whole resource
      });
      current_guard = nullptr;
      if (!ret || closed || guard.too_large || guard.too_slow || guard.close) break;
    }
  }
  ::shutdown(sock, SHUT_RDWR);
  ::close(sock);
  return ret;
}

void Configure(Server& server, const ServerOptions& o, Metrics& metrics,
               std::function<std::string(const std::string& path)> endpoint) {
  o.Validate();
  metrics.Declare("http_requests_total", "counter", "HTTP requests by endpoint and status");
  server.set_payload_max_length(o.max_body_bytes);
  // CORS headers on every answer to an allowed origin (preflights: Server).
  auto cors = [o](const httplib::Request& req, httplib::Response& res) { AddCors(o, req, res); };
  server.set_post_routing_handler(cors);
  server.set_exception_handler(
      [cors](const httplib::Request& req, httplib::Response& res, std::exception_ptr ep) {
        cors(req, res);
        try {
          std::rethrow_exception(ep);
        } catch (const HttpError& e) {
          Error(res, e.status(), e.what());
        } catch (const UserError& e) {
          Error(res, 400, e.what());
        } catch (const std::exception& e) {
          spdlog::error("internal error: {}", e.what());  // the detail stays in the log
          Error(res, 500, "internal error");
        } catch (...) {
          Error(res, 500, "internal error");
        }
      });
  server.set_error_handler([cors](const httplib::Request& req, httplib::Response& res) {
    cors(req, res);
    if (!res.body.empty()) return;  // a handler already explained it
    if (current_guard && current_guard->too_large) res.status = 413;
    if (current_guard && current_guard->too_slow) res.status = 408;
    if (res.status == 408)
      Error(res, 408, "request too slow: it must arrive within the request timeout");
    else if (res.status == 404)
      Error(res, 404, "no such resource: " + req.path);
    else if (res.status == 413)
      Error(res, 413, "body too large");
    else
      Error(res, res.status, "request failed with status " + std::to_string(res.status));
  });
  server.set_logger(
      [&metrics, endpoint](const httplib::Request& req, const httplib::Response& res) {
        static const std::set<std::string> methods = {"GET", "POST",   "HEAD",
                                                      "PUT", "DELETE", "OPTIONS"};
        const std::string method = methods.count(req.method) ? req.method : "OTHER";
        metrics.Add("http_requests_total", Label("endpoint", method + " " + endpoint(req.path)) +
                                               "," + Label("status", std::to_string(res.status)));
      });
}

int Bind(Server& server, const ServerOptions& o) {
  // cpp-httplib 0.11 listens with a backlog of 5: under a burst of clients the
  // kernel drops connections (they fail after a 1 s SYN retry). Keep the
  // socket and listen again with a deep backlog.
  auto sock = std::make_shared<int>(-1);
  server.set_socket_options([sock](socket_t s) {
    httplib::default_socket_options(s);
    *sock = s;
  });
  int port = o.port;
  if (o.port == 0) {
    port = server.bind_to_any_port(o.host);
    if (port <= 0) throw UserError("cannot bind to " + o.host);
  } else if (!server.bind_to_port(o.host, o.port)) {
    throw UserError("cannot bind to " + o.host + ":" + std::to_string(o.port));
  }
  if (*sock >= 0) ::listen(*sock, 1024);
  return port;
}

}  // namespace da::http
