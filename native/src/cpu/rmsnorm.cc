// rmsnorm.cc — y = x / sqrt(mean(x^2) + eps) * w (Llama RMSNorm; the sum of
// squares in double so the result does not depend on summation order).
#include <cmath>
#include "../dtype.h"
#include "cpu_backend.h"

namespace ts_cpu {

int rmsnorm(ts_backend* b, const ts_weight* w, int64_t n, int64_t d, const float* x, float eps, float* y) {
  (void)b;
  const Mat& m = static_cast<const CpuWeight*>(w)->m;
  // the weight is [1, d] (or [d, 1]); read it as d values
  auto weight_at = [&](int64_t k) -> float {
    int64_t r = m.rows == 1 ? 0 : k, c = m.rows == 1 ? k : 0;
    return ts::load_as_f32(m.row(r), m.dtype, c) * m.scale(r);
  };
  for (int64_t i = 0; i < n; i++) {
    const float* xi = x + i * d;
    float* yi = y + i * d;
    double ss = 0;
    for (int64_t k = 0; k < d; k++) ss += double(xi[k]) * xi[k];
    const float inv = float(1.0 / std::sqrt(ss / double(d) + double(eps)));
    for (int64_t k = 0; k < d; k++) yi[k] = weight_at(k) * (xi[k] * inv);
  }
  return 0;
}

}  // namespace ts_cpu
