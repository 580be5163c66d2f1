// A 3x3 convolution (stride 1, padding 1) by Winograd's F(2x2, 3x3) on an AVX2 CPU, for inference: channels-last
// float32 input, weights transformed once per network (zoo/kernels/winograd.py), channels-last float32 output.
//
// Every 2x2 block of outputs ("tile") reads a 4x4 patch d of the input; with the transforms
//   B^T = [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]],  A^T = [[1, 1, 1, 0], [0, 1, -1, -1]]
// and the weights' U = G g G^T (G = [[1, 0, 0], [.5, .5, .5], [.5, -.5, .5], [0, 0, 1]]), the outputs are
//   y = A^T [ sum_c U[c, k] * (B^T d_c B) ] A + bias[k],
// 16 products per tile where direct convolution takes 36: the sum over input channels is 16 matrix products, one per
// position of the 4x4 transformed patch. Tiles go in blocks of kTiles; a block's transformed patches V (16 x kTiles
// x C), its products M (16 x kTiles x K) and the weights' panel for one position stay in the core's caches. Each
// output is computed by one thread in a fixed order (the sum over c in order, then the output transform), so the
// result does not depend on the number of threads.
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/zeros.h>
#include <ATen/Parallel.h>
#include <immintrin.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <tuple>
#include <vector>

