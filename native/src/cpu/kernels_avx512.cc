// kernels_avx512.cc — dot2/axpy with AVX-512F (this file alone is built with
// -mavx512f, see cmake/simd.cmake; backend.cc picks it only when the CPU has it).
// 16 f32 lanes; bf16/f16/i8 weights are widened to f32 in registers, so
// activations and accumulation stay f32 (no bf16 dot instructions: they would
// round the activations). Everything here has internal linkage (anonymous
// namespace) so no AVX-512 code can leak into the portable paths.
#include "kernels.h"

#if defined(__x86_64__) && defined(__AVX512F__)
#include <immintrin.h>
#include <string.h>

namespace ts_cpu {
namespace {

// Load 16 weights at element k as f32; `size` bytes per element.
struct LF32 {
  static constexpr int size = 4;
  static __m512 load(const void* p, int64_t k) { return _mm512_loadu_ps(static_cast<const float*>(p) + k); }
};
struct LBF16 {
  static constexpr int size = 2;
  static __m512 load(const void* p, int64_t k) {
    __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(static_cast<const uint16_t*>(p) + k));
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(v), 16));
  }
};
struct LF16 {
  static constexpr int size = 2;
  static __m512 load(const void* p, int64_t k) {
    return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(static_cast<const uint16_t*>(p) + k)));
  }
};
struct LI8 {
  static constexpr int size = 1;
  static __m512 load(const void* p, int64_t k) {
    return _mm512_cvtepi32_ps(
        _mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(static_cast<const int8_t*>(p) + k))));
  }
};

// The last r < 16 weights, zero-padded (copied so we never read past the row).
template <class L>
__m512 load_tail(const void* p, int64_t k, int64_t r) {
  alignas(64) unsigned char buf[64] = {0};
  memcpy(buf, static_cast<const unsigned char*>(p) + k * L::size, size_t(r) * L::size);
  return L::load(buf, 0);
}

// NT tokens, U vectors per step (independent accumulators hide FMA latency
// when there are few tokens).
template <class L, int NT, int U>
void dot2_nt(const void* ra, const void* rb, int64_t n, const float* const* x, float* oa, float* ob) {
  __m512 sa[NT][U], sb[NT][U];
  for (int t = 0; t < NT; t++)
    for (int u = 0; u < U; u++) sa[t][u] = sb[t][u] = _mm512_setzero_ps();
  int64_t k = 0;
  for (; k + 16 * U <= n; k += 16 * U) {
    for (int u = 0; u < U; u++) {
      const __m512 wa = L::load(ra, k + 16 * u), wb = L::load(rb, k + 16 * u);
      for (int t = 0; t < NT; t++) {
        const __m512 xv = _mm512_loadu_ps(x[t] + k + 16 * u);
        sa[t][u] = _mm512_fmadd_ps(wa, xv, sa[t][u]);
        sb[t][u] = _mm512_fmadd_ps(wb, xv, sb[t][u]);
      }
    }
  }
  for (; k + 16 <= n; k += 16) {
    const __m512 wa = L::load(ra, k), wb = L::load(rb, k);
    for (int t = 0; t < NT; t++) {
      const __m512 xv = _mm512_loadu_ps(x[t] + k);
      sa[t][0] = _mm512_fmadd_ps(wa, xv, sa[t][0]);
      sb[t][0] = _mm512_fmadd_ps(wb, xv, sb[t][0]);
    }
  }
  if (k < n) {
    const int64_t r = n - k;
    const __mmask16 m = __mmask16((1u << r) - 1);
    const __m512 wa = load_tail<L>(ra, k, r), wb = load_tail<L>(rb, k, r);
    for (int t = 0; t < NT; t++) {
      const __m512 xv = _mm512_maskz_loadu_ps(m, x[t] + k);
      sa[t][0] = _mm512_fmadd_ps(wa, xv, sa[t][0]);
      sb[t][0] = _mm512_fmadd_ps(wb, xv, sb[t][0]);
    }
  }
  for (int t = 0; t < NT; t++) {
    for (int u = 1; u < U; u++) {
      sa[t][0] = _mm512_add_ps(sa[t][0], sa[t][u]);
      sb[t][0] = _mm512_add_ps(sb[t][0], sb[t][u]);
    }
    oa[t] = _mm512_reduce_add_ps(sa[t][0]);
    ob[t] = _mm512_reduce_add_ps(sb[t][0]);
  }
}

template <class L>
void dot2(const void* ra, const void* rb, int64_t n, const float* const* x, int nt, float* oa, float* ob) {
  switch (nt) {
    case 1: dot2_nt<L, 1, 4>(ra, rb, n, x, oa, ob); break;
    case 2: dot2_nt<L, 2, 2>(ra, rb, n, x, oa, ob); break;
    case 3: dot2_nt<L, 3, 1>(ra, rb, n, x, oa, ob); break;
    default: dot2_nt<L, 4, 1>(ra, rb, n, x, oa, ob); break;
  }
}

template <class L>
void axpy(const void* row, int64_t n, const float* alpha, float* const* y, int nt) {
  int64_t k = 0;
  for (; k + 32 <= n; k += 32) {
    const __m512 w0 = L::load(row, k), w1 = L::load(row, k + 16);
    for (int t = 0; t < nt; t++) {
      const __m512 a = _mm512_set1_ps(alpha[t]);
      float* yt = y[t] + k;
      _mm512_storeu_ps(yt, _mm512_fmadd_ps(a, w0, _mm512_loadu_ps(yt)));
      _mm512_storeu_ps(yt + 16, _mm512_fmadd_ps(a, w1, _mm512_loadu_ps(yt + 16)));
    }
  }
  for (; k + 16 <= n; k += 16) {
    const __m512 w = L::load(row, k);
    for (int t = 0; t < nt; t++) {
      float* yt = y[t] + k;
      _mm512_storeu_ps(yt, _mm512_fmadd_ps(_mm512_set1_ps(alpha[t]), w, _mm512_loadu_ps(yt)));
    }
  }
  if (k < n) {
    const int64_t r = n - k;
    const __mmask16 m = __mmask16((1u << r) - 1);
    const __m512 w = load_tail<L>(row, k, r);
    for (int t = 0; t < nt; t++) {
      float* yt = y[t] + k;
      _mm512_mask_storeu_ps(yt, m, _mm512_fmadd_ps(_mm512_set1_ps(alpha[t]), w, _mm512_maskz_loadu_ps(m, yt)));
    }
  }
}

const KernelSet kAvx512 = {
    "avx512",
    {dot2<LF32>, dot2<LF16>, dot2<LBF16>, dot2<LI8>},
    {axpy<LF32>, axpy<LF16>, axpy<LBF16>, axpy<LI8>},
};

}  // namespace

const KernelSet* avx512_kernels() { return &kAvx512; }

}  // namespace ts_cpu

#else

namespace ts_cpu {
const KernelSet* avx512_kernels() { return nullptr; }
}  // namespace ts_cpu

#endif
