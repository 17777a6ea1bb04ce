// Exports models of both families (odd widths, realistic BN statistics) to ONNX and
// has onnxruntime (node) run them on 100 real test images: logits must match
// libtorch's and the engine's (src/engine, from the same file) within 1e-4,
// with the same argmax.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "common/fs.h"
#include "engine/engine.h"
#include "engine/portable.h"
#include "nn/dataset.h"
#include "nn/onnx_export.h"
#include "test_util.h"

using namespace da::nn;
namespace fs = std::filesystem;

namespace {
void WriteFloats(const fs::path& p, const torch::Tensor& t) {
  auto c = t.contiguous();
  da::WriteFileAtomic(p.string(),
                      std::string_view(reinterpret_cast<const char*>(c.data_ptr<float>()),
                                       static_cast<size_t>(c.numel()) * sizeof(float)));
}
}  // namespace

TEST(Export, OnnxruntimeMatchesLibtorch) {
  fs::path dir = fs::temp_directory_path() / ("da_export_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  Images fmnist = LoadDataset(kFashionMnistDir).test.First(100);
  std::vector<ModelSpec> specs = da::test::OddSpecs();
  specs.push_back(ModelSpec::Default(Family::kVgg));
  specs.push_back(ModelSpec::Default(Family::kResnet));
  nlohmann::json cases = nlohmann::json::array();
  torch::manual_seed(7);
  for (size_t i = 0; i < specs.size(); ++i) {
    const ModelSpec& s = specs[i];
    Net net(s);
    da::test::RandomizeBatchNorm(*net);
    torch::Tensor x =
        s.channels == 1 ? ToTensor(fmnist) : torch::rand({100, s.channels, s.height, s.width});
    torch::Tensor logits;
    {
      torch::NoGradGuard g;
      logits = net->forward(x);
    }
    std::string name = "m" + std::to_string(i);
    ExportOnnx(*net, (dir / (name + ".onnx")).string());
    EXPECT_EQ(static_cast<int64_t>(fs::file_size(dir / (name + ".onnx"))), OnnxBytes(s))
        << s.Summary();
    WriteFloats(dir / (name + ".input"), x);
    WriteFloats(dir / (name + ".logits"), logits);
    // The engine's logits from the same file, for onnxruntime to match too.
    da::engine::Model engine(da::ReadFile((dir / (name + ".onnx")).string()));
    torch::Tensor mine = torch::empty_like(logits);
    engine.Run(x.contiguous().data_ptr<float>(), 100, mine.data_ptr<float>());
    WriteFloats(dir / (name + ".engine"), mine);
    da::engine::PortableModel portable(da::ReadFile((dir / (name + ".onnx")).string()));
    portable.Run(x.contiguous().data_ptr<float>(), 100, mine.data_ptr<float>());
    WriteFloats(dir / (name + ".portable"), mine);
    cases.push_back({{"name", name},
                     {"summary", s.Summary()},
                     {"shape", {100, s.channels, s.height, s.width}},
                     {"classes", s.classes}});
  }
  da::WriteFileAtomic((dir / "cases.json").string(), cases.dump());
  std::string cmd = "node " DA_SOURCE_DIR "/tests/onnx_check.mjs " + dir.string();
  EXPECT_EQ(std::system(cmd.c_str()), 0) << cmd;
  fs::remove_all(dir);
}
