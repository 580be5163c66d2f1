// The 8-bit activation kernels of gemv.cpp (act_bits=8). Not a header of its own: gemv.cpp includes it inside its
// anonymous namespace, after the includes; kBlock, the lane helpers and the paths' target attributes and CPU check
// come from simd.h, which gemv.cpp has included already (so the line below adds nothing there). zoo.kernels.gemv
// copies the files into the build folder and keys the build by their content.
#include "simd.h"

// ---- 8-bit activations (llama.cpp's Q8_0 row): one int8 row per block of 32 columns, x ~ d[b] * xq ----------------
//
// The int32 sum of each block's 32 products comes from one of three instruction paths (AVX2 maddubs + madd with the
// sign moved onto the activation; AVX-VNNI vpdpbusd on 256 bits; AVX-512 VNNI vpdpbusd on 512 bits); integer sums
// are exact, so every path hands the same eight block sums to the same float code and the paths agree bit for bit.

// eight per-block vectors of int32 partial sums -> the eight block sums, in block order
inline __m256i reduce8(const __m256i* v) {
  const __m256i a = _mm256_hadd_epi32(_mm256_hadd_epi32(v[0], v[1]), _mm256_hadd_epi32(v[2], v[3]));
  const __m256i b = _mm256_hadd_epi32(_mm256_hadd_epi32(v[4], v[5]), _mm256_hadd_epi32(v[6], v[7]));
  return _mm256_add_epi32(_mm256_permute2x128_si256(a, b, 0x20), _mm256_permute2x128_si256(a, b, 0x31));
}

inline int32_t hsum_i32(__m256i v) {
  __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4E));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xB1));
  return _mm_cvtsi128_si32(s);
}

// int4 codes of one block (16 bytes, even column in the low nibble) as 32 bytes: the 16 even columns, then the odd
inline __m256i nibbles(const uint8_t* c) {
  const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(c));
  const __m128i m = _mm_set1_epi8(15);
  return _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(v, 4), m), _mm_and_si128(v, m));
}

// AVX2: maddubs multiplies unsigned by signed bytes, so the weight's sign moves onto the activation (|w| * sign(w) x)
inline __m256i block_i8_avx2(const int8_t* x, const int8_t* w) {
  const __m256i wv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w));
  const __m256i xv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x));
  const __m256i p = _mm256_maddubs_epi16(_mm256_sign_epi8(wv, wv), _mm256_sign_epi8(xv, wv));  // |pair| <= 32258
  return _mm256_madd_epi16(p, _mm256_set1_epi16(1));
}

inline __m256i block_u4_avx2(const int8_t* x, const uint8_t* c) {  // codes 0..15 are unsigned already
  const __m256i xv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x));
  return _mm256_madd_epi16(_mm256_maddubs_epi16(nibbles(c), xv), _mm256_set1_epi16(1));
}

inline __m256i dots8_i8_avx2(const int8_t* x, const int8_t* w) {
  __m256i v[8];
  for (int i = 0; i < 8; ++i) v[i] = block_i8_avx2(x + i * kBlock, w + i * kBlock);
  return reduce8(v);
}

// int4, one row: two blocks per register. 32 bytes of codes (blocks b, b + 1) give [low nibbles of both | high
// nibbles of both] with no shuffle; the row is laid out to match (pair_layout): lanes 0-3 sum block b, 4-7 block b + 1
inline __m256i reduce_pairs(const __m256i* v) {  // four [b 4 lanes | b + 1 4 lanes] -> eight block sums in order
  const __m256i c = _mm256_hadd_epi32(_mm256_hadd_epi32(v[0], v[1]), _mm256_hadd_epi32(v[2], v[3]));
  return _mm256_permutevar8x32_epi32(c, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
}

inline __m256i dots8_u4_avx2(const int8_t* x, const uint8_t* c) {
  __m256i v[4];
  const __m256i m = _mm256_set1_epi8(15), ones = _mm256_set1_epi16(1);
  for (int p = 0; p < 4; ++p) {
    const __m256i cv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(c + p * kBlock));
    const __m256i lo = _mm256_and_si256(cv, m), hi = _mm256_and_si256(_mm256_srli_epi16(cv, 4), m);
    const __m256i x0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x + p * 2 * kBlock));
    const __m256i x1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x + p * 2 * kBlock + kBlock));
    v[p] = _mm256_madd_epi16(_mm256_add_epi16(_mm256_maddubs_epi16(lo, x0), _mm256_maddubs_epi16(hi, x1)), ones);
  }
  return reduce_pairs(v);
}

ZOO_T_VNNI inline __m256i dots8_i8_vnni(const int8_t* x, const int8_t* w) {
  __m256i v[8];
  for (int i = 0; i < 8; ++i) {
    const __m256i wv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + i * kBlock));
    const __m256i xv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x + i * kBlock));
    v[i] = _mm256_dpbusd_avx_epi32(_mm256_setzero_si256(), _mm256_sign_epi8(wv, wv), _mm256_sign_epi8(xv, wv));
  }
  return reduce8(v);
}

ZOO_T_VNNI inline __m256i dots8_u4_vnni(const int8_t* x, const uint8_t* c) {
  __m256i v[4];
  const __m256i m = _mm256_set1_epi8(15);
  for (int p = 0; p < 4; ++p) {
    const __m256i cv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(c + p * kBlock));
    const __m256i lo = _mm256_and_si256(cv, m), hi = _mm256_and_si256(_mm256_srli_epi16(cv, 4), m);
    const __m256i x0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x + p * 2 * kBlock));
    const __m256i x1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x + p * 2 * kBlock + kBlock));
    v[p] = _mm256_dpbusd_avx_epi32(_mm256_dpbusd_avx_epi32(_mm256_setzero_si256(), lo, x0), hi, x1);
  }
  return reduce_pairs(v);
}

// AVX-512 has no byte sign instruction: |w| by vpabsb, and x negated under the mask of w's sign bits
ZOO_T_512 inline __m256i dots8_i8_512(const int8_t* x, const int8_t* w) {
  __m256i v[8];
  const __m512i zero = _mm512_setzero_si512();
  for (int i = 0; i < 4; ++i) {  // two blocks per register
    const __m512i wv = _mm512_loadu_si512(w + i * 2 * kBlock);
    const __m512i xv = _mm512_loadu_si512(x + i * 2 * kBlock);
    const __m512i sx = _mm512_mask_sub_epi8(xv, _mm512_movepi8_mask(wv), zero, xv);
    const __m512i r = _mm512_dpbusd_epi32(zero, _mm512_abs_epi8(wv), sx);
    v[2 * i] = _mm512_castsi512_si256(r);
    v[2 * i + 1] = _mm512_extracti64x4_epi64(r, 1);
  }
  return reduce8(v);
}

ZOO_T_512 inline __m256i dots8_u4_512(const int8_t* x, const uint8_t* c) {
  __m256i v[4];
  const __m256i m = _mm256_set1_epi8(15);
  for (int p = 0; p < 4; ++p) {
    const __m256i cv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(c + p * kBlock));
    const __m256i lo = _mm256_and_si256(cv, m), hi = _mm256_and_si256(_mm256_srli_epi16(cv, 4), m);
    const __m512i wv = _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);
    const __m512i r = _mm512_dpbusd_epi32(_mm512_setzero_si512(), wv, _mm512_loadu_si512(x + p * 2 * kBlock));
    v[p] = _mm256_add_epi32(_mm512_castsi512_si256(r), _mm512_extracti64x4_epi64(r, 1));
  }
  return reduce_pairs(v);
}

// eight vectors of eight int32 transposed in place: v[r][l] -> v[l][r]
inline void transpose8(__m256i* v) {
  __m256i t[8], u[8];
  for (int i = 0; i < 8; i += 2) {
    t[i] = _mm256_unpacklo_epi32(v[i], v[i + 1]);
    t[i + 1] = _mm256_unpackhi_epi32(v[i], v[i + 1]);
  }
  for (int i = 0; i < 8; i += 4) {
    u[i] = _mm256_unpacklo_epi64(t[i], t[i + 2]);
    u[i + 1] = _mm256_unpackhi_epi64(t[i], t[i + 2]);
    u[i + 2] = _mm256_unpacklo_epi64(t[i + 1], t[i + 3]);
    u[i + 3] = _mm256_unpackhi_epi64(t[i + 1], t[i + 3]);
  }
  for (int i = 0; i < 4; ++i) {
    v[i] = _mm256_permute2x128_si256(u[i], u[i + 4], 0x20);
    v[i + 4] = _mm256_permute2x128_si256(u[i], u[i + 4], 0x31);
  }
}

