"""Matrix-vector products for decoding one token on an AVX2 CPU: float32, int8 and int4 weights.

A decoded token multiplies one activation row by every weight matrix of the model once, so its speed is how fast
the CPU streams and converts the weights. PyTorch's kernels for that case are made for other shapes or CPUs. The
211 products of one ``mobilellm_125m`` token (random weights; the head in the same format) on this machine's
2-core AVX2 CPU, one interleaved run of ``python -m zoo.bench.quant_kernels``, milliseconds: float32 ``F.linear``
(MKL) 51.0, ``zoo_gemv::f32`` 31.0; int8 ``_weight_int8pack_mm`` on bf16 rows 15.8, ``zoo_gemv::int8`` 10.6; int4
g32 ``_weight_int4pack_mm_for_cpu`` on bf16 rows 12.5, ``zoo_gemv::int4`` 12.0. Timings on this shared machine
drift by up to 2x from hour to hour (its ``F.linear`` took 37-51 ms in other runs): compare within one run only.

Numerics:

* ``gemv_f32``: the float32 product (eight lanes of partial sums, then their sum).
* ``gemv_int8`` / ``gemv_int4``: the activation row is rounded to int16 per block of 32 columns (``x = d * xq``,
  ``d`` = block absolute max / 32767, relative error below 2e-5 of the block's largest value), then the weights'
  integer codes are multiplied with it by ``vpmaddwd`` (exact in int32) and each block's sum is scaled in float32:
  ``y[n] = scale[n] * sum_b d_b * sum_c q[n, c] xq[c]`` (int8), and for int4 ``w = (u - 8) * scale_g + zero_g``,
  ``y[n] = sum_g scale_g sum_b d_b sum_c u xq + sum_g (zero_g - 8 scale_g) * sum_{c in g} x_c``. This is closer to
  the float product of the dequantized weights than the bf16-rounded rows PyTorch's integer kernels are fed.

The kernels are C++ (below), built by ``torch.utils.cpp_extension`` with the system's C++ compiler at first use
(about 15 s; cached in torch's extension folder, keyed by the source) and registered as the operators
``zoo_gemv::f32`` / ``int8`` / ``int4`` / ``attend`` (one token's attention, :func:`attend_one`), with shape
functions so that ``torch.compile`` calls them from a compiled graph; :class:`OneRowProducts` hands a compiled
graph's float32 one-row products to ``zoo_gemv::f32``. :func:`available` says whether they can run here: an AVX2
CPU (``torch.backends.cpu.get_cpu_capability()``), a compiler, and ``ZOO_GEMV`` not set to ``0``. Where not,
callers keep PyTorch's kernels; a failed build warns once.
"""

from __future__ import annotations

import hashlib
import os
import threading
import warnings

import torch
from torch._inductor.custom_graph_pass import CustomGraphPass

__all__ = ["OneRowProducts", "attend_one", "available", "gemv_f32", "gemv_int4", "gemv_int8", "supports"]

