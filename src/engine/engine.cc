#include "engine/engine.h"

#include <algorithm>
#include <cstdlib>
#include <dnnl.hpp>
#include <vector>

#include "common/error.h"
#include "engine/graph.h"

namespace da::engine {

namespace {

constexpr int64_t kMaxBatch = 4096;

dnnl::engine& Cpu() {
  static dnnl::engine e(dnnl::engine::kind::cpu, 0);
  return e;
}

using tag = dnnl::memory::format_tag;
using dt = dnnl::memory::data_type;
using md = dnnl::memory::desc;

struct Buffer {  // 64-byte aligned
  void* p = nullptr;
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

int64_t Model::channels() const { return g_->tensors[0][0]; }
int64_t Model::height() const { return g_->tensors[0][1]; }
int64_t Model::width() const { return g_->tensors[0][2]; }
int64_t Model::classes() const { return g_->tensors[size_t(g_->output)][0]; }
std::string Model::Describe() const { return engine::Describe(*g_); }

namespace {

// Builds the primitives of graph `g` for batch `n`.
std::unique_ptr<Model::Plan> Build(const Graph& g, int64_t n) {
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
    for (int64_t x : g.tensors[size_t(t)]) d.push_back(x);
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
      const auto ind = g.tensors[size_t(o.in)];
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
    b->p = std::aligned_alloc(64, (bytes + 63) / 64 * 64);
    if (!b->p) throw UserError("engine: cannot allocate " + std::to_string(bytes) + " bytes");
    plan->slots.push_back(std::move(b));
  }
  if (scratch > 0) {
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
  if (n * g_->largest > (int64_t(1) << 30))
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
