#include "prune/search.h"

#include <algorithm>
#include <cmath>
#include <map>

#include "common/error.h"
#include "common/progress.h"
#include "context/predictor.h"
#include "nn/onnx_export.h"

namespace da::prune {

using context::Context;
using nn::ModelSpec;

void SearchOptions::Validate() const {
  auto bad = [](const std::string& m) { throw UserError("invalid pruning option: " + m); };
  if (!(step > 0 && step < 1)) bad("step must be in (0, 1)");
  if (short_steps < 0) bad("short-term steps must be >= 0");
  if (val_images < 1) bad("validation images must be >= 1");
  if (!(long_epochs >= 0) || !std::isfinite(long_epochs)) bad("long-term epochs must be >= 0");
  if (!(short_lr > 0) || !(long_lr > 0) || !std::isfinite(short_lr) || !std::isfinite(long_lr))
    bad("learning rates must be positive");
  if (!(min_width > 0 && min_width <= 1)) bad("min width must be in (0, 1]");
  if (max_iterations < 1) bad("max iterations must be >= 1");
  if (!(accuracy_drop >= 0 && accuracy_drop < 1)) bad("accuracy drop must be in [0, 1)");
  nn::Distill{nullptr, distill_weight, distill_temperature}.Validate();
  train.Validate();
}

nlohmann::json SearchOptions::ToJson() const {
  nlohmann::json j = {{"importance", ImportanceName(importance)},
                      {"step_of_current", step},
                      {"short_steps", short_steps},
                      {"val_images", val_images},
                      {"long_epochs", long_epochs},
                      {"short_lr", short_lr},
                      {"long_lr", long_lr},
                      {"min_width", min_width},
                      {"max_iterations", max_iterations},
                      {"accuracy_drop", accuracy_drop},
                      {"train", train.ToJson()}};
  if (distill_weight > 0)  // absent when off: families built before still match
    j["distill"] = {{"weight", distill_weight}, {"temperature", distill_temperature}};
  if (!long_augment) j["long_augment"] = false;  // absent when on, as before the option
  return j;
}

std::string MethodName(Method m) {
  return m == Method::kContextAware ? "context-aware"
         : m == Method::kUniform    ? "uniform"
                                    : "macs-only";
}

namespace {

// What a trajectory minimises: MACs, or bytes x ms_per_byte + reference time.
struct Objective {
  bool macs = false;
  double ms_per_byte = 0;
};

// What the objectives and the predictor need of a model, computed once per spec.
struct Cost {
  double macs = 0, reference_ms = 0;
  int64_t bytes = 0;
};

Cost CostOf(const ModelSpec& s, const context::LatencyTable& t) {
  return {static_cast<double>(s.Macs()), t.ModelMs(s), nn::OnnxBytes(s)};
}

double Evaluate(const Objective& o, const Cost& k) {
  return o.macs ? k.macs : o.ms_per_byte * static_cast<double>(k.bytes) + k.reference_ms;
}

bool Meets(const Context& c, const Cost& k) {
  return context::Predict(c, k.reference_ms, k.bytes).total_ms <= c.budget_ms;
}

// The narrowest width each unit of the base may reach.
std::map<std::string, int> MinWidths(const ModelSpec& base, double fraction) {
  std::map<std::string, int> m;
  for (const Unit& u : Units(base))
    m[u.name] = std::max(1, static_cast<int>(std::ceil(u.width * fraction)));
  return m;
}

// A copy of `net` (unfused) with its own weights.
nn::Net Clone(nn::NetImpl& net) { return PruneChannels(net, {}); }

int64_t LongSteps(const SearchOptions& o, const nn::TrainTensors& train) {
  const int64_t per_epoch = (train.x.size(0) + o.train.batch_size - 1) / o.train.batch_size;
  return static_cast<int64_t>(std::llround(o.long_epochs * static_cast<double>(per_epoch)));
}

class Searcher {
 public:
  Searcher(const SearchInputs& in, const SearchOptions& opts)
      : in_(in),
        opts_(opts),
        train_(nn::ToTrainTensors(in.data->train)),
        val_(in.data->val.First(std::min(opts.val_images, in.data->val.count))),
        min_(MinWidths(in.base->spec(), opts.min_width)) {}

  const nn::TrainTensors& train() const { return train_; }