namespace {

constexpr int64_t kTiles = 48;  // tiles per block: a multiple of the micro-kernel's 6 rows
constexpr int64_t kTilesW = 96;  // tiles per block of the weights' gradient (measured 1.1-1.25x faster than 48)
constexpr int64_t kRows = 6;    // rows (tiles) of the micro-kernel
constexpr int64_t kCols = 16;   // output channels of the micro-kernel: two vectors

// c[6 x 16] = init + a[6 x C] (rows lda apart) @ b[C x 16] (one weight panel: 16 contiguous floats per input
// channel); init is 16 values added to every row first (a bias), or none
inline void micro_kernel(const float* a, int64_t lda, const float* b, int64_t C, float* c, int64_t ldc,
                         const float* init = nullptr) {
  const __m256 i0 = init ? _mm256_loadu_ps(init) : _mm256_setzero_ps();
  const __m256 i1 = init ? _mm256_loadu_ps(init + 8) : _mm256_setzero_ps();
  __m256 c00 = i0, c01 = i1, c10 = i0, c11 = i1, c20 = i0, c21 = i1, c30 = i0, c31 = i1, c40 = i0, c41 = i1;
  __m256 c50 = i0, c51 = i1;
  for (int64_t k = 0; k < C; ++k) {
    const __m256 b0 = _mm256_loadu_ps(b + k * kCols), b1 = _mm256_loadu_ps(b + k * kCols + 8);
    __m256 x = _mm256_broadcast_ss(a + k);
    c00 = _mm256_fmadd_ps(x, b0, c00);
    c01 = _mm256_fmadd_ps(x, b1, c01);
    x = _mm256_broadcast_ss(a + lda + k);
    c10 = _mm256_fmadd_ps(x, b0, c10);
    c11 = _mm256_fmadd_ps(x, b1, c11);
    x = _mm256_broadcast_ss(a + 2 * lda + k);
    c20 = _mm256_fmadd_ps(x, b0, c20);
    c21 = _mm256_fmadd_ps(x, b1, c21);
    x = _mm256_broadcast_ss(a + 3 * lda + k);
    c30 = _mm256_fmadd_ps(x, b0, c30);
    c31 = _mm256_fmadd_ps(x, b1, c31);
    x = _mm256_broadcast_ss(a + 4 * lda + k);
    c40 = _mm256_fmadd_ps(x, b0, c40);
    c41 = _mm256_fmadd_ps(x, b1, c41);
    x = _mm256_broadcast_ss(a + 5 * lda + k);
    c50 = _mm256_fmadd_ps(x, b0, c50);
    c51 = _mm256_fmadd_ps(x, b1, c51);
  }
  _mm256_storeu_ps(c, c00);
  _mm256_storeu_ps(c + 8, c01);
  _mm256_storeu_ps(c + ldc, c10);
  _mm256_storeu_ps(c + ldc + 8, c11);
  _mm256_storeu_ps(c + 2 * ldc, c20);
  _mm256_storeu_ps(c + 2 * ldc + 8, c21);
  _mm256_storeu_ps(c + 3 * ldc, c30);
  _mm256_storeu_ps(c + 3 * ldc + 8, c31);
  _mm256_storeu_ps(c + 4 * ldc, c40);
  _mm256_storeu_ps(c + 4 * ldc + 8, c41);
  _mm256_storeu_ps(c + 5 * ldc, c50);
  _mm256_storeu_ps(c + 5 * ldc + 8, c51);
}

// The input transform of the tiles t0 .. t0 + count - 1 of x (N, H, W, C) channels-last: V[p][t][c] = (B^T d B)[p]
// for tile t0 + t (th x tw tiles an image); rows count .. kTiles - 1 are zeros.
void input_tiles(const float* xp, int64_t H, int64_t W, int64_t C, int64_t th, int64_t tw, int64_t t0, int64_t count,
                 float* V, int64_t nb = kTiles) {
  const __m256 zero = _mm256_setzero_ps();
  for (int64_t t = 0; t < nb; ++t) {
    if (t >= count) {  // rows past the last tile: zeros, computed and dropped
      for (int64_t p = 0; p < 16; ++p) std::fill_n(V + (p * nb + t) * C, C, 0.0f);
      continue;
    }
    const int64_t tile = t0 + t, n = tile / (th * tw), ty = tile % (th * tw) / tw, tx = tile % tw;
    const int64_t y0 = 2 * ty - 1, x0 = 2 * tx - 1;
    const float* rows[4][4];
    for (int i = 0; i < 4; ++i)
      for (int j = 0; j < 4; ++j) {
        const int64_t yy = y0 + i, xx = x0 + j;
        rows[i][j] = (yy >= 0 && yy < H && xx >= 0 && xx < W) ? xp + ((n * H + yy) * W + xx) * C : nullptr;
      }
    for (int64_t c = 0; c < C; c += 8) {
      __m256 d[4][4];
      for (int i = 0; i < 4; ++i)
        for (int j = 0; j < 4; ++j) d[i][j] = rows[i][j] ? _mm256_loadu_ps(rows[i][j] + c) : zero;
      __m256 s[4][4];
      for (int j = 0; j < 4; ++j) {  // B^T d
        s[0][j] = _mm256_sub_ps(d[0][j], d[2][j]);
        s[1][j] = _mm256_add_ps(d[1][j], d[2][j]);
        s[2][j] = _mm256_sub_ps(d[2][j], d[1][j]);
        s[3][j] = _mm256_sub_ps(d[1][j], d[3][j]);
      }
      for (int i = 0; i < 4; ++i) {  // (B^T d) B
        float* out = V + ((i * 4) * nb + t) * C + c;
        _mm256_storeu_ps(out, _mm256_sub_ps(s[i][0], s[i][2]));
        _mm256_storeu_ps(out + nb * C, _mm256_add_ps(s[i][1], s[i][2]));
        _mm256_storeu_ps(out + 2 * nb * C, _mm256_sub_ps(s[i][2], s[i][1]));
        _mm256_storeu_ps(out + 3 * nb * C, _mm256_sub_ps(s[i][1], s[i][3]));
      }
    }
  }
}

// c[6 x 16] += a[6 x n] @ b[n x 16]: row r, step t of a at a[r * lda + t * astep], b's rows ldb apart
inline void micro_kernel_acc(const float* a, int64_t lda, int64_t astep, const float* b, int64_t ldb, int64_t n,
                             float* c, int64_t ldc) {
  __m256 acc[kRows][2];
  for (int r = 0; r < kRows; ++r) {
    acc[r][0] = _mm256_loadu_ps(c + r * ldc);
    acc[r][1] = _mm256_loadu_ps(c + r * ldc + 8);
  }
  for (int64_t t = 0; t < n; ++t) {
    const __m256 b0 = _mm256_loadu_ps(b + t * ldb), b1 = _mm256_loadu_ps(b + t * ldb + 8);
    const float* at = a + t * astep;
#pragma GCC unroll 6
    for (int r = 0; r < kRows; ++r) {
      const __m256 x = _mm256_broadcast_ss(at + r * lda);
      acc[r][0] = _mm256_fmadd_ps(x, b0, acc[r][0]);
      acc[r][1] = _mm256_fmadd_ps(x, b1, acc[r][1]);
    }
  }
  for (int r = 0; r < kRows; ++r) {
    _mm256_storeu_ps(c + r * ldc, acc[r][0]);
    _mm256_storeu_ps(c + r * ldc + 8, acc[r][1]);
  }
}

// x (N, H, W, C) channels-last; u (16, K / 16, C, 16); bias (K,) -> y (N, H, W, K) channels-last
at::Tensor conv3x3(const at::Tensor& x_, const at::Tensor& u_, const at::Tensor& bias_) {
  TORCH_CHECK(x_.dim() == 4 && x_.scalar_type() == at::kFloat && u_.scalar_type() == at::kFloat &&
                  bias_.scalar_type() == at::kFloat,
              "zoo_conv::winograd3x3 takes float32 (N, C, H, W) images, transformed weights and a bias");
  const int64_t N = x_.size(0), C = x_.size(1), H = x_.size(2), W = x_.size(3);
  TORCH_CHECK(u_.dim() == 4 && u_.size(0) == 16 && u_.size(2) == C && u_.size(3) == kCols && C % 8 == 0,
              "zoo_conv::winograd3x3: the transformed weights must be (16, K / 16, C, 16) for C = ", C,
              " input channels, a multiple of 8");
  const int64_t K = u_.size(1) * kCols;
  TORCH_CHECK(bias_.numel() == K, "zoo_conv::winograd3x3: the bias must have ", K, " entries");
  const at::Tensor x = x_.contiguous(at::MemoryFormat::ChannelsLast);
  const at::Tensor u = u_.contiguous(), bias = bias_.contiguous();
  auto y = at::empty({N, K, H, W}, x.options().memory_format(at::MemoryFormat::ChannelsLast));
  const int64_t th = (H + 1) / 2, tw = (W + 1) / 2, tiles = N * th * tw;
  const int64_t blocks = (tiles + kTiles - 1) / kTiles;
  const float* xp = x.data_ptr<float>();
  const float* up = u.data_ptr<float>();
  const float* bp = bias.data_ptr<float>();
  float* yp = y.data_ptr<float>();

  at::parallel_for(0, blocks, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> v_buf(16 * kTiles * C), m_buf(16 * kTiles * K);
    float* V = v_buf.data();
    float* M = m_buf.data();
    for (int64_t blk = begin; blk < end; ++blk) {
      const int64_t t0 = blk * kTiles, count = std::min(kTiles, tiles - t0);
      input_tiles(xp, H, W, C, th, tw, t0, count, V);
      // the 16 products: M[p] (kTiles x K) = V[p] (kTiles x C) @ U[p] (C x K)
      const int64_t rows_used = (count + kRows - 1) / kRows * kRows;
      for (int64_t p = 0; p < 16; ++p)
        for (int64_t kb = 0; kb < K / kCols; ++kb) {
          const float* panel = up + (p * (K / kCols) + kb) * C * kCols;
          for (int64_t r = 0; r < rows_used; r += kRows)
            micro_kernel(V + (p * kTiles + r) * C, C, panel, C, M + (p * kTiles + r) * K + kb * kCols, K);
        }
      // output transform: y = A^T M A + bias, where the 2x2 block lies inside the image
      for (int64_t t = 0; t < count; ++t) {
        const int64_t tile = t0 + t, n = tile / (th * tw), ty = tile % (th * tw) / tw, tx = tile % tw;
        const int64_t yy = 2 * ty, xx = 2 * tx;
        const bool right = xx + 1 < W, below = yy + 1 < H;
        float* out00 = yp + ((n * H + yy) * W + xx) * K;
        for (int64_t k = 0; k < K; k += 8) {
          __m256 m[4][4];
          for (int i = 0; i < 4; ++i)
            for (int j = 0; j < 4; ++j) m[i][j] = _mm256_loadu_ps(M + ((i * 4 + j) * kTiles + t) * K + k);
          __m256 s[2][4];
          for (int j = 0; j < 4; ++j) {  // A^T m
            s[0][j] = _mm256_add_ps(_mm256_add_ps(m[0][j], m[1][j]), m[2][j]);
            s[1][j] = _mm256_sub_ps(_mm256_sub_ps(m[1][j], m[2][j]), m[3][j]);
          }
          const __m256 b = _mm256_loadu_ps(bp + k);
          for (int i = 0; i < 2; ++i) {  // (A^T m) A + bias
            if (i == 1 && !below) break;
            float* out = out00 + i * W * K + k;
            _mm256_storeu_ps(out, _mm256_add_ps(_mm256_add_ps(_mm256_add_ps(s[i][0], s[i][1]), s[i][2]), b));
            if (right)
              _mm256_storeu_ps(out + K, _mm256_add_ps(_mm256_sub_ps(_mm256_sub_ps(s[i][1], s[i][2]), s[i][3]), b));
          }
        }
      }
    }
  });
  return y;
}