_SOURCE = r"""
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/cpu/vec/vec.h>
#include <immintrin.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <vector>

namespace {

constexpr int64_t kBlock = 32;  // columns per int16 block of the activation row
constexpr int64_t kGrain = 16;  // output rows per parallel task

inline float sum8(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// x (K,) as int16 per block of 32 columns: x ~ d[b] * xq (rounded to nearest, ties to even)
void round_x16(const float* x, int64_t K, int16_t* xq, float* d) {
  const __m256 sign = _mm256_set1_ps(-0.0f);
  for (int64_t b = 0; b < K / kBlock; ++b) {
    const float* xb = x + b * kBlock;
    __m256 top = _mm256_setzero_ps();
    for (int64_t c = 0; c < kBlock; c += 8) top = _mm256_max_ps(top, _mm256_andnot_ps(sign, _mm256_loadu_ps(xb + c)));
    __m128 t = _mm_max_ps(_mm256_castps256_ps128(top), _mm256_extractf128_ps(top, 1));
    t = _mm_max_ps(t, _mm_movehl_ps(t, t));
    t = _mm_max_ss(t, _mm_movehdup_ps(t));
    const float m = _mm_cvtss_f32(t);
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

at::Tensor gemv_f32(const at::Tensor& x_, const at::Tensor& w_) {
  TORCH_CHECK(x_.scalar_type() == at::kFloat && w_.scalar_type() == at::kFloat && w_.dim() == 2 &&
              x_.numel() == w_.size(1), "zoo_gemv::f32 takes one float32 row of the weight's width");
  const at::Tensor x = x_.contiguous(), w = w_.contiguous();
  const int64_t N = w.size(0), K = w.size(1);
  auto y = at::empty({1, N}, x.options());
  const float* xp = x.data_ptr<float>();
  const float* wp = w.data_ptr<float>();
  float* yp = y.data_ptr<float>();
  at::parallel_for(0, N, kGrain, [&](int64_t begin, int64_t end) {
    for (int64_t n = begin; n < end; ++n) {
      const float* row = wp + n * K;
      __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
      int64_t k = 0;
      for (; k + 16 <= K; k += 16) {
        a0 = _mm256_fmadd_ps(_mm256_loadu_ps(row + k), _mm256_loadu_ps(xp + k), a0);
        a1 = _mm256_fmadd_ps(_mm256_loadu_ps(row + k + 8), _mm256_loadu_ps(xp + k + 8), a1);
      }
      float s = sum8(_mm256_add_ps(a0, a1));
      for (; k < K; ++k) s += row[k] * xp[k];
      yp[n] = s;
    }
  });
  return y;
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

// one query token's attention over a cache: q (1, H, 1, D), keys/values (1, KV, S, D) float32, mask (S) bool
// (the positions the token sees; none seen = all seen). Softmax(scale * q.k) over the seen positions, times v.
at::Tensor attend(const at::Tensor& q_, const at::Tensor& k_, const at::Tensor& v_, const at::Tensor& mask_,
                  double scale) {
  TORCH_CHECK(q_.scalar_type() == at::kFloat && k_.scalar_type() == at::kFloat && v_.scalar_type() == at::kFloat &&
              mask_.scalar_type() == at::kBool && q_.dim() == 4 && q_.size(0) == 1 && q_.size(2) == 1 &&
              k_.dim() == 4 && k_.sizes() == v_.sizes() && k_.size(0) == 1 && q_.size(3) == k_.size(3) &&
              q_.size(1) % k_.size(1) == 0 && mask_.numel() == k_.size(2),
              "zoo_gemv::attend takes one float32 query (1, H, 1, D), keys and values (1, KV, S, D) with KV "
              "dividing H, and a bool mask of S positions");
  const at::Tensor q = q_.contiguous(), k = k_.contiguous(), v = v_.contiguous(), mask = mask_.contiguous();
  const int64_t H = q.size(1), D = q.size(3), KV = k.size(1), S = k.size(2), G = H / KV;
  auto y = at::empty({1, 1, H * D}, q.options());
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
  at::parallel_for(0, H, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> p(P);
    for (int64_t h = begin; h < end; ++h) {
      const float* qh = qp + h * D;
      const float* kh = kp + (h / G) * S * D;
      const float* vh = vp + (h / G) * S * D;
      float top = -INFINITY;
      for (int64_t i = 0; i < P; ++i) {
        const float* kr = kh + seen[i] * D;
        float acc[8] = {0};
        int64_t d = 0;
        for (; d + 8 <= D; d += 8)
          for (int64_t l = 0; l < 8; ++l) acc[l] += qh[d + l] * kr[d + l];
        float dot = 0.0f;
        for (; d < D; ++d) dot += qh[d] * kr[d];
        for (int64_t l = 0; l < 8; ++l) dot += acc[l];
        p[i] = dot * sc;
        top = std::max(top, p[i]);
      }
      int64_t i = 0;
      for (; i + 8 <= P; i += 8)
        (at::vec::Vectorized<float>::loadu(p.data() + i) - at::vec::Vectorized<float>(top)).exp().store(p.data() + i);
      for (; i < P; ++i) p[i] = std::exp(p[i] - top);
      float total = 0.0f;
      for (i = 0; i < P; ++i) total += p[i];
      float* out = yp + h * D;
      std::fill(out, out + D, 0.0f);
      for (i = 0; i < P; ++i) {
        const float w = p[i] / total;
        const float* vr = vh + seen[i] * D;
        for (int64_t d = 0; d < D; ++d) out[d] += w * vr[d];
      }
    }
  });
  return y;
}

}  // namespace

TORCH_LIBRARY(zoo_gemv, m) {
  m.def("f32(Tensor x, Tensor w) -> Tensor");
  m.def("int8(Tensor x, Tensor q, Tensor scale) -> Tensor");
  m.def("int4(Tensor x, Tensor codes, Tensor scale, Tensor zero, int group_size) -> Tensor");
  m.def("attend(Tensor q, Tensor k, Tensor v, Tensor mask, float scale) -> Tensor");
}

TORCH_LIBRARY_IMPL(zoo_gemv, CPU, m) {
  m.impl("f32", gemv_f32);
  m.impl("int8", gemv_int8);
  m.impl("int4", gemv_int4);
  m.impl("attend", attend);
}
"""

