#include "nn/model.h"

#include <algorithm>
#include <sstream>
#include <thread>

#include "common/error.h"
#include "common/fs.h"
#include "nn/dataset.h"

namespace da::nn {

NetImpl::NetImpl(const ModelSpec& spec, bool fused) : spec_(spec), fused_(fused) {
  spec_.Validate();
  layers_ = spec_.Layers();
  conv_.resize(layers_.size(), nullptr);
  bn_.resize(layers_.size(), nullptr);
  linear_.resize(layers_.size(), nullptr);
  last_use_.assign(layers_.size() + 1, -1);
  for (size_t i = 0; i < layers_.size(); ++i) {
    const Layer& l = layers_[i];
    last_use_[l.input] = static_cast<int>(i);
    if (l.input2 >= 0) last_use_[l.input2] = static_cast<int>(i);
    if (l.kind == Layer::Kind::kConv) {
      auto opts = torch::nn::Conv2dOptions(l.in_ch, l.out_ch, l.kernel)
                      .stride(l.stride)
                      .padding(l.kernel / 2)
                      .bias(fused_);
      if (fused_) {
        conv_[i] = register_module(l.name, torch::nn::Conv2d(opts));
      } else {
        auto holder = register_module(l.name, std::make_shared<torch::nn::Module>());
        conv_[i] = holder->register_module("conv", torch::nn::Conv2d(opts));
        bn_[i] = holder->register_module("bn", torch::nn::BatchNorm2d(l.out_ch));
        torch::NoGradGuard g;
        torch::nn::init::kaiming_normal_(conv_[i]->weight, 0.0, torch::kFanOut, torch::kReLU);
        // Zero-init the last BN of each residual branch: blocks start as identities.
        if (spec_.family == Family::kResnet && l.name.ends_with("_c2")) bn_[i]->weight.zero_();
      }
    } else if (l.kind == Layer::Kind::kLinear) {
      linear_[i] = register_module(l.name, torch::nn::Linear(l.in_ch, l.out_ch));
    }
  }
}

torch::Tensor NetImpl::forward(torch::Tensor x) {
  if (x.dim() != 4 || x.size(1) != spec_.channels || x.size(2) != spec_.height ||
      x.size(3) != spec_.width)
    throw UserError("input of shape " + c10::str(x.sizes()) + " does not match model input [N, " +
                    std::to_string(spec_.channels) + ", " + std::to_string(spec_.height) + ", " +
                    std::to_string(spec_.width) + "]");
  const bool mkldnn = !mkldnn_weight_.empty();
  std::vector<torch::Tensor> v(layers_.size() + 1);
  v[0] = mkldnn ? x.contiguous().to_mkldnn() : std::move(x);
  for (size_t i = 0; i < layers_.size(); ++i) {
    const Layer& l = layers_[i];
    torch::Tensor y;
    switch (l.kind) {
      case Layer::Kind::kConv:
        if (mkldnn) {
          const int64_t p = l.kernel / 2, st = l.stride;
          y = at::mkldnn_convolution(v[l.input], mkldnn_weight_[i], conv_[i]->bias, {p, p},
                                     {st, st}, {1, 1}, 1);
        } else {
          y = conv_[i]->forward(v[l.input]);
        }
        if (!fused_) y = bn_[i]->forward(y);
        if (l.relu) y = torch::relu_(y);
        break;
      case Layer::Kind::kMaxPool:
        y = torch::max_pool2d(v[l.input], 2, 2);
        break;
      case Layer::Kind::kAdd:
        y = v[l.input] + v[l.input2];
        if (l.relu) y = torch::relu_(y);
        break;
      case Layer::Kind::kGlobalAvgPool:
        y = (mkldnn ? v[l.input].to_dense() : v[l.input]).mean({2, 3});
        break;
      case Layer::Kind::kLinear:
        y = linear_[i]->forward(v[l.input]);
        if (l.relu) y = torch::relu_(y);
        break;
    }
    // Drop activations nobody reads any more (keeps inference memory small).
    if (last_use_[l.input] == static_cast<int>(i)) v[l.input] = torch::Tensor();
    if (l.input2 >= 0 && last_use_[l.input2] == static_cast<int>(i)) v[l.input2] = torch::Tensor();
    v[i + 1] = std::move(y);
  }
  return v.back();
}

void NetImpl::ToChannelsLast() {
  torch::NoGradGuard g;
  for (auto& p : parameters())
    if (p.dim() == 4) p.set_data(p.contiguous(torch::MemoryFormat::ChannelsLast));
}

void NetImpl::ToMkldnn() {
  if (!fused_) throw std::logic_error("ToMkldnn: only fused nets run on oneDNN tensors");
  torch::NoGradGuard g;
  mkldnn_weight_.assign(layers_.size(), torch::Tensor());
  for (size_t i = 0; i < layers_.size(); ++i) {
    const Layer& l = layers_[i];
    if (l.kind != Layer::Kind::kConv) continue;
    const int64_t p = l.kernel / 2, st = l.stride;
    mkldnn_weight_[i] = at::mkldnn_reorder_conv2d_weight(conv_[i]->weight.contiguous().to_mkldnn(),
                                                         {p, p}, {st, st}, {1, 1}, 1);
  }
}

Net Fuse(NetImpl& net) {
  if (net.fused()) throw std::logic_error("Fuse: net is already fused");
  Net out(net.spec(), /*fused=*/true);
  out->eval();
  torch::NoGradGuard g;
  auto src = net.named_parameters();
  auto buf = net.named_buffers();
  auto dst = out->named_parameters();
  for (const Layer& l : net.spec().Layers()) {
    if (l.kind == Layer::Kind::kConv) {
      auto w = src[l.name + ".conv.weight"].contiguous();
      auto gamma = src[l.name + ".bn.weight"], beta = src[l.name + ".bn.bias"];
      auto mean = buf[l.name + ".bn.running_mean"], var = buf[l.name + ".bn.running_var"];
      auto scale = gamma / torch::sqrt(var + 1e-5);  // BatchNorm2d's default eps
      dst[l.name + ".weight"].copy_(w * scale.view({-1, 1, 1, 1}));
      dst[l.name + ".bias"].copy_(beta - mean * scale);
    } else if (l.kind == Layer::Kind::kLinear) {
      dst[l.name + ".weight"].copy_(src[l.name + ".weight"]);
      dst[l.name + ".bias"].copy_(src[l.name + ".bias"]);
    }
  }
  return out;
}

Net PrepareForInference(NetImpl& net) {
  Net out = Fuse(net);
  out->ToMkldnn();
  return out;
}

void SetThreads(int threads) {
  if (threads <= 0) threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  torch::set_num_threads(threads);
}

namespace {
// A uint8 view of images [begin, end) shaped `[N] + rest`; no copy.
torch::Tensor Blob(const Images& images, const std::vector<uint8_t>& bytes, int64_t per_image,
                   int64_t begin, int64_t end, std::vector<int64_t> shape) {
  if (end < 0 || end > images.count) end = images.count;
  begin = std::clamp<int64_t>(begin, 0, end);
  shape.insert(shape.begin(), end - begin);
  return torch::from_blob(const_cast<uint8_t*>(bytes.data()) + begin * per_image, shape,
                          torch::kUInt8);
}
}  // namespace

torch::Tensor ToTensor(const Images& images, int64_t begin, int64_t end) {
  return Blob(images, images.pixels, images.PixelsPerImage(), begin, end,
              {images.channels, images.height, images.width})
      .to(torch::kFloat32)
      .div_(255.0f);
}

torch::Tensor LabelsTensor(const Images& images, int64_t begin, int64_t end) {
  return Blob(images, images.labels, 1, begin, end, {}).to(torch::kInt64);
}

void SaveWeights(NetImpl& net, const std::string& path) {
  torch::serialize::OutputArchive archive;
  {
    torch::NoGradGuard g;
    for (const auto& p : net.named_parameters()) archive.write(p.key(), p.value().contiguous());
    for (const auto& b : net.named_buffers()) archive.write(b.key(), b.value().contiguous(), true);
  }
  std::ostringstream os;
  archive.save_to(os);
  WriteFileAtomic(path, os.str());
}

void LoadWeights(NetImpl& net, const std::string& path) {
  torch::serialize::InputArchive archive;
  try {
    std::string bytes = ReadFile(path);
    std::istringstream is(bytes);
    archive.load_from(is);
  } catch (const c10::Error& e) {
    throw UserError(path + ": corrupt weights file (" + e.what_without_backtrace() + ")");
  }
  torch::NoGradGuard g;
  auto load = [&](const std::string& name, torch::Tensor& dst, bool buffer) {
    torch::Tensor t;
    try {
      archive.read(name, t, buffer);
    } catch (const c10::Error&) {
      throw UserError(path + ": has no tensor '" + name + "' (weights do not match spec.json)");
    }
    if (!t.sizes().equals(dst.sizes()) || t.scalar_type() != dst.scalar_type())
      throw UserError(path + ": tensor '" + name + "' has shape " + c10::str(t.sizes()) +
                      ", spec needs " + c10::str(dst.sizes()));
    if (!torch::isfinite(t).all().item<bool>())
      throw UserError(path + ": tensor '" + name + "' holds NaN or infinite values");
    dst.copy_(t);
  };
  for (auto& p : net.named_parameters()) load(p.key(), p.value(), false);
  for (auto& b : net.named_buffers()) load(b.key(), b.value(), true);
}

}  // namespace da::nn