// A 3x3 convolution (stride 1, any zero padding) of few input channels (an image's own: the first layer), as a
// product with the patches: x (N, H, W, C) channels-last; w (K / 16, C * 9, 16) (16 output channels a panel, rows in
// the order (c, i, j)); bias (K,) -> y (N, Ho, Wo, K) channels-last. One output row's patches are gathered once
// (zeros outside the image), then multiplied by the micro-kernel; each output is the bias plus its 9 C terms, summed
// in the order (c, i, j).
at::Tensor direct3x3(const at::Tensor& x_, const at::Tensor& w_, const at::Tensor& bias_, int64_t pad) {
  TORCH_CHECK(x_.dim() == 4 && x_.scalar_type() == at::kFloat && w_.scalar_type() == at::kFloat &&
                  bias_.scalar_type() == at::kFloat && pad >= 0,
              "zoo_conv::direct3x3 takes float32 (N, C, H, W) images, packed weights, a bias and a padding");
  const int64_t N = x_.size(0), C = x_.size(1), H = x_.size(2), W = x_.size(3);
  TORCH_CHECK(w_.dim() == 3 && w_.size(1) == C * 9 && w_.size(2) == kCols && bias_.numel() == w_.size(0) * kCols,
              "zoo_conv::direct3x3: the weights must be (K / 16, C * 9, 16), the bias (K,)");
  const int64_t K = w_.size(0) * kCols, Ho = H + 2 * pad - 2, Wo = W + 2 * pad - 2, P = C * 9;
  TORCH_CHECK(Ho > 0 && Wo > 0, "zoo_conv::direct3x3: the image is smaller than the kernel");
  const at::Tensor x = x_.contiguous(at::MemoryFormat::ChannelsLast);
  const at::Tensor w = w_.contiguous(), bias = bias_.contiguous();
  auto y = at::empty({N, K, Ho, Wo}, x.options().memory_format(at::MemoryFormat::ChannelsLast));
  const float* xp = x.data_ptr<float>();
  const float* wp = w.data_ptr<float>();
  const float* bp = bias.data_ptr<float>();
  float* yp = y.data_ptr<float>();
  const int64_t whole = Wo / kRows * kRows;
  at::parallel_for(0, N * Ho, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> patches((whole + kRows) * P, 0.0f), tail(kRows * K);
    for (int64_t row = begin; row < end; ++row) {
      const int64_t n = row / Ho, oy = row % Ho;
      for (int64_t ox = 0; ox < Wo; ++ox) {
        float* pr = patches.data() + ox * P;
        for (int64_t c = 0; c < C; ++c)
          for (int64_t i = 0; i < 3; ++i)
            for (int64_t j = 0; j < 3; ++j) {
              const int64_t yy = oy + i - pad, xx = ox + j - pad;
              pr[(c * 3 + i) * 3 + j] = (yy >= 0 && yy < H && xx >= 0 && xx < W) ? xp[((n * H + yy) * W + xx) * C + c]
                                                                                  : 0.0f;
            }
      }
      float* out = yp + (n * Ho + oy) * Wo * K;
      for (int64_t kb = 0; kb < K / kCols; ++kb) {
        const float* panel = wp + kb * P * kCols;
        for (int64_t r = 0; r < whole; r += kRows)
          micro_kernel(patches.data() + r * P, P, panel, P, out + r * K + kb * kCols, K, bp + kb * kCols);
        if (whole < Wo)
          micro_kernel(patches.data() + whole * P, P, panel, P, tail.data() + kb * kCols, K, bp + kb * kCols);
      }
      for (int64_t r = whole; r < Wo; ++r)
        for (int64_t k = 0; k < K; ++k) out[r * K + k] = tail[(r - whole) * K + k];
    }
  });
  return y;
}

// dst (8 rows ldd apart) = the transpose of src's 8 x 8 block (8 rows lds apart)
inline void transpose8x8(const float* src, int64_t lds, float* dst, int64_t ldd) {
  __m256 r[8], t[8];
  for (int i = 0; i < 8; ++i) r[i] = _mm256_loadu_ps(src + i * lds);
  for (int i = 0; i < 8; i += 2) {
    t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
    t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
  }
  for (int i = 0; i < 8; i += 4) {
    r[i] = _mm256_shuffle_ps(t[i], t[i + 2], _MM_SHUFFLE(1, 0, 1, 0));
    r[i + 1] = _mm256_shuffle_ps(t[i], t[i + 2], _MM_SHUFFLE(3, 2, 3, 2));
    r[i + 2] = _mm256_shuffle_ps(t[i + 1], t[i + 3], _MM_SHUFFLE(1, 0, 1, 0));
    r[i + 3] = _mm256_shuffle_ps(t[i + 1], t[i + 3], _MM_SHUFFLE(3, 2, 3, 2));
  }
  for (int i = 0; i < 4; ++i) {
    _mm256_storeu_ps(dst + i * ldd, _mm256_permute2f128_ps(r[i], r[i + 4], 0x20));
    _mm256_storeu_ps(dst + (i + 4) * ldd, _mm256_permute2f128_ps(r[i], r[i + 4], 0x31));
  }
}

