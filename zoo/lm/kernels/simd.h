// What gemv.cpp and gemv_a8.h both use: the activation row's block of columns and the eight-lane sum and maximum.
#pragma once

#include <immintrin.h>

#include <cstdint>

namespace {

constexpr int64_t kBlock = 32;  // columns per int16 block of the activation row

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
