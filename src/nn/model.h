#pragma once
// libtorch models built from a ModelSpec. Both families run the spec's layer
// graph (ModelSpec::Layers), so parameter names are stable and shared with the
// ONNX exporter: "<layer>.conv.weight", "<layer>.bn.running_mean", "fc.weight", ...
// A fused Net has BN folded into its convs ("<layer>.weight", "<layer>.bias"):
// the deployed form, used for inference and export.
#include <torch/torch.h>

#include <memory>
#include <string>

#include "nn/spec.h"

namespace da::nn {

class NetImpl : public torch::nn::Module {
 public:
  explicit NetImpl(const ModelSpec& spec, bool fused = false);
  // x: float [N, C, H, W], pixels scaled to [0, 1]. Returns logits [N, classes].
  torch::Tensor forward(torch::Tensor x);

  const ModelSpec& spec() const { return spec_; }
  bool fused() const { return fused_; }
  // Stores 4-d weights (and expects inputs) in channels-last layout, oneDNN's
  // faster path for training on CPU.
  void ToChannelsLast();
  // Inference only (fused nets): keeps conv weights pre-reordered in oneDNN's
  // blocked layout and runs convolutions, pooling and additions on oneDNN
  // tensors, converting to dense only before global pooling. Inputs stay dense NCHW.
  void ToMkldnn();

 private:
  ModelSpec spec_;
  bool fused_;
  std::vector<Layer> layers_;
  std::vector<int> last_use_;  // value id -> last layer index reading it
  std::vector<torch::nn::Conv2d> conv_;
  std::vector<torch::nn::BatchNorm2d> bn_;
  std::vector<torch::nn::Linear> linear_;
  std::vector<torch::Tensor> mkldnn_weight_;  // per conv layer, after ToMkldnn()
};
TORCH_MODULE(Net);

// Returns the deployed form of a trained net: same function in eval mode, BN folded.
Net Fuse(NetImpl& net);

// Our server-side inference path: `net` (unfused) folded into a new net in eval
// mode on oneDNN tensors (ToMkldnn). Run it under c10::InferenceMode with dense
// NCHW inputs.
Net PrepareForInference(NetImpl& net);

// Sets the number of threads libtorch uses; 0 means all cores.
void SetThreads(int threads);

// Images [begin, end) (end -1: all) as a float tensor [N, C, H, W] scaled to
// [0, 1], and their labels as int64 [N]; converts only that range.
struct Images;
torch::Tensor ToTensor(const Images& images, int64_t begin = 0, int64_t end = -1);
torch::Tensor LabelsTensor(const Images& images, int64_t begin = 0, int64_t end = -1);

// Saves weights atomically to `path`; loads them, throwing UserError when the file
// is missing, corrupt or does not match the net's spec.
void SaveWeights(NetImpl& net, const std::string& path);
void LoadWeights(NetImpl& net, const std::string& path);

}  // namespace da::nn
