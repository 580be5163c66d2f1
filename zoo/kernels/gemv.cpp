// the headers of the names used here, not ATen.h, which would add about 12 s to each fresh build (42 s against 30)
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <ATen/Parallel.h>
#include <ATen/cpu/vec/vec.h>
#include <immintrin.h>
#include <torch/library.h>

#include "simd.h"  // kBlock and the lane sums, shared with gemv_a8.h

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>
#include <tuple>
#include <vector>

namespace {

constexpr int64_t kGrain = 16;  // output rows per parallel task

// x (K,) as int16 per block of 32 columns: x ~ d[b] * xq (rounded to nearest, ties to even)
void round_x16(const float* x, int64_t K, int16_t* xq, float* d) {
  const __m256 sign = _mm256_set1_ps(-0.0f);
  for (int64_t b = 0; b < K / kBlock; ++b) {
    const float* xb = x + b * kBlock;
    __m256 top = _mm256_setzero_ps();
    for (int64_t c = 0; c < kBlock; c += 8) top = _mm256_max_ps(top, _mm256_andnot_ps(sign, _mm256_loadu_ps(xb + c)));
    const float m = max8(top);
    d[b] = m / 32767.0f;
    const __m256 inv = _mm256_set1_ps(m > 0.0f ? 32767.0f / m : 0.0f);
    for (int64_t c = 0; c < kBlock; c += 16) {
      const __m256i lo = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(xb + c), inv));
      const __m256i hi = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(xb + c + 8), inv));
      const __m256i packed = _mm256_permute4x64_epi64(_mm256_packs_epi32(lo, hi), 0xD8);  // lanes back in order
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(xq + b * kBlock + c), packed);
    }
  }
}

// one weight row's product with x: four independent chains of fma, 128 bytes of the row a turn (1.04-1.07x over
// two chains), then their sum; lane j of chain i sums the columns 32t + 8i + j
inline float sum_chains(__m256 a0, __m256 a1, __m256 a2, __m256 a3, const float* row, const float* xp, int64_t k,
                        int64_t K) {  // the columns past the whole turns of 32 (k on), then the four chains' sum
  for (; k + 8 <= K; k += 8) a0 = _mm256_fmadd_ps(_mm256_loadu_ps(row + k), _mm256_loadu_ps(xp + k), a0);
  float s = sum8(_mm256_add_ps(_mm256_add_ps(a0, a2), _mm256_add_ps(a1, a3)));
  for (; k < K; ++k) s = std::fma(row[k], xp[k], s);  // one rounding, whatever the function's target
  return s;
}

inline float dot_f32(const float* row, const float* xp, int64_t K) {
  __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps(), a2 = _mm256_setzero_ps(), a3 = _mm256_setzero_ps();
  int64_t k = 0;
  for (; k + 32 <= K; k += 32) {
    a0 = _mm256_fmadd_ps(_mm256_loadu_ps(row + k), _mm256_loadu_ps(xp + k), a0);
    a1 = _mm256_fmadd_ps(_mm256_loadu_ps(row + k + 8), _mm256_loadu_ps(xp + k + 8), a1);
    a2 = _mm256_fmadd_ps(_mm256_loadu_ps(row + k + 16), _mm256_loadu_ps(xp + k + 16), a2);
    a3 = _mm256_fmadd_ps(_mm256_loadu_ps(row + k + 24), _mm256_loadu_ps(xp + k + 24), a3);
  }
  return sum_chains(a0, a1, a2, a3, row, xp, k, K);
}

// the same four chains two to a 512-bit register (chains 0 and 1 in one, 2 and 3 in the other): every lane does
// dot_f32's fma in dot_f32's order, so the two give the same bits
ZOO_T_F512 float dot_f32_512(const float* row, const float* xp, int64_t K) {
  __m512 a01 = _mm512_setzero_ps(), a23 = _mm512_setzero_ps();
  int64_t k = 0;
  for (; k + 32 <= K; k += 32) {
    a01 = _mm512_fmadd_ps(_mm512_loadu_ps(row + k), _mm512_loadu_ps(xp + k), a01);
    a23 = _mm512_fmadd_ps(_mm512_loadu_ps(row + k + 16), _mm512_loadu_ps(xp + k + 16), a23);
  }
  return sum_chains(_mm512_castps512_ps256(a01), high_half(a01), _mm512_castps512_ps256(a23), high_half(a23), row,
                    xp, k, K);
}

