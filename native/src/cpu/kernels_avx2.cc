// kernels_avx2.cc — dot2/axpy with AVX2 + FMA + F16C (this file alone is built
// with those flags, see cmake/simd.cmake; backend.cc picks it only when the CPU
// has them). The loops are kernels_simd.inc's (shared with kernels_avx512.cc);
// this file gives them 8 f32 lanes and the weight loads. Everything has internal
// linkage so no AVX2 code can leak into the portable paths.
#include "kernels.h"

#if defined(__x86_64__) && defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#include <immintrin.h>
#include <string.h>

namespace ts_cpu {
namespace {

// 8 f32 lanes in 16 ymm registers.
struct Vec {
  using F = __m256;
  using Mask = __m256i;
  static constexpr int lanes = 8;
  static constexpr int dot_tokens = 4;  // 8 accumulators + weights and activations
  static constexpr int axpy_chunks(int nt) { return nt <= 2 ? 4 : nt <= 4 ? 2 : 1; }
  static F zero() { return _mm256_setzero_ps(); }
  static F loadu(const float* p) { return _mm256_loadu_ps(p); }
  static void storeu(float* p, F v) { _mm256_storeu_ps(p, v); }
  static F fmadd(F a, F b, F c) { return _mm256_fmadd_ps(a, b, c); }
  static F add(F a, F b) { return _mm256_add_ps(a, b); }
  static F broadcast(const float* p) { return _mm256_broadcast_ss(p); }
  static Mask tail_mask(int64_t r) {
    const __m256i idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(int(r)), idx);
  }
  static F maskload(const float* p, Mask m) { return _mm256_maskload_ps(p, m); }
  static void maskstore(float* p, Mask m, F v) { _mm256_maskstore_ps(p, m, v); }
  static float hsum(F v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
  }
};

// Load 8 weights at element k as f32; `size` bytes per element.
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

#include "kernels_simd.inc"

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
