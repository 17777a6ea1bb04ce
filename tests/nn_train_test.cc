#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>

#include "common/error.h"
#include "common/fs.h"
#include "nn/model_dir.h"
#include "nn/onnx_export.h"

using namespace da::nn;
namespace fs = std::filesystem;

namespace {
const Dataset& Data() {
  static const Dataset d = LoadDataset(kFashionMnistDir);
  return d;
}

TrainOptions Tiny() {
  TrainOptions o;
  o.epochs = 2;
  o.limit = 4000;
  o.batch_size = 32;
  o.quiet = true;
  return o;
}

ModelSpec TinyVgg() { return ModelSpec::Default(Family::kVgg).WithWidths("8/16/32 fc32"); }

Net Seeded(const ModelSpec& s, uint64_t seed = 1) {
  torch::manual_seed(seed);
  return Net(s);
}
}  // namespace

TEST(Train, TinyRunLowersTheLossAndLearns) {
  Net net(TinyVgg());
  Images val = Data().val.First(1000);
  double before = Evaluate(net, val, 10).loss;
  auto log = Train(net, Data(), Tiny());
  ASSERT_EQ(log.size(), 2u);
  EXPECT_LT(log[1].loss, log[0].loss);
  EvalResult after = Evaluate(net, val, 10);
  EXPECT_LT(after.loss, before * 0.6);
  EXPECT_GT(after.accuracy, 0.6);  // chance is 0.1
}

TEST(Train, ResnetTrains) {
  Net net(ModelSpec::Default(Family::kResnet).WithWidths("8:8/16:8/16:8"));
  TrainOptions o = Tiny();
  o.epochs = 1;
  auto log = Train(net, Data(), o);
  EXPECT_GT(log[0].val_accuracy, 0.3);
}

TEST(Train, SameSeedSameModel) {
  TrainOptions o = Tiny();
  o.epochs = 1;
  o.limit = 512;
  Net a = Seeded(TinyVgg()), b = Seeded(TinyVgg());
  auto la = Train(a, Data(), o);
  auto lb = Train(b, Data(), o);
  EXPECT_EQ(la[0].loss, lb[0].loss);
  auto pa = a->parameters(), pb = b->parameters();
  for (size_t i = 0; i < pa.size(); ++i) EXPECT_TRUE(torch::equal(pa[i], pb[i]));
  o.seed = 2;
  Net c = Seeded(TinyVgg(), 2);
  EXPECT_NE(Train(c, Data(), o)[0].loss, la[0].loss);
}

// Distillation with weight 1 learns the teacher's outputs, not the labels:
// a teacher that always says "class 3" pulls a fresh student to answer 3.
TEST(Train, DistillationLearnsTheTeachersOutputs) {
  Net teacher = Seeded(TinyVgg(), 5);
  {
    torch::NoGradGuard g;
    auto p = teacher->named_parameters();
    p["cls.weight"].zero_();
    p["cls.bias"].zero_();
    p["cls.bias"][3] = 5;
  }
  TrainTensors data = ToTrainTensors(Data().train.First(2000));
  Images val = Data().val.First(500);
  TrainOptions o = Tiny();
  o.lr = 0.05;
  Net labels = Seeded(TinyVgg()), distilled = Seeded(TinyVgg());
  FineTune(labels, data, 60, o);
  FineTune(distilled, data, 60, o, {teacher.get(), 1.0, 2.0});
  auto share3 = [&](Net& n) {
    auto r = Evaluate(n, val, 10);
    return double(std::count(r.predicted.begin(), r.predicted.end(), 3)) /
           double(r.predicted.size());
  };
  EXPECT_GT(share3(distilled), 0.95);
  EXPECT_LT(share3(labels), 0.5);
  EXPECT_THROW(FineTune(distilled, data, 1, o, {teacher.get(), 1.5, 2.0}), da::UserError);
  EXPECT_THROW(FineTune(distilled, data, 1, o, {teacher.get(), 0.5, 0.0}), da::UserError);
}

// A teacher cache changes nothing but the work: fine-tunes that share one give
// the same weights as fine-tunes without, and the teacher's outputs are kept
// per step for the next fine-tune on the same batches.
TEST(Train, TeacherCacheGivesTheSameWeights) {
  Net teacher = Seeded(TinyVgg(), 5);
  TrainTensors data = ToTrainTensors(Data().train.First(1000));
  TrainOptions o = Tiny();
  TeacherCache cache;
  for (int64_t steps : {6, 4, 10}) {
    Net plain = Seeded(TinyVgg()), cached = Seeded(TinyVgg());
    FineTune(plain, data, steps, o, {teacher.get(), 0.9, 4.0});
    FineTune(cached, data, steps, o, {teacher.get(), 0.9, 4.0, &cache});
    auto pa = plain->parameters(), pb = cached->parameters();
    ASSERT_EQ(pa.size(), pb.size());
    for (size_t i = 0; i < pa.size(); ++i) EXPECT_TRUE(torch::equal(pa[i], pb[i])) << steps;
  }
  EXPECT_EQ(cache.soft.size(), 10u);
  Net other = Seeded(TinyVgg());
  o.seed = 2;  // other batches: the cache's outputs do not belong to them
  EXPECT_THROW(FineTune(other, data, 4, o, {teacher.get(), 0.9, 4.0, &cache}), std::logic_error);
}

TEST(Train, BadOptionsAreUserErrors) {
  Net net(TinyVgg());
  for (auto change : std::vector<std::function<void(TrainOptions&)>>{
           [](TrainOptions& o) { o.epochs = 0; }, [](TrainOptions& o) { o.lr = -1; },
           [](TrainOptions& o) { o.lr = std::nan(""); }, [](TrainOptions& o) { o.momentum = 1; },
           [](TrainOptions& o) { o.batch_size = 0; }}) {
    TrainOptions o = Tiny();
    change(o);
    EXPECT_THROW(Train(net, Data(), o), da::UserError);
  }
}

TEST(ModelDir, TrainSaveLoadKeepsAccuracyAndRecordsMetrics) {
  fs::path dir = fs::temp_directory_path() / ("da_modeldir_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  TrainOptions o = Tiny();
  o.epochs = 1;
  auto metrics = TrainModelDir(TinyVgg(), Data(), o, dir.string());
  for (auto key : {"val_accuracy", "test_accuracy", "test_per_class_accuracy", "params", "macs",
                   "bytes", "train_seconds", "train", "spec", "epochs"})
    EXPECT_TRUE(metrics.contains(key)) << key;
  EXPECT_EQ(metrics["bytes"].get<int64_t>(), OnnxBytes(TinyVgg()));
  EXPECT_EQ(ReadMetrics(dir.string()), metrics);
  Net net = LoadModelDir(dir.string());
  EXPECT_DOUBLE_EQ(Evaluate(net, Data().test, 10).accuracy, metrics["test_accuracy"].get<double>());
  // A spec.json that does not parse, or does not match the weights, is reported.
  std::string spec = (dir / kSpecFile).string();
  da::WriteFileAtomic(spec, "{\"family\": \"vgg\"");
  EXPECT_THROW(LoadModelDir(dir.string()), da::UserError);
  da::WriteFileAtomic(spec, TinyVgg().WithWidths("9/16 fc16").ToJson().dump());
  EXPECT_THROW(LoadModelDir(dir.string()), da::UserError);
  fs::remove_all(dir);
}
