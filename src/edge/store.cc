#include "edge/store.h"

#include <sqlite3.h>

#include <filesystem>
#include <set>

#include "common/error.h"
#include "common/fs.h"
#include "common/sha256.h"
#include "repo/repo.h"

namespace da::edge {
namespace fs = std::filesystem;

namespace {

// A prepared statement, finalized on scope exit.
class Stmt {
 public:
  Stmt(sqlite3* db, const char* sql) {
    if (sqlite3_prepare_v2(db, sql, -1, &s_, nullptr) != SQLITE_OK)
      throw std::runtime_error(std::string("SQLite: ") + sqlite3_errmsg(db));
  }
  ~Stmt() { sqlite3_finalize(s_); }
  Stmt& Bind(int i, const std::string& v) {
    sqlite3_bind_text(s_, i, v.data(), static_cast<int>(v.size()), SQLITE_TRANSIENT);
    return *this;
  }
  Stmt& Bind(int i, double v) {
    sqlite3_bind_double(s_, i, v);
    return *this;
  }
  Stmt& Bind(int i, int64_t v) {
    sqlite3_bind_int64(s_, i, v);
    return *this;
  }
  bool Step() {
    int rc = sqlite3_step(s_);
    if (rc == SQLITE_ROW) return true;
    if (rc == SQLITE_DONE) return false;
    throw std::runtime_error(std::string("SQLite: ") + sqlite3_errmsg(sqlite3_db_handle(s_)));
  }
  std::string Text(int i) {
    const unsigned char* t = sqlite3_column_text(s_, i);
    return t ? std::string(reinterpret_cast<const char*>(t),
                           static_cast<size_t>(sqlite3_column_bytes(s_, i)))
             : std::string();
  }
  double Double(int i) { return sqlite3_column_double(s_, i); }
  int64_t Int(int i) { return sqlite3_column_int64(s_, i); }

