#include <gtest/gtest.h>

#include <filesystem>

#include "common/error.h"
#include "common/fs.h"
#include "context/predictor.h"
#include "nn/model_dir.h"
#include "nn/onnx_export.h"
#include "prune/family.h"
#include "test_util.h"

using namespace da::prune;
using da::context::Context;
using da::context::LatencyTable;
using da::nn::Family;
using da::nn::ModelSpec;
using da::nn::Net;
namespace fs = std::filesystem;

namespace {
const da::nn::Dataset& Data() {
  static const da::nn::Dataset d = [] {
    da::nn::Dataset full = da::nn::LoadDataset(da::nn::kFashionMnistDir);
    full.train = full.train.First(3000);
    full.val = full.val.First(500);
    full.test = full.test.First(500);
    return full;
  }();
  return d;
}

const da::context::Profiles& Profiles() {
  static const auto p = da::context::Profiles::Load(std::string(DA_SOURCE_DIR) + "/profiles");
  return p;
}

// A table where a layer costs in x out x (output pixels) x 1e-6 ms (1-D layers:
// channels x pixels x 1e-7): compute time follows MACs, which is what the bias
// test needs (and needs no node).
LatencyTable MacTable(const ModelSpec& spec) {
  LatencyTable t;
  t.runtime = "synthetic";
  for (const auto& l : da::context::KeyedLayers(spec)) {
    auto& e = t.entries[l.key];
    e.in = {1, 2, 4, 8, 16, 32, 64, 128};
    if (l.two_d) e.out = e.in;
    e.ms.clear();
    const double px = l.layer.out_h * l.layer.out_w * std::max(1, l.layer.kernel * l.layer.kernel);
    for (int in : e.in)
      if (l.two_d)
        for (int out : e.out) e.ms.push_back(in * out * px * 1e-6);
      else
        e.ms.push_back(in * px * 1e-7);
  }
  return t;
}

// Zeroes unit channels so they output exactly 0: filter weights, BN gamma and beta.
void ZeroChannels(da::nn::NetImpl& net, const std::map<std::string, std::vector<int64_t>>& drop) {
  torch::NoGradGuard g;
  auto params = net.named_parameters();
  for (const Unit& u : Units(net.spec())) {
    auto it = drop.find(u.name);
    if (it == drop.end()) continue;
    for (const std::string& layer : u.layers)
      for (int64_t c : it->second) {
        if (params.contains(layer + ".conv.weight")) {
          params[layer + ".conv.weight"][c].zero_();
          params[layer + ".bn.weight"][c].zero_();
          params[layer + ".bn.bias"][c].zero_();
        } else {
          params[layer + ".weight"][c].zero_();
          params[layer + ".bias"][c].zero_();
        }
      }
  }
}

std::vector<int64_t> Complement(int n, const std::vector<int64_t>& drop) {
  std::vector<int64_t> keep;
  for (int64_t c = 0; c < n; ++c)
    if (std::find(drop.begin(), drop.end(), c) == drop.end()) keep.push_back(c);
  return keep;
}

Net TrainedTiny(const ModelSpec& spec) {
  torch::manual_seed(1);
  Net net(spec);
  da::nn::TrainOptions o;
  o.epochs = 2;
  o.batch_size = 32;
  o.quiet = true;
  da::nn::Train(net, Data(), o);
  return net;
}

SearchOptions TinySearch() {
  SearchOptions o;
  o.short_steps = 3;
  o.long_epochs = 0;
  o.val_images = 200;
  o.step = 0.2;
  o.train.batch_size = 32;
  o.quiet = true;
  return o;
}

Context MakeContext(const std::string& name, const std::string& device, const std::string& network,
                    double budget) {
  return Context::FromJson({{"name", name},
                            {"device", device},
                            {"network", network},
                            {"budget_ms", budget},
                            {"inferences", 100}},
                           Profiles());
}
// A budget that asks for `fraction` of the base's model-dependent latency (the
// round trip, spread over the inferences, is paid whatever the model).
void SetBudget(Context& c, const LatencyTable& t, const ModelSpec& base, double fraction) {
  const double fixed = c.rtt_ms / c.inferences;
  c.budget_ms = fixed + fraction * (da::context::Predict(c, t, base).total_ms - fixed);
}
}  // namespace

