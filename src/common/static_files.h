#pragma once
// Files under directories served at URL prefixes: MIME type by extension,
// ETag = the content's sha256 (304 on If-None-Match), Cache-Control
// `no-cache` (revalidate each time: the paths are not content-hashed). Paths
// that leave the directory are 404. Text is compressed by the server when the
// client accepts it.
#include <httplib.h>

#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace da::http {

class StaticFiles {
 public:
  // Serves DIR/rest at PREFIX + rest (PREFIX ends with '/').
  void Mount(const std::string& prefix, const std::string& dir);
  // Serves one file at an exact path.
  void Alias(const std::string& path, const std::string& file);
  void AddRoutes(httplib::Server& server);

 private:
  void Serve(const httplib::Request& req, httplib::Response& res, const std::string& file);
  struct Cached {
    std::string content, sha256;
    int64_t mtime = 0;
  };
  std::map<std::string, std::string> mounts_;  // prefix -> dir
  std::map<std::string, std::string> aliases_;
  std::mutex mu_;
  std::map<std::string, std::shared_ptr<const Cached>> cache_;  // path -> content
};

std::string MimeType(const std::string& path);

}  // namespace da::http