  // Runs one trajectory; returns a branch (short-term tuned) per context index.
  std::map<size_t, Branch> Trajectory(const Objective& obj, const std::vector<Context>& contexts,
                                      const std::vector<size_t>& members,
                                      const std::string& label) {
    const auto& table = *in_.table;
    std::map<size_t, Branch> out;
    std::vector<size_t> pending = members;
    nn::Net cur = Clone(*in_.base);
    int iteration = 0;
    std::vector<std::string> order;
    std::vector<std::pair<ModelSpec, double>> trajectory = {
        {cur->spec(), nn::Evaluate(cur, val_, in_.data->Classes()).accuracy}};
    auto snap = [&](bool best_effort) {
      const Cost now = CostOf(cur->spec(), table);
      for (auto it = pending.begin(); it != pending.end();) {
        if (best_effort || Meets(contexts[*it], now)) {
          Branch b{
              contexts[*it], Clone(*cur), best_effort, iteration, iteration * opts_.short_steps,
              order};
          out[*it] = std::move(b);
          it = pending.erase(it);
        } else {
          ++it;
        }
      }
    };
    auto meets_pending = [&](const Cost& k) {
      for (size_t i : pending)
        if (Meets(contexts[i], k)) return true;
      return false;
    };
    snap(false);
    // Progress: how far each context's predicted latency has come from the
    // base's towards its budget, averaged over the trajectory's contexts.
    std::vector<double> start;
    for (size_t i : members)
      start.push_back(context::Predict(contexts[i], table, cur->spec()).total_ms);
    auto done = [&] {
      double sum = 0;
      for (size_t k = 0; k < members.size(); ++k) {
        const Context& c = contexts[members[k]];
        double now = context::Predict(c, table, cur->spec()).total_ms;
        sum += start[k] <= c.budget_ms
                   ? 1
                   : std::clamp((start[k] - now) / (start[k] - c.budget_ms), 0.0, 1.0);
      }
      return static_cast<int64_t>(1000 * sum / static_cast<double>(members.size()));
    };
    Progress progress("prune " + label, 1000);
    while (!pending.empty() && iteration < opts_.max_iterations) {
      const ModelSpec spec = cur->spec();
      const double target = (1 - opts_.step) * Evaluate(obj, CostOf(spec, table));
      struct Candidate {
        std::string unit;
        ModelSpec spec;
        bool meets;
        double j;
      };
      std::vector<Candidate> candidates;
      for (const Unit& u : Units(spec)) {
        const int lo = min_.at(u.name);
        if (u.width <= lo) continue;
        auto ok = [&](int w) {
          const Cost k = CostOf(WithUnitWidth(spec, u.name, w), table);
          return Evaluate(obj, k) <= target || meets_pending(k);
        };
        // The widest width in [lo, width - 1] that makes the cut (ok() is monotone).
        int a = lo, b = u.width - 1;
        bool meets = ok(lo);
        if (meets) {
          while (a < b) {
            int mid = (a + b + 1) / 2;
            if (ok(mid))
              a = mid;
            else
              b = mid - 1;
          }
        }
        ModelSpec s = WithUnitWidth(spec, u.name, a);
        candidates.push_back({u.name, s, meets, Evaluate(obj, CostOf(s, table))});
      }
      if (candidates.empty()) break;  // every unit at its minimum width
      // NetAdapt keeps the candidates that make the cut; when none can, the one
      // that cuts deepest continues alone (no fine-tuning needed to choose).
      bool any = std::any_of(candidates.begin(), candidates.end(), [](auto& c) { return c.meets; });
      if (any) {
        std::erase_if(candidates, [](auto& c) { return !c.meets; });
      } else {
        auto best = std::min_element(candidates.begin(), candidates.end(),
                                     [](auto& x, auto& y) { return x.j < y.j; });
        candidates = {*best};
      }
      auto importance = ChannelImportance(*cur, opts_.importance, in_.data);
      nn::Net best = nullptr;
      double best_acc = -1, best_j = 0;
      std::string best_unit;
      for (size_t k = 0; k < candidates.size(); ++k) {
        const Candidate& c = candidates[k];
        nn::Net net = PruneTo(*cur, c.spec, importance);
        nn::TrainOptions t = opts_.train;
        t.lr = opts_.short_lr;
        t.quiet = true;
        t.seed = opts_.train.seed + 1000 * iteration + k;
        nn::FineTune(net, train_, opts_.short_steps, t);
        double acc = nn::Evaluate(net, val_, in_.data->Classes()).accuracy;
        if (acc > best_acc || (acc == best_acc && c.j < best_j)) {
          best = net, best_acc = acc, best_j = c.j, best_unit = c.unit;
        }
      }
      cur = best;
      ++iteration;
      order.push_back(best_unit);
      trajectory.push_back({cur->spec(), best_acc});
      snap(false);
      if (opts_.on_progress) opts_.on_progress(static_cast<double>(done()) / 1000);
      if (!opts_.quiet) {
        char extra[160];
        std::snprintf(extra, sizeof extra, "iter %d cut %s -> %s  val %.2f%%", iteration,
                      best_unit.c_str(), cur->spec().Summary().c_str(), 100 * best_acc);
        progress.Update(done(), extra);
      }
    }
    snap(true);  // budgets the smallest model cannot meet: best effort
    for (auto& [i, b] : out) b.trajectory = trajectory;
    if (!opts_.quiet) progress.Finish("done in " + std::to_string(iteration) + " iterations");
    return out;
  }

