#pragma once
// ONNX export of the deployed model (opset 13): Conv (BN folded), Relu, MaxPool,
// Add, GlobalAveragePool, Flatten, Gemm. Input "input" float32 [N, C, H, W] with
// pixels in [0, 1] and a dynamic batch dimension N; output "logits" [N, classes].
#include <cstdint>
#include <string>

#include "nn/model.h"

namespace da::nn {

// The serialized ONNX model of `net` (fused first when it is not); checked with
// onnx::checker before it is returned.
std::string OnnxModelBytes(NetImpl& net);

// A model of `spec` with every weight and bias set to `fill`, for timing.
std::string OnnxModelBytes(const ModelSpec& spec, float fill);

// A model of a chain of layers alone, each reading the previous one's output
// (weights 0.01), for profiling latency: input "input" [N, in_ch, in_h, in_w]
// ([N, in_ch] for kLinear) and, for kAdd, "input2" of the same shape; output
// "logits" [N, out_ch, out_h, out_w] ([N, out_ch] after kGlobalAvgPool, kLinear).
std::string OnnxLayerBytes(std::vector<Layer> chain, int in_h, int in_w);

// Writes OnnxModelBytes(net) to `path` atomically.
void ExportOnnx(NetImpl& net, const std::string& path);

// The exact size in bytes of the exported file of any model with this spec,
// computed without weights.
int64_t OnnxBytes(const ModelSpec& spec);

}  // namespace da::nn
