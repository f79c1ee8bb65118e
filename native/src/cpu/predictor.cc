// predictor.cc — the activation predictor: mask bit i = (fc2 . relu(fc1 . x))_i > 0.
// Two parallel sweeps per call: fc1 (threads split its r rows), then fc2
// (threads split the I rows in whole 64-bit mask words, so each thread writes
// its own words). Both matrices are read once per call for all its tokens.
#include <algorithm>
#include <cstring>
#include "cpu_backend.h"

namespace ts_cpu {

int predict_many(ts_backend* b, int64_t n_rows, int64_t hidden, const float* x, int64_t n_calls,
                 const ts_predict_call* calls) {
  (void)n_rows;
  (void)hidden;
  CpuBackend* cb = cpu(b);
  const KernelSet* ks = cb->kernels;
  const int threads = cb->pool.size();
  for (int64_t ci = 0; ci < n_calls; ci++) {
    const ts_predict_call& c = calls[ci];
    if (c.n == 0) continue;
    const auto* p = static_cast<const CpuPredictor*>(c.predictor);
    const int nt = int(c.n);
    const int64_t R = p->rank, I = p->intermediate, words = ts_mask_words(I);
    const float** xp = grow(cb->xptr, size_t(2 * nt));
    const float** hp_const = xp + nt;
    float** hp = grow(cb->yptr, size_t(nt));
    float* hidden_buf = grow(cb->pred_hidden, size_t(nt * R));
    for (int t = 0; t < nt; t++) {
      xp[t] = x + int64_t(c.rows[t]) * p->hidden;
      hp[t] = hidden_buf + t * R;
      hp_const[t] = hp[t];
    }
    for (auto& s : cb->scratch) grow(s.logits, size_t(nt * 64));
    in_layout(ks->layout[p->fc1.dtype], nt, p->hidden, xp, cb->xperm);

    auto fc1 = [&](int tid) {
      int64_t r0, r1;
      split_range(R, threads, tid, 16, &r0, &r1);
      if (r0 >= r1) return;
      mat_rows(ks, p->fc1, r0, r1, nt, xp, hp);
      for (int t = 0; t < nt; t++)
        for (int64_t r = r0; r < r1; r++) hp[t][r] = std::max(hp[t][r], 0.f);
    };
    cb->pool.run(fc1, double(nt) * double(R) * double(p->hidden));

    in_layout(ks->layout[p->fc2.dtype], nt, R, hp_const, cb->hperm);  // fc2 reads relu(h)

    auto fc2 = [&](int tid) {
      int64_t w0, w1;
      split_range(words, threads, tid, 1, &w0, &w1);
      float* logits = cb->scratch[size_t(tid)].logits.data();
      float* lp[64];
      for (int64_t w = w0; w < w1; w++) {
        const int64_t r0 = w * 64, r1 = std::min(I, r0 + 64);
        for (int t = 0; t < nt; t += 64) {
          const int nb = std::min(64, nt - t);
          for (int j = 0; j < nb; j++) lp[j] = logits + (t + j) * 64;
          mat_rows(ks, p->fc2, r0, r1, nb, hp_const + t, lp, r0);
        }
        for (int t = 0; t < nt; t++) {
          const float* l = logits + t * 64;
          uint64_t bits = 0;
          for (int64_t r = 0; r < r1 - r0; r++) bits |= uint64_t(l[r] > 0.f) << r;
          c.masks[t * words + w] = bits;
        }
      }
    };
    cb->pool.run(fc2, double(nt) * double(I) * double(R));

    if (c.counts)
      for (int t = 0; t < nt; t++) {
        int32_t cnt = 0;
        for (int64_t w = 0; w < words; w++) cnt += __builtin_popcountll(c.masks[t * words + w]);
        c.counts[t] = cnt;
      }
  }
  return 0;
}

}  // namespace ts_cpu
