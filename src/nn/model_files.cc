#include "nn/model_files.h"

#include <filesystem>

#include "common/error.h"
#include "common/fs.h"

namespace da::nn {

nlohmann::json ReadJsonFile(const std::string& path) {
  std::string text = ReadFile(path);
  try {
    return nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    throw UserError(path + ": not valid JSON (" + e.what() + ")");
  }
}

nlohmann::json ReadMetrics(const std::string& dir) {
  return ReadJsonFile((std::filesystem::path(dir) / kMetricsFile).string());
}

}  // namespace da::nn