// the activation rows, quantized once per call
struct RowsA8 {
  int64_t M = 0, K = 0, B = 0, G = 0;
  std::vector<int8_t> q;    // (M, K): int8 codes; for int4 weights each block's even columns, then its odd ones
  std::vector<float> d;     // (M, B): the block scales
  std::vector<float> gsum;    // (M, G): the float sum of x over each weight group (int4's zero points)
  std::vector<int32_t> isum;  // (M, B): the sum of each block's codes (int4: times the codes' centre 8, taken off)
  std::vector<int8_t> p;      // one row, int4 weights: the codes in pair_layout
};

// int4, one row: each pair of blocks of a whole group of eight as [even b, even b + 1, odd b, odd b + 1] (16 bytes
// each; the codes come split per block: even columns, then odd); the tail as is
inline void pair_layout(const int8_t* split, int8_t* out, int64_t B) {
  int64_t b = 0;
  for (; b < B / 8 * 8; b += 2) {
    const int8_t* q0 = split + b * kBlock;
    const int8_t* q1 = q0 + kBlock;
    int8_t* o = out + b * kBlock;
    std::copy(q0, q0 + 16, o);
    std::copy(q1, q1 + 16, o + 16);
    std::copy(q0 + 16, q0 + 32, o + 32);
    std::copy(q1 + 16, q1 + 32, o + 48);
  }
  std::copy(split + b * kBlock, split + B * kBlock, out + b * kBlock);
}

// one row: d = amax / 127, q = round(x / d) (to nearest, ties to even); a block whose amax is below float32's
// smallest normal number (zeros, negative zeros, subnormals) is all zero codes with d = 0. bsum (if given): each
// block's float sum; isum (if given): the sum of each block's codes. split: each block's even columns, then its odd
void q8_0_row(const float* x, int64_t K, int8_t* q, float* d, float* bsum, int32_t* isum, bool split) {
  const __m256 sign = _mm256_set1_ps(-0.0f);
  const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
  // per 128-bit lane, its eight even bytes then its eight odd ones; then the 64-bit words as [even, even, odd, odd]
  const __m256i evens_odds = _mm256_setr_epi8(0, 2, 4, 6, 8, 10, 12, 14, 1, 3, 5, 7, 9, 11, 13, 15,  //
                                              0, 2, 4, 6, 8, 10, 12, 14, 1, 3, 5, 7, 9, 11, 13, 15);
  for (int64_t b = 0; b < K / kBlock; ++b) {
    const float* xb = x + b * kBlock;
    __m256 top = _mm256_setzero_ps(), total = _mm256_setzero_ps();
    for (int64_t c = 0; c < kBlock; c += 8) {
      const __m256 v = _mm256_loadu_ps(xb + c);
      top = _mm256_max_ps(top, _mm256_andnot_ps(sign, v));
      total = _mm256_add_ps(total, v);
    }
    if (bsum) bsum[b] = sum8(total);
    const float amax = max8(top);
    int8_t* qb = q + b * kBlock;
    if (!(amax >= std::numeric_limits<float>::min())) {
      d[b] = 0.0f;
      std::fill(qb, qb + kBlock, int8_t(0));
      if (isum) isum[b] = 0;
      continue;
    }
    const float db = amax / 127.0f;
    d[b] = db;
    const __m256 dv = _mm256_set1_ps(db);
    __m256i i32[4];
    for (int j = 0; j < 4; ++j) i32[j] = _mm256_cvtps_epi32(_mm256_div_ps(_mm256_loadu_ps(xb + 8 * j), dv));
    if (isum)  // codes in -127..127: the int32 sums are exact
      isum[b] = hsum_i32(_mm256_add_epi32(_mm256_add_epi32(i32[0], i32[1]), _mm256_add_epi32(i32[2], i32[3])));
    const __m256i i16 = _mm256_packs_epi16(_mm256_packs_epi32(i32[0], i32[1]), _mm256_packs_epi32(i32[2], i32[3]));
    __m256i i8 = _mm256_permutevar8x32_epi32(i16, order);
    if (split) i8 = _mm256_permute4x64_epi64(_mm256_shuffle_epi8(i8, evens_odds), 0xD8);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(qb), i8);
  }
}

RowsA8 quantize_rows(const float* x, int64_t M, int64_t K, int64_t gs, bool split, bool sums = false) {
  RowsA8 r;
  r.M = M, r.K = K, r.B = K / kBlock, r.G = gs > 0 ? K / gs : 0;
  r.q.resize(M * K);
  r.d.resize(M * r.B);
  r.gsum.assign(M * r.G, 0.0f);
  sums = sums || r.G;
  r.isum.assign(sums ? M * r.B : 0, 0);
  at::parallel_for(0, M, 16, [&](int64_t begin, int64_t end) {
    std::vector<float> bsum(r.B);
    for (int64_t m = begin; m < end; ++m) {
      q8_0_row(x + m * K, K, r.q.data() + m * K, r.d.data() + m * r.B, r.G ? bsum.data() : nullptr,
               sums ? r.isum.data() + m * r.B : nullptr, split);
      for (int64_t b = 0; r.G && b < r.B; ++b) r.gsum[m * r.G + b / (gs / kBlock)] += bsum[b];
    }
  });
  return r;
}

// What one output row needs besides its codes (int8: the row scale; int4: the block scales and the zero terms)
struct WeightsA8 {
  const void* codes;
  int64_t row_bytes;
  const float* scale8 = nullptr;  // int8: (N)
  const at::Half* scale4 = nullptr;
  const at::Half* zero4 = nullptr;  // int4: (N, G)
  int64_t per = 1;                  // int4: blocks per group
};

// one int4 row's float16 scales as float32 per block of 32 and its zero points as float32 per group
inline void expand_scales(const at::Half* scale, const at::Half* zero, int64_t G, int64_t per, float* sc, float* zt) {
  int64_t g = 0;
  for (; g + 8 <= G; g += 8) {
    const __m256 s8 = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(scale + g)));
    _mm256_storeu_ps(zt + g, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(zero + g))));
    if (per == 1) {
      _mm256_storeu_ps(sc + g, s8);
    } else {
      alignas(32) float tmp[8];
      _mm256_store_ps(tmp, s8);
      for (int64_t i = 0; i < 8; ++i) std::fill(sc + (g + i) * per, sc + (g + i + 1) * per, tmp[i]);
    }
  }
  for (; g < G; ++g) {
    zt[g] = _cvtsh_ss(zero[g].x);
    std::fill(sc + g * per, sc + (g + 1) * per, _cvtsh_ss(scale[g].x));
  }
}

constexpr int64_t kTile = 8;   // output rows a thread of the plain rows' kernels takes at a time
constexpr int64_t kReuse = 4;  // rows from which a tile's weights are prepared once for all of them

inline __m256 tree8(const __m256* v) {  // the order of sum8 over the lanes of one vector, here across eight vectors
  return _mm256_add_ps(_mm256_add_ps(_mm256_add_ps(v[0], v[4]), _mm256_add_ps(v[2], v[6])),
                       _mm256_add_ps(_mm256_add_ps(v[1], v[5]), _mm256_add_ps(v[3], v[7])));
}

inline __m256 tail_fma(__m256 a, __m256 b, __m256 c) {  // the plain kernels' tail: rest = fma(a, b, rest)
  return _mm256_fmadd_ps(a, b, c);
}

// The eight-lane float code of the decode tiles and the prompts: term(i) gives the pair (a, b) of block (or group) i,
// whose product a whole group of eight adds to accumulator i % 8 (unrolled, so that the accumulators stay in
// registers) and the rest to `rest` by fma, in order
template <class Term>
inline void add_terms(int64_t n, Term term, __m256* acc, __m256& rest) {
  const int64_t n8 = n / 8 * 8;
  for (int64_t i = 0; i < n8; i += 8)
    for (int j = 0; j < 8; ++j) {
      const auto [a, b] = term(i + j);
      acc[j] = _mm256_fmadd_ps(a, b, acc[j]);
    }
  for (int64_t i = n8; i < n; ++i) {
    const auto [a, b] = term(i);
    rest = tail_fma(a, b, rest);
  }
}

inline void store_rows(__m256 v, float* y, int64_t count) {
  alignas(32) float tmp[8];
  _mm256_store_ps(tmp, v);
  std::copy(tmp, tmp + count, y);
}

// One output's float value from its exact integer block sums: `dots` holds the whole groups of eight blocks, the
// blocks past them are summed here. Every path and every row count end in this code, so they agree bit for bit.
inline float finish_i8(const int32_t* dots, const int8_t* xq, const float* d, const int8_t* wrow, int64_t B,
                       float scale) {
  __m256 acc = _mm256_setzero_ps();
  int64_t b = 0;
  for (; b + 8 <= B; b += 8)
    acc = _mm256_fmadd_ps(_mm256_loadu_ps(d + b),
                          _mm256_cvtepi32_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(dots + b))), acc);
  float rest = 0.0f;
  for (; b < B; ++b)
    rest = std::fma(d[b], static_cast<float>(hsum_i32(block_i8_avx2(xq + b * kBlock, wrow + b * kBlock))), rest);
  return (sum8(acc) + rest) * scale;
}