// x (N, C, H, W) float32 in the other memory format: channels-last when to_channels_last, else contiguous; a copy
// by 8 x 8 blocks of each image's (C, H W) matrix (PyTorch's copy between the two layouts is several times slower),
// or PyTorch's where C or H W is not a multiple of 8. The values are copied, never rounded.
at::Tensor relayout(const at::Tensor& x, bool to_channels_last) {
  TORCH_CHECK(x.dim() == 4 && x.scalar_type() == at::kFloat, "zoo_conv::relayout takes float32 (N, C, H, W)");
  const auto target = to_channels_last ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
  const auto source = to_channels_last ? at::MemoryFormat::Contiguous : at::MemoryFormat::ChannelsLast;
  const int64_t N = x.size(0), C = x.size(1), HW = x.size(2) * x.size(3);
  if (x.is_contiguous(target)) return x;
  if (C % 8 || HW % 8 || !x.is_contiguous(source)) return x.contiguous(target);
  auto y = at::empty(x.sizes(), x.options().memory_format(target));
  const float* xp = x.data_ptr<float>();
  float* yp = y.data_ptr<float>();
  // per image, channels-last to contiguous transposes (HW, C) into (C, HW); the other way (C, HW) into (HW, C)
  const int64_t rows = to_channels_last ? C : HW, cols = to_channels_last ? HW : C;
  at::parallel_for(0, N * (rows / 8), 1, [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; ++b) {
      const int64_t n = b / (rows / 8), r0 = b % (rows / 8) * 8;
      const float* src = xp + n * C * HW + r0 * cols;
      float* dst = yp + n * C * HW + r0;
      for (int64_t c0 = 0; c0 < cols; c0 += 8) transpose8x8(src + c0, cols, dst + c0 * rows, rows);
    }
  });
  return y;
}

// The operator: always a new tensor (a copy where x already has the layout).
at::Tensor relayout_op(const at::Tensor& x, bool to_channels_last) {
  const at::Tensor y = relayout(x, to_channels_last);
  return y.is_same(x) ? x.clone() : y;
}

// The backward of y = relu(group_norm(x)) (one group per channel: an instance norm with weights gamma) followed by
// 2x2 average pooling, in one pass per (image, channel) plane: from the pooled output's gradient gp (N, C, H/2, W/2),
// the ReLU's output y and the norm's input x (N, C, H, W), its per-plane mean and 1/std (N, C) and gamma (C,), gives
// the input's gradient dx (N, C, H, W) and gamma's and beta's (C,). Each input of a window gets gp / 4 where y > 0
// (PyTorch's pooling and ReLU gradients, the same values); then, as PyTorch's GroupNorm backward, with the plane's
// sums ds = sum dy x and db = sum dy (float32 lanes, then float64), dx = rstd gamma dy + c2 x + c3 where
// c2 = (db mean - ds) gamma rstd^3 / HW and c3 = -c2 mean - db gamma rstd / HW (float64, rounded to float32 once);
// d gamma = sum over images of (ds - db mean) rstd, d beta = sum of db (float64). One thread per channel, so the
// result does not depend on the number of threads. W must be a multiple of 8, H even.
std::tuple<at::Tensor, at::Tensor, at::Tensor> norm_relu_pool_backward(const at::Tensor& gp_, const at::Tensor& x_,
                                                                       const at::Tensor& y_, const at::Tensor& mean_,
                                                                       const at::Tensor& rstd_,
                                                                       const at::Tensor& gamma_) {
  TORCH_CHECK(x_.dim() == 4 && x_.sizes() == y_.sizes() && x_.scalar_type() == at::kFloat &&
                  y_.scalar_type() == at::kFloat && gp_.scalar_type() == at::kFloat && x_.size(3) % 8 == 0 &&
                  x_.size(2) % 2 == 0 && gp_.dim() == 4 && gp_.size(0) == x_.size(0) && gp_.size(1) == x_.size(1) &&
                  gp_.size(2) == x_.size(2) / 2 && gp_.size(3) == x_.size(3) / 2 &&
                  mean_.numel() == x_.size(0) * x_.size(1) && rstd_.numel() == mean_.numel() &&
                  gamma_.numel() == x_.size(1),
              "zoo_conv::norm_relu_pool_backward takes float32 gp (N, C, H/2, W/2), x and y (N, C, H, W) with W a "
              "multiple of 8 and H even, mean and rstd (N, C), gamma (C,)");
  const at::Tensor gp = gp_.contiguous(), x = x_.contiguous(), y = y_.contiguous();
  const at::Tensor mean = mean_.to(at::kFloat).contiguous(), rstd = rstd_.to(at::kFloat).contiguous();
  const at::Tensor gamma = gamma_.to(at::kFloat).contiguous();
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3), HW = H * W, Wp = W / 2;
  auto dx = at::empty_like(x, x.options().memory_format(at::MemoryFormat::Contiguous));
  auto dgamma = at::empty({C}, x.options()), dbeta = at::empty({C}, x.options());
  const float *gpp = gp.data_ptr<float>(), *xp = x.data_ptr<float>(), *yp = y.data_ptr<float>();
  const float *mp = mean.data_ptr<float>(), *rp = rstd.data_ptr<float>(), *gmp = gamma.data_ptr<float>();
  float *dxp = dx.data_ptr<float>(), *dgp = dgamma.data_ptr<float>(), *dbp = dbeta.data_ptr<float>();
  at::parallel_for(0, C, 1, [&](int64_t c0, int64_t c1) {
    const __m256 zero = _mm256_setzero_ps();
    const __m128 quarter = _mm_set1_ps(0.25f);
    for (int64_t c = c0; c < c1; ++c) {
      double dg = 0.0, dbt = 0.0;
      for (int64_t n = 0; n < N; ++n) {
        const int64_t plane = n * C + c;
        const float* X = xp + plane * HW;
        const float* Y = yp + plane * HW;
        const float* G = gpp + plane * HW / 4;
        float* D = dxp + plane * HW;
        __m256 sds = zero, sdb = zero;
        for (int64_t h = 0; h < H; ++h)
          for (int64_t w0 = 0; w0 < W; w0 += 8) {
            const __m128 g4 = _mm_mul_ps(_mm_loadu_ps(G + (h / 2) * Wp + w0 / 2), quarter);
            const __m256 gv = _mm256_set_m128(_mm_unpackhi_ps(g4, g4), _mm_unpacklo_ps(g4, g4));
            const __m256 mask = _mm256_cmp_ps(_mm256_loadu_ps(Y + h * W + w0), zero, _CMP_GT_OQ);
            const __m256 dy = _mm256_and_ps(gv, mask);
            _mm256_storeu_ps(D + h * W + w0, dy);
            sds = _mm256_fmadd_ps(dy, _mm256_loadu_ps(X + h * W + w0), sds);
            sdb = _mm256_add_ps(sdb, dy);
          }
        alignas(32) float a[8], b[8];
        _mm256_store_ps(a, sds);
        _mm256_store_ps(b, sdb);
        double ds = 0.0, db = 0.0;
        for (int i = 0; i < 8; ++i) {
          ds += a[i];
          db += b[i];
        }
        const double m = mp[plane], r = rp[plane], g = gmp[c];
        const double k2 = (db * m - ds) * g * r * r * r / static_cast<double>(HW);
        const double k3 = -k2 * m - db * g * r / static_cast<double>(HW);
        const __m256 v1 = _mm256_set1_ps(static_cast<float>(r * g)), v2 = _mm256_set1_ps(static_cast<float>(k2)),
                     v3 = _mm256_set1_ps(static_cast<float>(k3));
        for (int64_t i = 0; i < HW; i += 8) {
          const __m256 d = _mm256_loadu_ps(D + i);
          _mm256_storeu_ps(D + i, _mm256_fmadd_ps(v1, d, _mm256_fmadd_ps(v2, _mm256_loadu_ps(X + i), v3)));
        }
        dg += (ds - db * m) * r;
        dbt += db;
      }
      dgp[c] = static_cast<float>(dg);
      dbp[c] = static_cast<float>(dbt);
    }
  });
  return {dx, dgamma, dbeta};
}

