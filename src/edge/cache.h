#pragma once
// Matching and the model cache's content, without I/O (the edge service and
// `bench edge` share it).
//
// Matching: the ideal model for a context is the one with the highest
// validation accuracy whose predicted latency meets the budget (none meets it:
// the fastest, flagged). The edge serves the ideal model when it is cached;
// otherwise the best cached model that meets the budget (no wait); otherwise
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
#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "context/context.h"
#include "context/predictor.h"

namespace da::edge {

struct CatalogModel {
  std::string id;
  int64_t bytes = 0;
  double accuracy = 0;      // validation
  double reference_ms = 0;  // on the reference runtime
};

struct Match {
  int ideal = -1;   // index into the models
  int served = -1;  // what the edge answers with now
  bool ideal_cached = false;
  bool meets_budget = false;  // the ideal's predicted latency meets the budget
};

// `cached(i)`: whether model i is in the cache. Models must not be empty.
// `only_cached` (the cloud is unreachable): when neither the ideal nor any
// cached model within budget is there, serve the fastest cached model rather
// than the ideal, if anything is cached.
template <class Cached>
Match MatchContext(const context::Context& c, const std::vector<CatalogModel>& models,
                   Cached cached, bool only_cached = false);

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
                   Cached cached, bool only_cached) {
  Match m;
  int fastest = -1, fastest_cached = -1;
  double fastest_ms = 0, fastest_cached_ms = 0;
  for (int i = 0; i < static_cast<int>(models.size()); ++i) {
    const CatalogModel& x = models[static_cast<size_t>(i)];
    const double ms = context::Predict(c, x.reference_ms, x.bytes).total_ms;
    if (fastest < 0 || ms < fastest_ms) fastest = i, fastest_ms = ms;
    if (only_cached && cached(i) && (fastest_cached < 0 || ms < fastest_cached_ms))
      fastest_cached = i, fastest_cached_ms = ms;
    if (ms > c.budget_ms) continue;
    if (m.ideal < 0 || x.accuracy > models[static_cast<size_t>(m.ideal)].accuracy) m.ideal = i;
    if (cached(i) && (m.served < 0 || x.accuracy > models[static_cast<size_t>(m.served)].accuracy))
      m.served = i;
  }
  m.meets_budget = m.ideal >= 0;
  if (!m.meets_budget) m.ideal = fastest;
  m.ideal_cached = cached(m.ideal);
  if (m.ideal_cached || m.served < 0) m.served = m.ideal;
  if (!m.ideal_cached && m.served == m.ideal && fastest_cached >= 0) m.served = fastest_cached;
  return m;
}

}  // namespace da::edge