 private:
  sqlite3_stmt* s_ = nullptr;
};

}  // namespace

void Store::Exec(const std::string& sql) const {
  char* err = nullptr;
  if (sqlite3_exec(db_, sql.c_str(), nullptr, nullptr, &err) != SQLITE_OK) {
    std::string msg = err ? err : "unknown error";
    sqlite3_free(err);
    throw std::runtime_error("SQLite: " + msg);
  }
}

Store::Store(const std::string& dir) : dir_(dir) {
  std::error_code ec;
  fs::create_directories(fs::path(dir) / "blobs", ec);
  if (ec) throw UserError("cannot create state directory " + dir + ": " + ec.message());
  const std::string db = (fs::path(dir) / "state.db").string();
  if (sqlite3_open(db.c_str(), &db_) != SQLITE_OK) {
    std::string msg = db_ ? sqlite3_errmsg(db_) : "out of memory";
    sqlite3_close(db_);
    throw UserError("cannot open " + db + ": " + msg);
  }
  try {
    sqlite3_busy_timeout(db_, 5000);
    Exec(
        "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;"
        "CREATE TABLE IF NOT EXISTS cache(id TEXT PRIMARY KEY, sha256 TEXT NOT NULL,"
        " bytes INTEGER NOT NULL);"
        "CREATE TABLE IF NOT EXISTS demand(id TEXT PRIMARY KEY, count REAL, at REAL,"
        " total REAL, last REAL);"
        "CREATE TABLE IF NOT EXISTS kv(key TEXT PRIMARY KEY, value TEXT NOT NULL);");
    Verify();
  } catch (const std::exception& e) {
    sqlite3_close(db_);  // the destructor does not run when the constructor throws
    throw UserError(db + ": " + e.what());
  }
}

// Verifies the index against the files; removes what nothing indexes.
void Store::Verify() {
  std::error_code ec;
  std::set<std::string> kept;
  for (const CachedFile& f : Files()) {
    const std::string path = Path(f.sha256);
    std::string problem;
    if (!repo::ValidId(f.id) || !IsSha256Hex(f.sha256))
      problem = "invalid index entry";
    else if (!fs::exists(path))
      problem = "file missing";
    else {
      try {
        const std::string data = ReadFile(path);
        if (static_cast<int64_t>(data.size()) != f.bytes || Sha256Hex(data) != f.sha256)
          problem = "file corrupt (hash mismatch)";
      } catch (const std::exception&) {
        problem = "file unreadable";
      }
    }
    if (problem.empty()) {
      kept.insert(f.sha256 + ".onnx");
      continue;
    }
    problems_.push_back("cached model " + f.id + ": " + problem + "; dropped");
    Stmt(db_, "DELETE FROM cache WHERE id = ?").Bind(1, f.id).Step();
  }
  for (const auto& e : fs::directory_iterator(fs::path(dir_) / "blobs"))
    if (!kept.count(e.path().filename().string())) fs::remove_all(e.path(), ec);
}

Store::~Store() { sqlite3_close(db_); }

std::vector<std::string> Store::problems() const {
  std::lock_guard lock(mu_);
  return problems_;
}

std::string Store::Path(const std::string& sha256) const {
  return repo::BlobPath(dir_, sha256, "onnx");
}

std::vector<CachedFile> Store::Files() const {
  std::lock_guard lock(mu_);
  std::vector<CachedFile> out;
  Stmt s(db_, "SELECT id, sha256, bytes FROM cache ORDER BY id");
  while (s.Step()) out.push_back({s.Text(0), s.Text(1), s.Int(2)});
  return out;
}

void Store::Put(const std::string& id, const std::string& sha256, const std::string& data) {
  if (Sha256Hex(data) != sha256) throw std::runtime_error("model " + id + ": hash mismatch");
  repo::WriteBlob(dir_, data, "onnx");
  std::lock_guard lock(mu_);
  Stmt(db_, "INSERT OR REPLACE INTO cache(id, sha256, bytes) VALUES(?, ?, ?)")
      .Bind(1, id)
      .Bind(2, sha256)
      .Bind(3, static_cast<int64_t>(data.size()))
      .Step();
}

void Store::Remove(const std::string& id) {
  std::lock_guard lock(mu_);
  std::string sha;
  {
    Stmt s(db_, "SELECT sha256 FROM cache WHERE id = ?");
    s.Bind(1, id);
    if (!s.Step()) return;
    sha = s.Text(0);
  }
  Stmt(db_, "DELETE FROM cache WHERE id = ?").Bind(1, id).Step();
  Stmt s(db_, "SELECT COUNT(*) FROM cache WHERE sha256 = ?");
  s.Bind(1, sha).Step();
  if (s.Int(0) == 0) {
    std::error_code ec;
    fs::remove(Path(sha), ec);
  }
}

void Store::SaveDemand(const std::map<std::string, ModelCache::Demand>& demand) {
  std::lock_guard lock(mu_);
  Exec("BEGIN");
  try {
    Exec("DELETE FROM demand");
    for (const auto& [id, d] : demand)
      Stmt(db_, "INSERT INTO demand(id, count, at, total, last) VALUES(?, ?, ?, ?, ?)")
          .Bind(1, id)
          .Bind(2, d.count)
          .Bind(3, d.at)
          .Bind(4, d.total)
          .Bind(5, d.last)
          .Step();
    Exec("COMMIT");
  } catch (...) {
    Exec("ROLLBACK");
    throw;
  }
}

std::map<std::string, ModelCache::Demand> Store::LoadDemand() const {
  std::lock_guard lock(mu_);
  std::map<std::string, ModelCache::Demand> out;
  Stmt s(db_, "SELECT id, count, at, total, last FROM demand");
  while (s.Step()) out[s.Text(0)] = {s.Double(1), s.Double(2), s.Double(3), s.Double(4)};
  return out;
}

void Store::SetValue(const std::string& key, const std::string& value) {
  std::lock_guard lock(mu_);
  Stmt(db_, "INSERT OR REPLACE INTO kv(key, value) VALUES(?, ?)")
      .Bind(1, key)
      .Bind(2, value)
      .Step();
}

std::optional<std::string> Store::Value(const std::string& key) const {
  std::lock_guard lock(mu_);
  Stmt s(db_, "SELECT value FROM kv WHERE key = ?");
  s.Bind(1, key);
  if (!s.Step()) return std::nullopt;
  return s.Text(0);
}

}  // namespace da::edge
