// kernels_avx2.cc — dot2/axpy with AVX2 + FMA + F16C (this file alone is built
// with those flags, see cmake/simd.cmake; backend.cc picks it only when the CPU
// has them). Same structure as kernels_avx512.cc with 8 f32 lanes; everything
// has internal linkage so no AVX2 code can leak into the portable paths.
#include "kernels.h"

#if defined(__x86_64__) && defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#include <immintrin.h>
#include <string.h>

namespace ts_cpu {
namespace {

// Keeps a loaded value in a register: otherwise the compiler folds the load
// into every instruction that uses it, and loads (not arithmetic) are what
// limits these loops.
// Software prefetch of the weight rows kPrefetchAhead bytes ahead, into L2
// (prefetcht2): it keeps more lines in flight than the out-of-order window
// alone (+5-10% per core measured on Zen 4; into L1 it was slower).
constexpr int kPrefetchAhead = 3072;
inline void prefetch_rows(const void* ra, const void* rb, int64_t byte, int bytes) {
  for (int o = 0; o < bytes; o += 64) {
    _mm_prefetch(static_cast<const char*>(ra) + byte + kPrefetchAhead + o, _MM_HINT_T2);
    _mm_prefetch(static_cast<const char*>(rb) + byte + kPrefetchAhead + o, _MM_HINT_T2);
  }
}

template <class T>
inline T in_reg(T v) {
  __asm__("" : "+v"(v));
  return v;
}

struct LF32 {
  static constexpr int size = 4;
  static __m256 load(const void* p, int64_t k) { return _mm256_loadu_ps(static_cast<const float*>(p) + k); }
};
struct LBF16 {
  static constexpr int size = 2;
  static __m256 load(const void* p, int64_t k) {
    __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(static_cast<const uint16_t*>(p) + k));
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(v), 16));
  }
};
struct LI8 {
  static constexpr int size = 1;
  static __m256 load(const void* p, int64_t k) {
    return _mm256_cvtepi32_ps(
        _mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(static_cast<const int8_t*>(p) + k))));
  }
};
struct LF16 {
  static constexpr int size = 2;
  static __m256 load(const void* p, int64_t k) {
    return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(static_cast<const uint16_t*>(p) + k)));
  }
};
template <class L>
__m256 load_tail(const void* p, int64_t k, int64_t r) {
  alignas(32) unsigned char buf[32] = {0};
  memcpy(buf, static_cast<const unsigned char*>(p) + k * L::size, size_t(r) * L::size);
  return L::load(buf, 0);
}

// lanes [0, r) set
__m256i tail_mask(int64_t r) {
  const __m256i idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(int(r)), idx);
}

float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

template <class L, int NT, int U>
void dot2_nt(const void* ra, const void* rb, int64_t n, const float* const* x, float* oa, float* ob) {
  __m256 sa[NT][U], sb[NT][U];
  for (int t = 0; t < NT; t++)
    for (int u = 0; u < U; u++) sa[t][u] = sb[t][u] = _mm256_setzero_ps();
  int64_t k = 0;
  for (; k + 8 * U <= n; k += 8 * U) {
    prefetch_rows(ra, rb, k * L::size, 8 * U * L::size);
    for (int u = 0; u < U; u++) {
      const __m256 wa = L::load(ra, k + 8 * u), wb = L::load(rb, k + 8 * u);
      for (int t = 0; t < NT; t++) {
        const __m256 xv = in_reg(_mm256_loadu_ps(x[t] + k + 8 * u));
        sa[t][u] = _mm256_fmadd_ps(wa, xv, sa[t][u]);
        sb[t][u] = _mm256_fmadd_ps(wb, xv, sb[t][u]);
      }
    }
  }
  for (; k + 8 <= n; k += 8) {
    const __m256 wa = L::load(ra, k), wb = L::load(rb, k);
    for (int t = 0; t < NT; t++) {
      const __m256 xv = in_reg(_mm256_loadu_ps(x[t] + k));
      sa[t][0] = _mm256_fmadd_ps(wa, xv, sa[t][0]);
      sb[t][0] = _mm256_fmadd_ps(wb, xv, sb[t][0]);
    }
  }
  if (k < n) {
    const int64_t r = n - k;
    const __m256i m = tail_mask(r);
    const __m256 wa = load_tail<L>(ra, k, r), wb = load_tail<L>(rb, k, r);
    for (int t = 0; t < NT; t++) {
      const __m256 xv = _mm256_maskload_ps(x[t] + k, m);
      sa[t][0] = _mm256_fmadd_ps(wa, xv, sa[t][0]);
      sb[t][0] = _mm256_fmadd_ps(wb, xv, sb[t][0]);
    }
  }
  for (int t = 0; t < NT; t++) {
    for (int u = 1; u < U; u++) {
      sa[t][0] = _mm256_add_ps(sa[t][0], sa[t][u]);
      sb[t][0] = _mm256_add_ps(sb[t][0], sb[t][u]);
    }
    oa[t] = hsum(sa[t][0]);
    ob[t] = hsum(sb[t][0]);
  }
}