// N rows of w (K columns) times x into y, rows in parallel, each by Dot; several weights of one width are one range
// of rows (at: where each weight's rows start)
template <float (*Dot)(const float*, const float*, int64_t)>
void f32_rows_by(const float* xp, const std::vector<const float*>& wp, const std::vector<float*>& yp,
                 const std::vector<int64_t>& at, int64_t K) {
  at::parallel_for(0, at.back(), kGrain, [&](int64_t begin, int64_t end) {
    size_t i = std::upper_bound(at.begin(), at.end(), begin) - at.begin() - 1;
    for (int64_t n = begin; n < end; ++n) {
      while (n >= at[i + 1]) ++i;
      yp[i][n - at[i]] = Dot(wp[i] + (n - at[i]) * K, xp, K);
    }
  });
}

// isa: kF32Avx2 (dot_f32) or kF32Avx512 (dot_f32_512)
void f32_rows(const float* xp, const std::vector<const float*>& wp, const std::vector<float*>& yp,
              const std::vector<int64_t>& at, int64_t K, int64_t isa) {
  TORCH_CHECK(isa == kF32Avx2 || (isa == kF32Avx512 && (cpu_isas() & kAvx512fBit)),
              "zoo_gemv: this CPU cannot run the float32 path ", isa);
  if (isa == kF32Avx512)
    f32_rows_by<dot_f32_512>(xp, wp, yp, at, K);
  else
    f32_rows_by<dot_f32>(xp, wp, yp, at, K);
}

// one row times several weights of its width (a layer's query, key and value): each output as zoo_gemv::f32 gives
// it, all rows in one parallel region; registered for one, two and three weights, whose tuples of tensors a
// compiled graph's C++ wrapper passes to the dispatcher directly (a list of tensors would go through Python)
std::vector<at::Tensor> gemv_f32_many(const at::Tensor& x_, const std::vector<at::Tensor>& ws_, int64_t isa) {
  TORCH_CHECK(x_.scalar_type() == at::kFloat, "zoo_gemv::f32, f32_2 and f32_3 take one float32 row");
  const at::Tensor x = x_.contiguous();
  const int64_t K = x.numel();
  std::vector<at::Tensor> ws, ys;
  std::vector<int64_t> starts{0};
  for (const auto& w : ws_) {
    TORCH_CHECK(w.scalar_type() == at::kFloat && w.dim() == 2 && w.size(1) == K,
                "zoo_gemv::f32, f32_2 and f32_3 take float32 weights of the row's width");
    ws.push_back(w.contiguous());
    ys.push_back(at::empty({1, w.size(0)}, x.options()));
    starts.push_back(starts.back() + w.size(0));
  }
  std::vector<const float*> wp;
  std::vector<float*> yp;
  for (size_t i = 0; i < ws.size(); ++i) {
    wp.push_back(ws[i].data_ptr<float>());
    yp.push_back(ys[i].data_ptr<float>());
  }
  f32_rows(x.data_ptr<float>(), wp, yp, starts, K, isa);
  return ys;
}

at::Tensor gemv_f32(const at::Tensor& x, const at::Tensor& w, int64_t isa) {
  TORCH_CHECK(x.scalar_type() == at::kFloat && w.scalar_type() == at::kFloat && w.dim() == 2 &&
              x.numel() == w.size(1), "zoo_gemv::f32 takes one float32 row of the weight's width");
  return gemv_f32_many(x, {w}, isa)[0];
}