// The zero-padded planes of x (N, 1, H, W) contiguous, each (H + 2 pad) rows of (W + 2 pad + 8) floats: the extra
// zeros let a row's last vector load run past the image.
std::vector<float> padded_planes(const float* xp, int64_t N, int64_t H, int64_t W, int64_t pad, int64_t& rows,
                                 int64_t& ld) {
  rows = H + 2 * pad;
  ld = W + 2 * pad + 8;
  std::vector<float> out(static_cast<size_t>(N * rows * ld), 0.0f);
  for (int64_t n = 0; n < N; ++n)
    for (int64_t y = 0; y < H; ++y) std::copy_n(xp + (n * H + y) * W, W, out.data() + (n * rows + y + pad) * ld + pad);
  return out;
}

// A 3x3 convolution (stride 1, zero padding pad) of one-channel images, plane by plane: x (N, 1, H, W) and y
// (N, K, Ho, Wo) contiguous; w (K, 1, 3, 3); bias (K,). Each output in oneDNN's order for one input channel (measured
// on its AVX2 kernel): from zero, the 9 products fused-multiply-added in the order (i, j), then the bias added, so
// on a CPU where oneDNN keeps that order the bits are its own (zoo/condense/fast_convs.py checks before it relies on
// it).
at::Tensor plane3x3(const at::Tensor& x_, const at::Tensor& w_, const at::Tensor& bias_, int64_t pad) {
  TORCH_CHECK(x_.dim() == 4 && x_.size(1) == 1 && x_.scalar_type() == at::kFloat && w_.scalar_type() == at::kFloat &&
                  bias_.scalar_type() == at::kFloat && w_.dim() == 4 && w_.size(1) == 1 && w_.size(2) == 3 &&
                  w_.size(3) == 3 && bias_.numel() == w_.size(0) && pad >= 0,
              "zoo_conv::plane3x3 takes float32 (N, 1, H, W) images, (K, 1, 3, 3) weights, a (K,) bias and a "
              "padding");
  const at::Tensor x = x_.contiguous(), w = w_.contiguous(), bias = bias_.contiguous();
  const int64_t N = x.size(0), H = x.size(2), W = x.size(3), K = w.size(0), Ho = H + 2 * pad - 2,
                Wo = W + 2 * pad - 2;
  TORCH_CHECK(Ho > 0 && Wo > 0, "zoo_conv::plane3x3: the image is smaller than the kernel");
  int64_t rows, ld;
  const std::vector<float> planes = padded_planes(x.data_ptr<float>(), N, H, W, pad, rows, ld);
  auto y = at::empty({N, K, Ho, Wo}, x.options().memory_format(at::MemoryFormat::Contiguous));
  const float* wp = w.data_ptr<float>();
  const float* bp = bias.data_ptr<float>();
  float* yp = y.data_ptr<float>();
  at::parallel_for(0, N * K, 4, [&](int64_t begin, int64_t end) {
    for (int64_t plane = begin; plane < end; ++plane) {
      const int64_t n = plane / K, k = plane % K;
      const float* src = planes.data() + n * rows * ld;
      const float* wk = wp + k * 9;
      __m256 wv[9];
      for (int t = 0; t < 9; ++t) wv[t] = _mm256_set1_ps(wk[t]);
      const __m256 b = _mm256_set1_ps(bp[k]);
      float* out = yp + plane * Ho * Wo;
      for (int64_t oy = 0; oy < Ho; ++oy) {
        const float* r = src + oy * ld;
        int64_t ox = 0;
        for (; ox + 32 <= Wo; ox += 32) {  // four vectors at once: four chains of multiply-adds in flight
          __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
          for (int i = 0; i < 3; ++i)
            for (int j = 0; j < 3; ++j)
              for (int v = 0; v < 4; ++v)
                acc[v] = _mm256_fmadd_ps(_mm256_loadu_ps(r + i * ld + ox + 8 * v + j), wv[i * 3 + j], acc[v]);
          for (int v = 0; v < 4; ++v) _mm256_storeu_ps(out + oy * Wo + ox + 8 * v, _mm256_add_ps(acc[v], b));
        }
        for (; ox + 8 <= Wo; ox += 8) {
          __m256 acc = _mm256_setzero_ps();
          for (int i = 0; i < 3; ++i)
            for (int j = 0; j < 3; ++j) acc = _mm256_fmadd_ps(_mm256_loadu_ps(r + i * ld + ox + j), wv[i * 3 + j], acc);
          _mm256_storeu_ps(out + oy * Wo + ox, _mm256_add_ps(acc, b));
        }
        for (; ox < Wo; ++ox) {
          float acc = 0.0f;
          for (int i = 0; i < 3; ++i)
            for (int j = 0; j < 3; ++j) acc = std::fma(r[i * ld + ox + j], wk[i * 3 + j], acc);
          out[oy * Wo + ox] = acc + bp[k];
        }
      }
    }
  });
  return y;
}

