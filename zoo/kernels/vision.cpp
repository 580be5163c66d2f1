// Training kernels of the MetaFormer vision models on channels-last float32 CPU maps, with AVX2 and FMA. Built at
// first use by zoo/kernels/vision.py and registered as torch.ops.zoo_vision.
//
// Depthwise convolution, stride 1, zero padding (eight channels one vector):
//   forward:      y[n, c, ho, wo] = sum over i, j of  x[n, c, ho + i - ph, wo + j - pw] * w[c, i, j]
//   weight_grad:  dw[c, i, j]     = sum over n, ho, wo of  x[n, c, ho + i - ph, wo + j - pw] * g[n, c, ho, wo]
// (x zero outside). A task is a block of eight channels of one image (forward) or of every image (weight_grad); it
// repacks that block into a small buffer, x with its zero border ([H + 2 ph][W + 2 pw][8]), so that the inner
// loops run over contiguous memory in cache without a bounds check. The forward sums each output's taps in (i, j)
// order in one float32 accumulator by fused multiply-adds, as oneDNN's direct depthwise convolution does. The
// weights' gradient keeps, for every image and kernel row (i), a float32 vector accumulator per kernel column over
// the image's Ho Wo products (fused multiply-adds in ho, wo order), and adds each image's sums to float64
// accumulators, in image order (one conversion to float64 an image, not one an output row). Every output is so
// computed by one thread in a fixed order: the result does not depend on the thread count.
//
// StarReLU, s * relu(x)^2 + b with scalar s and b, forward and backward in one pass each (autograd's chain of relu,
// mul and addcmul takes three forward and four backward): the elementwise values round as that chain's do (r s
// rounded, then ATen's addcmul, a fused multiply-add b + r (r s); the backward's products one by one), and the two
// scalar gradients are sums over fixed chunks of 4096
// elements in float64, the chunks added in order.
//
// Matrix products C = A B (+ bias) with A's rows contiguous (token-major activations: a Linear's input, an output's
// gradient) and B any (K, N) layout (a weight, or its transpose). B is packed into panels of 16 columns ([K][16],
// the last one 8 or 16 wide, zero-padded); a tile of 6 rows by 16 columns keeps its 12 vector accumulators in
// registers over the whole of K, reading A's 6 rows in place (a broadcast each) and the panel's row k. Every output
// is one float32 accumulator of fused multiply-adds in k order, then the bias added: the result does not depend on
// the thread count or the blocking, and its error is at most gamma_K sum_k |a_ik| |b_kj| (plus the bias's rounding).
// A tile's epilogue may apply StarReLU or its backward, or GELU and its slope (from the stored tile, in L1, so that
// the accumulators' registers are free for its constants), or multiply by a map (GELU's backward given the slope).
//
// Multi-head self-attention (CAFormer's), forward and backward, one head of one image a task, its products the
// tiles above (see attention() below).

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/full.h>
#include <ATen/ops/mm.h>
#include <ATen/ops/zeros.h>
#include <ATen/Parallel.h>
#include <c10/core/GradMode.h>
#include <immintrin.h>
#include <torch/library.h>

#include "simd.h"  // the eight-lane sum and maximum, shared with gemv.cpp

#include <algorithm>
#include <optional>
#include <cmath>
#include <tuple>
#include <vector>

namespace {

constexpr int64_t LANES = 8;   // channels a block: one AVX2 vector of float32
constexpr int64_t JTILE = 8;   // kernel columns summed at once (vector accumulators in registers)

// map n of [N, C, H, W] (channels-last memory, NHWC), channels 8 b .. 8 b + 7 -> [H + 2 ph][W + 2 pw][8]
// (border zero)
void pack(const float* src, float* dst, int64_t n, int64_t b, int64_t C, int64_t H, int64_t W, int64_t ph,
          int64_t pw) {
  const int64_t Hp = H + 2 * ph, Wp = W + 2 * pw;
  std::fill(dst, dst + ph * Wp * LANES, 0.0f);
  std::fill(dst + (ph + H) * Wp * LANES, dst + Hp * Wp * LANES, 0.0f);
  for (int64_t h = 0; h < H; ++h) {
    float* row = dst + (h + ph) * Wp * LANES;
    std::fill(row, row + pw * LANES, 0.0f);
    std::fill(row + (pw + W) * LANES, row + Wp * LANES, 0.0f);
    const float* in = src + ((n * H + h) * W) * C + b * LANES;
    for (int64_t w = 0; w < W; ++w) _mm256_storeu_ps(row + (w + pw) * LANES, _mm256_loadu_ps(in + w * C));
  }
}

// one image's contribution to JN kernel columns j0 .. j0 + JN - 1 of one kernel row, eight channels: x0 and g0 are
// the packed planes' first rows for that kernel row and column, rows Wp and Wo vectors apart
template <int JN>
void plane_sums(const float* x0, const float* g0, int64_t Ho, int64_t Wo, int64_t Wp, double* acc) {
  __m256 s[JN];
  for (int j = 0; j < JN; ++j) s[j] = _mm256_setzero_ps();
  for (int64_t ho = 0; ho < Ho; ++ho) {
    const float* xr = x0 + ho * Wp * LANES;
    const float* gr = g0 + ho * Wo * LANES;
    for (int64_t wo = 0; wo < Wo; ++wo) {
      const __m256 gv = _mm256_loadu_ps(gr + wo * LANES);
      for (int j = 0; j < JN; ++j) s[j] = _mm256_fmadd_ps(_mm256_loadu_ps(xr + (wo + j) * LANES), gv, s[j]);
    }
  }
  for (int j = 0; j < JN; ++j) {
    const __m256d lo = _mm256_cvtps_pd(_mm256_castps256_ps128(s[j]));
    const __m256d hi = _mm256_cvtps_pd(_mm256_extractf128_ps(s[j], 1));
    _mm256_storeu_pd(acc + j * LANES, _mm256_add_pd(_mm256_loadu_pd(acc + j * LANES), lo));
    _mm256_storeu_pd(acc + j * LANES + 4, _mm256_add_pd(_mm256_loadu_pd(acc + j * LANES + 4), hi));
  }
}

using PlaneSums = void (*)(const float*, const float*, int64_t, int64_t, int64_t, double*);
constexpr PlaneSums PLANE_SUMS[JTILE + 1] = {nullptr,          plane_sums<1>, plane_sums<2>, plane_sums<3>,
                                             plane_sums<4>,    plane_sums<5>, plane_sums<6>, plane_sums<7>,
                                             plane_sums<8>};

at::Tensor depthwise_weight_grad(const at::Tensor& x, const at::Tensor& g, int64_t kh, int64_t kw, int64_t ph,
                                 int64_t pw) {
  TORCH_CHECK(x.dim() == 4 && g.dim() == 4, "depthwise_weight_grad: x and g must be (N, C, H, W) maps");
  TORCH_CHECK(x.scalar_type() == at::kFloat && g.scalar_type() == at::kFloat && x.device().is_cpu() &&
                  g.device().is_cpu(),
              "depthwise_weight_grad: float32 CPU tensors only");
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  TORCH_CHECK(kh >= 1 && kw >= 1 && ph >= 0 && pw >= 0, "depthwise_weight_grad: bad kernel or padding");
  const int64_t Ho = H + 2 * ph - kh + 1, Wo = W + 2 * pw - kw + 1;
  TORCH_CHECK(Ho >= 1 && Wo >= 1, "depthwise_weight_grad: the kernel is larger than the padded map");
  TORCH_CHECK(g.size(0) == N && g.size(1) == C && g.size(2) == Ho && g.size(3) == Wo,
              "depthwise_weight_grad: g must be (N, C, Ho, Wo) for this x, kernel and padding");
  TORCH_CHECK(C % LANES == 0, "depthwise_weight_grad: channels must be a multiple of 8");
  TORCH_CHECK(x.is_contiguous(at::MemoryFormat::ChannelsLast) && g.is_contiguous(at::MemoryFormat::ChannelsLast),
              "depthwise_weight_grad: x and g must be channels-last");
  auto out = at::zeros({C, 1, kh, kw}, x.options());
  if (N == 0) return out;
  const int64_t Hp = H + 2 * ph, Wp = W + 2 * pw, blocks = C / LANES;
  const float* xs = x.data_ptr<float>();
  const float* gs = g.data_ptr<float>();
  float* dst = out.data_ptr<float>();
  at::parallel_for(0, blocks, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> xb(static_cast<size_t>(Hp * Wp * LANES)), gb(static_cast<size_t>(Ho * Wo * LANES));
    std::vector<double> acc(static_cast<size_t>(kh * kw * LANES));
    for (int64_t b = begin; b < end; ++b) {
      std::fill(acc.begin(), acc.end(), 0.0);
      for (int64_t n = 0; n < N; ++n) {
        pack(xs, xb.data(), n, b, C, H, W, ph, pw);
        pack(gs, gb.data(), n, b, C, Ho, Wo, 0, 0);
        for (int64_t i = 0; i < kh; ++i) {
          for (int64_t j0 = 0; j0 < kw; j0 += JTILE) {
            PLANE_SUMS[std::min(JTILE, kw - j0)](xb.data() + (i * Wp + j0) * LANES, gb.data(), Ho, Wo, Wp,
                                                 acc.data() + (i * kw + j0) * LANES);
          }
        }
      }
      for (int64_t l = 0; l < LANES; ++l) {
        for (int64_t k = 0; k < kh * kw; ++k) dst[(b * LANES + l) * kh * kw + k] = static_cast<float>(acc[k * LANES + l]);
      }
    }
  });
  return out;
}

