#include "nn/model_dir.h"

#include <filesystem>

#include "common/error.h"
#include "common/fs.h"
#include "common/progress.h"
#include "nn/onnx_export.h"

namespace da::nn {
namespace fs = std::filesystem;

namespace {
std::string Join(const std::string& dir, const char* file) {
  return (fs::path(dir) / file).string();
}
}  // namespace

Net LoadModelDir(const std::string& dir) {
  if (!fs::is_directory(dir)) throw UserError(dir + ": model directory not found");
  ModelSpec spec;
  std::string spec_path = Join(dir, kSpecFile);
  try {
    spec = ModelSpec::FromJson(ReadJsonFile(spec_path));
  } catch (const UserError& e) {
    std::string what = e.what();
    throw UserError(what.starts_with(spec_path) ? what : spec_path + ": " + what);
  }
  Net net(spec);
  LoadWeights(*net, Join(dir, kWeightsFile));
  net->eval();
  return net;
}

void SaveModelDir(const std::string& dir, NetImpl& net, const nlohmann::json& metrics) {
  SaveWeights(net, Join(dir, kWeightsFile));
  WriteFileAtomic(Join(dir, kSpecFile), net.spec().ToJson().dump(2) + "\n");
  WriteFileAtomic(Join(dir, kMetricsFile), metrics.dump(2) + "\n");
}

nlohmann::json ModelMetrics(Net& net, const Dataset& data) {
  const ModelSpec& spec = net->spec();
  EvalResult val = Evaluate(net, data.val, data.Classes());
  EvalResult test = Evaluate(net, data.test, data.Classes());
  nlohmann::json per_class = nlohmann::json::object();
  for (int c = 0; c < data.Classes(); ++c)
    per_class[data.class_names[c]] = test.per_class_accuracy[c];
  return {{"dataset", data.name},
          {"data_dir", data.dir},
          {"val_accuracy", val.accuracy},
          {"test_accuracy", test.accuracy},
          {"test_per_class_accuracy", per_class},
          {"params", spec.Params()},
          {"macs", spec.Macs()},
          {"bytes", OnnxBytes(spec)}};
}

nlohmann::json TrainModelDir(const ModelSpec& spec, const Dataset& data, const TrainOptions& opts,
                             const std::string& dir) {
  if (spec.channels != data.train.channels || spec.height != data.train.height ||
      spec.width != data.train.width || spec.classes != data.Classes())
    throw UserError("model input " + std::to_string(spec.channels) + "x" +
                    std::to_string(spec.height) + "x" + std::to_string(spec.width) +
                    " does not match the " + data.name + " images");
  torch::manual_seed(opts.seed);  // the initial weights depend on the seed too
  Net net(spec);
  auto start = std::chrono::steady_clock::now();
  std::vector<EpochLog> log = Train(net, data, opts);
  double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  nlohmann::json metrics = ModelMetrics(net, data);
  metrics["train_seconds"] = seconds;
  metrics["train"] = opts.ToJson();
  metrics["spec"] = spec.ToJson();
  for (const EpochLog& e : log)
    metrics["epochs"].push_back({{"epoch", e.epoch},
                                 {"loss", e.loss},
                                 {"train_accuracy", e.train_accuracy},
                                 {"val_accuracy", e.val_accuracy},
                                 {"seconds", e.seconds}});
  SaveModelDir(dir, *net, metrics);
  return metrics;
}

}  // namespace da::nn
