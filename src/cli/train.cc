// deepadapter train: train a model of a family on a dataset into a model directory.
#include <filesystem>

#include "cli/commands.h"
#include "common/error.h"
#include "common/progress.h"
#include "nn/model_dir.h"
#include "nn/onnx_export.h"

namespace da::cli {

void AddTrain(CLI::App& app) {
  struct Flags {
    std::string family = "vgg", widths, data = nn::kFashionMnistDir, out;
    int64_t val_size = 5000;
    bool no_flip = false, reuse = false;
    nn::TrainOptions opts;
  };
  auto f = std::make_shared<Flags>();
  auto* cmd =
      app.add_subcommand("train", "Train a model (spec.json, weights.pt, metrics.json) into --out");
  cmd->add_option("--family", f->family, "Model family: vgg or resnet")
      ->check(CLI::IsMember({"vgg", "resnet"}))
      ->capture_default_str();
  cmd->add_option("--widths", f->widths,
                  "Channel widths, stages split by '/': vgg \"32,32/64,64/128,128 fc256\", "
                  "resnet \"16:16,16,16/32:32,32,32/64:64,64,64\" (residual:inner,...)");
  cmd->add_option("--data", f->data, "Dataset directory (Fashion-MNIST IDX or CIFAR-10 binary)")
      ->capture_default_str();
  cmd->add_option("--out", f->out, "Model directory to write")->required();
  cmd->add_option(
         "--epochs", f->opts.epochs,
         "Epochs (default: " + std::to_string(nn::DefaultTrainOptions(nn::Family::kVgg).epochs) +
             " for vgg, " + std::to_string(nn::DefaultTrainOptions(nn::Family::kResnet).epochs) +
             " for resnet)")
      ->check(CLI::Range(1, 10000));
  cmd->add_option("--batch-size", f->opts.batch_size, "Batch size")
      ->capture_default_str()
      ->check(CLI::Range(1, 65536));
  cmd->add_option("--lr", f->opts.lr, "Peak learning rate (1 epoch warm-up, cosine decay)")
      ->capture_default_str();
  cmd->add_option("--momentum", f->opts.momentum, "SGD momentum (Nesterov)")->capture_default_str();
  cmd->add_option("--weight-decay", f->opts.weight_decay, "Weight decay")->capture_default_str();
  cmd->add_option("--label-smoothing", f->opts.label_smoothing, "Label smoothing")
      ->capture_default_str();
  cmd->add_option("--pad", f->opts.pad, "Random-crop padding in pixels (0: no crop)")
      ->capture_default_str()
      ->check(CLI::Range(0, 16));
  cmd->add_flag("--no-flip", f->no_flip, "No random horizontal flips");
  cmd->add_option("--limit", f->opts.limit, "Train on the first N training images only (0: all)")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--val-size", f->val_size, "Last N training images held out for validation")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  cmd->add_option("--seed", f->opts.seed, "Random seed")->capture_default_str();
  cmd->add_option("--threads", f->opts.threads, "Threads (0: all cores)")
      ->capture_default_str()
      ->check(CLI::Range(0, 1024));
  cmd->add_flag("--reuse", f->reuse,
                "Keep --out as it is when it already holds a model trained with the same spec, "
                "options and data");
  cmd->callback([f, cmd] {
    f->opts.flip = !f->no_flip;
    const nn::Family family = nn::ParseFamily(f->family);
    if (cmd->count("--epochs") == 0) f->opts.epochs = nn::DefaultTrainOptions(family).epochs;
    f->opts.Validate();
    nn::Dataset data = nn::LoadDataset(f->data, f->val_size);
    nn::ModelSpec spec = nn::ModelSpec::Default(family, data.train.channels, data.train.height,
                                                data.train.width, data.Classes());
    if (!f->widths.empty()) spec = spec.WithWidths(f->widths);
    nlohmann::json metrics;
    bool reused = false;
    if (f->reuse && std::filesystem::exists(std::filesystem::path(f->out) / nn::kMetricsFile)) {
      try {
        nlohmann::json old = nn::ReadMetrics(f->out);
        if (old.value("spec", nlohmann::json()) == spec.ToJson() &&
            old.value("train", nlohmann::json()) == f->opts.ToJson() &&
            old.value("data_dir", "") == data.dir) {
          nn::LoadModelDir(f->out);  // weights must load too
          metrics = old;
          reused = true;
        }
      } catch (const UserError&) {
      }
    }
    if (!reused) metrics = nn::TrainModelDir(spec, data, f->opts, f->out);
    std::printf("model       %s%s\n", f->out.c_str(),
                reused ? "  (reused: trained earlier with the same settings)" : "");
    std::printf("spec        %s\n", spec.Summary().c_str());
    std::printf("dataset     %s (%lld train / %lld validation / %lld test images)\n",
                data.name.c_str(),
                static_cast<long long>(f->opts.limit > 0 ? std::min(f->opts.limit, data.train.count)
                                                         : data.train.count),
                static_cast<long long>(data.val.count), static_cast<long long>(data.test.count));
    std::printf("accuracy    validation %.2f%%  test %.2f%%\n",
                100 * metrics["val_accuracy"].get<double>(),
                100 * metrics["test_accuracy"].get<double>());
    std::printf("size        %s params  %s MACs  %s bytes ONNX\n", Thousands(spec.Params()).c_str(),
                Thousands(spec.Macs()).c_str(),
                Thousands(metrics["bytes"].get<long long>()).c_str());
    std::printf("train time  %s\n",
                Progress::FormatDuration(metrics["train_seconds"].get<double>()).c_str());
  });
}

}  // namespace da::cli