// int4: dots are the sums against the codes' centre (u - 8); s the row's scale per block, z its zero per group
inline float finish_i4(const int32_t* dots, const int8_t* xq, const float* d, const int32_t* isum, const float* gsum,
                       const uint8_t* row, const float* s, const float* z, int64_t B, int64_t G) {
  __m256 acc = _mm256_setzero_ps();
  int64_t b = 0;
  for (; b + 8 <= B; b += 8) {
    const __m256 coef = _mm256_mul_ps(_mm256_loadu_ps(d + b), _mm256_loadu_ps(s + b));
    acc = _mm256_fmadd_ps(coef, _mm256_cvtepi32_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(dots + b))),
                          acc);
  }
  float rest = 0.0f;
  for (; b < B; ++b)
    rest = std::fma(d[b] * s[b],
                    static_cast<float>(hsum_i32(block_u4_avx2(xq + b * kBlock, row + b * kBlock / 2)) - 8 * isum[b]),
                    rest);
  __m256 off = _mm256_setzero_ps();
  int64_t g = 0;
  for (; g + 8 <= G; g += 8) off = _mm256_fmadd_ps(_mm256_loadu_ps(z + g), _mm256_loadu_ps(gsum + g), off);
  for (; g < G; ++g) rest = std::fma(z[g], gsum[g], rest);
  return sum8(acc) + sum8(off) + rest;
}

// Fewer than kReuse rows: each output row's codes read once for every activation row, eight blocks at a time
#define ZOO_A8_ROWS(NAME, TARGET, DOTS8_I8, DOTS8_U4)                                                                \
  TARGET void NAME(const RowsA8& a, const WeightsA8& w, bool int4, float* y, int64_t N, int64_t n0, int64_t n1) {  \
    const int64_t B = a.B, G = a.G, K = a.K;                                                                       \
    std::vector<float> sc(int4 ? B : 0), zt(int4 ? G : 0);                                                         \
    std::vector<int32_t> dots(B);                                                                                  \
    for (int64_t n = n0; n < n1; ++n) {                                                                            \
      const uint8_t* row = static_cast<const uint8_t*>(w.codes) + n * w.row_bytes;                                 \
      if (int4) expand_scales(w.scale4 + n * G, w.zero4 + n * G, G, w.per, sc.data(), zt.data());                  \
      for (int64_t m = 0; m < a.M; ++m) {                                                                          \
        const int8_t* xq = a.q.data() + m * K;                                                                     \
        const int32_t* isum = int4 ? a.isum.data() + m * B : nullptr;                                              \
        for (int64_t b = 0; b + 8 <= B; b += 8) {                                                                  \
          const __m256i v =                                                                                        \
              int4 ? _mm256_sub_epi32(DOTS8_U4(a.p.data() + m * K + b * kBlock, row + b * kBlock / 2),             \
                                      _mm256_slli_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(isum + b)), 3)) \
                   : DOTS8_I8(xq + b * kBlock, reinterpret_cast<const int8_t*>(row) + b * kBlock);                 \
          _mm256_storeu_si256(reinterpret_cast<__m256i*>(dots.data() + b), v);                                      \
        }                                                                                                          \
        y[m * N + n] = int4 ? finish_i4(dots.data(), xq, a.d.data() + m * B, isum, a.gsum.data() + m * G, row,     \
                                        sc.data(), zt.data(), B, G)                                                \
                            : finish_i8(dots.data(), xq, a.d.data() + m * B, reinterpret_cast<const int8_t*>(row), B, \
                                        w.scale8[n]);                                                              \
      }                                                                                                            \
    }                                                                                                              \
  }

ZOO_A8_ROWS(rows_avx2, , dots8_i8_avx2, dots8_u4_avx2)
ZOO_A8_ROWS(rows_vnni, ZOO_T_VNNI, dots8_i8_vnni, dots8_u4_vnni)
ZOO_A8_ROWS(rows_512, ZOO_T_512, dots8_i8_512, dots8_u4_512)

// Decode (fewer than kReuse rows) from a copy of the weights repacked once per layer (the layer keeps it beside the
// plain codes, which stay the state dict): tiles of 8 output rows, the last padded with zero codes. Per tile and
// block of 32 columns, 32-byte chunks whose 32-bit lane j holds four codes of row j, so that one byte product of a
// chunk with four activation bytes broadcast to every lane adds to the eight rows' block sums at once: no sum
// across lanes per output row. int4: four chunks per block, chunk i holding columns 8i..8i+3 in the low nibbles and
// 8i+4..8i+7 in the high ones; int8: eight chunks, chunk i holding columns 4i..4i+3 as unsigned w + 128 (the
// activation's block sum times 128 is taken off after). The float code repeats the plain kernels' arithmetic in
// the same order, one output row per lane (block b in accumulator b % 8 for whole groups of eight blocks, the rest
// in `rest`), so both give the same bits.
// int4: bytes of repacked codes fetched ahead of the block being read (measured: one token's int4 products 15% faster;
// no gain measured for int8)
constexpr int64_t kAhead = 2048;

inline __m256i bcast4(const int8_t* x) {
  int32_t v;
  std::memcpy(&v, x, 4);
  return _mm256_set1_epi32(v);
}

inline __m256i dp_avx2(__m256i acc, __m256i u, __m256i s) {
  return _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1)));
}
ZOO_T_VNNI inline __m256i dp_vnni(__m256i acc, __m256i u, __m256i s) { return _mm256_dpbusd_avx_epi32(acc, u, s); }
ZOO_T_512 inline __m256i dp_512(__m256i acc, __m256i u, __m256i s) { return _mm256_dpbusd_epi32(acc, u, s); }

// int8 block sums of eight rows; AVX2 restores the signed codes (maddubs would saturate on w + 128) and moves the
// weight's sign onto the activation
inline __m256i rows8_i8_avx2(const uint8_t* c, const int8_t* x, int32_t) {
  const __m256i flip = _mm256_set1_epi8(static_cast<char>(0x80));
  __m256i s0 = _mm256_setzero_si256(), s1 = _mm256_setzero_si256();
  for (int i = 0; i < 8; i += 2) {
    const __m256i w0 = _mm256_xor_si256(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(c + i * 32)), flip);
    const __m256i w1 = _mm256_xor_si256(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(c + i * 32 + 32)), flip);
    s0 = dp_avx2(s0, _mm256_sign_epi8(w0, w0), _mm256_sign_epi8(bcast4(x + 4 * i), w0));
    s1 = dp_avx2(s1, _mm256_sign_epi8(w1, w1), _mm256_sign_epi8(bcast4(x + 4 * i + 4), w1));
  }
  return _mm256_add_epi32(s0, s1);
}

#define ZOO_ROWS8_I8(NAME, TARGET, DP)                                                                             \
  TARGET inline __m256i NAME(const uint8_t* c, const int8_t* x, int32_t xsum) {                                   \
    __m256i s0 = _mm256_setzero_si256(), s1 = _mm256_setzero_si256();                                             \
    for (int i = 0; i < 8; i += 2) {                                                                               \
      s0 = DP(s0, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(c + i * 32)), bcast4(x + 4 * i));           \
      s1 = DP(s1, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(c + i * 32 + 32)), bcast4(x + 4 * i + 4));  \
    }                                                                                                              \
    return _mm256_sub_epi32(_mm256_add_epi32(s0, s1), _mm256_set1_epi32(xsum * 128));                             \
  }
ZOO_ROWS8_I8(rows8_i8_vnni, ZOO_T_VNNI, dp_vnni)
ZOO_ROWS8_I8(rows8_i8_512, ZOO_T_512, dp_512)

// int4, one block of eight rows: the eight lanes' sums of codes (0..15) times the activation. AVX2 adds the eight
// byte products' int16 pair sums as int16 (16 products of at most 15 * 127 in magnitude each: 30480 < 32767, so no
// overflow) and widens once; VNNI adds into int32 directly. Integer sums are exact: the same lanes either way.
inline __m256i block4_avx2(const uint8_t* c, const int8_t* x, __m256i m15) {
  __m256i p = _mm256_setzero_si256();
  for (int i = 0; i < 4; ++i) {
    const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(c + i * 32));
    p = _mm256_add_epi16(p, _mm256_maddubs_epi16(_mm256_and_si256(v, m15), bcast4(x + 8 * i)));
    p = _mm256_add_epi16(p, _mm256_maddubs_epi16(_mm256_and_si256(_mm256_srli_epi16(v, 4), m15), bcast4(x + 8 * i + 4)));
  }
  return _mm256_madd_epi16(p, _mm256_set1_epi16(1));
}