// outputs wo .. wo + WT - 1 of one output row, eight channels: sum over the kernel's taps in (i, j) order
template <int WT>
void out_tile(const float* xb, const float* wt, int64_t Wp, int64_t kh, int64_t kw, int64_t ho, int64_t wo,
              float* dst, int64_t C) {
  __m256 s[WT];
  for (int t = 0; t < WT; ++t) s[t] = _mm256_setzero_ps();
  for (int64_t i = 0; i < kh; ++i) {
    const float* xr = xb + ((ho + i) * Wp + wo) * LANES;
    const float* wr = wt + i * kw * LANES;
    for (int64_t j = 0; j < kw; ++j) {
      const __m256 wv = _mm256_loadu_ps(wr + j * LANES);
      for (int t = 0; t < WT; ++t) s[t] = _mm256_fmadd_ps(_mm256_loadu_ps(xr + (t + j) * LANES), wv, s[t]);
    }
  }
  for (int t = 0; t < WT; ++t) _mm256_storeu_ps(dst + t * C, s[t]);
}

using OutTile = void (*)(const float*, const float*, int64_t, int64_t, int64_t, int64_t, int64_t, float*, int64_t);
constexpr int64_t WTILE = 8;  // outputs of a row computed at once (vector accumulators in registers)
constexpr OutTile OUT_TILE[WTILE + 1] = {
    nullptr, out_tile<1>, out_tile<2>, out_tile<3>, out_tile<4>, out_tile<5>, out_tile<6>, out_tile<7>, out_tile<8>};

at::Tensor depthwise_forward(const at::Tensor& x, const at::Tensor& w, int64_t ph, int64_t pw) {
  TORCH_CHECK(x.dim() == 4 && w.dim() == 4 && w.size(1) == 1 && w.size(0) == x.size(1),
              "depthwise_forward: x must be (N, C, H, W) and w (C, 1, kh, kw)");
  TORCH_CHECK(x.scalar_type() == at::kFloat && w.scalar_type() == at::kFloat && x.device().is_cpu() &&
                  w.device().is_cpu(),
              "depthwise_forward: float32 CPU tensors only");
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3), kh = w.size(2), kw = w.size(3);
  TORCH_CHECK(ph >= 0 && pw >= 0, "depthwise_forward: negative padding");
  const int64_t Ho = H + 2 * ph - kh + 1, Wo = W + 2 * pw - kw + 1;
  TORCH_CHECK(Ho >= 1 && Wo >= 1, "depthwise_forward: the kernel is larger than the padded map");
  TORCH_CHECK(C % LANES == 0, "depthwise_forward: channels must be a multiple of 8");
  TORCH_CHECK(x.is_contiguous(at::MemoryFormat::ChannelsLast), "depthwise_forward: x must be channels-last");
  auto out = at::empty({N, C, Ho, Wo}, x.options().memory_format(at::MemoryFormat::ChannelsLast));
  const int64_t Hp = H + 2 * ph, Wp = W + 2 * pw, blocks = C / LANES;
  // the weights as [C / 8][kh][kw][8]
  std::vector<float> wt(static_cast<size_t>(C * kh * kw));
  const auto wc = w.contiguous();
  const float* ws = wc.data_ptr<float>();
  for (int64_t c = 0; c < C; ++c)
    for (int64_t k = 0; k < kh * kw; ++k) wt[((c / LANES) * kh * kw + k) * LANES + c % LANES] = ws[c * kh * kw + k];
  const float* xs = x.data_ptr<float>();
  float* dst = out.data_ptr<float>();
  at::parallel_for(0, N * blocks, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> xb(static_cast<size_t>(Hp * Wp * LANES));
    for (int64_t item = begin; item < end; ++item) {
      const int64_t n = item / blocks, b = item % blocks;
      pack(xs, xb.data(), n, b, C, H, W, ph, pw);
      const float* wb = wt.data() + b * kh * kw * LANES;
      for (int64_t ho = 0; ho < Ho; ++ho) {
        float* row = dst + ((n * Ho + ho) * Wo) * C + b * LANES;
        for (int64_t wo = 0; wo < Wo; wo += WTILE) {
          OUT_TILE[std::min(WTILE, Wo - wo)](xb.data(), wb, Wp, kh, kw, ho, wo, row + wo * C, C);
        }
      }
    }
  });
  return out;
}

constexpr int64_t CHUNK = 4096;  // elements a partial sum of the scalar gradients

at::Tensor star_relu_forward(const at::Tensor& x, double s, double b) {
  TORCH_CHECK(x.scalar_type() == at::kFloat && x.device().is_cpu() && x.is_contiguous(),
              "star_relu_forward: a contiguous float32 CPU tensor only");
  auto out = at::empty_like(x);
  const float* xs = x.data_ptr<float>();
  float* o = out.data_ptr<float>();
  const int64_t n = x.numel();
  const __m256 sv = _mm256_set1_ps(static_cast<float>(s)), bv = _mm256_set1_ps(static_cast<float>(b));
  const __m256 zero = _mm256_setzero_ps();
  const float sf = static_cast<float>(s), bf = static_cast<float>(b);
  at::parallel_for(0, (n + CHUNK - 1) / CHUNK, 1, [&](int64_t c0, int64_t c1) {
    const int64_t end = std::min(n, c1 * CHUNK);
    int64_t k = c0 * CHUNK;
    for (; k + LANES <= end; k += LANES) {
      const __m256 r = _mm256_max_ps(_mm256_loadu_ps(xs + k), zero);
      _mm256_storeu_ps(o + k, _mm256_fmadd_ps(r, _mm256_mul_ps(r, sv), bv));
    }
    for (; k < end; ++k) {
      const float r = xs[k] > 0.0f ? xs[k] : 0.0f;
      o[k] = std::fma(r, r * sf, bf);
    }
  });
  return out;
}

