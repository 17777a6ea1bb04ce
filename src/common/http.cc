#include "common/http.h"

#include <spdlog/spdlog.h>

#include <set>

#include "common/error.h"
#include "common/fs.h"

namespace da::http {

void ServerOptions::Validate() const {
  if (host.empty()) throw UserError("bind address must not be empty");
  if (port < 0 || port > 65535) throw UserError("port must be in 0..65535");
  if (max_body_bytes < 1024) throw UserError("max body must be >= 1024 bytes");
  if (threads < 1 || threads > 1024) throw UserError("server threads must be in 1..1024");
}

void Json(httplib::Response& res, const nlohmann::json& body, int status) {
  res.status = status;
  res.set_content(body.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace),
                  "application/json");
}

void Error(httplib::Response& res, int status, const std::string& message) {
  Json(res, {{"error", message}}, status);
}

nlohmann::json JsonBody(const httplib::Request& req) {
  nlohmann::json j = nlohmann::json::parse(req.body, nullptr, false);
  if (j.is_discarded()) throw HttpError(400, "body is not valid JSON");
  if (!j.is_object()) throw HttpError(400, "body must be a JSON object");
  return j;
}

void ServeImmutable(const httplib::Request& req, httplib::Response& res, const std::string& path,
                    const std::string& sha256, const std::string& content_type) {
  const std::string etag = "\"" + sha256 + "\"";
  res.set_header("ETag", etag);
  res.set_header("Cache-Control", "public, max-age=31536000, immutable");
  if (req.get_header_value("If-None-Match") == etag) {
    res.status = 304;
    return;
  }
  res.status = 200;
  res.set_content(ReadFile(path), content_type);
}

void Configure(httplib::Server& server, const ServerOptions& o, Metrics& metrics,
               std::function<std::string(const std::string& path)> endpoint) {
  o.Validate();
  metrics.Declare("http_requests_total", "counter", "HTTP requests by endpoint and status");
  const int threads = o.threads;
  server.new_task_queue = [threads] { return new httplib::ThreadPool(threads); };
  server.set_payload_max_length(o.max_body_bytes);
  server.set_read_timeout(10);
  server.set_write_timeout(10);
  server.set_keep_alive_timeout(2);
  server.set_exception_handler([](const httplib::Request&, httplib::Response& res,
                                  std::exception_ptr ep) {
    try {
      std::rethrow_exception(ep);
    } catch (const HttpError& e) {
      Error(res, e.status(), e.what());
    } catch (const UserError& e) {
      Error(res, 400, e.what());
    } catch (const std::exception& e) {
      spdlog::error("internal error: {}", e.what());
      Error(res, 500, std::string("internal error: ") + e.what());
    } catch (...) {
      Error(res, 500, "internal error");
    }
  });
  server.set_error_handler([](const httplib::Request& req, httplib::Response& res) {
    if (!res.body.empty()) return;  // a handler already explained it
    if (res.status == 404)
      Error(res, 404, "no such resource: " + req.path);
    else if (res.status == 413)
      Error(res, 413, "body too large");
    else
      Error(res, res.status, "request failed with status " + std::to_string(res.status));
  });
  server.set_logger([&metrics, endpoint](const httplib::Request& req,
                                         const httplib::Response& res) {
    static const std::set<std::string> methods = {"GET", "POST", "HEAD", "PUT", "DELETE", "OPTIONS"};
    const std::string method = methods.count(req.method) ? req.method : "OTHER";
    metrics.Add("http_requests_total", Label("endpoint", method + " " + endpoint(req.path)) +
                                           "," + Label("status", std::to_string(res.status)));
  });
}

int Bind(httplib::Server& server, const ServerOptions& o) {
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