#define ZOO_BLOCK4(NAME, TARGET, DP)                                                                               \
  TARGET inline __m256i NAME(const uint8_t* c, const int8_t* x, __m256i m15) {                                    \
    __m256i s0 = _mm256_setzero_si256(), s1 = _mm256_setzero_si256();                                             \
    for (int i = 0; i < 4; ++i) {                                                                                  \
      const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(c + i * 32));                          \
      s0 = DP(s0, _mm256_and_si256(v, m15), bcast4(x + 8 * i));                                                    \
      s1 = DP(s1, _mm256_and_si256(_mm256_srli_epi16(v, 4), m15), bcast4(x + 8 * i + 4));                          \
    }                                                                                                              \
    return _mm256_add_epi32(s0, s1);                                                                               \
  }
ZOO_BLOCK4(block4_vnni, ZOO_T_VNNI, dp_vnni)
ZOO_BLOCK4(block4_512, ZOO_T_512, dp_512)

#define ZOO_A8_TILES(NAME4, NAME8, TARGET, BLOCK4, ROWS8_I8)                                                          \
  TARGET void NAME4(const RowsA8& a, const uint8_t* rp, const at::Half* sz, int64_t per, float* y, int64_t N,      \
                    int64_t t0, int64_t t1) {                                                                      \
    const int64_t B = a.B, G = a.G, K = a.K;                                                                       \
    const __m256i m15 = _mm256_set1_epi8(15);                                                                      \
    for (int64_t m = 0; m < a.M; ++m) {                                                                            \
      const int8_t* xq = a.q.data() + m * K;                                                                       \
      const float* d = a.d.data() + m * B;                                                                         \
      const int32_t* isum = a.isum.data() + m * B;                                                                 \
      const float* gsum = a.gsum.data() + m * G;                                                                   \
      for (int64_t t = t0; t < t1; ++t) {                                                                          \
        __m256 acc[8], off[8], rest = _mm256_setzero_ps();                                                         \
        for (int j = 0; j < 8; ++j) acc[j] = off[j] = _mm256_setzero_ps();                                         \
        const uint8_t* c = rp + t * B * 128;                                                                       \
        const at::Half* st = sz + t * G * 16;                                                                      \
        auto term = [&](int64_t b) TARGET { /* the lambda too: its kernels inline only under their target */     \
          const uint8_t* cb = c + b * 128;                                                                         \
          _mm_prefetch(reinterpret_cast<const char*>(cb + kAhead), _MM_HINT_T0);                                   \
          _mm_prefetch(reinterpret_cast<const char*>(cb + kAhead + 64), _MM_HINT_T0);                              \
          const __m256i dots = _mm256_sub_epi32(BLOCK4(cb, xq + b * kBlock, m15), _mm256_set1_epi32(8 * isum[b])); \
          const __m256 sc = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(st + b / per * 16))); \
          return std::make_pair(_mm256_mul_ps(_mm256_set1_ps(d[b]), sc), _mm256_cvtepi32_ps(dots));                \
        };                                                                                                         \
        add_terms(B, term, acc, rest);                                                                             \
        add_terms(                                                                                                 \
            G,                                                                                                     \
            [&](int64_t g) TARGET {                                                                                \
              const __m128i z = _mm_loadu_si128(reinterpret_cast<const __m128i*>(st + g * 16 + 8));                \
              return std::make_pair(_mm256_cvtph_ps(z), _mm256_set1_ps(gsum[g]));                                  \
            },                                                                                                     \
            off, rest);                                                                                            \
        const __m256 total = _mm256_add_ps(_mm256_add_ps(tree8(acc), tree8(off)), rest);                           \
        store_rows(total, y + m * N + t * 8, std::min<int64_t>(8, N - t * 8));                                     \
      }                                                                                                            \
    }                                                                                                              \
  }                                                                                                                \
  TARGET void NAME8(const RowsA8& a, const uint8_t* rp, const float* scale, float* y, int64_t N, int64_t t0,       \
                    int64_t t1) {                                                                                  \
    const int64_t B = a.B, K = a.K;                                                                                \
    for (int64_t m = 0; m < a.M; ++m) {                                                                            \
      const int8_t* xq = a.q.data() + m * K;                                                                       \
      const float* d = a.d.data() + m * B;                                                                         \
      const int32_t* isum = a.isum.data() + m * B;                                                                 \
      for (int64_t t = t0; t < t1; ++t) {                                                                          \
        __m256 acc[8], rest = _mm256_setzero_ps();                                                                 \
        for (int j = 0; j < 8; ++j) acc[j] = _mm256_setzero_ps();                                                  \
        const uint8_t* c = rp + t * B * 256;                                                                       \
        add_terms(                                                                                                 \
            B,                                                                                                     \
            [&](int64_t b) TARGET {                                                                                \
              const __m256i dots = ROWS8_I8(c + b * 256, xq + b * kBlock, isum[b]);                                \
              return std::make_pair(_mm256_set1_ps(d[b]), _mm256_cvtepi32_ps(dots));                               \
            },                                                                                                     \
            acc, rest);                                                                                            \
        const __m256 total = _mm256_mul_ps(_mm256_add_ps(tree8(acc), rest), _mm256_loadu_ps(scale + t * 8));       \
        store_rows(total, y + m * N + t * 8, std::min<int64_t>(8, N - t * 8));                                     \
      }                                                                                                            \
    }                                                                                                              \
  }

ZOO_A8_TILES(tiles4_avx2, tiles8_avx2, , block4_avx2, rows8_i8_avx2)
ZOO_A8_TILES(tiles4_vnni, tiles8_vnni, ZOO_T_VNNI, block4_vnni, rows8_i8_vnni)
ZOO_A8_TILES(tiles4_512, tiles8_512, ZOO_T_512, block4_512, rows8_i8_512)

// ---- Prompts (kReuse rows or more) -------------------------------------------------------------------------------
//
// Each tile of 8 output rows is repacked into the decode tiles' layout (repack_int4 / repack_int8 in zoo.kernels.gemv)
// once per call, by the thread that owns it; then kPromptRows activation rows at a time meet its codes block by block
// with one output row per lane (sums4 / sums8: the exact block sums, rows x blocks x 8 lanes), and each activation
// row's outputs come from the decode tiles' float code (finish4 / finish8), so that prompts, decoded tokens and the
// plain rows give the same bits.
constexpr int kPromptRows = 8;  // activation rows whose sums one pass over a tile's codes makes

// Output rows [t0, t0 + rows) of the plain int4 codes as one tile: per block, four 32-byte chunks whose lane j holds
// row j's columns 8i..8i+3 (low nibbles) and 8i+4..8i+7 (high); sc (B, 8) the block scales and zt (G, 8) the zero
// points as float32, lane = row (zero past `rows`)
inline void repack_tile4(const WeightsA8& w, int64_t B, int64_t G, int64_t t0, int64_t rows, uint8_t* packed,
                         float* sc, float* zt) {
  const __m128i m15 = _mm_set1_epi8(15);
  std::fill(packed, packed + B * 128, uint8_t(0));
  std::fill(sc, sc + B * 8, 0.0f);
  std::fill(zt, zt + G * 8, 0.0f);
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t n = t0 + r;
    const uint8_t* row = static_cast<const uint8_t*>(w.codes) + n * w.row_bytes;
    for (int64_t b = 0; b < B; ++b) {
      const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(row + b * kBlock / 2));
      const __m128i lo = _mm_and_si128(v, m15), hi = _mm_and_si128(_mm_srli_epi16(v, 4), m15);
      // the block's codes in column order, 16 a half; of each 8 columns, the last four go to the high nibbles
      const __m128i half[2] = {_mm_unpacklo_epi8(lo, hi), _mm_unpackhi_epi8(lo, hi)};
      for (int h = 0; h < 2; ++h) {
        const __m128i c = _mm_or_si128(half[h], _mm_slli_epi16(_mm_srli_epi64(half[h], 32), 4));
        const int32_t c0 = _mm_cvtsi128_si32(c), c1 = _mm_extract_epi32(c, 2);
        std::memcpy(packed + b * 128 + (2 * h) * 32 + r * 4, &c0, 4);
        std::memcpy(packed + b * 128 + (2 * h + 1) * 32 + r * 4, &c1, 4);
      }
      sc[b * 8 + r] = _cvtsh_ss(w.scale4[n * G + b / w.per].x);
    }
    for (int64_t g = 0; g < G; ++g) zt[g * 8 + r] = _cvtsh_ss(w.zero4[n * G + g].x);
  }
}