// dx into dx (which may be g itself: each element is read before it is written), (dscale, dbias) returned, of
// s * relu(x)^2 + b given the output's gradient g
std::tuple<at::Tensor, at::Tensor> star_relu_grads(const at::Tensor& g, const at::Tensor& x, double s, at::Tensor& dx) {
  TORCH_CHECK(x.scalar_type() == at::kFloat && g.scalar_type() == at::kFloat && x.device().is_cpu() &&
                  g.device().is_cpu() && x.is_contiguous() && g.is_contiguous() && x.numel() == g.numel(),
              "star_relu_backward: contiguous float32 CPU tensors of one size only");
  const float* xs = x.data_ptr<float>();
  const float* gs = g.data_ptr<float>();
  float* d = dx.data_ptr<float>();
  const int64_t n = x.numel(), chunks = (n + CHUNK - 1) / CHUNK;
  std::vector<double> part_s(static_cast<size_t>(chunks)), part_b(static_cast<size_t>(chunks));
  const float s2 = static_cast<float>(2.0 * s);
  const __m256 s2v = _mm256_set1_ps(s2), zero = _mm256_setzero_ps();
  at::parallel_for(0, chunks, 1, [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) {
      const int64_t end = std::min(n, (c + 1) * CHUNK);
      int64_t k = c * CHUNK;
      __m256d ts0 = _mm256_setzero_pd(), ts1 = _mm256_setzero_pd(), tb0 = _mm256_setzero_pd(),
              tb1 = _mm256_setzero_pd();
      for (; k + LANES <= end; k += LANES) {
        const __m256 r = _mm256_max_ps(_mm256_loadu_ps(xs + k), zero);
        const __m256 gv = _mm256_loadu_ps(gs + k);
        const __m256 t = _mm256_mul_ps(gv, r);
        _mm256_storeu_ps(d + k, _mm256_mul_ps(t, s2v));
        const __m256 tr = _mm256_mul_ps(t, r);
        ts0 = _mm256_add_pd(ts0, _mm256_cvtps_pd(_mm256_castps256_ps128(tr)));
        ts1 = _mm256_add_pd(ts1, _mm256_cvtps_pd(_mm256_extractf128_ps(tr, 1)));
        tb0 = _mm256_add_pd(tb0, _mm256_cvtps_pd(_mm256_castps256_ps128(gv)));
        tb1 = _mm256_add_pd(tb1, _mm256_cvtps_pd(_mm256_extractf128_ps(gv, 1)));
      }
      double lanes[4], sum_s = 0.0, sum_b = 0.0;
      _mm256_storeu_pd(lanes, _mm256_add_pd(ts0, ts1));
      for (double v : lanes) sum_s += v;
      _mm256_storeu_pd(lanes, _mm256_add_pd(tb0, tb1));
      for (double v : lanes) sum_b += v;
      for (; k < end; ++k) {
        const float r = xs[k] > 0.0f ? xs[k] : 0.0f, gk = gs[k];
        const float t = gk * r;
        d[k] = t * s2;
        sum_s += static_cast<double>(t * r);
        sum_b += static_cast<double>(gk);
      }
      part_s[c] = sum_s;
      part_b[c] = sum_b;
    }
  });
  double total_s = 0.0, total_b = 0.0;
  for (int64_t c = 0; c < chunks; ++c) {
    total_s += part_s[c];
    total_b += part_b[c];
  }
  auto opts = x.options();
  return {at::full({1}, total_s, opts), at::full({1}, total_b, opts)};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> star_relu_backward(const at::Tensor& g, const at::Tensor& x, double s) {
  auto dx = at::empty_like(x);
  auto [ds, db] = star_relu_grads(g, x, s, dx);
  return {dx, ds, db};
}

// the same, dx written over g
std::tuple<at::Tensor, at::Tensor> star_relu_backward_(at::Tensor& g, const at::Tensor& x, double s) {
  return star_relu_grads(g, x, s, g);
}


// GELU, x Phi(x) = x (1 + erf(x / sqrt 2)) / 2, and its derivative Phi(x) + x phi(x) (phi the normal density), for
// the MLP products' epilogues and the elementwise calls. erf(z) = z P(z^2) / Q(z^2), P of degree 6 and Q of degree
// 5, z clamped to [-4, 4] and the result to [-1, 1]: float32's erf is +-1 beyond |z| = 3.84. The coefficients are
// the least-maximum-relative-error rational of tools/fit_erf.py (2.4e-9 in exact arithmetic); rounded to float32 and
// evaluated by Horner's fused multiply-adds, the kernel's erf is within ERF_ERROR of erf over every float32 (checked
// exhaustively by tests/kernels/test_vision_kernels.py), closer than ATen's (Abramowitz and Stegun's 7.1.26 with an
// exp). exp(t), t = -x^2 / 2 <= 0: t = n ln 2 + r, |r| <= ln 2 / 2 (ln 2 in two parts), a
// degree-7 Taylor polynomial of exp(r) (truncation below 8e-9 relative), times 2^n by the exponent's bits; zero
// below t = -87 (x phi(x) < 1e-36 there, and it keeps 2^n a normal float).
constexpr float ERF_P[7] = {1.128379225730896f,     0.185248464345932f,     0.05434365198016167f,
                            0.0038543257396668196f, 0.0003805606684181839f, 4.708211235993076e-06f,
                            -1.332341348359023e-08f};
constexpr float ERF_Q[6] = {1.0f, 0.4975055754184723f, 0.1139955073595047f, 0.015474587678909302f,
                            0.0013098404742777348f, 6.33366362308152e-05f};

__attribute__((always_inline)) inline __m256 erf8(__m256 x) {
  // (max and min return their second operand when either is NaN: x's NaN goes through)
  const __m256 z = _mm256_min_ps(_mm256_set1_ps(4.0f), _mm256_max_ps(_mm256_set1_ps(-4.0f), x));
  const __m256 s = _mm256_mul_ps(z, z);
  __m256 p = _mm256_set1_ps(ERF_P[6]), q = _mm256_set1_ps(ERF_Q[5]);
#pragma GCC unroll 6
  for (int k = 5; k >= 0; --k) p = _mm256_fmadd_ps(p, s, _mm256_set1_ps(ERF_P[k]));
#pragma GCC unroll 5
  for (int k = 4; k >= 0; --k) q = _mm256_fmadd_ps(q, s, _mm256_set1_ps(ERF_Q[k]));
  const __m256 r = _mm256_div_ps(_mm256_mul_ps(z, p), q);
  return _mm256_min_ps(_mm256_set1_ps(1.0f), _mm256_max_ps(_mm256_set1_ps(-1.0f), r));
}

