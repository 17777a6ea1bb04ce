#pragma once
// Structured pruning: whole channels leave a model, which becomes a genuinely
// smaller dense model (smaller spec widths, fewer MACs, a smaller ONNX file).
//
// A *unit* is a set of layers whose output channels must stay the same set: a
// vgg conv or its hidden fc alone; in resnet a block's inner conv (c1) alone, or
// a stage's residual group (the stem or the stage's projection, and every c2 of
// the stage), tied together by the residual additions. Units are pruned whole.
#include <map>
#include <string>
#include <vector>

#include "nn/dataset.h"
#include "nn/model.h"

namespace da::prune {

struct Unit {
  std::string name;                 // "s1_0", "fc", "s0_b1_c1", "res2"
  std::vector<std::string> layers;  // layers whose output channels it sets
  int width = 0;
};

// The prunable units of `spec`, in layer order (the classifier is not one).
std::vector<Unit> Units(const nn::ModelSpec& spec);
// `spec` with unit `unit`'s width set to `width` (UserError for unknown units).
nn::ModelSpec WithUnitWidth(const nn::ModelSpec& spec, const std::string& unit, int width);

enum class Importance {
  kL1,       // L1 norm of each output filter (Li et al. 2017)
  kBnScale,  // |BN gamma| (Liu et al. 2017); L1 for the BN-less fc
  kTaylor,   // first-order Taylor of the loss (Molchanov et al. 2019), from training batches
};
// "l1", "bn", "taylor"; UserError otherwise.
Importance ParseImportance(const std::string& name);
std::string ImportanceName(Importance i);

// Channel importance per unit (larger = keep), summed over the unit's layers.
// kTaylor runs `batches` training batches of `data` (running BN statistics are
// left untouched).
std::map<std::string, std::vector<double>> ChannelImportance(nn::NetImpl& net, Importance kind,
                                                             const nn::Dataset* data = nullptr,
                                                             int batches = 8);

// A new (unfused) net keeping, for each unit named in `keep`, those channels
// (indices into the current channels, any order); other units keep all. Weights,
// BN parameters and running statistics are copied.
nn::Net PruneChannels(nn::NetImpl& net, const std::map<std::string, std::vector<int64_t>>& keep);

// A new net of `target` (same structure, every width <= the net's) keeping the
// most important channels of every unit.
nn::Net PruneTo(nn::NetImpl& net, const nn::ModelSpec& target,
                const std::map<std::string, std::vector<double>>& importance);

}  // namespace da::prune
