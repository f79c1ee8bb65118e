// kernels_avx512.cc — dot2/axpy for AVX-512F (built with those flags only for
// this file, see cmake/simd.cmake; chosen at run time).
#include "kernels.h"

namespace ts_cpu {
const KernelSet* avx512_kernels() { return nullptr; }
}  // namespace ts_cpu
