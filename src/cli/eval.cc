// deepadapter eval: test accuracy (overall and per class) and size of a model directory.
#include "cli/commands.h"
#include "common/error.h"
#include "common/fs.h"
#include "nn/model_dir.h"
#include "nn/onnx_export.h"

namespace da::cli {

void AddEval(CLI::App& app) {
  struct Flags {
    std::string dir, data = nn::kFashionMnistDir, predictions;
    int64_t limit = 0;
    int threads = 0;
  };
  auto f = std::make_shared<Flags>();
  auto* cmd = app.add_subcommand(
      "eval", "Print a model's test accuracy, per-class accuracy, params, MACs and bytes");
  cmd->add_option("dir", f->dir, "Model directory")->required();
  cmd->add_option("--data", f->data, "Dataset directory")->capture_default_str();
  cmd->add_option("--threads", f->threads, "Threads (0: all cores)")
      ->capture_default_str()
      ->check(CLI::Range(0, 1024));
  cmd->add_option("--predictions", f->predictions,
                  "Also write each test image's predicted label and top probability (JSON)");
  cmd->add_option("--limit", f->limit, "Only the first N test images (0: all)")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  cmd->callback([f] {
    nn::SetThreads(f->threads);
    nn::Net net = nn::LoadModelDir(f->dir);
    nn::Dataset data = nn::LoadDataset(f->data);
    const nn::ModelSpec& spec = net->spec();
    if (spec.channels != data.test.channels || spec.height != data.test.height ||
        spec.width != data.test.width || spec.classes != data.Classes())
      throw UserError(f->dir + ": model input does not match the " + data.name + " images in " +
                      f->data);
    if (f->limit > 0) data.test = data.test.First(f->limit);
    net->ToChannelsLast();
    if (!f->predictions.empty()) {
      net->eval();
      torch::NoGradGuard g;
      nlohmann::json labels = nlohmann::json::array(), top = nlohmann::json::array();
      for (int64_t b = 0; b < data.test.count; b += 500) {
        const nn::Images part = data.test.Slice(b, std::min(data.test.count, b + 500));
        torch::Tensor x =
            torch::from_blob(const_cast<uint8_t*>(part.pixels.data()),
                             {part.count, part.channels, part.height, part.width}, torch::kUInt8)
                .to(torch::kFloat32)
                .div(255)
                .contiguous(torch::MemoryFormat::ChannelsLast);
        torch::Tensor p = torch::softmax(net->forward(x), 1);
        auto [best, arg] = p.max(1);
        for (int64_t i = 0; i < part.count; ++i) {
          labels.push_back(arg[i].item<int64_t>());
          top.push_back(best[i].item<double>());
        }
      }
      WriteFileAtomic(f->predictions, nlohmann::json{{"labels", labels}, {"top", top}}.dump());
    }
    nn::EvalResult r = nn::Evaluate(net, data.test, data.Classes());
    std::printf("model          %s\n", f->dir.c_str());
    std::printf("spec           %s\n", spec.Summary().c_str());
    std::printf("test accuracy  %.2f%%  (%lld %s test images)\n", 100 * r.accuracy,
                static_cast<long long>(data.test.count), data.name.c_str());
    for (int c = 0; c < data.Classes(); ++c)
      std::printf("  %-12s %6.2f%%  (%lld)\n", data.class_names[c].c_str(),
                  100 * r.per_class_accuracy[c], static_cast<long long>(r.per_class_count[c]));
    std::printf("params         %s\n", Thousands(spec.Params()).c_str());
    std::printf("MACs           %s\n", Thousands(spec.Macs()).c_str());
    std::printf("bytes          %s (ONNX)\n", Thousands(nn::OnnxBytes(spec)).c_str());
  });
}

}  // namespace da::cli
