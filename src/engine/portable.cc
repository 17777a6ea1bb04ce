#include "engine/portable.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "common/error.h"
#include "engine/graph.h"

#if defined(__wasm_simd128__)
#include <wasm_simd128.h>
#elif defined(__SSE2__)
#include <emmintrin.h>
#endif

namespace da::engine {

namespace {

constexpr int64_t kMaxBatch = 4096;

// Four floats in one 128-bit register: the only SIMD the kernels use.
#if defined(__wasm_simd128__)
using V = v128_t;
inline V Load(const float* p) { return wasm_v128_load(p); }
inline void Store(float* p, V v) { wasm_v128_store(p, v); }
inline V Splat(float x) { return wasm_f32x4_splat(x); }
inline V Zero() { return wasm_f32x4_const_splat(0.f); }
inline V MulAdd(V acc, V a, V b) { return wasm_f32x4_add(acc, wasm_f32x4_mul(a, b)); }
inline V Add(V a, V b) { return wasm_f32x4_add(a, b); }
inline V Relu(V a) { return wasm_f32x4_pmax(a, Zero()); }
#elif defined(__SSE2__)
using V = __m128;
inline V Load(const float* p) { return _mm_loadu_ps(p); }
inline void Store(float* p, V v) { _mm_storeu_ps(p, v); }
inline V Splat(float x) { return _mm_set1_ps(x); }
inline V Zero() { return _mm_setzero_ps(); }
inline V MulAdd(V acc, V a, V b) { return _mm_add_ps(acc, _mm_mul_ps(a, b)); }
inline V Add(V a, V b) { return _mm_add_ps(a, b); }
inline V Relu(V a) { return _mm_max_ps(a, Zero()); }
#else
struct V {
  float v[4];
};
inline V Load(const float* p) {
  V r;
  std::memcpy(r.v, p, sizeof r.v);
  return r;
}
inline void Store(float* p, V v) { std::memcpy(p, v.v, sizeof v.v); }
inline V Splat(float x) { return {{x, x, x, x}}; }
inline V Zero() { return Splat(0.f); }
inline V MulAdd(V acc, V a, V b) {
  for (int i = 0; i < 4; ++i) acc.v[i] += a.v[i] * b.v[i];
  return acc;
}
inline V Add(V a, V b) {
  for (int i = 0; i < 4; ++i) a.v[i] += b.v[i];
  return a;
}
inline V Relu(V a) {
  for (float& x : a.v) x = x > 0.f ? x : 0.f;
  return a;
}
#endif

constexpr int kRows = 4;  // pixels per micro-kernel tile

// Output channels go in blocks of 8 (two vectors) and, for a remainder of at
// most 4, one block of 4: {first channel, width, vectors, offset of its packed weights}.
struct Block {
  int64_t c0, width;
  int nv;
  int64_t w;
};
std::vector<Block> Blocks(int64_t oc, int64_t k) {
  std::vector<Block> b;
  for (int64_t c0 = 0, w = 0; c0 < oc;) {
    const int nv = oc - c0 > 4 ? 2 : 1;
    b.push_back({c0, std::min<int64_t>(4 * nv, oc - c0), nv, w});
    c0 += 4 * nv, w += k * 4 * nv;
  }
  return b;
}

// The GEMM's left side, read in place: row p is `segs` segments of `len`
// contiguous floats, `stride` apart, from row(p). A convolution over a
// zero-padded NHWC input is this with one segment per kernel row (its KW
// pixels' channels are contiguous there); a Gemm, one segment of K.
struct Rows {
  int64_t count, segs, len, stride;
};

// acc[j][n] = sum over k of x_j[k] * w[k][4n..4n+3] for the kRows rows x_j.
template <int NV>
inline void Tile(const float* const* xr, const Rows& r, const float* w, V (&acc)[kRows][2]) {
  for (int j = 0; j < kRows; ++j)
    for (int n = 0; n < NV; ++n) acc[j][n] = Zero();
  for (int64_t s = 0; s < r.segs; ++s, w += r.len * NV * 4) {
    const int64_t off = s * r.stride;
    for (int64_t i = 0; i < r.len; ++i) {
      V wv[NV];
      for (int n = 0; n < NV; ++n) wv[n] = Load(w + (i * NV + n) * 4);
      for (int j = 0; j < kRows; ++j) {
        const V x = Splat(xr[j][off + i]);
        for (int n = 0; n < NV; ++n) acc[j][n] = MulAdd(acc[j][n], x, wv[n]);
      }
    }
  }
}

// out[p, :] = act(x_p . w + bias (+ sum[p, :])) for the rows x_p = row(p) of
// `r`; w packed by Pack, bias padded to whole blocks, out and sum rows x oc.
template <typename RowFn>
void Gemm(const Rows& r, RowFn row, const float* w, const float* bias, int64_t oc,
          const float* sum, bool relu, float* out) {
  const std::vector<Block> blocks = Blocks(oc, r.segs * r.len);
  for (int64_t p = 0; p < r.count; p += kRows) {
    const float* xr[kRows];
    for (int j = 0; j < kRows; ++j) xr[j] = row(std::min(p + j, r.count - 1));  // tail: repeat
    for (const Block& b : blocks) {
      V a[kRows][2];
      if (b.nv == 2)
        Tile<2>(xr, r, w + b.w, a);
      else
        Tile<1>(xr, r, w + b.w, a);
      for (int j = 0; j < kRows && p + j < r.count; ++j) {
        alignas(16) float t[8];
        for (int n = 0; n < b.nv; ++n) {
          V v = Add(a[j][n], Load(bias + b.c0 + 4 * n));
          if (sum) {
            const float* s = sum + (p + j) * oc + b.c0 + 4 * n;
            if (b.c0 + 4 * n + 4 <= oc) {
              v = Add(v, Load(s));
            } else {
              float u[4] = {};
              for (int64_t c = 0; c < oc - b.c0 - 4 * n; ++c) u[c] = s[c];
              v = Add(v, Load(u));
            }
          }
          Store(t + 4 * n, relu ? Relu(v) : v);
        }
        float* o = out + (p + j) * oc + b.c0;
        for (int64_t c = 0; c < b.width; ++c) o[c] = t[c];
      }
    }
  }
}

// [OC, K] row-major (k in the order the kernel reads x) into Blocks' layout:
// per block, [K][its vectors * 4], zero past OC.
std::vector<float> Pack(const std::vector<float>& w, int64_t oc, int64_t k) {
  const std::vector<Block> blocks = Blocks(oc, k);
  std::vector<float> p(size_t(blocks.back().w + k * 4 * blocks.back().nv), 0.f);
  for (const Block& b : blocks)
    for (int64_t i = 0; i < k; ++i)
      for (int64_t c = 0; c < b.width; ++c)
        p[size_t(b.w + i * 4 * b.nv + c)] = w[size_t((b.c0 + c) * k + i)];
  return p;
}

}  // namespace

struct PortableModel::Layer {
  const Op* op = nullptr;
  std::vector<float> w, bias;  // packed; bias padded to whole blocks
  int64_t k = 0;               // GEMM depth
  bool pad = false;            // a Conv whose input is copied into a zero border first
};

PortableModel::PortableModel(const std::string& onnx_bytes)
    : g_(std::make_unique<Graph>(Parse(onnx_bytes))) {
  Fuse(*g_);
  const Graph& g = *g_;
  size_t padded = 0;
  for (const Op& op : g.ops) {
    Layer l;
    l.op = &op;
    const auto& in = g.tensors[size_t(op.in)];
    if (op.kind == Op::kConv || op.kind == Op::kGemm) {
      std::vector<float> w = op.w;  // to [OC, K] in the order the kernel reads its input
      if (op.kind == Op::kConv) {   // ONNX [OC, C, KH, KW] -> [OC, KH, KW, C]
        const int64_t c = in[0], kk = op.kh * op.kw;
        l.k = c * kk;
        for (int64_t o = 0; o < op.oc; ++o)
          for (int64_t ci = 0; ci < c; ++ci)
            for (int64_t s = 0; s < kk; ++s)
              w[size_t(o * l.k + s * c + ci)] = op.w[size_t((o * c + ci) * kk + s)];
        l.pad = op.pt || op.pl || op.pb || op.pr;
        if (l.pad) {
          const int64_t bordered = (in[1] + op.pt + op.pb) * (in[2] + op.pl + op.pr) * c;
          if (bordered > kMaxElements)
            throw UserError("ONNX model: node " + op.name + ": its padded input is too large");
          padded = std::max(padded, size_t(bordered));
        }
      } else if (in.size() == 3) {  // a fused Flatten: [OC, C*H*W] -> [OC, H*W*C]
        const int64_t c = in[0], hw = in[1] * in[2];
        l.k = c * hw;
        for (int64_t o = 0; o < op.oc; ++o)
          for (int64_t ci = 0; ci < c; ++ci)
            for (int64_t s = 0; s < hw; ++s)
              w[size_t(o * l.k + s * c + ci)] = op.w[size_t(o * l.k + ci * hw + s)];
      } else {
        l.k = in[0];
      }
      l.w = Pack(w, op.oc, l.k);
      l.bias.assign(size_t((op.oc + 7) / 8 * 8), 0.f);
      std::copy(op.b.begin(), op.b.end(), l.bias.begin());
    }
    layers_.push_back(std::move(l));
  }
  act_.resize(g.tensors.size());
  for (size_t t = 0; t < g.tensors.size(); ++t) act_[t].resize(size_t(Elements(g.tensors[t])));
  padded_.resize(padded);
}

PortableModel::~PortableModel() = default;

int64_t PortableModel::channels() const { return g_->tensors[0][0]; }
int64_t PortableModel::height() const { return g_->tensors[0][1]; }
int64_t PortableModel::width() const { return g_->tensors[0][2]; }
int64_t PortableModel::classes() const { return g_->tensors[size_t(g_->output)][0]; }
int64_t PortableModel::macs() const { return g_->macs; }
std::string PortableModel::Describe() const { return engine::Describe(*g_); }

void PortableModel::Run(const float* images, int64_t n, float* logits) {
  if (n < 1 || n > kMaxBatch)
    throw UserError("engine: batch of " + std::to_string(n) + " images; 1 to " +
                    std::to_string(kMaxBatch));
  std::lock_guard<std::mutex> lock(mu_);
  const Graph& g = *g_;
  const int64_t C = channels(), HW = height() * width(), classes = this->classes();
  for (int64_t image = 0; image < n; ++image) {
    const float* x = images + image * C * HW;
    float* in = act_[0].data();
    for (int64_t c = 0; c < C; ++c)  // NCHW -> NHWC
      for (int64_t p = 0; p < HW; ++p) in[p * C + c] = x[c * HW + p];
    for (const Layer& l : layers_) {
      const Op& op = *l.op;
      const auto& id = g.tensors[size_t(op.in)];
      const auto& od = g.tensors[size_t(op.out)];
      const float* src = act_[size_t(op.in)].data();
      float* dst = act_[size_t(op.out)].data();
      const float* sum = op.in2 >= 0 ? act_[size_t(op.in2)].data() : nullptr;
      switch (op.kind) {
        case Op::kConv: {
          const int64_t c = id[0], oh = od[1], ow = od[2];
          int64_t h = id[1], w = id[2];
          const float* in = src;
          if (l.pad) {  // the input inside a zero border
            const int64_t ph = h + op.pt + op.pb, pw = w + op.pl + op.pr;
            float* p = padded_.data();
            std::fill(p, p + ph * pw * c, 0.f);
            for (int64_t y = 0; y < h; ++y)
              std::memcpy(p + ((y + op.pt) * pw + op.pl) * c, src + y * w * c,
                          size_t(w * c) * sizeof(float));
            in = p, h = ph, w = pw;
          }
          const Rows r{oh * ow, op.kh, op.kw * c, w * c};
          Gemm(
              r, [&](int64_t p) { return in + ((p / ow) * op.sh * w + (p % ow) * op.sw) * c; },
              l.w.data(), l.bias.data(), op.oc, sum, op.relu, dst);
          break;
        }
        case Op::kGemm:
          Gemm(
              Rows{1, 1, l.k, 0}, [&](int64_t) { return src; }, l.w.data(), l.bias.data(), op.oc,
              nullptr, op.relu, dst);
          break;
        case Op::kMaxPool: {
          const int64_t c = id[0], h = id[1], w = id[2], oh = od[1], ow = od[2];
          for (int64_t y = 0; y < oh; ++y)
            for (int64_t x0 = 0; x0 < ow; ++x0) {
              float* o = dst + (y * ow + x0) * c;
              std::fill(o, o + c, -INFINITY);
              for (int64_t ky = 0; ky < op.kh; ++ky)
                for (int64_t kx = 0; kx < op.kw; ++kx) {
                  const int64_t iy = y * op.sh - op.pt + ky, ix = x0 * op.sw - op.pl + kx;
                  if (iy < 0 || iy >= h || ix < 0 || ix >= w) continue;
                  const float* s = src + (iy * w + ix) * c;
                  for (int64_t ci = 0; ci < c; ++ci) o[ci] = std::max(o[ci], s[ci]);
                }
            }
          break;
        }
        case Op::kGlobalAvgPool: {
          const int64_t c = id[0], hw = id[1] * id[2];
          std::fill(dst, dst + c, 0.f);
          for (int64_t p = 0; p < hw; ++p)
            for (int64_t ci = 0; ci < c; ++ci) dst[ci] += src[p * c + ci];
          for (int64_t ci = 0; ci < c; ++ci) dst[ci] /= float(hw);
          break;
        }
        case Op::kFlatten: {  // NHWC -> the NCHW order ONNX flattens in
          const int64_t c = id.size() == 3 ? id[0] : 1, hw = Elements(id) / c;
          for (int64_t ci = 0; ci < c; ++ci)
            for (int64_t p = 0; p < hw; ++p) dst[ci * hw + p] = src[p * c + ci];
          break;
        }
        case Op::kAdd: {
          const int64_t e = Elements(od);
          for (int64_t i = 0; i < e; ++i) {
            const float v = src[i] + sum[i];
            dst[i] = op.relu && v < 0.f ? 0.f : v;
          }
          break;
        }
        case Op::kRelu: {
          const int64_t e = Elements(od);
          for (int64_t i = 0; i < e; ++i) dst[i] = src[i] < 0.f ? 0.f : src[i];
          break;
        }
      }
    }
    std::memcpy(logits + image * classes, act_[size_t(g.output)].data(),
                size_t(classes) * sizeof(float));
  }
}

}  // namespace da::engine