__attribute__((always_inline)) inline __m256 exp8_nonpositive(__m256 t) {  // exp(t) for t <= 0 (NaN and t < -87: 0)
  const __m256 keep = _mm256_cmp_ps(t, _mm256_set1_ps(-87.0f), _CMP_GE_OQ);
  t = _mm256_max_ps(t, _mm256_set1_ps(-87.0f));
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(t, _mm256_set1_ps(1.44269504088896341f)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693145751953125f), t);  // ln 2's high part: 15 bits, exact n ln2_hi
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(1.428606765330187e-06f), r);
  __m256 e = _mm256_set1_ps(1.0f / 5040.0f);
  e = _mm256_fmadd_ps(e, r, _mm256_set1_ps(1.0f / 720.0f));
  e = _mm256_fmadd_ps(e, r, _mm256_set1_ps(1.0f / 120.0f));
  e = _mm256_fmadd_ps(e, r, _mm256_set1_ps(1.0f / 24.0f));
  e = _mm256_fmadd_ps(e, r, _mm256_set1_ps(1.0f / 6.0f));
  e = _mm256_fmadd_ps(e, r, _mm256_set1_ps(0.5f));
  e = _mm256_fmadd_ps(e, r, _mm256_set1_ps(1.0f));
  e = _mm256_fmadd_ps(e, r, _mm256_set1_ps(1.0f));
  const __m256i scale = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_and_ps(_mm256_mul_ps(e, _mm256_castsi256_ps(scale)), keep);
}

// GELU (x / 2) erf(x / sqrt 2) + x / 2 into act, and its slope (1 + erf(x / sqrt 2)) / 2 + x exp(-x^2 / 2) /
// sqrt(2 pi) into slope, with one erf
__attribute__((always_inline)) inline void gelu8(__m256 x, __m256& act, __m256& slope) {
  const __m256 half = _mm256_set1_ps(0.5f), e = erf8(_mm256_mul_ps(x, _mm256_set1_ps(0.70710678118654752f)));
  const __m256 hx = _mm256_mul_ps(x, half);
  act = _mm256_fmadd_ps(hx, e, hx);
  const __m256 t = _mm256_mul_ps(_mm256_mul_ps(x, x), _mm256_set1_ps(-0.5f));
  const __m256 pdf = _mm256_mul_ps(exp8_nonpositive(t), _mm256_set1_ps(0.39894228040143268f));
  slope = _mm256_fmadd_ps(x, pdf, _mm256_fmadd_ps(e, half, half));
}

// f(x, out0, out1) over every eight elements of x (the tail through a zero-padded vector); out1 may be null
template <typename F>
void map8(const at::Tensor& x, at::Tensor& out0, at::Tensor* out1, const char* name, F f) {
  TORCH_CHECK(x.scalar_type() == at::kFloat && x.device().is_cpu() && x.is_contiguous(), name,
              ": a contiguous float32 CPU tensor only");
  out0 = at::empty_like(x);
  if (out1) *out1 = at::empty_like(x);
  const float* xs = x.data_ptr<float>();
  float* o0 = out0.data_ptr<float>();
  float* o1 = out1 ? out1->data_ptr<float>() : nullptr;
  const int64_t n = x.numel();
  at::parallel_for(0, (n + CHUNK - 1) / CHUNK, 1, [&](int64_t c0, int64_t c1) {
    const int64_t end = std::min(n, c1 * CHUNK);
    __m256 a, b;
    int64_t k = c0 * CHUNK;
    for (; k + LANES <= end; k += LANES) {
      f(_mm256_loadu_ps(xs + k), a, b);
      _mm256_storeu_ps(o0 + k, a);
      if (o1) _mm256_storeu_ps(o1 + k, b);
    }
    if (k < end) {
      float in[LANES] = {}, r0[LANES], r1[LANES];
      std::copy(xs + k, xs + end, in);
      f(_mm256_loadu_ps(in), a, b);
      _mm256_storeu_ps(r0, a);
      _mm256_storeu_ps(r1, b);
      std::copy(r0, r0 + (end - k), o0 + k);
      if (o1) std::copy(r1, r1 + (end - k), o1 + k);
    }
  });
}

at::Tensor erf_kernel(const at::Tensor& x) {  // the kernels' erf, elementwise (their error is checked through it)
  at::Tensor out;
  map8(x, out, nullptr, "erf", [](__m256 v, __m256& e, __m256&) { e = erf8(v); });
  return out;
}

// (gelu(x), gelu'(x)), as matmul_gelu's epilogue computes them
std::tuple<at::Tensor, at::Tensor> gelu(const at::Tensor& x) {
  at::Tensor act, slope;
  map8(x, act, &slope, "gelu", [](__m256 v, __m256& a, __m256& s) { gelu8(v, a, s); });
  return {act, slope};
}

constexpr int64_t MR = 6;       // rows of a product tile
constexpr int64_t NR = 16;      // columns of a product tile (two vectors), the packed panels' width
constexpr int64_t MBLOCK = 48;  // rows a task: their A rows stay in L1/L2 while every panel passes over them
constexpr int64_t MIN_TASKS = 16;  // fewer row blocks than this: each split into groups of panels

// What a product tile does with its sums y before they are stored (any of, each optional):
struct Epilogue {
  const float* bias = nullptr;  // y + bias (a vector of the tile's columns)
  float* act = nullptr;         // and s * relu(y)^2 + sb written to act (C's layout), as star_relu_forward rounds it
  float s = 0.0f, sb = 0.0f;
  const float* h = nullptr;  // or StarReLU's backward given its input h (C's layout): (y relu(h)) 2s stored in
  float s2 = 0.0f;           // place of y, and sum (y relu(h)) relu(h) and sum y added in float64 to sums[0], [1]
  double* sums = nullptr;
  bool gelu = false;  // GELU in place of StarReLU: act = gelu(y), and gelu'(y) stored in place of y, as gelu() gives
  const float* times = nullptr;  // or y times[...] stored (C's layout): GELU's backward given its slope
};

