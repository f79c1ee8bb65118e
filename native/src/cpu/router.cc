// router.cc — softmax over expert logits, top-k, weights renormalised to sum 1
// (Mixtral). Computed in double; ties go to the lower expert id.
#include <cmath>
#include "cpu_backend.h"

namespace ts_cpu {

int router_topk(ts_backend* b, int64_t n, int64_t experts, const float* logits, int64_t k, int32_t* idx,
                float* weight) {
  CpuBackend* cb = cpu(b);
  double* p = grow(cb->router_p, size_t(experts + k));
  double* top = p + experts;
  for (int64_t i = 0; i < n; i++) {
    const float* l = logits + i * experts;
    double mx = -INFINITY;
    // a compare, not std::fmax (same result, NaN logits skipped): GCC 12.2 for
    // aarch64 crashes vectorising an fmax reduction at -O3 (internal compiler error)
    for (int64_t e = 0; e < experts; e++)
      if (double(l[e]) > mx) mx = double(l[e]);
    double sum = 0;
    for (int64_t e = 0; e < experts; e++) {
      p[e] = std::exp(double(l[e]) - mx);
      if (!(p[e] >= 0)) p[e] = 0;  // NaN logits: never preferred, still a valid id
      sum += p[e];
    }
    double picked = 0;
    for (int64_t j = 0; j < k; j++) {
      int64_t best = -1;
      for (int64_t e = 0; e < experts; e++)
        if (p[e] >= 0 && (best < 0 || p[e] > p[best])) best = e;  // strict '>': the lower id wins ties
      idx[i * k + j] = int32_t(best);
      top[j] = sum > 0 ? p[best] / sum : 0;
      picked += top[j];
      p[best] = -1;  // taken
    }
    for (int64_t j = 0; j < k; j++) weight[i * k + j] = picked > 0 ? float(top[j] / picked) : float(1.0 / double(k));
  }
  return 0;
}

}  // namespace ts_cpu
