#pragma once
// The inference engine of the services: reads the ONNX files we export (the
// bytes the browser downloads; nn/onnx_export.h) and runs them on oneDNN,
// without libtorch.
//
// Operator set: Conv (bias, no groups or dilation), Relu, MaxPool,
// GlobalAveragePool, Flatten (axis 1), Gemm (alpha = beta = 1), Add (same
// shapes); float32 only; one input [N, C, H, W], one output [N, classes].
// Anything else is a UserError naming the node and the field.
//
// At load the graph is fused: a Relu into the Conv, Gemm or Add before it, an
// Add into the later of its two Convs (a sum post-op, computed in place over
// the other input when that input dies there), a Flatten into the Gemm after
// it. Per batch size, on first use: oneDNN primitives in the layouts oneDNN
// prefers (blocked, end to end), weights reordered once, activations in a few
// buffers reused as tensors die, one scratchpad; a call then runs the
// primitives with no allocation.
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>

namespace da::engine {

struct Graph;  // engine/graph.h

class Model {
 public:
  // Parses and checks `onnx_bytes`. UserError on anything outside the set above.
  explicit Model(const std::string& onnx_bytes);
  ~Model();
  Model(const Model&) = delete;
  Model& operator=(const Model&) = delete;

  int64_t channels() const;
  int64_t height() const;
  int64_t width() const;
  int64_t classes() const;
  // The operators after fusion, e.g. "Conv+Relu MaxPool Conv+Sum+Relu ...".
  std::string Describe() const;

  // Logits of `n` images (n x C x H x W floats, NCHW) into `logits`
  // (n x classes floats). Thread-safe: callers take turns. The first call at a
  // batch size builds its primitives, kept until the model is destroyed.
  // UserError for n outside [1, 4096].
  void Run(const float* images, int64_t n, float* logits);

  struct Plan;  // primitives and buffers for one batch size

 private:
  std::unique_ptr<Graph> g_;
  std::mutex mu_;
  std::map<int64_t, std::unique_ptr<Plan>> plans_;
};

}  // namespace da::engine