// acc (MROWS x NV vectors) = sum over k of A[r][k] * P[k][0 .. 8 NV), then the epilogue, stored to C (row stride
// ldc; the epilogue's act and h have the same)
template <int MROWS, int NV>
inline void product_tile(const float* A, int64_t lda, const float* P, int64_t K, float* C, int64_t ldc,
                         const Epilogue& e) {
  __m256 acc[MROWS][NV];
#pragma GCC unroll 6
  for (int r = 0; r < MROWS; ++r)
#pragma GCC unroll 2
    for (int v = 0; v < NV; ++v) acc[r][v] = _mm256_setzero_ps();
  const float* a[MROWS];
#pragma GCC unroll 6
  for (int r = 0; r < MROWS; ++r) {
    a[r] = A + r * lda;
    _mm_prefetch(reinterpret_cast<const char*>(C + r * ldc), _MM_HINT_T0);  // its output lines, while it sums
    if (e.h) _mm_prefetch(reinterpret_cast<const char*>(e.h + r * ldc), _MM_HINT_T0);
    if (e.times) _mm_prefetch(reinterpret_cast<const char*>(e.times + r * ldc), _MM_HINT_T0);
  }
  for (int64_t k = 0; k < K; ++k) {
    __m256 b[NV];
#pragma GCC unroll 2
    for (int v = 0; v < NV; ++v) b[v] = _mm256_loadu_ps(P + k * NV * LANES + v * LANES);
#pragma GCC unroll 6
    for (int r = 0; r < MROWS; ++r) {
      const __m256 x = _mm256_broadcast_ss(a[r] + k);
#pragma GCC unroll 2
      for (int v = 0; v < NV; ++v) acc[r][v] = _mm256_fmadd_ps(x, b[v], acc[r][v]);
    }
  }
  const __m256 zero = _mm256_setzero_ps();
  if (e.times) {
#pragma GCC unroll 6
    for (int r = 0; r < MROWS; ++r)
#pragma GCC unroll 2
      for (int v = 0; v < NV; ++v)
        _mm256_storeu_ps(C + r * ldc + v * LANES,
                         _mm256_mul_ps(acc[r][v], _mm256_loadu_ps(e.times + r * ldc + v * LANES)));
    return;
  }
  if (e.h) {  // StarReLU's backward, as star_relu_grads computes it
    const __m256 s2v = _mm256_set1_ps(e.s2);
    __m256d ts[2] = {_mm256_setzero_pd(), _mm256_setzero_pd()}, tb[2] = {_mm256_setzero_pd(), _mm256_setzero_pd()};
#pragma GCC unroll 6
    for (int r = 0; r < MROWS; ++r)
#pragma GCC unroll 2
      for (int v = 0; v < NV; ++v) {
        const __m256 y = acc[r][v], relu = _mm256_max_ps(_mm256_loadu_ps(e.h + r * ldc + v * LANES), zero);
        const __m256 t = _mm256_mul_ps(y, relu), tr = _mm256_mul_ps(t, relu);
        _mm256_storeu_ps(C + r * ldc + v * LANES, _mm256_mul_ps(t, s2v));
        ts[r & 1] = _mm256_add_pd(ts[r & 1], _mm256_add_pd(_mm256_cvtps_pd(_mm256_castps256_ps128(tr)),
                                                           _mm256_cvtps_pd(_mm256_extractf128_ps(tr, 1))));
        tb[r & 1] = _mm256_add_pd(tb[r & 1], _mm256_add_pd(_mm256_cvtps_pd(_mm256_castps256_ps128(y)),
                                                           _mm256_cvtps_pd(_mm256_extractf128_ps(y, 1))));
      }
    double lanes[4];
    _mm256_storeu_pd(lanes, _mm256_add_pd(ts[0], ts[1]));
    e.sums[0] += (lanes[0] + lanes[1]) + (lanes[2] + lanes[3]);
    _mm256_storeu_pd(lanes, _mm256_add_pd(tb[0], tb[1]));
    e.sums[1] += (lanes[0] + lanes[1]) + (lanes[2] + lanes[3]);
    return;
  }
  const __m256 sv = _mm256_set1_ps(e.s), bv = _mm256_set1_ps(e.sb);
#pragma GCC unroll 6
  for (int r = 0; r < MROWS; ++r)
#pragma GCC unroll 2
    for (int v = 0; v < NV; ++v) {
      const __m256 y = e.bias ? _mm256_add_ps(acc[r][v], _mm256_loadu_ps(e.bias + v * LANES)) : acc[r][v];
      _mm256_storeu_ps(C + r * ldc + v * LANES, y);
      if (e.act && !e.gelu) {
        const __m256 relu = _mm256_max_ps(y, zero);
        _mm256_storeu_ps(e.act + r * ldc + v * LANES, _mm256_fmadd_ps(relu, _mm256_mul_ps(relu, sv), bv));
      }
    }
  if (e.gelu)  // from the stored sums (in L1), the accumulators' registers free for GELU's constants
    for (int r = 0; r < MROWS; ++r)
      for (int v = 0; v < NV; ++v) {
        __m256 act, slope;
        gelu8(_mm256_loadu_ps(C + r * ldc + v * LANES), act, slope);
        _mm256_storeu_ps(C + r * ldc + v * LANES, slope);
        _mm256_storeu_ps(e.act + r * ldc + v * LANES, act);
      }
}

template <int NV>
using ProductTile = void (*)(const float*, int64_t, const float*, int64_t, float*, int64_t, const Epilogue&);
template <int NV>
constexpr ProductTile<NV> PRODUCT_TILE[MR + 1] = {nullptr, product_tile<1, NV>, product_tile<2, NV>,
                                                  product_tile<3, NV>, product_tile<4, NV>, product_tile<5, NV>,
                                                  product_tile<6, NV>};

// out = a b with the epilogue `like` (its pointers are the whole tensors': bias (N), act and h (M, N) contiguous);
// returns the float64 sums of a backward epilogue, added over the tasks in order
std::pair<double, double> product(const at::Tensor& a, const at::Tensor& b, at::Tensor& out, const Epilogue& like,
                                  const char* name) {
  TORCH_CHECK(a.scalar_type() == at::kFloat && b.scalar_type() == at::kFloat && a.device().is_cpu() &&
                  b.device().is_cpu() && a.dim() == 2 && b.dim() == 2 && a.size(1) == b.size(0),
              name, ": float32 CPU matrices (M, K) and (K, N) only");
  TORCH_CHECK(a.stride(1) == 1 || a.size(1) <= 1, name, ": the first operand's rows must be contiguous");
  const int64_t M = a.size(0), K = a.size(1), N = b.size(1);
  out = at::empty({M, N}, a.options());
  if (M == 0 || N == 0) return {0.0, 0.0};
  const int64_t panels = (N + NR - 1) / NR;
  // panel p: columns [16 p, 16 p + w), w = 16, or 8 for a last panel of at most 8 columns; zero beyond N
  std::vector<float> packed(static_cast<size_t>(panels * NR * std::max<int64_t>(K, 1)), 0.0f);
  const float* bp = b.data_ptr<float>();
  const int64_t sbk = b.stride(0), sbn = b.stride(1);
  auto width = [&](int64_t p) { return N - p * NR > LANES ? NR : LANES; };
  at::parallel_for(0, panels, 1, [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; ++p) {
      const int64_t w = width(p), cols = std::min(NR, N - p * NR);
      float* dst = packed.data() + p * NR * K;
      const float* src = bp + p * NR * sbn;
      if (sbn == 1) {  // B's rows contiguous: copy each row's 16 columns
        for (int64_t k = 0; k < K; ++k) std::copy(src + k * sbk, src + k * sbk + cols, dst + k * w);
      } else {  // a transposed weight: read each column's K values in place
        for (int64_t t = 0; t < cols; ++t)
          for (int64_t k = 0; k < K; ++k) dst[k * w + t] = src[t * sbn + k * sbk];
      }
    }
  });
  const float* as = a.data_ptr<float>();
  const int64_t lda = K <= 1 ? std::max<int64_t>(K, 1) : a.stride(0);
  float* c = out.data_ptr<float>();
  // A task: one row block and one group of its panels. Few row blocks (a late stage's few hundred token rows) are
  // split into groups of panels, so that every thread has work; how many depends on the shape alone, so the sums'
  // grouping, and the result, is the same on any thread count.
  const int64_t blocks = (M + MBLOCK - 1) / MBLOCK;
  const int64_t groups = std::clamp<int64_t>((MIN_TASKS + blocks - 1) / blocks, 1, panels);
  std::vector<double> task_sums(static_cast<size_t>(2 * blocks * groups), 0.0);
  at::parallel_for(0, blocks * groups, 1, [&](int64_t t0, int64_t t1) {
    float edge[MR * NR], edge_act[MR * NR], edge_h[MR * NR], edge_bias[NR];
    for (int64_t task = t0; task < t1; ++task) {
      const int64_t blk = task / groups, group = task % groups;
      const int64_t i0 = blk * MBLOCK, i1 = std::min(M, i0 + MBLOCK);
      for (int64_t p = panels * group / groups; p < panels * (group + 1) / groups; ++p) {
        const int64_t j = p * NR, w = width(p), cols = std::min(NR, N - j);
        const bool whole = cols == w;  // else through the edge buffers, zero-padded
        const float* panel = packed.data() + p * NR * K;
        Epilogue e = like;
        e.sums = task_sums.data() + 2 * task;
        if (like.bias) {
          e.bias = like.bias + j;
          if (!whole) {
            std::fill(edge_bias, edge_bias + NR, 0.0f);
            std::copy(like.bias + j, like.bias + j + cols, edge_bias);
            e.bias = edge_bias;
          }
        }
        for (int64_t i = i0; i < i1; i += MR) {
          const int64_t rows = std::min(MR, i1 - i);
          const int64_t ldc = whole ? N : NR;
          float* dst = whole ? c + i * N + j : edge;
          if (like.act) e.act = whole ? like.act + i * N + j : edge_act;
          for (auto [in, at] : {std::pair{like.h, &e.h}, std::pair{like.times, &e.times}}) {
            if (!in) continue;
            *at = in + i * N + j;
            if (!whole) {  // (h and times are never both given)
              std::fill(edge_h, edge_h + MR * NR, 0.0f);
              for (int64_t r = 0; r < rows; ++r) std::copy(*at + r * N, *at + r * N + cols, edge_h + r * NR);
              *at = edge_h;
            }
          }
          if (w == NR) PRODUCT_TILE<2>[rows](as + i * lda, lda, panel, K, dst, ldc, e);
          else PRODUCT_TILE<1>[rows](as + i * lda, lda, panel, K, dst, ldc, e);
          if (!whole)
            for (int64_t r = 0; r < rows; ++r) {
              std::copy(edge + r * NR, edge + r * NR + cols, c + (i + r) * N + j);
              if (like.act) std::copy(edge_act + r * NR, edge_act + r * NR + cols, like.act + (i + r) * N + j);
            }
        }
      }
    }
  });
  double total_s = 0.0, total_b = 0.0;
  for (int64_t task = 0; task < blocks * groups; ++task) {
    total_s += task_sums[2 * task];
    total_b += task_sums[2 * task + 1];
  }
  return {total_s, total_b};
}

