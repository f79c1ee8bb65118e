// rope.cc — rotate-half RoPE (Hugging Face Llama/Mixtral convention):
// inv_freq_j = theta^(-2j/d), the pair (x_j, x_{j+d/2}) rotated by pos * inv_freq_j.
// Angles and the rotation are computed in double: positions reach 1e5 and a
// float angle would be off by whole milliradians there.
#include <cmath>
#include "cpu_backend.h"

namespace ts_cpu {

int rope(ts_backend* b, int64_t n, int64_t heads, int64_t head_dim, const int32_t* positions, double theta, float* x) {
  CpuBackend* cb = cpu(b);
  const int64_t half = head_dim / 2;
  double* cs = grow(cb->rope_cs, size_t(2 * half));
  for (int64_t i = 0; i < n; i++) {
    for (int64_t j = 0; j < half; j++) {
      const double inv_freq = std::pow(theta, -2.0 * double(j) / double(head_dim));
      const double angle = double(positions[i]) * inv_freq;
      cs[2 * j] = std::cos(angle);
      cs[2 * j + 1] = std::sin(angle);
    }
    for (int64_t h = 0; h < heads; h++) {
      float* v = x + (i * heads + h) * head_dim;
      for (int64_t j = 0; j < half; j++) {
        const double x1 = v[j], x2 = v[j + half], c = cs[2 * j], s = cs[2 * j + 1];
        v[j] = float(x1 * c - x2 * s);
        v[j + half] = float(x2 * c + x1 * s);
      }
    }
  }
  return 0;
}

}  // namespace ts_cpu