TEST(Units, CoverEveryPrunableLayerOnce) {
  ModelSpec vgg = ModelSpec::Default(Family::kVgg);
  auto u = Units(vgg);
  EXPECT_EQ(u.size(), 7u);  // 6 convs + fc
  EXPECT_EQ(WithUnitWidth(vgg, "s1_1", 9).stages[1][1], 9);
  EXPECT_EQ(WithUnitWidth(vgg, "fc", 9).hidden, 9);
  ModelSpec res = ModelSpec::Default(Family::kResnet);
  u = Units(res);
  EXPECT_EQ(u.size(), 12u);  // 9 inner convs + 3 residual groups
  auto res0 = std::find_if(u.begin(), u.end(), [](const Unit& x) { return x.name == "res0"; });
  ASSERT_NE(res0, u.end());
  EXPECT_EQ(res0->layers, (std::vector<std::string>{"stem", "s0_b0_c2", "s0_b1_c2", "s0_b2_c2"}));
  EXPECT_EQ(WithUnitWidth(res, "res2", 5).residual[2], 5);
  EXPECT_EQ(WithUnitWidth(res, "s1_b2_c1", 5).stages[1][2], 5);
  for (const char* bad : {"s9_0", "res0", "fc2", "s0_0x"})
    EXPECT_THROW(WithUnitWidth(vgg, bad, 3), da::UserError) << bad;
  EXPECT_THROW(WithUnitWidth(res, "fc", 3), da::UserError);
  EXPECT_THROW(WithUnitWidth(res, "res3", 3), da::UserError);
}

// A pruned model computes what the original computes with the removed channels
// zeroed, for both families (residual groups included).
TEST(PruneChannels, MatchesTheOriginalWithThoseChannelsZeroed) {
  for (const ModelSpec& spec :
       {ModelSpec::Default(Family::kVgg).WithWidths("6,5/8/9 fc7"),
        ModelSpec::Default(Family::kResnet).WithWidths("6:5,4/8:6,5/7:4"),
        ModelSpec::Default(Family::kResnet, 3, 32, 32).WithWidths("5:4/6:3")}) {
    torch::manual_seed(3);
    Net net(spec);
    da::test::RandomizeBatchNorm(*net);
    std::map<std::string, std::vector<int64_t>> drop, keep;
    int k = 0;
    for (const Unit& u : Units(spec)) {
      if (k++ % 2) continue;  // every other unit
      drop[u.name] = {0, static_cast<int64_t>(u.width) - 2};
      keep[u.name] = Complement(u.width, drop[u.name]);
    }
    Net pruned = PruneChannels(*net, keep);
    EXPECT_LT(pruned->spec().Params(), spec.Params());
    EXPECT_LT(da::nn::OnnxBytes(pruned->spec()), da::nn::OnnxBytes(spec));
    ZeroChannels(*net, drop);
    net->eval();
    pruned->eval();
    torch::NoGradGuard g;
    auto x = torch::rand({4, spec.channels, spec.height, spec.width});
    EXPECT_LT((net->forward(x) - pruned->forward(x)).abs().max().item<double>(), 1e-5)
        << spec.Summary() << " -> " << pruned->spec().Summary();
  }
}

TEST(PruneChannels, RejectsBadChannelLists) {
  Net net(ModelSpec::Default(Family::kVgg).WithWidths("4/4 fc4"));
  EXPECT_THROW(PruneChannels(*net, {{"s0_0", {}}}), da::UserError);
  EXPECT_THROW(PruneChannels(*net, {{"s0_0", {0, 4}}}), da::UserError);
  EXPECT_THROW(PruneChannels(*net, {{"s0_0", {1, 1}}}), da::UserError);
  EXPECT_THROW(PruneChannels(*net, {{"nope", {1}}}), da::UserError);
}

TEST(Importance, KeepsTheStrongestChannels) {
  Net net(ModelSpec::Default(Family::kVgg).WithWidths("4/4 fc4"));
  {
    torch::NoGradGuard g;
    auto p = net->named_parameters();
    for (int c = 0; c < 4; ++c) {
      p["s0_0.conv.weight"][c].fill_(c == 2 ? 1.0 : 0.1);  // channel 2 has the largest L1
      p["s0_0.bn.weight"][c].fill_(c == 1 ? 2.0 : 0.5);    // channel 1 the largest gamma
    }
  }
  auto l1 = ChannelImportance(*net, Importance::kL1);
  auto bn = ChannelImportance(*net, Importance::kBnScale);
  ModelSpec target = WithUnitWidth(net->spec(), "s0_0", 1);
  Net by_l1 = PruneTo(*net, target, l1), by_bn = PruneTo(*net, target, bn);
  EXPECT_NEAR(by_l1->named_parameters()["s0_0.conv.weight"].abs().sum().item<double>(), 9, 1e-5);
  EXPECT_NEAR(by_bn->named_parameters()["s0_0.bn.weight"].item<double>(), 2.0, 1e-6);
  auto taylor = ChannelImportance(*net, Importance::kTaylor, &Data(), 2);
  ASSERT_EQ(taylor.size(), Units(net->spec()).size());
  for (const auto& [unit, v] : taylor)
    for (double s : v) EXPECT_GE(s, 0) << unit;
  EXPECT_EQ(ParseImportance("taylor"), Importance::kTaylor);
  EXPECT_THROW(ParseImportance("random"), da::UserError);
  EXPECT_THROW(PruneTo(*net, WithUnitWidth(net->spec(), "s0_0", 5), l1), da::UserError);
}

