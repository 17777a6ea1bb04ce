#include "sim/system_sim.h"

#include <algorithm>
#include <cmath>
#include <map>

#include "common/error.h"
#include "edge/cache.h"

namespace da::sim {

double ServiceCurve::Ms(int b) const {
  if (batch.empty() || batch.size() != ms.size()) throw UserError("empty service curve");
  if (batch.size() == 1) return ms[0] * b / batch[0];
  size_t i = std::upper_bound(batch.begin(), batch.end(), b) - batch.begin();
  i = std::clamp<size_t>(i, 1, batch.size() - 1) - 1;
  const double w = double(b - batch[i]) / (batch[i + 1] - batch[i]);
  return std::max(0.0, ms[i] + w * (ms[i + 1] - ms[i]));
}

double ServiceCurve::Capacity(int max_batch) const {
  double best = 0;
  for (int b : batch)
    if (b <= max_batch) best = std::max(best, 1000.0 * b / Ms(b));
  return best > 0 ? best : 1000.0 * max_batch / Ms(max_batch);
}

std::vector<double> BatchQueue(const std::vector<double>& arrival_ms,
                               const std::vector<double>& work, const ServiceCurve& curve,
                               int max_batch, double delay_ms) {
  std::vector<double> done(arrival_ms.size());
  double free_at = 0;
  size_t next = 0;
  const size_t full = static_cast<size_t>(max_batch);
  while (next < arrival_ms.size()) {
    double start = std::max(free_at, arrival_ms[next]) + delay_ms;
    if (next + full <= arrival_ms.size())  // a full batch may start sooner
      start = std::min(start, std::max(free_at, arrival_ms[next + full - 1]));
    size_t end = next;
    double sum = 0;
    while (end < arrival_ms.size() && arrival_ms[end] <= start &&
           end - next < static_cast<size_t>(max_batch))
      sum += work[end++];
    const int b = static_cast<int>(end - next);
    free_at = start + curve.Ms(b) * sum / b;
    for (size_t i = next; i < end; ++i) done[i] = free_at;
    next = end;
  }
  return done;
}

std::vector<std::string> SchemeNames() {
  return {"mobile-only",       "edge-only",       "cloud-only", "static", "split",
          "deepadapter-paper", "deepadapter-fit", "deepadapter"};
}

namespace {

double TransferMs(int64_t bytes, double kbps) { return static_cast<double>(bytes) * 8 / kbps; }

}  // namespace

double FallbackMs(const context::Context& c, const SystemInput& in, const Workload& w) {
  return edge::FallbackMs(c, in.image_bytes + w.upload_overhead_bytes,
                          in.batch_delay_ms + in.edge.Ms(1), w.page_request_ms);
}

namespace {

// One request as a scheme runs it: what happens before it reaches a server (or
// all of it, without one), the server's share, what follows.
struct Step {
  double before_ms = 0;     // from the request to the server's queue (or to the answer)
  int server = -1;          // 0 edge, 1 cloud, -1 none
  double work = 0;          // of the base model, on the server
  double after_ms = 0;      // from the server's answer to the phone's
  double energy_mj = 0;     // device compute + radio transfer (tails added per user)
  bool radio = false;       // the request used the network (a tail follows)
  double radio_end_ms = 0;  // its last transfer ends this long after the request (without queueing)
  bool correct = false;
  int64_t edge_bytes = 0, cloud_bytes = 0;  // models sent from each server's link
  int download = 0;                         // 1: a model download, 2: served by the edge's cache
};

struct Links {
  double rtt, down, up;  // ms, kbit/s
};

// DeepAdapter's page (web/sdk) on a first visit: the reference request, the
// family's smallest branch (it answers, provisionally, from `first_ready`
// on), the probes, the device's measurement, the match, the matched branch
// (`matched_bytes`, 0 when the smallest is the match; it answers from
// `matched_ready` on). Only the first two delay an answer; all of it costs
// the radio and the CPU (`energy_mj`).
struct FirstVisit {
  double first_ready = 0, matched_ready = 0, energy_mj = 0;
};
FirstVisit PageFirstVisit(const context::Context& c, const Links& edge, const Links& first_from,
                          int64_t first_bytes, const Links& matched_from, int64_t matched_bytes,
                          double request_page_ms, double download_page_ms) {
  double t = 0, radio = 0, page = 0;
  auto request = [&](int64_t down_bytes, const Links& l, bool download) {
    const double x = TransferMs(down_bytes, l.down);
    const double p = download ? download_page_ms : request_page_ms;
    t += p + l.rtt + x, radio += x, page += p;
  };
  FirstVisit v;
  request(kReferenceBytes, edge, false);
  request(first_bytes, first_from, true);
  v.first_ready = t;
  request(0, edge, false);  // the second round trip sample
  request(kFirstProbeBytes, edge, false);
  if (TransferMs(kFirstProbeBytes, c.downlink_kbps) < 250)
    request(std::clamp<int64_t>(int64_t(c.downlink_kbps / 8 * 250), kFirstProbeBytes,
                                kMaxProbeBytes),
            edge, false);
  t += kDeviceMeasureMs;
  request(kMatchBytes, edge, false);
  if (matched_bytes > 0) request(matched_bytes, matched_from, true);
  v.matched_ready = t;
  v.energy_mj = c.transfer_mw * radio / 1000 + c.compute_mw * (page + kDeviceMeasureMs) / 1000;
  return v;
}

}  // namespace

std::string ChooseStatic(const SystemInput& in, const std::vector<User>& users, double margin) {
  if (in.branches.empty() || users.empty()) throw UserError("no branch models or no users");
  std::vector<double> value, ms;
  for (const SystemModel& b : in.branches) {
    double within = 0, sum_ms = 0;
    for (const User& u : users) {
      const double p = context::Predict(u.c, b.reference_ms, b.bytes).total_ms;
      within += p <= u.c.budget_ms, sum_ms += p;
    }
    value.push_back(b.val_accuracy * within / double(users.size()));
    ms.push_back(sum_ms / double(users.size()));
  }
  const size_t top = size_t(std::max_element(value.begin(), value.end()) - value.begin());
  size_t pick = top;
  for (size_t i = 0; i < value.size(); ++i)
    if (value[i] >= value[top] - margin && ms[i] < ms[pick]) pick = i;
  return in.branches[pick].id;
}

std::vector<SchemeResult> SimulateSystem(const SystemInput& in, const Workload& w,
                                         const std::vector<User>& users,
                                         const std::vector<std::string>& schemes) {
  const std::vector<std::string> names = SchemeNames();
  for (const std::string& s : schemes)
    if (std::find(names.begin(), names.end(), s) == names.end())
      throw UserError("no scheme '" + s + "'");
  const size_t n_images = in.labels.size();
  auto check = [&](const SystemModel& m) {
    if (m.predicted.size() != n_images || m.top.size() != n_images)
      throw UserError("model " + m.id + ": answers for " + std::to_string(m.predicted.size()) +
                      " images, expected " + std::to_string(n_images));
  };
  check(in.base);
  for (const auto& b : in.branches) check(b);
  if (in.branches.empty()) throw UserError("no branch models");
  if (in.splits.empty()) throw UserError("no split points");
  for (const User& u : users)
    for (int i : u.image)
      if (i < 0 || static_cast<size_t>(i) >= n_images) throw UserError("image index out of range");

  // The static model: the named branch, else the one of median size.
  const SystemModel* fixed = nullptr;
  for (const auto& b : in.branches)
    if (b.id == in.static_model) fixed = &b;
  if (!fixed) {
    if (!in.static_model.empty()) throw UserError("no branch '" + in.static_model + "'");
    std::vector<const SystemModel*> by_size;
    for (const auto& b : in.branches) by_size.push_back(&b);
    std::sort(by_size.begin(), by_size.end(), [](auto* a, auto* b) { return a->bytes < b->bytes; });
    fixed = by_size[by_size.size() / 2];
  }
  std::vector<edge::CatalogModel> catalog;
  int64_t family_bytes = 0;
  for (const auto& b : in.branches) {
    catalog.push_back(b.Catalog());
    family_bytes += b.bytes;
  }
  const int64_t upload = in.image_bytes + w.upload_overhead_bytes;
  const SystemModel* smallest = &in.branches.front();  // what a first visit answers with at once
  for (const auto& b : in.branches)
    if (b.bytes < smallest->bytes) smallest = &b;
  const double edge_one_ms = in.edge.Ms(1);

  // Users in order of arrival (MakeUsers makes them so; the cache needs it).
  std::vector<size_t> order(users.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(),
                   [&](size_t a, size_t b) { return users[a].t.front() < users[b].t.front(); });

  std::vector<SchemeResult> results;
  for (const std::string& scheme : schemes) {
    std::vector<std::vector<Step>> steps(users.size());
    // DeepAdapter's edge cache, driven by the matches in arrival order.
    edge::ModelCache cache(edge::Policy::kUtility,
                           static_cast<int64_t>(in.cache_fraction * double(family_bytes)),
                           in.half_life_s);
    double next_refresh = 0;
    for (size_t ui : order) {
      const User& u = users[ui];
      const context::Context& c = u.c;
      const Links edge_link{c.rtt_ms, c.downlink_kbps, c.uplink_kbps};
      const Links cloud_link{c.rtt_ms + w.cloud_extra_rtt_ms,
                             std::min(c.downlink_kbps, w.cloud_kbps),
                             std::min(c.uplink_kbps, w.cloud_kbps)};
      const double t0 = u.t.front();
      // The page's work per request to a server and per model download.
      const double request_page_ms = c.slowdown * w.page_request_ms;
      const double download_page_ms = request_page_ms + c.slowdown * w.page_download_ms;
      // Per session: the model on the phone (if any) and where it came from.
      const SystemModel* local = nullptr;
      double local_ms = 0, local_fraction = 1, tau = 0;
      int64_t local_bytes = 0;
      Links from = edge_link;
      bool dl_edge = false, dl_cloud = false;  // whose outgoing link carries the model
      int server = -1, download_kind = 1;
      double work = 0;
      int64_t send = upload;
      if (scheme == "mobile-only") {
        local = &in.base, local_bytes = in.base.bytes, from = cloud_link, dl_cloud = true;
      } else if (scheme == "edge-only") {
        server = 0, work = 1;
      } else if (scheme == "cloud-only") {
        server = 1, work = 1;
      } else if (scheme == "static") {
        local = fixed, local_bytes = fixed->bytes, from = cloud_link, dl_cloud = true;
      } else if (scheme == "split") {
        // The cut with the least predicted latency in this context.
        double best = INFINITY;
        const Split* s = nullptr;
        for (const Split& x : in.splits) {
          const int64_t head = static_cast<int64_t>(x.bytes_fraction * double(in.base.bytes));
          double ms = c.slowdown * in.base.reference_ms * x.device_fraction;
          if (x.device_fraction > 0)
            ms += (download_page_ms + c.rtt_ms + TransferMs(head, c.downlink_kbps)) / c.inferences;
          if (x.device_fraction < 1)
            ms += request_page_ms +
                  TransferMs(x.upload_bytes + w.upload_overhead_bytes, c.uplink_kbps) + c.rtt_ms +
                  in.batch_delay_ms + edge_one_ms * (1 - x.device_fraction);
          if (ms < best) best = ms, s = &x;
        }
        local_fraction = s->device_fraction;
        local_bytes = static_cast<int64_t>(s->bytes_fraction * double(in.base.bytes));
        if (s->device_fraction > 0) local = &in.base, dl_edge = true;
        if (s->device_fraction < 1) server = 0, work = 1 - s->device_fraction;
        send = s->upload_bytes + w.upload_overhead_bytes;
      } else {  // deepadapter
        if (t0 >= next_refresh) {
          cache.Refresh(catalog, t0, nullptr, nullptr);
          next_refresh = t0 + in.refresh_s;
        }
        // The paper's rule and -fit: the most accurate branch in budget, its
        // one threshold. Ours: what the pipeline gives at what it costs here.
        edge::MatchOptions mo;
        if (scheme == "deepadapter") mo.fallback_ms = FallbackMs(c, in, w), mo.margin = in.match_margin;
        const edge::Match m = edge::MatchContext(
            c, catalog, [&](int i) { return cache.Contains(catalog[size_t(i)].id); }, mo);
        cache.Request(catalog[size_t(m.ideal)], t0, nullptr, nullptr);
        local = &in.branches[size_t(m.served)];
        tau = scheme == "deepadapter" ? m.plan.tau : local->threshold;
        local_bytes = local->bytes;
        dl_edge = true;
        if (cache.Contains(local->id)) {
          download_kind = 2;
        } else {
          from = cloud_link, dl_cloud = true;  // fetched through the edge from the cloud
        }
      }
      if (local)
        local_ms = c.slowdown * local->reference_ms * (scheme == "split" ? local_fraction : 1);
      const bool da = scheme.starts_with("deepadapter");
      FirstVisit visit;
      if (da)
        visit = PageFirstVisit(c, edge_link, cache.Contains(smallest->id) ? edge_link : cloud_link,
                               smallest->bytes, from, local != smallest ? local_bytes : 0,
                               request_page_ms, download_page_ms);
      for (size_t k = 0; k < u.t.size(); ++k) {
        Step s;
        const int img = u.image[k];
        if (da) {
          // Answers wait for the smallest branch, come from it until the
          // matched one is there; its fallbacks (the branch's one threshold)
          // only when the reference's round trip fits the budget.
          const double at = (u.t[k] - t0) * 1000;
          if (k == 0) {
            s.energy_mj += visit.energy_mj;
            s.radio = true, s.radio_end_ms = visit.matched_ready;
            s.download = download_kind;
            s.edge_bytes = smallest->bytes + (local != smallest ? local_bytes : 0);
            s.cloud_bytes = (cache.Contains(smallest->id) ? 0 : smallest->bytes) +
                            (local != smallest && dl_cloud ? local_bytes : 0);
          }
          s.before_ms += std::max(0.0, visit.first_ready - at);
          const bool provisional = at < visit.matched_ready;
          const SystemModel* m = provisional ? smallest : local;
          const double ms = c.slowdown * m->reference_ms;
          s.before_ms += ms;
          s.energy_mj += c.compute_mw * ms / 1000;
          bool ask = provisional ? m->top[size_t(img)] < m->threshold && c.rtt_ms <= c.budget_ms
                                 : m->top[size_t(img)] < tau;
          // -fit: only when the edge's answer can arrive within the budget.
          if (scheme == "deepadapter-fit") ask = ask && FallbackMs(c, in, w) <= c.budget_ms;
          if (ask) {
            const double up = TransferMs(send, edge_link.up),
                         back = TransferMs(kAnswerBytes, edge_link.down);
            s.before_ms += request_page_ms + up + edge_link.rtt / 2;
            s.after_ms = edge_link.rtt / 2 + back;
            s.server = 0, s.work = 1;
            s.energy_mj +=
                c.transfer_mw * (up + back) / 1000 + c.compute_mw * request_page_ms / 1000;
            s.radio = true, s.radio_end_ms = std::max(s.radio_end_ms, s.before_ms);
          }
          s.correct = (ask ? &in.base : m)->predicted[size_t(img)] == in.labels[size_t(img)];
          steps[ui].push_back(s);
          continue;
        }
        if (k == 0 && local && local_bytes > 0) {
          const double dl = download_page_ms + from.rtt + TransferMs(local_bytes, from.down);
          s.before_ms += dl;
          s.energy_mj += c.transfer_mw * TransferMs(local_bytes, from.down) / 1000 +
                         c.compute_mw * download_page_ms / 1000;
          s.radio = true, s.radio_end_ms = dl;
          s.download = download_kind;
          if (dl_edge) s.edge_bytes = local_bytes;
          if (dl_cloud) s.cloud_bytes = local_bytes;
        }
        s.before_ms += local_ms;
        s.energy_mj += c.compute_mw * local_ms / 1000;
        const bool ask = server >= 0;
        const SystemModel* answer = local && !ask ? local : &in.base;
        if (ask) {
          const Links& l = server == 0 ? edge_link : cloud_link;
          const double up = TransferMs(send, l.up), back = TransferMs(kAnswerBytes, l.down);
          s.before_ms += request_page_ms + up + l.rtt / 2;
          s.after_ms = l.rtt / 2 + back;
          s.server = server, s.work = work;
          s.energy_mj += c.transfer_mw * (up + back) / 1000 + c.compute_mw * request_page_ms / 1000;
          s.radio = true, s.radio_end_ms = s.before_ms;  // + queueing, added below
        }
        s.correct = answer->predicted[size_t(img)] == in.labels[size_t(img)];
        steps[ui].push_back(s);
      }
    }
    // Queueing at the servers.
    for (int srv : {0, 1}) {
      struct Job {
        double arrive;
        size_t u, k;
      };
      std::vector<Job> jobs;
      for (size_t ui = 0; ui < users.size(); ++ui)
        for (size_t k = 0; k < steps[ui].size(); ++k)
          if (steps[ui][k].server == srv)
            jobs.push_back({users[ui].t[k] * 1000 + steps[ui][k].before_ms, ui, k});
      std::sort(jobs.begin(), jobs.end(),
                [](const Job& a, const Job& b) { return a.arrive < b.arrive; });
      std::vector<double> arrive, work;
      for (const Job& j : jobs) arrive.push_back(j.arrive), work.push_back(steps[j.u][j.k].work);
      const std::vector<double> done =
          BatchQueue(arrive, work, srv == 0 ? in.edge : in.cloud, in.max_batch, in.batch_delay_ms);
      for (size_t i = 0; i < jobs.size(); ++i) {
        Step& s = steps[jobs[i].u][jobs[i].k];
        s.before_ms += done[i] - arrive[i];  // waiting and service
        s.radio_end_ms = std::max(s.radio_end_ms, s.before_ms + s.after_ms);
      }
    }
    // Totals; radio tails per user, cut short by the next transfer.
    SchemeResult r;
    r.scheme = scheme;
    double energy = 0, edge_work = 0, cloud_work = 0;
    int64_t correct = 0, offloaded = 0, downloads = 0, hits = 0, edge_bytes = 0, cloud_bytes = 0;
    for (size_t ui = 0; ui < users.size(); ++ui) {
      const context::Context& c = users[ui].c;
      double last_end = -INFINITY;
      for (size_t k = 0; k < steps[ui].size(); ++k) {
        const Step& s = steps[ui][k];
        const double t = users[ui].t[k] * 1000;
        r.latency_ms.push_back(s.before_ms + s.after_ms);
        energy += s.energy_mj;
        if (s.radio) {
          // The previous tail ran until this transfer began (or fully).
          if (std::isfinite(last_end)) {
            const double gap_s = (t - last_end) / 1000;
            energy += c.tail_s > 0 ? c.tail_mj * std::clamp(gap_s / c.tail_s, 0.0, 1.0) : c.tail_mj;
          }
          last_end = t + s.radio_end_ms;
        }
        correct += s.correct;
        offloaded += s.server >= 0;
        if (s.download) ++downloads, hits += s.download == 2;
        edge_bytes += s.edge_bytes, cloud_bytes += s.cloud_bytes;
        if (s.server == 0) edge_work += s.work;
        if (s.server == 1) cloud_work += s.work;
      }
      if (std::isfinite(last_end)) energy += c.tail_mj;  // the last tail runs out
    }
    const double n = static_cast<double>(r.latency_ms.size());
    std::vector<double> sorted = r.latency_ms;
    std::sort(sorted.begin(), sorted.end());
    double sum = 0;
    for (double v : sorted) sum += v;
    r.mean_ms = sum / n;
    r.p95_ms = sorted[std::min(sorted.size() - 1, static_cast<size_t>(0.95 * n))];
    r.energy_mj = energy / n;
    r.accuracy = double(correct) / n;
    r.offload = double(offloaded) / n;
    if (scheme.starts_with("deepadapter"))
      r.hit_rate = downloads ? double(hits) / double(downloads) : 0;
    // Throughput: the first resource to saturate, per request.
    const double egress = w.egress_kbps * 1000 / 8;  // bytes/s
    struct Limit {
      const char* what;
      double per_request, capacity;
    } limits[] = {
        {"edge compute", edge_work / n, in.edge.Capacity(in.max_batch)},
        {"cloud compute", cloud_work / n, in.cloud.Capacity(in.max_batch)},
        {"edge egress", double(edge_bytes) / n, egress},
        {"cloud egress", double(cloud_bytes) / n, egress},
    };
    r.throughput = INFINITY;
    for (const Limit& l : limits)
      if (l.per_request > 0 && l.capacity / l.per_request < r.throughput)
        r.throughput = l.capacity / l.per_request, r.bottleneck = l.what;
    results.push_back(std::move(r));
  }
  return results;
}

}  // namespace da::sim
