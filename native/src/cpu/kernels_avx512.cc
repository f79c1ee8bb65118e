// kernels_avx512.cc — dot2/axpy with AVX-512F (this file alone is built with
// -mavx512f, see cmake/simd.cmake; backend.cc picks it only when the CPU has it).
// 16 f32 lanes; bf16/f16/i8 weights are widened to f32 in registers, so
// activations and accumulation stay f32 (no bf16 dot instructions: they would
// round the activations). The natural-order loops are kernels_simd.inc's (shared
// with kernels_avx2.cc); the interleaved bf16 ones are here. Everything has
// internal linkage (anonymous namespace) so no AVX-512 code can leak into the
// portable paths.
#include "kernels.h"

#if defined(__x86_64__) && defined(__AVX512F__)
#include <immintrin.h>
#include <string.h>
#include <type_traits>

namespace ts_cpu {
namespace {

// 16 f32 lanes in 32 zmm registers.
struct Vec {
  using F = __m512;
  using Mask = __mmask16;
  static constexpr int lanes = 16;
  static constexpr int dot_tokens = 8;  // 16 accumulators: weights converted once for 8 tokens
  static constexpr int axpy_chunks(int nt) { return nt == 1 ? 4 : 2; }
  static F zero() { return _mm512_setzero_ps(); }
  static F loadu(const float* p) { return _mm512_loadu_ps(p); }
  static void storeu(float* p, F v) { _mm512_storeu_ps(p, v); }
  static F fmadd(F a, F b, F c) { return _mm512_fmadd_ps(a, b, c); }
  static F add(F a, F b) { return _mm512_add_ps(a, b); }
  static F broadcast(const float* p) { return _mm512_set1_ps(*p); }
  static Mask tail_mask(int64_t r) { return __mmask16((1u << r) - 1); }
  static F maskload(const float* p, Mask m) { return _mm512_maskz_loadu_ps(m, p); }
  static void maskstore(float* p, Mask m, F v) { _mm512_mask_storeu_ps(p, m, v); }
  static float hsum(F v) { return _mm512_reduce_add_ps(v); }
};

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
struct LI8 {
  static constexpr int size = 1;
  static __m512 load(const void* p, int64_t k) {
    return _mm512_cvtepi32_ps(
        _mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(static_cast<const int8_t*>(p) + k))));
  }
};
struct LF16 {
  static constexpr int size = 2;
  static __m512 load(const void* p, int64_t k) {
    return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(static_cast<const uint16_t*>(p) + k)));
  }
};

#include "kernels_simd.inc"

