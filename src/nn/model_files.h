#pragma once
// The files of a model directory, and reading its JSON ones (no libtorch:
// the repository and the tools that only move models around use this).
#include <nlohmann/json.hpp>
#include <string>

namespace da::nn {

inline constexpr const char* kSpecFile = "spec.json";
inline constexpr const char* kWeightsFile = "weights.pt";
inline constexpr const char* kMetricsFile = "metrics.json";
inline constexpr const char* kOnnxFile = "model.onnx";

// The JSON in file `path` (UserError when missing or not JSON).
nlohmann::json ReadJsonFile(const std::string& path);
// Reads DIR/metrics.json (UserError when missing or not JSON).
nlohmann::json ReadMetrics(const std::string& dir);

}  // namespace da::nn