// The heart of context-aware pruning: a network-bound context cuts bytes
// (parameter-heavy layers), a compute-bound one cuts MACs (early, large layers).
TEST(Search, NetworkAndComputeBoundContextsPruneDifferently) {
  // Params: s0 240, s1 5.2k, s2 6.9k, fc 10.8k; MACs: s0 0.17M, s1 1.0M, s2 0.34M, fc 0.01M.
  ModelSpec spec = ModelSpec::Default(Family::kVgg).WithWidths("24/24/32 fc256");
  Net base = TrainedTiny(spec);
  LatencyTable table = MacTable(spec);
  Context net_bound = MakeContext("net", "low", "3g", 1),
          cpu_bound = MakeContext("cpu", "low", "wifi", 1);
  cpu_bound.downlink_kbps = 1e6;  // practically free downloads
  for (Context* c : {&net_bound, &cpu_bound}) SetBudget(*c, table, spec, 0.6);
  auto branches = Search(Method::kContextAware, {net_bound, cpu_bound},
                         {&Data(), &table, base.get()}, TinySearch());
  ASSERT_EQ(branches.size(), 2u);
  const ModelSpec &n = branches[0].net->spec(), &c = branches[1].net->spec();
  for (const Branch& b : branches) {
    EXPECT_FALSE(b.best_effort);
    EXPECT_LE(da::context::Predict(b.context, table, b.net->spec()).total_ms, b.context.budget_ms);
    EXPECT_GE(b.iterations, 1);
    EXPECT_EQ(b.trajectory.size(), static_cast<size_t>(b.iterations) + 1);
  }
  // The network-bound branch is the smaller download, the compute-bound one the
  // fewer MACs; only the network-bound one cuts the parameter-heavy, MAC-light fc.
  EXPECT_LT(da::nn::OnnxBytes(n), da::nn::OnnxBytes(c)) << n.Summary() << " vs " << c.Summary();
  EXPECT_LT(c.Macs(), n.Macs()) << n.Summary() << " vs " << c.Summary();
  EXPECT_LT(n.hidden, c.hidden) << n.Summary() << " vs " << c.Summary();
}

TEST(Search, ImpossibleBudgetGivesAFlaggedBestEffortBranch) {
  ModelSpec spec = ModelSpec::Default(Family::kResnet).WithWidths("4:4/8:4");
  torch::manual_seed(1);
  Net base(spec);
  LatencyTable table = MacTable(spec);
  SearchOptions o = TinySearch();
  o.step = 0.5;
  o.short_steps = 1;
  Context ok = MakeContext("ok", "high", "wifi", 1000),
          never = MakeContext("never", "low", "3g", 1);
  for (Method m : {Method::kContextAware, Method::kUniform, Method::kMacsOnly}) {
    auto b = Search(m, {ok, never}, {&Data(), &table, base.get()}, o);
    ASSERT_EQ(b.size(), 2u);
    EXPECT_FALSE(b[0].best_effort);
    EXPECT_EQ(b[0].net->spec(), spec) << "a context the base meets keeps the base";
    EXPECT_TRUE(b[1].best_effort) << MethodName(m);
    for (const Unit& u : Units(b[1].net->spec())) EXPECT_EQ(u.width, 1) << MethodName(m);
  }
}