template <class L>
void dot2(const void* ra, const void* rb, int64_t n, const float* const* x, int nt, float* oa, float* ob) {
  // 16 ymm registers: at most 4 tokens (8 accumulators) per pass
  for (int t0 = 0; t0 < nt; t0 += 4) {
    switch (nt - t0 < 4 ? nt - t0 : 4) {
      case 1: dot2_nt<L, 1, 4>(ra, rb, n, x + t0, oa + t0, ob + t0); break;
      case 2: dot2_nt<L, 2, 2>(ra, rb, n, x + t0, oa + t0, ob + t0); break;
      case 3: dot2_nt<L, 3, 1>(ra, rb, n, x + t0, oa + t0, ob + t0); break;
      default: dot2_nt<L, 4, 1>(ra, rb, n, x + t0, oa + t0, ob + t0); break;
    }
  }
}

// NT tokens x C chunks of 8 columns in registers; every row of the block is
// streamed through them, so y is loaded and stored once per block.
template <class L, int NT, int C>
void axpy_rows_nt(const void* const* rows, int nr, int64_t n, const float* alpha, int lda, float* const* y) {
  int64_t k = 0;
  for (; k + 8 * C <= n; k += 8 * C) {
    __m256 acc[NT][C];
    for (int t = 0; t < NT; t++)
      for (int c = 0; c < C; c++) acc[t][c] = _mm256_loadu_ps(y[t] + k + 8 * c);
    for (int j = 0; j < nr; j++) {
      __m256 w[C];
      for (int c = 0; c < C; c++) w[c] = L::load(rows[j], k + 8 * c);
      for (int t = 0; t < NT; t++) {
        const __m256 a = _mm256_broadcast_ss(alpha + j * lda + t);
        for (int c = 0; c < C; c++) acc[t][c] = _mm256_fmadd_ps(a, w[c], acc[t][c]);
      }
    }
    for (int t = 0; t < NT; t++)
      for (int c = 0; c < C; c++) _mm256_storeu_ps(y[t] + k + 8 * c, acc[t][c]);
  }
  for (; k < n; k += 8) {
    const int64_t r = n - k < 8 ? n - k : 8;
    const __m256i m = tail_mask(r);
    __m256 acc[NT];
    for (int t = 0; t < NT; t++) acc[t] = _mm256_maskload_ps(y[t] + k, m);
    for (int j = 0; j < nr; j++) {
      const __m256 w = r == 8 ? L::load(rows[j], k) : load_tail<L>(rows[j], k, r);
      for (int t = 0; t < NT; t++) acc[t] = _mm256_fmadd_ps(_mm256_broadcast_ss(alpha + j * lda + t), w, acc[t]);
    }
    for (int t = 0; t < NT; t++) _mm256_maskstore_ps(y[t] + k, m, acc[t]);
  }
}

template <class L>
void axpy_rows(const void* const* rows, int nr, int64_t n, const float* alpha, int lda, float* const* y, int nt) {
  for (int t0 = 0; t0 < nt; t0 += 8) {
    const float* al = alpha + t0;
    float* const* yt = y + t0;
    switch (nt - t0 < 8 ? nt - t0 : 8) {
      case 1: axpy_rows_nt<L, 1, 4>(rows, nr, n, al, lda, yt); break;
      case 2: axpy_rows_nt<L, 2, 4>(rows, nr, n, al, lda, yt); break;
      case 3: axpy_rows_nt<L, 3, 2>(rows, nr, n, al, lda, yt); break;
      case 4: axpy_rows_nt<L, 4, 2>(rows, nr, n, al, lda, yt); break;
      case 5: axpy_rows_nt<L, 5, 1>(rows, nr, n, al, lda, yt); break;
      case 6: axpy_rows_nt<L, 6, 1>(rows, nr, n, al, lda, yt); break;
      case 7: axpy_rows_nt<L, 7, 1>(rows, nr, n, al, lda, yt); break;
      default: axpy_rows_nt<L, 8, 1>(rows, nr, n, al, lda, yt); break;
    }
  }
}

// All natural order: on AVX2 the interleaved layouts measured no faster.
const KernelSet kAvx2 = {
    "avx2",
    {dot2<LF32>, dot2<LF16>, dot2<LBF16>, dot2<LI8>},
    {axpy_rows<LF32>, axpy_rows<LF16>, axpy_rows<LBF16>, axpy_rows<LI8>},
    {{0, 0}, {0, 0}, {0, 0}, {0, 0}},
};

}  // namespace

const KernelSet* avx2_kernels() { return &kAvx2; }

}  // namespace ts_cpu

#else

namespace ts_cpu {
const KernelSet* avx2_kernels() { return nullptr; }
}  // namespace ts_cpu

#endif