const float* bias_of(const std::optional<at::Tensor>& bias, int64_t n, const char* name) {
  if (!bias.has_value()) return nullptr;
  TORCH_CHECK(bias->scalar_type() == at::kFloat && bias->dim() == 1 && bias->size(0) == n && bias->is_contiguous(),
              name, ": the bias must be a contiguous float32 vector of the output's width");
  return bias->data_ptr<float>();
}

at::Tensor matmul(const at::Tensor& a, const at::Tensor& b, const std::optional<at::Tensor>& bias) {
  Epilogue e;
  e.bias = bias_of(bias, b.size(-1), "matmul");
  at::Tensor out;
  product(a, b, out, e, "matmul");
  return out;
}

// (h, s * relu(h)^2 + sb) of h = a b (+ bias): an MLP's first layer and its StarReLU in one pass over the output
std::tuple<at::Tensor, at::Tensor> matmul_star_relu(const at::Tensor& a, const at::Tensor& b,
                                                    const std::optional<at::Tensor>& bias, double s, double sb) {
  Epilogue e;
  e.bias = bias_of(bias, b.size(-1), "matmul_star_relu");
  auto act = at::empty({a.size(0), b.size(-1)}, a.options());
  e.act = act.data_ptr<float>();
  e.s = static_cast<float>(s);
  e.sb = static_cast<float>(sb);
  at::Tensor out;
  product(a, b, out, e, "matmul_star_relu");
  return {out, act};
}

// (gelu(h), gelu'(h)) of h = a b (+ bias): an MLP's first layer and its GELU in one pass over the output, h
// itself not kept (the backward needs only the slope)
std::tuple<at::Tensor, at::Tensor> matmul_gelu(const at::Tensor& a, const at::Tensor& b,
                                               const std::optional<at::Tensor>& bias) {
  Epilogue e;
  e.bias = bias_of(bias, b.size(-1), "matmul_gelu");
  auto act = at::empty({a.size(0), b.size(-1)}, a.options());
  e.act = act.data_ptr<float>();
  e.gelu = true;
  at::Tensor slope;
  product(a, b, slope, e, "matmul_gelu");
  return {act, slope};
}

// (g w) d elementwise: GELU's backward through an MLP's second layer, d its slope
at::Tensor matmul_times(const at::Tensor& g, const at::Tensor& w, const at::Tensor& d) {
  TORCH_CHECK(d.scalar_type() == at::kFloat && d.is_contiguous() && d.dim() == 2 && g.dim() == 2 && w.dim() == 2 &&
                  d.size(0) == g.size(0) && d.size(1) == w.size(1),
              "matmul_times: d must be a contiguous float32 (M, N) matrix, N the product's width");
  Epilogue e;
  e.times = d.data_ptr<float>();
  at::Tensor out;
  product(g, w, out, e, "matmul_times");
  return out;
}

// g^T x, a Linear layer's weights' gradient from its output's gradient g (M, N) and its input x (M, K) over M token
// rows: the rows split into one contiguous part a thread, each part's product by the BLAS on that thread alone, and
// the parts' (N, K) sums added in order. Over thousands of rows and a few hundred columns the BLAS's own threads
// split the product's few outputs rather than its long sum, and scale poorly.
at::Tensor weight_grad(const at::Tensor& g, const at::Tensor& x) {
  TORCH_CHECK(g.scalar_type() == at::kFloat && x.scalar_type() == at::kFloat && g.device().is_cpu() &&
                  x.device().is_cpu() && g.dim() == 2 && x.dim() == 2 && g.size(0) == x.size(0),
              "weight_grad: float32 CPU matrices (M, N) and (M, K) only");
  const int64_t M = g.size(0);
  const int64_t parts = std::clamp<int64_t>(M / 512, 1, at::get_num_threads());
  auto gd = g.detach(), xd = x.detach();
  if (parts == 1 || at::in_parallel_region()) return at::mm(gd.t(), xd);
  std::vector<at::Tensor> sums(static_cast<size_t>(parts));
  at::parallel_for(0, parts, 1, [&](int64_t p0, int64_t p1) {
    c10::NoGradGuard no_grad;
    for (int64_t p = p0; p < p1; ++p) {
      const int64_t r0 = M * p / parts, r1 = M * (p + 1) / parts;
      sums[p] = at::mm(gd.slice(0, r0, r1).t(), xd.slice(0, r0, r1));
    }
  });
  for (int64_t p = 1; p < parts; ++p) sums[0].add_(sums[p]);
  return sums[0];
}

// StarReLU's backward through an MLP's second layer: y = g w (the hidden gradient), then (y relu(h)) 2s and the
// scalars' gradients sum (y relu(h)) relu(h) and sum y, as star_relu_backward gives them of y and h
std::tuple<at::Tensor, at::Tensor, at::Tensor> matmul_star_relu_backward(const at::Tensor& g, const at::Tensor& w,
                                                                         const at::Tensor& h, double s) {
  TORCH_CHECK(h.scalar_type() == at::kFloat && h.is_contiguous() && h.dim() == 2 && g.dim() == 2 && w.dim() == 2 &&
                  h.size(0) == g.size(0) && h.size(1) == w.size(1),
              "matmul_star_relu_backward: h must be a contiguous float32 (M, N) matrix, N the product's width");
  Epilogue e;
  e.h = h.data_ptr<float>();
  e.s2 = static_cast<float>(2.0 * s);
  at::Tensor out;
  auto [ds, db] = product(g, w, out, e, "matmul_star_relu_backward");
  auto opts = h.options();
  return {out, at::full({1}, ds, opts), at::full({1}, db, opts)};
}