std::tuple<at::Tensor, at::Tensor> gemv_f32_2(const at::Tensor& x, const at::Tensor& w0, const at::Tensor& w1,
                                              int64_t isa) {
  auto ys = gemv_f32_many(x, {w0, w1}, isa);
  return {ys[0], ys[1]};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> gemv_f32_3(const at::Tensor& x, const at::Tensor& w0,
                                                          const at::Tensor& w1, const at::Tensor& w2, int64_t isa) {
  auto ys = gemv_f32_many(x, {w0, w1, w2}, isa);
  return {ys[0], ys[1], ys[2]};
}

at::Tensor gemv_int8(const at::Tensor& x_, const at::Tensor& q_, const at::Tensor& scale_) {
  TORCH_CHECK(x_.scalar_type() == at::kFloat && q_.scalar_type() == at::kChar && scale_.scalar_type() == at::kFloat &&
              q_.dim() == 2 && x_.numel() == q_.size(1) && q_.size(1) % kBlock == 0 && scale_.numel() == q_.size(0),
              "zoo_gemv::int8 takes one float32 row, int8 codes (N, K) with K a multiple of 32, float32 scales (N)");
  const at::Tensor x = x_.contiguous(), q = q_.contiguous(), scale = scale_.contiguous();
  const int64_t N = q.size(0), K = q.size(1), B = K / kBlock;
  auto y = at::empty({1, N}, x.options());
  std::vector<int16_t> xq(K);
  std::vector<float> d(B);
  round_x16(x.data_ptr<float>(), K, xq.data(), d.data());
  const int16_t* xqp = xq.data();
  const float* dp = d.data();
  const int8_t* qp = q.data_ptr<int8_t>();
  const float* sp = scale.data_ptr<float>();
  float* yp = y.data_ptr<float>();
  at::parallel_for(0, N, kGrain, [&](int64_t begin, int64_t end) {
    for (int64_t n = begin; n < end; ++n) {
      const int8_t* row = qp + n * K;
      __m256 acc = _mm256_setzero_ps();
      for (int64_t b = 0; b < B; ++b) {
        const __m256i w = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(row + b * kBlock));
        const __m256i w0 = _mm256_cvtepi8_epi16(_mm256_castsi256_si128(w));
        const __m256i w1 = _mm256_cvtepi8_epi16(_mm256_extracti128_si256(w, 1));
        const __m256i x0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xqp + b * kBlock));
        const __m256i x1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xqp + b * kBlock + 16));
        const __m256i t = _mm256_add_epi32(_mm256_madd_epi16(w0, x0), _mm256_madd_epi16(w1, x1));
        acc = _mm256_fmadd_ps(_mm256_set1_ps(dp[b]), _mm256_cvtepi32_ps(t), acc);
      }
      yp[n] = sum8(acc) * sp[n];
    }
  });
  return y;
}

// codes (N, K/2) uint8: column 2j in the low nibble of byte j, column 2j+1 in the high one
at::Tensor gemv_int4(const at::Tensor& x_, const at::Tensor& codes_, const at::Tensor& scale_,
                     const at::Tensor& zero_, int64_t gs) {
  TORCH_CHECK(x_.scalar_type() == at::kFloat && codes_.scalar_type() == at::kByte && codes_.dim() == 2 &&
              scale_.scalar_type() == at::kHalf && zero_.scalar_type() == at::kHalf && gs > 0 && gs % kBlock == 0 &&
              x_.numel() == 2 * codes_.size(1) && x_.numel() % gs == 0 &&
              scale_.numel() == codes_.size(0) * (x_.numel() / gs) && zero_.numel() == scale_.numel(),
              "zoo_gemv::int4 takes one float32 row, uint8 codes (N, K / 2), float16 scale and zero (N, K / gs), "
              "gs a multiple of 32 dividing K");
  const at::Tensor x = x_.contiguous(), codes = codes_.contiguous();
  const at::Tensor scale = scale_.contiguous(), zero = zero_.contiguous();
  const int64_t N = codes.size(0), K = codes.size(1) * 2, G = K / gs, B = K / kBlock, per = gs / kBlock;
  auto y = at::empty({1, N}, x.options());
  const float* xp = x.data_ptr<float>();
  std::vector<int16_t> xq(K), split(K);
  std::vector<float> d(B), xsum(G, 0.0f);
  round_x16(xp, K, xq.data(), d.data());
  for (int64_t b = 0; b < B; ++b)  // each block: its 16 even columns, then its 16 odd ones (the nibble order)
    for (int64_t c = 0; c < kBlock / 2; ++c) {
      split[b * kBlock + c] = xq[b * kBlock + 2 * c];
      split[b * kBlock + kBlock / 2 + c] = xq[b * kBlock + 2 * c + 1];
    }
  for (int64_t g = 0; g < G; ++g)
    for (int64_t c = g * gs; c < (g + 1) * gs; ++c) xsum[g] += xp[c];
  const int16_t* xqp = split.data();
  const float* dp = d.data();
  const float* xsp = xsum.data();
  const uint8_t* cp = codes.data_ptr<uint8_t>();
  const at::Half* sp = scale.data_ptr<at::Half>();
  const at::Half* zp = zero.data_ptr<at::Half>();
  float* yp = y.data_ptr<float>();
  at::parallel_for(0, N, kGrain, [&](int64_t begin, int64_t end) {
    const __m256i nibble = _mm256_set1_epi16(15);
    std::vector<float> sf(G);
    for (int64_t n = begin; n < end; ++n) {
      const uint8_t* row = cp + n * (K / 2);
      const at::Half* srow = sp + n * G;
      const at::Half* zrow = zp + n * G;
      __m256 acc = _mm256_setzero_ps();  // sum_g (zero_g - 8 scale_g) * xsum_g, eight groups at a time
      float rest = 0.0f;
      int64_t g = 0;
      for (; g + 8 <= G; g += 8) {
        const __m256 s8 = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(srow + g)));
        const __m256 z8 = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(zrow + g)));
        _mm256_storeu_ps(sf.data() + g, s8);
        acc = _mm256_fmadd_ps(_mm256_fnmadd_ps(_mm256_set1_ps(8.0f), s8, z8), _mm256_loadu_ps(xsp + g), acc);
      }
      for (; g < G; ++g) {
        sf[g] = static_cast<float>(srow[g]);
        rest += (static_cast<float>(zrow[g]) - 8.0f * sf[g]) * xsp[g];
      }
      for (g = 0; g < G; ++g) {
        const float s = sf[g];
        for (int64_t b = g * per; b < (g + 1) * per; ++b) {
          const __m256i w = _mm256_cvtepu8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(row + b * kBlock / 2)));
          const __m256i lo = _mm256_and_si256(w, nibble), hi = _mm256_srli_epi16(w, 4);  // even, odd columns
          const __m256i x0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xqp + b * kBlock));
          const __m256i x1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xqp + b * kBlock + 16));
          const __m256i t = _mm256_add_epi32(_mm256_madd_epi16(lo, x0), _mm256_madd_epi16(hi, x1));
          acc = _mm256_fmadd_ps(_mm256_set1_ps(dp[b] * s), _mm256_cvtepi32_ps(t), acc);
        }
      }
      yp[n] = sum8(acc) + rest;
    }
  });
  return y;
}

