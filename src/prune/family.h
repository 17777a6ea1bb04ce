#pragma once
// A branch-model family on disk (the cloud's model repository, plain files):
//   REPO/base/                 the base model (spec.json, weights.pt, model.onnx, metrics.json)
//   REPO/branches/<context>/   one model directory per context
//   REPO/family.json           what was built, from what, and each model's figures
//                              (written last: a repository with it is complete)
// Every model's metrics.json records its accuracies, params, MACs, bytes, its
// predicted latency and energy in every standard context, and (branches) the
// context it was made for and its confidence threshold.
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "prune/search.h"

namespace da::prune {

inline constexpr const char* kFamilyFile = "family.json";

struct FamilyInputs {
  std::string base_dir;                    // trained base model directory
  std::vector<context::Context> contexts;  // one branch each
  std::vector<context::Context> standard;  // predictions recorded for these
  const context::LatencyTable* table = nullptr;
  const nn::Dataset* data = nullptr;
};

// True when REPO/family.json records exactly these inputs (base weights, contexts,
// search options, latency table, data): BuildFamily with `reuse` would read it.
bool FamilyIsCurrent(const FamilyInputs& in, const SearchOptions& opts, Method method,
                     const std::string& repo);

// Builds (or, when `reuse` and REPO/family.json records the same inputs, reads)
// the family of `method` into `repo`; returns family.json's content.
// `matched_steps` as in Search (kUniform).
nlohmann::json BuildFamily(const FamilyInputs& in, const SearchOptions& opts, Method method,
                           const std::string& repo, bool reuse,
                           const std::vector<int64_t>* matched_steps = nullptr);

// Reads REPO/family.json (UserError when missing or malformed).
nlohmann::json ReadFamily(const std::string& repo);

// The family as a table for people: one row per branch.
std::string FamilyTable(const nlohmann::json& family);

}  // namespace da::prune
