// split_calls.h — a batch's expert calls cut into calls of at most S tokens
// each (the CUDA backend's streaming kernel takes calls of 1-2 tokens; a larger
// small batch runs as such calls in one launch). Host code, no device: the CPU
// tests check it (test_kernels) where no GPU is.
#pragma once
#include <algorithm>
#include <cstdint>
#include <vector>
#include "backend.h"

namespace ts {

// Appends to `out` each call of `calls` cut into parts of S tokens (the last part
// takes the rest), in order; a call of 0 tokens passes through as it is. A part
// points into its call's rows, weights and masks, so the (call, token) pairs in
// order, and every output row's terms in call order, are those of `calls`.
inline void split_calls(const ts_expert_call* calls, int64_t n_calls, int64_t S, std::vector<ts_expert_call>& out) {
  for (int64_t c = 0; c < n_calls; ++c) {
    const ts_expert_call& ec = calls[c];
    if (ec.n == 0) {
      out.push_back(ec);
      continue;
    }
    const int64_t words = ts_mask_words(ec.expert->intermediate);
    for (int64_t j = 0; j < ec.n; j += S) {
      ts_expert_call part = ec;
      part.n = std::min<int64_t>(S, ec.n - j);
      part.rows = ec.rows + j;
      part.weight = ec.weight + j;
      part.masks = ec.masks + j * words;
      out.push_back(part);
    }
  }
}

}  // namespace ts