// attend's pieces. Scores: a query head's scaled dot products with the keys of positions seen[i0..i1), four
// positions at a time (four chains of fma; lane l sums the columns d = l mod 8, then the lanes are added).
void score_span(const float* q, const float* k, const int64_t* seen, int64_t i0, int64_t i1, int64_t D, float sc,
                float* p) {
  int64_t i = i0;
  for (; i + 4 <= i1; i += 4) {
    const float* k0 = k + seen[i] * D;
    const float* k1 = k + seen[i + 1] * D;
    const float* k2 = k + seen[i + 2] * D;
    const float* k3 = k + seen[i + 3] * D;
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    int64_t d = 0;
    for (; d + 8 <= D; d += 8) {
      const __m256 qd = _mm256_loadu_ps(q + d);
      a0 = _mm256_fmadd_ps(qd, _mm256_loadu_ps(k0 + d), a0);
      a1 = _mm256_fmadd_ps(qd, _mm256_loadu_ps(k1 + d), a1);
      a2 = _mm256_fmadd_ps(qd, _mm256_loadu_ps(k2 + d), a2);
      a3 = _mm256_fmadd_ps(qd, _mm256_loadu_ps(k3 + d), a3);
    }
    float s0 = sum8(a0), s1 = sum8(a1), s2 = sum8(a2), s3 = sum8(a3);
    for (; d < D; ++d) s0 += q[d] * k0[d], s1 += q[d] * k1[d], s2 += q[d] * k2[d], s3 += q[d] * k3[d];
    p[i] = s0 * sc, p[i + 1] = s1 * sc, p[i + 2] = s2 * sc, p[i + 3] = s3 * sc;
  }
  for (; i < i1; ++i) {
    const float* kr = k + seen[i] * D;
    __m256 a = _mm256_setzero_ps();
    int64_t d = 0;
    for (; d + 8 <= D; d += 8) a = _mm256_fmadd_ps(_mm256_loadu_ps(q + d), _mm256_loadu_ps(kr + d), a);
    float dot = sum8(a);
    for (; d < D; ++d) dot += q[d] * kr[d];
    p[i] = dot * sc;
  }
}

