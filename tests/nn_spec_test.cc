#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "common/error.h"
#include "nn/spec.h"

using da::nn::Family;
using da::nn::ModelSpec;

TEST(Spec, DefaultsRoundTripThroughJsonAndWidthText) {
  for (Family f : {Family::kVgg, Family::kResnet}) {
    for (auto [c, h] : {std::pair{1, 28}, std::pair{3, 32}}) {
      ModelSpec s = ModelSpec::Default(f, c, h, h, 10);
      EXPECT_EQ(ModelSpec::FromJson(nlohmann::json::parse(s.ToJson().dump())), s);
      std::string summary = s.Summary();
      std::string widths = summary.substr(summary.find(' ') + 1);
      EXPECT_EQ(s.WithWidths(widths), s) << widths;
    }
  }
}

TEST(Spec, OddWidthsParse) {
  ModelSpec v = ModelSpec::Default(Family::kVgg).WithWidths("3/5,1/7 fc2");
  EXPECT_EQ(v.stages, (std::vector<std::vector<int>>{{3}, {5, 1}, {7}}));
  EXPECT_EQ(v.hidden, 2);
  ModelSpec r = ModelSpec::Default(Family::kResnet).WithWidths("3:1,2/1:3/2:5,1");
  EXPECT_EQ(r.residual, (std::vector<int>{3, 1, 2}));
  EXPECT_EQ(r.stages, (std::vector<std::vector<int>>{{1, 2}, {3}, {5, 1}}));
}

TEST(Spec, BadWidthTextIsUserError) {
  ModelSpec v = ModelSpec::Default(Family::kVgg);
  for (std::string bad : {"", "0,3", "a,b", "3,,4", "3/", "-1", "32 fc0", "99999999"})
    EXPECT_THROW(v.WithWidths(bad), da::UserError) << bad;
  ModelSpec r = ModelSpec::Default(Family::kResnet);
  for (std::string bad : {"16,16", "16:", "16:16 fc3", "0:1"})
    EXPECT_THROW(r.WithWidths(bad), da::UserError) << bad;
}

TEST(Spec, BadJsonIsUserError) {
  auto good = ModelSpec::Default(Family::kVgg).ToJson();
  std::vector<nlohmann::json> bad;
  for (auto key : {"family", "stages", "input", "classes", "hidden"}) {
    auto j = good;
    j.erase(key);
    bad.push_back(j);
  }
  auto j = good;
  j["family"] = "mlp";
  bad.push_back(j);
  j = good;
  j["stages"][0][0] = 0;
  bad.push_back(j);
  j = good;
  j["stages"][0][0] = "wide";
  bad.push_back(j);
  j = good;
  j["input"] = {1, 3, 3};  // too small for three stages
  bad.push_back(j);
  j = good;
  j["classes"] = 1;
  bad.push_back(j);
  bad.push_back(nlohmann::json::array());
  auto r = ModelSpec::Default(Family::kResnet).ToJson();
  r["residual"] = {16, 32};
  bad.push_back(r);
  for (auto& b : bad) EXPECT_THROW(ModelSpec::FromJson(b), da::UserError) << b.dump();
}

TEST(Spec, CountsMatchHandComputation) {
  // vgg: conv 1->2 at 4x4, pool, conv 2->3 at 2x2, gap, fc 3->4, cls 4->2.
  ModelSpec s;
  s.family = Family::kVgg;
  s.stages = {{2}, {3}};
  s.hidden = 4;
  s.channels = 1, s.height = s.width = 4, s.classes = 2;
  EXPECT_EQ(s.Params(), (1 * 2 * 9 + 2) + (2 * 3 * 9 + 3) + (3 * 4 + 4) + (4 * 2 + 2));
  EXPECT_EQ(s.Macs(), 1 * 2 * 9 * 16 + 2 * 3 * 9 * 4 + 3 * 4 + 4 * 2);
  // resnet: stem 1->2 at 4x4; block (2->3->2, identity); stage 2 at 2x2: block 2->1->2 + proj 2->2;
  // cls.
  ModelSpec r;
  r.family = Family::kResnet;
  r.stages = {{3}, {1}};
  r.residual = {2, 2};
  r.channels = 1, r.height = r.width = 4, r.classes = 2;
  EXPECT_EQ(r.Params(), (1 * 2 * 9 + 2) + (2 * 3 * 9 + 3) + (3 * 2 * 9 + 2) + (2 * 1 * 9 + 1) +
                            (1 * 2 * 9 + 2) + (2 * 2 + 2) + (2 * 2 + 2));
  EXPECT_EQ(r.Macs(),
            16 * (1 * 2 * 9 + 2 * 3 * 9 + 3 * 2 * 9) + 4 * (2 * 1 * 9 + 1 * 2 * 9 + 2 * 2) + 2 * 2);
}
