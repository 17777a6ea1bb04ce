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
  // Stores 4-d weights (and expects inputs) in channels-last layout: 3-10x faster
  // convolutions with oneDNN on CPU.
  void ToChannelsLast();
  // Inference only (fused nets): keeps conv weights pre-reordered in oneDNN's
  // blocked layout and runs convolutions, pooling and additions on oneDNN
  // tensors, converting to dense only before global pooling. Inputs stay dense NCHW.
  void ToMkldnn();
  bool mkldnn() const { return !mkldnn_weight_.empty(); }

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

// Our server-side inference path: a copy of `net`, fused, in eval mode, on oneDNN
// tensors (ToMkldnn). Run it under c10::InferenceMode with dense NCHW inputs.
Net PrepareForInference(NetImpl& net);

// Sets the number of threads libtorch uses; 0 means all cores.
void SetThreads(int threads);

// Turns a set of uint8 images into a float tensor [N, C, H, W] scaled to [0, 1].
struct Images;
torch::Tensor ToTensor(const Images& images);
torch::Tensor LabelsTensor(const Images& images);

// Saves weights atomically to `path`; loads them, throwing UserError when the file
// is missing, corrupt or does not match the net's spec.
void SaveWeights(NetImpl& net, const std::string& path);
void LoadWeights(NetImpl& net, const std::string& path);

}  // namespace da::nn
