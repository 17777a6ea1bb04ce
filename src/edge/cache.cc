#include "edge/cache.h"

#include <algorithm>
#include <cmath>

#include "common/error.h"

namespace da::edge {

Policy ParsePolicy(const std::string& name) {
  if (name == "utility") return Policy::kUtility;
  if (name == "lru") return Policy::kLru;
  if (name == "lfu") return Policy::kLfu;
  throw UserError("unknown cache policy '" + name + "' (utility, lru, lfu)");
}

std::string PolicyName(Policy p) {
  return p == Policy::kUtility ? "utility" : p == Policy::kLru ? "lru" : "lfu";
}

std::vector<CurvePoint> ParseCurve(const nlohmann::json& threshold, double accuracy) {
  std::vector<CurvePoint> curve;
  try {
    if (threshold.contains("curve")) {
      for (const auto& p : threshold.at("curve"))
        curve.push_back({p.at(0).get<double>(), p.at(1).get<double>(), p.at(2).get<double>()});
    } else if (threshold.contains("tau")) {
      curve = {{0, 0, accuracy},
               {threshold.at("tau").get<double>(), threshold.at("val_offload_fraction").get<double>(),
                threshold.at("val_collaborative_accuracy").get<double>()}};
    }
  } catch (const nlohmann::json::exception& e) {
    throw UserError(std::string("threshold: ") + e.what());
  }
  for (size_t i = 0; i < curve.size(); ++i) {
    const CurvePoint& p = curve[i];
    if (!(p.tau >= 0 && p.offload >= 0 && p.offload <= 1 && p.accuracy >= 0 && p.accuracy <= 1) ||
        (i > 0 && !(p.tau >= curve[i - 1].tau)))
      throw UserError("threshold: a curve point out of range or out of order");
  }
  return curve;
}

Plan PlanModel(const context::Context& c, const CatalogModel& m, double fallback_ms) {
  const double local = context::Predict(c, m.reference_ms, m.bytes).total_ms;
  Plan best{0, 0, m.accuracy, local};
  if (local > c.budget_ms) return best;  // asking the edge would only add to it
  for (const CurvePoint& p : m.curve) {
    // An edge never asked costs nothing (0 x INFINITY would be NaN).
    const double ms = p.offload > 0 ? local + p.offload * fallback_ms : local;
    if (ms <= c.budget_ms && p.accuracy > best.accuracy) best = {p.tau, p.offload, p.accuracy, ms};
  }
  return best;
}

double FallbackMs(const context::Context& c, int64_t upload_bytes, double server_ms,
                  double page_ms) {
  return c.slowdown * page_ms + static_cast<double>(upload_bytes) * 8 / c.uplink_kbps + c.rtt_ms +
         server_ms + static_cast<double>(kAnswerBytes) * 8 / c.downlink_kbps;
}

ModelCache::ModelCache(Policy policy, int64_t capacity_bytes, double half_life_s)
    : policy_(policy), capacity_(capacity_bytes), half_life_(half_life_s) {
  if (capacity_bytes < 0) throw UserError("cache capacity must be >= 0 bytes");
  if (!(half_life_s > 0) || !std::isfinite(half_life_s))
    throw UserError("demand half-life must be a positive number of seconds");
}

double ModelCache::Decayed(const Demand& d, double now) const {
  return d.count * std::exp2(-std::max(0.0, now - d.at) / half_life_);
}

bool ModelCache::Request(const CatalogModel& m, double now, std::vector<std::string>* added,
                         std::vector<std::string>* dropped, bool admit) {
  Demand& d = demand_[m.id];
  d.count = Decayed(d, now) + 1;
  d.at = now;
  d.total += 1;
  d.last = now;
  if (Contains(m.id)) return true;
  if (!admit || policy_ == Policy::kUtility || m.bytes > capacity_) return false;
  Evict(m.bytes, m.id, dropped);
  content_[m.id] = m.bytes;
  used_ += m.bytes;
  if (added) added->push_back(m.id);
  return false;
}

void ModelCache::Evict(int64_t need, const std::string& keep, std::vector<std::string>* dropped) {
  while (used_ + need > capacity_ && !content_.empty()) {
    auto victim = content_.end();
    for (auto it = content_.begin(); it != content_.end(); ++it) {
      if (it->first == keep) continue;
      if (victim == content_.end()) {
        victim = it;
        continue;
      }
      const Demand& a = demand_[it->first];
      const Demand& b = demand_[victim->first];
      const bool older = policy_ == Policy::kLfu
                             ? (a.total < b.total || (a.total == b.total && a.last < b.last))
                             : a.last < b.last;
      if (older) victim = it;
    }
    if (victim == content_.end()) return;
    used_ -= victim->second;
    if (dropped) dropped->push_back(victim->first);
    content_.erase(victim);
  }
}

void ModelCache::Refresh(const std::vector<CatalogModel>& models, double now,
                         std::vector<std::string>* added, std::vector<std::string>* dropped) {
  if (policy_ != Policy::kUtility) return;
  // Gain of caching a model: its decayed demand (requests whose ideal it is)
  // times its accuracy. The gains add up, so greedy by gain per byte.
  std::vector<std::pair<double, const CatalogModel*>> ranked;
  for (const CatalogModel& m : models) {
    auto it = demand_.find(m.id);
    const double gain = it == demand_.end() ? 0 : Decayed(it->second, now) * m.accuracy;
    if (gain > 1e-9 && m.bytes <= capacity_)
      ranked.push_back({gain / static_cast<double>(std::max<int64_t>(1, m.bytes)), &m});
  }
  std::stable_sort(ranked.begin(), ranked.end(),
                   [](const auto& a, const auto& b) { return a.first > b.first; });
  std::map<std::string, int64_t> want;
  int64_t used = 0;
  double total = 0, best_single = 0;
  const CatalogModel* single = nullptr;
  for (const auto& [density, m] : ranked) {
    const double gain = density * static_cast<double>(std::max<int64_t>(1, m->bytes));
    if (gain > best_single) best_single = gain, single = m;
    if (used + m->bytes <= capacity_) want[m->id] = m->bytes, used += m->bytes, total += gain;
  }
  // Greedy by density can lose to one large model: take the better of the two.
  if (single && best_single > total) want = {{single->id, single->bytes}}, used = single->bytes;
  for (const auto& [id, bytes] : content_)
    if (!want.count(id) && dropped) dropped->push_back(id);
  for (const auto& [id, bytes] : want)
    if (!content_.count(id) && added) added->push_back(id);
  content_ = std::move(want);
  used_ = used;
}

bool ModelCache::Restore(const std::string& id, int64_t bytes) {
  if (Contains(id)) return true;
  if (used_ + bytes > capacity_) return false;
  content_[id] = bytes;
  used_ += bytes;
  return true;
}

void ModelCache::Drop(const std::string& id) {
  auto it = content_.find(id);
  if (it == content_.end()) return;
  used_ -= it->second;
  content_.erase(it);
}

}  // namespace da::edge
