#pragma once
// The engine's model as a graph: our ONNX files read into tensors and
// operators (Parse), then fused (Fuse). Private to src/engine.
#include <cstdint>
#include <string>
#include <vector>

namespace da::engine {

inline constexpr int64_t kMaxElements = 1 << 24;  // a tensor of one image, or a weight
inline constexpr int64_t kMaxTotal = 1 << 26;     // all tensors of one image
inline constexpr int64_t kMaxMacs = int64_t(1) << 34;  // multiply-adds per image

// The product of `d` (each in [1, kMaxElements]), saturating past kMaxElements.
int64_t Elements(const std::vector<int64_t>& d);

struct Op {
  enum Kind { kConv, kMaxPool, kGlobalAvgPool, kFlatten, kGemm, kAdd, kRelu } kind;
  std::string name;                 // for messages: "'node' (OpType)"
  int in = -1, in2 = -1, out = -1;  // tensors; in2: Add's second input, or a Conv's fused addend
  bool relu = false;                // fused
  int64_t kh = 1, kw = 1, sh = 1, sw = 1, pt = 0, pl = 0, pb = 0, pr = 0;
  int64_t oc = 0;
  std::vector<float> w, b;  // Conv [OC, C, KH, KW]; Gemm [OC, K] (K as the input's dims)
  bool live = true;         // false once fused into another op
};

struct Graph {
  std::vector<std::vector<int64_t>> tensors;  // per tensor, one image's dims: {C, H, W} or {K}
  std::vector<Op> ops;                        // in execution order
  int output = -1;                            // tensor 0 is the input
  int64_t largest = 0;                        // elements of the largest tensor
  int64_t macs = 0;                           // multiply-adds of Conv and Gemm per image
};

// Reads and checks an ONNX file. UserError naming the node and the field for
// anything outside the operator set.
Graph Parse(const std::string& bytes);

// Fuses Flatten into Gemm, Add into the later of its Convs (a sum), Relu into
// Conv, Gemm and Add; drops the fused ops.
void Fuse(Graph& g);

// "Conv+Relu MaxPool Conv+Sum+Relu ...".
std::string Describe(const Graph& g);

}  // namespace da::engine