// The gradients of plane3x3's weights and bias from its output's gradient g (N, K, Ho, Wo): dw[k][i][j] = the sum of
// g[n, k] times the padded image n shifted by (i, j), db[k] = the sum of g[n, k]. Per image the sums run in float32
// (8 lanes over the rows, then the lanes), then the images add up in float64; one thread per output channel, so the
// result does not depend on the number of threads.
std::tuple<at::Tensor, at::Tensor> plane3x3_weight_grad(const at::Tensor& x_, const at::Tensor& g_, int64_t pad) {
  TORCH_CHECK(x_.dim() == 4 && g_.dim() == 4 && x_.size(1) == 1 && x_.scalar_type() == at::kFloat &&
                  g_.scalar_type() == at::kFloat && x_.size(0) == g_.size(0) && pad >= 0 &&
                  g_.size(2) == x_.size(2) + 2 * pad - 2 && g_.size(3) == x_.size(3) + 2 * pad - 2,
              "zoo_conv::plane3x3_weight_grad takes float32 (N, 1, H, W) images, the (N, K, H + 2 pad - 2, "
              "W + 2 pad - 2) gradient of their output and the padding");
  const at::Tensor x = x_.contiguous(), g = g_.contiguous();
  const int64_t N = x.size(0), H = x.size(2), W = x.size(3), K = g.size(1), Ho = g.size(2), Wo = g.size(3);
  int64_t rows, ld;
  const std::vector<float> planes = padded_planes(x.data_ptr<float>(), N, H, W, pad, rows, ld);
  auto dw = at::empty({K, 1, 3, 3}, x.options());
  auto db = at::empty({K}, x.options());
  const float* gp = g.data_ptr<float>();
  float* dwp = dw.data_ptr<float>();
  float* dbp = db.data_ptr<float>();
  const int64_t whole = Wo / 8 * 8;
  const __m256i lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  const __m256i tail = _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(Wo - whole)), lanes);
  at::parallel_for(0, K, 1, [&](int64_t k0, int64_t k1) {
    for (int64_t k = k0; k < k1; ++k) {
      double sw[9] = {0}, sb = 0.0;
      for (int64_t n = 0; n < N; ++n) {
        const float* src = planes.data() + n * rows * ld;
        const float* gk = gp + (n * K + k) * Ho * Wo;
        __m256 acc[10];
        for (int t = 0; t < 10; ++t) acc[t] = _mm256_setzero_ps();
        for (int64_t oy = 0; oy < Ho; ++oy) {
          const float* r = src + oy * ld;
          for (int64_t ox = 0; ox < Wo; ox += 8) {
            // the last vector of a row takes only the row's columns (the padded plane has room to read past them)
            const __m256 gv = ox < whole ? _mm256_loadu_ps(gk + oy * Wo + ox) : _mm256_maskload_ps(gk + oy * Wo + ox, tail);
            for (int i = 0; i < 3; ++i)
              for (int j = 0; j < 3; ++j)
                acc[i * 3 + j] = _mm256_fmadd_ps(gv, _mm256_loadu_ps(r + i * ld + ox + j), acc[i * 3 + j]);
            acc[9] = _mm256_add_ps(acc[9], gv);
          }
        }
        for (int t = 0; t < 10; ++t) {
          alignas(32) float v[8];
          _mm256_store_ps(v, acc[t]);
          const float s = ((v[0] + v[1]) + (v[2] + v[3])) + ((v[4] + v[5]) + (v[6] + v[7]));
          if (t < 9)
            sw[t] += s;
          else
            sb += s;
        }
      }
      for (int t = 0; t < 9; ++t) dwp[k * 9 + t] = static_cast<float>(sw[t]);
      dbp[k] = static_cast<float>(sb);
    }
  });
  return {dw, db};
}

// 2x2 average pooling, stride 2, no padding, of (N, C, H, W) contiguous float32 (a plane after a plane), in
// PyTorch's own order (its CPU kernel sums a window row by row from zero, then divides by 4), so the bits equal
// F.avg_pool2d's; an odd last row or column is dropped as there.
at::Tensor avg_pool2x2(const at::Tensor& x_) {
  TORCH_CHECK(x_.dim() == 4 && x_.scalar_type() == at::kFloat, "zoo_conv::avg_pool2x2 takes float32 (N, C, H, W)");
  const at::Tensor x = x_.contiguous();
  const int64_t planes = x.size(0) * x.size(1), H = x.size(2), W = x.size(3), Ho = H / 2, Wo = W / 2;
  auto y = at::empty({x.size(0), x.size(1), Ho, Wo}, x.options());
  const float* xp = x.data_ptr<float>();
  float* yp = y.data_ptr<float>();
  at::parallel_for(0, planes * Ho, 16, [&](int64_t begin, int64_t end) {
    const __m256 zero = _mm256_setzero_ps(), quarter = _mm256_set1_ps(0.25f);
    for (int64_t row = begin; row < end; ++row) {
      const int64_t plane = row / Ho, oy = row % Ho;
      const float* r0 = xp + (plane * H + 2 * oy) * W;
      const float* r1 = r0 + W;
      float* out = yp + row * Wo;
      int64_t ox = 0;
      for (; ox + 8 <= Wo; ox += 8) {
        const __m256 a0 = _mm256_loadu_ps(r0 + 2 * ox), a1 = _mm256_loadu_ps(r0 + 2 * ox + 8);
        const __m256 b0 = _mm256_loadu_ps(r1 + 2 * ox), b1 = _mm256_loadu_ps(r1 + 2 * ox + 8);
        // evens and odds of 16 columns, back in order across the 128-bit lanes
        const __m256 e0 = _mm256_castpd_ps(_mm256_permute4x64_pd(
            _mm256_castps_pd(_mm256_shuffle_ps(a0, a1, _MM_SHUFFLE(2, 0, 2, 0))), _MM_SHUFFLE(3, 1, 2, 0)));
        const __m256 o0 = _mm256_castpd_ps(_mm256_permute4x64_pd(
            _mm256_castps_pd(_mm256_shuffle_ps(a0, a1, _MM_SHUFFLE(3, 1, 3, 1))), _MM_SHUFFLE(3, 1, 2, 0)));
        const __m256 e1 = _mm256_castpd_ps(_mm256_permute4x64_pd(
            _mm256_castps_pd(_mm256_shuffle_ps(b0, b1, _MM_SHUFFLE(2, 0, 2, 0))), _MM_SHUFFLE(3, 1, 2, 0)));
        const __m256 o1 = _mm256_castpd_ps(_mm256_permute4x64_pd(
            _mm256_castps_pd(_mm256_shuffle_ps(b0, b1, _MM_SHUFFLE(3, 1, 3, 1))), _MM_SHUFFLE(3, 1, 2, 0)));
        const __m256 sum = _mm256_add_ps(_mm256_add_ps(_mm256_add_ps(_mm256_add_ps(zero, e0), o0), e1), o1);
        _mm256_storeu_ps(out + ox, _mm256_mul_ps(sum, quarter));
      }
      for (; ox < Wo; ++ox)
        out[ox] = ((((0.0f + r0[2 * ox]) + r0[2 * ox + 1]) + r1[2 * ox]) + r1[2 * ox + 1]) * 0.25f;
    }
  });
  return y;
}