// Output rows [t0, t0 + rows) of the plain int8 codes as one tile: per block, eight 32-byte chunks whose lane j holds
// row j's columns 4i..4i+3 as w + 128 (as repack_int8); scale8 the rows' scales
inline void repack_tile8(const WeightsA8& w, int64_t K, int64_t B, int64_t t0, int64_t rows, uint8_t* packed,
                         __m256* scale8) {
  alignas(32) float scales[8] = {};
  for (int64_t r = 0; r < rows; ++r) scales[r] = w.scale8[t0 + r];
  *scale8 = _mm256_load_ps(scales);
  const __m256i flip = _mm256_set1_epi8(static_cast<char>(0x80));
  const int8_t* codes = static_cast<const int8_t*>(w.codes);
  for (int64_t b = 0; b < B; ++b) {
    __m256i v[8];  // row r's 32 codes of the block -> chunk i: the rows' i-th four codes
    for (int r = 0; r < 8; ++r) {
      const int8_t* c = codes + (t0 + r) * K + b * kBlock;
      v[r] = r < rows ? _mm256_xor_si256(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(c)), flip)
                      : _mm256_setzero_si256();
    }
    transpose8(v);
    for (int i = 0; i < 8; ++i) _mm256_storeu_si256(reinterpret_cast<__m256i*>(packed + b * 256 + i * 32), v[i]);
  }
}

// One activation row's outputs of a tile from its exact block sums (B, 8), less off[b] (the activation's block sum
// times the weights' offset) where given: the decode tiles' float code (tiles4_* / tiles8_*) step for step, block b
// of the whole groups of eight in accumulator b % 8 (unrolled, so that the accumulators stay in registers)
inline __m256 block_dots(const int32_t* sums, const int32_t* off, int64_t b) {
  __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(sums + b * 8));
  if (off) v = _mm256_sub_epi32(v, _mm256_set1_epi32(off[b]));
  return _mm256_cvtepi32_ps(v);
}

inline void put_rows(__m256 total, float* y, int64_t count) {
  if (count == 8)
    _mm256_storeu_ps(y, total);
  else
    store_rows(total, y, count);
}

// sc (B, 8) the tile's block scales, zt (G, 8) its zero points
inline void finish4(const int32_t* sums, const float* d, const int32_t* off, const float* gsum, const float* sc,
                    const float* zt, int64_t B, int64_t G, float* y, int64_t count) {
  __m256 acc[8], zeros[8], rest = _mm256_setzero_ps();
  for (int j = 0; j < 8; ++j) acc[j] = zeros[j] = _mm256_setzero_ps();
  add_terms(
      B,
      [&](int64_t b) {
        const __m256 coef = _mm256_mul_ps(_mm256_set1_ps(d[b]), _mm256_loadu_ps(sc + b * 8));
        return std::make_pair(coef, block_dots(sums, off, b));
      },
      acc, rest);
  add_terms(
      G, [&](int64_t g) { return std::make_pair(_mm256_loadu_ps(zt + g * 8), _mm256_set1_ps(gsum[g])); }, zeros, rest);
  put_rows(_mm256_add_ps(_mm256_add_ps(tree8(acc), tree8(zeros)), rest), y, count);
}

inline void finish8(const int32_t* sums, const float* d, const int32_t* off, int64_t B, __m256 scale8, float* y,
                    int64_t count) {
  __m256 acc[8], rest = _mm256_setzero_ps();
  for (int j = 0; j < 8; ++j) acc[j] = _mm256_setzero_ps();
  add_terms(B, [&](int64_t b) { return std::make_pair(_mm256_set1_ps(d[b]), block_dots(sums, off, b)); }, acc, rest);
  put_rows(_mm256_mul_ps(_mm256_add_ps(tree8(acc), rest), scale8), y, count);
}

// The block sums of MR activation rows (x: their int8 codes in column order) against one repacked tile: out (MR, B,
// 8). int4: AVX2 adds the byte products' int16 pair sums as int16 over a block, as block4_avx2 does (no overflow),
// and widens once; VNNI adds into int32. int8: as rows8_i8_* do.
#define ZOO_SUMS(NAME, TARGET, CHUNKS, PER_CHUNK, WIDEN)                                                             \
  template <int MR>                                                                                                \
  TARGET inline void NAME(const uint8_t* c, const int8_t* const* x, int64_t B, int32_t* out) {                     \
    [[maybe_unused]] const __m256i m15 = _mm256_set1_epi8(15); /* int4's low nibble */                             \
    for (int64_t b = 0; b < B; ++b, c += CHUNKS * 32) {                                                            \
      __m256i p[MR];                                                                                               \
      for (int r = 0; r < MR; ++r) p[r] = _mm256_setzero_si256();                                                  \
      for (int i = 0; i < CHUNKS; ++i) {                                                                           \
        const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(c + i * 32));                        \
        const int64_t at = b * kBlock; /* the block's first column */                                              \
        PER_CHUNK                                                                                                  \
      }                                                                                                            \
      for (int r = 0; r < MR; ++r)                                                                                 \
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + (r * B + b) * 8), WIDEN(p[r]));                       \
    }                                                                                                              \
  }
// int4 chunk i: columns 8i..8i+3 in the low nibbles, 8i+4..8i+7 in the high ones
#define ZOO_INT4_CHUNK(DP)                                                                                          \
  const __m256i lo = _mm256_and_si256(v, m15), hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), m15);                \
  for (int r = 0; r < MR; ++r) {                                                                                   \
    p[r] = DP(p[r], lo, bcast4(x[r] + at + 8 * i));                                                               \
    p[r] = DP(p[r], hi, bcast4(x[r] + at + 8 * i + 4));                                                           \
  }
// int8 chunk i: columns 4i..4i+3 as w + 128; AVX2 restores the signed codes (maddubs would saturate on w + 128)
// and moves the weight's sign onto the activation, VNNI multiplies w + 128
#define ZOO_INT8_CHUNK_AVX2                                                                                         \
  const __m256i w = _mm256_xor_si256(v, _mm256_set1_epi8(static_cast<char>(0x80)));                                \
  const __m256i aw = _mm256_sign_epi8(w, w);                                                                       \
  for (int r = 0; r < MR; ++r) p[r] = dp_avx2(p[r], aw, _mm256_sign_epi8(bcast4(x[r] + at + 4 * i), w));
#define ZOO_INT8_CHUNK(DP) \
  for (int r = 0; r < MR; ++r) p[r] = DP(p[r], v, bcast4(x[r] + at + 4 * i));

inline __m256i dp16_avx2(__m256i acc, __m256i u, __m256i s) {
  return _mm256_add_epi16(acc, _mm256_maddubs_epi16(u, s));
}
inline __m256i widen_avx2(__m256i acc) { return _mm256_madd_epi16(acc, _mm256_set1_epi16(1)); }
inline __m256i as_is(__m256i acc) { return acc; }
ZOO_SUMS(sums4_avx2, , 4, ZOO_INT4_CHUNK(dp16_avx2), widen_avx2)
ZOO_SUMS(sums4_vnni, ZOO_T_VNNI, 4, ZOO_INT4_CHUNK(dp_vnni), as_is)
ZOO_SUMS(sums4_512, ZOO_T_512, 4, ZOO_INT4_CHUNK(dp_512), as_is)
ZOO_SUMS(sums8_avx2, , 8, ZOO_INT8_CHUNK_AVX2, as_is)
ZOO_SUMS(sums8_vnni, ZOO_T_VNNI, 8, ZOO_INT8_CHUNK(dp_vnni), as_is)
ZOO_SUMS(sums8_512, ZOO_T_512, 8, ZOO_INT8_CHUNK(dp_512), as_is)

#define ZOO_BY_ROWS(SUMS, mr, ...)      \
  switch (mr) {                         \
    case 8: SUMS<8>(__VA_ARGS__); break; \
    case 7: SUMS<7>(__VA_ARGS__); break; \
    case 6: SUMS<6>(__VA_ARGS__); break; \
    case 5: SUMS<5>(__VA_ARGS__); break; \
    case 4: SUMS<4>(__VA_ARGS__); break; \
    case 3: SUMS<3>(__VA_ARGS__); break; \
    case 2: SUMS<2>(__VA_ARGS__); break; \
    default: SUMS<1>(__VA_ARGS__);      \
  }