// p (P scores) -> softmax weights in place, eight lanes at a time (a scalar loop would carry its running max or
// sum from one position to the next)
void softmax_row(float* p, int64_t P) {
  __m256 top8 = _mm256_set1_ps(-INFINITY);
  int64_t i = 0;
  for (; i + 8 <= P; i += 8) top8 = _mm256_max_ps(top8, _mm256_loadu_ps(p + i));
  float top = max8(top8);
  for (; i < P; ++i) top = std::max(top, p[i]);
  __m256 total8 = _mm256_setzero_ps();
  for (i = 0; i + 8 <= P; i += 8) {
    const auto e = (at::vec::Vectorized<float>::loadu(p + i) - at::vec::Vectorized<float>(top)).exp();
    e.store(p + i);
    total8 = _mm256_add_ps(total8, e);
  }
  float total = sum8(total8);
  for (; i < P; ++i) total += p[i] = std::exp(p[i] - top);
  const __m256 total_ = _mm256_set1_ps(total);
  for (i = 0; i + 8 <= P; i += 8) _mm256_storeu_ps(p + i, _mm256_div_ps(_mm256_loadu_ps(p + i), total_));
  for (; i < P; ++i) p[i] /= total;
}

// out (D) += the weighted values of positions seen[i0..i1): 64 columns at a time in eight registers (eight chains
// of fma), then 8, then one
void add_values(const float* w, const float* v, const int64_t* seen, int64_t i0, int64_t i1, int64_t D, float* out) {
  int64_t d = 0;
  for (; d + 64 <= D; d += 64) {
    __m256 o[8];
    for (int j = 0; j < 8; ++j) o[j] = _mm256_loadu_ps(out + d + 8 * j);
    for (int64_t i = i0; i < i1; ++i) {
      const __m256 wi = _mm256_set1_ps(w[i]);
      const float* vr = v + seen[i] * D + d;
      for (int j = 0; j < 8; ++j) o[j] = _mm256_fmadd_ps(wi, _mm256_loadu_ps(vr + 8 * j), o[j]);
    }
    for (int j = 0; j < 8; ++j) _mm256_storeu_ps(out + d + 8 * j, o[j]);
  }
  for (; d + 8 <= D; d += 8) {
    __m256 o = _mm256_loadu_ps(out + d);
    for (int64_t i = i0; i < i1; ++i)
      o = _mm256_fmadd_ps(_mm256_set1_ps(w[i]), _mm256_loadu_ps(v + seen[i] * D + d), o);
    _mm256_storeu_ps(out + d, o);
  }
  for (; d < D; ++d)
    for (int64_t i = i0; i < i1; ++i) out[d] += w[i] * v[seen[i] * D + d];
}

// positions whose keys (or values) stay in L1 while the query heads of their group meet them
constexpr int64_t kSpan = 32;

// one query token's attention over a cache: q (1, H, 1, D), keys/values (1, KV, S, D) float32, mask (S) bool
// (the positions the token sees; none seen = all seen). Softmax(scale * q.k) over the seen positions, times v.
// The query heads that share a key-value head go together, a span of positions at a time, so that a thread reads
// each key and value row once (a cache of a few hundred positions is larger than L1; in a decoded token it comes
// from memory, the weights streamed since having evicted it).
at::Tensor attend(const at::Tensor& q_, const at::Tensor& k_, const at::Tensor& v_, const at::Tensor& mask_,
                  double scale) {
  TORCH_CHECK(q_.scalar_type() == at::kFloat && k_.scalar_type() == at::kFloat && v_.scalar_type() == at::kFloat &&
              mask_.scalar_type() == at::kBool && q_.dim() == 4 && q_.size(0) == 1 && q_.size(2) == 1 &&
              k_.dim() == 4 && k_.sizes() == v_.sizes() && k_.size(0) == 1 && q_.size(3) == k_.size(3) &&
              k_.size(1) > 0 && q_.size(1) % k_.size(1) == 0 && mask_.numel() == k_.size(2),
              "zoo_gemv::attend takes one float32 query (1, H, 1, D), keys and values (1, KV, S, D) with KV "
              "dividing H, and a bool mask of S positions");
  const at::Tensor q = q_.contiguous(), k = k_.contiguous(), v = v_.contiguous(), mask = mask_.contiguous();
  const int64_t H = q.size(1), D = q.size(3), KV = k.size(1), S = k.size(2), G = H / KV;
  auto y = at::zeros({1, 1, H * D}, q.options());
  const bool* m = mask.data_ptr<bool>();
  std::vector<int64_t> seen;
  for (int64_t s = 0; s < S; ++s)
    if (m[s]) seen.push_back(s);
  if (seen.empty())
    for (int64_t s = 0; s < S; ++s) seen.push_back(s);
  const int64_t P = static_cast<int64_t>(seen.size());
  const float* qp = q.data_ptr<float>();
  const float* kp = k.data_ptr<float>();
  const float* vp = v.data_ptr<float>();
  float* yp = y.data_ptr<float>();
  const float sc = static_cast<float>(scale);
  // a thread's query heads, a key-value group at a time: the heads of one group meet each span of its keys and
  // values together
  at::parallel_for(0, H, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> p((end - begin) * P);  // the weights, a row of P per query head
    for (int64_t g = begin / G; g * G < end; ++g) {
      const int64_t h0 = std::max(begin, g * G), h1 = std::min(end, (g + 1) * G);
      const float* kg = kp + g * S * D;
      const float* vg = vp + g * S * D;
      float* pg = p.data() + (h0 - begin) * P;
      for (int64_t i0 = 0; i0 < P; i0 += kSpan)
        for (int64_t h = h0; h < h1; ++h)
          score_span(qp + h * D, kg, seen.data(), i0, std::min(P, i0 + kSpan), D, sc, pg + (h - h0) * P);
      for (int64_t h = h0; h < h1; ++h) softmax_row(pg + (h - h0) * P, P);
      for (int64_t i0 = 0; i0 < P; i0 += kSpan)
        for (int64_t h = h0; h < h1; ++h)
          add_values(pg + (h - h0) * P, vg, seen.data(), i0, std::min(P, i0 + kSpan), D, yp + h * D);
    }
  });
  return y;
}