// The gradient of avg_pool2x2: every input of a window gets 0 + g / 4 (PyTorch's order), dropped rows and columns 0.
at::Tensor avg_pool2x2_backward(const at::Tensor& g_, int64_t H, int64_t W) {
  TORCH_CHECK(g_.dim() == 4 && g_.scalar_type() == at::kFloat && g_.size(2) == H / 2 && g_.size(3) == W / 2,
              "zoo_conv::avg_pool2x2_backward takes the float32 (N, C, H / 2, W / 2) gradient and H, W");
  const at::Tensor g = g_.contiguous();
  const int64_t planes = g.size(0) * g.size(1), Ho = H / 2, Wo = W / 2;
  auto gi = (H % 2 || W % 2) ? at::zeros({g.size(0), g.size(1), H, W}, g.options())
                             : at::empty({g.size(0), g.size(1), H, W}, g.options());
  const float* gp = g.data_ptr<float>();
  float* ip = gi.data_ptr<float>();
  at::parallel_for(0, planes * Ho, 16, [&](int64_t begin, int64_t end) {
    const __m256 zero = _mm256_setzero_ps(), quarter = _mm256_set1_ps(0.25f);
    for (int64_t row = begin; row < end; ++row) {
      const int64_t plane = row / Ho, oy = row % Ho;
      const float* in = gp + row * Wo;
      float* r0 = ip + (plane * H + 2 * oy) * W;
      float* r1 = r0 + W;
      int64_t ox = 0;
      for (; ox + 8 <= Wo; ox += 8) {
        const __m256 d = _mm256_add_ps(zero, _mm256_mul_ps(_mm256_loadu_ps(in + ox), quarter));
        // each value twice, in order: d0 d0 d1 d1 ... d7 d7
        const __m256 lo = _mm256_unpacklo_ps(d, d), hi = _mm256_unpackhi_ps(d, d);
        const __m256 first = _mm256_permute2f128_ps(lo, hi, 0x20), second = _mm256_permute2f128_ps(lo, hi, 0x31);
        _mm256_storeu_ps(r0 + 2 * ox, first);
        _mm256_storeu_ps(r0 + 2 * ox + 8, second);
        _mm256_storeu_ps(r1 + 2 * ox, first);
        _mm256_storeu_ps(r1 + 2 * ox + 8, second);
      }
      for (; ox < Wo; ++ox) {
        const float d = 0.0f + in[ox] * 0.25f;
        r0[2 * ox] = r0[2 * ox + 1] = r1[2 * ox] = r1[2 * ox + 1] = d;
      }
    }
  });
  return gi;
}

