#pragma once
// Shared helpers for the nn tests.
#include <cstdlib>
#include <string>

#include "nn/model.h"

namespace da::test {

// Specs with odd widths (including width 1) for both families and both input shapes.
inline std::vector<nn::ModelSpec> OddSpecs() {
  using nn::Family;
  using nn::ModelSpec;
  return {
      ModelSpec::Default(Family::kVgg).WithWidths("3/5,1/7 fc2"),
      ModelSpec::Default(Family::kVgg, 3, 32, 32).WithWidths("1,6/9/2,3 fc5"),
      ModelSpec::Default(Family::kResnet).WithWidths("3:1,2/1:3/2:5,1"),
      ModelSpec::Default(Family::kResnet, 3, 32, 32).WithWidths("5:7/6:1,4/3:2"),
  };
}

// Gives every BatchNorm realistic running statistics (from forward passes in
// training mode) and non-trivial affine parameters, so BN folding is exercised,
// and scales the classifier so logits spread like a trained model's.
inline void RandomizeBatchNorm(nn::NetImpl& net) {
  const auto& s = net.spec();
  torch::NoGradGuard g;
  net.train();
  for (int i = 0; i < 30; ++i) net.forward(torch::rand({16, s.channels, s.height, s.width}));
  for (auto& p : net.named_parameters())
    if (p.key().find(".bn.") != std::string::npos) {
      if (p.key().ends_with("weight"))
        p.value().uniform_(0.5, 1.5);
      else
        p.value().uniform_(-0.2, 0.2);
    }
  // Scale the classifier so logits have a trained model's spread (std ~5).
  net.eval();
  auto logits = net.forward(torch::rand({64, s.channels, s.height, s.width}));
  double scale = 5.0 / std::max(1e-6, logits.std().item<double>());
  auto params = net.named_parameters();
  params["cls.weight"].mul_(scale);
  params["cls.bias"].mul_(scale);
}

}  // namespace da::test
