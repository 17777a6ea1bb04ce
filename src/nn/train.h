#pragma once
// Training and evaluation of a Net on a Dataset.
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "nn/dataset.h"
#include "nn/model.h"

namespace da::nn {

struct TrainOptions {
  int epochs = 15;
  int batch_size = 128;
  double lr = 0.1;  // peak; one epoch of linear warm-up, then cosine decay to 0
  double momentum = 0.9;
  double weight_decay = 5e-4;
  double label_smoothing = 0.1;
  int pad = 2;        // random-crop padding in pixels (0: no crop)
  bool flip = true;   // random horizontal flip
  int64_t limit = 0;  // train on the first N training images only (0: all)
  uint64_t seed = 1;
  int threads = 0;     // 0: all cores
  bool quiet = false;  // no progress line

  nlohmann::json ToJson() const;
  // Throws UserError for values that cannot train (epochs < 1, lr <= 0, ...).
  void Validate() const;
};

// The options with which a family's default model reaches its accuracy target
// within 20 minutes on 2 cores (docs/RESULTS.md): vgg 15 epochs, resnet 18.
TrainOptions DefaultTrainOptions(Family family);

struct EpochLog {
  int epoch;
  double loss, train_accuracy, val_accuracy, seconds;
};

struct EvalResult {
  double accuracy = 0, loss = 0;
  std::vector<double> per_class_accuracy;
  std::vector<int64_t> per_class_count;
  std::vector<int64_t> predicted;  // per image: the argmax
  std::vector<float> top;          // per image: its softmax probability
};

// Trains `net` in place with SGD + momentum, cosine learning rate, weight decay and
// crop/flip augmentation, validating after every epoch. Deterministic for a seed
// and thread count (seed the global generator before building `net` to fix its
// initial weights too, as TrainModelDir does).
std::vector<EpochLog> Train(Net& net, const Dataset& data, const TrainOptions& opts);

// Training images as tensors (pixels in [0, 1], int64 labels), converted once
// for many short fine-tunes.
struct TrainTensors {
  torch::Tensor x, y;
};
TrainTensors ToTrainTensors(const Images& images);

// Knowledge distillation: the loss is (1 - weight) x the label loss + weight x
// temperature^2 x the cross-entropy between the teacher's and the student's
// outputs softened by `temperature` (Hinton et al. 2015), on the same
// augmented batch. The teacher is not changed (eval mode, no gradients).
struct TeacherCache;
struct Distill {
  NetImpl* teacher = nullptr;  // nullptr: labels only
  double weight = 0.5, temperature = 4;
  // Optional: the teacher's softened outputs by step, kept for the next
  // fine-tune that draws the same batches (same data, seed, batch size and
  // augmentation: the batch at step k depends on nothing else), so the teacher
  // runs once per step for a whole family. The answers are the same with or
  // without it; a fine-tune with other inputs than the cache's is a logic_error.
  TeacherCache* cache = nullptr;
  void Validate() const;  // UserError for weight outside [0, 1] or temperature <= 0
};
struct TeacherCache {
  std::string key;                // what the batches and outputs were drawn from
  std::vector<torch::Tensor> soft;  // soft[k]: the teacher's outputs at step k
};

// Fine-tunes `net` in place for exactly `steps` batches drawn from `data` with
// the same optimizer and augmentation as Train (opts.epochs and limit unused),
// the learning rate decaying from opts.lr to 0 on a cosine, no validation;
// learning from `distill`'s teacher too when it has one. Prints a progress
// line unless opts.quiet.
void FineTune(Net& net, const TrainTensors& data, int64_t steps, const TrainOptions& opts,
              const Distill& distill = {});

// Accuracy, mean cross-entropy and per-class accuracy of `net` (eval mode) on `images`.
EvalResult Evaluate(Net& net, const Images& images, int classes, int batch_size = 500);

}  // namespace da::nn