// Multi-head self-attention softmax(q k^T / sqrt d) v over each image's N tokens, q, k and v read in place from the
// qkv product (B, N, 3 C), C = heads d: a token's q for every head, then its k, then its v. A task is one head of one
// image, so every output is computed by one thread in a fixed order (the result does not depend on the thread
// count). Its N x N scores stay in the task's buffer, in L2 for a stage's few hundred tokens, and each product is the
// tiles above: the scores S = q k^T (k packed as the panels of its transpose), then row by row x = S / sqrt d
// rounded, m = max x, e = exp(x - m) by the kernels' exp, l = sum e (eight float32 lanes, then across them); the
// output (e v) / l, one float32 accumulator an output and the division a multiply by 1 / l; and m + log l kept for
// the backward. The backward recomputes the scores transposed, k q^T, whose every sum is the same fused
// multiply-adds in the same order as q k^T's (the same bits), so P^T = exp(x - (m + log l)) key by key, and
//   dP^T = v dO^T, dS^T = P^T (dP^T - D) / sqrt d with D_i = sum_t dO_it O_it,
//   dv = P^T dO, dk = dS^T q, dq^T = k^T dS^T,
// each a product of the tiles over the task's buffers; the gradients are written into (B, N, 3 C), qkv's layout.
// Heads of 16 to 256 channels, a multiple of 16.

// the (n, d) matrix x (row stride ld) as the panels of its transpose: panel p, row k holds x[16 p + t][k], t < 16;
// zero beyond row n
void pack_transposed(const float* x, int64_t ld, int64_t n, int64_t d, float* dst) {
  const int64_t panels = (n + NR - 1) / NR;
  std::fill(dst, dst + panels * NR * d, 0.0f);
  for (int64_t i = 0; i < n; ++i) {
    float* col = dst + (i / NR) * NR * d + i % NR;
    const float* row = x + i * ld;
    if (i + 8 < n)  // rows thousands of bytes apart (a head's slice of qkv): each line fetched 8 rows ahead
      for (int64_t k = 0; k < d; k += 16)
        _mm_prefetch(reinterpret_cast<const char*>(row + 8 * ld + k), _MM_HINT_T0);
    for (int64_t k = 0; k < d; ++k) col[k * NR] = row[k];
  }
}

// the (n, w) matrix x (row stride ld, w a multiple of 16) as its panels of 16 columns: panel p, row k holds
// x[k][16 p + t], t < 16
void pack_rows(const float* x, int64_t ld, int64_t n, int64_t w, float* dst) {
  for (int64_t p = 0; p < w / NR; ++p)
    for (int64_t k = 0; k < n; ++k) std::copy(x + k * ld + p * NR, x + k * ld + p * NR + NR, dst + (p * n + k) * NR);
}

// C (m rows, row stride ldc) = A (m x K, row stride lda) times a packed B of `panels` panels of K rows
void tiles(const float* A, int64_t lda, int64_t m, const float* packed, int64_t K, int64_t panels, float* C,
           int64_t ldc) {
  const Epilogue plain;
  for (int64_t p = 0; p < panels; ++p)
    for (int64_t i = 0; i < m; i += MR)
      PRODUCT_TILE<2>[std::min(MR, m - i)](A + i * lda, lda, packed + p * NR * K, K, C + i * ldc + p * NR, ldc,
                                           plain);
}

struct Heads {
  int64_t B, N, C, heads, d, panels, width;  // width: N rounded up to the panels' 16
  float scale;
};

Heads heads_of(const at::Tensor& qkv, int64_t heads, const char* name) {
  TORCH_CHECK(qkv.scalar_type() == at::kFloat && qkv.device().is_cpu() && qkv.dim() == 3 && qkv.is_contiguous(),
              name, ": qkv must be a contiguous float32 CPU tensor (B, N, 3 C)");
  TORCH_CHECK(heads > 0 && qkv.size(2) % (3 * heads) == 0, name, ": qkv's last size (", qkv.size(2),
              ") must be 3 heads d with heads = ", heads);
  Heads h{qkv.size(0), qkv.size(1), qkv.size(2) / 3, heads, qkv.size(2) / (3 * heads), 0, 0, 0.0f};
  TORCH_CHECK(h.d % NR == 0 && h.d >= NR && h.d <= 256, name, ": a head's width (", h.d,
              ") must be a multiple of 16, from 16 to 256");
  h.panels = (h.N + NR - 1) / NR;
  h.width = h.panels * NR;
  h.scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(h.d)));
  return h;
}

// (out (B, N, C), lse (B, heads, N)): each head's softmax(q k^T / sqrt d) v, and each row's m + log l
std::tuple<at::Tensor, at::Tensor> attention(const at::Tensor& qkv, int64_t heads) {
  const Heads a = heads_of(qkv, heads, "attention");
  const int64_t N = a.N, d = a.d, W = a.width, C = a.C, ld = 3 * C;
  auto out = at::empty({a.B, N, C}, qkv.options());
  auto lse = at::empty({a.B, a.heads, N}, qkv.options());
  const float* x = qkv.data_ptr<float>();
  float* o = out.data_ptr<float>();
  float* ls = lse.data_ptr<float>();
  at::parallel_for(0, a.B * a.heads, 1, [&](int64_t t0, int64_t t1) {
    std::vector<float> S(static_cast<size_t>(N * W)), kt(static_cast<size_t>(W * d)), vp(static_cast<size_t>(N * d));
    std::vector<float> inv(static_cast<size_t>(N));
    const __m256 sv = _mm256_set1_ps(a.scale);
    for (int64_t task = t0; task < t1; ++task) {
      const int64_t b = task / a.heads, h = task % a.heads;
      const float* q = x + b * N * ld + h * d;
      pack_transposed(q + C, ld, N, d, kt.data());
      tiles(q, ld, N, kt.data(), d, a.panels, S.data(), W);
      for (int64_t i = 0; i < N; ++i) {
        float* row = S.data() + i * W;
        std::fill(row + N, row + W, -INFINITY);  // the padding columns: exp gives 0
        __m256 mv = _mm256_set1_ps(-INFINITY), nan = _mm256_setzero_ps();
        for (int64_t j = 0; j < W; j += LANES) {
          const __m256 s = _mm256_loadu_ps(row + j);
          mv = _mm256_max_ps(mv, s);
          nan = _mm256_or_ps(nan, _mm256_cmp_ps(s, s, _CMP_UNORD_Q));
        }
        const float m = a.scale * max8(mv);  // x's max: rounding is monotonic
        const __m256 mm = _mm256_set1_ps(m);
        __m256 lv = _mm256_setzero_ps();
        for (int64_t j = 0; j < W; j += LANES) {
          const __m256 e = exp8_nonpositive(_mm256_sub_ps(_mm256_mul_ps(_mm256_loadu_ps(row + j), sv), mm));
          _mm256_storeu_ps(row + j, e);
          lv = _mm256_add_ps(lv, e);
        }
        // a NaN or infinite score makes the row's output NaN, as the operators' softmax does
        const bool finite = _mm256_movemask_ps(nan) == 0 && std::isfinite(m);
        const float l = sum8(lv);
        inv[i] = finite ? 1.0f / l : NAN;
        ls[task * N + i] = finite ? m + std::log(l) : NAN;
      }
      pack_rows(q + 2 * C, ld, N, d, vp.data());
      float* oh = o + b * N * C + h * d;
      tiles(S.data(), W, N, vp.data(), N, d / NR, oh, C);
      for (int64_t i = 0; i < N; ++i) {
        const __m256 r = _mm256_set1_ps(inv[i]);
        for (int64_t t = 0; t < d; t += LANES)
          _mm256_storeu_ps(oh + i * C + t, _mm256_mul_ps(_mm256_loadu_ps(oh + i * C + t), r));
      }
    }
  });
  return {out, lse};
}

