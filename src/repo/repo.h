#pragma once
// The model repository: a plain directory a person can read with `ls`.
//   DIR/catalog.json            every model: id, kind (base/branch), spec, metrics,
//                               threshold, source context, predicted latency and
//                               energy per standard context, reference_ms, and
//                               its artifacts {sha256, bytes}
//   DIR/blobs/<sha256>.onnx     the browser's model file
//   DIR/blobs/<sha256>.pt       the server-side weights (libtorch)
// Adding a model writes its blobs first (each atomically) and the catalog last,
// atomically: a crash at any point leaves the previous valid repository (plus,
// at worst, an unreferenced blob). Opening verifies every blob's hash; a model
// with a missing or corrupt artifact is reported and skipped, never served.
// Thread-safe.
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

namespace da::repo {

inline constexpr const char* kCatalogFile = "catalog.json";

// Ids name models in URLs: 1–64 of [A-Za-z0-9._-], not starting with '.'.
bool ValidId(const std::string& id);

// Writes `data` as DIR/blobs/<sha256>.<ext> atomically (kept when present and
// intact); returns its {sha256, bytes}.
nlohmann::json WriteBlob(const std::string& dir, const std::string& data, const std::string& ext);

// DIR/blobs/<sha256>.<ext>.
std::string BlobPath(const std::string& dir, const std::string& sha256, const std::string& ext);

class Repository {
 public:
  // Opens the repository at `dir`, creating an empty one when absent.
  // Throws UserError when the catalog itself is unreadable.
  explicit Repository(std::string dir);

  const std::string& dir() const { return dir_; }
  // What opening found wrong (corrupt or missing artifacts), one line each.
  std::vector<std::string> problems() const;
  // {"models": [...]}: the servable models.
  nlohmann::json Catalog() const;
  std::optional<nlohmann::json> Find(const std::string& id) const;
  // Path of a model's artifact, `kind` "onnx" or "weights"; nullopt for an unknown id.
  std::optional<std::string> ArtifactPath(const std::string& id, const std::string& kind) const;

  // Adds the model in `model_dir` (spec.json, weights.pt, model.onnx,
  // metrics.json with reference_ms) as `id`; `extra` fields are merged into its
  // record. Throws UserError when the id is taken or invalid, or files are bad.
  nlohmann::json Add(const std::string& id, const std::string& model_dir,
                     const nlohmann::json& extra = nlohmann::json::object());

  // Adds every model of the family in `family_dir` (prune's output) whose id
  // ("base", or the context's name) is not in the catalog yet; returns how many.
  int ImportFamily(const std::string& family_dir);

 private:
  void SaveLocked() const;

  std::string dir_;
  mutable std::mutex mu_;
  std::vector<nlohmann::json> models_;
  std::vector<std::string> problems_;
};

}  // namespace da::repo