// ---- the interleaved bf16 layout (see Layout in kernels.h): whole 64-byte blocks ----
// bf16: 32 weights = 16 lanes of (even | odd << 16); even = lane << 16, odd = lane & 0xffff0000.
struct BBF16 {
  static constexpr int block = 32, ways = 2, size = 2;
  static void load(const void* p, int64_t k, __m512* w) {
    const __m512i v = in_reg(_mm512_loadu_si512(static_cast<const uint16_t*>(p) + k));
    w[0] = _mm512_castsi512_ps(_mm512_slli_epi32(v, 16));
    w[1] = _mm512_castsi512_ps(_mm512_and_si512(v, _mm512_set1_epi32(int(0xffff0000u))));
  }
};
// NT tokens; U blocks per step when there are few tokens (independent accumulators).
template <class F, int NT, int U>
void dot2_blk(const void* ra, const void* rb, int64_t n, const float* const* x, float* oa, float* ob) {
  constexpr int W = F::ways;
  __m512 sa[NT][U], sb[NT][U];
  for (int t = 0; t < NT; t++)
    for (int u = 0; u < U; u++) sa[t][u] = sb[t][u] = _mm512_setzero_ps();
  const int64_t nblk = (n + F::block - 1) / F::block;
  int64_t b = 0;
  for (; b + U <= nblk; b += U) {
    prefetch_rows(ra, rb, b * F::block * F::size, U * F::block * F::size);
    for (int u = 0; u < U; u++) {
      const int64_t k = (b + u) * F::block;
      __m512 wa[W], wb[W];
      F::load(ra, k, wa);
      F::load(rb, k, wb);
      for (int t = 0; t < NT; t++)
        for (int w = 0; w < W; w++) {
          const __m512 xv = in_reg(_mm512_loadu_ps(x[t] + k + 16 * w));
          sa[t][u] = _mm512_fmadd_ps(wa[w], xv, sa[t][u]);
          sb[t][u] = _mm512_fmadd_ps(wb[w], xv, sb[t][u]);
        }
    }
  }
  for (; b < nblk; b++) {
    const int64_t k = b * F::block;
    __m512 wa[W], wb[W];
    F::load(ra, k, wa);
    F::load(rb, k, wb);
    for (int t = 0; t < NT; t++)
      for (int w = 0; w < W; w++) {
        const __m512 xv = in_reg(_mm512_loadu_ps(x[t] + k + 16 * w));
        sa[t][0] = _mm512_fmadd_ps(wa[w], xv, sa[t][0]);
        sb[t][0] = _mm512_fmadd_ps(wb[w], xv, sb[t][0]);
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

template <class F>
void dot2_b(const void* ra, const void* rb, int64_t n, const float* const* x, int nt, float* oa, float* ob) {
  switch (nt) {
    // One accumulator per token for every width: batch-invariant sums (see kernels_simd.inc).
    case 1: dot2_blk<F, 1, 1>(ra, rb, n, x, oa, ob); break;
    case 2: dot2_blk<F, 2, 1>(ra, rb, n, x, oa, ob); break;
    case 3: dot2_blk<F, 3, 1>(ra, rb, n, x, oa, ob); break;
    case 4: dot2_blk<F, 4, 1>(ra, rb, n, x, oa, ob); break;
    case 5: dot2_blk<F, 5, 1>(ra, rb, n, x, oa, ob); break;
    case 6: dot2_blk<F, 6, 1>(ra, rb, n, x, oa, ob); break;
    case 7: dot2_blk<F, 7, 1>(ra, rb, n, x, oa, ob); break;
    default: dot2_blk<F, 8, 1>(ra, rb, n, x, oa, ob); break;
  }
}

// NT tokens x C blocks of outputs in registers (ways x NT x C accumulators).
template <class F, int NT, int C>
void axpy_blk(const void* const* rows, int nr, int64_t n, const float* alpha, int lda, float* const* y) {
  constexpr int W = F::ways;
  const int64_t nblk = (n + F::block - 1) / F::block;
  int64_t b = 0;
  auto step = [&](auto c_tag) {
    constexpr int CC = decltype(c_tag)::value;
    __m512 acc[NT][CC][W];
    for (int t = 0; t < NT; t++)
      for (int c = 0; c < CC; c++)
        for (int w = 0; w < W; w++) acc[t][c][w] = _mm512_loadu_ps(y[t] + (b + c) * F::block + 16 * w);
    for (int j = 0; j < nr; j++) {
      __m512 wv[CC][W];
      for (int c = 0; c < CC; c++) F::load(rows[j], (b + c) * F::block, wv[c]);
      for (int t = 0; t < NT; t++) {
        const __m512 a = _mm512_set1_ps(alpha[j * lda + t]);
        for (int c = 0; c < CC; c++)
          for (int w = 0; w < W; w++) acc[t][c][w] = _mm512_fmadd_ps(a, wv[c][w], acc[t][c][w]);
      }
    }
    for (int t = 0; t < NT; t++)
      for (int c = 0; c < CC; c++)
        for (int w = 0; w < W; w++) _mm512_storeu_ps(y[t] + (b + c) * F::block + 16 * w, acc[t][c][w]);
  };
  for (; b + C <= nblk; b += C) step(std::integral_constant<int, C>());
  for (; b < nblk; b++) step(std::integral_constant<int, 1>());
}

template <class F>
void axpy_rows_b(const void* const* rows, int nr, int64_t n, const float* alpha, int lda, float* const* y, int nt) {
  static_assert(F::ways == 2, "tokens per pass sized for 2-way layouts");
  for (int t0 = 0; t0 < nt; t0 += 8) {  // 16 accumulators per pass
    const float* al = alpha + t0;
    float* const* yt = y + t0;
    switch (nt - t0 < 8 ? nt - t0 : 8) {
      case 1: axpy_blk<F, 1, 4>(rows, nr, n, al, lda, yt); break;
      case 2: axpy_blk<F, 2, 2>(rows, nr, n, al, lda, yt); break;
      case 3: axpy_blk<F, 3, 1>(rows, nr, n, al, lda, yt); break;
      case 4: axpy_blk<F, 4, 1>(rows, nr, n, al, lda, yt); break;
      case 5: axpy_blk<F, 5, 1>(rows, nr, n, al, lda, yt); break;
      case 6: axpy_blk<F, 6, 1>(rows, nr, n, al, lda, yt); break;
      case 7: axpy_blk<F, 7, 1>(rows, nr, n, al, lda, yt); break;
      default: axpy_blk<F, 8, 1>(rows, nr, n, al, lda, yt); break;
    }
  }
}

// bf16 in the interleaved layout (measured: dot2 35 vs 29 elements/ns, axpy_rows
// 25 vs 17 on Zen 4); i8 natural (its 4-way interleave is slower than vpmovsxbd).
const KernelSet kAvx512 = {
    "avx512",
    {dot2<LF32>, dot2<LF16>, dot2_b<BBF16>, dot2<LI8>},
    {axpy_rows<LF32>, axpy_rows<LF16>, axpy_rows_b<BBF16>, axpy_rows<LI8>},
    {{0, 0}, {0, 0}, {BBF16::block, BBF16::ways}, {0, 0}},
};

}  // namespace

const KernelSet* avx512_kernels() { return &kAvx512; }

}  // namespace ts_cpu

#else

namespace ts_cpu {
const KernelSet* avx512_kernels() { return nullptr; }
}  // namespace ts_cpu

#endif
