// moe.cc — the expert FFN (dReLU): expert(x, m) = w2 . (m * relu(w1 x) * relu(w3 x)).
//
// Per call, tokens are taken in blocks of up to kBlock. For a block we list the
// neurons to visit with, per neuron, the bits of the tokens whose mask has it:
//   SPARSE: the union of the block's masks; each listed neuron's rows are read
//           once and used for exactly the tokens that want it (gather-dot of
//           gate+up, then its down row into those tokens' outputs — skipped
//           when relu*relu is 0 for all of them);
//   DENSE_WITH_MASK: every neuron, computed for every token, masked after
//           (the baseline: reads the whole expert).
// Threads split the list by fixed neuron ranges (thread t: neurons
// [I*t/threads, I*(t+1)/threads)), not by list position: a token's partial sums
// then cover the same neurons whichever other tokens share its block, so its
// result does not depend on the batch (nor on timing). Each thread
// accumulates into its own f32 buffer [block, H], in the order its
// kernels want (see Layout in kernels.h). A second sweep sums the threads'
// buffers in thread order and adds weight * output into y (natural order).
// No allocation once the scratch has grown.
#include <algorithm>
#include <cstring>
#include "cpu_backend.h"

namespace ts_cpu {

static constexpr int kBlock = kAxpyTokens;  // tokens per block (token bits fit a uint32)
// Neurons per down-projection block: their down rows (<= 16 x 16 KiB at f32)
// stay in L2 between the dots that fetch them and axpy_rows.
static constexpr int kNeurons = 16;

int moe(ts_backend* b, ts_ffn_mode mode, int64_t n_rows, int64_t hidden, const float* x, int64_t n_calls,
        const ts_expert_call* calls, float* y, int32_t* active) {
  CpuBackend* cb = cpu(b);
  const KernelSet* ks = cb->kernels;
  const int threads = cb->pool.size();
  const bool dense = mode == TS_FFN_DENSE_WITH_MASK;
  std::memset(y, 0, size_t(n_rows * hidden) * sizeof(float));

  int64_t active_at = 0;
  for (int64_t ci = 0; ci < n_calls; ci++) {
    const ts_expert_call& c = calls[ci];
    const auto* e = static_cast<const CpuExpert*>(c.expert);
    const int64_t H = e->hidden, I = e->intermediate, words = ts_mask_words(I);
    const Dot2Fn dot2 = ks->dot2[e->dtype];
    const AxpyRowsFn axpy_rows = ks->axpy_rows[e->dtype];
    const bool i8 = e->dtype == TS_I8;
    const float* scales = i8 ? e->scales.data() : nullptr;
    // activations and accumulators in the order this variant's kernels want for the dtype
    const Layout L = ks->layout[e->dtype];
    const int64_t Hp = padded(L, H);
    for (auto& s : cb->scratch) {
      grow(s.acc, size_t(kBlock * Hp));
      grow(s.counts, size_t(kBlock));
    }
    uint32_t* list = grow(cb->moe_list, size_t(2 * I));
    const float** xp = grow(cb->xptr, size_t(kBlock));
    const float** accs = grow(cb->accs, size_t(threads));
    for (int th = 0; th < threads; th++) accs[th] = cb->scratch[size_t(th)].acc.data();

    for (int64_t tb = 0; tb < c.n; tb += kBlock) {
      const int nb = int(std::min<int64_t>(kBlock, c.n - tb));
      for (int t = 0; t < nb; t++) xp[t] = x + int64_t(c.rows[tb + t]) * hidden;
      in_layout(L, nb, H, xp, cb->xperm);
      const uint64_t* masks = c.masks + tb * words;

      // ---- the neurons to visit, each with its tokens' mask bits ----
      int64_t count = 0;
      for (int64_t w = 0; w < words; w++) {
        const uint64_t valid = (w == words - 1 && I % 64) ? (uint64_t(1) << (I % 64)) - 1 : ~uint64_t(0);
        uint64_t any = 0;
        for (int t = 0; t < nb; t++) any |= masks[t * words + w];
        any &= valid;
        if (dense) {
          for (int64_t bit = 0; bit < 64 && w * 64 + bit < I; bit++) {
            uint32_t tok = 0;
            for (int t = 0; t < nb; t++) tok |= uint32_t((masks[t * words + w] >> bit) & 1u) << t;
            list[2 * count] = uint32_t(w * 64 + bit);
            list[2 * count + 1] = tok;
            count++;
          }
          continue;
        }
        while (any) {
          const int bit = __builtin_ctzll(any);
          any &= any - 1;
          uint32_t tok = 0;
          for (int t = 0; t < nb; t++) tok |= uint32_t((masks[t * words + w] >> bit) & 1u) << t;
          list[2 * count] = uint32_t(w * 64 + bit);
          list[2 * count + 1] = tok;
          count++;
        }
      }

      // ---- gather-dot + down projection over each thread's share of the list ----
      // Neurons go in blocks of kNeurons: first the gate/up dots of each (which
      // also pulls its down row into cache: the three rows are one span), then
      // one axpy_rows of the block's down rows into the token accumulators.
      auto compute = [&](int tid) {
        ThreadScratch& s = cb->scratch[size_t(tid)];
        float* acc = s.acc.data();
        int32_t* counts = s.counts.data();
        std::memset(acc, 0, size_t(nb * Hp) * sizeof(float));
        std::fill(counts, counts + nb, 0);
        int64_t lo, hi;
        split_range(I, threads, tid, 1, &lo, &hi);
        // the list ascends by neuron: the first entry at or past neuron v, from entry `from`
        const auto first_at_least = [&](int64_t v, int64_t from) {
          int64_t a = from, z = count;
          while (a < z) {
            const int64_t mid = (a + z) / 2;
            if (int64_t(list[2 * mid]) < v) a = mid + 1; else z = mid;
          }
          return a;
        };
        const int64_t k0 = first_at_least(lo, 0), k1 = first_at_least(hi, k0);
        const float* tx[kBlock];
        int tt[kBlock];
        float g[kBlock], u[kBlock];
        float* ty[kBlock];
        for (int t = 0; t < nb; t++) ty[t] = acc + t * Hp;
        const void* down[kNeurons];
        float alpha[kNeurons * kBlock];  // [row of the block][token]
        const void* tdown[kNeurons];
        float talpha[kNeurons];
        for (int64_t kb = k0; kb < k1; kb += kNeurons) {
          const int64_t ke = std::min(k1, kb + kNeurons);
          int nr = 0;
          for (int64_t k = kb; k < ke; k++) {
            const int64_t i = list[2 * k];
            const uint32_t tok = list[2 * k + 1];
            const uint8_t* rows = e->neuron(i);
            // Touch one line in each 4 KiB page of the next listed neuron now:
            // the hardware prefetchers stop at page boundaries, and this starts
            // its streams while this neuron computes (+4-9% measured).
            if (k + 1 < k1) {
              const uint8_t* next = e->neuron(list[2 * (k + 1)]);
              for (int64_t o = 0; o < 3 * e->stride; o += 4096) __builtin_prefetch(next + o, 0, 2);
            }
            // tokens to compute: those that want the neuron (sparse) or all (dense)
            int m = 0;
            for (int t = 0; t < nb; t++)
              if (dense || ((tok >> t) & 1u)) {
                tt[m] = t;
                tx[m] = xp[t];
                m++;
              }
            for (int j = 0; j < m; j += kDotTokens)
              dot2(rows, rows + e->stride, H, tx + j, std::min<int>(kDotTokens, m - j), g + j, u + j);
            const float s1 = i8 ? scales[3 * i] : 1.f, s3 = i8 ? scales[3 * i + 1] : 1.f;
            const float s2 = i8 ? scales[3 * i + 2] : 1.f;
            float* al = alpha + nr * nb;
            std::fill(al, al + nb, 0.f);
            bool any = false;
            for (int j = 0; j < m; j++) {
              const int t = tt[j];
              const float gv = g[j] * s1, uv = u[j] * s3;
              const bool on = ((tok >> t) & 1u) && gv > 0.f && uv > 0.f;
              counts[t] += on;
              const float a = on ? gv * uv : 0.f;
              al[t] = a * s2;
              any = any || a != 0.f;
            }
            // sparse: a neuron whose relus are 0 for all its tokens never reads its down row
            if (dense || any) down[nr++] = rows + 2 * e->stride;
          }
          if (nr == 0) continue;
          if (dense || nb == 1) {
            axpy_rows(down, nr, H, alpha, nb, ty, nb);
            continue;
          }
          // sparse, several tokens: each token takes only the rows it uses
          // (most of a block's alphas are 0 when masks differ per token)
          for (int t = 0; t < nb; t++) {
            int n_t = 0;
            for (int j = 0; j < nr; j++)
              if (alpha[j * nb + t] != 0.f) {
                tdown[n_t] = down[j];
                talpha[n_t] = alpha[j * nb + t];
                n_t++;
              }
            if (n_t) axpy_rows(tdown, n_t, H, talpha, 1, ty + t, 1);
          }
        }
      };
      // dense: every neuron for every token; sparse: the listed neurons (3 rows each) for their tokens
      cb->pool.run(compute, 3.0 * double(count) * double(H) * double(dense ? nb : 1));

      // ---- y[row] += weight * (sum of the threads' accumulators) ----
      auto reduce = [&](int tid) {
        int64_t h0, h1;
        split_range(H, threads, tid, 64, &h0, &h1);  // whole layout blocks (16, 32 or 64)
        for (int t = 0; t < nb; t++) {
          float* yr = y + int64_t(c.rows[tb + t]) * hidden;
          const float wt = c.weight[tb + t];
          for_each_position(L, h0, h1, [&](int64_t h, int64_t at) {
            float sum = accs[0][t * Hp + at];
            for (int th = 1; th < threads; th++) sum += accs[th][t * Hp + at];
            yr[h] += wt * sum;
          });
        }
      };
      cb->pool.run(reduce, double(nb) * double(H) * double(threads));

      if (active)
        for (int t = 0; t < nb; t++) {
          int32_t n_on = 0;
          for (int th = 0; th < threads; th++) n_on += cb->scratch[size_t(th)].counts[size_t(t)];
          active[active_at + tb + t] = n_on;
        }
    }
    active_at += c.n;
  }
  return 0;
}

}  // namespace ts_cpu