# AVX2 with FMA and F16C (fp16 scales); OpenMP, or at::parallel_for runs on one thread; ATen's vectors in AVX2
_FLAGS = ["-O3", "-mavx2", "-mfma", "-mf16c", "-fopenmp", "-DCPU_CAPABILITY_AVX2", "-DCPU_CAPABILITY=AVX2"]
_state: dict = {}
_lock = threading.Lock()


def available() -> bool:
    """Whether the kernels run here (built at the first call): an AVX2 CPU, a C++ compiler, ``ZOO_GEMV`` not
    ``0``. A build that fails warns once and leaves PyTorch's kernels in use."""
    if "ok" in _state:
        return _state["ok"]
    with _lock:
        if "ok" not in _state:
            _state["ok"] = _build()
    return _state["ok"]


def _build() -> bool:
    if os.environ.get("ZOO_GEMV", "1") == "0":
        return False
    if torch.backends.cpu.get_cpu_capability() not in ("AVX2", "AVX512"):
        return False
    from torch.utils import cpp_extension  # the compiler driver: imported only when the kernels are built

    digest = hashlib.sha256((_SOURCE + " ".join(_FLAGS)).encode()).hexdigest()[:12]
    name = f"zoo_gemv_{digest}"
    try:
        folder = os.path.join(cpp_extension.get_default_build_root(), name)
        os.makedirs(folder, exist_ok=True)
        source = os.path.join(folder, "gemv.cpp")
        if not os.path.exists(source):
            with open(source + f".{os.getpid()}", "w") as f:
                f.write(_SOURCE)
            os.replace(source + f".{os.getpid()}", source)  # whole, for a concurrent build beside this one
        cpp_extension.load(name, [source], extra_cflags=_FLAGS, build_directory=folder, is_python_module=False)
    except Exception as e:  # no compiler, or one that cannot build it: PyTorch's kernels stay
        warnings.warn(
            f"the zoo's CPU matrix-vector kernels could not be built ({type(e).__name__}: {str(e)[:300]}); decoding "
            "uses PyTorch's kernels (slower). Install a C++ compiler (g++) for them, or set ZOO_GEMV=0 to skip the "
            "build",
            stacklevel=3,
        )
        return False
    _register_shapes()
    return True


def _register_shapes() -> None:
    def one_row(x: torch.Tensor, weight: torch.Tensor, *rest) -> torch.Tensor:
        return x.new_empty((1, weight.shape[0]))

    for name in ("f32", "int8", "int4"):
        torch.library.register_fake(f"zoo_gemv::{name}")(one_row)

    @torch.library.register_fake("zoo_gemv::attend")
    def _(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor, scale: float) -> torch.Tensor:
        return q.new_empty((1, 1, q.shape[1] * q.shape[3]))


