#pragma once
// The engine's portable backend: the same ONNX reader and fusion as the
// oneDNN backend (engine.h), run by plain C++ kernels with 128-bit SIMD
// (WebAssembly SIMD in the browser, SSE2 natively, scalar elsewhere). It has
// no dependency, so it compiles to WebAssembly (web/engine) and natively for
// tests, which hold it to the oneDNN backend.
//
// Activations are NHWC, one image at a time. A Conv is a GEMM read in place
// from its input (copied into a zero border when padded; no im2col): a
// kernel row's KW pixels' channels are contiguous in NHWC, so each output
// pixel's patch is KH runs of KW x C floats. The micro-kernel computes
// 4 pixels x 8 output channels (or 4, for a remainder of at most 4) in
// vector accumulators over weights packed at load; bias, the fused sum and
// Relu are applied on the way out. Gemm is the same kernel with one pixel,
// its weights permuted at load to read the NHWC tensor a fused Flatten left.
// All buffers are allocated at load: a call allocates nothing.
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace da::engine {

struct Graph;  // engine/graph.h

class PortableModel {
 public:
  // Parses and checks `onnx_bytes` (the operator set of engine.h). UserError
  // naming the node and the field for anything outside it.
  explicit PortableModel(const std::string& onnx_bytes);
  ~PortableModel();
  PortableModel(const PortableModel&) = delete;
  PortableModel& operator=(const PortableModel&) = delete;

  int64_t channels() const;
  int64_t height() const;
  int64_t width() const;
  int64_t classes() const;
  int64_t macs() const;  // multiply-adds per image
  std::string Describe() const;

  // Logits of `n` images (n x C x H x W floats, NCHW) into `logits`
  // (n x classes floats). Thread-safe: callers take turns. UserError for n
  // outside [1, 4096].
  void Run(const float* images, int64_t n, float* logits);

  struct Layer;  // an op with its packed weights

 private:
  std::unique_ptr<Graph> g_;
  std::vector<Layer> layers_;
  std::vector<std::vector<float>> act_;  // per tensor, one image
  std::vector<float> padded_;            // a Conv's input with its zero border
  std::mutex mu_;
};

}  // namespace da::engine