// The gradient of F(2x2, 3x3)'s transformed weights: x (N, C, H, W) and the output's gradient g (N, K, H, W), both
// channels-last; returns the weights' gradient (K, C, 3, 3) = G^T dU G, where dU[p][k][c] = sum over tiles of
// (A g A^T)[p][k] * (B^T d B)[p][c] (A = (A^T)^T) in float32, summed per thread over its blocks of tiles, then over
// the threads in order; the last transform in float64.
at::Tensor weight_grad3x3(const at::Tensor& x_, const at::Tensor& g_) {
  TORCH_CHECK(x_.dim() == 4 && g_.dim() == 4 && x_.scalar_type() == at::kFloat && g_.scalar_type() == at::kFloat &&
                  x_.size(0) == g_.size(0) && x_.size(2) == g_.size(2) && x_.size(3) == g_.size(3) &&
                  x_.size(1) % kCols == 0 && g_.size(1) % 8 == 0,
              "zoo_conv::winograd3x3_weight_grad takes float32 (N, C, H, W) images (C a multiple of 16) and the "
              "(N, K, H, W) gradient of their output (K a multiple of 8)");
  const at::Tensor x = relayout(x_, true), g = relayout(g_, true);
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3), K = g.size(1);
  const int64_t Kp = (K + kRows - 1) / kRows * kRows;  // rows padded to the micro-kernel's
  const int64_t th = (H + 1) / 2, tw = (W + 1) / 2, tiles = N * th * tw;
  const int64_t blocks = (tiles + kTilesW - 1) / kTilesW;
  const int threads = at::get_num_threads();
  std::vector<float> partial(static_cast<size_t>(threads) * 16 * Kp * C, 0.0f);
  const float* xp = x.data_ptr<float>();
  const float* gp = g.data_ptr<float>();
  at::parallel_for(0, blocks, 1, [&](int64_t begin, int64_t end) {
    float* dU = partial.data() + static_cast<size_t>(at::get_thread_num()) * 16 * Kp * C;
    std::vector<float> v_buf(16 * kTilesW * C), d_buf(16 * kTilesW * Kp, 0.0f);
    float* V = v_buf.data();
    float* D = d_buf.data();  // D[p][t][k] = (A g A^T)[p][k] for tile t; columns K .. Kp - 1 stay zero
    const __m256 zero = _mm256_setzero_ps();
    for (int64_t blk = begin; blk < end; ++blk) {
      const int64_t t0 = blk * kTilesW, count = std::min(kTilesW, tiles - t0);
      input_tiles(xp, H, W, C, th, tw, t0, count, V, kTilesW);
      for (int64_t t = 0; t < count; ++t) {
        const int64_t tile = t0 + t, n = tile / (th * tw), ty = tile % (th * tw) / tw, tx = tile % tw;
        const int64_t yy = 2 * ty, xx = 2 * tx;
        const bool right = xx + 1 < W, below = yy + 1 < H;
        const float* g00 = gp + ((n * H + yy) * W + xx) * K;
        for (int64_t k = 0; k < K; k += 8) {
          const __m256 a = _mm256_loadu_ps(g00 + k), b = right ? _mm256_loadu_ps(g00 + K + k) : zero;
          const __m256 c = below ? _mm256_loadu_ps(g00 + W * K + k) : zero;
          const __m256 d = below && right ? _mm256_loadu_ps(g00 + W * K + K + k) : zero;
          // rows of A g: (a, b), (a + c, b + d), (a - c, b - d), (-c, -d); then each row times A^T
          const __m256 r[4][2] = {{a, b},
                                  {_mm256_add_ps(a, c), _mm256_add_ps(b, d)},
                                  {_mm256_sub_ps(a, c), _mm256_sub_ps(b, d)},
                                  {_mm256_sub_ps(zero, c), _mm256_sub_ps(zero, d)}};
          for (int i = 0; i < 4; ++i) {
            const __m256 e[4] = {r[i][0], _mm256_add_ps(r[i][0], r[i][1]), _mm256_sub_ps(r[i][0], r[i][1]),
                                 _mm256_sub_ps(zero, r[i][1])};
            for (int j = 0; j < 4; ++j) _mm256_storeu_ps(D + ((i * 4 + j) * kTilesW + t) * Kp + k, e[j]);
          }
        }
      }
      for (int64_t t = count; t < kTilesW; ++t)
        for (int64_t p = 0; p < 16; ++p) std::fill_n(D + (p * kTilesW + t) * Kp, K, 0.0f);
      // dU[p] (Kp x C) += D[p]^T (Kp x kTilesW) @ V[p] (kTilesW x C)
      for (int64_t p = 0; p < 16; ++p)
        for (int64_t c0 = 0; c0 < C; c0 += kCols)
          for (int64_t k0 = 0; k0 < Kp; k0 += kRows)
            micro_kernel_acc(D + p * kTilesW * Kp + k0, 1, Kp, V + p * kTilesW * C + c0, C, kTilesW,
                             dU + (p * Kp + k0) * C + c0, C);
    }
  });
  // the threads' sums in order, then the weights' gradient G^T dU G per (k, c), in float64
  auto out = at::empty({K, C, 3, 3}, x.options().memory_format(at::MemoryFormat::Contiguous));
  float* op = out.data_ptr<float>();
  static const double G[4][3] = {{1, 0, 0}, {0.5, 0.5, 0.5}, {0.5, -0.5, 0.5}, {0, 0, 1}};
  at::parallel_for(0, K, 8, [&](int64_t k0, int64_t k1) {
    for (int64_t k = k0; k < k1; ++k)
      for (int64_t c = 0; c < C; ++c) {
        double u[16];
        for (int64_t p = 0; p < 16; ++p) {
          float sum = 0.0f;
          for (int th_ = 0; th_ < threads; ++th_)
            sum += partial[static_cast<size_t>(th_) * 16 * Kp * C + (p * Kp + k) * C + c];
          u[p] = sum;
        }
        for (int i = 0; i < 3; ++i)
          for (int j = 0; j < 3; ++j) {
            double v = 0.0;
            for (int a = 0; a < 4; ++a)
              for (int b = 0; b < 4; ++b) v += G[a][i] * G[b][j] * u[a * 4 + b];
            op[((k * C + c) * 3 + i) * 3 + j] = static_cast<float>(v);
          }
      }
  });
  return out;
}

}  // namespace

TORCH_LIBRARY(zoo_conv, m) {
  m.def("winograd3x3(Tensor x, Tensor u, Tensor bias) -> Tensor");
  m.def("direct3x3(Tensor x, Tensor w, Tensor bias, int pad) -> Tensor");
  m.def("winograd3x3_weight_grad(Tensor x, Tensor g) -> Tensor");
  m.def("plane3x3(Tensor x, Tensor w, Tensor bias, int pad) -> Tensor");
  m.def("plane3x3_weight_grad(Tensor x, Tensor g, int pad) -> (Tensor, Tensor)");
  m.def("relayout(Tensor x, bool channels_last) -> Tensor");
  m.def("norm_relu_pool_backward(Tensor gp, Tensor x, Tensor y, Tensor mean, Tensor rstd, Tensor gamma) -> "
        "(Tensor, Tensor, Tensor)");
  m.def("avg_pool2x2(Tensor x) -> Tensor");
  m.def("avg_pool2x2_backward(Tensor g, int h, int w) -> Tensor");
}

TORCH_LIBRARY_IMPL(zoo_conv, CPU, m) {
  m.impl("winograd3x3", conv3x3);
  m.impl("direct3x3", direct3x3);
  m.impl("winograd3x3_weight_grad", weight_grad3x3);
  m.impl("plane3x3", plane3x3);
  m.impl("plane3x3_weight_grad", plane3x3_weight_grad);
  m.impl("relayout", relayout_op);
  m.impl("norm_relu_pool_backward", norm_relu_pool_backward);
  m.impl("avg_pool2x2", avg_pool2x2);
  m.impl("avg_pool2x2_backward", avg_pool2x2_backward);
}
