#pragma once
// Files under directories served at URL prefixes: MIME type by extension,
// ETag = the content's sha256 (304 on If-None-Match), and Cache-Control
// `immutable` for versioned mounts, `no-cache` (revalidate each time)
// otherwise. Paths that leave the directory are 404. Text is compressed by
// the server when the client accepts it.
#include <httplib.h>

#include <map>
#include <mutex>
#include <string>
#include <vector>

namespace da::http {

class StaticFiles {
 public:
  // Serves DIR/rest at PREFIX + rest (PREFIX ends with '/').
  void Mount(const std::string& prefix, const std::string& dir, bool immutable);
  // Serves one file at an exact path.
  void Alias(const std::string& path, const std::string& file);
  void AddRoutes(httplib::Server& server);

 private:
  void Serve(const httplib::Request& req, httplib::Response& res, const std::string& file,
             bool immutable);
  struct Mounted {
    std::string prefix, dir;
    bool immutable;
  };
  struct Cached {
    std::string content, etag;
    int64_t mtime = 0;
  };
  std::vector<Mounted> mounts_;
  std::map<std::string, std::string> aliases_;
  std::mutex mu_;
  std::map<std::string, Cached> cache_;  // path -> content (files are small)
};

std::string MimeType(const std::string& path);

}  // namespace da::http
