// Shared by gemv.cpp, gemv_a8.h and vision.cpp: the activation row's block of columns, the eight-lane sum and maximum.
#pragma once

#include <immintrin.h>

#include <cstdint>

namespace {

constexpr int64_t kBlock = 32;  // columns per int16 block of the activation row

// The instruction paths, each compiled with function-level target attributes into the one build and chosen at run
// time. 8-bit activations: AVX2, AVX-VNNI (vpdpbusd on 256 bits), AVX-512 VNNI; the float32 one-row product: AVX2
// or AVX-512F (the same per-lane arithmetic on 512 bits).
#define ZOO_T_VNNI __attribute__((target("avx2,fma,f16c,avxvnni")))
#define ZOO_T_512 __attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")))
#define ZOO_T_F512 __attribute__((target("avx2,fma,f16c,avx512f")))

constexpr int64_t kIsaAvx2 = 0, kIsaAvxVnni = 1, kIsaAvx512Vnni = 2;  // the 8-bit paths: bit i of cpu_isas()
constexpr int64_t kF32Avx2 = 0, kF32Avx512 = 1;                        // the float32 paths
constexpr int64_t kAvx512fBit = 8;                                     // cpu_isas(): AVX-512F (kF32Avx512)

inline int64_t detect_isas() {  // bit i: path i runs here (the CPU reports it and the OS saves its registers)
  __builtin_cpu_init();
  int64_t found = 0;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c")) found |= 1;
  if ((found & 1) && __builtin_cpu_supports("avxvnni")) found |= 2;
  if ((found & 1) && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vnni"))
    found |= 4;
  if ((found & 1) && __builtin_cpu_supports("avx512f")) found |= kAvx512fBit;
  return found;
}

inline int64_t cpu_isas() {
  static const int64_t found = detect_isas();
  return found;
}

ZOO_T_F512 inline __m256 high_half(__m512 v) {  // lanes 8..15 of a 512-bit register
  return _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1));
}

ZOO_T_F512 inline __m512 join_halves(__m256 lo, __m256 hi) {  // high_half's inverse: lo in lanes 0..7, hi in 8..15
  return _mm512_castpd_ps(_mm512_insertf64x4(_mm512_castps_pd(_mm512_castps256_ps512(lo)), _mm256_castps_pd(hi), 1));
}

inline float sum8(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

inline float max8(__m256 v) {  // the largest of the eight lanes (the quantizers' block maximum, the softmax's)
  __m128 s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_max_ps(s, _mm_movehl_ps(s, s));
  s = _mm_max_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

}  // namespace
