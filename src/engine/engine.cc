#include "engine/engine.h"

#include <onnx/onnx_pb.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <dnnl.hpp>
#include <set>
#include <unordered_map>
#include <vector>

#include "common/error.h"

namespace da::engine {

namespace {

constexpr size_t kMaxFileBytes = 512u << 20;
constexpr int64_t kMaxDim = 1 << 16;       // any one dimension
constexpr int64_t kMaxElements = 1 << 24;  // a tensor of one image, or a weight
constexpr int64_t kMaxBatch = 4096;

// The product of `d` (each in [1, kMaxElements]), saturating past kMaxElements.
int64_t Elements(const std::vector<int64_t>& d) {
  int64_t n = 1;
  for (int64_t x : d)
    if ((n *= x) > kMaxElements) return kMaxElements + 1;
  return n;
}

std::string Dims(const std::vector<int64_t>& d) {
  std::string s = "[";
  for (size_t i = 0; i < d.size(); ++i) s += (i ? ", " : "") + std::to_string(d[i]);
  return s + "]";
}

}  // namespace

// A tensor of one image: {C, H, W} or {K}.
struct Tensor {
  std::string name;
  std::vector<int64_t> dims;
};

struct Op {
  enum Kind { kConv, kMaxPool, kGlobalAvgPool, kFlatten, kGemm, kAdd, kRelu } kind;
  std::string name;
  int in = -1, in2 = -1, out = -1;  // tensors; in2: Add's second input, or a Conv's fused addend
  bool relu = false;                // fused
  int64_t kh = 1, kw = 1, sh = 1, sw = 1, pt = 0, pl = 0, pb = 0, pr = 0;
  int64_t oc = 0;
  std::vector<float> w, b;  // Conv [OC, C, KH, KW]; Gemm [OC, K] (K as the input's dims)
  bool live = true;         // false once fused into another op
};

struct Model::Graph {
  std::vector<Tensor> tensors;
  std::vector<Op> ops;
  int input = 0, output = -1;
};

namespace {

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
std::vector<float> FloatData(const onnx::TensorProto& t, const std::string& node) {
  const std::string what = "initializer '" + t.name() + "'";
  if (t.data_type() != onnx::TensorProto::FLOAT) Fail(node, what + " is not float32");
  if (t.has_data_location() && t.data_location() != onnx::TensorProto::DEFAULT)
    Fail(node, what + " is stored outside the file");
  int64_t n = 1;
  for (int64_t d : t.dims()) {
    if (d < 1 || d > kMaxElements) Fail(node, what + ": dimension " + std::to_string(d));
    n *= d;
    if (n > kMaxElements)
      Fail(node, what + ": more than " + std::to_string(kMaxElements) + " values");
  }
  std::vector<float> v(static_cast<size_t>(n));
  if (t.has_raw_data()) {
    if (t.raw_data().size() != v.size() * sizeof(float))
      Fail(node, what + ": " + std::to_string(t.raw_data().size()) + " bytes of data for " +
                     std::to_string(n) + " floats");
    std::memcpy(v.data(), t.raw_data().data(), t.raw_data().size());
  } else {
    if (t.float_data_size() != n)
      Fail(node,
           what + ": " + std::to_string(t.float_data_size()) + " values for " + std::to_string(n));
    std::copy(t.float_data().begin(), t.float_data().end(), v.begin());
  }
  return v;
}

std::vector<int64_t> InitDims(const onnx::TensorProto& t) {
  return std::vector<int64_t>(t.dims().begin(), t.dims().end());
}

Model::Graph Parse(const std::string& bytes) {
  if (bytes.size() > kMaxFileBytes)
    throw UserError("ONNX model: " + std::to_string(bytes.size()) + " bytes; at most " +
                    std::to_string(kMaxFileBytes));
  onnx::ModelProto m;
  if (!m.ParseFromString(bytes)) throw UserError("ONNX model: not a valid ONNX protobuf");
  int64_t opset = -1;
  for (const auto& o : m.opset_import())
    if (o.domain().empty() || o.domain() == "ai.onnx") opset = o.version();
  if (opset < 11 || opset > 21)
    throw UserError("ONNX model: opset " + std::to_string(opset) + "; the engine reads 11 to 21");
  const auto& g = m.graph();

  std::unordered_map<std::string, const onnx::TensorProto*> init;
  for (const auto& t : g.initializer()) init[t.name()] = &t;

  Model::Graph out;
  std::unordered_map<std::string, int> tensor;  // name -> id
  // The input: the one graph input that is not an initializer.
  for (const auto& in : g.input()) {
    if (init.count(in.name())) continue;
    if (!out.tensors.empty()) throw UserError("ONNX model: more than one input");
    const auto& tt = in.type().tensor_type();
    if (!in.type().has_tensor_type() || tt.elem_type() != onnx::TensorProto::FLOAT)
      throw UserError("ONNX model: input '" + in.name() + "' is not a float32 tensor");
    if (tt.shape().dim_size() != 4)
      throw UserError("ONNX model: input '" + in.name() + "' is not [N, C, H, W]");
    std::vector<int64_t> dims;
    for (int i = 1; i < 4; ++i) {
      const auto& d = tt.shape().dim(i);
      if (!d.has_dim_value() || d.dim_value() < 1 || d.dim_value() > kMaxDim)
        throw UserError("ONNX model: input '" + in.name() + "' dimension " + std::to_string(i) +
                        " is not a size in [1, " + std::to_string(kMaxDim) + "]");
      dims.push_back(d.dim_value());
    }
    if (Elements(dims) > kMaxElements)
      throw UserError("ONNX model: input of " + Dims(dims) + " is too large");
    tensor[in.name()] = 0;
    out.tensors.push_back({in.name(), dims});
  }
  if (out.tensors.empty()) throw UserError("ONNX model: no input");
  if (g.output_size() != 1) throw UserError("ONNX model: not exactly one output");

  for (int i = 0; i < g.node_size(); ++i) {
    const onnx::NodeProto& n = g.node(i);
    const std::string name =
        "'" + (n.name().empty() ? "#" + std::to_string(i) : n.name()) + "' (" + n.op_type() + ")";
    if (!n.domain().empty() && n.domain() != "ai.onnx") Fail(name, "domain '" + n.domain() + "'");
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
    auto k = kinds.find(n.op_type());
    if (k == kinds.end()) Fail(name, "operator '" + n.op_type() + "' is not supported");
    op.kind = k->second;
    if (n.output_size() != 1 || n.output(0).empty()) Fail(name, "not exactly one output");
    if (tensor.count(n.output(0)) || init.count(n.output(0)))
      Fail(name, "output '" + n.output(0) + "' is defined twice");
    // Inputs: tensors computed before, or initializers where weights go.
    auto input = [&](int k) -> int {
      if (k >= n.input_size() || n.input(k).empty())
        Fail(name, "input " + std::to_string(k) + " is missing");
      auto it = tensor.find(n.input(k));
      if (it == tensor.end())
        Fail(name, "input '" + n.input(k) + "' is not computed before this node");
      return it->second;
    };
    auto weight = [&](int k) -> const onnx::TensorProto& {
      if (k >= n.input_size()) Fail(name, "input " + std::to_string(k) + " is missing");
      auto it = init.find(n.input(k));
      if (it == init.end()) Fail(name, "input '" + n.input(k) + "' is not an initializer");
      return *it->second;
    };
    // Attributes: only those we know, with the values we support.
    std::unordered_map<std::string, const onnx::AttributeProto*> attr;
    for (const auto& a : n.attribute()) attr[a.name()] = &a;
    auto ints = [&](const std::string& a, std::vector<int64_t> def, size_t count) {
      auto it = attr.find(a);
      if (it == attr.end()) return def;
      if (it->second->type() != onnx::AttributeProto::INTS ||
          size_t(it->second->ints_size()) != count)
        Fail(name, "attribute " + a + " is not " + std::to_string(count) + " integers");
      std::vector<int64_t> v(it->second->ints().begin(), it->second->ints().end());
      for (int64_t x : v)
        if (x < 0 || x > kMaxDim) Fail(name, "attribute " + a + " has value " + std::to_string(x));
      return v;
    };
    auto one = [&](const std::string& a, int64_t def) {
      auto it = attr.find(a);
      if (it == attr.end()) return def;
      if (it->second->type() != onnx::AttributeProto::INT)
        Fail(name, "attribute " + a + " is not an integer");
      return int64_t(it->second->i());
    };
    auto allow = [&](std::set<std::string> known) {
      for (const auto& [a, p] : attr)
        if (!known.count(a)) Fail(name, "attribute " + a + " is not supported");
      if (attr.count("auto_pad")) {
        const auto* p = attr["auto_pad"];
        if (p->type() != onnx::AttributeProto::STRING || p->s() != "NOTSET")
          Fail(name, "auto_pad other than NOTSET is not supported");
      }
    };
    auto dims_of = [&](int t) -> const std::vector<int64_t>& {
      return out.tensors[size_t(t)].dims;
    };
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
        if (n.input_size() > 2 && !n.input(2).empty()) {
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
              (attr[a]->type() != onnx::AttributeProto::FLOAT || attr[a]->f() != 1.0f))
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
        if (n.input_size() > 2 && !n.input(2).empty()) {
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
    tensor[n.output(0)] = op.out;
    out.tensors.push_back({n.output(0), od});
    out.ops.push_back(std::move(op));
  }
  auto it = tensor.find(g.output(0).name());
  if (it == tensor.end())
    throw UserError("ONNX model: output '" + g.output(0).name() + "' is not computed");
  out.output = it->second;
  if (out.tensors[size_t(out.output)].dims.size() != 1)
    throw UserError("ONNX model: output " + Dims(out.tensors[size_t(out.output)].dims) +
                    " is not [classes]");
  if (out.output == 0) throw UserError("ONNX model: the output is the input");
  return out;
}

// Fuses Flatten into Gemm, Add into Conv, Relu into Conv, Gemm and Add.
void Fuse(Model::Graph& g) {
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

dnnl::engine& Cpu() {
  static dnnl::engine e(dnnl::engine::kind::cpu, 0);
  return e;
}

using tag = dnnl::memory::format_tag;
using dt = dnnl::memory::data_type;
using md = dnnl::memory::desc;

struct Buffer {
  void* p = nullptr;
  size_t bytes = 0;
  ~Buffer() { std::free(p); }
};

}  // namespace

struct Model::Plan {
  struct Step {
    dnnl::primitive p;
    std::vector<std::pair<int, dnnl::memory>> args;
    std::vector<dnnl_exec_arg_t> c_args;
  };
  dnnl::stream stream{Cpu()};
  std::vector<Step> steps;
  dnnl::memory input, output;         // the caller's buffers, set per call
  std::vector<dnnl::memory> weights;  // reordered once
  std::vector<std::unique_ptr<Buffer>> slots;
  Buffer scratch;
};

Model::Model(const std::string& onnx_bytes) : g_(std::make_unique<Graph>(Parse(onnx_bytes))) {
  Fuse(*g_);
}

Model::~Model() = default;

int64_t Model::channels() const { return g_->tensors[0].dims[0]; }
int64_t Model::height() const { return g_->tensors[0].dims[1]; }
int64_t Model::width() const { return g_->tensors[0].dims[2]; }
int64_t Model::classes() const { return g_->tensors[size_t(g_->output)].dims[0]; }

std::string Model::Describe() const {
  std::string s;
  for (const Op& o : g_->ops) {
    s += (s.empty() ? "" : " ") + std::string(KindName(o.kind));
    if (o.kind == Op::kConv && o.in2 >= 0) s += "+Sum";
    if (o.relu) s += "+Relu";
  }
  return s;
}

namespace {

// Builds the primitives of graph `g` for batch `n`.
std::unique_ptr<Model::Plan> Build(const Model::Graph& g, int64_t n) {
  auto plan = std::make_unique<Model::Plan>();
  dnnl::engine& eng = Cpu();
  const size_t nt = g.tensors.size();
  std::vector<md> desc(nt);
  std::vector<dnnl::memory> mem(nt);
  std::vector<int> slot_of(nt, -1);  // -1: the caller's buffer
  std::vector<int> free_slots;
  std::vector<size_t> slot_bytes;
  std::vector<std::pair<dnnl::memory, int>> to_bind;  // memory -> slot, bound once sizes are known
  auto full = [&](int t) {
    dnnl::memory::dims d = {n};
    for (int64_t x : g.tensors[size_t(t)].dims) d.push_back(x);
    return d;
  };
  auto new_slot = [&](size_t bytes) {
    int s;
    if (!free_slots.empty()) {
      s = free_slots.back();
      free_slots.pop_back();
    } else {
      s = static_cast<int>(slot_bytes.size());
      slot_bytes.push_back(0);
    }
    slot_bytes[size_t(s)] = std::max(slot_bytes[size_t(s)], bytes);
    return s;
  };
  auto in_slot = [&](const md& d, int s) {
    dnnl::memory m(d, eng, DNNL_MEMORY_NONE);
    to_bind.push_back({m, s});
    return m;
  };
  // Last use of each tensor (op index; the output lives to the end).
  std::vector<size_t> last(nt, 0);
  for (size_t i = 0; i < g.ops.size(); ++i) {
    last[size_t(g.ops[i].in)] = i;
    if (g.ops[i].in2 >= 0) last[size_t(g.ops[i].in2)] = i;
  }
  last[size_t(g.output)] = g.ops.size();

  desc[0] = md(full(0), dt::f32, tag::nchw);
  plan->input = dnnl::memory(desc[0], eng, DNNL_MEMORY_NONE);
  mem[0] = plan->input;

  size_t scratch = 0;
  auto add_step = [&](dnnl::primitive p, std::vector<std::pair<int, dnnl::memory>> args,
                      const dnnl::primitive_desc_base& pd) {
    const md s = pd.scratchpad_desc();
    if (s.get_size() > 0) {
      scratch = std::max(scratch, s.get_size());
      dnnl::memory m(s, eng, DNNL_MEMORY_NONE);
      to_bind.push_back({m, -2});
      args.push_back({DNNL_ARG_SCRATCHPAD, m});
    }
    plan->steps.push_back({std::move(p), std::move(args), {}});
  };
  // `t` in layout `want`: itself, or a reordered copy in a temporary slot.
  std::vector<int> temps;
  auto as = [&](int t, const md& want) {
    if (desc[size_t(t)] == want) return mem[size_t(t)];
    const int s = new_slot(want.get_size());
    temps.push_back(s);
    dnnl::memory m = in_slot(want, s);
    plan->steps.push_back({dnnl::reorder(mem[size_t(t)], m),
                           {{DNNL_ARG_FROM, mem[size_t(t)]}, {DNNL_ARG_TO, m}},
                           {}});
    return m;
  };
  auto weights = [&](const std::vector<float>& w, const md& user, const md& want) {
    dnnl::memory u(user, eng, const_cast<float*>(w.data()));
    if (user == want) return u;
    dnnl::memory m(want, eng);
    dnnl::reorder(u, m).execute(plan->stream, u, m);
    plan->stream.wait();
    plan->weights.push_back(m);
    return m;
  };
  // (dnnl objects are shared handles: a copy of an attr is the same attr.)
  auto base_attr = [] {
    dnnl::primitive_attr a;
    a.set_scratchpad_mode(dnnl::scratchpad_mode::user);
    return a;
  };
  auto attr = [&](const Op& o, bool sum) {
    dnnl::primitive_attr a = base_attr();
    dnnl::post_ops po;
    if (sum) po.append_sum(1.f);
    if (o.relu) po.append_eltwise(1.f, dnnl::algorithm::eltwise_relu, 0.f, 0.f);
    a.set_post_ops(po);
    return a;
  };
  auto output = [&](const Op& o, const md& d) {  // the op's output tensor, in a slot
    desc[size_t(o.out)] = d;
    slot_of[size_t(o.out)] = new_slot(d.get_size());
    mem[size_t(o.out)] = in_slot(d, slot_of[size_t(o.out)]);
  };

  for (size_t i = 0; i < g.ops.size(); ++i) {
    const Op& o = g.ops[i];
    try {
      const auto ind = g.tensors[size_t(o.in)].dims;
      switch (o.kind) {
        case Op::kConv: {
          const md src(full(o.in), dt::f32, tag::any), dst(full(o.out), dt::f32, tag::any);
          const md wmd({o.oc, ind[0], o.kh, o.kw}, dt::f32, tag::any);
          const md bmd = o.b.empty() ? md() : md({o.oc}, dt::f32, tag::x);
          dnnl::convolution_forward::primitive_desc pd(
              dnnl::convolution_forward::desc(dnnl::prop_kind::forward_inference,
                                              dnnl::algorithm::convolution_direct, src, wmd, bmd,
                                              dst, {o.sh, o.sw}, {o.pt, o.pl}, {o.pb, o.pr}),
              attr(o, o.in2 >= 0), eng);
          dnnl::memory x = as(o.in, pd.src_desc());
          if (o.in2 >= 0) {
            // The sum's addend in the output buffer: in place when it dies here.
            const int a = o.in2;
            if (a != 0 && last[size_t(a)] == i && desc[size_t(a)] == pd.dst_desc() && a != o.in) {
              desc[size_t(o.out)] = desc[size_t(a)];
              mem[size_t(o.out)] = mem[size_t(a)];
              slot_of[size_t(o.out)] = slot_of[size_t(a)];
              slot_of[size_t(a)] = -1;  // handed over, not freed
            } else {
              output(o, pd.dst_desc());
              plan->steps.push_back(
                  {dnnl::reorder(mem[size_t(a)], mem[size_t(o.out)]),
                   {{DNNL_ARG_FROM, mem[size_t(a)]}, {DNNL_ARG_TO, mem[size_t(o.out)]}},
                   {}});
            }
          } else {
            output(o, pd.dst_desc());
          }
          std::vector<std::pair<int, dnnl::memory>> args = {
              {DNNL_ARG_SRC, x},
              {DNNL_ARG_WEIGHTS,
               weights(o.w, md({o.oc, ind[0], o.kh, o.kw}, dt::f32, tag::oihw), pd.weights_desc())},
              {DNNL_ARG_DST, mem[size_t(o.out)]}};
          if (!o.b.empty()) args.push_back({DNNL_ARG_BIAS, weights(o.b, bmd, pd.bias_desc())});
          add_step(dnnl::convolution_forward(pd), std::move(args), pd);
          break;
        }
        case Op::kMaxPool:
        case Op::kGlobalAvgPool: {
          const md dst(full(o.out), dt::f32, tag::any);
          dnnl::pooling_forward::primitive_desc pd(
              dnnl::pooling_forward::desc(
                  dnnl::prop_kind::forward_inference,
                  o.kind == Op::kMaxPool ? dnnl::algorithm::pooling_max
                                         : dnnl::algorithm::pooling_avg_exclude_padding,
                  desc[size_t(o.in)], dst, {o.sh, o.sw}, {o.kh, o.kw}, {o.pt, o.pl}, {o.pb, o.pr}),
              base_attr(), eng);
          output(o, pd.dst_desc());
          add_step(dnnl::pooling_forward(pd),
                   {{DNNL_ARG_SRC, mem[size_t(o.in)]}, {DNNL_ARG_DST, mem[size_t(o.out)]}}, pd);
          break;
        }
        case Op::kFlatten: {  // not followed by a Gemm: to plain [N, C*H*W]
          dnnl::memory::dims d = full(o.in);
          const md plain(d, dt::f32, d.size() == 4 ? tag::nchw : tag::nc);
          output(o, md(full(o.out), dt::f32, tag::nc));
          dnnl::memory view = in_slot(plain, slot_of[size_t(o.out)]);
          plan->steps.push_back({dnnl::reorder(mem[size_t(o.in)], view),
                                 {{DNNL_ARG_FROM, mem[size_t(o.in)]}, {DNNL_ARG_TO, view}},
                                 {}});
          break;
        }
        case Op::kGemm: {
          // A 4D input: a Flatten fused here; weights [OC, C, H, W] in ONNX's order.
          dnnl::memory::dims wd = {o.oc};
          for (int64_t x : ind) wd.push_back(x);
          const md src(full(o.in), dt::f32, tag::any), wmd(wd, dt::f32, tag::any);
          const md bmd = o.b.empty() ? md() : md({o.oc}, dt::f32, tag::x);
          const md dst(full(o.out), dt::f32, o.out == g.output ? tag::nc : tag::any);
          dnnl::inner_product_forward::primitive_desc pd(
              dnnl::inner_product_forward::desc(dnnl::prop_kind::forward_inference, src, wmd, bmd,
                                                dst),
              attr(o, false), eng);
          dnnl::memory x = as(o.in, pd.src_desc());
          output(o, pd.dst_desc());
          std::vector<std::pair<int, dnnl::memory>> args = {
              {DNNL_ARG_SRC, x},
              {DNNL_ARG_WEIGHTS,
               weights(o.w, md(wd, dt::f32, ind.size() == 3 ? tag::oihw : tag::oi),
                       pd.weights_desc())},
              {DNNL_ARG_DST, mem[size_t(o.out)]}};
          if (!o.b.empty()) args.push_back({DNNL_ARG_BIAS, weights(o.b, bmd, pd.bias_desc())});
          add_step(dnnl::inner_product_forward(pd), std::move(args), pd);
          break;
        }
        case Op::kAdd: {
          dnnl::binary::primitive_desc pd(
              dnnl::binary::desc(dnnl::algorithm::binary_add, desc[size_t(o.in)],
                                 desc[size_t(o.in2)], desc[size_t(o.in)]),
              attr(o, false), eng);
          output(o, pd.dst_desc());
          add_step(dnnl::binary(pd),
                   {{DNNL_ARG_SRC_0, mem[size_t(o.in)]},
                    {DNNL_ARG_SRC_1, mem[size_t(o.in2)]},
                    {DNNL_ARG_DST, mem[size_t(o.out)]}},
                   pd);
          break;
        }
        case Op::kRelu: {
          dnnl::eltwise_forward::primitive_desc pd(
              dnnl::eltwise_forward::desc(dnnl::prop_kind::forward_inference,
                                          dnnl::algorithm::eltwise_relu, desc[size_t(o.in)], 0.f,
                                          0.f),
              base_attr(), eng);
          output(o, pd.dst_desc());
          add_step(dnnl::eltwise_forward(pd),
                   {{DNNL_ARG_SRC, mem[size_t(o.in)]}, {DNNL_ARG_DST, mem[size_t(o.out)]}}, pd);
          break;
        }
      }
    } catch (const dnnl::error& e) {
      throw UserError("ONNX model: node " + o.name + ": oneDNN cannot run it (" + e.what() + ")");
    }
    // Free what died here (never the input: the caller's buffer).
    for (int s : temps) free_slots.push_back(s);
    temps.clear();
    for (int t : {o.in, o.in2})
      if (t > 0 && last[size_t(t)] == i && slot_of[size_t(t)] >= 0) {
        free_slots.push_back(slot_of[size_t(t)]);
        slot_of[size_t(t)] = -1;
      }
  }
  // The output, copied into the caller's buffer as plain [N, classes].
  const md user_out(full(g.output), dt::f32, tag::nc);
  plan->output = dnnl::memory(user_out, eng, DNNL_MEMORY_NONE);
  const int t = g.output;
  plan->steps.push_back({dnnl::reorder(mem[size_t(t)], plan->output),
                         {{DNNL_ARG_FROM, mem[size_t(t)]}, {DNNL_ARG_TO, plan->output}},
                         {}});
  // Allocate the slots and the scratchpad, bind the memories.
  for (size_t bytes : slot_bytes) {
    auto b = std::make_unique<Buffer>();
    b->bytes = bytes;
    b->p = std::aligned_alloc(64, (bytes + 63) / 64 * 64);
    if (!b->p) throw UserError("engine: cannot allocate " + std::to_string(bytes) + " bytes");
    plan->slots.push_back(std::move(b));
  }
  if (scratch > 0) {
    plan->scratch.bytes = scratch;
    plan->scratch.p = std::aligned_alloc(64, (scratch + 63) / 64 * 64);
    if (!plan->scratch.p) throw UserError("engine: cannot allocate the scratchpad");
  }
  for (auto& [m, s] : to_bind)
    m.set_data_handle(s == -2 ? plan->scratch.p : plan->slots[size_t(s)]->p);
  for (auto& step : plan->steps)
    for (auto& [arg, m] : step.args) step.c_args.push_back({arg, m.get()});
  return plan;
}

}  // namespace

void Model::Run(const float* images, int64_t n, float* logits) {
  if (n < 1 || n > kMaxBatch)
    throw UserError("engine: batch of " + std::to_string(n) + " images; 1 to " +
                    std::to_string(kMaxBatch));
  int64_t largest = 0;
  for (const Tensor& t : g_->tensors) largest = std::max(largest, Elements(t.dims));
  if (n * largest > (int64_t(1) << 30))
    throw UserError("engine: a batch of " + std::to_string(n) + " would need over 4 GB per tensor");
  std::lock_guard lock(mu_);
  auto& plan = plans_[n];
  if (!plan) {
    try {
      plan = Build(*g_, n);
    } catch (...) {
      plans_.erase(n);
      throw;
    }
  }
  plan->input.set_data_handle(const_cast<float*>(images));
  plan->output.set_data_handle(logits);
  for (auto& s : plan->steps)
    if (dnnl_primitive_execute(s.p.get(), plan->stream.get(), static_cast<int>(s.c_args.size()),
                               s.c_args.data()) != dnnl_success)
      throw std::runtime_error("engine: a oneDNN primitive failed");
  plan->stream.wait();
}

}  // namespace da::engine
