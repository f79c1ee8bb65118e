// layout.h — moving activations between natural order and a kernel variant's
// interleaved order (see Layout in kernels.h). Portable code only.
#pragma once
#include <cstdint>
#include <cstring>
#include "kernels.h"

namespace ts_cpu {

// Elements a buffer of n values takes in layout l (padded to whole blocks).
inline int64_t padded(const Layout& l, int64_t n) { return l.block ? (n + l.block - 1) / l.block * l.block : n; }

// f(natural index, position) for the natural indices [b0, b1) in layout l, in
// position order (padding skipped); b0 on a block boundary. Division-free:
// the moves run over every activation of a call.
template <class F>
inline void for_each_position(const Layout& l, int64_t b0, int64_t b1, F f) {
  if (!l.block) {
    for (int64_t i = b0; i < b1; i++) f(i, i);
    return;
  }
  const int64_t lane = l.block / l.ways;
  for (int64_t b = b0; b < b1; b += l.block)
    for (int w = 0; w < l.ways; w++)
      for (int64_t j = 0; j < lane; j++) {
        const int64_t i = b + j * l.ways + w;  // natural index of position b + w * lane + j
        if (i < b1) f(i, b + w * lane + j);
      }
}

// out[padded(l, n)] = x[n] in layout l, zero padded.
inline void to_layout(const Layout& l, const float* x, int64_t n, float* out) {
  if (!l.block) {
    std::memcpy(out, x, size_t(n) * sizeof(float));
    return;
  }
  const int64_t np = padded(l, n);
  if (np > n) std::memset(out + np - l.block, 0, size_t(l.block) * sizeof(float));  // the last block's padding
  for_each_position(l, 0, n, [&](int64_t i, int64_t p) { out[p] = x[i]; });
}

}  // namespace ts_cpu
