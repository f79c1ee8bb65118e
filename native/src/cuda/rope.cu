// rope.cu — rotate-half RoPE in place on x[n, heads, head_dim]: the pair
// (x_j, x_{j+d/2}) is rotated by pos * theta^(-2j/d). Angles and the rotation
// in double, as on the CPU: positions reach 1e5, where a float angle is off by
// milliradians. One thread per (row, head, pair); the op is tiny next to PCIe.
#include <algorithm>
#include <cstring>
#include "common.cuh"

namespace tscuda {
namespace {

__global__ void k_rope(float* x, const int32_t* positions, int64_t n, int64_t heads, int64_t head_dim, double theta) {
  const int64_t half = head_dim / 2;
  const int64_t total = n * heads * half;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t j = i % half, rh = i / half, row = rh / heads;
    const double inv_freq = pow(theta, -2.0 * double(j) / double(head_dim));
    double s, c;
    sincos(double(positions[row]) * inv_freq, &s, &c);
    float* v = x + rh * head_dim;
    const double x1 = v[j], x2 = v[j + half];
    v[j] = float(x1 * c - x2 * s);
    v[j + half] = float(x2 * c + x1 * s);
  }
}

}  // namespace

int rope(ts_backend* tb, int64_t n, int64_t heads, int64_t head_dim, const int32_t* positions, double theta, float* x) {
  Backend* b = as_cuda(tb);
  TS_TRY(b->activate());
  const size_t xb = size_t(n * heads * head_dim) * 4;
  Layout L;
  const size_t x_off = L.add_in(xb);
  const size_t p_off = L.add_in(size_t(n) * 4);
  const size_t o_off = L.add_out(xb);
  return run_staged(
      b, L,
      [&](char* h, char*) {
        std::memcpy(h + x_off, x, xb);
        std::memcpy(h + p_off, positions, size_t(n) * 4);
      },
      [&](char* d) {
        float* xd = reinterpret_cast<float*>(d + x_off);
        const int64_t total = n * heads * (head_dim / 2);
        const unsigned grid = unsigned(std::min<int64_t>((total + 255) / 256, int64_t(b->sms) * 8));
        k_rope<<<grid, 256, 0, b->stream>>>(xd, reinterpret_cast<const int32_t*>(d + p_off), n, heads, head_dim, theta);
        TS_CUDA(cudaGetLastError());
        TS_CUDA(cudaMemcpyAsync(d + L.out_base() + o_off, xd, xb, cudaMemcpyDeviceToDevice, b->stream));
        return 0;
      },
      [&](const char* h) { std::memcpy(x, h + o_off, xb); });
}

}  // namespace tscuda
