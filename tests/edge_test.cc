#include <gtest/gtest.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <random>

#include "common/error.h"
#include "common/fs.h"
#include "common/sha256.h"
#include "edge/cache.h"
#include "edge/store.h"
#include "sim/cache_sim.h"
#include "test_mutate.h"

namespace fs = std::filesystem;
using namespace da::edge;
using da::context::Context;

namespace {

const da::context::Profiles& Profiles() {
  static const auto p = da::context::Profiles::Load(std::string(DA_SOURCE_DIR) + "/profiles");
  return p;
}

Context Ctx(const std::string& device, const std::string& network, double budget) {
  return Context::FromJson({{"name", "t"},
                            {"device", device},
                            {"network", network},
                            {"budget_ms", budget},
                            {"inferences", 100}},
                           Profiles());
}

// Bigger models are slower and more accurate.
std::vector<CatalogModel> Family() {
  return {{"small", 50'000, 0.88, 0.2}, {"mid", 200'000, 0.91, 0.5}, {"big", 800'000, 0.93, 1.5}};
}

fs::path FreshDir(const std::string& name) {
  fs::path d = fs::temp_directory_path() / (name + "-" + std::to_string(::getpid()));
  fs::remove_all(d);
  return d;
}

}  // namespace

TEST(Match, PicksTheMostAccurateModelWithinBudgetElseTheFastest) {
  auto models = Family();
  auto none = [](int) { return false; };
  const double mid_ms = da::context::Predict(Ctx("mid", "4g", 1), 0.5, 200'000).total_ms;
  Match m = MatchContext(Ctx("mid", "4g", mid_ms + 0.01), models, none);
  EXPECT_EQ(models[size_t(m.ideal)].id, "mid");
  EXPECT_TRUE(m.meets_budget);
  EXPECT_FALSE(m.ideal_cached);
  EXPECT_EQ(m.served, m.ideal);  // nothing cached: the ideal, fetched from the cloud
  m = MatchContext(Ctx("mid", "4g", 1e6), models, none);
  EXPECT_EQ(models[size_t(m.ideal)].id, "big");
  m = MatchContext(Ctx("low", "3g", 0.01), models, none);
  EXPECT_FALSE(m.meets_budget);
  EXPECT_EQ(models[size_t(m.ideal)].id, "small");  // the fastest, flagged
  // Ideal not cached: the best cached model within budget answers now.
  m = MatchContext(Ctx("mid", "4g", 1e6), models, [](int i) { return i == 0; });
  EXPECT_EQ(models[size_t(m.ideal)].id, "big");
  EXPECT_EQ(models[size_t(m.served)].id, "small");
  EXPECT_FALSE(m.ideal_cached);
  // Nothing cached within budget: the ideal, unless only cached models can be
  // served (the cloud is down): then the fastest cached one.
  auto mid_big = [](int i) { return i > 0; };
  m = MatchContext(Ctx("low", "3g", 0.01), models, mid_big);
  EXPECT_EQ(models[size_t(m.served)].id, "small");
  m = MatchContext(Ctx("low", "3g", 0.01), models, mid_big, {.only_cached = true});
  EXPECT_EQ(models[size_t(m.served)].id, "mid");
  m = MatchContext(Ctx("low", "3g", 0.01), models, none, {.only_cached = true});
  EXPECT_EQ(models[size_t(m.served)].id, "small");  // nothing cached at all
}

TEST(Match, SpendsTheBudgetsSlackOnFallbacks) {
  // The pipeline gains accuracy as the branch leaves more inputs to the edge.
  CatalogModel m{"b", 200'000, 0.88, 0.5, {{0, 0, 0.88}, {0.3, 0.05, 0.90}, {0.5, 0.10, 0.92}}};
  const Context c = Ctx("mid", "4g", 1);
  const double local = da::context::Predict(c, 0.5, 200'000).total_ms;
  auto plan = [&](double budget, double fallback_ms) {
    Context b = c;
    b.budget_ms = budget;
    return PlanModel(b, m, fallback_ms);
  };
  // A 100 ms answer from the edge, 7 ms of slack: 5% of inputs fit, not 10%.
  Plan p = plan(local + 7, 100);
  EXPECT_EQ(p.tau, 0.3);
  EXPECT_EQ(p.accuracy, 0.90);
  EXPECT_NEAR(p.latency_ms, local + 5, 1e-9);
  EXPECT_EQ(plan(local + 10, 100).tau, 0.5);  // all of them
  EXPECT_EQ(plan(local + 4, 100).tau, 0);     // none
  EXPECT_EQ(plan(local + 1e6, INFINITY).tau, 0);  // an edge never asked
  // Over budget already: asking the edge would only add to it.
  p = plan(local - 1, 0.001);
  EXPECT_EQ(p.tau, 0);
  EXPECT_EQ(p.latency_ms, local);
  // The fallback's time: page work at the slowdown, upload, round trip, server, answer.
  EXPECT_NEAR(FallbackMs(c, 1000, 3, 2),
              c.slowdown * 2 + 8000 / c.uplink_kbps + c.rtt_ms + 3 + 8.0 * kAnswerBytes / c.downlink_kbps,
              1e-9);
}

TEST(Match, AFasterModelWithinTheMarginWins) {
  auto models = Family();
  models[1].accuracy = 0.928;  // mid: 0.2 points below big
  auto none = [](int) { return false; };
  const Context c = Ctx("mid", "4g", 1e6);
  EXPECT_EQ(models[size_t(MatchContext(c, models, none).ideal)].id, "big");
  EXPECT_EQ(models[size_t(MatchContext(c, models, none, {.margin = 0.0025}).ideal)].id, "mid");
  EXPECT_EQ(models[size_t(MatchContext(c, models, none, {.margin = 0.001}).ideal)].id, "big");
  // The pipeline's accuracy decides: with the edge's answers small ties big.
  models[0].curve = {{0, 0, 0.88}, {0.6, 0.2, 0.93}};
  const Match m = MatchContext(c, models, none, {.fallback_ms = 1, .margin = 0.0025});
  EXPECT_EQ(models[size_t(m.ideal)].id, "small");
  EXPECT_EQ(m.plan.tau, 0.6);
  EXPECT_EQ(m.plan.accuracy, 0.93);
}

TEST(Match, ReadsCurvesOfBothFormats) {
  auto curve = ParseCurve({{"tau", 0.4}, {"curve", {{0, 0, 0.9}, {0.2, 0.01, 0.91}, {0.4, 0.03, 0.92}}}}, 0.9);
  ASSERT_EQ(curve.size(), 3u);
  EXPECT_EQ(curve[2].offload, 0.03);
  // Before issue 26: "never" and the chosen threshold.
  curve = ParseCurve({{"tau", 0.4}, {"val_offload_fraction", 0.03}, {"val_collaborative_accuracy", 0.92}}, 0.9);
  ASSERT_EQ(curve.size(), 2u);
  EXPECT_EQ(curve[0].accuracy, 0.9);
  EXPECT_EQ(curve[1].tau, 0.4);
  for (const char* bad : {R"({"curve": [[0.5, 0, 0.9], [0.2, 0.01, 0.9]]})",  // out of order
                          R"({"curve": [[0, 2, 0.9]]})", R"({"curve": [[0, 0]]})", R"({"curve": 3})",
                          R"({"tau": 0.4})"})
    EXPECT_THROW(ParseCurve(nlohmann::json::parse(bad), 0.9), da::UserError) << bad;
}

TEST(ModelCache, UtilityKeepsTheMostUsefulBytes) {
  auto models = Family();
  ModelCache c(Policy::kUtility, 260'000, 100);
  std::vector<std::string> added, dropped;
  // A miss does not change the content; a refresh does.
  EXPECT_FALSE(c.Request(models[2], 0, &added, &dropped));
  EXPECT_TRUE(added.empty());
  for (int i = 0; i < 10; ++i) c.Request(models[0], 1, nullptr, nullptr);
  for (int i = 0; i < 10; ++i) c.Request(models[1], 1, nullptr, nullptr);
  c.Refresh(models, 1, &added, &dropped);
  // big does not fit; small and mid do (250 KB).
  EXPECT_TRUE(c.Contains("small") && c.Contains("mid"));
  EXPECT_EQ(c.used(), 250'000);
  EXPECT_EQ(added.size(), 2u);
  // Demand moves to big and decays away from the others (half-life 100 s).
  for (int i = 0; i < 30; ++i) c.Request(models[2], 1000, nullptr, nullptr);
  ModelCache wide(Policy::kUtility, 900'000, 100);
  wide.LoadDemand(c.demand());
  wide.Refresh(models, 1000, nullptr, nullptr);
  EXPECT_TRUE(wide.Contains("big"));
  // Greedy by density would take small + mid; one big model gains more.
  ModelCache one(Policy::kUtility, 800'000, 1e9);
  for (int i = 0; i < 100; ++i) one.Request(models[2], 0, nullptr, nullptr);
  one.Request(models[0], 0, nullptr, nullptr);
  one.Refresh(models, 0, nullptr, nullptr);
  EXPECT_TRUE(one.Contains("big"));
}

TEST(ModelCache, LruAndLfuAdmitOnMissAndEvict) {
  auto models = Family();
  ModelCache lru(Policy::kLru, 260'000, 100);
  std::vector<std::string> added, dropped;
  EXPECT_FALSE(lru.Request(models[0], 0, &added, &dropped));
  EXPECT_TRUE(lru.Request(models[0], 1, &added, &dropped));
  EXPECT_FALSE(lru.Request(models[1], 2, &added, &dropped));
  EXPECT_EQ(added, (std::vector<std::string>{"small", "mid"}));
  EXPECT_FALSE(lru.Request(models[2], 3, &added, &dropped));  // too big: not admitted
  EXPECT_FALSE(lru.Contains("big"));
  lru.Request(models[0], 4, nullptr, nullptr);
  ModelCache small(Policy::kLru, 210'000, 100);
  small.Request(models[0], 0, nullptr, nullptr);
  small.Request(models[1], 1, nullptr, &dropped);  // small (least recent) goes
  EXPECT_EQ(dropped.back(), "small");
  EXPECT_TRUE(small.Contains("mid"));

  ModelCache lfu(Policy::kLfu, 210'000, 100);
  for (int i = 0; i < 5; ++i) lfu.Request(models[0], i, nullptr, nullptr);
  lfu.Request(models[1], 10, nullptr, nullptr);  // only one fits: the newcomer is admitted
  EXPECT_TRUE(lfu.Contains("mid"));
  EXPECT_FALSE(lfu.Contains("small"));
  lfu.Request(models[0], 11, nullptr, nullptr);  // small (6 requests) back, mid (1) out
  EXPECT_TRUE(lfu.Contains("small"));
  EXPECT_FALSE(lfu.Contains("mid"));
  EXPECT_THROW(ModelCache(Policy::kLru, -1, 1), da::UserError);
  EXPECT_THROW(ParsePolicy("fifo"), da::UserError);
}

TEST(Store, KeepsFilesAndDemandAcrossReopenAndDropsBrokenFiles) {
  const fs::path dir = FreshDir("da-edge-store");
  const std::string a(1000, 'a'), b(2000, 'b');
  {
    Store s(dir.string());
    s.Put("a", da::Sha256Hex(a), a);
    s.Put("b", da::Sha256Hex(b), b);
    EXPECT_THROW(s.Put("c", da::Sha256Hex(a), b), std::runtime_error);
    s.SaveDemand({{"a", {3, 10, 5, 9}}});
    s.SetValue("catalog", "{}");
  }
  // An unindexed file (a crash between write and index) and a corrupted one.
  da::WriteFileAtomic((dir / "blobs" / "orphan.onnx").string(), "x");
  std::string broken = b;
  broken[5] = 'x';
  da::WriteFileAtomic((dir / "blobs" / (da::Sha256Hex(b) + ".onnx")).string(), broken);
  Store s(dir.string());
  ASSERT_EQ(s.Files().size(), 1u);
  EXPECT_EQ(s.Files()[0].id, "a");
  EXPECT_EQ(da::ReadFile(s.Path(da::Sha256Hex(a))), a);
  ASSERT_EQ(s.problems().size(), 1u);
  EXPECT_NE(s.problems()[0].find("corrupt"), std::string::npos);
  EXPECT_FALSE(fs::exists(dir / "blobs" / "orphan.onnx"));
  EXPECT_FALSE(fs::exists(dir / "blobs" / (da::Sha256Hex(b) + ".onnx")));
  auto d = s.LoadDemand();
  ASSERT_EQ(d.count("a"), 1u);
  EXPECT_EQ(d["a"].count, 3);
  EXPECT_EQ(d["a"].total, 5);
  EXPECT_EQ(s.Value("catalog"), "{}");
  EXPECT_FALSE(s.Value("nothing"));
  s.Remove("a");
  EXPECT_TRUE(s.Files().empty());
  EXPECT_FALSE(fs::exists(s.Path(da::Sha256Hex(a))));
  fs::remove_all(dir);
}

// A cached file that cannot be read (here: a directory in its place) is a
// problem reported and dropped, not a failure to open the state.
TEST(Store, AnUnreadableCachedFileIsDroppedNotFatal) {
  const fs::path dir = FreshDir("da-edge-store-unreadable");
  const std::string a(1000, 'a'), b(500, 'b');
  {
    Store s(dir.string());
    s.Put("a", da::Sha256Hex(a), a);
    s.Put("b", da::Sha256Hex(b), b);
  }
  const fs::path blob = dir / "blobs" / (da::Sha256Hex(a) + ".onnx");
  fs::remove(blob);
  fs::create_directories(blob / "x");
  std::unique_ptr<Store> s;
  ASSERT_NO_THROW(s = std::make_unique<Store>(dir.string()));
  ASSERT_EQ(s->Files().size(), 1u);
  EXPECT_EQ(s->Files()[0].id, "b");
  ASSERT_EQ(s->problems().size(), 1u);
  EXPECT_NE(s->problems()[0].find("dropped"), std::string::npos);
  EXPECT_FALSE(fs::exists(blob));
  s.reset();
  fs::remove_all(dir);
}

// During an outage lru/lfu count a miss but must not admit it (what they
// would evict could not be replaced).
TEST(ModelCache, RequestWithoutAdmissionOnlyCounts) {
  for (Policy p : {Policy::kLru, Policy::kLfu}) {
    ModelCache c(p, 100, 60);
    c.Request({"a", 80, 0.9, 1}, 0, nullptr, nullptr);
    std::vector<std::string> added, dropped;
    EXPECT_FALSE(c.Request({"b", 80, 0.9, 1}, 1, &added, &dropped, /*admit=*/false));
    EXPECT_TRUE(c.Contains("a"));
    EXPECT_FALSE(c.Contains("b"));
    EXPECT_TRUE(added.empty() && dropped.empty());
    EXPECT_EQ(c.demand().at("b").total, 1);
  }
}

// The same for contexts (match and prune-request bodies): a context or a UserError.
TEST(ContextParser, SurvivesMutatedBodies) {
  std::mt19937 rng(8);
  const std::string seeds[] = {
      R"({"name": "v", "device": "mid", "network": "4g", "budget_ms": 20, "inferences": 100})",
      R"({"name": "v", "slowdown": 3.5, "downlink_kbps": 5000, "rtt_ms": 40, "budget_ms": 20, "inferences": 10})"};
  int parsed = 0, rejected = 0;
  for (int i = 0; i < 3000; ++i) {
    const nlohmann::json j =
        nlohmann::json::parse(da::test::Mutate(seeds[i % 2], rng), nullptr, false);
    try {
      Context c = Context::FromJson(j, Profiles());
      EXPECT_TRUE(std::isfinite(c.slowdown) && c.slowdown > 0 && c.budget_ms > 0);
      ++parsed;
    } catch (const da::UserError&) {
      ++rejected;
    }
  }
  EXPECT_GT(parsed, 0);
  EXPECT_GT(rejected, 0);
}

TEST(CacheSim, TracesAreSeededAndZipfPopular) {
  da::sim::TraceOptions o;
  o.contexts = 50, o.requests = 4000, o.drift_every = 1'000'000;
  auto a = da::sim::ZipfTrace(o), b = da::sim::ZipfTrace(o);
  ASSERT_EQ(a.size(), 4000u);
  std::vector<int> count(50);
  for (size_t i = 0; i < a.size(); ++i) {
    ASSERT_EQ(a[i].context, b[i].context);
    ++count[size_t(a[i].context)];
  }
  // Zipf s = 1 over 50 ranks: the top context draws 1/H(50) = 22% of requests.
  EXPECT_NEAR(*std::max_element(count.begin(), count.end()) / 4000.0, 0.222, 0.03);
  o.seed = 2;
  auto c = da::sim::ZipfTrace(o);
  size_t same = 0;
  for (size_t i = 0; i < a.size(); ++i) same += a[i].context == c[i].context;
  EXPECT_LT(same, a.size() / 2);
  o.drift_fraction = 2;
  EXPECT_THROW(da::sim::ZipfTrace(o), da::UserError);
}

TEST(CacheSim, VisitorsBudgetsRelativeToTheBaseAndNearTheFamily) {
  da::sim::TraceOptions o;
  o.contexts = 200;
  const da::sim::BaseModel base{2.0, 1'000'000};
  for (const Context& c : da::sim::RandomContexts(o, Profiles(), 0.1, 0.6, &base)) {
    const double f = c.budget_ms / da::context::Predict(c, 2.0, 1'000'000).total_ms;
    EXPECT_GE(f, 0.1 - 1e-9);
    EXPECT_LE(f, 0.6 + 1e-9);
  }
  EXPECT_THROW(da::sim::RandomContexts(o, Profiles(), 5, 1), da::UserError);
  const std::vector<Context> made_for = {Ctx("low", "3g", 50), Ctx("high", "wifi", 3)};
  for (const Context& c : da::sim::ContextsNear(o, Profiles(), made_for, 1.25)) {
    const Context& m = c.slowdown > 4 ? made_for[0] : made_for[1];
    EXPECT_LE(std::abs(std::log(c.budget_ms / m.budget_ms)), std::log(1.25) + 1e-9);
    EXPECT_LE(std::abs(std::log(c.downlink_kbps / m.downlink_kbps)), std::log(1.25) + 1e-9);
  }
  EXPECT_THROW(da::sim::ContextsNear(o, Profiles(), {}, 1.25), da::UserError);
  EXPECT_THROW(da::sim::ContextsNear(o, Profiles(), made_for, 0.5), da::UserError);
}

TEST(CacheSim, UtilityBeatsLruWhenOneBigModelIsRarelyNeeded) {
  // Most visitors need "small"; every tenth wants "big" (budget unbounded).
  // 800 KB holds big alone or small + mid: LRU admits big on each of its
  // requests and evicts small; utility keeps small.
  auto models = Family();
  std::vector<Context> contexts = {Ctx("high", "wifi", 1e6)};
  const double small_ms = da::context::Predict(Ctx("mid", "4g", 1), 0.2, 50'000).total_ms;
  contexts.push_back(Ctx("mid", "4g", small_ms + 0.01));  // only small meets it
  std::vector<da::sim::Request> trace;
  for (int i = 0; i < 2000; ++i) trace.push_back({i % 10 == 0 ? 0 : 1, i * 0.1});
  da::sim::CacheSimOptions so;
  so.refresh_s = 1;
  auto lru = da::sim::SimulateCache(Policy::kLru, 800'000, models, contexts, trace, so);
  auto util = da::sim::SimulateCache(Policy::kUtility, 800'000, models, contexts, trace, so);
  EXPECT_GT(util.hit_rate, 0.88);  // small, for 90% of requests, from the first refresh on
  EXPECT_LT(lru.hit_rate, 0.82);   // each big request misses, and so does the next small one
  EXPECT_GT(lru.bytes_fetched, 10 * util.bytes_fetched);
  // A cache that holds the family: every policy hits nearly always.
  for (Policy p : {Policy::kUtility, Policy::kLru, Policy::kLfu})
    EXPECT_GT(da::sim::SimulateCache(p, 2'000'000, models, contexts, trace, so).hit_rate, 0.98);
}