#include "gemv_a8.h"  // the 8-bit activation kernels (act_bits=8)

}  // namespace

TORCH_LIBRARY(zoo_gemv, m) {
  m.def("f32(Tensor x, Tensor w, int isa) -> Tensor");
  m.def("f32_2(Tensor x, Tensor w0, Tensor w1, int isa) -> (Tensor, Tensor)");
  m.def("f32_3(Tensor x, Tensor w0, Tensor w1, Tensor w2, int isa) -> (Tensor, Tensor, Tensor)");
  m.def("int8(Tensor x, Tensor q, Tensor scale) -> Tensor");
  m.def("int4(Tensor x, Tensor codes, Tensor scale, Tensor zero, int group_size) -> Tensor");
  m.def("attend(Tensor q, Tensor k, Tensor v, Tensor mask, float scale) -> Tensor");
  m.def("int8_a8(Tensor x, Tensor q, Tensor scale, int isa) -> Tensor");
  m.def("int4_a8(Tensor x, Tensor codes, Tensor scale, Tensor zero, int group_size, int isa) -> Tensor");
  m.def("q8_0(Tensor x) -> (Tensor, Tensor)");
  m.def("a8_tiles(Tensor x, Tensor packed, Tensor scale, int n, int group_size, int isa) -> Tensor");
  m.def("cpu_isas() -> int", &cpu_isas);
}

TORCH_LIBRARY_IMPL(zoo_gemv, CPU, m) {
  m.impl("f32", gemv_f32);
  m.impl("f32_2", gemv_f32_2);
  m.impl("f32_3", gemv_f32_3);
  m.impl("int8", gemv_int8);
  m.impl("int4", gemv_int4);
  m.impl("attend", attend);
  m.impl("int8_a8", gemm_int8_a8);
  m.impl("int4_a8", gemm_int4_a8);
  m.impl("q8_0", q8_0);
  m.impl("a8_tiles", gemm_a8_tiles);
}

// C entry points of the operators above for a step built ahead of time (zoo.lm.aot_step): AOTInductor's code calls
// aoti_torch_cpu_<op> directly instead of through its proxy executor, which boxes every argument for the dispatcher
// (a toy package of 32x32 products: 2-3 us a call this way, 4-6 us that way; some 240 calls a decoded 125M token).
// Tensors come and go as AtenTensorHandles; an exception becomes an error code, as in torch's own shims.
// zoo/lm/aot_step.py declares them to AOTInductor from each operator's schema (c_shims).
#include <torch/csrc/inductor/aoti_torch/utils.h>

