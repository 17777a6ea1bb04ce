#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "common/error.h"
#include "nn/model.h"
#include "test_util.h"

using namespace da::nn;

TEST(Model, OddWidthsBuildAndRunForward) {
  for (const ModelSpec& s : da::test::OddSpecs()) {
    Net net(s);
    for (bool train : {true, false}) {
      net->train(train);
      torch::NoGradGuard g;
      auto y = net->forward(torch::rand({3, s.channels, s.height, s.width}));
      EXPECT_EQ(y.sizes(), (std::vector<int64_t>{3, s.classes})) << s.Summary();
      EXPECT_TRUE(torch::isfinite(y).all().item<bool>()) << s.Summary();
    }
  }
}

TEST(Model, ParamsFromSpecMatchDeployedNet) {
  for (const ModelSpec& s : da::test::OddSpecs()) {
    Net fused(s, true);
    int64_t n = 0;
    for (auto& p : fused->parameters()) n += p.numel();
    EXPECT_EQ(s.Params(), n) << s.Summary();
  }
}

TEST(Model, FusedNetComputesTheSameFunction) {
  for (const ModelSpec& s : da::test::OddSpecs()) {
    Net net(s);
    da::test::RandomizeBatchNorm(*net);
    auto x = torch::rand({5, s.channels, s.height, s.width});
    torch::NoGradGuard g;
    auto expected = net->forward(x);
    Net fused = Fuse(*net);
    EXPECT_LT((fused->forward(x) - expected).abs().max().item<float>(), 1e-4) << s.Summary();
    fused->ToChannelsLast();
    EXPECT_LT((fused->forward(x.contiguous(torch::MemoryFormat::ChannelsLast)) - expected)
                  .abs()
                  .max()
                  .item<float>(),
              1e-4)
        << s.Summary();
    // The edge's inference path (oneDNN tensors), for several batch sizes.
    Net served = PrepareForInference(*net);
    c10::InferenceMode mode;
    for (int64_t n : {1, 5, 3}) {
      auto out = served->forward(x.narrow(0, 0, n));
      EXPECT_FALSE(out.is_mkldnn());
      EXPECT_LT((out - expected.narrow(0, 0, n)).abs().max().item<float>(), 1e-4)
          << s.Summary() << " batch " << n;
    }
  }
}

TEST(Model, WrongInputShapeIsUserError) {
  Net net(ModelSpec::Default(Family::kVgg));
  EXPECT_THROW(net->forward(torch::rand({1, 3, 28, 28})), da::UserError);
  EXPECT_THROW(net->forward(torch::rand({28, 28})), da::UserError);
}

TEST(Model, WeightsRoundTripAndMismatchesAreUserErrors) {
  namespace fs = std::filesystem;
  fs::path dir = fs::temp_directory_path() / ("da_model_test_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  std::string path = (dir / "w.pt").string();
  ModelSpec s = da::test::OddSpecs()[0];
  Net a(s);
  da::test::RandomizeBatchNorm(*a);
  SaveWeights(*a, path);
  Net b(s);
  LoadWeights(*b, path);
  a->eval(), b->eval();
  auto x = torch::rand({2, s.channels, s.height, s.width});
  torch::NoGradGuard g;
  EXPECT_TRUE(torch::equal(a->forward(x), b->forward(x)));

  Net other(s.WithWidths("4/5,1/7 fc2"));
  EXPECT_THROW(LoadWeights(*other, path), da::UserError);
  EXPECT_THROW(LoadWeights(*b, (dir / "missing.pt").string()), da::UserError);
  std::ofstream(dir / "junk.pt") << "not a weights file";
  EXPECT_THROW(LoadWeights(*b, (dir / "junk.pt").string()), da::UserError);
  fs::remove_all(dir);
}
