#include "repo/repo.h"

#include <filesystem>

#include "common/error.h"
#include "common/fs.h"
#include "common/sha256.h"
#include "nn/model_files.h"

namespace da::repo {
namespace fs = std::filesystem;

namespace {

// The fields of a model's metrics.json that the catalog carries.
const char* kCatalogFields[] = {"spec",       "val_accuracy", "test_accuracy", "params",
                                "macs",       "bytes",        "reference_ms",  "predicted",
                                "threshold",  "context",      "best_effort",   "method"};

const char* Ext(const std::string& kind) { return kind == "onnx" ? "onnx" : "pt"; }

// Problem with one model's artifacts, or "" when both are present and intact.
std::string Verify(const std::string& dir, const nlohmann::json& m) {
  for (const char* kind : {"onnx", "weights"}) {
    const auto& a = m.at(kind);
    const std::string sha = a.at("sha256");
    const std::string path = BlobPath(dir, sha, Ext(kind));
    if (!fs::exists(path)) return std::string(kind) + " artifact " + path + " is missing";
    const std::string data = ReadFile(path);
    if (static_cast<int64_t>(data.size()) != a.at("bytes").get<int64_t>() ||
        Sha256Hex(data) != sha)
      return std::string(kind) + " artifact " + path + " is corrupt (hash mismatch)";
  }
  return "";
}

}  // namespace

bool ValidId(const std::string& id) {
  if (id.empty() || id.size() > 64 || id[0] == '.') return false;
  for (char c : id)
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '-'))
      return false;
  return true;
}

std::string BlobPath(const std::string& dir, const std::string& sha256, const std::string& ext) {
  return (fs::path(dir) / "blobs" / (sha256 + "." + ext)).string();
}

nlohmann::json WriteBlob(const std::string& dir, const std::string& data, const std::string& ext) {
  const std::string sha = Sha256Hex(data);
  const std::string path = BlobPath(dir, sha, ext);
  std::error_code ec;
  const bool intact = fs::exists(path) && fs::file_size(path, ec) == data.size() && !ec &&
                      Sha256Hex(ReadFile(path)) == sha;
  if (!intact) WriteFileAtomic(path, data);
  return {{"sha256", sha}, {"bytes", static_cast<int64_t>(data.size())}};
}

Repository::Repository(std::string dir) : dir_(std::move(dir)) {
  const fs::path catalog = fs::path(dir_) / kCatalogFile;
  std::error_code ec;
  fs::create_directories(fs::path(dir_) / "blobs", ec);
  if (ec) throw UserError("cannot create repository " + dir_ + ": " + ec.message());
  // Temp files of writes a crash interrupted.
  for (const fs::path& d : {fs::path(dir_), fs::path(dir_) / "blobs"})
    for (const auto& e : fs::directory_iterator(d))
      if (e.path().filename().string().find(".tmp.") != std::string::npos) fs::remove(e.path(), ec);
  if (!fs::exists(catalog)) return;
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(ReadFile(catalog.string()));
    for (const auto& m : j.at("models")) {
      const std::string id = m.at("id");
      std::string problem = ValidId(id) ? Verify(dir_, m) : "invalid id";
      if (problem.empty())
        models_.push_back(m);
      else
        problems_.push_back("model " + id + ": " + problem + "; skipped");
    }
  } catch (const nlohmann::json::exception& e) {
    throw UserError(catalog.string() + ": not a valid catalog: " + e.what());
  }
}

std::vector<std::string> Repository::problems() const {
  std::lock_guard lock(mu_);
  return problems_;
}

nlohmann::json Repository::Catalog() const {
  std::lock_guard lock(mu_);
  return {{"models", models_}};
}

std::optional<nlohmann::json> Repository::Find(const std::string& id) const {
  std::lock_guard lock(mu_);
  for (const auto& m : models_)
    if (m.at("id") == id) return m;
  return std::nullopt;
}

std::optional<std::string> Repository::ArtifactPath(const std::string& id,
                                                    const std::string& kind) const {
  auto m = Find(id);
  if (!m) return std::nullopt;
  return BlobPath(dir_, m->at(kind).at("sha256"), Ext(kind));
}

void Repository::SaveLocked() const {
  WriteFileAtomic((fs::path(dir_) / kCatalogFile).string(),
                  nlohmann::json{{"models", models_}}.dump(1) + "\n");
}

nlohmann::json Repository::Add(const std::string& id, const std::string& model_dir,
                               const nlohmann::json& extra) {
  if (!ValidId(id)) throw UserError("invalid model id '" + id + "'");
  if (Find(id)) throw UserError("model id '" + id + "' is taken");
  const nlohmann::json metrics = nn::ReadMetrics(model_dir);
  if (!metrics.contains("reference_ms"))
    throw UserError(model_dir + ": metrics.json lacks reference_ms (rebuild it with `prune`)");
  nlohmann::json m = {{"id", id}};
  for (const char* f : kCatalogFields)
    if (metrics.contains(f)) m[f] = metrics[f];
  m.update(extra);
  m["onnx"] = WriteBlob(dir_, ReadFile((fs::path(model_dir) / nn::kOnnxFile).string()), "onnx");
  m["weights"] =
      WriteBlob(dir_, ReadFile((fs::path(model_dir) / nn::kWeightsFile).string()), "pt");
  std::lock_guard lock(mu_);
  for (const auto& o : models_)
    if (o.at("id") == id) throw UserError("model id '" + id + "' is taken");
  models_.push_back(m);
  try {
    SaveLocked();
  } catch (...) {
    models_.pop_back();
    throw;
  }
  return m;
}

int Repository::ImportFamily(const std::string& family_dir) {
  const std::string path = (fs::path(family_dir) / "family.json").string();
  nlohmann::json family;
  try {
    family = nlohmann::json::parse(ReadFile(path));
  } catch (const nlohmann::json::exception& e) {
    throw UserError(path + ": not valid JSON: " + e.what());
  }
  int added = 0;
  auto add = [&](const std::string& id, const nlohmann::json& rec, const char* kind) {
    const fs::path model_dir = fs::path(family_dir) / rec.at("dir").get<std::string>();
    if (auto have = Find(id)) {  // imported before: it must be the same model
      if (have->at("onnx").at("sha256") != Sha256Hex(ReadFile((model_dir / nn::kOnnxFile).string())))
        throw UserError(dir_ + ": model '" + id + "' comes from another build of " + family_dir +
                        " (model.onnx differs); serve the rebuilt family from a fresh repository");
      return;
    }
    Add(id, model_dir.string(), {{"kind", kind}});
    ++added;
  };
  try {
    add("base", family.at("base"), "base");
    for (const auto& b : family.at("branches")) add(b.at("context"), b, "branch");
  } catch (const nlohmann::json::exception& e) {
    throw UserError(path + ": not a family: " + e.what());
  }
  return added;
}

}  // namespace da::repo
