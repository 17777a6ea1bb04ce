#include "nn/onnx_export.h"

#include <onnx/checker.h>
#include <onnx/onnx_pb.h>

#include <algorithm>
#include <functional>

#include "common/error.h"
#include "common/fs.h"

namespace da::nn {
namespace {

constexpr int kOpset = 13;

void SetShape(onnx::ValueInfoProto* v, const std::string& name, std::vector<int64_t> dims) {
  v->set_name(name);
  auto* t = v->mutable_type()->mutable_tensor_type();
  t->set_elem_type(onnx::TensorProto::FLOAT);
  auto* shape = t->mutable_shape();
  shape->add_dim()->set_dim_param("N");
  for (int64_t d : dims) shape->add_dim()->set_dim_value(d);
}

void AddInts(onnx::NodeProto* n, const std::string& name, std::vector<int64_t> values) {
  auto* a = n->add_attribute();
  a->set_name(name);
  a->set_type(onnx::AttributeProto::INTS);
  for (int64_t v : values) a->add_ints(v);
}

void AddInt(onnx::NodeProto* n, const std::string& name, int64_t value) {
  auto* a = n->add_attribute();
  a->set_name(name);
  a->set_type(onnx::AttributeProto::INT);
  a->set_i(value);
}

// Tensor data by parameter name; nullptr means "zeros" (for size computation).
using Weights = std::function<const float*(const std::string& name)>;

void AddInitializer(onnx::GraphProto* g, const std::string& name, std::vector<int64_t> dims,
                    const Weights& weights) {
  auto* t = g->add_initializer();
  t->set_name(name);
  t->set_data_type(onnx::TensorProto::FLOAT);
  int64_t count = 1;
  for (int64_t d : dims) t->add_dims(d), count *= d;
  const float* data = weights(name);
  std::string raw(static_cast<size_t>(count) * sizeof(float), '\0');
  if (data) std::memcpy(raw.data(), data, raw.size());  // x86-64 is little-endian, as ONNX wants
  t->set_raw_data(std::move(raw));
}

// A graph of `layers` (numbered as in ModelSpec::Layers) reading "input" (and
// "input2" for value -1) of `in_dims`, writing "logits" of `out_dims` (both without N).
onnx::ModelProto BuildModel(const std::string& name, const std::vector<Layer>& layers,
                            std::vector<int64_t> in_dims, std::vector<int64_t> out_dims,
                            const Weights& weights) {
  onnx::ModelProto m;
  m.set_ir_version(8);
  m.set_producer_name("deepadapter");
  m.set_producer_version("0.1");
  m.add_opset_import()->set_version(kOpset);
  auto* g = m.mutable_graph();
  g->set_name(name);
  SetShape(g->add_input(), "input", in_dims);
  auto value = [&](int id) {
    if (id == 0) return std::string("input");
    if (id == -1) return std::string("input2");
    if (id == static_cast<int>(layers.size())) return std::string("logits");
    return "v" + std::to_string(id);
  };
  for (const Layer& l : layers)
    if (l.kind == Layer::Kind::kAdd && l.input2 == -1) SetShape(g->add_input(), "input2", in_dims);
  for (size_t i = 0; i < layers.size(); ++i) {
    const Layer& l = layers[i];
    std::string out = value(static_cast<int>(i) + 1);
    std::string body = l.relu ? out + "_pre" : out;
    auto node = [&](const std::string& op, std::vector<std::string> in, const std::string& o) {
      auto* n = g->add_node();
      n->set_op_type(op);
      n->set_name(l.name.empty() ? o : l.name + "_" + op);
      for (auto& s : in) n->add_input(s);
      n->add_output(o);
      return n;
    };
    switch (l.kind) {
      case Layer::Kind::kConv: {
        AddInitializer(g, l.name + ".weight", {l.out_ch, l.in_ch, l.kernel, l.kernel}, weights);
        AddInitializer(g, l.name + ".bias", {l.out_ch}, weights);
        auto* n = node("Conv", {value(l.input), l.name + ".weight", l.name + ".bias"}, body);
        AddInts(n, "kernel_shape", {l.kernel, l.kernel});
        AddInts(n, "strides", {l.stride, l.stride});
        int64_t p = l.kernel / 2;
        AddInts(n, "pads", {p, p, p, p});
        break;
      }
      case Layer::Kind::kMaxPool: {
        auto* n = node("MaxPool", {value(l.input)}, body);
        AddInts(n, "kernel_shape", {2, 2});
        AddInts(n, "strides", {2, 2});
        break;
      }
      case Layer::Kind::kAdd:
        node("Add", {value(l.input), value(l.input2)}, body);
        break;
      case Layer::Kind::kGlobalAvgPool:
        node("GlobalAveragePool", {value(l.input)}, out + "_pool");
        AddInt(node("Flatten", {out + "_pool"}, body), "axis", 1);
        break;
      case Layer::Kind::kLinear: {
        AddInitializer(g, l.name + ".weight", {l.out_ch, l.in_ch}, weights);
        AddInitializer(g, l.name + ".bias", {l.out_ch}, weights);
        AddInt(node("Gemm", {value(l.input), l.name + ".weight", l.name + ".bias"}, body), "transB",
               1);
        break;
      }
    }
    if (l.relu) node("Relu", {body}, out);
  }
  SetShape(g->add_output(), "logits", out_dims);
  return m;
}

onnx::ModelProto BuildModel(const ModelSpec& spec, const Weights& weights) {
  return BuildModel("deepadapter_" + FamilyName(spec.family), spec.Layers(),
                    {spec.channels, spec.height, spec.width}, {spec.classes}, weights);
}

std::string Serialize(const onnx::ModelProto& m) {
  try {
    onnx::checker::check_model(m);
  } catch (const std::exception& e) {
    throw std::logic_error(std::string("exported model fails the ONNX checker: ") + e.what());
  }
  std::string bytes;
  if (!m.SerializeToString(&bytes)) throw std::logic_error("cannot serialize ONNX model");
  return bytes;
}

}  // namespace

std::string OnnxModelBytes(NetImpl& net) {
  Net fused = nullptr;
  NetImpl* src = &net;
  if (!net.fused()) {
    fused = Fuse(net);
    src = fused.get();
  }
  std::map<std::string, torch::Tensor> params;
  for (const auto& p : src->named_parameters()) params[p.key()] = p.value().detach().contiguous();
  onnx::ModelProto m = BuildModel(src->spec(), [&](const std::string& name) -> const float* {
    auto it = params.find(name);
    if (it == params.end()) throw std::logic_error("export: no parameter " + name);
    return it->second.data_ptr<float>();
  });
  return Serialize(m);
}

std::string OnnxModelBytes(const ModelSpec& spec, float fill) {
  spec.Validate();
  size_t weights = 0;
  for (const Layer& l : spec.Layers())
    weights = std::max(weights,
                       static_cast<size_t>(l.in_ch) * l.out_ch * std::max(1, l.kernel * l.kernel));
  std::vector<float> data(weights, fill);
  return Serialize(BuildModel(spec, [&](const std::string&) { return data.data(); }));
}

std::string OnnxLayerBytes(std::vector<Layer> chain, int in_h, int in_w) {
  if (chain.empty()) throw std::logic_error("OnnxLayerBytes: no layers");
  const Layer &first = chain.front(), &last = chain.back();
  std::vector<int64_t> in = {first.in_ch, in_h, in_w}, out = {last.out_ch, last.out_h, last.out_w};
  if (first.kind == Layer::Kind::kLinear) in = {first.in_ch};
  if (last.kind == Layer::Kind::kLinear || last.kind == Layer::Kind::kGlobalAvgPool)
    out = {last.out_ch};
  size_t weights = 0;
  for (size_t i = 0; i < chain.size(); ++i) {
    Layer& l = chain[i];
    l.input = static_cast<int>(i);
    l.input2 = l.kind == Layer::Kind::kAdd ? -1 : l.input2;
    if (l.name.empty()) l.name = "layer" + std::to_string(i);
    weights = std::max(weights,
                       static_cast<size_t>(l.in_ch) * l.out_ch * std::max(1, l.kernel * l.kernel));
  }
  // Non-zero weights, so no runtime can take a shortcut on zeros.
  std::vector<float> fill(weights, 0.01f);
  return Serialize(
      BuildModel("layers", chain, in, out, [&](const std::string&) { return fill.data(); }));
}

void ExportOnnx(NetImpl& net, const std::string& path) {
  WriteFileAtomic(path, OnnxModelBytes(net));
}

int64_t OnnxBytes(const ModelSpec& spec) {
  spec.Validate();
  return static_cast<int64_t>(
      BuildModel(spec, [](const std::string&) { return nullptr; }).ByteSizeLong());
}

}  // namespace da::nn
