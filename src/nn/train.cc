#include "nn/train.h"

#include <cmath>
#include <numbers>
#include <sstream>

#include "common/error.h"
#include "common/progress.h"

namespace da::nn {

TrainOptions DefaultTrainOptions(Family family) {
  TrainOptions o;
  if (family == Family::kResnet) o.epochs = 18;
  return o;
}

nlohmann::json TrainOptions::ToJson() const {
  return {{"epochs", epochs},
          {"batch_size", batch_size},
          {"lr", lr},
          {"momentum", momentum},
          {"weight_decay", weight_decay},
          {"label_smoothing", label_smoothing},
          {"pad", pad},
          {"flip", flip},
          {"limit", limit},
          {"seed", seed}};
}

void TrainOptions::Validate() const {
  auto bad = [](const std::string& m) { throw UserError("invalid training option: " + m); };
  if (epochs < 1) bad("epochs must be >= 1");
  if (batch_size < 1) bad("batch size must be >= 1");
  if (!(lr > 0) || !std::isfinite(lr)) bad("lr must be a positive number");
  if (!(momentum >= 0 && momentum < 1)) bad("momentum must be in [0, 1)");
  if (!(weight_decay >= 0) || !std::isfinite(weight_decay)) bad("weight decay must be >= 0");
  if (!(label_smoothing >= 0 && label_smoothing < 1)) bad("label smoothing must be in [0, 1)");
  if (pad < 0 || pad > 16) bad("pad must be in [0, 16]");
  if (limit < 0) bad("limit must be >= 0");
}

namespace {

// Random crop (after zero padding) and horizontal flip of a batch, using `gen`.
torch::Tensor Augment(const torch::Tensor& x, int pad, bool flip, torch::Generator& gen) {
  torch::Tensor out = x;
  int64_t n = x.size(0), h = x.size(2), w = x.size(3);
  if (pad > 0) {
    auto padded = torch::constant_pad_nd(x, {pad, pad, pad, pad}, 0);
    auto off = torch::randint(0, 2 * pad + 1, {n, 2}, gen, torch::kInt64);
    auto acc = off.accessor<int64_t, 2>();
    out = torch::empty_like(x);
    for (int64_t i = 0; i < n; ++i)
      out[i].copy_(padded[i].narrow(1, acc[i][0], h).narrow(2, acc[i][1], w));
  }
  if (flip) {
    auto mask = torch::rand({n, 1, 1, 1}, gen) < 0.5;
    out = torch::where(mask, out.flip({3}), out);
  }
  return out;
}

struct Step {
  double loss;
  int64_t correct;
};

// One SGD step on the batch `idx` of (xs, ys), augmented.
Step TrainStep(Net& net, torch::optim::SGD& sgd, torch::nn::CrossEntropyLoss& ce,
               const torch::Tensor& xs, const torch::Tensor& ys, const torch::Tensor& idx,
               const TrainOptions& opts, torch::Generator& gen, double lr,
               const Distill& distill = {}, torch::Tensor* soft = nullptr) {
  for (auto& group : sgd.param_groups()) group.options().set_lr(lr);
  auto x = Augment(xs.index_select(0, idx), opts.pad, opts.flip, gen)
               .contiguous(torch::MemoryFormat::ChannelsLast);
  auto y = ys.index_select(0, idx);
  sgd.zero_grad();
  auto logits = net->forward(x);
  auto loss = ce(logits, y);
  if (distill.teacher && distill.weight > 0) {
    const double t = distill.temperature;
    torch::Tensor own;
    if (!soft) soft = &own;
    if (!soft->defined()) {  // else the cache's: the same batch at the same step
      torch::NoGradGuard g;
      *soft = torch::softmax(distill.teacher->forward(x) / t, 1);
    }
    auto kd = -(*soft * torch::log_softmax(logits / t, 1)).sum(1).mean() * (t * t);
    loss = (1 - distill.weight) * loss + distill.weight * kd;
  }
  loss.backward();
  sgd.step();
  return {loss.item<double>(), logits.argmax(1).eq(y).sum().item<int64_t>()};
}

torch::optim::SGD MakeSgd(Net& net, const TrainOptions& opts) {
  return torch::optim::SGD(net->parameters(), torch::optim::SGDOptions(opts.lr)
                                                  .momentum(opts.momentum)
                                                  .nesterov(opts.momentum > 0)
                                                  .weight_decay(opts.weight_decay));
}

torch::nn::CrossEntropyLoss MakeLoss(const TrainOptions& opts) {
  return torch::nn::CrossEntropyLoss(
      torch::nn::CrossEntropyLossOptions().label_smoothing(opts.label_smoothing));
}

}  // namespace

TrainTensors ToTrainTensors(const Images& images) {
  return {ToTensor(images), LabelsTensor(images)};
}

void Distill::Validate() const {
  if (!(weight >= 0 && weight <= 1)) throw UserError("distillation weight must be in [0, 1]");
  if (!(temperature > 0 && temperature <= 100))
    throw UserError("distillation temperature must be in (0, 100]");
}

void FineTune(Net& net, const TrainTensors& data, int64_t steps, const TrainOptions& opts,
              const Distill& distill) {
  opts.Validate();
  distill.Validate();
  if (distill.teacher) distill.teacher->eval();
  SetThreads(opts.threads);
  const int64_t n = data.x.size(0);
  if (n < 1 || steps < 1) return;
  auto gen = at::detail::createCPUGenerator(opts.seed);
  net->ToChannelsLast();
  auto sgd = MakeSgd(net, opts);
  auto ce = MakeLoss(opts);
  net->train();
  std::unique_ptr<Progress> progress;
  if (!opts.quiet)
    progress = std::make_unique<Progress>("fine-tune " + net->spec().Summary(), steps);
  TeacherCache* cache = distill.teacher && distill.weight > 0 ? distill.cache : nullptr;
  if (cache) {
    std::ostringstream key;
    key << distill.teacher << ' ' << distill.temperature << ' ' << data.x.data_ptr() << ' ' << n
        << ' ' << opts.seed << ' ' << opts.batch_size << ' ' << opts.pad << ' ' << opts.flip;
    if (cache->soft.empty()) cache->key = key.str();
    if (cache->key != key.str())
      throw std::logic_error("FineTune: a teacher cache filled from other batches");
  }
  torch::Tensor perm;
  double loss_sum = 0;
  for (int64_t step = 0, b = 0; step < steps; ++step, ++b) {
    if (!perm.defined() || (b + 1) * opts.batch_size > n) {
      perm = torch::randperm(n, gen, torch::kInt64);
      b = 0;
    }
    double lr = 0.5 * opts.lr * (1 + std::cos(std::numbers::pi * step / steps));
    auto idx = perm.narrow(0, b * opts.batch_size, std::min<int64_t>(opts.batch_size, n));
    torch::Tensor soft;
    if (cache && step < static_cast<int64_t>(cache->soft.size())) soft = cache->soft[size_t(step)];
    loss_sum += TrainStep(net, sgd, ce, data.x, data.y, idx, opts, gen, lr, distill, &soft).loss;
    if (cache && step == static_cast<int64_t>(cache->soft.size())) cache->soft.push_back(soft);
    if (progress) {
      char extra[48];
      std::snprintf(extra, sizeof extra, "loss %.4f", loss_sum / (step + 1));
      progress->Update(step + 1, extra);
    }
  }
  if (!std::isfinite(loss_sum)) throw UserError("fine-tuning diverged (loss is not finite)");
  if (progress) progress->Finish();
  net->eval();
}

std::vector<EpochLog> Train(Net& net, const Dataset& data, const TrainOptions& opts) {
  opts.Validate();
  SetThreads(opts.threads);
  torch::manual_seed(opts.seed);
  auto gen = at::detail::createCPUGenerator(opts.seed);
  const int64_t n = opts.limit > 0 ? std::min(opts.limit, data.train.count) : data.train.count;
  if (n < 1) throw UserError("no training images");
  torch::Tensor xs = ToTensor(data.train, 0, n), ys = LabelsTensor(data.train, 0, n);
  const int64_t steps_per_epoch = (n + opts.batch_size - 1) / opts.batch_size;
  const int64_t total_steps = steps_per_epoch * opts.epochs;
  const int64_t warmup = opts.epochs > 1 ? steps_per_epoch : 0;

  net->ToChannelsLast();
  auto sgd = MakeSgd(net, opts);
  auto ce = MakeLoss(opts);
  Progress progress("train " + net->spec().Summary(), total_steps);
  std::vector<EpochLog> log;
  int64_t step = 0;
  for (int epoch = 1; epoch <= opts.epochs; ++epoch) {
    net->train();
    double t0 = progress.ElapsedSeconds();
    auto perm = torch::randperm(n, gen, torch::kInt64);
    double loss_sum = 0;
    int64_t correct = 0, seen = 0;
    for (int64_t b = 0; b < steps_per_epoch; ++b, ++step) {
      double lr = step < warmup ? opts.lr * (step + 1) / warmup
                                : 0.5 * opts.lr *
                                      (1 + std::cos(std::numbers::pi * (step - warmup) /
                                                    std::max<int64_t>(1, total_steps - warmup)));
      auto idx = perm.narrow(0, b * opts.batch_size,
                             std::min<int64_t>(opts.batch_size, n - b * opts.batch_size));
      Step r = TrainStep(net, sgd, ce, xs, ys, idx, opts, gen, lr);
      int64_t bs = idx.size(0);
      loss_sum += r.loss * bs;
      correct += r.correct;
      seen += bs;
      if (!opts.quiet) {
        char extra[96];
        std::snprintf(extra, sizeof extra, "epoch %d/%d  loss %.4f  train %.2f%%", epoch,
                      opts.epochs, loss_sum / seen, 100.0 * correct / seen);
        progress.Update(step + 1, extra);
      }
    }
    if (!std::isfinite(loss_sum))
      throw UserError("training diverged (loss is not finite); lower --lr");
    EpochLog e{epoch, loss_sum / seen, static_cast<double>(correct) / seen, 0, 0};
    e.val_accuracy = data.val.count > 0 ? Evaluate(net, data.val, data.Classes()).accuracy : 0;
    e.seconds = progress.ElapsedSeconds() - t0;
    log.push_back(e);
    if (!opts.quiet) {
      char line[160];
      std::snprintf(line, sizeof line, "epoch %d/%d  loss %.4f  train %.2f%%  val %.2f%%  %.0fs",
                    epoch, opts.epochs, e.loss, 100 * e.train_accuracy, 100 * e.val_accuracy,
                    e.seconds);
      if (epoch == opts.epochs)
        progress.Finish(line);
      else
        std::fprintf(stderr, "%s%s\n", isatty(2) ? "\r\033[K" : "", line);
    }
  }
  net->eval();
  return log;
}

EvalResult Evaluate(Net& net, const Images& images, int classes, int batch_size) {
  EvalResult r;
  r.per_class_accuracy.assign(classes, 0);
  r.per_class_count.assign(classes, 0);
  if (images.count == 0) return r;
  bool was_training = net->is_training();
  net->eval();
  torch::NoGradGuard g;
  std::vector<int64_t> correct(classes, 0);
  double loss_sum = 0;
  for (int64_t b = 0; b < images.count; b += batch_size) {
    auto x = ToTensor(images, b, b + batch_size).contiguous(torch::MemoryFormat::ChannelsLast);
    auto y = LabelsTensor(images, b, b + batch_size);
    const int64_t count = y.size(0);
    auto logits = net->forward(x);
    loss_sum += torch::nn::functional::cross_entropy(logits, y).item<double>() * count;
    auto [top, predicted] = torch::softmax(logits, 1).max(1);
    auto hit = predicted.eq(y);
    auto ya = y.accessor<int64_t, 1>();
    auto ha = hit.accessor<bool, 1>();
    auto pa = predicted.accessor<int64_t, 1>();
    auto ta = top.accessor<float, 1>();
    for (int64_t i = 0; i < count; ++i) {
      r.per_class_count[ya[i]]++;
      correct[ya[i]] += ha[i];
      r.predicted.push_back(pa[i]);
      r.top.push_back(ta[i]);
    }
  }
  int64_t total_correct = 0;
  for (int c = 0; c < classes; ++c) {
    total_correct += correct[c];
    r.per_class_accuracy[c] =
        r.per_class_count[c] ? static_cast<double>(correct[c]) / r.per_class_count[c] : 0;
  }
  r.accuracy = static_cast<double>(total_correct) / images.count;
  r.loss = loss_sum / images.count;
  if (was_training) net->train();
  return r;
}

}  // namespace da::nn