TEST(Search, UniformKeepsTheSameRatioEverywhere) {
  ModelSpec spec = ModelSpec::Default(Family::kVgg).WithWidths("16/32/64 fc64");
  torch::manual_seed(1);
  Net base(spec);
  LatencyTable table = MacTable(spec);
  Context c = MakeContext("c", "mid", "4g", 1);
  SetBudget(c, table, spec, 0.5);
  auto b = Search(Method::kUniform, {c}, {&Data(), &table, base.get()}, TinySearch());
  const ModelSpec& s = b[0].net->spec();
  EXPECT_LE(da::context::Predict(c, table, s).total_ms, c.budget_ms);
  double r = s.stages[0][0] / 16.0;
  EXPECT_NEAR(s.stages[1][0] / 32.0, r, 1.0 / 16);
  EXPECT_NEAR(s.stages[2][0] / 64.0, r, 1.0 / 16);
  EXPECT_NEAR(s.hidden / 64.0, r, 1.0 / 16);
  EXPECT_LT(r, 1);
}

// A family's fingerprint records its search options. Options added later are
// recorded only when they differ from how earlier families were built, so
// those families (docs/runs/) still match when built with the same settings.
TEST(Search, OptionsAddedLaterAreRecordedOnlyWhenTheyDiffer) {
  SearchOptions o;
  o.long_augment = false, o.distill_weight = 0.9;
  EXPECT_EQ(o.ToJson()["long_augment"], false);
  EXPECT_EQ(o.ToJson()["distill"]["weight"], 0.9);
  o.long_augment = true, o.distill_weight = 0;
  EXPECT_FALSE(o.ToJson().contains("long_augment"));
  EXPECT_FALSE(o.ToJson().contains("distill"));
}

TEST(Threshold, IsTheSmallestThatKeepsAccuracy) {
  // 10 inputs, 2 classes. The base is right on all but input 9; the branch is
  // wrong on its 3 least confident inputs (0, 1, 2).
  auto labels = torch::zeros({10}, torch::kInt64);
  auto base = torch::zeros({10, 2});
  base.select(1, 0).fill_(0.9), base.select(1, 1).fill_(0.1);
  base[9][0] = 0.2, base[9][1] = 0.8;
  auto branch = torch::zeros({10, 2});
  for (int i = 0; i < 10; ++i) {
    double conf = 0.55 + 0.04 * i;
    bool right = i >= 3;
    branch[i][right ? 0 : 1] = conf;
    branch[i][right ? 1 : 0] = 1 - conf;
  }
  // Base accuracy 0.9. Allowed drop 0: offloading the least confident inputs 0
  // and 1 (both wrong on the branch, right on the base) already gives 0.9, so
  // tau is the confidence of input 2, the first one the branch keeps.
  Threshold t = ChooseThreshold(branch, base, labels, 0.0);
  EXPECT_NEAR(t.tau, 0.55 + 0.04 * 2, 1e-6);
  EXPECT_NEAR(t.offload_fraction, 0.2, 1e-9);
  EXPECT_NEAR(t.accuracy, 0.9, 1e-9);
  // Allowed drop 0.2: the branch alone (0.7) is enough: nothing offloaded.
  Threshold none = ChooseThreshold(branch, base, labels, 0.2);
  EXPECT_EQ(none.offload_fraction, 0);
  EXPECT_NEAR(none.accuracy, 0.7, 1e-9);
  // A branch always wrong and drop 0: everything goes to the base.
  auto wrong = torch::zeros({10, 2});
  wrong.select(1, 1).fill_(1.0);
  Threshold all = ChooseThreshold(wrong, base, labels, 0.0);
  EXPECT_EQ(all.offload_fraction, 1);
  EXPECT_GT(all.tau, 1);
  EXPECT_NEAR(ApplyThreshold(branch, base, labels, 0.0).accuracy, 0.7, 1e-9);
  // The curve from "never" to t.tau: offloading 0, then 1, then 2 inputs.
  const std::vector<Threshold> curve = ThresholdCurve(branch, base, labels, t.tau, 4);
  ASSERT_EQ(curve.size(), 3u);
  EXPECT_EQ(curve[0].tau, 0);
  EXPECT_NEAR(curve[0].accuracy, 0.7, 1e-9);
  EXPECT_NEAR(curve[1].offload_fraction, 0.1, 1e-9);
  EXPECT_NEAR(curve[1].accuracy, 0.8, 1e-9);
  EXPECT_NEAR(curve[2].tau, t.tau, 1e-9);
  EXPECT_NEAR(curve[2].accuracy, t.accuracy, 1e-9);
  EXPECT_EQ(CurveJson(curve).size(), 3u);
}

