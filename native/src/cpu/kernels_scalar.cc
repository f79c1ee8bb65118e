// kernels_scalar.cc — the portable reference for dot2/axpy: one f32
// accumulator per output, elements summed in order. Every SIMD variant is
// tested against this one; it is also the whole CPU path on non-x86 machines.
#include <cstring>
#include "../dtype.h"
#include "kernels.h"

namespace ts_cpu {
namespace {

struct LoadF32 { static float at(const void* p, int64_t k) { return static_cast<const float*>(p)[k]; } };
struct LoadF16 { static float at(const void* p, int64_t k) { return ts::f16_to_f32(static_cast<const uint16_t*>(p)[k]); } };
struct LoadBF16 { static float at(const void* p, int64_t k) { return ts::bf16_to_f32(static_cast<const uint16_t*>(p)[k]); } };
struct LoadI8 { static float at(const void* p, int64_t k) { return float(static_cast<const int8_t*>(p)[k]); } };

template <class L>
void dot2(const void* ra, const void* rb, int64_t n, const float* const* x, int nt, float* oa, float* ob) {
  for (int t = 0; t < nt; t++) {
    float sa = 0.f, sb = 0.f;
    const float* xt = x[t];
    for (int64_t k = 0; k < n; k++) {
      sa += L::at(ra, k) * xt[k];
      sb += L::at(rb, k) * xt[k];
    }
    oa[t] = sa;
    ob[t] = sb;
  }
}

template <class L>
void axpy_rows(const void* const* rows, int nr, int64_t n, const float* alpha, int lda, float* const* y, int nt) {
  for (int t = 0; t < nt; t++) {
    float* yt = y[t];
    for (int64_t k = 0; k < n; k++) {
      float acc = yt[k];
      for (int j = 0; j < nr; j++) acc += alpha[j * lda + t] * L::at(rows[j], k);
      yt[k] = acc;
    }
  }
}

const KernelSet kScalar = {
    "scalar",
    {dot2<LoadF32>, dot2<LoadF16>, dot2<LoadBF16>, dot2<LoadI8>},
    {axpy_rows<LoadF32>, axpy_rows<LoadF16>, axpy_rows<LoadBF16>, axpy_rows<LoadI8>},
    {{0, 0}, {0, 0}, {0, 0}, {0, 0}},
};

}  // namespace

const KernelSet* scalar_kernels() { return &kScalar; }

}  // namespace ts_cpu
