// layout.h — moving activations between natural order and a kernel variant's
// interleaved order (see Layout in kernels.h). Portable code only.
#pragma once
#include <cstdint>
#include <cstring>
#include "kernels.h"

namespace ts_cpu {

// Elements a buffer of n values takes in layout l (padded to whole blocks).
inline int64_t padded(const Layout& l, int64_t n) { return l.block ? (n + l.block - 1) / l.block * l.block : n; }

// Where natural index i lives in layout l.
inline int64_t permuted_index(const Layout& l, int64_t i) {
  if (!l.block) return i;
  const int64_t b = i / l.block, r = i % l.block;
  return b * l.block + (r % l.ways) * (l.block / l.ways) + r / l.ways;
}

// out[padded(l, n)] = x[n] in layout l, zero padded.
inline void to_layout(const Layout& l, const float* x, int64_t n, float* out) {
  if (!l.block) {
    std::memcpy(out, x, size_t(n) * sizeof(float));
    return;
  }
  const int64_t np = padded(l, n), lane = l.block / l.ways;
  for (int64_t b = 0; b < np; b += l.block)
    for (int w = 0; w < l.ways; w++)
      for (int64_t j = 0; j < lane; j++) {
        const int64_t i = b + j * l.ways + w;  // natural index of out[b + w * lane + j]
        out[b + w * lane + j] = i < n ? x[i] : 0.f;
      }
}

}  // namespace ts_cpu
