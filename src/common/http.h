#pragma once
// What the HTTP services share (cpp-httplib): JSON answers and errors,
// immutable content-addressed files, server setup with request metrics.
#include <httplib.h>

#include <atomic>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "common/metrics.h"

namespace da::http {

struct ServerOptions {
  std::string host = "127.0.0.1";  // loopback unless configured otherwise
  int port = 0;                    // 0: any free port
  size_t max_body_bytes = 8 << 20;
  int threads = 256;              // connections served at once (as many more may wait)
  double request_timeout_s = 20;  // a request's head and body must arrive within this
  // Endpoints that change state (RequireToken) want "Authorization: Bearer
  // <token>" when a token is set; without one they serve loopback binds only.
  std::string token;
  // Pages of these origins may call the server from a browser (CORS; "*": any).
  std::vector<std::string> cors_origins;
  bool Loopback() const;  // host is 127.x.x.x, ::1 or localhost
  void Validate() const;  // UserError when out of range
};

// For endpoints that change state: HttpError 401 when a token is set and the
// request does not carry it, 403 when none is set and the server is bound
// beyond loopback.
void RequireToken(const httplib::Request& req, const ServerOptions& o);

// cpp-httplib's server with the limits its 0.11 lacks, per request:
//  - the head and body must arrive within `request_timeout_s` (a client
//    sending a byte every few seconds is cut off: 408);
//  - at most a quarter of the threads serve requests still arriving after 1 s
//    ("slow" connections); more are refused, so slow clients cannot starve
//    the rest;
//  - at most max_body + 64 KiB bytes are read per request, whatever its framing
//    (chunked, no length): 413;
//  - compressed request bodies (Content-Encoding) are refused (415): a small
//    gzip body can decode to gigabytes, and browsers never send them;
//  - Range headers are ignored: the full 200 answer is always sent;
//  - CORS preflights (OPTIONS with an Origin) are answered for cors_origins
//    (204 with the allowed methods and headers), 403 for other origins.
// and per server: `threads` connections are served at once and as many more
// may wait; beyond that a connection gets 503 with Retry-After at once
// (0.11 queues them without limit). While some wait, a connection idle
// between keep-alive requests is closed, so threads serve requests, not
// idle connections.
class Server : public httplib::Server {
 public:
  explicit Server(const ServerOptions& o);

 private:
  class Pool;
  bool process_and_close_socket(socket_t sock) override;
  ServerOptions opts_;
  std::atomic<int> slow_{0};
  Pool* pool_ = nullptr;  // owned by httplib (new_task_queue)
};

void Json(httplib::Response& res, const nlohmann::json& body, int status = 200);
void Error(httplib::Response& res, int status, const std::string& message);

inline constexpr const char* kImmutable = "public, max-age=31536000, immutable";

// The body as a JSON object; HttpError(400) when it is not.
nlohmann::json JsonBody(const httplib::Request& req);

// Query parameter `name` as an integer in [lo, hi]; `fallback` when absent;
// HttpError(400) naming it otherwise.
int64_t IntParam(const httplib::Request& req, const std::string& name, int64_t fallback, int64_t lo,
                 int64_t hi);

// Sets ETag (quoted `sha256`) and Cache-Control; true, with status 304, when
// the request's If-None-Match already names that ETag.
bool NotModified(const httplib::Request& req, httplib::Response& res, const std::string& sha256,
                 const std::string& cache_control = kImmutable);

// Serves the file at `path` whose content has hash `sha256`: ETag, immutable
// caching, 304 Not Modified when If-None-Match matches.
void ServeImmutable(const httplib::Request& req, httplib::Response& res, const std::string& path,
                    const std::string& sha256, const std::string& content_type);

// Applies `o` to `server`: body limit (413), timeouts, a thread pool, CORS
// headers on every answer to an origin in o.cors_origins, JSON
// errors for unknown routes and for exceptions (HttpError/UserError: their
// status or 400; anything else: 500 "internal error", the detail only logged),
// and counts requests in `metrics` ("http_requests_total" by endpoint and
// status; `endpoint` names a path's route).
void Configure(Server& server, const ServerOptions& o, Metrics& metrics,
               std::function<std::string(const std::string& path)> endpoint);

// Binds `server` to o.host:o.port; returns the port. UserError when it cannot.
int Bind(Server& server, const ServerOptions& o);

}  // namespace da::http
