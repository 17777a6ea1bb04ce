#include "engine/graph.h"

#include <algorithm>
#include <cstring>
#include <set>
#include <unordered_map>

#include "common/error.h"
#include "engine/onnx_reader.h"

namespace da::engine {

namespace {

constexpr size_t kMaxFileBytes = 512u << 20;
constexpr int64_t kMaxDim = 1 << 16;  // any one dimension

std::string Dims(const std::vector<int64_t>& d) {
  std::string s = "[";
  for (size_t i = 0; i < d.size(); ++i) s += (i ? ", " : "") + std::to_string(d[i]);
  return s + "]";
}

[[noreturn]] void Fail(const std::string& node, const std::string& what) {
  throw UserError("ONNX model: node " + node + ": " + what);
}

const char* KindName(Op::Kind k) {
  switch (k) {
    case Op::kConv:
      return "Conv";
    case Op::kMaxPool:
      return "MaxPool";
    case Op::kGlobalAvgPool:
      return "GlobalAveragePool";
    case Op::kFlatten:
      return "Flatten";
    case Op::kGemm:
      return "Gemm";
    case Op::kAdd:
      return "Add";
    case Op::kRelu:
      return "Relu";
  }
  return "?";
}

// The float32 data of an initializer, checked against its declared dims.
std::vector<float> FloatData(const onnx::Tensor& t, const std::string& node) {
  const std::string what = "initializer '" + t.name + "'";
  if (t.data_type != onnx::kFloat) Fail(node, what + " is not float32");
  if (t.data_location != 0) Fail(node, what + " is stored outside the file");
  int64_t n = 1;
  for (int64_t d : t.dims) {
    if (d < 1 || d > kMaxElements) Fail(node, what + ": dimension " + std::to_string(d));
    n *= d;
    if (n > kMaxElements)
      Fail(node, what + ": more than " + std::to_string(kMaxElements) + " values");
  }
  std::vector<float> v(static_cast<size_t>(n));
  if (t.has_raw) {
    if (t.raw.size() != v.size() * sizeof(float))
      Fail(node, what + ": " + std::to_string(t.raw.size()) + " bytes of data for " +
                     std::to_string(n) + " floats");
    std::memcpy(v.data(), t.raw.data(), t.raw.size());
  } else {
    if (int64_t(t.floats.size()) != n)
      Fail(node,
           what + ": " + std::to_string(t.floats.size()) + " values for " + std::to_string(n));
    v = t.floats;
  }
  return v;
}

const std::vector<int64_t>& InitDims(const onnx::Tensor& t) { return t.dims; }

}  // namespace

Graph Parse(const std::string& bytes) {
  if (bytes.size() > kMaxFileBytes)
    throw UserError("ONNX model: " + std::to_string(bytes.size()) + " bytes; at most " +
                    std::to_string(kMaxFileBytes));
  const onnx::Model m = onnx::Read(bytes);
  int64_t opset = -1;
  for (const auto& [domain, version] : m.opsets)
    if (domain.empty() || domain == "ai.onnx") opset = version;
  if (opset < 11 || opset > 21)
    throw UserError("ONNX model: opset " + std::to_string(opset) + "; the engine reads 11 to 21");
  const auto& g = m.graph;

  std::unordered_map<std::string, const onnx::Tensor*> init;
  for (const auto& t : g.initializers) init[t.name] = &t;

  Graph out;
  std::unordered_map<std::string, int> tensor;  // name -> id
  // The input: the one graph input that is not an initializer.
  for (const auto& in : g.inputs) {
    if (init.count(in.name)) continue;
    if (!out.tensors.empty()) throw UserError("ONNX model: more than one input");
    if (!in.has_tensor_type || in.elem_type != onnx::kFloat)
      throw UserError("ONNX model: input '" + in.name + "' is not a float32 tensor");
    if (in.dims.size() != 4)
      throw UserError("ONNX model: input '" + in.name + "' is not [N, C, H, W]");
    std::vector<int64_t> dims;
    for (size_t i = 1; i < 4; ++i) {
      const auto& d = in.dims[i];
      if (!d.has_value || d.value < 1 || d.value > kMaxDim)
        throw UserError("ONNX model: input '" + in.name + "' dimension " + std::to_string(i) +
                        " is not a size in [1, " + std::to_string(kMaxDim) + "]");
      dims.push_back(d.value);
    }
    if (Elements(dims) > kMaxElements)
      throw UserError("ONNX model: input of " + Dims(dims) + " is too large");
    tensor[in.name] = 0;
    out.tensors.push_back(dims);
  }
  if (out.tensors.empty()) throw UserError("ONNX model: no input");
  if (g.outputs.size() != 1) throw UserError("ONNX model: not exactly one output");

  for (size_t i = 0; i < g.nodes.size(); ++i) {
    const onnx::Node& n = g.nodes[i];
    const std::string name =
        "'" + (n.name.empty() ? "#" + std::to_string(i) : n.name) + "' (" + n.op_type + ")";
    if (!n.domain.empty() && n.domain != "ai.onnx") Fail(name, "domain '" + n.domain + "'");
    Op op;
    op.name = name;
    static const std::unordered_map<std::string, Op::Kind> kinds = {
        {"Conv", Op::kConv},
        {"MaxPool", Op::kMaxPool},
        {"GlobalAveragePool", Op::kGlobalAvgPool},
        {"Flatten", Op::kFlatten},
        {"Gemm", Op::kGemm},
        {"Add", Op::kAdd},
        {"Relu", Op::kRelu}};
    auto k = kinds.find(n.op_type);
    if (k == kinds.end()) Fail(name, "operator '" + n.op_type + "' is not supported");
    op.kind = k->second;
    if (n.outputs.size() != 1 || n.outputs[0].empty()) Fail(name, "not exactly one output");
    if (tensor.count(n.outputs[0]) || init.count(n.outputs[0]))
      Fail(name, "output '" + n.outputs[0] + "' is defined twice");
    const int inputs = static_cast<int>(n.inputs.size());
    // Inputs: tensors computed before, or initializers where weights go.
    auto input = [&](int k) -> int {
      if (k >= inputs || n.inputs[size_t(k)].empty())
        Fail(name, "input " + std::to_string(k) + " is missing");
      auto it = tensor.find(n.inputs[size_t(k)]);
      if (it == tensor.end())
        Fail(name, "input '" + n.inputs[size_t(k)] + "' is not computed before this node");
      return it->second;
    };
    auto weight = [&](int k) -> const onnx::Tensor& {
      if (k >= inputs) Fail(name, "input " + std::to_string(k) + " is missing");
      auto it = init.find(n.inputs[size_t(k)]);
      if (it == init.end())
        Fail(name, "input '" + n.inputs[size_t(k)] + "' is not an initializer");
      return *it->second;
    };
    // Attributes: only those we know, with the values we support.
    std::unordered_map<std::string, const onnx::Attribute*> attr;
    for (const auto& a : n.attributes) attr[a.name] = &a;
    auto ints = [&](const std::string& a, std::vector<int64_t> def, size_t count) {
      auto it = attr.find(a);
      if (it == attr.end()) return def;
      if (it->second->type != onnx::kAttrInts || it->second->ints.size() != count)
        Fail(name, "attribute " + a + " is not " + std::to_string(count) + " integers");
      const std::vector<int64_t>& v = it->second->ints;
      for (int64_t x : v)
        if (x < 0 || x > kMaxDim) Fail(name, "attribute " + a + " has value " + std::to_string(x));
      return v;
    };
    auto one = [&](const std::string& a, int64_t def) {
      auto it = attr.find(a);
      if (it == attr.end()) return def;
      if (it->second->type != onnx::kAttrInt) Fail(name, "attribute " + a + " is not an integer");
      return it->second->i;
    };
    auto allow = [&](std::set<std::string> known) {
      for (const auto& [a, p] : attr)
        if (!known.count(a)) Fail(name, "attribute " + a + " is not supported");
      if (attr.count("auto_pad")) {
        const auto* p = attr["auto_pad"];
        if (p->type != onnx::kAttrString || p->s != "NOTSET")
          Fail(name, "auto_pad other than NOTSET is not supported");
      }
    };
    auto dims_of = [&](int t) -> const std::vector<int64_t>& { return out.tensors[size_t(t)]; };
    std::vector<int64_t> od;
    // Conv and MaxPool: the window's geometry.
    auto window = [&](const std::vector<int64_t>& in, int64_t kh, int64_t kw) {
      if (in.size() != 4 - 1) Fail(name, "input " + Dims(in) + " is not [C, H, W]");
      const auto s = ints("strides", {1, 1}, 2), p = ints("pads", {0, 0, 0, 0}, 4),
                 d = ints("dilations", {1, 1}, 2);
      if (d[0] != 1 || d[1] != 1) Fail(name, "dilations other than 1 are not supported");
      if (s[0] < 1 || s[1] < 1) Fail(name, "strides must be at least 1");
      op.kh = kh, op.kw = kw, op.sh = s[0], op.sw = s[1];
      op.pt = p[0], op.pl = p[1], op.pb = p[2], op.pr = p[3];
      if (op.pt >= kh || op.pb >= kh || op.pl >= kw || op.pr >= kw)
        Fail(name, "pads must be smaller than the kernel");
      const int64_t h = in[1] + op.pt + op.pb - kh, w = in[2] + op.pl + op.pr - kw;
      if (h < 0 || w < 0)
        Fail(name, "kernel " + Dims({kh, kw}) + " is larger than the input " + Dims(in));
      return std::vector<int64_t>{h / op.sh + 1, w / op.sw + 1};
    };
    switch (op.kind) {
      case Op::kConv: {
        allow({"kernel_shape", "strides", "pads", "dilations", "group", "auto_pad"});
        if (one("group", 1) != 1) Fail(name, "group other than 1 is not supported");
        op.in = input(0);
        const auto& wt = weight(1);
        const auto wd = InitDims(wt), in = dims_of(op.in);
        if (wd.size() != 4 || in.size() != 3 || wd[1] != in[0])
          Fail(name, "weight " + Dims(wd) + " does not fit the input " + Dims(in));
        if (ints("kernel_shape", {wd[2], wd[3]}, 2) != std::vector<int64_t>{wd[2], wd[3]})
          Fail(name, "kernel_shape differs from the weight's " + Dims(wd));
        op.oc = wd[0];
        op.w = FloatData(wt, name);
        const auto hw = window(in, wd[2], wd[3]);
        if (inputs > 2 && !n.inputs[2].empty()) {
          const auto& bt = weight(2);
          if (InitDims(bt) != std::vector<int64_t>{op.oc})
            Fail(name, "bias " + Dims(InitDims(bt)) + " is not [" + std::to_string(op.oc) + "]");
          op.b = FloatData(bt, name);
        }
        od = {op.oc, hw[0], hw[1]};
        break;
      }
      case Op::kMaxPool: {
        allow({"kernel_shape", "strides", "pads", "dilations", "ceil_mode", "storage_order",
               "auto_pad"});
        if (one("ceil_mode", 0) != 0) Fail(name, "ceil_mode is not supported");
        if (one("storage_order", 0) != 0) Fail(name, "storage_order is not supported");
        if (!attr.count("kernel_shape")) Fail(name, "kernel_shape is missing");
        const auto ks = ints("kernel_shape", {}, 2);
        if (ks[0] < 1 || ks[1] < 1) Fail(name, "kernel_shape must be at least 1");
        op.in = input(0);
        const auto& in = dims_of(op.in);
        const auto hw = window(in, ks[0], ks[1]);
        od = {in[0], hw[0], hw[1]};
        break;
      }
      case Op::kGlobalAvgPool: {
        allow({});
        op.in = input(0);
        const auto& in = dims_of(op.in);
        if (in.size() != 3) Fail(name, "input " + Dims(in) + " is not [C, H, W]");
        op.kh = in[1], op.kw = in[2];
        od = {in[0], 1, 1};
        break;
      }
      case Op::kFlatten: {
        allow({"axis"});
        if (one("axis", 1) != 1) Fail(name, "axis other than 1 is not supported");
        op.in = input(0);
        od = {Elements(dims_of(op.in))};
        break;
      }
      case Op::kGemm: {
        allow({"alpha", "beta", "transA", "transB"});
        for (const char* a : {"alpha", "beta"})
          if (attr.count(a) &&
              (attr[a]->type != onnx::kAttrFloat || attr[a]->f != 1.0f))
            Fail(name, std::string(a) + " other than 1 is not supported");
        if (one("transA", 0) != 0) Fail(name, "transA is not supported");
        const int64_t trans = one("transB", 0);
        op.in = input(0);
        const auto& in = dims_of(op.in);
        if (in.size() != 1) Fail(name, "input " + Dims(in) + " is not [K] (Flatten first)");
        const auto& wt = weight(1);
        const auto wd = InitDims(wt);
        if (wd.size() != 2 || wd[trans ? 1 : 0] != in[0])
          Fail(name, "weight " + Dims(wd) + " does not fit the input " + Dims(in) +
                         (trans ? " (transB)" : ""));
        op.oc = wd[trans ? 0 : 1];
        op.w = FloatData(wt, name);
        if (!trans) {  // to [OC, K]
          std::vector<float> t(op.w.size());
          for (int64_t k = 0; k < in[0]; ++k)
            for (int64_t o = 0; o < op.oc; ++o)
              t[size_t(o * in[0] + k)] = op.w[size_t(k * op.oc + o)];
          op.w.swap(t);
        }
        if (inputs > 2 && !n.inputs[2].empty()) {
          const auto& bt = weight(2);
          const auto bd = InitDims(bt);
          if (bd != std::vector<int64_t>{op.oc} && bd != std::vector<int64_t>{1, op.oc})
            Fail(name, "bias " + Dims(bd) + " is not [" + std::to_string(op.oc) + "]");
          op.b = FloatData(bt, name);
        }
        od = {op.oc};
        break;
      }
      case Op::kAdd: {
        allow({});
        op.in = input(0), op.in2 = input(1);
        if (dims_of(op.in) != dims_of(op.in2))
          Fail(name,
               "shapes " + Dims(dims_of(op.in)) + " and " + Dims(dims_of(op.in2)) + " differ");
        od = dims_of(op.in);
        break;
      }
      case Op::kRelu:
        allow({});
        op.in = input(0);
        od = dims_of(op.in);
        break;
    }
    for (int64_t d : od)
      if (d < 1 || d > kMaxElements) Fail(name, "output " + Dims(od) + " is out of range");
    if (Elements(od) > kMaxElements) Fail(name, "output " + Dims(od) + " is too large");
    op.out = static_cast<int>(out.tensors.size());
    tensor[n.outputs[0]] = op.out;
    out.tensors.push_back(od);
    out.ops.push_back(std::move(op));
  }
  auto it = tensor.find(g.outputs[0].name);
  if (it == tensor.end())
    throw UserError("ONNX model: output '" + g.outputs[0].name + "' is not computed");
  out.output = it->second;
  if (out.tensors[size_t(out.output)].size() != 1)
    throw UserError("ONNX model: output " + Dims(out.tensors[size_t(out.output)]) +
                    " is not [classes]");
  if (out.output == 0) throw UserError("ONNX model: the output is the input");
  int64_t total = 0;
  for (const auto& t : out.tensors) {
    out.largest = std::max(out.largest, Elements(t));
    total += Elements(t);
  }
  if (total > kMaxTotal)
    throw UserError("ONNX model: its tensors hold " + std::to_string(total) +
                    " values per image; at most " + std::to_string(kMaxTotal));
  for (const Op& op : out.ops)  // each term <= 2^24 x 2^24: no overflow, and the sum stops early
    if (op.kind == Op::kConv || op.kind == Op::kGemm) {
      out.macs += Elements(out.tensors[size_t(op.out)]) * int64_t(op.w.size()) / op.oc;
      if (out.macs > kMaxMacs)
        throw UserError("ONNX model: more than " + std::to_string(kMaxMacs) +
                        " multiply-adds per image");
    }
  return out;
}

void Fuse(Graph& g) {
  auto uses = [&](int t) {
    int n = t == g.output;
    for (const Op& o : g.ops)
      if (o.live) n += (o.in == t) + (o.in2 == t);
    return n;
  };
  auto producer = [&](int t) -> Op* {
    for (Op& o : g.ops)
      if (o.live && o.out == t) return &o;
    return nullptr;
  };
  auto index = [&](const Op* o) { return o ? o - g.ops.data() : -1; };
  for (Op& op : g.ops) {  // Gemm reads a flattened tensor as it is ([C, H, W] weights)
    if (!op.live || op.kind != Op::kGemm) continue;
    Op* f = producer(op.in);
    if (!f || f->kind != Op::kFlatten) continue;
    const int flat = op.in;
    op.in = f->in;
    if (uses(flat) == 0) f->live = false;
  }
  for (Op& add : g.ops) {  // Add into the later of its inputs' Convs
    if (!add.live || add.kind != Op::kAdd) continue;
    Op *a = producer(add.in), *b = producer(add.in2);
    Op* conv = index(a) > index(b) ? a : b;
    const int other = conv == a ? add.in2 : add.in;
    if (!conv || conv->kind != Op::kConv || conv->in2 >= 0 || conv->relu || uses(conv->out) != 1)
      continue;
    if (index(producer(other)) >= index(conv)) continue;  // the addend must exist before
    conv->in2 = other;
    conv->out = add.out;
    add.live = false;
  }
  for (Op& relu : g.ops) {
    if (!relu.live || relu.kind != Op::kRelu) continue;
    Op* p = producer(relu.in);
    if (!p || p->relu || uses(relu.in) != 1 ||
        (p->kind != Op::kConv && p->kind != Op::kGemm && p->kind != Op::kAdd))
      continue;
    p->relu = true;
    p->out = relu.out;
    relu.live = false;
  }
  g.ops.erase(std::remove_if(g.ops.begin(), g.ops.end(), [](const Op& o) { return !o.live; }),
              g.ops.end());
}

std::string Describe(const Graph& g) {
  std::string s;
  for (const Op& o : g.ops) {
    s += (s.empty() ? "" : " ") + std::string(KindName(o.kind));
    if (o.kind == Op::kConv && o.in2 >= 0) s += "+Sum";
    if (o.relu) s += "+Relu";
  }
  return s;
}

int64_t Elements(const std::vector<int64_t>& d) {
  int64_t n = 1;
  for (int64_t x : d)
    if ((n *= x) > kMaxElements) return kMaxElements + 1;
  return n;
}

}  // namespace da::engine
