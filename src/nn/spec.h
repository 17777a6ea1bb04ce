#pragma once
// A model spec: family + per-layer channel widths + input shape + classes.
// Pruning changes widths only. Any widths >= 1 build and run.
//
// vgg:    stages[s] lists the widths of stage s's 3x3 conv-BN-ReLU layers; a 2x2
//         max-pool follows every stage but the last; then global average pooling,
//         one hidden fully connected layer (`hidden` units, ReLU) and the classifier.
// resnet: a 3x3 conv-BN-ReLU stem, then stages of basic blocks
//         (conv-BN-ReLU-conv-BN + shortcut, ReLU). stages[s][b] is block b's inner
//         width; residual[s] the width all of stage s's block outputs share (the
//         stem's too for stage 0). Stages after the first halve the resolution in
//         their first block, whose shortcut is a 1x1 conv-BN projection.
#include <cstdint>
#include <nlohmann/json_fwd.hpp>
#include <string>
#include <vector>

namespace da::nn {

enum class Family { kVgg, kResnet };

// One layer of a model's graph. Values are numbered: 0 is the model input and
// layer i produces value i + 1. Conv layers are conv-BN (folded when deployed),
// with ReLU when `relu`; kGlobalAvgPool also flattens to [N, C].
struct Layer {
  enum class Kind { kConv, kMaxPool, kAdd, kGlobalAvgPool, kLinear };
  Kind kind;
  std::string name;  // kConv, kLinear: parameter prefix
  int input = 0, input2 = -1;
  int in_ch = 0, out_ch = 0, kernel = 0, stride = 1;
  bool relu = false;
  int out_h = 1, out_w = 1;
};

struct ModelSpec {
  Family family = Family::kVgg;
  std::vector<std::vector<int>> stages;
  std::vector<int> residual;  // resnet only
  int hidden = 0;             // vgg only
  int channels = 1, height = 28, width = 28, classes = 10;

  // The default (unpruned) architecture of a family for an input shape.
  static ModelSpec Default(Family family, int channels = 1, int height = 28, int width = 28,
                           int classes = 10);
  // Throws UserError when the spec cannot build (widths < 1, input too small, ...).
  void Validate() const;

  nlohmann::json ToJson() const;
  // Parses and validates; throws UserError naming the bad field.
  static ModelSpec FromJson(const nlohmann::json& j);

  // The model's layers in execution order; every consumer (libtorch model, ONNX
  // export, fused inference, size counts) walks this one graph.
  std::vector<Layer> Layers() const;

  // Parameters and multiply-accumulates of the deployed model (BN folded into convs).
  int64_t Params() const;
  int64_t Macs() const;
  // One line for people: "vgg 32,32/64,64/128,128 fc256", "resnet 16:16,16,16/32:32,32,32/...".
  std::string Summary() const;
  // Replaces the widths with `text`, stages separated by '/', widths by ',':
  // vgg "32,32/64,64/128,128" (optionally " fc256"); resnet "16:16,16,16/32:32,32,32"
  // (residual width, ':', block inner widths). Throws UserError when malformed.
  ModelSpec WithWidths(const std::string& text) const;

  bool operator==(const ModelSpec&) const = default;
};

std::string FamilyName(Family f);
// Throws UserError for anything but "vgg" and "resnet".
Family ParseFamily(const std::string& name);

}  // namespace da::nn