// Tiles [t0, t1) of a prompt's outputs; off: what finish4 / finish8 take off the sums (null: nothing)
#define ZOO_A8_PROMPT(NAME, TARGET, SUMS4, SUMS8)                                                                    \
  TARGET void NAME(const RowsA8& a, const int32_t* off, const WeightsA8& w, bool int4, float* y, int64_t N,         \
                   int64_t t0, int64_t t1) {                                                                       \
    const int64_t B = a.B, G = a.G, K = a.K;                                                                       \
    std::vector<uint8_t> packed(B * (int4 ? 128 : 256));                                                           \
    std::vector<float> sc(int4 ? B * 8 : 0), zt(int4 ? G * 8 : 0);                                                 \
    std::vector<int32_t> sums(kPromptRows * B * 8);                                                                \
    __m256 scale8 = _mm256_setzero_ps();                                                                           \
    for (int64_t t = t0; t < t1; ++t) {                                                                            \
      const int64_t rows = std::min<int64_t>(8, N - t * 8);                                                        \
      if (int4)                                                                                                    \
        repack_tile4(w, B, G, t * 8, rows, packed.data(), sc.data(), zt.data());                                   \
      else                                                                                                         \
        repack_tile8(w, K, B, t * 8, rows, packed.data(), &scale8);                                                \
      for (int64_t m0 = 0; m0 < a.M; m0 += kPromptRows) {                                                          \
        const int mr = static_cast<int>(std::min<int64_t>(kPromptRows, a.M - m0));                                \
        const int8_t* x[kPromptRows];                                                                              \
        for (int i = 0; i < mr; ++i) x[i] = a.q.data() + (m0 + i) * K;                                             \
        if (int4) {                                                                                                \
          ZOO_BY_ROWS(SUMS4, mr, packed.data(), x, B, sums.data())                                                 \
        } else {                                                                                                   \
          ZOO_BY_ROWS(SUMS8, mr, packed.data(), x, B, sums.data())                                                 \
        }                                                                                                          \
        for (int i = 0; i < mr; ++i) {                                                                             \
          const int64_t m = m0 + i;                                                                                \
          const int32_t* mo = off ? off + m * B : nullptr;                                                         \
          float* out = y + m * N + t * 8;                                                                          \
          if (int4)                                                                                                \
            finish4(sums.data() + i * B * 8, a.d.data() + m * B, mo, a.gsum.data() + m * G, sc.data(), zt.data(),   \
                    B, G, out, rows);                                                                              \
          else                                                                                                     \
            finish8(sums.data() + i * B * 8, a.d.data() + m * B, mo, B, scale8, out, rows);                        \
        }                                                                                                          \
      }                                                                                                            \
    }                                                                                                              \
  }
ZOO_A8_PROMPT(prompt_avx2, , sums4_avx2, sums8_avx2)
ZOO_A8_PROMPT(prompt_vnni, ZOO_T_VNNI, sums4_vnni, sums8_vnni)
ZOO_A8_PROMPT(prompt_512, ZOO_T_512, sums4_512, sums8_512)

// AVX-512 VNNI on 512 bits: two tiles at once, tile t's eight output rows in the low half of each register and tile
// t + 1's in the high half. The integer sums are exact and the float code below is finish4 / finish8 on sixteen
// lanes, each lane the same operations in the same order, so this gives the bits of the 256-bit paths.
ZOO_T_512 inline __m512i bcast4_512(const int8_t* x) {
  int32_t v;
  std::memcpy(&v, x, 4);
  return _mm512_set1_epi32(v);
}

ZOO_T_512 inline __m512i pair_chunk(const uint8_t* c0, const uint8_t* c1) {  // chunk of tile t | chunk of tile t + 1
  const __m256i lo = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(c0));
  return _mm512_inserti64x4(_mm512_castsi256_si512(lo), _mm256_loadu_si256(reinterpret_cast<const __m256i*>(c1)), 1);
}

// the block sums of MR activation rows against two repacked tiles (c0, c1): out (MR, B, 16)
#define ZOO_SUMS_X2(NAME, CHUNKS, PER_CHUNK)                                                                        \
  template <int MR>                                                                                                \
  ZOO_T_512 inline void NAME(const uint8_t* c0, const uint8_t* c1, const int8_t* const* x, int64_t B, int32_t* out) { \
    [[maybe_unused]] const __m512i m15 = _mm512_set1_epi8(15);                                                     \
    for (int64_t b = 0; b < B; ++b, c0 += CHUNKS * 32, c1 += CHUNKS * 32) {                                        \
      __m512i p[MR];                                                                                               \
      for (int r = 0; r < MR; ++r) p[r] = _mm512_setzero_si512();                                                  \
      for (int i = 0; i < CHUNKS; ++i) {                                                                           \
        const __m512i v = pair_chunk(c0 + i * 32, c1 + i * 32);                                                    \
        const int64_t at = b * kBlock;                                                                             \
        PER_CHUNK                                                                                                  \
      }                                                                                                            \
      for (int r = 0; r < MR; ++r) _mm512_storeu_si512(out + (r * B + b) * 16, p[r]);                              \
    }                                                                                                              \
  }
ZOO_SUMS_X2(sums4_x2, 4,
            const __m512i lo = _mm512_and_si512(v, m15);
            const __m512i hi = _mm512_and_si512(_mm512_srli_epi16(v, 4), m15);
            for (int r = 0; r < MR; ++r) {
              p[r] = _mm512_dpbusd_epi32(p[r], lo, bcast4_512(x[r] + at + 8 * i));
              p[r] = _mm512_dpbusd_epi32(p[r], hi, bcast4_512(x[r] + at + 8 * i + 4));
            })
ZOO_SUMS_X2(sums8_x2, 8,
            for (int r = 0; r < MR; ++r) p[r] = _mm512_dpbusd_epi32(p[r], v, bcast4_512(x[r] + at + 4 * i));)

ZOO_T_512 inline __m512 tree8_x2(const __m512* v) {  // tree8 on sixteen lanes
  return _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(v[0], v[4]), _mm512_add_ps(v[2], v[6])),
                       _mm512_add_ps(_mm512_add_ps(v[1], v[5]), _mm512_add_ps(v[3], v[7])));
}

template <class Term>
ZOO_T_512 inline void add_terms_x2(int64_t n, Term term, __m512* acc, __m512& rest) {  // add_terms on sixteen lanes
  const int64_t n8 = n / 8 * 8;
  for (int64_t i = 0; i < n8; i += 8)
    for (int j = 0; j < 8; ++j) {
      const auto [a, b] = term(i + j);
      acc[j] = _mm512_fmadd_ps(a, b, acc[j]);
    }
  for (int64_t i = n8; i < n; ++i) {
    const auto [a, b] = term(i);
    rest = _mm512_fmadd_ps(a, b, rest);
  }
}

ZOO_T_512 inline __m512 block_dots_x2(const int32_t* sums, const int32_t* off, int64_t b) {
  __m512i v = _mm512_loadu_si512(sums + b * 16);
  if (off) v = _mm512_sub_epi32(v, _mm512_set1_epi32(off[b]));
  return _mm512_cvtepi32_ps(v);
}

ZOO_T_512 inline void put_rows_x2(__m512 total, float* y, const int64_t* count) {  // tile t's rows, then t + 1's
  put_rows(_mm512_castps512_ps256(total), y, count[0]);
  put_rows(high_half(total), y + 8, count[1]);
}

// sc (B, 16) the two tiles' block scales, zt (G, 16) their zero points
ZOO_T_512 inline void finish4_x2(const int32_t* sums, const float* d, const int32_t* off, const float* gsum,
                                 const float* sc, const float* zt, int64_t B, int64_t G, float* y,
                                 const int64_t* count) {
  __m512 acc[8], zeros[8], rest = _mm512_setzero_ps();
  for (int j = 0; j < 8; ++j) acc[j] = zeros[j] = _mm512_setzero_ps();
  add_terms_x2(
      B,
      [&](int64_t b) ZOO_T_512 {
        const __m512 coef = _mm512_mul_ps(_mm512_set1_ps(d[b]), _mm512_loadu_ps(sc + b * 16));
        return std::make_pair(coef, block_dots_x2(sums, off, b));
      },
      acc, rest);
  add_terms_x2(
      G, [&](int64_t g) ZOO_T_512 { return std::make_pair(_mm512_loadu_ps(zt + g * 16), _mm512_set1_ps(gsum[g])); },
      zeros, rest);
  put_rows_x2(_mm512_add_ps(_mm512_add_ps(tree8_x2(acc), tree8_x2(zeros)), rest), y, count);
}

ZOO_T_512 inline void finish8_x2(const int32_t* sums, const float* d, const int32_t* off, int64_t B, __m512 scale16,
                                 float* y, const int64_t* count) {
  __m512 acc[8], rest = _mm512_setzero_ps();
  for (int j = 0; j < 8; ++j) acc[j] = _mm512_setzero_ps();
  add_terms_x2(
      B, [&](int64_t b) ZOO_T_512 { return std::make_pair(_mm512_set1_ps(d[b]), block_dots_x2(sums, off, b)); }, acc,
      rest);
  put_rows_x2(_mm512_mul_ps(_mm512_add_ps(tree8_x2(acc), rest), scale16), y, count);
}

inline void pair_lanes(const float* a, const float* b, int64_t n, float* out) {  // (n, 8) and (n, 8) -> (n, 16)
  for (int64_t i = 0; i < n; ++i) {
    std::copy(a + i * 8, a + i * 8 + 8, out + i * 16);
    std::copy(b + i * 8, b + i * 8 + 8, out + i * 16 + 8);
  }
}

