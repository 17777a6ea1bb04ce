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
    nn::EvalResult r = nn::Evaluate(net, data.test, data.Classes());
    if (!f->predictions.empty())
      WriteFileAtomic(f->predictions,
                      nlohmann::json{{"labels", r.predicted}, {"top", r.top}}.dump());
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
