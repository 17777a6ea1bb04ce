#include "prune/prune.h"

#include <algorithm>
#include <numeric>

#include "common/error.h"

namespace da::prune {

using nn::Family;
using nn::Layer;
using nn::ModelSpec;

std::vector<Unit> Units(const ModelSpec& spec) {
  std::vector<Unit> units;
  if (spec.family == Family::kVgg) {
    for (size_t s = 0; s < spec.stages.size(); ++s)
      for (size_t i = 0; i < spec.stages[s].size(); ++i) {
        std::string name = "s" + std::to_string(s) + "_" + std::to_string(i);
        units.push_back({name, {name}, spec.stages[s][i]});
      }
    units.push_back({"fc", {"fc"}, spec.hidden});
    return units;
  }
  for (size_t s = 0; s < spec.stages.size(); ++s) {
    Unit res{"res" + std::to_string(s),
             {s == 0 ? "stem" : "s" + std::to_string(s) + "_b0_proj"},
             spec.residual[s]};
    for (size_t b = 0; b < spec.stages[s].size(); ++b) {
      std::string p = "s" + std::to_string(s) + "_b" + std::to_string(b) + "_";
      units.push_back({p + "c1", {p + "c1"}, spec.stages[s][b]});
      res.layers.push_back(p + "c2");
    }
    units.push_back(res);
  }
  return units;
}

ModelSpec WithUnitWidth(const ModelSpec& spec, const std::string& unit, int width) {
  ModelSpec out = spec;
  int s = -1, i = -1;
  if (unit == "fc" && spec.family == Family::kVgg) {
    out.hidden = width;
  } else if (spec.family == Family::kVgg && std::sscanf(unit.c_str(), "s%d_%d", &s, &i) == 2 &&
             s >= 0 && s < static_cast<int>(spec.stages.size()) && i >= 0 &&
             i < static_cast<int>(spec.stages[s].size()) &&
             unit == "s" + std::to_string(s) + "_" + std::to_string(i)) {
    out.stages[s][i] = width;
  } else if (spec.family == Family::kResnet && std::sscanf(unit.c_str(), "res%d", &s) == 1 &&
             s >= 0 && s < static_cast<int>(spec.residual.size()) &&
             unit == "res" + std::to_string(s)) {
    out.residual[s] = width;
  } else if (spec.family == Family::kResnet &&
             std::sscanf(unit.c_str(), "s%d_b%d_c1", &s, &i) == 2 && s >= 0 &&
             s < static_cast<int>(spec.stages.size()) && i >= 0 &&
             i < static_cast<int>(spec.stages[s].size()) &&
             unit == "s" + std::to_string(s) + "_b" + std::to_string(i) + "_c1") {
    out.stages[s][i] = width;
  } else {
    throw UserError("no prunable unit '" + unit + "' in " + spec.Summary());
  }
  out.Validate();
  return out;
}

Importance ParseImportance(const std::string& name) {
  if (name == "l1") return Importance::kL1;
  if (name == "bn") return Importance::kBnScale;
  if (name == "taylor") return Importance::kTaylor;
  throw UserError("unknown importance '" + name + "' (known: l1, bn, taylor)");
}

std::string ImportanceName(Importance i) {
  return i == Importance::kL1 ? "l1" : i == Importance::kBnScale ? "bn" : "taylor";
}

namespace {

// The unit each layer's output channels belong to ("" for the classifier).
std::map<std::string, std::string> UnitOfLayer(const ModelSpec& spec) {
  std::map<std::string, std::string> m;
  for (const Unit& u : Units(spec))
    for (const std::string& l : u.layers) m[l] = u.name;
  return m;
}

torch::Tensor Param(nn::NetImpl& net, const std::string& name) {
  // The dictionary must outlive the lookup: find() points into it (AddressSanitizer
  // caught a read after the temporary was freed).
  const auto params = net.named_parameters();
  const auto* p = params.find(name);
  if (!p) throw std::logic_error("no parameter " + name);
  return *p;
}

// Per output channel of each conv/linear layer: the score `score(layer)` gives.
std::map<std::string, std::vector<double>> SumOverUnits(
    nn::NetImpl& net, const std::function<torch::Tensor(const Layer&)>& score) {
  std::map<std::string, std::vector<double>> out;
  auto unit_of = UnitOfLayer(net.spec());
  for (const Layer& l : net.spec().Layers()) {
    auto it = unit_of.find(l.name);
    if (l.name.empty() || it == unit_of.end()) continue;
    torch::Tensor s = score(l).to(torch::kDouble).contiguous();
    auto& acc = out[it->second];
    acc.resize(s.numel(), 0.0);
    for (int64_t c = 0; c < s.numel(); ++c) acc[c] += s.data_ptr<double>()[c];
  }
  return out;
}

}  // namespace

std::map<std::string, std::vector<double>> ChannelImportance(nn::NetImpl& net, Importance kind,
                                                             const nn::Dataset* data, int batches) {
  if (net.fused()) throw std::logic_error("ChannelImportance needs an unfused net");
  torch::NoGradGuard no_grad;
  auto l1 = [&](const Layer& l) {
    auto w =
        Param(net, l.kind == Layer::Kind::kConv ? l.name + ".conv.weight" : l.name + ".weight");
    return w.abs().flatten(1).sum(1);
  };
  if (kind == Importance::kL1) return SumOverUnits(net, l1);
  if (kind == Importance::kBnScale)
    return SumOverUnits(net, [&](const Layer& l) {
      return l.kind == Layer::Kind::kConv ? Param(net, l.name + ".bn.weight").abs() : l1(l);
    });
  if (!data || data->train.count == 0) throw UserError("Taylor importance needs training data");
  // Molchanov et al. 2019: (gamma * dL/dgamma + beta * dL/dbeta)^2 per BN channel,
  // (sum over the row of w * dL/dw)^2 for the fc, accumulated over batches.
  std::map<std::string, torch::Tensor> saved;
  for (const auto& b : net.named_buffers()) saved[b.key()] = b.value().clone();
  std::map<std::string, torch::Tensor> acc;
  auto score = [&](const Layer& l) {
    if (l.kind == Layer::Kind::kConv) {
      auto g = Param(net, l.name + ".bn.weight"), b = Param(net, l.name + ".bn.bias");
      return (g * g.grad() + b * b.grad()).pow(2);
    }
    auto w = Param(net, l.name + ".weight");
    return (w * w.grad()).sum(1).pow(2);
  };
  net.train();
  const int64_t bs = 64;
  for (int i = 0; i < batches; ++i) {
    int64_t begin = (i * bs) % std::max<int64_t>(1, data->train.count - bs);
    auto x = nn::ToTensor(data->train, begin, std::min(begin + bs, data->train.count));
    auto y = nn::LabelsTensor(data->train, begin, std::min(begin + bs, data->train.count));
    net.zero_grad();
    {
      torch::AutoGradMode grad(true);
      torch::nn::functional::cross_entropy(net.forward(x), y).backward();
    }
    for (auto& [unit, v] : SumOverUnits(net, score)) {
      auto t = torch::tensor(v, torch::kDouble);
      acc[unit] = acc.count(unit) ? acc[unit] + t : t;
    }
  }
  net.zero_grad();
  net.eval();
  for (auto& b : net.named_buffers()) b.value().copy_(saved.at(b.key()));
  std::map<std::string, std::vector<double>> out;
  for (auto& [unit, t] : acc)
    out[unit] = std::vector<double>(t.data_ptr<double>(), t.data_ptr<double>() + t.numel());
  return out;
}

nn::Net PruneChannels(nn::NetImpl& net, const std::map<std::string, std::vector<int64_t>>& keep) {
  if (net.fused()) throw std::logic_error("PruneChannels needs an unfused net");
  const ModelSpec& spec = net.spec();
  ModelSpec target = spec;
  for (const auto& [unit, idx] : keep) {
    if (idx.empty()) throw UserError("cannot prune unit " + unit + " to zero channels");
    target = WithUnitWidth(target, unit, static_cast<int>(idx.size()));
  }
  // Kept channel indices of every value of the graph (value 0: the input).
  auto unit_of = UnitOfLayer(spec);
  std::vector<Layer> layers = spec.Layers();
  auto all = [](int n) {
    std::vector<int64_t> v(n);
    std::iota(v.begin(), v.end(), 0);
    return torch::tensor(v, torch::kInt64);
  };
  std::vector<torch::Tensor> value = {all(spec.channels)};
  std::map<std::string, std::pair<torch::Tensor, torch::Tensor>> io;  // layer -> (out, in)
  for (const Layer& l : layers) {
    torch::Tensor out;
    if (l.kind == Layer::Kind::kConv || l.kind == Layer::Kind::kLinear) {
      auto u = unit_of.find(l.name);
      auto k = u == unit_of.end() ? keep.end() : keep.find(u->second);
      if (k == keep.end()) {
        out = all(l.out_ch);
      } else {
        for (int64_t c : k->second)
          if (c < 0 || c >= l.out_ch)
            throw UserError("channel " + std::to_string(c) + " out of range for unit " + k->first);
        out = torch::tensor(k->second, torch::kInt64);
        if (std::get<0>(at::_unique(out)).numel() != out.numel())
          throw UserError("duplicate channels for unit " + k->first);
      }
      io[l.name] = {out, value[l.input]};
    } else {
      out = value[l.input];
    }
    value.push_back(out);
  }
  nn::Net pruned(target);
  torch::NoGradGuard g;
  auto copy = [&](const std::string& name, torch::Tensor dst, const torch::Tensor& src) {
    std::string layer = name.substr(0, name.find('.'));
    auto it = io.find(layer);
    if (it == io.end()) throw std::logic_error("PruneChannels: no layer for " + name);
    torch::Tensor v = src;
    if (v.dim() >= 1) v = v.index_select(0, it->second.first);
    if (v.dim() >= 2) v = v.index_select(1, it->second.second);
    dst.copy_(v);
  };
  auto src_params = net.named_parameters();
  for (auto& p : pruned->named_parameters()) copy(p.key(), p.value(), src_params[p.key()]);
  auto src_buffers = net.named_buffers();
  for (auto& b : pruned->named_buffers()) copy(b.key(), b.value(), src_buffers[b.key()]);
  pruned->eval();
  return pruned;
}

nn::Net PruneTo(nn::NetImpl& net, const ModelSpec& target,
                const std::map<std::string, std::vector<double>>& importance) {
  std::map<std::string, std::vector<int64_t>> keep;
  std::vector<Unit> now = Units(net.spec()), want = Units(target);
  if (now.size() != want.size())
    throw UserError("cannot prune " + net.spec().Summary() + " to " + target.Summary());
  for (size_t i = 0; i < now.size(); ++i) {
    if (want[i].width > now[i].width)
      throw UserError("cannot prune " + net.spec().Summary() + " to the wider " + target.Summary());
    if (want[i].width == now[i].width) continue;
    const std::vector<double>& score = importance.at(now[i].name);
    std::vector<int64_t> order(score.size());
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(),
                     [&](int64_t a, int64_t b) { return score[a] > score[b]; });
    order.resize(want[i].width);
    std::sort(order.begin(), order.end());
    keep[now[i].name] = order;
  }
  nn::Net out = PruneChannels(net, keep);
  if (!(out->spec() == target))
    throw UserError("cannot prune " + net.spec().Summary() + " to " + target.Summary());
  return out;
}

}  // namespace da::prune
