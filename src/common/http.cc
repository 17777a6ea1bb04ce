// HTTP request and answer helpers: options, tokens, JSON bodies and
// errors, parameters, conditional GETs. The server itself: http_server.cc.
#include "common/http.h"


#include "common/error.h"
#include "common/fs.h"

namespace da::http {

bool ServerOptions::Loopback() const {
  return host == "localhost" || host == "::1" || host.starts_with("127.");
}

void RequireToken(const httplib::Request& req, const ServerOptions& o) {
  if (o.token.empty()) {
    if (!o.Loopback())
      throw HttpError(403,
                      "this endpoint changes state: the server needs --token to allow it "
                      "beyond loopback");
    return;
  }
  const std::string got = req.get_header_value("Authorization"), want = "Bearer " + o.token;
  unsigned diff = got.size() != want.size();  // compared in constant time
  for (size_t i = 0; i < want.size(); ++i)
    diff |= unsigned(i < got.size() ? got[i] : 0) ^ unsigned(want[i]);
  if (diff) throw HttpError(401, "this endpoint changes state: send Authorization: Bearer <token>");
}

void ServerOptions::Validate() const {
  if (host.empty()) throw UserError("bind address must not be empty");
  if (!token.empty() && (token.size() < 16 || token.find_first_of(" \t\r\n") != std::string::npos))
    throw UserError("the token must be at least 16 characters, without spaces");
  for (const std::string& origin : cors_origins)
    if (origin != "*" && !origin.starts_with("http://") && !origin.starts_with("https://"))
      throw UserError("CORS origin '" + origin + "' is not * or http(s)://host[:port]");
  if (port < 0 || port > 65535) throw UserError("port must be in 0..65535");
  if (max_body_bytes < 1024) throw UserError("max body must be >= 1024 bytes");
  if (threads < 1 || threads > 1024) throw UserError("server threads must be in 1..1024");
  if (!(request_timeout_s >= 0.1 && request_timeout_s <= 3600))
    throw UserError("request timeout must be in 0.1..3600 s");
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

int64_t IntParam(const httplib::Request& req, const std::string& name, int64_t fallback, int64_t lo,
                 int64_t hi) {
  if (!req.has_param(name.c_str())) return fallback;
  const std::string v = req.get_param_value(name.c_str());
  try {
    size_t used = 0;
    const int64_t n = std::stoll(v, &used);
    if (used == v.size() && n >= lo && n <= hi) return n;
  } catch (const std::exception&) {
  }
  throw HttpError(
      400, name + " must be an integer in " + std::to_string(lo) + ".." + std::to_string(hi));
}

bool NotModified(const httplib::Request& req, httplib::Response& res, const std::string& sha256,
                 const std::string& cache_control) {
  const std::string etag = "\"" + sha256 + "\"";
  res.set_header("ETag", etag);
  res.set_header("Cache-Control", cache_control);
  if (req.get_header_value("If-None-Match") != etag) return false;
  res.status = 304;
  return true;
}

void ServeImmutable(const httplib::Request& req, httplib::Response& res, const std::string& path,
                    const std::string& sha256, const std::string& content_type) {
  if (NotModified(req, res, sha256)) return;
  res.status = 200;
  res.set_content(ReadFile(path), content_type);
}

}  // namespace da::http
