#include "sim/cache_sim.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <random>

#include "common/error.h"
#include "context/predictor.h"

namespace da::sim {

void TraceOptions::Validate() const {
  if (contexts < 1 || contexts > 1000000) throw UserError("contexts must be in 1..1e6");
  if (requests < 1) throw UserError("requests must be >= 1");
  if (!(zipf_s >= 0) || !std::isfinite(zipf_s)) throw UserError("zipf exponent must be >= 0");
  if (drift_every < 1) throw UserError("drift period must be >= 1 request");
  if (!(drift_fraction >= 0 && drift_fraction <= 1)) throw UserError("drift fraction in [0, 1]");
  if (!(rate_per_s > 0) || !std::isfinite(rate_per_s)) throw UserError("rate must be > 0");
}

std::vector<context::Context> RandomContexts(const TraceOptions& o, const context::Profiles& p,
                                             double budget_lo, double budget_hi,
                                             const BaseModel* base) {
  o.Validate();
  if (!(budget_lo > 0 && budget_lo <= budget_hi && std::isfinite(budget_hi)))
    throw UserError("budget range must satisfy 0 < low <= high");
  std::mt19937_64 rng(o.seed);
  auto log_uniform = [&](double lo, double hi) {
    return std::exp(std::uniform_real_distribution<double>(std::log(lo), std::log(hi))(rng));
  };
  double s_lo = 1e9, s_hi = 0, d_lo = 1e9, d_hi = 0, r_lo = 1e9, r_hi = 0;
  for (const auto& d : p.devices)
    s_lo = std::min(s_lo, d.slowdown), s_hi = std::max(s_hi, d.slowdown);
  for (const auto& n : p.networks) {
    d_lo = std::min(d_lo, n.downlink_kbps), d_hi = std::max(d_hi, n.downlink_kbps);
    r_lo = std::min(r_lo, std::max(1.0, n.rtt_ms)), r_hi = std::max(r_hi, n.rtt_ms);
  }
  std::vector<context::Context> out;
  for (int i = 0; i < o.contexts; ++i) {
    const double kbps = log_uniform(d_lo, d_hi);
    // Slower links come with longer round trips (rank-matched on the log scale).
    const double frac = std::log(kbps / d_lo) / std::log(d_hi / d_lo);
    const double rtt =
        std::exp(std::log(r_hi) - frac * (std::log(r_hi) - std::log(r_lo))) * log_uniform(0.7, 1.4);
    const double slowdown = log_uniform(s_lo, s_hi), budget = log_uniform(budget_lo, budget_hi),
                 inferences = std::round(log_uniform(10, 200));
    context::Context c = context::Context::FromJson({{"name", "v" + std::to_string(i)},
                                                     {"slowdown", slowdown},
                                                     {"downlink_kbps", kbps},
                                                     {"rtt_ms", rtt},
                                                     {"budget_ms", budget},
                                                     {"inferences", inferences}},
                                                    p);
    // A fraction of the base's latency, which does not depend on the budget.
    if (base) c.budget_ms *= context::Predict(c, base->reference_ms, base->bytes).total_ms;
    out.push_back(std::move(c));
  }
  return out;
}

std::vector<context::Context> ContextsNear(const TraceOptions& o, const context::Profiles& p,
                                           const std::vector<context::Context>& made_for,
                                           double jitter) {
  o.Validate();
  if (made_for.empty()) throw UserError("no contexts to draw visitors near");
  if (!(jitter >= 1) || !std::isfinite(jitter)) throw UserError("jitter must be >= 1");
  std::mt19937_64 rng(o.seed);
  auto factor = [&](double j) {
    return std::exp(std::uniform_real_distribution<double>(-std::log(j), std::log(j))(rng));
  };
  std::uniform_int_distribution<size_t> pick(0, made_for.size() - 1);
  std::vector<context::Context> out;
  for (int i = 0; i < o.contexts; ++i) {
    const context::Context& c = made_for[pick(rng)];
    out.push_back(context::Context::FromJson(
        {{"name", "v" + std::to_string(i)},
         {"slowdown", c.slowdown * factor(jitter)},
         {"downlink_kbps", c.downlink_kbps * factor(jitter)},
         {"rtt_ms", c.rtt_ms * factor(jitter)},
         {"budget_ms", c.budget_ms * factor(jitter)},
         {"inferences", std::max(1.0, std::round(c.inferences * factor(2)))}},
        p));
  }
  return out;
}

std::vector<Request> ZipfTrace(const TraceOptions& o) {
  o.Validate();
  std::mt19937_64 rng(o.seed + 1);
  std::vector<double> weights(static_cast<size_t>(o.contexts));
  for (size_t r = 0; r < weights.size(); ++r) weights[r] = 1 / std::pow(double(r + 1), o.zipf_s);
  std::discrete_distribution<int> rank(weights.begin(), weights.end());
  std::vector<int> ctx_at_rank(weights.size());  // rank -> context
  for (size_t r = 0; r < ctx_at_rank.size(); ++r) ctx_at_rank[r] = static_cast<int>(r);
  std::shuffle(ctx_at_rank.begin(), ctx_at_rank.end(), rng);
  std::vector<Request> trace;
  trace.reserve(static_cast<size_t>(o.requests));
  for (int64_t i = 0; i < o.requests; ++i) {
    if (i > 0 && i % o.drift_every == 0) {
      // Drift: a share of the ranks trade places at random.
      std::vector<size_t> picked;
      for (size_t r = 0; r < ctx_at_rank.size(); ++r)
        if (std::uniform_real_distribution<double>(0, 1)(rng) < o.drift_fraction)
          picked.push_back(r);
      std::vector<int> moved;
      for (size_t r : picked) moved.push_back(ctx_at_rank[r]);
      std::shuffle(moved.begin(), moved.end(), rng);
      for (size_t k = 0; k < picked.size(); ++k) ctx_at_rank[picked[k]] = moved[k];
    }
    trace.push_back({ctx_at_rank[static_cast<size_t>(rank(rng))], double(i) / o.rate_per_s});
  }
  return trace;
}

CacheResult SimulateCache(edge::Policy policy, int64_t capacity,
                          const std::vector<edge::CatalogModel>& models,
                          const std::vector<context::Context>& contexts,
                          const std::vector<Request>& trace, const CacheSimOptions& o) {
  edge::ModelCache cache(policy, capacity, o.half_life_s);
  std::map<std::string, const edge::CatalogModel*> by_id;
  for (const auto& m : models) by_id[m.id] = &m;
  CacheResult r;
  r.policy = edge::PolicyName(policy);
  r.capacity = capacity;
  double next_refresh = o.refresh_s, hits = 0, fallback = 0, cloud = 0, acc = 0, ideal_acc = 0;
  std::vector<std::string> added;
  for (const Request& q : trace) {
    if (q.t >= next_refresh) {
      added.clear();
      cache.Refresh(models, q.t, &added, nullptr);
      for (const auto& id : added) r.bytes_fetched += by_id.at(id)->bytes;
      next_refresh = q.t + o.refresh_s;
    }
    const context::Context& c = contexts[static_cast<size_t>(q.context)];
    edge::Match m =
        edge::MatchContext(c, models, [&](int i) { return cache.Contains(models[size_t(i)].id); });
    const edge::CatalogModel& want = models[size_t(m.ideal)];
    const edge::CatalogModel& served = models[size_t(m.served)];
    ideal_acc += want.accuracy;
    acc += served.accuracy;
    if (m.ideal_cached) {
      ++hits;
    } else if (m.served != m.ideal) {
      ++fallback;
    } else {
      ++cloud;
    }
    added.clear();
    cache.Request(want, q.t, &added, nullptr);  // lru/lfu admit (fetch) the ideal
    for (const auto& id : added) r.bytes_fetched += by_id.at(id)->bytes;
    if (!m.ideal_cached && m.served == m.ideal && added.empty())
      r.bytes_fetched += want.bytes;  // passed through from the cloud, not kept
  }
  const double n = static_cast<double>(trace.size());
  r.hit_rate = hits / n;
  r.fallback_rate = fallback / n;
  r.cloud_rate = cloud / n;
  r.served_accuracy = acc / n;
  r.ideal_accuracy = ideal_acc / n;
  return r;
}

}  // namespace da::sim
