// kernels.h — the two inner loops every heavy CPU op is built from, one table
// per instruction-set variant (scalar reference, AVX2+FMA, AVX-512), picked at
// run time. Rows are stored weights of one dtype; activations are f32.
//   dot2:      the gather-dot of PowerInfer (two rows — gate and up of one
//              neuron, or two rows of a matrix — against a few tokens at once,
//              so every weight byte is read from memory once per call);
//   axpy_rows: the down projection of a block of neurons into several tokens'
//              outputs; each output chunk is loaded and stored once per block
//              (not once per neuron), which keeps it off the memory path.
// This header is included by files built with SIMD flags: keep it free of
// inline functions (see dtype.h).
#pragma once
#include <stddef.h>
#include <stdint.h>

namespace ts_cpu {

// The order a variant wants activations (x of dot2) and outputs (y of
// axpy_rows) in, per weight dtype. Natural order, or "interleaved": in each
// block of `block` elements, first the elements with index % ways == 0, then
// those with index % ways == 1, ... That is the order in which a vector of
// packed 16-bit (ways 2) or 8-bit (ways 4) weights widens to f32 with in-lane
// shifts and masks (no cross-lane shuffle per weight). Buffers in an
// interleaved order are padded to a whole block with zeros; weight rows are
// read in whole blocks too (their 64-byte padding is zero).
struct Layout {
  int block;  // 0: natural order
  int ways;
};

// dot2 handles at most this many tokens per call; callers loop over groups.
enum { kDotTokens = 8 };

// oa[t] = sum_k ra[k] * x[t][k], ob[t] = sum_k rb[k] * x[t][k], for t < nt <= kDotTokens.
// Raw stored values (an I8 row's scale is applied by the caller). rb may equal ra.
typedef void (*Dot2Fn)(const void* ra, const void* rb, int64_t n, const float* const* x, int nt, float* oa,
                       float* ob);
// y[t][k] += sum over j < nr (in order) of alpha[j * lda + t] * rows[j][k],
// for t < nt <= kAxpyTokens, k < n. Raw stored values (fold I8 scales into alpha).
typedef void (*AxpyRowsFn)(const void* const* rows, int nr, int64_t n, const float* alpha, int lda, float* const* y,
                           int nt);
enum { kAxpyTokens = 16 };

struct KernelSet {
  const char* name;          // "scalar" | "avx2" | "avx512"
  Dot2Fn dot2[4];            // indexed by ts_dtype (F32, F16, BF16, I8)
  AxpyRowsFn axpy_rows[4];
  Layout layout[4];          // of x (dot2) and y (axpy_rows), per dtype
};

const KernelSet* scalar_kernels();
const KernelSet* avx2_kernels();    // nullptr when not built for x86-64
const KernelSet* avx512_kernels();  // nullptr when not built for x86-64

}  // namespace ts_cpu
