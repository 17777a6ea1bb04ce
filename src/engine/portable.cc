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

constexpr int kRows = 4;   // pixels per micro-kernel tile
constexpr int kCols = 8;   // output channels per tile (two vectors)

// out[p, :] = act(x[p, :] . w + bias (+ sum[p, :])) for p < rows; x is rows x k
// (row stride k), w packed as [ceil(oc / 8)][k][8], out and sum rows x oc.
void Gemm(const float* x, int64_t rows, int64_t k, const float* w, const float* bias,
          int64_t oc, const float* sum, bool relu, float* out) {
  const int64_t blocks = (oc + kCols - 1) / kCols;
  for (int64_t p = 0; p < rows; p += kRows) {
    const float* xr[kRows];
    for (int j = 0; j < kRows; ++j) xr[j] = x + std::min(p + j, rows - 1) * k;  // tail: repeat
    for (int64_t b = 0; b < blocks; ++b) {
      const float* wb = w + b * k * kCols;
      V a[kRows][2];
      for (auto& r : a) r[0] = r[1] = Zero();
      for (int64_t i = 0; i < k; ++i) {
        const V w0 = Load(wb + i * kCols), w1 = Load(wb + i * kCols + 4);
        for (int j = 0; j < kRows; ++j) {
          const V s = Splat(xr[j][i]);
          a[j][0] = MulAdd(a[j][0], s, w0);
          a[j][1] = MulAdd(a[j][1], s, w1);
        }
      }
      const int64_t c0 = b * kCols, width = std::min<int64_t>(kCols, oc - c0);
      const V b0 = Load(bias + c0), b1 = Load(bias + c0 + 4);  // bias padded to blocks * 8
      for (int j = 0; j < kRows && p + j < rows; ++j) {
        float* o = out + (p + j) * oc + c0;
        alignas(16) float t[kCols];
        V v0 = Add(a[j][0], b0), v1 = Add(a[j][1], b1);
        if (sum) {
          const float* s = sum + (p + j) * oc + c0;
          if (width == kCols) {
            v0 = Add(v0, Load(s)), v1 = Add(v1, Load(s + 4));
          } else {
            float u[kCols] = {};
            std::memcpy(u, s, size_t(width) * sizeof(float));
            v0 = Add(v0, Load(u)), v1 = Add(v1, Load(u + 4));
          }
        }
        if (relu) v0 = Relu(v0), v1 = Relu(v1);
        if (width == kCols) {
          Store(o, v0), Store(o + 4, v1);
        } else {
          Store(t, v0), Store(t + 4, v1);
          std::memcpy(o, t, size_t(width) * sizeof(float));
        }
      }
    }
  }
}

// [OC, K] row-major (k in the order the kernel reads x) into [ceil(OC/8)][K][8].
std::vector<float> Pack(const std::vector<float>& w, int64_t oc, int64_t k) {
  const int64_t blocks = (oc + kCols - 1) / kCols;
  std::vector<float> p(size_t(blocks * k * kCols), 0.f);
  for (int64_t o = 0; o < oc; ++o)
    for (int64_t i = 0; i < k; ++i)
      p[size_t(((o / kCols) * k + i) * kCols + o % kCols)] = w[size_t(o * k + i)];
  return p;
}

}  // namespace

struct PortableModel::Layer {
  const Op* op = nullptr;
  std::vector<float> w, bias;  // packed; bias padded to whole blocks
  int64_t k = 0;               // GEMM depth
  bool im2col = false;
};

PortableModel::PortableModel(const std::string& onnx_bytes)
    : g_(std::make_unique<Graph>(Parse(onnx_bytes))) {
  Fuse(*g_);
  const Graph& g = *g_;
  size_t cols = 0;
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
        l.im2col = !(op.kh == 1 && op.kw == 1 && op.sh == 1 && op.sw == 1 && op.pt == 0 &&
                     op.pl == 0 && op.pb == 0 && op.pr == 0);
        const auto& out = g.tensors[size_t(op.out)];
        if (l.im2col) cols = std::max(cols, size_t(out[1] * out[2] * l.k));
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
      l.bias.assign(size_t((op.oc + kCols - 1) / kCols * kCols), 0.f);
      std::copy(op.b.begin(), op.b.end(), l.bias.begin());
    }
    layers_.push_back(std::move(l));
  }
  act_.resize(g.tensors.size());
  for (size_t t = 0; t < g.tensors.size(); ++t) act_[t].resize(size_t(Elements(g.tensors[t])));
  cols_.resize(cols);
}

PortableModel::~PortableModel() = default;

int64_t PortableModel::channels() const { return g_->tensors[0][0]; }
int64_t PortableModel::height() const { return g_->tensors[0][1]; }
int64_t PortableModel::width() const { return g_->tensors[0][2]; }
int64_t PortableModel::classes() const { return g_->tensors[size_t(g_->output)][0]; }
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
          const int64_t c = id[0], h = id[1], w = id[2], oh = od[1], ow = od[2];
          const float* cols = src;
          if (l.im2col) {
            float* col = cols_.data();
            for (int64_t y = 0; y < oh; ++y)
              for (int64_t x0 = 0; x0 < ow; ++x0)
                for (int64_t ky = 0; ky < op.kh; ++ky)
                  for (int64_t kx = 0; kx < op.kw; ++kx, col += c) {
                    const int64_t iy = y * op.sh - op.pt + ky, ix = x0 * op.sw - op.pl + kx;
                    if (iy < 0 || iy >= h || ix < 0 || ix >= w)
                      std::fill(col, col + c, 0.f);
                    else
                      std::memcpy(col, src + (iy * w + ix) * c, size_t(c) * sizeof(float));
                  }
            cols = cols_.data();
          }
          Gemm(cols, oh * ow, l.k, l.w.data(), l.bias.data(), op.oc, sum, op.relu, dst);
          break;
        }
        case Op::kGemm:
          Gemm(src, 1, l.k, l.w.data(), l.bias.data(), op.oc, nullptr, op.relu, dst);
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
