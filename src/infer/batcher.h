#pragma once
// A model behind a queue with dynamic batching: concurrent requests are run
// together, up to `max_batch` images, waiting at most `max_delay` once the
// worker is free. With batching off, requests run one at a time as they came.
// One worker thread owns the model, run by the engine (src/engine) from its
// ONNX file.
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <future>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "engine/engine.h"
#include "infer/oip.h"

namespace da::infer {

struct BatchOptions {
  bool enabled = true;
  int64_t max_batch = 64;                        // images per forward pass
  std::chrono::microseconds max_delay{2000};     // extra wait for a fuller batch
  int threads = 0;                               // OpenMP threads (0: all cores)
  int64_t max_queue = 4096;                      // images waiting before Submit refuses
  std::function<void(int64_t images)> on_batch;  // called after every forward pass
  void Validate() const;                         // UserError when out of range
};

// Submit's refusal when `max_queue` images already wait.
class Overloaded : public std::runtime_error {
 public:
  Overloaded() : std::runtime_error("the inference queue is full; try again shortly") {}
};

class Batcher {
 public:
  // Loads the model from its ONNX file's bytes. UserError when it does not load.
  Batcher(const std::string& onnx_bytes, BatchOptions opts);
  ~Batcher();  // finishes queued work, then stops

  const InputShape& shape() const { return shape_; }
  // Probabilities (count x classes) for `count` images of `pixels`. Throws
  // Overloaded when the queue is full.
  std::future<std::vector<float>> Submit(std::vector<float> pixels, int64_t count);

 private:
  struct Job {
    std::vector<float> pixels;
    int64_t count;
    std::promise<std::vector<float>> done;
  };
  void Loop();

  std::unique_ptr<engine::Model> model_;
  InputShape shape_;
  BatchOptions opts_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Job> queue_;
  int64_t queued_ = 0;  // images in queue_
  bool stop_ = false;
  std::thread worker_;
};

}  // namespace da::infer
