// The system simulator's arithmetic on workloads small enough to check by hand.
#include "sim/system_sim.h"

#include <gtest/gtest.h>

#include <cmath>

#include "common/error.h"

using namespace da::sim;

namespace {

const da::context::Profiles& Profiles() {
  static const auto p = da::context::Profiles::Load(std::string(DA_SOURCE_DIR) + "/profiles");
  return p;
}

// One model answering `label` with probability `top` on every one of 4 images.
SystemModel Model(const std::string& id, int64_t bytes, double ref_ms, int label, float top,
                  double threshold = 0) {
  return {id,
          bytes,
          ref_ms,
          threshold,
          0.9,
          std::vector<int64_t>(4, label),
          std::vector<float>(4, top)};
}

SystemInput Input() {
  SystemInput in;
  in.base = Model("base", 1'000'000, 2.0, 1, 0.9f);
  in.branches = {Model("small", 100'000, 0.5, 1, 0.9f, 0.5)};
  in.splits = {{0, 0, 784}, {1, 1, 0}};
  in.labels = {1, 1, 1, 0};  // the base and the branch are right on 3 of 4
  in.edge.batch = in.cloud.batch = {1, 64};
  in.edge.ms = in.cloud.ms = {1, 64};  // 1 ms per image, whatever the batch
  return in;
}

User OneUser(std::vector<double> t, std::vector<int> images, const std::string& network = "4g") {
  User u;
  u.c = da::context::Context::FromJson({{"name", "u"},
                                        {"device", "mid"},
                                        {"network", network},
                                        {"budget_ms", 30},
                                        {"inferences", 100}},
                                       Profiles());
  u.t = std::move(t), u.image = std::move(images);
  return u;
}

const SchemeResult& Find(const std::vector<SchemeResult>& rs, const std::string& s) {
  for (const auto& r : rs)
    if (r.scheme == s) return r;
  throw std::logic_error("no scheme " + s);
}

}  // namespace

TEST(SystemSim, OneRequestIsThePredictorsSum) {
  const SystemInput in = Input();
  Workload w;
  const User u = OneUser({0}, {0});
  const auto rs = SimulateSystem(in, w, {u});
  const auto& c = u.c;
  // Mobile-only: the base from the cloud (its link: extra RTT, the narrower
  // bandwidth), then the base's time at the device's slowdown.
  const double cloud_kbps = std::min(c.downlink_kbps, w.cloud_kbps);
  EXPECT_NEAR(Find(rs, "mobile-only").latency_ms[0],
              c.rtt_ms + w.cloud_extra_rtt_ms + 1e6 * 8 / cloud_kbps + c.slowdown * 2.0, 1e-9);
  // Edge-only: upload, round trip, one image's service, the answer back.
  const double up = (784.0 + w.upload_overhead_bytes) * 8 / c.uplink_kbps;
  EXPECT_NEAR(Find(rs, "edge-only").latency_ms[0],
              up + c.rtt_ms + 1.0 + 300.0 * 8 / c.downlink_kbps, 1e-9);
  // DeepAdapter: the reference request, then the smallest branch (here the
  // only one), not cached yet, so through the edge from the cloud; it is
  // confident (0.9 >= 0.5) and answers on the phone.
  const auto& da = Find(rs, "deepadapter");
  EXPECT_NEAR(da.latency_ms[0],
              c.rtt_ms + kReferenceBytes * 8 / c.downlink_kbps + c.rtt_ms + w.cloud_extra_rtt_ms +
                  1e5 * 8 / cloud_kbps + c.slowdown * 0.5,
              1e-9);
  EXPECT_EQ(da.offload, 0);
  EXPECT_EQ(da.hit_rate, 0);
  // Energy: compute power x time + radio power x transfer + the whole tail.
  EXPECT_NEAR(Find(rs, "mobile-only").energy_mj,
              c.compute_mw * c.slowdown * 2.0 / 1000 +
                  c.transfer_mw * (1e6 * 8 / cloud_kbps) / 1000 + c.tail_mj,
              1e-9);
}

TEST(SystemSim, ThePagesCostsAndTheBatchWaitAreAdded) {
  SystemInput in = Input();
  in.batch_delay_ms = 2;
  Workload w;
  w.page_request_ms = 3, w.page_download_ms = 10;
  const User u = OneUser({0}, {0});
  const auto rs = SimulateSystem(in, w, {u});
  const auto& c = u.c;
  // Edge-only: the page's request cost at the device's slowdown, then as
  // before plus the edge's 2 ms wait for a fuller batch.
  const double up = (784.0 + w.upload_overhead_bytes) * 8 / c.uplink_kbps;
  EXPECT_NEAR(Find(rs, "edge-only").latency_ms[0],
              c.slowdown * 3 + up + c.rtt_ms + 2 + 1.0 + 300.0 * 8 / c.downlink_kbps, 1e-9);
  EXPECT_NEAR(Find(rs, "edge-only").latency_ms[0], FallbackMs(c, in, w), 1e-9);
  // Mobile-only: a download costs the page a request and the download's own work.
  const double cloud_kbps = std::min(c.downlink_kbps, w.cloud_kbps);
  EXPECT_NEAR(Find(rs, "mobile-only").latency_ms[0],
              c.slowdown * (3 + 10) + c.rtt_ms + w.cloud_extra_rtt_ms + 1e6 * 8 / cloud_kbps +
                  c.slowdown * 2.0,
              1e-9);
  EXPECT_NEAR(Find(rs, "mobile-only").energy_mj,
              c.compute_mw * c.slowdown * (2.0 + 13) / 1000 +
                  c.transfer_mw * (1e6 * 8 / cloud_kbps) / 1000 + c.tail_mj,
              1e-9);
}

TEST(SystemSim, AnAllFallbackUserIsEdgeOnlyOnceItsPageIsReady) {
  SystemInput in = Input();
  // A branch that is never sure, costs nothing to fetch and nothing to run.
  in.branches = {Model("unsure", 0, 0, 0, 0.1f, 0.5)};
  Workload w;
  // On WiFi the reference's round trip fits the budget: the provisional
  // answers ask the edge too.
  const User u = OneUser({0, 1, 2.5, 10}, {0, 1, 2, 3}, "wifi");
  const auto rs = SimulateSystem(in, w, {u});
  const auto &da = Find(rs, "deepadapter-paper"), &edge = Find(rs, "edge-only");
  ASSERT_EQ(da.latency_ms.size(), 4u);
  // The first answer waits for the reference request and the (empty) branch,
  // not cached yet: through the edge from the cloud.
  const auto& c = u.c;
  EXPECT_NEAR(da.latency_ms[0] - edge.latency_ms[0],
              2 * c.rtt_ms + kReferenceBytes * 8 / c.downlink_kbps + w.cloud_extra_rtt_ms, 1e-9);
  for (size_t i = 1; i < 4; ++i) EXPECT_NEAR(da.latency_ms[i], edge.latency_ms[i], 1e-9) << i;
  EXPECT_GT(da.energy_mj, edge.energy_mj);  // the page's probes, match and measurement
  EXPECT_EQ(da.accuracy, edge.accuracy);    // the base's answers: 3 of 4
  EXPECT_EQ(da.accuracy, 0.75);
  EXPECT_EQ(da.offload, 1);
}

TEST(SystemSim, RadioTailsAreCutShortByTheNextTransfer) {
  const SystemInput in = Input();
  Workload w;
  // Two edge-only requests 1 s apart on 4G (tail 11.576 s): the first tail
  // runs 1 s of its 11.576 s, the second runs out.
  const User u = OneUser({0, 1}, {0, 1});
  const auto rs = SimulateSystem(in, w, {u});
  const auto& c = u.c;
  const double one = Find(rs, "edge-only").latency_ms[0];
  const double up = (784.0 + w.upload_overhead_bytes) * 8 / c.uplink_kbps,
               back = 300.0 * 8 / c.downlink_kbps;
  const double transfer = c.transfer_mw * (up + back) / 1000;
  const double first_tail = c.tail_mj * (1.0 - one / 1000) / c.tail_s;
  EXPECT_NEAR(Find(rs, "edge-only").energy_mj * 2, 2 * transfer + first_tail + c.tail_mj, 1e-6);
}

TEST(SystemSim, BatchQueueServesWaitingJobsTogether) {
  ServiceCurve curve{{1, 64}, {1, 64}};
  // Three jobs at 0 with batches of at most 2: two done at 2, the third at 3;
  // a job arriving later to an idle server starts at once.
  const auto done = BatchQueue({0, 0, 0, 10}, {1, 1, 1, 0.5}, curve, 2);
  EXPECT_DOUBLE_EQ(done[0], 2);
  EXPECT_DOUBLE_EQ(done[1], 2);
  EXPECT_DOUBLE_EQ(done[2], 3);
  EXPECT_DOUBLE_EQ(done[3], 10.5);
  EXPECT_DOUBLE_EQ(curve.Capacity(64), 1000);
  // Waiting 1 ms for a fuller batch (of 3), as the batcher does: the job at
  // 0.5 joins the one at 0 (start 1, done 3); the one at 2.5 waits until the
  // server is free at 3, then 1 ms (done 5); three at 10, 10.2 and 10.3 fill a
  // batch and start at once (done 13.3).
  const auto waited = BatchQueue({0, 0.5, 2.5, 10, 10.2, 10.3}, {1, 1, 1, 1, 1, 1}, curve, 3, 1);
  EXPECT_DOUBLE_EQ(waited[0], 3);
  EXPECT_DOUBLE_EQ(waited[1], 3);
  EXPECT_DOUBLE_EQ(waited[2], 5);
  for (int i : {3, 4, 5}) EXPECT_DOUBLE_EQ(waited[i], 13.3);
}

TEST(SystemSim, WorkloadsAreValidated) {
  const auto users =
      MakeUsers(Workload::Load(std::string(DA_SOURCE_DIR) + "/profiles/workload.json", Profiles()),
                Profiles(), 50, 100, 1);
  ASSERT_EQ(users.size(), 50u);
  for (size_t i = 1; i < users.size(); ++i) EXPECT_GE(users[i].t.front(), users[i - 1].t.front());
  SystemInput in = Input();
  EXPECT_THROW(SimulateSystem(in, Workload{}, {OneUser({0}, {7})}), da::UserError);  // image 7 of 4
  in.branches.clear();
  EXPECT_THROW(SimulateSystem(in, Workload{}, {OneUser({0}, {0})}), da::UserError);
}

TEST(SystemSim, FitAsksTheEdgeOnlyWhenItsAnswerArrivesWithinTheBudget) {
  SystemInput in = Input();
  in.branches = {Model("unsure", 0, 0, 0, 0.1f, 0.5)};
  Workload w;
  // 3G: a 2 s round trip never fits 30 ms; WiFi (2 ms round trip) does.
  // (On 3G the first answer is provisional and, its round trip over the
  // budget, not asked; the second comes after the match.)
  const auto slow = SimulateSystem(in, w, {OneUser({0, 60}, {0, 1}, "3g")});
  EXPECT_EQ(Find(slow, "deepadapter-paper").offload, 0.5);
  EXPECT_EQ(Find(slow, "deepadapter-fit").offload, 0);
  EXPECT_EQ(Find(slow, "deepadapter-fit").accuracy,
            0);  // the branch's answers (label 0) on label-1 images
  const auto fast = SimulateSystem(in, w, {OneUser({0, 1}, {0, 1}, "wifi")});
  EXPECT_EQ(Find(fast, "deepadapter-fit").offload, 1);
  EXPECT_NEAR(Find(fast, "deepadapter-fit").mean_ms, Find(fast, "deepadapter-paper").mean_ms, 1e-9);
}

TEST(SystemSim, OursAsksTheEdgeWithinTheBudgetsSlack) {
  SystemInput in = Input();
  // A branch unsure of every image: with the edge's answers the pipeline is
  // right on 3 of 4 (its curve says so), alone on none.
  in.branches = {Model("unsure", 0, 0, 0, 0.1f, 0.5)};
  in.branches[0].val_accuracy = 0;
  in.branches[0].curve = {{0, 0, 0}, {0.5, 1, 0.75}};
  Workload w;
  // 3G: every answer from the edge would take 2 s against 30 ms: none asked
  // (the paper's rule asks for the one after the match).
  const auto slow = SimulateSystem(in, w, {OneUser({0, 60}, {0, 1}, "3g")});
  EXPECT_EQ(Find(slow, "deepadapter").offload, 0);
  EXPECT_EQ(Find(slow, "deepadapter-paper").offload, 0.5);
  // WiFi: they fit, all asked.
  const auto fast = SimulateSystem(in, w, {OneUser({0, 1}, {0, 1}, "wifi")});
  EXPECT_EQ(Find(fast, "deepadapter").offload, 1);
  EXPECT_NEAR(Find(fast, "deepadapter").mean_ms, Find(fast, "deepadapter-paper").mean_ms, 1e-9);
}

TEST(SystemSim, StaticIsChosenForTheMostCorrectAnswersWithinBudget) {
  SystemInput in = Input();
  // A big branch, more accurate on validation, meets no one's 30 ms budget on
  // 3G; the small one meets it: the small one gives more correct answers in
  // budget. Among equals (within the margin) the faster wins.
  in.branches = {Model("small", 1000, 0.5, 1, 0.9f), Model("big", 5'000'000, 0.5, 1, 0.9f)};
  in.branches[1].val_accuracy = 0.95;
  const std::vector<User> users = {OneUser({0}, {0}, "3g")};
  EXPECT_EQ(ChooseStatic(in, users, 0), "small");
  in.branches[1].bytes = 1000;  // as fast to fetch: the more accurate wins ...
  EXPECT_EQ(ChooseStatic(in, users, 0), "big");
  in.branches[1].reference_ms = 0.6;  // ... unless slower and within the margin
  EXPECT_EQ(ChooseStatic(in, users, 0.1), "small");
  // One scheme alone; an unknown one is refused.
  in.static_model = "big";
  const auto one = SimulateSystem(in, Workload{}, users, {"static"});
  ASSERT_EQ(one.size(), 1u);
  EXPECT_EQ(one[0].scheme, "static");
  EXPECT_THROW(SimulateSystem(in, Workload{}, users, {"statics"}), da::UserError);
}
