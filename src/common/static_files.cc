#include "common/static_files.h"

#include <filesystem>
#include <regex>

#include "common/error.h"
#include "common/fs.h"
#include "common/http.h"
#include "common/sha256.h"

namespace da::http {
namespace fs = std::filesystem;

std::string MimeType(const std::string& path) {
  static const std::map<std::string, std::string> types = {
      {".html", "text/html; charset=utf-8"},
      {".js", "text/javascript; charset=utf-8"},
      {".mjs", "text/javascript; charset=utf-8"},
      {".css", "text/css; charset=utf-8"},
      {".json", "application/json"},
      {".map", "application/json"},
      {".wasm", "application/wasm"},
      {".svg", "image/svg+xml"},
      {".png", "image/png"},
      {".ts", "text/plain; charset=utf-8"},
      {".md", "text/plain; charset=utf-8"},
      {".onnx", "application/octet-stream"}};
  auto it = types.find(fs::path(path).extension().string());
  return it == types.end() ? "application/octet-stream" : it->second;
}

void StaticFiles::Mount(const std::string& prefix, const std::string& dir) {
  mounts_[prefix] = dir;
}

void StaticFiles::Alias(const std::string& path, const std::string& file) { aliases_[path] = file; }

void StaticFiles::AddRoutes(httplib::Server& server) {
  for (const auto& [path, file] : aliases_)
    server.Get(path, [this, file = file](const httplib::Request& req, httplib::Response& res) {
      Serve(req, res, file);
    });
  for (const auto& [prefix, dir] : mounts_)
    server.Get(prefix + "(.+)", [this, dir = dir](const httplib::Request& req,
                                                  httplib::Response& res) {
      const std::string rest = req.matches[1];
      // Plain relative paths only: no empty, hidden, "." or ".." segments.
      static const std::regex ok(R"(([A-Za-z0-9_][A-Za-z0-9_.\-]*/)*[A-Za-z0-9_][A-Za-z0-9_.\-]*)");
      if (!std::regex_match(rest, ok)) throw HttpError(404, "no such file: " + req.path);
      Serve(req, res, (fs::path(dir) / rest).string());
    });
}

void StaticFiles::Serve(const httplib::Request& req, httplib::Response& res,
                        const std::string& file) {
  std::error_code ec;
  if (!fs::is_regular_file(file, ec)) throw HttpError(404, "no such file: " + req.path);
  const int64_t mtime = fs::last_write_time(file, ec).time_since_epoch().count();
  std::shared_ptr<const Cached> c;
  {
    std::lock_guard lock(mu_);
    auto it = cache_.find(file);
    if (it != cache_.end() && it->second->mtime == mtime) c = it->second;
  }
  if (!c) {
    std::string content = ReadFile(file);
    std::string sha = Sha256Hex(content);
    c = std::make_shared<const Cached>(Cached{std::move(content), std::move(sha), mtime});
    std::lock_guard lock(mu_);
    cache_[file] = c;
  }
  if (NotModified(req, res, c->sha256, "no-cache")) return;
  res.set_content(c->content, MimeType(file));
}

}  // namespace da::http
