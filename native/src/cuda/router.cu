// router.cu — softmax over expert logits, top-k, weights renormalised to sum 1.
// One thread per row, in double, following the CPU reference step by step:
// p_e = exp(l_e - max) (NaN -> 0, never preferred but still a valid id), the
// k largest p with ties to the lower id, weight_j = p_j / sum of the k picked.
#include <cmath>
#include <cstring>
#include "common.cuh"

namespace tscuda {
namespace {

__device__ __forceinline__ double prob(const float* l, int64_t e, double mx) {
  const double p = exp(double(l[e]) - mx);
  return p >= 0 ? p : 0.0;  // NaN -> 0
}

__global__ void k_router(const float* logits, int64_t n, int64_t experts, int64_t k, int32_t* idx, float* weight) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n) return;
  const float* l = logits + i * experts;
  double mx = -INFINITY;
  for (int64_t e = 0; e < experts; ++e) mx = fmax(mx, double(l[e]));
  double sum = 0;
  for (int64_t e = 0; e < experts; ++e) sum += prob(l, e, mx);
  // pick j: the best in (p desc, id asc) order that comes after pick j-1
  double prev_p = INFINITY, picked = 0;
  int64_t prev = -1;
  for (int64_t j = 0; j < k; ++j) {
    int64_t best = -1;
    double bp = 0;
    for (int64_t e = 0; e < experts; ++e) {
      const double p = prob(l, e, mx);
      const bool after = p < prev_p || (p == prev_p && e > prev);
      if (after && (best < 0 || p > bp)) {
        best = e;
        bp = p;
      }
    }
    idx[i * k + j] = int32_t(best);
    const double top = sum > 0 ? bp / sum : 0;
    weight[i * k + j] = float(top);  // renormalised below
    picked += top;
    prev = best;
    prev_p = bp;
  }
  for (int64_t j = 0; j < k; ++j) {
    const int64_t e = idx[i * k + j];
    const double top = sum > 0 ? prob(l, e, mx) / sum : 0;
    weight[i * k + j] = picked > 0 ? float(top / picked) : float(1.0 / double(k));
  }
}

}  // namespace

int router_topk(ts_backend* tb, int64_t n, int64_t experts, const float* logits, int64_t k, int32_t* idx,
                float* weight) {
  Backend* b = as_cuda(tb);
  TS_TRY(b->activate());
  Layout L;
  const size_t l_off = L.add_in(size_t(n * experts) * 4);
  const size_t i_off = L.add_out(size_t(n * k) * 4);
  const size_t w_off = L.add_out(size_t(n * k) * 4);
  return run_staged(
      b, L, [&](char* h, char*) { std::memcpy(h + l_off, logits, size_t(n * experts) * 4); },
      [&](char* d) {
        char* out = d + L.out_base();
        k_router<<<unsigned((n + 127) / 128), 128, 0, b->stream>>>(reinterpret_cast<const float*>(d + l_off), n, experts,
                                                                  k, reinterpret_cast<int32_t*>(out + i_off),
                                                                  reinterpret_cast<float*>(out + w_off));
        TS_CUDA(cudaGetLastError());
        return 0;
      },
      [&](const char* h) {
        std::memcpy(idx, h + i_off, size_t(n * k) * 4);
        std::memcpy(weight, h + w_off, size_t(n * k) * 4);
      });
}

}  // namespace tscuda