  // Long-term fine-tune of a branch (none for the base itself: nothing was cut).
  void LongTune(Branch& b, int64_t steps) {
    if (b.net->spec() == in_.base->spec()) return;
    nn::TrainOptions t = opts_.train;
    t.lr = opts_.long_lr;
    t.quiet = opts_.quiet;
    if (!opts_.long_augment) t.pad = 0, t.flip = false;
    nn::FineTune(b.net, train_, steps, t,
                 {opts_.distill_weight > 0 ? in_.base : nullptr, opts_.distill_weight,
                  opts_.distill_temperature, &teacher_});
    b.steps += steps;
  }

  // The same keep ratio in every unit: the largest that meets the context.
  Branch Uniform(const Context& c, const std::map<std::string, std::vector<double>>& l1) {
    const ModelSpec base = in_.base->spec();
    auto at = [&](double r) {
      ModelSpec s = base;
      for (const Unit& u : Units(base))
        s = WithUnitWidth(s, u.name,
                          std::max(min_.at(u.name), static_cast<int>(std::lround(r * u.width))));
      return s;
    };
    double lo = 0, hi = 1;
    auto meets = [&](const ModelSpec& s) { return Meets(c, CostOf(s, *in_.table)); };
    bool best_effort = !meets(at(0));
    if (meets(base)) lo = 1;
    for (int i = 0; i < 40 && !best_effort && lo < 1; ++i) {
      double mid = (lo + hi) / 2;
      (meets(at(mid)) ? lo : hi) = mid;
    }
    return Branch{c, PruneTo(*in_.base, at(lo), l1), best_effort, 0, 0, {}};
  }

