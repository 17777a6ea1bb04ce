#include "infer/batcher.h"

#include <omp.h>

#include <algorithm>
#include <cmath>

#include "common/error.h"

namespace da::infer {

void BatchOptions::Validate() const {
  if (max_batch < 1 || max_batch > 4096) throw UserError("max batch must be in 1..4096");
  if (max_delay.count() < 0 || max_delay > std::chrono::seconds(1))
    throw UserError("max queue delay must be in 0..1 s");
  if (threads < 0) throw UserError("threads must be >= 0");
  if (max_queue < max_batch) throw UserError("the inference queue must hold at least one batch");
}

Batcher::Batcher(const std::string& onnx_bytes, BatchOptions opts) : opts_(std::move(opts)) {
  opts_.Validate();
  model_ = std::make_unique<engine::Model>(onnx_bytes);
  const engine::Model& m = *model_;
  shape_ = {int(m.channels()), int(m.height()), int(m.width()), int(m.classes())};
  worker_ = std::thread([this] { Loop(); });
}

Batcher::~Batcher() {
  {
    std::lock_guard lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  worker_.join();
}

std::future<std::vector<float>> Batcher::Submit(std::vector<float> pixels, int64_t count) {
  if (count < 1 || static_cast<int64_t>(pixels.size()) != count * shape_.Pixels())
    throw std::invalid_argument("Batcher::Submit: pixels do not match count");
  Job job{std::move(pixels), count, {}};
  auto f = job.done.get_future();
  {
    std::lock_guard lock(mu_);
    if (stop_) throw std::logic_error("Batcher stopped");
    if (queued_ + count > opts_.max_queue) throw Overloaded();
    queued_ += count;
    queue_.push_back(std::move(job));
  }
  cv_.notify_all();
  return f;
}

void Batcher::Loop() {
  if (opts_.threads > 0) omp_set_num_threads(opts_.threads);
  for (;;) {
    std::vector<Job> batch;
    {
      std::unique_lock lock(mu_);
      cv_.wait(lock, [&] { return stop_ || !queue_.empty(); });
      if (queue_.empty()) return;  // stopping, nothing left
      if (opts_.enabled) {
        // Wait for a fuller batch, at most max_delay after the first job.
        const auto deadline = std::chrono::steady_clock::now() + opts_.max_delay;
        cv_.wait_until(lock, deadline, [&] { return stop_ || queued_ >= opts_.max_batch; });
      }
      int64_t images = 0;
      while (!queue_.empty() && (batch.empty() || (opts_.enabled && images + queue_.front().count <=
                                                                        opts_.max_batch))) {
        images += queue_.front().count;
        queued_ -= queue_.front().count;
        batch.push_back(std::move(queue_.front()));
        queue_.pop_front();
      }
    }
    try {
      int64_t images = 0;
      for (const Job& j : batch) images += j.count;
      std::vector<float> input;
      input.reserve(static_cast<size_t>(images * shape_.Pixels()));
      for (const Job& j : batch) input.insert(input.end(), j.pixels.begin(), j.pixels.end());
      std::vector<float> probs(static_cast<size_t>(images * shape_.classes));
      model_->Run(input.data(), images, probs.data());
      for (int64_t i = 0; i < images; ++i) {  // softmax, row by row
        float* row = probs.data() + i * shape_.classes;
        const float top = *std::max_element(row, row + shape_.classes);
        float sum = 0;
        for (int k = 0; k < shape_.classes; ++k) sum += row[k] = std::exp(row[k] - top);
        for (int k = 0; k < shape_.classes; ++k) row[k] /= sum;
      }
      if (opts_.on_batch) opts_.on_batch(images);
      size_t at = 0;
      for (Job& j : batch) {
        const size_t n = static_cast<size_t>(j.count * shape_.classes);
        j.done.set_value(std::vector<float>(probs.begin() + at, probs.begin() + at + n));
        at += n;
      }
    } catch (...) {
      for (Job& j : batch) j.done.set_exception(std::current_exception());
    }
  }
}

}  // namespace da::infer
