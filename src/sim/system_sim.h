#pragma once
// The system evaluation (issue 11): one workload of users, eight schemes.
// Per request, latency and mobile energy follow the predictor (transfers over
// the user's link, compute at the device's slowdown, radio power and tails),
// correctness is the real models' answers on the real test images, and
// requests that reach the edge or the cloud queue there for batches served in
// measured times.
//   mobile-only  the base model, downloaded from the cloud, run on the phone
//   edge-only    every image uploaded; the edge's base model answers
//   cloud-only   the same with the cloud, over a wider link
//   static       one mid-size branch for everyone, from the cloud, on the phone
//   split        Neurosurgeon: the base cut where the context's latency is least,
//                the head on the phone (downloaded from the edge), the tail on the edge
//   deepadapter-paper  as the paper specifies it: the most accurate branch in
//                budget (from the edge's cache, or through it from the cloud),
//                the edge's base model below the branch's one threshold
//   deepadapter-fit  the same, asking the edge only when its answer can arrive
//                within the budget (upload + round trip + batch-1 service)
//   deepadapter  ours, the edge's default (edge/cache.h): per context, the
//                threshold whose expected fallbacks fit the budget's slack,
//                and the branch whose pipeline is the most accurate in budget,
//                the fastest within a margin of it
#include <cstdint>
#include <string>
#include <vector>

#include "context/context.h"
#include "edge/cache.h"

namespace da::sim {

// A model with its answers on the evaluation images.
struct SystemModel {
  std::string id;
  int64_t bytes = 0;
  double reference_ms = 0;
  double threshold = 0;  // DeepAdapter: below this top probability the edge answers
  double val_accuracy = 0;
  std::vector<int64_t> predicted;  // per image
  std::vector<float> top;          // per image
  std::vector<edge::CurvePoint> curve;  // validation: what the cost-aware rule chooses from

  edge::CatalogModel Catalog() const { return {id, bytes, val_accuracy, reference_ms, curve}; }
};

// A place to cut the base model: the phone runs a prefix, sends the one
// tensor alive there, the edge runs the rest.
struct Split {
  double device_fraction = 0;  // of the base's reference time
  double bytes_fraction = 0;   // of the base's download the phone needs
  int64_t upload_bytes = 0;    // float32 tensor (the raw image when nothing runs on the phone)
};

// Batch service time of a server: ms for b images, linear between measured
// batch sizes (and past the largest).
struct ServiceCurve {
  std::vector<int> batch;
  std::vector<double> ms;
  double Ms(int b) const;
  double Capacity(int max_batch) const;  // images/s at the best batch size <= max_batch
};

// profiles/workload.json
struct Workload {
  struct Share {
    std::string name;
    double share = 0;
  };
  std::vector<Share> devices, networks, budgets;  // budgets: name = ms
  double requests_per_user = 100, think_s = 2, users_per_s = 5;
  double cloud_extra_rtt_ms = 40, cloud_kbps = 20000;
  double egress_kbps = 1e6;
  int64_t upload_overhead_bytes = 400;
  // The page's own work (CPU, at slowdown 1; scaled by the device's) per HTTP
  // request and, beyond that, per model download (hash check, Cache Storage).
  double page_request_ms = 0, page_download_ms = 0;
  static Workload Load(const std::string& path, const context::Profiles& profiles);
};

struct User {
  context::Context c;
  std::vector<double> t;   // request times (s)
  std::vector<int> image;  // per request
};
std::vector<User> MakeUsers(const Workload& w, const context::Profiles& profiles, int users,
                            int64_t images, uint64_t seed);

struct SystemInput {
  SystemModel base;
  std::vector<SystemModel> branches;
  std::vector<Split> splits;  // of the base; the first is "nothing on the phone"
  std::vector<int> labels;    // per image
  int64_t image_bytes = 784;  // one input as uploaded (UINT8 pixels)
  ServiceCurve edge, cloud;
  int max_batch = 64;
  double batch_delay_ms = 0;    // a server's wait for a fuller batch (BatchOptions' max_delay)
  double cache_fraction = 0.3;  // the edge cache, a fraction of the branches' bytes
  double refresh_s = 10, half_life_s = 600;
  std::string static_model;  // default: the branch of median size (bench system: ChooseStatic's)
  double match_margin = 0.0025;  // deepadapter: a faster branch within this accuracy wins
};

struct SchemeResult {
  std::string scheme;
  std::vector<double> latency_ms;  // per request, in user order
  double mean_ms = 0, p95_ms = 0;
  double energy_mj = 0;  // mobile, per request
  double accuracy = 0;
  double offload = 0;      // share of requests answered by a server
  double hit_rate = -1;    // model downloads served from the edge cache (-1: no cache)
  double throughput = 0;   // requests/s the servers sustain (their compute and egress)
  std::string bottleneck;  // what limits the throughput
};

std::vector<std::string> SchemeNames();

// Bytes of an answer from a server (the OIP response for one image).
inline constexpr int64_t kAnswerBytes = edge::kAnswerBytes;
// What DeepAdapter's page does before its matched model answers (web/sdk,
// on the shipped family: /v1/reference and /v1/match answer 983 and 712
// bytes of JSON, with headers about 1.2 and 1.0 kB), its probes (16 kB,
// then sized to 250 ms up to 128 kB), and the device's measurement (a
// warm-up of at least 150 ms and 300 ms of timed groups: about 0.5 s of one
// busy core).
inline constexpr int64_t kReferenceBytes = 1200, kMatchBytes = 1000;
inline constexpr int64_t kFirstProbeBytes = 16 << 10, kMaxProbeBytes = 128 << 10;
inline constexpr double kDeviceMeasureMs = 500;

// The predicted time of one image asked of the edge without queueing: the
// page's request cost, its upload, the round trip, the edge's wait for a batch
// and batch-1 service, the answer back (edge::FallbackMs with the workload's figures).
double FallbackMs(const context::Context& c, const SystemInput& in, const Workload& w);

// The schemes (SchemeNames(), or those named) on the same users. UserError
// when the inputs do not fit (images out of range, no branches, mismatched
// answers, unknown schemes).
std::vector<SchemeResult> SimulateSystem(const SystemInput& in, const Workload& w,
                                         const std::vector<User>& users,
                                         const std::vector<std::string>& schemes = SchemeNames());

// The static scheme's branch as the matcher would choose one for everyone:
// the most expected correct answers within budget over `users` (validation
// accuracy x the share of users whose budget its predicted latency meets),
// the fastest (mean predicted latency) within `margin` of that share-weighted
// accuracy.
std::string ChooseStatic(const SystemInput& in, const std::vector<User>& users, double margin);

// Completion times of jobs at a batching server (as infer::Batcher runs
// them): arrivals sorted ascending; once the server is free and a job waits, it
// waits `delay_ms` more (or until max_batch jobs wait), takes up to max_batch
// jobs, and a batch of b takes curve.Ms(b) x the mean `work` of its jobs (1 =
// the whole base model).
std::vector<double> BatchQueue(const std::vector<double>& arrival_ms,
                               const std::vector<double>& work, const ServiceCurve& curve,
                               int max_batch, double delay_ms = 0);

}  // namespace da::sim