// Tiles [t0, t1) of a prompt's outputs two at a time (a last one alone by prompt_512)
ZOO_T_512 void prompt_512_x2(const RowsA8& a, const int32_t* off, const WeightsA8& w, bool int4, float* y, int64_t N,
                             int64_t t0, int64_t t1) {
  const int64_t B = a.B, G = a.G, K = a.K, bytes = B * (int4 ? 128 : 256);
  std::vector<uint8_t> packed(2 * bytes);
  std::vector<float> sc(int4 ? 2 * B * 8 : 0), zt(int4 ? 2 * G * 8 : 0), sc16(sc.size()), zt16(zt.size());
  std::vector<int32_t> sums(kPromptRows * B * 16);
  __m256 scale8[2] = {_mm256_setzero_ps(), _mm256_setzero_ps()};
  int64_t t = t0;
  for (; t + 2 <= t1; t += 2) {
    int64_t rows[2];
    for (int h = 0; h < 2; ++h) {
      rows[h] = std::min<int64_t>(8, N - (t + h) * 8);
      if (int4)
        repack_tile4(w, B, G, (t + h) * 8, rows[h], packed.data() + h * bytes, sc.data() + h * B * 8,
                     zt.data() + h * G * 8);
      else
        repack_tile8(w, K, B, (t + h) * 8, rows[h], packed.data() + h * bytes, &scale8[h]);
    }
    if (int4) {
      pair_lanes(sc.data(), sc.data() + B * 8, B, sc16.data());
      pair_lanes(zt.data(), zt.data() + G * 8, G, zt16.data());
    }
    const __m512 scale16 = join_halves(scale8[0], scale8[1]);
    for (int64_t m0 = 0; m0 < a.M; m0 += kPromptRows) {
      const int mr = static_cast<int>(std::min<int64_t>(kPromptRows, a.M - m0));
      const int8_t* x[kPromptRows];
      for (int i = 0; i < mr; ++i) x[i] = a.q.data() + (m0 + i) * K;
      if (int4) {
        ZOO_BY_ROWS(sums4_x2, mr, packed.data(), packed.data() + bytes, x, B, sums.data())
      } else {
        ZOO_BY_ROWS(sums8_x2, mr, packed.data(), packed.data() + bytes, x, B, sums.data())
      }
      for (int i = 0; i < mr; ++i) {
        const int64_t m = m0 + i;
        const int32_t* mo = off ? off + m * B : nullptr;
        float* out = y + m * N + t * 8;
        if (int4)
          finish4_x2(sums.data() + i * B * 16, a.d.data() + m * B, mo, a.gsum.data() + m * G, sc16.data(),
                     zt16.data(), B, G, out, rows);
        else
          finish8_x2(sums.data() + i * B * 16, a.d.data() + m * B, mo, B, scale16, out, rows);
      }
    }
  }
  if (t < t1) prompt_512(a, off, w, int4, y, N, t, t1);
}

// Decode on 512 bits: two repacked tiles at once, as prompt_512_x2 pairs them, with ZOO_A8_TILES's float code on
// sixteen lanes; a thread's last tile alone by tiles4_512 / tiles8_512
ZOO_T_512 inline __m512i block4_x2(const uint8_t* c0, const uint8_t* c1, const int8_t* x, __m512i m15) {
  __m512i s0 = _mm512_setzero_si512(), s1 = _mm512_setzero_si512();
  for (int i = 0; i < 4; ++i) {
    const __m512i v = pair_chunk(c0 + i * 32, c1 + i * 32);
    s0 = _mm512_dpbusd_epi32(s0, _mm512_and_si512(v, m15), bcast4_512(x + 8 * i));
    s1 = _mm512_dpbusd_epi32(s1, _mm512_and_si512(_mm512_srli_epi16(v, 4), m15), bcast4_512(x + 8 * i + 4));
  }
  return _mm512_add_epi32(s0, s1);
}

ZOO_T_512 inline __m512i rows8_i8_x2(const uint8_t* c0, const uint8_t* c1, const int8_t* x, int32_t xsum) {
  __m512i s0 = _mm512_setzero_si512(), s1 = _mm512_setzero_si512();
  for (int i = 0; i < 8; i += 2) {
    s0 = _mm512_dpbusd_epi32(s0, pair_chunk(c0 + i * 32, c1 + i * 32), bcast4_512(x + 4 * i));
    s1 = _mm512_dpbusd_epi32(s1, pair_chunk(c0 + i * 32 + 32, c1 + i * 32 + 32), bcast4_512(x + 4 * i + 4));
  }
  return _mm512_sub_epi32(_mm512_add_epi32(s0, s1), _mm512_set1_epi32(xsum * 128));
}

ZOO_T_512 inline __m512 halves_x2(const at::Half* a, const at::Half* b) {  // eight float16 of each tile: 16 floats
  return join_halves(_mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(a))),
                     _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(b))));
}

ZOO_T_512 void tiles4_x2(const RowsA8& a, const uint8_t* rp, const at::Half* sz, int64_t per, float* y, int64_t N,
                         int64_t t0, int64_t t1) {
  const int64_t B = a.B, G = a.G, K = a.K, t2 = t0 + (t1 - t0) / 2 * 2;
  const __m512i m15 = _mm512_set1_epi8(15);
  for (int64_t m = 0; m < a.M; ++m) {
    const int8_t* xq = a.q.data() + m * K;
    const float* d = a.d.data() + m * B;
    const int32_t* isum = a.isum.data() + m * B;
    const float* gsum = a.gsum.data() + m * G;
    for (int64_t t = t0; t < t2; t += 2) {
      __m512 acc[8], off[8], rest = _mm512_setzero_ps();
      for (int j = 0; j < 8; ++j) acc[j] = off[j] = _mm512_setzero_ps();
      const uint8_t *c0 = rp + t * B * 128, *c1 = c0 + B * 128;
      const at::Half *s0 = sz + t * G * 16, *s1 = s0 + G * 16;
      auto term = [&](int64_t b) ZOO_T_512 {
        const uint8_t *cb0 = c0 + b * 128, *cb1 = c1 + b * 128;
        for (const uint8_t* cb : {cb0, cb1}) {
          _mm_prefetch(reinterpret_cast<const char*>(cb + kAhead), _MM_HINT_T0);
          _mm_prefetch(reinterpret_cast<const char*>(cb + kAhead + 64), _MM_HINT_T0);
        }
        const __m512i sums = block4_x2(cb0, cb1, xq + b * kBlock, m15);
        const __m512i dots = _mm512_sub_epi32(sums, _mm512_set1_epi32(8 * isum[b]));
        const __m512 sc = halves_x2(s0 + b / per * 16, s1 + b / per * 16);
        return std::make_pair(_mm512_mul_ps(_mm512_set1_ps(d[b]), sc), _mm512_cvtepi32_ps(dots));
      };
      add_terms_x2(B, term, acc, rest);
      add_terms_x2(
          G,
          [&](int64_t g) ZOO_T_512 {
            return std::make_pair(halves_x2(s0 + g * 16 + 8, s1 + g * 16 + 8), _mm512_set1_ps(gsum[g]));
          },
          off, rest);
      const int64_t count[2] = {8, std::min<int64_t>(8, N - t * 8 - 8)};
      put_rows_x2(_mm512_add_ps(_mm512_add_ps(tree8_x2(acc), tree8_x2(off)), rest), y + m * N + t * 8, count);
    }
  }
  if (t2 < t1) tiles4_512(a, rp, sz, per, y, N, t2, t1);
}

ZOO_T_512 void tiles8_x2(const RowsA8& a, const uint8_t* rp, const float* scale, float* y, int64_t N, int64_t t0,
                         int64_t t1) {
  const int64_t B = a.B, K = a.K, t2 = t0 + (t1 - t0) / 2 * 2;
  for (int64_t m = 0; m < a.M; ++m) {
    const int8_t* xq = a.q.data() + m * K;
    const float* d = a.d.data() + m * B;
    const int32_t* isum = a.isum.data() + m * B;
    for (int64_t t = t0; t < t2; t += 2) {
      __m512 acc[8], rest = _mm512_setzero_ps();
      for (int j = 0; j < 8; ++j) acc[j] = _mm512_setzero_ps();
      const uint8_t *c0 = rp + t * B * 256, *c1 = c0 + B * 256;
      add_terms_x2(
          B,
          [&](int64_t b) ZOO_T_512 {
            const __m512i dots = rows8_i8_x2(c0 + b * 256, c1 + b * 256, xq + b * kBlock, isum[b]);
            return std::make_pair(_mm512_set1_ps(d[b]), _mm512_cvtepi32_ps(dots));
          },
          acc, rest);
      const int64_t count[2] = {8, std::min<int64_t>(8, N - t * 8 - 8)};
      const __m512 total = _mm512_mul_ps(_mm512_add_ps(tree8_x2(acc), rest), _mm512_loadu_ps(scale + t * 8));
      put_rows_x2(total, y + m * N + t * 8, count);
    }
  }
  if (t2 < t1) tiles8_512(a, rp, scale, y, N, t2, t1);
}

