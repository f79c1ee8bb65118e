// matmul.cu — y[n, rows] = x[n, cols] . W^T (the projections; also the
// predictor's fc1 and, with the mask epilogue, its fc2). The kernels are in
// rowdot.cuh; this file instantiates them and plans their launches.
#include <algorithm>
#include <cstring>
#include <string>
#include "rowdot.cuh"

namespace tscuda {

namespace {

// Rows per warp (R) and 16-byte chunks per row in flight (U) for TOK tokens:
// enough loads in flight to cover memory latency, few enough registers.
// The mask kernel's warps own 8 rows of a 64-row word: R = 4 takes them in two steps.
template <int TOK, bool MASK>
struct RowDotShape {
  static constexpr int R = MASK && TOK <= 2 ? 4 : 2;
  static constexpr int U = TOK <= 2 ? (MASK ? 4 : 8) : TOK == 4 ? 4 : 2;
};

template <int DT, int TOK>
const void* pick(bool mask) {
  using M = RowDotShape<TOK, true>;
  using S = RowDotShape<TOK, false>;
  return mask ? reinterpret_cast<const void*>(&k_rowmask<DT, TOK, M::R, M::U>)
              : reinterpret_cast<const void*>(&k_rowdot<DT, TOK, S::R, S::U>);
}
template <int DT>
const void* pick_tok(int tok, bool mask) {
  switch (tok) {
    case 1: return pick<DT, 1>(mask);
    case 2: return pick<DT, 2>(mask);
    case 4: return pick<DT, 4>(mask);
    default: return pick<DT, 8>(mask);
  }
}

}  // namespace

const void* rowdot_kernel(ts_dtype dt, int tok, bool mask) {
  switch (dt) {
    case TS_F32: return pick_tok<TS_F32>(tok, mask);
    case TS_F16: return pick_tok<TS_F16>(tok, mask);
    case TS_BF16: return pick_tok<TS_BF16>(tok, mask);
    default: return pick_tok<TS_I8>(tok, mask);
  }
}

int rowdot_plan(Backend* b, ts_dtype dt, bool mask, int64_t max_n, int64_t max_ldw, int64_t units, int64_t n_jobs,
                RowDotPlan* plan) {
  int tok = tokens_per_pass(max_n);
  while (tok > 1 && rowdot_smem(tok, max_ldw) > b->smem_optin) tok /= 2;
  if (rowdot_smem(tok, max_ldw) > b->smem_optin)
    return ts_fail("cuda: a matrix with " + std::to_string(max_ldw) + " columns is too wide for the CUDA kernels (x row " +
                   "must fit in shared memory)");
  plan->tok = tok;
  plan->passes = int((max_n + tok - 1) / tok);
  plan->smem = rowdot_smem(tok, max_ldw);
  int per_sm = 1;
  TS_TRY(prepare_kernel(b, rowdot_kernel(dt, tok, mask), kRowDotThreads, plan->smem, &per_sm));
  // one wave over the SMs, shared by the jobs and token passes; never more
  // blocks than the work has (rows in warps of R, or mask words)
  const int64_t slots = int64_t(b->sms) * per_sm;
  const int64_t work_blocks = mask ? units : (units + 2 * (kRowDotThreads / 32) - 1) / (2 * (kRowDotThreads / 32));
  int64_t gx = std::max<int64_t>(1, slots / std::max<int64_t>(1, n_jobs * plan->passes));
  gx = std::min(gx, std::max<int64_t>(1, work_blocks));
  plan->gx = int(std::min<int64_t>(gx, 65535));
  return 0;
}

int rowdot_launch(Backend* b, ts_dtype dt, bool mask, const RowDotPlan& plan, const RowDotJob* d_jobs, int n_jobs) {
  if (n_jobs > 65535 || plan.passes > 65535) return ts_fail("cuda: too many jobs or tokens in one call");
  auto k = reinterpret_cast<void (*)(const RowDotJob*)>(const_cast<void*>(rowdot_kernel(dt, plan.tok, mask)));
  TS_CUDA(launch(b, true, k, dim3(unsigned(plan.gx), unsigned(n_jobs), unsigned(plan.passes)), dim3(kRowDotThreads),
                 plan.smem, d_jobs));
  return 0;
}

int matmul(ts_backend* tb, const ts_weight* tw, int64_t n, const float* x, float* y) {
  Backend* b = as_cuda(tb);
  TS_TRY(b->activate());
  const Matrix& W = static_cast<const Weight*>(tw)->m;
  if (n > int64_t(65535) * 8) return ts_fail("ts_matmul: n = " + std::to_string(n) + " is too many rows for one CUDA call");
  Layout L;
  const size_t x_off = L.add_in(size_t(n * W.cols) * 4);
  const size_t job_off = L.add_in(sizeof(RowDotJob));
  const size_t y_off = L.add_out(size_t(n * W.rows) * 4);
  RowDotPlan plan;
  TS_TRY(rowdot_plan(b, W.dtype, false, n, W.ld, W.rows, 1, &plan));
  return run_staged(
      b, L,
      [&](char* h, char* d) {
        std::memcpy(h + x_off, x, size_t(n * W.cols) * 4);
        RowDotJob j = {};
        j.W = W.data;
        j.scale = W.scale;
        j.x = reinterpret_cast<const float*>(d + x_off);
        j.y = reinterpret_cast<float*>(d + L.out_base() + y_off);
        j.rows = int(W.rows);
        j.cols = int(W.cols);
        j.ldw = int(W.ld);
        j.xld = int(W.cols);
        j.n = int(n);
        j.yld = int(W.rows);
        std::memcpy(h + job_off, &j, sizeof j);
      },
      [&](char* d) { return rowdot_launch(b, W.dtype, false, plan, reinterpret_cast<const RowDotJob*>(d + job_off), 1); },
      [&](const char* h) { std::memcpy(y, h + y_off, size_t(n * W.rows) * 4); });
}

}  // namespace tscuda
