#pragma once
// Trace-driven evaluation of the edge's model cache: generated visitor
// contexts, a request trace where context popularity is Zipf and drifts over
// time, and the edge's matching + cache policy replayed over it.
#include <cstdint>
#include <string>
#include <vector>

#include "context/context.h"
#include "edge/cache.h"

namespace da::sim {

struct TraceOptions {
  int contexts = 300;  // distinct visitor contexts
  int64_t requests = 60000;
  double zipf_s = 1.0;          // popularity of rank r ~ 1 / r^s
  int64_t drift_every = 5000;   // requests between popularity drifts
  double drift_fraction = 0.3;  // share of the ranks reshuffled at each drift
  double rate_per_s = 10;       // requests per second (trace time)
  uint64_t seed = 1;
  void Validate() const;  // UserError when out of range
};

// Visitors: device score log-uniform over the device classes' range, downlink
// and RTT log-uniform between the slowest and fastest network presets, 10..200
// inferences per download, and budgets log-uniform in [budget_lo, budget_hi]:
// in ms, or, given `base` (the base model's reference ms and bytes), as
// fractions of the base model's predicted latency in the visitor's context.
struct BaseModel {
  double reference_ms;
  int64_t bytes;
};
std::vector<context::Context> RandomContexts(const TraceOptions& o, const context::Profiles& p,
                                             double budget_lo, double budget_hi,
                                             const BaseModel* base = nullptr);

// Visitors near the contexts a family was made for (as a family grown from its
// visitors' prune requests would be): each is one of `made_for`, picked at
// random, with its device score, downlink, RTT and budget each multiplied by a
// factor log-uniform in [1/jitter, jitter] and its inferences in [1/2, 2].
std::vector<context::Context> ContextsNear(const TraceOptions& o, const context::Profiles& p,
                                           const std::vector<context::Context>& made_for,
                                           double jitter);

struct Request {
  int context;
  double t;  // seconds
};
std::vector<Request> ZipfTrace(const TraceOptions& o);

struct CacheResult {
  std::string policy;
  int64_t capacity = 0;
  double hit_rate = 0;         // the ideal model was cached
  double fallback_rate = 0;    // a cached model within budget answered instead
  double cloud_rate = 0;       // nothing suitable cached: fetched from the cloud
  double served_accuracy = 0;  // mean validation accuracy of what was served
  double ideal_accuracy = 0;   // ... had every ideal model been cached
  int64_t bytes_fetched = 0;   // from the cloud (misses + cache fills)
};

struct CacheSimOptions {
  double half_life_s = 600;  // utility's demand decay
  double refresh_s = 10;     // utility's content refresh period
};

// Replays `trace` through matching and a `policy` cache of `capacity` bytes.
CacheResult SimulateCache(edge::Policy policy, int64_t capacity,
                          const std::vector<edge::CatalogModel>& models,
                          const std::vector<context::Context>& contexts,
                          const std::vector<Request>& trace, const CacheSimOptions& o);

}  // namespace da::sim