// Fewer than kReuse rows: the plain rows' kernels (ZOO_A8_ROWS); more: the prompt kernels, whose int8 offset path
// (VNNI) takes the activation's block sums times 128 off and whose int4 path the block sums times 8
void run_a8(const RowsA8& a, const WeightsA8& w, bool int4, float* y, int64_t N, int64_t isa) {
  TORCH_CHECK(isa >= 0 && isa <= 2 && (cpu_isas() >> isa & 1),
              "zoo_gemv: this CPU cannot run the 8-bit activation path ", isa);
  if (a.M < kReuse) {  // output rows in parallel, in whole tiles
    at::parallel_for(0, (N + kTile - 1) / kTile, 1, [&](int64_t begin, int64_t end) {
      const int64_t n0 = begin * kTile, n1 = std::min(N, end * kTile);
      if (isa == kIsaAvx512Vnni)
        rows_512(a, w, int4, y, N, n0, n1);
      else if (isa == kIsaAvxVnni)
        rows_vnni(a, w, int4, y, N, n0, n1);
      else
        rows_avx2(a, w, int4, y, N, n0, n1);
    });
    return;
  }
  std::vector<int32_t> off;  // what the prompt kernels' float code takes off each block's sums, if anything
  if (int4 || isa != kIsaAvx2) {
    off.resize(a.M * a.B);
    for (int64_t i = 0; i < a.M * a.B; ++i) off[i] = (int4 ? 8 : 128) * a.isum[i];
  }
  at::parallel_for(0, (N + kTile - 1) / kTile, 1, [&](int64_t t0, int64_t t1) {  // tiles of output rows in parallel
    const int32_t* o = off.empty() ? nullptr : off.data();
    if (isa == kIsaAvx512Vnni)
      prompt_512_x2(a, o, w, int4, y, N, t0, t1);
    else if (isa == kIsaAvxVnni)
      prompt_vnni(a, o, w, int4, y, N, t0, t1);
    else
      prompt_avx2(a, o, w, int4, y, N, t0, t1);
  });
}

// x (M, K) against repacked weights: N output rows in ceil(N / 8) tiles
at::Tensor gemm_a8_tiles(const at::Tensor& x_, const at::Tensor& rp_, const at::Tensor& scale_, int64_t N, int64_t gs,
                         int64_t isa) {
  const bool int4 = gs > 0;
  const int64_t K = x_.size(-1), T = (N + 7) / 8;
  TORCH_CHECK(x_.scalar_type() == at::kFloat && x_.dim() == 2 && K % kBlock == 0 && rp_.scalar_type() == at::kByte &&
              rp_.numel() == T * 8 * (int4 ? K / 2 : K) && (!int4 || (gs % kBlock == 0 && K % gs == 0)) &&
              (int4 ? scale_.scalar_type() == at::kHalf && scale_.numel() == T * 16 * (K / gs)
                    : scale_.scalar_type() == at::kFloat && scale_.numel() == T * 8),
              "zoo_gemv: the repacked weights do not fit rows of ", K, " columns and ", N, " outputs");
  TORCH_CHECK(isa >= 0 && isa <= 2 && (cpu_isas() >> isa & 1),
              "zoo_gemv: this CPU cannot run the 8-bit activation path ", isa);
  const at::Tensor x = x_.contiguous(), rp = rp_.contiguous(), scale = scale_.contiguous();
  const int64_t M = x.size(0);
  auto y = at::empty({M, N}, x.options());
  if (M == 0 || N == 0) return y;
  const RowsA8 a = quantize_rows(x.data_ptr<float>(), M, K, int4 ? gs : 0, false, true);
  const uint8_t* codes = rp.data_ptr<uint8_t>();
  float* out = y.data_ptr<float>();
  at::parallel_for(0, T, 4, [&](int64_t t0, int64_t t1) {
    if (int4) {
      const at::Half* sz = scale.data_ptr<at::Half>();
      if (isa == kIsaAvx512Vnni)
        tiles4_x2(a, codes, sz, gs / kBlock, out, N, t0, t1);
      else if (isa == kIsaAvxVnni)
        tiles4_vnni(a, codes, sz, gs / kBlock, out, N, t0, t1);
      else
        tiles4_avx2(a, codes, sz, gs / kBlock, out, N, t0, t1);
    } else {
      const float* s8 = scale.data_ptr<float>();
      if (isa == kIsaAvx512Vnni)
        tiles8_x2(a, codes, s8, out, N, t0, t1);
      else if (isa == kIsaAvxVnni)
        tiles8_vnni(a, codes, s8, out, N, t0, t1);
      else
        tiles8_avx2(a, codes, s8, out, N, t0, t1);
    }
  });
  return y;
}

at::Tensor rows_of(const at::Tensor& x, int64_t K) {
  return x.reshape({-1, K}).contiguous();
}

at::Tensor gemm_int8_a8(const at::Tensor& x_, const at::Tensor& q_, const at::Tensor& scale_, int64_t isa) {
  TORCH_CHECK(x_.scalar_type() == at::kFloat && q_.scalar_type() == at::kChar && scale_.scalar_type() == at::kFloat &&
              x_.dim() == 2 && q_.dim() == 2 && x_.size(1) == q_.size(1) && scale_.numel() == q_.size(0),
              "zoo_gemv::int8_a8 takes float32 rows (M, K), int8 codes (N, K) and float32 scales (N)");
  TORCH_CHECK(q_.size(1) % kBlock == 0, "zoo_gemv::int8_a8: the row length ", q_.size(1),
              " is not a multiple of 32 (the Q8_0 block); such layers take the int16 or PyTorch path");
  const at::Tensor x = x_.contiguous(), q = q_.contiguous(), scale = scale_.contiguous();
  const int64_t M = x.size(0), N = q.size(0), K = q.size(1);
  auto y = at::empty({M, N}, x.options());
  if (M == 0 || N == 0) return y;
  const RowsA8 a = quantize_rows(x.data_ptr<float>(), M, K, 0, false, M >= kReuse && isa != kIsaAvx2);
  WeightsA8 w;
  w.codes = q.data_ptr<int8_t>();
  w.row_bytes = K;
  w.scale8 = scale.data_ptr<float>();
  run_a8(a, w, false, y.data_ptr<float>(), N, isa);
  return y;
}

at::Tensor gemm_int4_a8(const at::Tensor& x_, const at::Tensor& codes_, const at::Tensor& scale_,
                        const at::Tensor& zero_, int64_t gs, int64_t isa) {
  TORCH_CHECK(x_.scalar_type() == at::kFloat && codes_.scalar_type() == at::kByte && codes_.dim() == 2 &&
              x_.dim() == 2 && scale_.scalar_type() == at::kHalf && zero_.scalar_type() == at::kHalf && gs > 0 &&
              gs % kBlock == 0 && x_.size(1) == 2 * codes_.size(1) && x_.size(1) % gs == 0 &&
              scale_.numel() == codes_.size(0) * (x_.size(1) / gs) && zero_.numel() == scale_.numel(),
              "zoo_gemv::int4_a8 takes float32 rows (M, K), uint8 codes (N, K / 2), float16 scale and zero "
              "(N, K / gs), gs a multiple of 32 dividing K");
  const at::Tensor x = x_.contiguous(), codes = codes_.contiguous();
  const at::Tensor scale = scale_.contiguous(), zero = zero_.contiguous();
  const int64_t M = x.size(0), N = codes.size(0), K = x.size(1);
  auto y = at::empty({M, N}, x.options());
  if (M == 0 || N == 0) return y;
  const bool prompt = M >= kReuse;  // prompts take the codes in column order, the plain rows split per block
  RowsA8 a = quantize_rows(x.data_ptr<float>(), M, K, gs, !prompt);
  if (!prompt) {
    a.p.resize(M * K);
    for (int64_t m = 0; m < M; ++m) pair_layout(a.q.data() + m * K, a.p.data() + m * K, a.B);
  }
  WeightsA8 w;
  w.codes = codes.data_ptr<uint8_t>();
  w.row_bytes = K / 2;
  w.scale4 = scale.data_ptr<at::Half>();
  w.zero4 = zero.data_ptr<at::Half>();
  w.per = gs / kBlock;
  run_a8(a, w, true, y.data_ptr<float>(), N, isa);
  return y;
}

std::tuple<at::Tensor, at::Tensor> q8_0(const at::Tensor& x_) {
  TORCH_CHECK(x_.scalar_type() == at::kFloat && x_.dim() == 2 && x_.size(1) % kBlock == 0,
              "zoo_gemv::q8_0 takes float32 rows (M, K) with K a multiple of 32");
  const at::Tensor x = x_.contiguous();
  const int64_t M = x.size(0), K = x.size(1);
  const RowsA8 a = quantize_rows(x.data_ptr<float>(), M, K, 0, false);
  at::Tensor q = at::empty({M, K}, x.options().dtype(at::kChar));
  at::Tensor d = at::empty({M, K / kBlock}, x.options());
  std::copy(a.q.begin(), a.q.end(), q.data_ptr<int8_t>());
  std::copy(a.d.begin(), a.d.end(), d.data_ptr<float>());
  return {q, d};
}