namespace {

using torch::aot_inductor::new_tensor_handle;
using torch::aot_inductor::tensor_handle_to_tensor_pointer;

inline const at::Tensor& ref(AtenTensorHandle h) { return *tensor_handle_to_tensor_pointer(h); }

template <typename Tuple, size_t... I>
void give(Tuple&& ys, AtenTensorHandle** outs, std::index_sequence<I...>) {
  ((*outs[I] = new_tensor_handle(std::move(std::get<I>(ys)))), ...);
}

}  // namespace

#define ZOO_SHIM extern "C" __attribute__((visibility("default"))) AOTITorchError
#define ZOO_TRY(body) AOTI_TORCH_CONVERT_EXCEPTION_TO_ERROR_CODE({ body; })

ZOO_SHIM aoti_torch_cpu_f32(AtenTensorHandle x, AtenTensorHandle w, int64_t isa, AtenTensorHandle* y) {
  ZOO_TRY(*y = new_tensor_handle(gemv_f32(ref(x), ref(w), isa)));
}

ZOO_SHIM aoti_torch_cpu_f32_2(AtenTensorHandle x, AtenTensorHandle w0, AtenTensorHandle w1, int64_t isa,
                              AtenTensorHandle* y0, AtenTensorHandle* y1) {
  AtenTensorHandle* outs[] = {y0, y1};
  ZOO_TRY(give(gemv_f32_2(ref(x), ref(w0), ref(w1), isa), outs, std::make_index_sequence<2>{}));
}

ZOO_SHIM aoti_torch_cpu_f32_3(AtenTensorHandle x, AtenTensorHandle w0, AtenTensorHandle w1, AtenTensorHandle w2,
                              int64_t isa, AtenTensorHandle* y0, AtenTensorHandle* y1, AtenTensorHandle* y2) {
  AtenTensorHandle* outs[] = {y0, y1, y2};
  ZOO_TRY(give(gemv_f32_3(ref(x), ref(w0), ref(w1), ref(w2), isa), outs, std::make_index_sequence<3>{}));
}

ZOO_SHIM aoti_torch_cpu_int8(AtenTensorHandle x, AtenTensorHandle q, AtenTensorHandle scale, AtenTensorHandle* y) {
  ZOO_TRY(*y = new_tensor_handle(gemv_int8(ref(x), ref(q), ref(scale))));
}

ZOO_SHIM aoti_torch_cpu_int4(AtenTensorHandle x, AtenTensorHandle codes, AtenTensorHandle scale, AtenTensorHandle zero,
                             int64_t group_size, AtenTensorHandle* y) {
  ZOO_TRY(*y = new_tensor_handle(gemv_int4(ref(x), ref(codes), ref(scale), ref(zero), group_size)));
}

ZOO_SHIM aoti_torch_cpu_attend(AtenTensorHandle q, AtenTensorHandle k, AtenTensorHandle v, AtenTensorHandle mask,
                               double scale, AtenTensorHandle* y) {
  ZOO_TRY(*y = new_tensor_handle(attend(ref(q), ref(k), ref(v), ref(mask), scale)));
}

ZOO_SHIM aoti_torch_cpu_int8_a8(AtenTensorHandle x, AtenTensorHandle q, AtenTensorHandle scale, int64_t isa,
                                AtenTensorHandle* y) {
  ZOO_TRY(*y = new_tensor_handle(gemm_int8_a8(ref(x), ref(q), ref(scale), isa)));
}

ZOO_SHIM aoti_torch_cpu_int4_a8(AtenTensorHandle x, AtenTensorHandle codes, AtenTensorHandle scale,
                                AtenTensorHandle zero, int64_t group_size, int64_t isa, AtenTensorHandle* y) {
  ZOO_TRY(*y = new_tensor_handle(gemm_int4_a8(ref(x), ref(codes), ref(scale), ref(zero), group_size, isa)));
}

ZOO_SHIM aoti_torch_cpu_q8_0(AtenTensorHandle x, AtenTensorHandle* codes, AtenTensorHandle* scale) {
  AtenTensorHandle* outs[] = {codes, scale};
  ZOO_TRY(give(q8_0(ref(x)), outs, std::make_index_sequence<2>{}));
}

ZOO_SHIM aoti_torch_cpu_a8_tiles(AtenTensorHandle x, AtenTensorHandle packed, AtenTensorHandle scale, int64_t n,
                                 int64_t group_size, int64_t isa, AtenTensorHandle* y) {
  ZOO_TRY(*y = new_tensor_handle(gemm_a8_tiles(ref(x), ref(packed), ref(scale), n, group_size, isa)));
}
