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

// Writes OnnxModelBytes(net) to `path` atomically.
void ExportOnnx(NetImpl& net, const std::string& path);

// The exact size in bytes of the exported file of any model with this spec,
// computed without weights.
int64_t OnnxBytes(const ModelSpec& spec);

}  // namespace da::nn
