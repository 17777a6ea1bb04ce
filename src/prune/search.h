#pragma once
// Context-aware pruning, NetAdapt-style (the paper's algorithm made concrete),
// and the two baselines it is measured against.
//
// A context's predicted latency divided by its device slowdown is, up to a
// constant, the objective J(M) = bytes(M) x ms_per_byte + reference_ms(M): its
// download share weighs bytes, its device share weighs compute. Contexts with
// the same ms_per_byte (same device, network and inferences per download: only
// the budget differs) follow the same trajectory, and each takes the first model
// on it that meets its budget.
//
// Each iteration asks for a cut of `step` x J(current model) (or less, if that
// already meets the next budget on the trajectory: NetAdapt's decaying
// resource-reduction schedule, so late cuts never gut a narrowed unit); for every unit it builds
// the candidate that makes that cut by pruning that unit alone (least important channels first),
// short-term fine-tunes it, and keeps the candidate with the best accuracy on a validation subset.
// Branches are then long-term fine-tuned.
#include <functional>
#include <string>
#include <vector>

#include "context/context.h"
#include "context/latency.h"
#include "nn/dataset.h"
#include "nn/model.h"
#include "nn/train.h"
#include "prune/prune.h"

namespace da::prune {

struct SearchOptions {
  Importance importance = Importance::kL1;
  double step = 0.1;          // cut per iteration, as a fraction of the current objective
  int64_t short_steps = 40;   // short-term fine-tune batches per candidate
  int64_t val_images = 2000;  // validation images that score candidates
  double long_epochs = 2;     // long-term fine-tune of each branch
  // long_lr 0.05 (cosine to 0) won on validation over 0.02 (docs/RESULTS.md, issue #13).
  double short_lr = 0.01, long_lr = 0.05;
  double min_width = 1.0 / 16;  // no unit narrower than this fraction of its base width
  int max_iterations = 200;
  double accuracy_drop = 0.003;  // threshold rule: collaborative accuracy >= base - this
  // Long-term fine-tunes also learn from the base model's softened outputs
  // (nn::Distill) when distill_weight > 0. Defaults chosen on validation
  // (docs/RESULTS.md, issue #13).
  double distill_weight = 0.9, distill_temperature = 4;
  // true: long-term fine-tunes crop and flip their batches like every other
  // fine-tune (`train`'s pad and flip); false: they see the images as they
  // are. false won on validation (docs/RESULTS.md, issue #13; the branches
  // probably underfit, and crops and flips make fitting harder).
  bool long_augment = false;
  nn::TrainOptions train;  // batch size, momentum, weight decay, augmentation, seed, threads
  bool quiet = false;
  // Called after every search iteration with the trajectory's progress in
  // [0, 1]; an exception it throws abandons the search.
  std::function<void(double)> on_progress;

  void Validate() const;  // UserError for values that cannot search
  nlohmann::json ToJson() const;
};

enum class Method {
  kContextAware,  // ours: objective = the context's predicted latency
  kUniform,       // baseline: the same keep ratio in every unit, L1 (Li et al. 2017)
  kMacsOnly,      // baseline: the same iterative search with objective = MACs
};
std::string MethodName(Method m);

// What the search needs besides options: the data, the predictor and the base.
struct SearchInputs {
  const nn::Dataset* data;
  const context::LatencyTable* table;
  nn::NetImpl* base;  // trained, unfused
};

struct Branch {
  context::Context context;               // the context it was made for
  nn::Net net = nullptr;                  // long-term fine-tuned, unfused
  bool best_effort = false;               // the budget could not be met; the smallest model reached
  int iterations = 0;                     // pruning iterations on its trajectory
  int64_t steps = 0;                      // fine-tune batches spent on its own path (short + long)
  std::vector<std::string> pruned_order;  // units in the order the search cut them
  // Its whole trajectory (iterative methods): each iteration's model and its
  // validation-subset accuracy after short-term fine-tuning, base first.
  std::vector<std::pair<nn::ModelSpec, double>> trajectory;
};

// One branch per context, in the contexts' order. kUniform fine-tunes branch i
// for (*matched_steps)[i] batches when given (the budget context-aware spent on
// that context), else for the long-term fine-tune alone.
std::vector<Branch> Search(Method method, const std::vector<context::Context>& contexts,
                           const SearchInputs& in, const SearchOptions& opts,
                           const std::vector<int64_t>* matched_steps = nullptr);

// Confidence threshold of a branch (the collaborative mechanism): the smallest
// tau such that "the branch answers when its top softmax probability >= tau, the
// base model otherwise" keeps accuracy on `images` >= base accuracy - max_drop.
struct Threshold {
  double tau = 0;
  double offload_fraction = 0;  // inputs sent to the base model
  double accuracy = 0;          // collaborative accuracy at tau
};
Threshold ChooseThreshold(const torch::Tensor& branch_probs, const torch::Tensor& base_probs,
                          const torch::Tensor& labels, double max_drop);
// The collaborative accuracy and offload fraction of a given tau.
Threshold ApplyThreshold(const torch::Tensor& branch_probs, const torch::Tensor& base_probs,
                         const torch::Tensor& labels, double tau);

// The same at `points` + 1 thresholds from "never" (0) to `tau`, offloading
// evenly spaced shares of the inputs `tau` offloads: the curve the edge's
// collaborative rule chooses from per context (edge/cache.h).
std::vector<Threshold> ThresholdCurve(const torch::Tensor& branch_probs,
                                      const torch::Tensor& base_probs, const torch::Tensor& labels,
                                      double tau, int points = 20);
// The curve as the model's record keeps it: [[tau, offload, accuracy], ...].
nlohmann::json CurveJson(const std::vector<Threshold>& curve);

// Softmax probabilities [N, classes] of `net` on `images`.
torch::Tensor Probabilities(nn::NetImpl& net, const nn::Images& images);

}  // namespace da::prune
