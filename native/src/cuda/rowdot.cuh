// rowdot.cuh — the matrix-times-few-vectors kernels (projections, predictor):
// y[t][row] = dot(W[row], x[t]) for up to TOK tokens per pass. A block copies
// its tokens' x rows into shared memory once; each warp then streams whole
// weight rows (16-byte loads, R rows at a time) and reuses every weight byte
// for all TOK tokens. Weights are read once per pass of TOK tokens.
// Included by matmul.cu and predict.cu.
#pragma once
#include "common.cuh"

namespace tscuda {

// One matrix times n token rows. Several jobs go in one launch (grid.y).
struct RowDotJob {
  const void* W;         // [rows][ldw] stored elements
  const float* scale;    // [rows] (I8) or nullptr
  const float* x;        // token t's row: x + xrow(t) * xld
  const int* xrows;      // [n] or nullptr (identity)
  float* y;              // y[t * yld + row]           (store epilogue)
  uint64_t* mask;        // mask[t * words + w]        (mask epilogue)
  int* counts;           // counts[t] += bits set       (mask epilogue; zeroed before)
  int rows, cols, ldw, xld, n, yld, words, relu;
};

constexpr int kRowDotThreads = 256;

// Shared memory of one block: TOK token rows of ldw floats (+ 64 flag bytes per token for masks).
inline size_t rowdot_smem(int tok, int64_t ldw) { return size_t(tok) * size_t(ldw) * 4 + size_t(tok) * 64; }

template <int TOK>
__device__ __forceinline__ void load_tokens(const RowDotJob& j, int t0, int nt, float* xs) {
  for (int i = threadIdx.x; i < TOK * j.ldw; i += blockDim.x) {
    const int t = i / j.ldw, c = i - t * j.ldw;
    float v = 0.f;
    if (t < nt && c < j.cols) {
      const int row = j.xrows ? j.xrows[t0 + t] : t0 + t;
      v = j.x[size_t(row) * size_t(j.xld) + c];
    }
    xs[i] = v;
  }
}

// Store epilogue: grid (gx, jobs, token passes); warps take R rows at a time.
template <int DT, int TOK, int R, int U>
__global__ void __launch_bounds__(kRowDotThreads) k_rowdot(const RowDotJob* jobs) {
  pdl_wait();
  pdl_launch_next();
  const RowDotJob j = jobs[blockIdx.y];
  const int t0 = blockIdx.z * TOK;
  if (t0 >= j.n) return;
  const int nt = min(TOK, j.n - t0);
  extern __shared__ float4 smem_rowdot[];
  float* xs = reinterpret_cast<float*>(smem_rowdot);
  load_tokens<TOK>(j, t0, nt, xs);
  __syncthreads();
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
  const size_t rowb = size_t(j.ldw) * Vec<DT>::bytes;
  const int nch = int(rowb / 16);
  const uint64_t pol = l2_evict_first_policy();
  const char* W = static_cast<const char*>(j.W);
  for (int r0 = (blockIdx.x * nwarps + warp) * R; r0 < j.rows; r0 += gridDim.x * nwarps * R) {
    const char* rp[R];
#pragma unroll
    for (int r = 0; r < R; ++r) rp[r] = W + size_t(min(r0 + r, j.rows - 1)) * rowb;
    float acc[R][TOK];
#pragma unroll
    for (int r = 0; r < R; ++r)
#pragma unroll
      for (int t = 0; t < TOK; ++t) acc[r][t] = 0.f;
    warp_dot<DT, TOK, R, U>(rp, nch, xs, j.ldw, acc, lane, pol);
    warp_sum(acc);
#pragma unroll
    for (int r = 0; r < R; ++r) {
      const int row = r0 + r;
      if (row >= j.rows) break;
      const float sc = (DT == TS_I8) ? j.scale[row] : 1.f;
#pragma unroll
      for (int t = 0; t < TOK; ++t)
        if (t == lane && t < nt) {
          float v = acc[r][t] * sc;
          if (j.relu) v = fmaxf(v, 0.f);
          j.y[size_t(t0 + t) * size_t(j.yld) + row] = v;
        }
    }
  }
}

// Mask epilogue (predictor fc2): bit row of token t = dot > 0. A block owns
// whole 64-row mask words, so it writes each word once; its warps split the 64
// rows (64 / 8 warps = 8 rows each, R at a time).
template <int DT, int TOK, int R, int U>
__global__ void __launch_bounds__(kRowDotThreads) k_rowmask(const RowDotJob* jobs) {
  pdl_wait();
  pdl_launch_next();
  const RowDotJob j = jobs[blockIdx.y];
  const int t0 = blockIdx.z * TOK;
  if (t0 >= j.n) return;
  const int nt = min(TOK, j.n - t0);
  extern __shared__ float4 smem_rowdot[];
  float* xs = reinterpret_cast<float*>(smem_rowdot);
  unsigned char* flags = reinterpret_cast<unsigned char*>(xs + size_t(TOK) * j.ldw);  // [TOK][64]
  load_tokens<TOK>(j, t0, nt, xs);
  __syncthreads();
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
  const int per_warp = 64 / nwarps;  // 8
  const size_t rowb = size_t(j.ldw) * Vec<DT>::bytes;
  const int nch = int(rowb / 16);
  const uint64_t pol = l2_evict_first_policy();
  const char* W = static_cast<const char*>(j.W);
  for (int w = blockIdx.x; w < j.words; w += gridDim.x) {
    for (int k = 0; k < per_warp; k += R) {
      const int r0 = w * 64 + warp * per_warp + k;
      const char* rp[R];
#pragma unroll
      for (int r = 0; r < R; ++r) rp[r] = W + size_t(min(r0 + r, j.rows - 1)) * rowb;
      float acc[R][TOK];
#pragma unroll
      for (int r = 0; r < R; ++r)
#pragma unroll
        for (int t = 0; t < TOK; ++t) acc[r][t] = 0.f;
      if (r0 < j.rows) {  // warp-uniform
        warp_dot<DT, TOK, R, U>(rp, nch, xs, j.ldw, acc, lane, pol);
        warp_sum(acc);
      }
#pragma unroll
      for (int r = 0; r < R; ++r) {
        const int row = r0 + r;
        const float sc = (DT == TS_I8 && row < j.rows) ? j.scale[row] : 1.f;
#pragma unroll
        for (int t = 0; t < TOK; ++t)
          if (t == lane) flags[t * 64 + warp * per_warp + k + r] = (row < j.rows && acc[r][t] * sc > 0.f) ? 1 : 0;
      }
    }
    __syncthreads();
    if (threadIdx.x < nt) {
      const int t = threadIdx.x;
      uint64_t bits = 0;
      for (int i = 0; i < 64; ++i) bits |= uint64_t(flags[t * 64 + i]) << i;
      j.mask[size_t(t0 + t) * size_t(j.words) + w] = bits;
      atomicAdd(&j.counts[t0 + t], __popcll(bits));
    }
    __syncthreads();
  }
}

// Launch parameters for one group of same-dtype jobs.
struct RowDotPlan {
  int tok = 1, passes = 1, gx = 1;
  size_t smem = 0;
};

// The kernel instance for (dtype, tokens per pass); mask: the fc2 epilogue.
const void* rowdot_kernel(ts_dtype dt, int tok, bool mask);
// Choose tokens per pass and grid for jobs of max_n tokens, max_ldw columns
// (padded) and `units` of work (rows, or mask words) in total over the group.
int rowdot_plan(Backend* b, ts_dtype dt, bool mask, int64_t max_n, int64_t max_ldw, int64_t units, int64_t n_jobs,
                RowDotPlan* plan);
int rowdot_launch(Backend* b, ts_dtype dt, bool mask, const RowDotPlan& plan, const RowDotJob* d_jobs, int n_jobs);

}  // namespace tscuda
