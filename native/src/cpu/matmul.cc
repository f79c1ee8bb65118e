// matmul.cc — y[n, rows] = x[n, cols] . W^T for a stored weight of any dtype.
// Threads split the rows; each row pair is read from memory once and used
// for every token of the call (dot2 over groups of kDotTokens).
#include <algorithm>
#include "cpu_backend.h"

namespace ts_cpu {

// Tokens whose activations stay cache-resident while a thread sweeps its rows.
static constexpr int kTokenBlock = 16;

void mat_rows(const KernelSet* ks, const Mat& W, int64_t r0, int64_t r1, int nt, const float* const* x,
              float* const* y, int64_t y_base) {
  const Dot2Fn dot = ks->dot2[W.dtype];
  for (int tb = 0; tb < nt; tb += kTokenBlock) {
    const int nb = std::min(kTokenBlock, nt - tb);
    for (int64_t r = r0; r < r1; r += 2) {
      const bool pair = r + 1 < r1;
      const uint8_t* ra = W.row(r);
      const uint8_t* rb = pair ? W.row(r + 1) : ra;
      // start the streams of the next row pair, one line per 4 KiB page (see moe.cc)
      if (tb == 0 && r + 3 < r1)
        for (int64_t o = 0; o < 2 * W.stride; o += 4096) __builtin_prefetch(ra + 2 * W.stride + o, 0, 2);
      const float sa = W.scale(r), sb = pair ? W.scale(r + 1) : 0.f;
      for (int g = 0; g < nb; g += kDotTokens) {
        const int ng = std::min<int>(kDotTokens, nb - g);
        float oa[kDotTokens], ob[kDotTokens];
        dot(ra, rb, W.cols, x + tb + g, ng, oa, ob);
        for (int j = 0; j < ng; j++) {
          y[tb + g + j][r - y_base] = oa[j] * sa;
          if (pair) y[tb + g + j][r + 1 - y_base] = ob[j] * sb;
        }
      }
    }
  }
}

void in_layout(const Layout& l, int nt, int64_t n, const float** x, std::vector<float>& scratch) {
  if (!l.block) return;
  const int64_t np = padded(l, n);
  float* buf = grow(scratch, size_t(nt * np));
  for (int t = 0; t < nt; t++) {
    to_layout(l, x[t], n, buf + t * np);
    x[t] = buf + t * np;
  }
}

int matmul(ts_backend* b, const ts_weight* W, int64_t n, const float* x, float* y) {
  CpuBackend* cb = cpu(b);
  const Mat& m = static_cast<const CpuWeight*>(W)->m;
  const KernelSet* ks = cb->kernels;
  const float** xp = grow(cb->xptr, size_t(n));
  float** yp = grow(cb->yptr, size_t(n));
  for (int64_t t = 0; t < n; t++) {
    xp[t] = x + t * m.cols;
    yp[t] = y + t * m.rows;
  }
  in_layout(ks->layout[m.dtype], int(n), m.cols, xp, cb->xperm);
  const int threads = cb->pool.size();
  auto job = [&](int tid) {
    int64_t r0, r1;
    split_range(m.rows, threads, tid, 16, &r0, &r1);
    if (r0 < r1) mat_rows(ks, m, r0, r1, int(n), xp, yp);
  };
  cb->pool.run(job, double(n) * double(m.rows) * double(m.cols));
  return 0;
}

}  // namespace ts_cpu