def supports(x: torch.Tensor, in_features: int) -> bool:
    """Whether ``x`` is one float row on the CPU (float32, or bf16 / fp16 the caller casts to float32) of a width
    the integer kernels take (a multiple of 32)."""
    return (
        x.device.type == "cpu"
        and x.dtype in (torch.float32, torch.bfloat16, torch.float16)
        and x.numel() == in_features
        and in_features % 32 == 0
    )


def gemv_f32(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``x (1, K) @ weight (N, K).T`` in float32."""
    return torch.ops.zoo_gemv.f32(x.reshape(1, -1), weight)


def gemv_int8(x: torch.Tensor, q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """``x (1, K) @ (q * scale[:, None]).T`` for int8 codes ``q (N, K)`` and float32 row scales ``scale (N,)``."""
    return torch.ops.zoo_gemv.int8(x.reshape(1, -1), q, scale)


def gemv_int4(
    x: torch.Tensor, codes: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, group_size: int
) -> torch.Tensor:
    """``x (1, K)`` times the int4 weight of :mod:`zoo.lm.quant`'s plain layout: ``codes (N, K / 2)`` uint8
    (even column in the low nibble), ``scale`` / ``zero`` float16 ``(N, K / group_size)``, ``w = (u - 8) * scale +
    zero``; ``group_size`` a multiple of 32."""
    return torch.ops.zoo_gemv.int4(x.reshape(1, -1), codes, scale, zero, group_size)


def attend_one(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor, scale: float) -> torch.Tensor:
    """One query token's attention ``q (1, H, 1, D)`` over keys/values ``(1, KV, S, D)`` (``KV`` dividing ``H``;
    float32) at the positions ``mask`` (``S`` booleans, any shape) marks, as ``(1, 1, H * D)``: what
    ``F.scaled_dot_product_attention`` gives with that boolean mask (a row that sees nothing sees everything), with
    the work of the seen positions only. A static cache of 256 slots holding 40 tokens costs 40 positions."""
    return torch.ops.zoo_gemv.attend(q, k, v, mask.reshape(-1), scale)


class OneRowProducts(CustomGraphPass):
    """An Inductor post-grad pass: every float32 product of one row with a weight's transpose on the CPU
    (``mm(x (1, K), permute(w, [1, 0]))``, and ``addmm`` with a bias) becomes :func:`gemv_f32`. Used by the
    compiled decode step (``torch.compile(..., options={"post_grad_custom_post_pass": OneRowProducts()})``)."""

    def __call__(self, graph: torch.fx.Graph) -> None:
        aten = torch.ops.aten
        for node in list(graph.nodes):
            if node.op != "call_function" or node.target not in (aten.mm.default, aten.addmm.default):
                continue
            bias, (x, wt) = (None, node.args) if node.target is aten.mm.default else (node.args[0], node.args[1:3])
            if node.kwargs or not isinstance(wt, torch.fx.Node) or wt.target is not aten.permute.default:
                continue
            w = wt.args[0]
            xv, wv = x.meta.get("val"), getattr(w, "meta", {}).get("val")
            if (
                xv is None
                or wv is None
                or list(wt.args[1]) != [1, 0]
                or xv.dim() != 2
                or xv.shape[0] != 1
                or wv.dim() != 2
                or xv.device.type != "cpu"
                or xv.dtype != torch.float32
                or wv.dtype != torch.float32
            ):
                continue
            with graph.inserting_before(node):
                y = graph.call_function(torch.ops.zoo_gemv.f32.default, (x, w))
                y.meta = dict(node.meta)
                if bias is not None:
                    y = graph.call_function(aten.add.Tensor, (y, bias))
                    y.meta = dict(node.meta)
            node.replace_all_uses_with(y)
            graph.erase_node(node)
        graph.eliminate_dead_code()

    def uuid(self) -> str:
        return hashlib.sha256((_SOURCE + "OneRowProducts 1").encode()).hexdigest()
