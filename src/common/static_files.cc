#include "common/static_files.h"

#include <brotli/encode.h>
#include <zlib.h>

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

namespace {

std::string Gzip(const std::string& in) {
  z_stream z{};
  if (deflateInit2(&z, 9, Z_DEFLATED, 15 + 16, 9, Z_DEFAULT_STRATEGY) != Z_OK) return "";
  std::string out(deflateBound(&z, in.size()), '\0');
  z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(in.data()));
  z.avail_in = static_cast<uInt>(in.size());
  z.next_out = reinterpret_cast<Bytef*>(out.data());
  z.avail_out = static_cast<uInt>(out.size());
  const int r = deflate(&z, Z_FINISH);
  out.resize(z.total_out);
  deflateEnd(&z);
  return r == Z_STREAM_END ? out : "";
}

std::string Brotli(const std::string& in) {
  size_t n = BrotliEncoderMaxCompressedSize(in.size());
  if (n == 0) return "";
  std::string out(n, '\0');
  const int quality = in.size() > (1u << 20) ? 9 : BROTLI_MAX_QUALITY;
  if (!BrotliEncoderCompress(quality, BROTLI_DEFAULT_WINDOW, BROTLI_MODE_GENERIC, in.size(),
                             reinterpret_cast<const uint8_t*>(in.data()), &n,
                             reinterpret_cast<uint8_t*>(out.data())))
    return "";
  out.resize(n);
  return out;
}

// Whether Accept-Encoding lists `coding` (or *) without q=0.
bool Accepts(const httplib::Request& req, const std::string& coding) {
  const std::string h = req.get_header_value("Accept-Encoding");
  size_t at = 0;
  while (at <= h.size()) {
    size_t end = h.find(',', at);
    if (end == std::string::npos) end = h.size();
    std::string item = h.substr(at, end - at);
    at = end + 1;
    std::string name = item.substr(0, item.find(';'));
    name.erase(0, name.find_first_not_of(" \t"));
    name.erase(name.find_last_not_of(" \t") + 1);
    if (name != coding && name != "*") continue;
    static const std::regex q0(R"(;\s*q\s*=\s*0(\.0*)?\s*$)");
    return !std::regex_search(item, q0);
  }
  return false;
}

}  // namespace

std::shared_ptr<const Asset> MakeAsset(std::string content, std::string type) {
  auto a = std::make_shared<Asset>();
  a->sha256 = Sha256Hex(content);
  a->gzip = Gzip(content);
  a->br = Brotli(content);
  if (a->gzip.size() >= content.size()) a->gzip.clear();
  if (a->br.size() >= content.size()) a->br.clear();
  a->identity = std::move(content);
  a->type = std::move(type);
  return a;
}

void ServeAsset(const httplib::Request& req, httplib::Response& res,
                std::shared_ptr<const Asset> a) {
  res.set_header("Vary", "Accept-Encoding");
  if (NotModified(req, res, a->sha256, Immutable(req, a->sha256) ? kImmutable : "no-cache")) return;
  const std::string* body = &a->identity;
  if (!a->br.empty() && Accepts(req, "br")) {
    body = &a->br;
    res.set_header("Content-Encoding", "br");
  } else if (!a->gzip.empty() && Accepts(req, "gzip")) {
    body = &a->gzip;
    res.set_header("Content-Encoding", "gzip");
  }
  res.status = 200;
  // A provider of known length: sent as it is (httplib compresses only
  // res.body and chunked providers), without copying the body.
  res.set_content_provider(body->size(), a->type,
                           [a, body](size_t offset, size_t length, httplib::DataSink& sink) {
                             return sink.write(body->data() + offset, length);
                           });
}

bool Immutable(const httplib::Request& req, const std::string& sha256) {
  const std::string v = req.get_param_value("v");
  return v.size() == 16 && sha256.compare(0, 16, v) == 0;
}

std::string VersionedUrl(const std::string& path, const std::string& sha256) {
  return path + "?v=" + sha256.substr(0, 16);
}

std::shared_ptr<const Asset> AssetCache::FindLocked(const std::string& key,
                                                    const std::string& version) {
  auto it = entries_.find(key);
  if (it == entries_.end() || it->second.version != version) return nullptr;
  it->second.used = ++clock_;
  return it->second.asset;
}

void AssetCache::Put(const std::string& key, const std::string& version,
                     std::shared_ptr<const Asset> a, const std::string& flight) {
  auto size = [](const Asset& x) {
    return int64_t(x.identity.size() + x.gzip.size() + x.br.size());
  };
  std::lock_guard lock(mu_);
  flights_.erase(flight);
  Entry& e = entries_[key];
  if (e.asset) bytes_ -= size(*e.asset);
  e = {version, a, ++clock_};
  bytes_ += size(*a);
  while (bytes_ > max_bytes_ && entries_.size() > 1) {
    auto lru = entries_.end();
    for (auto it = entries_.begin(); it != entries_.end(); ++it)
      if (it->first != key && (lru == entries_.end() || it->second.used < lru->second.used))
        lru = it;
    bytes_ -= size(*lru->second.asset);
    entries_.erase(lru);
  }
}

void StaticFiles::Mount(const std::string& prefix, const std::string& dir) {
  mounts_[prefix] = dir;
}

void StaticFiles::Alias(const std::string& path, const std::string& file) { aliases_[path] = file; }

std::string StaticFiles::FileOf(const std::string& path) const {
  if (auto it = aliases_.find(path); it != aliases_.end()) return it->second;
  for (const auto& [prefix, dir] : mounts_) {
    if (!path.starts_with(prefix)) continue;
    const std::string rest = path.substr(prefix.size());
    // Plain relative paths only: no empty, hidden, "." or ".." segments.
    static const std::regex ok(R"(([A-Za-z0-9_][A-Za-z0-9_.\-]*/)*[A-Za-z0-9_][A-Za-z0-9_.\-]*)");
    if (std::regex_match(rest, ok)) return (fs::path(dir) / rest).string();
  }
  return "";
}

void StaticFiles::AddRoutes(httplib::Server& server) {
  auto serve = [this](const httplib::Request& req, httplib::Response& res) {
    Serve(req, res, FileOf(req.path));
  };
  for (const auto& [path, file] : aliases_) server.Get(path, serve);
  for (const auto& [prefix, dir] : mounts_) server.Get(prefix + "(.+)", serve);
}

std::shared_ptr<const Asset> StaticFiles::Load(const std::string& file) {
  std::error_code ec;
  if (file.empty() || !fs::is_regular_file(file, ec)) return nullptr;
  const int64_t mtime = fs::last_write_time(file, ec).time_since_epoch().count();
  return cache_.Get(file, std::to_string(mtime), MimeType(file), [&] { return ReadFile(file); });
}

std::string StaticFiles::Versioned(const std::string& path) {
  auto a = Load(FileOf(path));
  return a ? VersionedUrl(path, a->sha256) : path;
}

void StaticFiles::Serve(const httplib::Request& req, httplib::Response& res,
                        const std::string& file) {
  auto a = Load(file);
  if (!a) throw HttpError(404, "no such file: " + req.path);
  ServeAsset(req, res, a);
}

}  // namespace da::http