// qkv's gradient (B, N, 3 C) given out's gradient g (B, N, C), and attention's out and lse
at::Tensor attention_backward(const at::Tensor& g, const at::Tensor& qkv, const at::Tensor& out,
                              const at::Tensor& lse, int64_t heads) {
  const Heads a = heads_of(qkv, heads, "attention_backward");
  const int64_t N = a.N, d = a.d, W = a.width, C = a.C, ld = 3 * C;
  for (const at::Tensor* t : {&g, &out})
    TORCH_CHECK(t->scalar_type() == at::kFloat && t->is_contiguous() && t->dim() == 3 && t->size(0) == a.B &&
                    t->size(1) == N && t->size(2) == C,
                "attention_backward: the output and its gradient must be contiguous float32 (B, N, C) tensors");
  TORCH_CHECK(lse.scalar_type() == at::kFloat && lse.is_contiguous() && lse.numel() == a.B * a.heads * N,
              "attention_backward: lse must be attention's own (B, heads, N)");
  auto gqkv = at::empty_like(qkv);
  const float* x = qkv.data_ptr<float>();
  const float* gs = g.data_ptr<float>();
  const float* os = out.data_ptr<float>();
  const float* ls = lse.data_ptr<float>();
  float* gx = gqkv.data_ptr<float>();
  at::parallel_for(0, a.B * a.heads, 1, [&](int64_t t0, int64_t t1) {
    std::vector<float> PT(static_cast<size_t>(N * W)), DT(static_cast<size_t>(N * W));
    std::vector<float> qt(static_cast<size_t>(W * d)), gt(static_cast<size_t>(W * d));
    std::vector<float> gp(static_cast<size_t>(N * d)), qp(static_cast<size_t>(N * d));
    std::vector<float> kt(static_cast<size_t>(d * N)), dqt(static_cast<size_t>(d * W));
    std::vector<float> D(static_cast<size_t>(W), 0.0f), L(static_cast<size_t>(W), INFINITY);
    const __m256 sv = _mm256_set1_ps(a.scale);
    for (int64_t task = t0; task < t1; ++task) {
      const int64_t b = task / a.heads, h = task % a.heads;
      const float* q = x + b * N * ld + h * d;
      const float *k = q + C, *v = q + 2 * C;
      const float* go = gs + b * N * C + h * d;
      const float* oh = os + b * N * C + h * d;
      float* gq = gx + b * N * ld + h * d;
      for (int64_t i = 0; i < N; ++i) {
        __m256 s = _mm256_setzero_ps();
        for (int64_t t = 0; t < d; t += LANES)
          s = _mm256_fmadd_ps(_mm256_loadu_ps(go + i * C + t), _mm256_loadu_ps(oh + i * C + t), s);
        D[i] = sum8(s);
        L[i] = ls[task * N + i];
      }
      pack_transposed(q, ld, N, d, qt.data());
      pack_transposed(go, C, N, d, gt.data());
      tiles(k, ld, N, qt.data(), d, a.panels, PT.data(), W);  // S^T: the forward's sums, the same bits
      tiles(v, ld, N, gt.data(), d, a.panels, DT.data(), W);  // dP^T
      for (int64_t j = 0; j < N; ++j) {
        float *p = PT.data() + j * W, *dp = DT.data() + j * W;
        for (int64_t i = 0; i < W; i += LANES) {  // the padding columns: L = inf, so P = 0 and dS = 0
          const __m256 e = exp8_nonpositive(
              _mm256_sub_ps(_mm256_mul_ps(_mm256_loadu_ps(p + i), sv), _mm256_loadu_ps(L.data() + i)));
          _mm256_storeu_ps(p + i, e);
          const __m256 diff = _mm256_sub_ps(_mm256_loadu_ps(dp + i), _mm256_loadu_ps(D.data() + i));
          _mm256_storeu_ps(dp + i, _mm256_mul_ps(_mm256_mul_ps(e, diff), sv));
        }
      }
      pack_rows(go, C, N, d, gp.data());
      pack_rows(q, ld, N, d, qp.data());
      tiles(PT.data(), W, N, gp.data(), N, d / NR, gq + 2 * C, ld);  // dv
      tiles(DT.data(), W, N, qp.data(), N, d / NR, gq + C, ld);      // dk
      for (int64_t j = 0; j < N; ++j)
        for (int64_t t = 0; t < d; ++t) kt[t * N + j] = k[j * ld + t];
      pack_rows(DT.data(), W, N, W, PT.data());  // dS^T's panels, where P^T was
      tiles(kt.data(), N, d, PT.data(), N, a.panels, dqt.data(), W);  // dq^T
      for (int64_t i = 0; i < N; ++i)
        for (int64_t t = 0; t < d; ++t) gq[i * ld + t] = dqt[t * W + i];
    }
  });
  return gqkv;
}

}  // namespace

TORCH_LIBRARY(zoo_vision, m) {
  m.def("depthwise_forward(Tensor x, Tensor w, int ph, int pw) -> Tensor");
  m.def("depthwise_weight_grad(Tensor x, Tensor g, int kh, int kw, int ph, int pw) -> Tensor");
  m.def("star_relu_forward(Tensor x, float s, float b) -> Tensor");
  m.def("star_relu_backward(Tensor g, Tensor x, float s) -> (Tensor, Tensor, Tensor)");
  m.def("star_relu_backward_(Tensor(a!) g, Tensor x, float s) -> (Tensor, Tensor)");
  m.def("matmul(Tensor a, Tensor b, Tensor? bias=None) -> Tensor");
  m.def("matmul_star_relu(Tensor a, Tensor b, Tensor? bias, float s, float sb) -> (Tensor, Tensor)");
  m.def("matmul_star_relu_backward(Tensor g, Tensor w, Tensor h, float s) -> (Tensor, Tensor, Tensor)");
  m.def("erf(Tensor x) -> Tensor");
  m.def("gelu(Tensor x) -> (Tensor, Tensor)");
  m.def("matmul_gelu(Tensor a, Tensor b, Tensor? bias) -> (Tensor, Tensor)");
  m.def("matmul_times(Tensor g, Tensor w, Tensor d) -> Tensor");
  m.def("weight_grad(Tensor g, Tensor x) -> Tensor");
  m.def("attention(Tensor qkv, int heads) -> (Tensor, Tensor)");
  m.def("attention_backward(Tensor g, Tensor qkv, Tensor out, Tensor lse, int heads) -> Tensor");
}

TORCH_LIBRARY_IMPL(zoo_vision, CPU, m) {
  m.impl("depthwise_forward", depthwise_forward);
  m.impl("depthwise_weight_grad", depthwise_weight_grad);
  m.impl("star_relu_forward", star_relu_forward);
  m.impl("star_relu_backward", star_relu_backward);
  m.impl("star_relu_backward_", star_relu_backward_);
  m.impl("matmul", matmul);
  m.impl("matmul_star_relu", matmul_star_relu);
  m.impl("matmul_star_relu_backward", matmul_star_relu_backward);
  m.impl("erf", erf_kernel);
  m.impl("gelu", gelu);
  m.impl("matmul_gelu", matmul_gelu);
  m.impl("matmul_times", matmul_times);
  m.impl("weight_grad", weight_grad);
  m.impl("attention", attention);
  m.impl("attention_backward", attention_backward);
}
