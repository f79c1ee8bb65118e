// rmsnorm.cu — y = x / sqrt(mean(x^2) + eps) * w, one block per row. The sum of
// squares is taken in double (as the CPU does), so the result does not depend
// on the order the threads add in.
#include <cstring>
#include "common.cuh"

namespace tscuda {
namespace {

constexpr int kThreads = 256;

__global__ void __launch_bounds__(kThreads) k_rmsnorm(const float* x, float* y, const void* w, const float* w_scale,
                                                      int w_dtype, int64_t w_stride, int64_t d, float eps) {
  __shared__ double s_part[kThreads / 32];
  const float* xr = x + size_t(blockIdx.x) * size_t(d);
  float* yr = y + size_t(blockIdx.x) * size_t(d);
  double ss = 0;
  for (int64_t k = threadIdx.x; k < d; k += blockDim.x) ss += double(xr[k]) * double(xr[k]);
  for (int o = 16; o > 0; o >>= 1) ss += __shfl_xor_sync(0xffffffffu, ss, o);
  if ((threadIdx.x & 31) == 0) s_part[threadIdx.x >> 5] = ss;
  __syncthreads();
  double tot = 0;
  for (int i = 0; i < int(blockDim.x >> 5); ++i) tot += s_part[i];
  const float inv = float(1.0 / sqrt(tot / double(d) + double(eps)));
  for (int64_t k = threadIdx.x; k < d; k += blockDim.x) {
    // w is [1, d] (one stored row) or [d, 1] (d rows of one element)
    const int64_t r = w_stride ? k : 0, c = w_stride ? 0 : k;
    const float wv = stored_at(static_cast<const char*>(w) + size_t(r) * size_t(w_stride), w_dtype, c) *
                     (w_scale ? w_scale[r] : 1.f);
    yr[k] = wv * (xr[k] * inv);
  }
}

}  // namespace

int rmsnorm(ts_backend* tb, const ts_weight* tw, int64_t n, int64_t d, const float* x, float eps, float* y) {
  Backend* b = as_cuda(tb);
  TS_TRY(b->activate());
  const Matrix& W = static_cast<const Weight*>(tw)->m;
  if (n > 0x7fffffff) return ts_fail("ts_rmsnorm: too many rows for one CUDA call");
  Layout L;
  const size_t x_off = L.add_in(size_t(n * d) * 4);
  const size_t y_off = L.add_out(size_t(n * d) * 4);
  const int64_t w_stride = W.rows == 1 ? 0 : int64_t(W.row_bytes());
  return run_staged(
      b, L, [&](char* h, char*) { std::memcpy(h + x_off, x, size_t(n * d) * 4); },
      [&](char* dv) {
        k_rmsnorm<<<unsigned(n), kThreads, 0, b->stream>>>(reinterpret_cast<const float*>(dv + x_off),
                                                           reinterpret_cast<float*>(dv + L.out_base() + y_off), W.data,
                                                           W.scale, W.dtype, w_stride, d, eps);
        TS_CUDA(cudaGetLastError());
        return 0;
      },
      [&](const char* h) { std::memcpy(y, h + y_off, size_t(n * d) * 4); });
}

}  // namespace tscuda
