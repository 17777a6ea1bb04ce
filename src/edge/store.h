#pragma once
// The edge's persistent state under one directory:
//   DIR/state.db              SQLite (WAL): cache index, request statistics,
//                             the last catalog seen
//   DIR/blobs/<sha256>.onnx   cached model files
// A model file is written atomically and indexed after; it is unindexed before
// it is deleted. Opening verifies every indexed file's hash: a missing or
// corrupt one is unindexed and reported, never served; unindexed files (a crash
// between the two steps) are removed. So a SIGKILL at any moment loses no
// indexed model and never leaves a corrupt one to serve. Thread-safe.
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "edge/cache.h"

struct sqlite3;

namespace da::edge {

struct CachedFile {
  std::string id, sha256;
  int64_t bytes = 0;
};

class Store {
 public:
  explicit Store(const std::string& dir);  // UserError when it cannot open
  ~Store();
  Store(const Store&) = delete;
  Store& operator=(const Store&) = delete;

  const std::string& dir() const { return dir_; }
  std::vector<std::string> problems() const;
  std::vector<CachedFile> Files() const;
  std::string Path(const std::string& sha256) const;

  // Writes the model file (its hash must be `sha256`) and indexes it as `id`.
  void Put(const std::string& id, const std::string& sha256, const std::string& data);
  void Remove(const std::string& id);

  void SaveDemand(const std::map<std::string, ModelCache::Demand>& demand);
  std::map<std::string, ModelCache::Demand> LoadDemand() const;

  void SetValue(const std::string& key, const std::string& value);
  std::optional<std::string> Value(const std::string& key) const;

 private:
  void Exec(const std::string& sql) const;
  void Verify();

  std::string dir_;
  sqlite3* db_ = nullptr;
  mutable std::mutex mu_;
  std::vector<std::string> problems_;
};

}  // namespace da::edge