 private:
  SearchInputs in_;
  SearchOptions opts_;
  nn::TrainTensors train_;
  nn::Images val_;
  std::map<std::string, int> min_;
  nn::TeacherCache teacher_;  // every long-term fine-tune draws the same batches
};

}  // namespace

std::vector<Branch> Search(Method method, const std::vector<Context>& contexts,
                           const SearchInputs& in, const SearchOptions& opts,
                           const std::vector<int64_t>* matched_steps) {
  opts.Validate();
  if (in.base->fused()) throw std::logic_error("Search needs the unfused base model");
  nn::SetThreads(opts.train.threads);
  Searcher searcher(in, opts);
  const int64_t long_steps = LongSteps(opts, searcher.train());
  std::vector<Branch> branches(contexts.size());
  if (method == Method::kUniform) {
    auto l1 = ChannelImportance(*in.base, Importance::kL1);
    for (size_t i = 0; i < contexts.size(); ++i) {
      branches[i] = searcher.Uniform(contexts[i], l1);
      searcher.LongTune(branches[i], matched_steps ? matched_steps->at(i) : long_steps);
    }
    return branches;
  }
  // Group contexts into trajectories: one for MACs-only, one per ms_per_byte otherwise.
  std::map<std::string, std::vector<size_t>> groups;
  std::map<std::string, Objective> objectives;
  for (size_t i = 0; i < contexts.size(); ++i) {
    const Context& c = contexts[i];
    Objective o;
    o.macs = method == Method::kMacsOnly;
    if (!o.macs) o.ms_per_byte = 8.0 / (c.downlink_kbps * c.inferences * c.slowdown);
    char key[64];
    std::snprintf(key, sizeof key, "%.6g", o.ms_per_byte);
    groups[key].push_back(i);
    objectives[key] = o;
  }
  for (auto& [key, members] : groups) {
    std::string label = MethodName(method);
    for (size_t i : members) label += " " + contexts[i].name;
    for (auto& [i, b] : searcher.Trajectory(objectives[key], contexts, members, label))
      branches[i] = std::move(b);
  }
  for (Branch& b : branches) searcher.LongTune(b, long_steps);
  return branches;
}

torch::Tensor Probabilities(nn::NetImpl& net, const nn::Images& images) {
  c10::InferenceMode guard;
  net.eval();
  std::vector<torch::Tensor> out;
  for (int64_t b = 0; b < images.count; b += 500)
    out.push_back(torch::softmax(net.forward(nn::ToTensor(images, b, b + 500)), 1));
  return torch::cat(out);
}

Threshold ApplyThreshold(const torch::Tensor& branch_probs, const torch::Tensor& base_probs,
                         const torch::Tensor& labels, double tau) {
  auto [conf, pred] = branch_probs.max(1);
  auto offload = conf < tau;
  auto answer = torch::where(offload, base_probs.argmax(1), pred);
  return {tau, offload.to(torch::kDouble).mean().item<double>(),
          answer.eq(labels).to(torch::kDouble).mean().item<double>()};
}

std::vector<Threshold> ThresholdCurve(const torch::Tensor& branch_probs,
                                      const torch::Tensor& base_probs, const torch::Tensor& labels,
                                      double tau, int points) {
  const torch::Tensor conf = std::get<0>(branch_probs.max(1));
  const torch::Tensor sorted = std::get<0>(conf.sort()).to(torch::kDouble).contiguous();
  const int64_t n = sorted.size(0), k_max = (conf < tau).sum().item<int64_t>();
  std::vector<Threshold> out = {ApplyThreshold(branch_probs, base_probs, labels, 0)};
  for (int j = 1; j <= points; ++j) {
    // Offloading the k least confident inputs (fewer where confidences tie).
    const int64_t k = k_max * j / points;
    if (k == 0 && j < points) continue;  // "never" again
    const double t = j == points || k >= n ? tau : sorted.data_ptr<double>()[k];
    if (t > out.back().tau) out.push_back(ApplyThreshold(branch_probs, base_probs, labels, t));
  }
  return out;
}

nlohmann::json CurveJson(const std::vector<Threshold>& curve) {
  nlohmann::json out = nlohmann::json::array();
  for (const Threshold& t : curve) out.push_back({t.tau, t.offload_fraction, t.accuracy});
  return out;
}

// Above every float probability: the branch never answers itself.
const double kAlwaysOffload = std::nextafter(1.0f, 2.0f);

Threshold ChooseThreshold(const torch::Tensor& branch_probs, const torch::Tensor& base_probs,
                          const torch::Tensor& labels, double max_drop) {
  const int64_t n = labels.size(0);
  if (n == 0) throw UserError("no images to choose a threshold on");
  auto [conf, pred] = branch_probs.max(1);
  auto own = pred.eq(labels).to(torch::kInt64),
       base = base_probs.argmax(1).eq(labels).to(torch::kInt64);
  const double goal = base.to(torch::kDouble).mean().item<double>() - max_drop;
  // Offloading the k least confident inputs: scan k upwards, stepping over ties.
  auto order = conf.argsort();
  auto c = conf.index_select(0, order).to(torch::kDouble).contiguous();
  auto o = own.index_select(0, order).contiguous(), b = base.index_select(0, order).contiguous();
  const double* cp = c.data_ptr<double>();
  const int64_t *op = o.data_ptr<int64_t>(), *bp = b.data_ptr<int64_t>();
  int64_t correct = o.sum().item<int64_t>();
  for (int64_t k = 0; k <= n; ++k) {
    bool boundary = k == 0 || k == n || cp[k] != cp[k - 1];
    if (boundary && static_cast<double>(correct) / n >= goal - 1e-12) {
      double tau = k == n ? kAlwaysOffload : cp[k];
      return ApplyThreshold(branch_probs, base_probs, labels, tau);
    }
    if (k < n) correct += bp[k] - op[k];
  }
  return ApplyThreshold(branch_probs, base_probs, labels, kAlwaysOffload);
}

}  // namespace da::prune
