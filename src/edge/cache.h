#pragma once
// Matching and the model cache's content, without I/O (the edge service and
// `bench edge` share it).
//
// Matching counts the costs of the decisions it makes (issue 26). Each model
// carries its validation curve: the accuracy of the whole pipeline (the
// model, the edge's base model below a confidence threshold) and the share of
// inputs sent to the edge, from "never" up to the threshold pruning chose.
// The collaborative rule in a context takes the most accurate point whose
// expected latency (the model's predicted latency + offload x the time of one
// answer from the edge in this context) meets the budget: it spends the
// budget's slack on fallbacks, so a 2-second link gets almost none and WiFi
// all of them. The ideal model is the one whose rule is the most accurate
// within budget, except that the fastest model within `margin` of that
// accuracy wins (validation differences of 0.1 point are noise); none within
// budget: the fastest, flagged. The edge serves the ideal model when it is
// cached; otherwise the best cached model within budget (no wait); otherwise
// the ideal, fetched from the cloud.
//
// Content policies, at the same capacity in bytes:
//  - utility (ours): from exponentially decayed request counts per ideal
//    model, the set that maximises expected served utility, sum over models of
//    demand x accuracy (requests whose ideal is cached, weighted by what they
//    gain), under the capacity: greedy by gain per byte. Recomputed
//    periodically and on demand; a miss does not change the content.
//  - lru / lfu: a miss admits the ideal model, evicting the least recently /
//    least frequently (all-time count) requested models until it fits.
#include <cmath>
#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "context/context.h"
#include "context/predictor.h"

namespace da::edge {

// One threshold of a model's validation curve.
struct CurvePoint {
  double tau = 0;       // below this top probability the edge answers
  double offload = 0;   // share of inputs sent to the edge
  double accuracy = 0;  // of the pipeline
};

struct CatalogModel {
  std::string id;
  int64_t bytes = 0;
  double accuracy = 0;      // validation, the model alone
  double reference_ms = 0;  // on the reference runtime
  std::vector<CurvePoint> curve;  // by rising tau; empty: the model alone, never offloading
};

// A model's curve from its record's "threshold" ({"curve": [[tau, offload,
// accuracy], ...]}, or only "tau", "val_offload_fraction" and
// "val_collaborative_accuracy" as families before issue 26 have it: then the
// two points "never" and tau). `accuracy`: the model alone. UserError when
// malformed.
std::vector<CurvePoint> ParseCurve(const nlohmann::json& threshold, double accuracy);

// The collaborative rule for model m in context c, where one answer from the
// edge takes `fallback_ms` (INFINITY: the edge is never asked).
struct Plan {
  double tau = 0, offload = 0;
  double accuracy = 0;    // expected, of the pipeline (validation)
  double latency_ms = 0;  // expected per inference: predicted + offload x fallback_ms
};
Plan PlanModel(const context::Context& c, const CatalogModel& m, double fallback_ms);

// The predicted time of one answer from the edge (no queueing): the page's
// own request work (`page_ms` at slowdown 1), the upload, the round trip,
// `server_ms` at the edge (its wait for a batch and its service), the answer.
double FallbackMs(const context::Context& c, int64_t upload_bytes, double server_ms, double page_ms);
inline constexpr int64_t kAnswerBytes = 300;  // one image's answer (the OIP response)
inline constexpr int64_t kUploadOverheadBytes = 400;  // the request's head and OIP JSON around the pixels

struct MatchOptions {
  double fallback_ms = INFINITY;  // one answer from the edge in this context
  double margin = 0;              // accuracy (a fraction) within which the fastest model wins
  bool only_cached = false;       // see MatchContext
};

struct Match {
  int ideal = -1;   // index into the models
  int served = -1;  // what the edge answers with now
  bool ideal_cached = false;
  bool meets_budget = false;  // the ideal's expected latency meets the budget
  Plan plan;                  // the served model's rule in this context
};

// `cached(i)`: whether model i is in the cache. Models must not be empty.
// `only_cached` (the cloud is unreachable): when neither the ideal nor any
// cached model within budget is there, serve the fastest cached model rather
// than the ideal, if anything is cached.
template <class Cached>
Match MatchContext(const context::Context& c, const std::vector<CatalogModel>& models,
                   Cached cached, const MatchOptions& o = {});

enum class Policy { kUtility, kLru, kLfu };
Policy ParsePolicy(const std::string& name);  // UserError for unknown names
std::string PolicyName(Policy p);

class ModelCache {
 public:
  ModelCache(Policy policy, int64_t capacity_bytes, double half_life_s);

