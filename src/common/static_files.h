#pragma once
// Files and models for browsers, precompressed: each body is kept with its
// brotli and gzip forms (made once, on first request), and a request gets the
// smallest its Accept-Encoding allows (Vary: Accept-Encoding). ETag = the
// sha256 of the uncompressed content (304 on If-None-Match). Cache-Control:
// `immutable` for a year when the URL names the content (`?v=` + the first 16
// hex digits of its sha256, as VersionedUrl writes it), `no-cache` otherwise
// (revalidate: a 304 costs no body).
#include <httplib.h>

#include <cstdint>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <string>

namespace da::http {

// A body with its compressed forms (empty when compression does not shrink it).
struct Asset {
  std::string identity, gzip, br, sha256, type;
};

// Compresses `content` (gzip level 9; brotli quality 11, 9 past 1 MB).
std::shared_ptr<const Asset> MakeAsset(std::string content, std::string type);

// Answers `req` with `a` as above.
void ServeAsset(const httplib::Request& req, httplib::Response& res,
                std::shared_ptr<const Asset> a);

// Whether the request's ?v= names the content with hash `sha256`.
bool Immutable(const httplib::Request& req, const std::string& sha256);

// `path` + "?v=" + the first 16 hex digits of `sha256`.
std::string VersionedUrl(const std::string& path, const std::string& sha256);

// Assets by key, made once per version (a file's mtime, a model's sha256);
// at most `max_bytes` of bodies kept, the least recently used dropped first.
class AssetCache {
 public:
  explicit AssetCache(int64_t max_bytes = 256 << 20) : max_bytes_(max_bytes) {}
  // The asset for (key, version): cached, or made from `load()` outside the
  // lock, once: concurrent callers for the same one wait for the first's
  // (a crowd of first downloads loaded and compressed a model each, issue 27),
  // and get its exception when it fails.
  template <typename Load>
  std::shared_ptr<const Asset> Get(const std::string& key, const std::string& version,
                                   const std::string& type, Load load) {
    std::promise<std::shared_ptr<const Asset>> mine;
    std::shared_future<std::shared_ptr<const Asset>> theirs;
    const std::string flight = key + '\0' + version;
    {
      std::lock_guard lock(mu_);
      if (auto a = FindLocked(key, version)) return a;
      auto [it, first] = flights_.try_emplace(flight, mine.get_future().share());
      if (!first) theirs = it->second;
    }
    if (theirs.valid()) return theirs.get();
    try {
      auto a = MakeAsset(load(), type);
      Put(key, version, a, flight);
      mine.set_value(a);
      return a;
    } catch (...) {
      {
        std::lock_guard lock(mu_);
        flights_.erase(flight);
      }
      mine.set_exception(std::current_exception());
      throw;
    }
  }

 private:
  std::shared_ptr<const Asset> FindLocked(const std::string& key, const std::string& version);
  // Keeps `a` and ends its flight.
  void Put(const std::string& key, const std::string& version, std::shared_ptr<const Asset> a,
           const std::string& flight);
  struct Entry {
    std::string version;
    std::shared_ptr<const Asset> asset;
    uint64_t used = 0;
  };
  int64_t max_bytes_, bytes_ = 0;
  uint64_t clock_ = 0;
  std::mutex mu_;
  std::map<std::string, Entry> entries_;
  std::map<std::string, std::shared_future<std::shared_ptr<const Asset>>> flights_;
};

class StaticFiles {
 public:
  // Serves DIR/rest at PREFIX + rest (PREFIX ends with '/').
  void Mount(const std::string& prefix, const std::string& dir);
  // Serves one file at an exact path.
  void Alias(const std::string& path, const std::string& file);
  void AddRoutes(httplib::Server& server);
  // The URL of the file served at `path` with its content's version (for
  // immutable caching); `path` unchanged when no such file exists.
  std::string Versioned(const std::string& path);

 private:
  std::string FileOf(const std::string& path) const;  // "" when none
  std::shared_ptr<const Asset> Load(const std::string& file);
  void Serve(const httplib::Request& req, httplib::Response& res, const std::string& file);
  std::map<std::string, std::string> mounts_;  // prefix -> dir
  std::map<std::string, std::string> aliases_;
  AssetCache cache_;
};

std::string MimeType(const std::string& path);

}  // namespace da::http