TEST(Family, BuildsARepositoryAndReusesIt) {
  fs::path dir = fs::temp_directory_path() / "da-family-test";
  fs::remove_all(dir);
  ModelSpec spec = ModelSpec::Default(Family::kVgg).WithWidths("8/16 fc16");
  Net base = TrainedTiny(spec);
  nlohmann::json metrics = da::nn::ModelMetrics(base, Data());
  metrics["data_dir"] = Data().dir;
  da::nn::SaveModelDir((dir / "base").string(), *base, metrics);
  LatencyTable table = MacTable(spec);
  Context a = MakeContext("a", "mid", "4g", 1), b = MakeContext("b", "low", "3g", 1);
  SetBudget(a, table, spec, 0.7);
  SetBudget(b, table, spec, 0.5);
  FamilyInputs in{(dir / "base").string(), {a, b}, {a, b}, &table, &Data()};
  SearchOptions o = TinySearch();
  o.long_epochs = 0.05;
  const std::string repo = (dir / "repo").string();
  nlohmann::json family = BuildFamily(in, o, Method::kContextAware, repo, false);
  ASSERT_EQ(family["branches"].size(), 2u);
  for (const auto& br : family["branches"]) {
    fs::path d = fs::path(repo) / br["dir"].get<std::string>();
    for (const char* f : {"spec.json", "weights.pt", "model.onnx", "metrics.json"})
      EXPECT_TRUE(fs::exists(d / f)) << d / f;
    nlohmann::json m = da::nn::ReadMetrics(d.string());
    for (const char* k : {"val_accuracy", "test_accuracy", "params", "macs", "bytes", "context",
                          "threshold", "predicted", "best_effort"})
      EXPECT_TRUE(m.contains(k)) << k;
    EXPECT_TRUE(m["predicted"].contains("a") && m["predicted"].contains("b"));
    EXPECT_FALSE(m["best_effort"].get<bool>());
    EXPECT_LE(m["predicted"][br["context"].get<std::string>()]["latency_ms"].get<double>(),
              br["budget_ms"].get<double>());
    EXPECT_EQ(fs::file_size(d / "model.onnx"), static_cast<uintmax_t>(m["bytes"].get<int64_t>()));
    double tau = m["threshold"]["tau"];
    EXPECT_TRUE(tau >= 0 && tau <= 1.0 + 1e-6);
    EXPECT_GE(m["threshold"]["val_collaborative_accuracy"].get<double>(),
              family["base"]["val_accuracy"].get<double>() - o.accuracy_drop - 1e-9);
  }
  EXPECT_TRUE(fs::exists(fs::path(repo) / "base" / "model.onnx"));
  EXPECT_FALSE(FamilyTable(family).empty());
  // Same inputs: reused as it is; other inputs: rebuilt.
  auto stamp = fs::last_write_time(fs::path(repo) / kFamilyFile);
  nlohmann::json again = BuildFamily(in, o, Method::kContextAware, repo, true);
  EXPECT_EQ(again, family);
  EXPECT_EQ(fs::last_write_time(fs::path(repo) / kFamilyFile), stamp);
  // A family from before the validation curves gets them on reuse: the same
  // curves, in family.json and in each branch's metrics.
  nlohmann::json old = family;
  for (auto& br : old["branches"]) {
    EXPECT_GE(br["threshold"]["curve"].size(), 1u);
    br["threshold"].erase("curve");
    const std::string d = (fs::path(repo) / br["dir"].get<std::string>()).string();
    nlohmann::json m = da::nn::ReadMetrics(d);
    m["threshold"].erase("curve");
    da::WriteFileAtomic((fs::path(d) / "metrics.json").string(), m.dump());
  }
  da::WriteFileAtomic((fs::path(repo) / kFamilyFile).string(), old.dump());
  // (The reloaded weights move confidences by a float's last bit.)
  auto same = [](const nlohmann::json& a, const nlohmann::json& b) {
    ASSERT_EQ(a.size(), b.size());
    for (size_t i = 0; i < a.size(); ++i) {
      EXPECT_NEAR(a[i][0].get<double>(), b[i][0].get<double>(), 1e-6) << i;
      EXPECT_EQ(a[i][1], b[i][1]) << i;
      EXPECT_EQ(a[i][2], b[i][2]) << i;
    }
  };
  const nlohmann::json upgraded = BuildFamily(in, o, Method::kContextAware, repo, true);
  EXPECT_EQ(ReadFamily(repo), upgraded);
  for (size_t i = 0; i < family["branches"].size(); ++i) {
    const auto& br = family["branches"][i];
    same(upgraded["branches"][i]["threshold"]["curve"], br["threshold"]["curve"]);
    same(da::nn::ReadMetrics((fs::path(repo) / br["dir"].get<std::string>()).string())["threshold"]
                            ["curve"],
         br["threshold"]["curve"]);
  }
  fs::remove_all(dir);
}