  Policy policy() const { return policy_; }
  int64_t capacity() const { return capacity_; }
  int64_t used() const { return used_; }
  bool Contains(const std::string& id) const { return content_.count(id) > 0; }
  const std::map<std::string, int64_t>& content() const { return content_; }  // id -> bytes

  // A request at time `now` (seconds) whose ideal model is `m`: counts it and
  // returns whether `m` was cached. lru/lfu admit a missing `m` when `admit`
  // (if it fits the capacity at all), evicting others; the ids they add and
  // drop are appended.
  bool Request(const CatalogModel& m, double now, std::vector<std::string>* added,
               std::vector<std::string>* dropped, bool admit = true);

  // utility: recomputes the content from the decayed demand; appends what it
  // adds and drops. lru/lfu: nothing changes.
  void Refresh(const std::vector<CatalogModel>& models, double now, std::vector<std::string>* added,
               std::vector<std::string>* dropped);

  // Puts `id` in the cache without a request (restoring persisted content, or
  // keeping a model fetched anyway); false when it does not fit.
  bool Restore(const std::string& id, int64_t bytes);
  void Drop(const std::string& id);

  // Decayed demand per model id at `now`, and the all-time counts; for
  // persistence (Load restores them).
  struct Demand {
    double count = 0;  // decayed to `at`
    double at = 0;
    double total = 0;  // all-time requests (lfu)
    double last = 0;   // last request time (lru)
  };
  const std::map<std::string, Demand>& demand() const { return demand_; }
  void LoadDemand(std::map<std::string, Demand> d) { demand_ = std::move(d); }

 private:
  double Decayed(const Demand& d, double now) const;
  void Evict(int64_t need, const std::string& keep, std::vector<std::string>* dropped);

  Policy policy_;
  int64_t capacity_;
  double half_life_;
  int64_t used_ = 0;
  std::map<std::string, int64_t> content_;
  std::map<std::string, Demand> demand_;
};

// Template definition.
template <class Cached>
Match MatchContext(const context::Context& c, const std::vector<CatalogModel>& models,
                   Cached cached, const MatchOptions& o) {
  Match m;
  std::vector<Plan> plans;
  for (const CatalogModel& x : models) plans.push_back(PlanModel(c, x, o.fallback_ms));
  const int n = static_cast<int>(models.size());
  // The best within budget among those `ok` admits: the most accurate, then
  // the fastest within the margin of it (-1: none within budget).
  auto best = [&](auto ok) {
    int top = -1;
    for (int i = 0; i < n; ++i)
      if (ok(i) && plans[size_t(i)].latency_ms <= c.budget_ms &&
          (top < 0 || plans[size_t(i)].accuracy > plans[size_t(top)].accuracy))
        top = i;
    int pick = top;
    for (int i = 0; top >= 0 && i < n; ++i)
      if (ok(i) && plans[size_t(i)].latency_ms <= c.budget_ms &&
          plans[size_t(i)].accuracy >= plans[size_t(top)].accuracy - o.margin &&
          plans[size_t(i)].latency_ms < plans[size_t(pick)].latency_ms)
        pick = i;
    return pick;
  };
  auto fastest = [&](auto ok) {
    int f = -1;
    for (int i = 0; i < n; ++i)
      if (ok(i) && (f < 0 || plans[size_t(i)].latency_ms < plans[size_t(f)].latency_ms)) f = i;
    return f;
  };
  auto all = [](int) { return true; };
  m.ideal = best(all);
  m.served = best(cached);
  m.meets_budget = m.ideal >= 0;
  if (!m.meets_budget) m.ideal = fastest(all);
  m.ideal_cached = cached(m.ideal);
  if (m.ideal_cached || m.served < 0) m.served = m.ideal;
  if (o.only_cached && !m.ideal_cached && m.served == m.ideal) {
    const int f = fastest(cached);
    if (f >= 0) m.served = f;
  }
  m.plan = plans[size_t(m.served)];
  return m;
}

}  // namespace da::edge
