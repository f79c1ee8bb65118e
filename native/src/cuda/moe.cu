// moe.cu — the dReLU expert FFN over a batch: expert(x, m) = w2 . (m * relu(w1 x) * relu(w3 x)).
//
// Three kernels per call (every expert of the call in the same launches):
//   gate_up  the union of the call's token masks (made on the host from the
//            masks it uploads anyway) is compacted on the device into a list of
//            neurons; each warp takes list entries and does the gathered dot of
//            that neuron's two adjacent rows (w1_i, w3_i) against every token of
//            the pass, so a row wanted by several tokens is read once. Output:
//            h[k][t] = mask_t(i) * relu(g) * relu(u) and the active count. While
//            it is at it, the warp prefetches the neuron's down row into L2 when
//            some token uses it (the down kernel then reads from L2).
//   down     the axpy over the active rows of transposed w2: blocks own a
//            stripe of columns and a slice of the list, skip rows whose h is 0
//            for every token, and write one partial sum per (slice, token).
//   combine  e = sum of the slices (the expert's output, in f32), then
//            y[row] += weight * e in call order; also the active counts.
// DENSE_WITH_MASK is the same path with the list = every neuron and no skip.
// Batches of 1-2 tokens (one dtype, hidden <= 4096) take one launch instead:
// sparse ones the streaming kernel (k_ffn_stream, moe_stream.cuh: rows copied
// asynchronously into a ring of shared-memory slots, no grid barrier; Tuning::stream,
// TS_CUDA_STREAM), dense-with-mask ones the fused kernel (Tuning::fused,
// TS_CUDA_FUSED) (k_ffn_fused): each block does gate_up for its slice of the list,
// keeps h in shared memory, then the axpy of those neurons' whole down rows
// (each thread owns fixed columns, so a row is read contiguously by the block)
// into one partial per (block, token); a grid barrier (every block is
// co-resident: the grid is sized from the occupancy) and a fixed-order reduce
// of the partials finish it. No float atomics: the result is bitwise repeatable.
// Kernels are chained with programmatic dependent launch (sm_90+): each one is
// launched while the previous one runs, reads what the host uploaded (call
// descriptors, x, the mask unions) and compacts its list, and only then waits
// for the previous kernel's results. Rule: before pdl_wait() a kernel reads
// nothing any kernel writes, and writes nothing (the streaming kernel also
// writes its own launch's reduce scratch, which no other launch touches).
#include <algorithm>
#include <cmath>
#include <cstring>
#include <new>
#include <string>
#include <type_traits>
#include <vector>
#include "common.cuh"

namespace tscuda {

// One expert call, as the kernels see it.
struct MoeCall {
  const char* w13;         // [2I][ldH]
  const float* s13;        // [2I] I8 scales
  const char* w2t;         // [I][ldH]
  const float* s2;         // [I]
  const uint64_t* masks;   // [n][W]
  const uint64_t* uni;     // [W] union of the masks (bits < I only)
  const int* rows;         // [n] rows of x
  const uint32_t* slist;   // streaming kernel: [K] neuron | token bits << 24, made on the host
  long long list_off;      // this call's first entry in idx
  long long hv_off;        // ... and in hv (floats)
  int I, W, n, npad;       // npad: h row length (n rounded up to the token pass, >= 4)
  int K;                   // list length (popcount of the union; I when dense)
  int gx;                  // gate_up blocks along x for this call
  int q0;                  // index of (this call, token 0) among all (call, token) pairs
  int prefetch;            // gate_up prefetches active down rows into L2
};

struct MoeArgs {
  const MoeCall* calls;  // this launch's calls (grid.y)
  const float* x;        // [n_rows][ldH]
  int* idx;              // list: neuron of entry k
  float* hv;             // h[k][t]
  int* blk_active;       // [pairs][gxs] active counts of each gate_up block
  float* partials;       // [pairs][S][ldH]
  int ldH, S, gxs, dense;
};

struct MoeContrib {
  int q;      // (call, token) pair
  float w;    // routing weight
  int gx;     // gate_up blocks that counted its active neurons
  int pad;
};

struct MoeCombineArgs {
  const int* row_start;   // [n_rows + 1] into contribs (call order within a row)
  const MoeContrib* contribs;
  const float* partials;
  const int* blk_active;
  float* y;               // [n_rows][H]
  int* active;            // [pairs]
  int H, ldH, S, gxs;
};

struct MoeFusedArgs {
  MoeArgs a;
  MoeCombineArgs c;
  unsigned* bar;          // [2] grid barrier: arrivals (0 between uses), generation
  int n_rows, pairs, max_contrib;
};

}  // namespace tscuda
#include "moe_stream.cuh"
namespace tscuda {

namespace {

constexpr int kThreads = 256;       // per block of gate_up and down
constexpr int kCombineThreads = 128;
constexpr int kMaxList = 4096;      // list entries one gate_up block may hold
constexpr int kMaxSplits = 32;

// (neurons per warp R, 16-byte chunks per row in flight U) of gate_up for TOK tokens
template <int TOK>
struct GateUpShape {
  static constexpr int R = TOK == 8 ? 2 : 1;
  static constexpr int U = TOK <= 2 ? 8 : TOK == 4 ? 4 : 2;
};
// down: elements per lane load (16 bytes; 8 bytes of I8) and rows in flight per warp
template <int DT>
struct DownVec {
  static constexpr int n = DT == TS_F32 ? 4 : 8;
};
template <int TOK>
struct DownShape {
  static constexpr int U = TOK <= 2 ? 8 : TOK == 4 ? 4 : 2;
};

// Block-wide: list[0..cnt) = neurons at positions [pos0, pos0+cnt) of the
// ascending list of set bits of uni[0..W).
__device__ void compact_list(const uint64_t* uni, int W, int pos0, int cnt, int* list, int* s_warp) {
  const int tid = threadIdx.x, nth = blockDim.x, lane = tid & 31, warp = tid >> 5;
  const int per = (W + nth - 1) / nth;
  const int w0 = min(W, tid * per), w1 = min(W, w0 + per);
  int mine = 0;
  for (int w = w0; w < w1; ++w) mine += __popcll(uni[w]);
  int incl = mine;
#pragma unroll
  for (int o = 1; o < 32; o <<= 1) {
    const int v = __shfl_up_sync(0xffffffffu, incl, o);
    if (lane >= o) incl += v;
  }
  if (lane == 31) s_warp[warp] = incl;
  __syncthreads();
  if (warp == 0) {
    int v = lane < (nth >> 5) ? s_warp[lane] : 0;
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
      const int u = __shfl_up_sync(0xffffffffu, v, o);
      if (lane >= o) v += u;
    }
    s_warp[lane] = v;  // inclusive over warps
  }
  __syncthreads();
  int pos = (warp ? s_warp[warp - 1] : 0) + incl - mine;
  const int end = pos0 + cnt;
  for (int w = w0; w < w1 && pos < end; ++w) {
    uint64_t u = uni[w];
    const int c = __popcll(u);
    if (pos + c <= pos0) {
      pos += c;
      continue;
    }
    while (u) {
      const int bit = __ffsll(static_cast<long long>(u)) - 1;
      u &= u - 1;
      if (pos >= pos0 && pos < end) list[pos - pos0] = w * 64 + bit;
      ++pos;
    }
  }
}

template <int DT, int TOK>
__global__ void __launch_bounds__(kThreads) k_gate_up(MoeArgs a) {
  constexpr int R = GateUpShape<TOK>::R, U = GateUpShape<TOK>::U;
  const MoeCall d = a.calls[blockIdx.y];
  const int t0 = blockIdx.z * TOK;
  if (t0 >= d.n || int(blockIdx.x) >= d.gx) return;
  const int nt = min(TOK, d.n - t0);
  const int ldH = a.ldH;
  const int P = (d.K + d.gx - 1) / d.gx;
  const int pos0 = blockIdx.x * P;
  const int cnt = max(0, min(P, d.K - pos0));

  extern __shared__ float4 smem_moe[];
  float* xs = reinterpret_cast<float*>(smem_moe);  // [TOK][ldH]
  int* list = reinterpret_cast<int*>(xs + size_t(TOK) * ldH);
  __shared__ int s_warp[32];
  __shared__ int s_act[TOK];
  if (threadIdx.x < TOK) s_act[threadIdx.x] = 0;

  // the pass's token rows; rows past the call's end are zero
  const int q4 = ldH / 4;
  for (int i = threadIdx.x; i < TOK * q4; i += blockDim.x) {
    const int t = i / q4, c = i - t * q4;
    float4 v = make_float4(0.f, 0.f, 0.f, 0.f);
    if (t < nt) v = reinterpret_cast<const float4*>(a.x + size_t(d.rows[t0 + t]) * ldH)[c];
    reinterpret_cast<float4*>(xs)[i] = v;
  }
  if (!a.dense && cnt > 0) compact_list(d.uni, d.W, pos0, cnt, list, s_warp);
  // Everything above reads only what the host uploaded (no kernel writes it),
  // so it may overlap the previous kernel; from here on we write scratch.
  pdl_launch_next();
  pdl_wait();
  __syncthreads();

  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
  const size_t rowb = size_t(ldH) * Vec<DT>::bytes;
  const int nch = int(rowb / 16);
  const uint64_t pol = l2_evict_first_policy();
  const uint64_t* mrow = d.masks + size_t(t0 + min(lane, nt - 1)) * d.W;  // this lane's token's mask
  int act = 0;
  for (int e = warp * R; e < cnt; e += nwarps * R) {
    int nr[R];
    const char* rp[2 * R];
#pragma unroll
    for (int r = 0; r < R; ++r) {
      const int ee = min(e + r, cnt - 1);
      nr[r] = a.dense ? pos0 + ee : list[ee];
      rp[2 * r] = d.w13 + size_t(2 * nr[r]) * rowb;
      rp[2 * r + 1] = rp[2 * r] + rowb;
    }
    float acc[2 * R][TOK];
#pragma unroll
    for (int r = 0; r < 2 * R; ++r)
#pragma unroll
      for (int t = 0; t < TOK; ++t) acc[r][t] = 0.f;
    warp_dot<DT, TOK, 2 * R, U>(rp, nch, xs, ldH, acc, lane, pol);
    warp_sum(acc);
#pragma unroll
    for (int r = 0; r < R; ++r) {
      if (e + r >= cnt) break;  // warp-uniform
      const int i = nr[r];
      float sg = 1.f, su = 1.f;
      if (DT == TS_I8) {
        sg = d.s13[2 * i];
        su = d.s13[2 * i + 1];
      }
      // lane t handles token t
      float h = 0.f;
      bool on = false;
      const bool bit = lane < nt && ((mrow[i >> 6] >> (i & 63)) & 1ull);
#pragma unroll
      for (int t = 0; t < TOK; ++t)
        if (t == lane) {
          const float g = acc[2 * r][t] * sg, u = acc[2 * r + 1][t] * su;
          on = bit && g > 0.f && u > 0.f;
          h = on ? g * u : 0.f;
        }
      act += on;
      const long long pos = pos0 + e + r;
      if (lane < TOK && t0 + lane < d.npad) a.hv[d.hv_off + pos * d.npad + t0 + lane] = h;
      if (!a.dense && blockIdx.z == 0 && lane == 0) a.idx[d.list_off + pos] = i;
      if (d.prefetch && __any_sync(0xffffffffu, on)) {
        const char* down = d.w2t + size_t(i) * rowb;
        for (size_t o = size_t(lane) * 128; o < rowb; o += 32 * 128) prefetch_l2(down + o);
      }
    }
  }
  if (lane < TOK && act) atomicAdd(&s_act[lane], act);
  __syncthreads();
  if (int(threadIdx.x) < nt) a.blk_active[size_t(d.q0 + t0 + threadIdx.x) * a.gxs + blockIdx.x] = s_act[threadIdx.x];
}

template <int DT, int TOK>
__global__ void __launch_bounds__(kThreads) k_down(MoeArgs a) {
  constexpr int LV = DownVec<DT>::n, U = DownShape<TOK>::U;
  constexpr int LB = LV * Vec<DT>::bytes;  // bytes per lane load: 16, or 8 for I8
  const MoeCall d = a.calls[blockIdx.y];  // uploaded by the host: safe before the wait
  const int t0 = blockIdx.z * TOK;
  if (t0 >= d.n) return;
  pdl_launch_next();
  pdl_wait();  // idx, hv: written by gate_up
  const int nt = min(TOK, d.n - t0);
  const int nch = a.ldH / LV;
  const int stripes = (nch + 31) / 32;
  const int stripe = blockIdx.x % stripes, s = blockIdx.x / stripes;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
  const int c = stripe * 32 + lane;
  const bool cok = c < nch;
  const int kb = int((long long)d.K * s / a.S), ke = int((long long)d.K * (s + 1) / a.S);
  const size_t rowb = size_t(a.ldH) * Vec<DT>::bytes;
  const uint64_t pol = l2_evict_first_policy();
  float acc[TOK][LV];
#pragma unroll
  for (int t = 0; t < TOK; ++t)
#pragma unroll
    for (int i = 0; i < LV; ++i) acc[t][i] = 0.f;

  for (int k = kb + warp; k < ke; k += nwarps * U) {
    int nrn[U];
    float h[U][TOK];
    bool use[U];
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int kk = k + u * nwarps;
      const bool ok = kk < ke;
      nrn[u] = !ok ? 0 : a.dense ? kk : a.idx[d.list_off + kk];
      bool any = false;
      if (ok) {
        const float4* hp = reinterpret_cast<const float4*>(a.hv + d.hv_off + (long long)kk * d.npad + t0);
#pragma unroll
        for (int q = 0; q < (TOK + 3) / 4; ++q) {
          const float4 v = hp[q];
          const float vv[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
          for (int i = 0; i < 4; ++i)
            if (4 * q + i < TOK) h[u][4 * q + i] = vv[i];
        }
#pragma unroll
        for (int t = 0; t < TOK; ++t) any |= h[u][t] != 0.f;
      } else {
#pragma unroll
        for (int t = 0; t < TOK; ++t) h[u][t] = 0.f;
      }
      use[u] = ok && (a.dense || any);
    }
    float f[U][LV];
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const char* p = d.w2t + size_t(nrn[u]) * rowb + size_t(c) * LB;
      if constexpr (DT == TS_I8) {
        const uint2 w = (use[u] && cok) ? ld_stream8(p, pol) : make_uint2(0, 0);
        unpack_i8x4(w.x, f[u]);
        unpack_i8x4(w.y, f[u] + 4);
      } else {
        const uint4 w = (use[u] && cok) ? ld_stream16(p, pol) : make_uint4(0, 0, 0, 0);
        unpack16<DT>(w, f[u]);
      }
    }
#pragma unroll
    for (int u = 0; u < U; ++u) {
      if (!use[u]) continue;
      const float sc = (DT == TS_I8) ? d.s2[nrn[u]] : 1.f;
#pragma unroll
      for (int t = 0; t < TOK; ++t) {
        const float hs = h[u][t] * sc;
#pragma unroll
        for (int i = 0; i < LV; ++i) acc[t][i] = fmaf(hs, f[u][i], acc[t][i]);
      }
    }
  }

  // sum the warps' accumulators in shared memory ([t][i][lane]: no bank conflicts)
  __shared__ float red[TOK * LV * 32];
  for (int w = 0; w < nwarps; ++w) {
    if (warp == w) {
#pragma unroll
      for (int t = 0; t < TOK; ++t)
#pragma unroll
        for (int i = 0; i < LV; ++i) {
          float* p = &red[(t * LV + i) * 32 + lane];
          *p = (w == 0 ? 0.f : *p) + acc[t][i];
        }
    }
    __syncthreads();
  }
  for (int e = threadIdx.x; e < nt * LV * 32; e += blockDim.x) {
    const int t = e / (LV * 32), r = e - t * LV * 32, i = r / 32, ln = r - i * 32;
    const int col = (stripe * 32 + ln) * LV + i;
    if (col < a.ldH) a.partials[(size_t(d.q0 + t0 + t) * a.S + s) * a.ldH + col] = red[e];
  }
}

__global__ void __launch_bounds__(kCombineThreads) k_combine(MoeCombineArgs a) {
  const int r = blockIdx.y;
  const int cs = a.row_start[r], ce = a.row_start[r + 1];  // uploaded by the host
  pdl_launch_next();
  pdl_wait();  // partials, blk_active: written by down / gate_up
  const int c0 = (blockIdx.x * blockDim.x + threadIdx.x) * 4;
  if (c0 < a.ldH) {
    float y[4] = {0.f, 0.f, 0.f, 0.f};
    for (int i = cs; i < ce; ++i) {
      const MoeContrib ct = a.contribs[i];
      const float* p = a.partials + size_t(ct.q) * a.S * a.ldH + c0;
      float4 e = *reinterpret_cast<const float4*>(p);
      for (int s = 1; s < a.S; ++s) {
        const float4 v = *reinterpret_cast<const float4*>(p + size_t(s) * a.ldH);
        e.x += v.x;
        e.y += v.y;
        e.z += v.z;
        e.w += v.w;
      }
      y[0] += ct.w * e.x;
      y[1] += ct.w * e.y;
      y[2] += ct.w * e.z;
      y[3] += ct.w * e.w;
    }
    float* yr = a.y + size_t(r) * a.H;
#pragma unroll
    for (int i = 0; i < 4; ++i)
      if (c0 + i < a.H) yr[c0 + i] = y[i];
  }
  if (blockIdx.x == 0)
    for (int i = cs + threadIdx.x; i < ce; i += blockDim.x) {
      const MoeContrib ct = a.contribs[i];
      int sum = 0;
      for (int x = 0; x < ct.gx; ++x) sum += a.blk_active[size_t(ct.q) * a.gxs + x];
      a.active[ct.q] = sum;
    }
}

// ------------------------------------------------------------ fused (batch <= 2)

// down chunks (DownVec elements each) per thread of the fused kernel: 256 * CJ * LV = 4096 columns
template <int DT>
struct FusedCJ {
  static constexpr int n = DT == TS_F32 ? 4 : 2;
};
constexpr int kFusedMaxLd = 4096;
constexpr int kFusedDownRows = 4;  // down rows in flight per thread

// All blocks of the grid meet here; the grid must be co-resident. The arrival
// counter is left at 0 for the next use; the generation only ever grows.
__device__ __forceinline__ void grid_barrier(unsigned* bar, unsigned nblocks) {
  __threadfence();
  __syncthreads();
  if (threadIdx.x == 0) {
    volatile unsigned* vgen = bar + 1;
    const unsigned gen = *vgen;
    __threadfence();
    const unsigned t = atomicAdd(bar, 1u);
    if (t == nblocks - 1) {
      atomicExch(bar, 0u);
      __threadfence();
      atomicAdd(bar + 1, 1u);
    } else {
      while (*vgen == gen) __nanosleep(40);
    }
    __threadfence();
  }
  __syncthreads();
}

template <int DT, int TOK>
__global__ void __launch_bounds__(kThreads, 2) k_ffn_fused(MoeFusedArgs fa) {
  constexpr int U = GateUpShape<TOK>::U;
  constexpr int LV = DownVec<DT>::n, LB = LV * Vec<DT>::bytes, CJ = FusedCJ<DT>::n, UD = kFusedDownRows;
  const MoeArgs& a = fa.a;
  const MoeCall d = a.calls[blockIdx.y];
  const int ldH = a.ldH;
  const bool live = int(blockIdx.x) < d.gx;
  const int P = (d.K + d.gx - 1) / d.gx;
  const int pos0 = blockIdx.x * P;
  const int cnt = live ? max(0, min(P, d.K - pos0)) : 0;
  const int nt = d.n;  // <= TOK: one pass
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, nwarps = blockDim.x >> 5;

  extern __shared__ float4 smem_moe[];
  float* xs = reinterpret_cast<float*>(smem_moe);  // [TOK][ldH]
  int* list = reinterpret_cast<int*>(xs + size_t(TOK) * ldH);  // [P]
  float* hs = reinterpret_cast<float*>(list + P);              // [P][TOK]
  __shared__ int s_warp[32];
  __shared__ int s_act[TOK];
  if (tid < TOK) s_act[tid] = 0;

  // Until pdl_wait() this block reads only what the host uploaded and the
  // weights, and writes only shared memory: it may overlap the previous kernel.
  const int q4 = ldH / 4;
  for (int i = tid; i < TOK * q4; i += blockDim.x) {
    const int t = i / q4, c = i - t * q4;
    float4 v = make_float4(0.f, 0.f, 0.f, 0.f);
    if (t < nt) v = reinterpret_cast<const float4*>(a.x + size_t(d.rows[t]) * ldH)[c];
    reinterpret_cast<float4*>(xs)[i] = v;
  }
  if (!a.dense && cnt > 0) compact_list(d.uni, d.W, pos0, cnt, list, s_warp);
  __syncthreads();
  const size_t rowb = size_t(ldH) * Vec<DT>::bytes;
  if (d.prefetch && cnt > 0) {  // this block's down rows into L2 while the gate/up rows stream
    const int lines = int((rowb + 127) / 128);
    for (int i = tid; i < cnt * lines; i += blockDim.x) {
      const int e = i / lines;
      prefetch_l2(d.w2t + size_t(list[e]) * rowb + size_t(i - e * lines) * 128);
    }
  }

  // gate/up: warp per neuron, h into shared memory
  const int nch = int(rowb / 16);
  const uint64_t pol = l2_evict_first_policy();
  const uint64_t* mrow = d.masks + size_t(min(lane, nt - 1)) * d.W;
  int act = 0;
  for (int e = warp; e < cnt; e += nwarps) {
    const int i = a.dense ? pos0 + e : list[e];
    const char* rp[2];
    rp[0] = d.w13 + size_t(2 * i) * rowb;
    rp[1] = rp[0] + rowb;
    float acc[2][TOK];
#pragma unroll
    for (int r = 0; r < 2; ++r)
#pragma unroll
      for (int t = 0; t < TOK; ++t) acc[r][t] = 0.f;
    warp_dot<DT, TOK, 2, U>(rp, nch, xs, ldH, acc, lane, pol);
    warp_sum(acc);
    float sg = 1.f, su = 1.f;
    if (DT == TS_I8) {
      sg = d.s13[2 * i];
      su = d.s13[2 * i + 1];
    }
    const bool bit = lane < nt && ((mrow[i >> 6] >> (i & 63)) & 1ull);
    float h = 0.f;
    bool on = false;
#pragma unroll
    for (int t = 0; t < TOK; ++t)
      if (t == lane) {
        const float g = acc[0][t] * sg, u = acc[1][t] * su;
        on = bit && g > 0.f && u > 0.f;
        h = on ? g * u : 0.f;
      }
    act += on;
    if (lane < TOK) hs[e * TOK + lane] = h;
  }
  if (lane < TOK && act) atomicAdd(&s_act[lane], act);
  __syncthreads();

  // down: the block reads each of its rows whole; thread owns chunks tid + 256 j
  const int nchd = ldH / LV;
  float acc[TOK][CJ][LV];
#pragma unroll
  for (int t = 0; t < TOK; ++t)
#pragma unroll
    for (int j = 0; j < CJ; ++j)
#pragma unroll
      for (int v = 0; v < LV; ++v) acc[t][j][v] = 0.f;
  for (int e0 = 0; e0 < cnt; e0 += UD) {
    int nrn[UD];
    float h[UD][TOK];
    bool use[UD];
#pragma unroll
    for (int u = 0; u < UD; ++u) {
      const int e = e0 + u;
      const bool ok = e < cnt;
      nrn[u] = !ok ? 0 : a.dense ? pos0 + e : list[e];
      bool any = false;
#pragma unroll
      for (int t = 0; t < TOK; ++t) {
        h[u][t] = ok ? hs[e * TOK + t] : 0.f;
        any |= h[u][t] != 0.f;
      }
      use[u] = ok && (a.dense || any);
    }
    uint4 w[UD][CJ];
#pragma unroll
    for (int u = 0; u < UD; ++u)
#pragma unroll
      for (int j = 0; j < CJ; ++j) {
        const int c = tid + kThreads * j;
        const char* p = d.w2t + size_t(nrn[u]) * rowb + size_t(c) * LB;
        if constexpr (DT == TS_I8) {
          const uint2 v = (use[u] && c < nchd) ? ld_stream8(p, pol) : make_uint2(0, 0);
          w[u][j] = make_uint4(v.x, v.y, 0, 0);
        } else {
          w[u][j] = (use[u] && c < nchd) ? ld_stream16(p, pol) : make_uint4(0, 0, 0, 0);
        }
      }
#pragma unroll
    for (int u = 0; u < UD; ++u) {
      if (!use[u]) continue;
      const float sc = (DT == TS_I8) ? d.s2[nrn[u]] : 1.f;
#pragma unroll
      for (int j = 0; j < CJ; ++j) {
        float f[LV];
        if constexpr (DT == TS_I8) {
          unpack_i8x4(w[u][j].x, f);
          unpack_i8x4(w[u][j].y, f + 4);
        } else {
          unpack16<DT>(w[u][j], f);
        }
#pragma unroll
        for (int t = 0; t < TOK; ++t) {
          const float hsc = h[u][t] * sc;
#pragma unroll
          for (int v = 0; v < LV; ++v) acc[t][j][v] = fmaf(hsc, f[v], acc[t][j][v]);
        }
      }
    }
  }

  pdl_wait();  // from here on: global writes (partials, counts, barrier, y)
  if (live) {
#pragma unroll
    for (int t = 0; t < TOK; ++t) {
      if (t >= nt) break;
      float* dst = a.partials + (size_t(d.q0 + t) * a.gxs + blockIdx.x) * ldH;
#pragma unroll
      for (int j = 0; j < CJ; ++j) {
        const int c = tid + kThreads * j;
        if (c < nchd) {
#pragma unroll
          for (int v = 0; v < LV; v += 4)
            *reinterpret_cast<float4*>(dst + size_t(c) * LV + v) =
                make_float4(acc[t][j][v], acc[t][j][v + 1], acc[t][j][v + 2], acc[t][j][v + 3]);
        }
      }
    }
    if (tid < nt) a.blk_active[size_t(d.q0 + tid) * a.gxs + blockIdx.x] = s_act[tid];
  }
  const unsigned nblocks = gridDim.x * gridDim.y;
  grid_barrier(fa.bar, nblocks);
  pdl_launch_next();  // only now: a dependent's blocks waiting in slots could starve our barrier

  // y[r][col4] = sum over r's (call, token) pairs in call order of w * (sum of the pair's partials):
  // each block takes a fixed range of (row, float4 column) items; tpi threads share an item
  const MoeCombineArgs& c = fa.c;
  const unsigned L = blockIdx.y * gridDim.x + blockIdx.x;
  const long long T = (long long)fa.n_rows * q4;
  const long long i0 = T * L / nblocks, i1 = T * (L + 1) / nblocks;
  int tpi = 32;
  while (tpi > 1 && (long long)(kThreads / tpi) < i1 - i0) tpi >>= 1;
  const int ipr = kThreads / tpi, sub = tid % tpi, slot = tid / tpi;
  for (long long base = i0; base < i1; base += ipr) {  // block-uniform trip count
    const long long it = base + slot;
    const bool valid = it < i1;
    const int r = valid ? int(it / q4) : 0, c4 = valid ? int(it % q4) : 0;
    const int cs = valid ? c.row_start[r] : 0, ce = valid ? c.row_start[r + 1] : 0;
    float y[4] = {0.f, 0.f, 0.f, 0.f};
    for (int k = 0; k < fa.max_contrib; ++k) {  // uniform: the shuffles need every lane
      const int i = cs + k;
      const bool on = i < ce;
      float e[4] = {0.f, 0.f, 0.f, 0.f};
      float w = 0.f;
      if (on) {
        const MoeContrib ct = c.contribs[i];
        w = ct.w;
        const float* p = c.partials + size_t(ct.q) * c.gxs * ldH + size_t(c4) * 4;
        for (int s = sub; s < ct.gx; s += tpi) {
          const float4 v = *reinterpret_cast<const float4*>(p + size_t(s) * ldH);
          e[0] += v.x;
          e[1] += v.y;
          e[2] += v.z;
          e[3] += v.w;
        }
      }
      for (int o = tpi >> 1; o > 0; o >>= 1)
#pragma unroll
        for (int v = 0; v < 4; ++v) e[v] += __shfl_xor_sync(0xffffffffu, e[v], o);
      if (on)
#pragma unroll
        for (int v = 0; v < 4; ++v) y[v] += w * e[v];
    }
    if (valid && sub == 0) {
      float* yr = c.y + size_t(r) * c.H;
#pragma unroll
      for (int v = 0; v < 4; ++v)
        if (c4 * 4 + v < c.H) yr[c4 * 4 + v] = y[v];
    }
  }
  if (L == nblocks - 1)
    for (int i = tid; i < fa.pairs; i += blockDim.x) {
      const MoeContrib ct = c.contribs[i];
      int sum = 0;
      for (int x = 0; x < ct.gx; ++x) sum += c.blk_active[size_t(ct.q) * c.gxs + x];
      c.active[ct.q] = sum;
    }
}

using MoeKernel = void (*)(MoeArgs);
using FusedKernel = void (*)(MoeFusedArgs);
using StreamKernel = void (*)(MoeStreamArgs);

// pick(std::integral_constant<int, DT>()) for the stored dtype dt: the one
// switch from a run-time dtype to the DT template argument of the kernels.
template <class Pick>
auto for_dtype(ts_dtype dt, Pick pick) {
  switch (dt) {
    case TS_F32: return pick(std::integral_constant<int, TS_F32>());
    case TS_F16: return pick(std::integral_constant<int, TS_F16>());
    case TS_BF16: return pick(std::integral_constant<int, TS_BF16>());
    default: return pick(std::integral_constant<int, TS_I8>());
  }
}

StreamKernel stream_kernel(ts_dtype dt, int tok) {
  return for_dtype(dt, [tok](auto d) -> StreamKernel {
    constexpr int DT = decltype(d)::value;
    return tok == 2 ? k_ffn_stream<DT, 2> : k_ffn_stream<DT, 1>;
  });
}
FusedKernel fused_kernel(ts_dtype dt, int tok) {
  return for_dtype(dt, [tok](auto d) -> FusedKernel {
    constexpr int DT = decltype(d)::value;
    return tok == 2 ? k_ffn_fused<DT, 2> : k_ffn_fused<DT, 1>;
  });
}
MoeKernel gate_up_kernel(ts_dtype dt, int tok) {
  return for_dtype(dt, [tok](auto d) -> MoeKernel {
    constexpr int DT = decltype(d)::value;
    switch (tok) {
      case 1: return k_gate_up<DT, 1>;
      case 2: return k_gate_up<DT, 2>;
      case 4: return k_gate_up<DT, 4>;
      default: return k_gate_up<DT, 8>;
    }
  });
}
MoeKernel down_kernel(ts_dtype dt, int tok) {
  return for_dtype(dt, [tok](auto d) -> MoeKernel {
    constexpr int DT = decltype(d)::value;
    switch (tok) {
      case 1: return k_down<DT, 1>;
      case 2: return k_down<DT, 2>;
      case 4: return k_down<DT, 4>;
      default: return k_down<DT, 8>;
    }
  });
}
int down_lane_elems(ts_dtype dt) { return dt == TS_F32 ? 4 : 8; }

}  // namespace

// ------------------------------------------------------------------ planning

// Calls of one dtype, launched together.
struct MoeGroup {
  ts_dtype dt;
  int first = 0, count = 0;  // range of descriptors
  int tok = 1, passes = 1, gx = 1, stripes = 1;
  size_t smem = 0;
};

struct MoeFrame {
  ts_ffn_mode mode = TS_FFN_SPARSE;
  int64_t n_rows = 0, H = 0, ldH = 0, pairs = 0;
  int S = 1, gxs = 1;
  bool fused = false;                 // one k_ffn_fused launch (groups.size() == 1)
  bool stream = false;                // one k_ffn_stream launch (groups.size() == 1)
  int slots = 0, gs = 1, ngs = 1;     // streaming kernel: ring slots, blocks per reduce group, groups
  size_t slist_off = 0, cnt_off = 0, gpart_off = 0, e_off = 0;
  std::vector<uint32_t> slist;        // streaming kernel: every call's list, per desc at slist_at
  std::vector<size_t> slist_at;
  int max_contrib = 0;                // most (call, token) pairs of one output row
  size_t bar_off = 0;
  Layout L;
  size_t x_off = 0, rows_off = 0, masks_off = 0, uni_off = 0, calls_off = 0, rstart_off = 0, contrib_off = 0;
  size_t y_off = 0, active_off = 0, idx_off = 0, hv_off = 0, blk_off = 0, part_off = 0;
  std::vector<MoeGroup> groups;
  std::vector<MoeCall> desc;          // descriptors, grouped by dtype (device pointers relative to 0 until packed)
  std::vector<int> src;               // desc[i] is calls[src[i]]
  std::vector<size_t> rows_at, masks_at;  // per desc: element offsets into the rows / masks segments
  std::vector<uint64_t> uni;          // all unions, per desc at desc.uni offset
  std::vector<size_t> uni_at;
  std::vector<const uint64_t*> call_masks;  // per desc: the caller's masks (read while planning only)
  std::vector<int> row_start;         // [n_rows + 1]
  std::vector<MoeContrib> contribs;
  char* owned = nullptr;              // device memory of a bench frame
};

namespace {

constexpr int64_t kStreamMaxRows = 16;  // its last block writes every output row

// The streaming kernel's plan for a launch of calls of one dtype with 1-2 tokens each:
// blocks (about tuning.stream_bps per SM, shared by the calls in proportion to
// their lists), ring slots, and the host-made lists. Leaves f.stream false when
// it does not fit (the fused kernel or the three kernels run instead).
int plan_stream(Backend* b, bool dense, MoeFrame& f) {
  MoeGroup& g = f.groups[0];
  for (int i = g.first; i < g.first + g.count; ++i)
    if (int64_t(f.desc[size_t(i)].I) > int64_t(kStreamNeuronBits) + 1) return 0;
  const size_t rowb = size_t(f.ldH) * dtype_bytes(g.dt);
  const double budget = double(b->sms) * std::max(1, b->tuning.stream_bps);
  double work = 0;
  for (int i = g.first; i < g.first + g.count; ++i) work += double(std::max(f.desc[size_t(i)].K, 1));
  std::vector<int> gx(size_t(g.count));
  int gmax = 1, maxP = 0;
  for (int i = 0; i < g.count; ++i) {
    const MoeCall& d = f.desc[size_t(g.first + i)];
    int64_t x = int64_t(budget * double(std::max(d.K, 1)) / work);
    x = std::max<int64_t>(1, std::min<int64_t>({x, std::max(d.K, 1), 65535}));
    gx[size_t(i)] = int(x);
    gmax = std::max(gmax, gx[size_t(i)]);
    maxP = std::max(maxP, (d.K + gx[size_t(i)] - 1) / gx[size_t(i)]);
  }
  if (maxP > 4096) return 0;  // the list of a block lives in shared memory
  int slots = std::min(std::max(2, b->tuning.stream_slots), kStreamMaxSlots);
  for (; slots >= 2; --slots) {
    const size_t smem = size_t(slots) * (3 * rowb + 16) + size_t(maxP) * 4;
    int per_sm = 0;
    if (smem + 1024 <= b->smem_optin &&
        prepare_kernel(b, reinterpret_cast<const void*>(stream_kernel(g.dt, g.tok)), kStreamThreads, smem, &per_sm) == 0) {
      g.smem = smem;
      break;
    }
  }
  if (slots < 2) return 0;
  f.stream = true;
  f.slots = slots;
  g.gx = gmax;
  for (int i = 0; i < g.count; ++i) f.desc[size_t(g.first + i)].gx = gx[size_t(i)];
  // the lists: neuron | (token t has it) << (24 + t), in neuron order
  for (size_t i = 0; i < f.desc.size(); ++i) {
    const MoeCall& d = f.desc[i];
    const uint64_t* masks = f.call_masks[i];
    const uint64_t* uni = f.uni.data() + f.uni_at[i];
    f.slist_at.push_back(f.slist.size());
    for (int w = 0; w < d.W; ++w) {
      uint64_t u = dense ? ~uint64_t(0) : uni[w];
      if (w == d.W - 1 && d.I % 64) u &= (uint64_t(1) << (d.I % 64)) - 1;
      while (u) {
        const int bit = __builtin_ctzll(u);
        u &= u - 1;
        uint32_t ent = uint32_t(w * 64 + bit);
        for (int t = 0; t < d.n; ++t) ent |= uint32_t((masks[size_t(t) * d.W + w] >> bit) & 1u) << (24 + t);
        f.slist.push_back(ent);
      }
    }
  }
  return 0;
}

int moe_build(Backend* b, ts_ffn_mode mode, int64_t n_rows, int64_t H, int64_t n_calls, const ts_expert_call* calls,
              MoeFrame& f) {
  const bool dense = mode == TS_FFN_DENSE_WITH_MASK;
  f.mode = mode;
  f.n_rows = n_rows;
  f.H = H;
  f.ldH = padded(H);
  if (n_rows > 65535) return ts_fail("ts_moe: n_rows = " + std::to_string(n_rows) + " is more than one CUDA call takes (65535)");
  if (size_t(f.ldH) * 4 * 1 > b->smem_optin)
    return ts_fail("ts_moe: hidden = " + std::to_string(H) + " is too wide for the CUDA kernels");

  // descriptors in dtype order; pairs (call, token) numbered in call order
  std::vector<int> q0(size_t(n_calls), 0);
  int64_t pairs = 0;
  for (int64_t c = 0; c < n_calls; ++c) {
    q0[size_t(c)] = int(pairs);
    pairs += calls[c].n;
  }
  f.pairs = pairs;
  if (pairs > (int64_t(1) << 30)) return ts_fail("ts_moe: too many (call, row) pairs for one CUDA call");
  size_t rows_n = 0, masks_n = 0, uni_n = 0;
  long long list_n = 0, hv_n = 0;
  for (ts_dtype dt : {TS_F32, TS_F16, TS_BF16, TS_I8}) {
    MoeGroup g;
    g.dt = dt;
    g.first = int(f.desc.size());
    for (int64_t c = 0; c < n_calls; ++c) {
      const ts_expert_call& ec = calls[c];
      if (ec.n == 0 || ec.expert->dtype != dt) continue;
      const auto* e = static_cast<const Expert*>(ec.expert);
      MoeCall d = {};
      d.I = int(e->intermediate);
      d.W = int(ts_mask_words(e->intermediate));
      d.n = int(ec.n);
      d.q0 = q0[size_t(c)];
      // union of the masks, bits past I cleared
      f.uni_at.push_back(uni_n);
      f.uni.resize(uni_n + size_t(d.W));
      uint64_t* u = f.uni.data() + uni_n;
      int K = 0;
      for (int w = 0; w < d.W; ++w) {
        uint64_t any = 0;
        for (int64_t t = 0; t < ec.n; ++t) any |= ec.masks[size_t(t) * d.W + w];
        if (w == d.W - 1 && d.I % 64) any &= (uint64_t(1) << (d.I % 64)) - 1;
        u[w] = any;
        K += __builtin_popcountll(any);
      }
      d.K = dense ? d.I : K;
      f.rows_at.push_back(rows_n);
      f.masks_at.push_back(masks_n);
      rows_n += size_t(ec.n);
      masks_n += size_t(ec.n) * size_t(d.W);
      uni_n += size_t(d.W);
      f.desc.push_back(d);
      f.src.push_back(int(c));
      f.call_masks.push_back(ec.masks);
    }
    g.count = int(f.desc.size()) - g.first;
    if (g.count == 0) continue;
    if (g.count > 65535) return ts_fail("ts_moe: too many calls for one CUDA launch");
    int maxn = 0;
    for (int i = g.first; i < g.first + g.count; ++i) maxn = std::max(maxn, f.desc[size_t(i)].n);
    int tok = tokens_per_pass(maxn);
    auto smem_for = [&](int t) { return size_t(t) * size_t(f.ldH) * 4 + size_t(kMaxList) * 4; };
    while (tok > 1 && smem_for(tok) + 1024 > b->smem_optin) tok /= 2;
    if (smem_for(tok) + 1024 > b->smem_optin)
      return ts_fail("ts_moe: hidden = " + std::to_string(H) + " is too wide for the CUDA kernels");
    g.tok = tok;
    g.passes = (maxn + tok - 1) / tok;
    if (g.passes > 65535) return ts_fail("ts_moe: too many rows for one expert in one CUDA call");
    int per_sm = 1;
    TS_TRY(prepare_kernel(b, reinterpret_cast<const void*>(gate_up_kernel(dt, tok)), kThreads, smem_for(tok), &per_sm));
    int dummy = 1;
    TS_TRY(prepare_kernel(b, reinterpret_cast<const void*>(down_kernel(dt, tok)), kThreads, 0, &dummy));
    // one wave of blocks, shared by the calls in proportion to their work
    const double budget = double(b->sms) * std::min(per_sm, 2);
    double work = 0;
    for (int i = g.first; i < g.first + g.count; ++i) {
      const MoeCall& d = f.desc[size_t(i)];
      work += double(std::max(d.K, 1)) * ((d.n + tok - 1) / tok);
    }
    constexpr int R = 2;  // neurons per warp at the widest; fewer blocks than K/R would idle warps
    int maxP = 1;
    g.gx = 1;
    for (int i = g.first; i < g.first + g.count; ++i) {
      MoeCall& d = f.desc[size_t(i)];
      const int64_t min_gx = (int64_t(d.K) + kMaxList - 1) / kMaxList;
      int64_t gx = int64_t(budget * double(std::max(d.K, 1)) / work);
      gx = std::min<int64_t>(gx, (int64_t(d.K) + R - 1) / R);
      gx = std::max<int64_t>({gx, min_gx, 1});
      d.gx = int(std::min<int64_t>(gx, 65535));
      g.gx = std::max(g.gx, d.gx);
      maxP = std::max(maxP, (d.K + d.gx - 1) / d.gx);
    }
    g.smem = size_t(tok) * size_t(f.ldH) * 4 + size_t(maxP) * 4;
    g.stripes = int((f.ldH / down_lane_elems(dt) + 31) / 32);
    for (int i = g.first; i < g.first + g.count; ++i) {
      MoeCall& d = f.desc[size_t(i)];
      d.npad = std::max(4, (d.n + tok - 1) / tok * tok);
      d.npad = (d.npad + 3) / 4 * 4;
      d.list_off = list_n;
      d.hv_off = hv_n;
      list_n += d.K;
      hv_n += (long long)d.K * d.npad;
      d.prefetch = (!dense && b->tuning.prefetch &&
                    double(d.K) * double(f.ldH) * dtype_bytes(dt) <= 0.5 * double(b->l2_bytes))
                       ? 1
                       : 0;
    }
    f.groups.push_back(g);
  }
  // batch <= 2 of one dtype: plan the streaming kernel, else the fused kernel, else the three kernels
  const bool want_stream = b->tuning.stream > 0 || (b->tuning.stream < 0 && !dense);
  if (want_stream && f.groups.size() == 1 && f.groups[0].tok <= 2 && f.groups[0].passes == 1 &&
      f.ldH <= kStreamMaxLd && n_rows <= kStreamMaxRows)
    TS_TRY(plan_stream(b, dense, f));
  const bool want_fused = b->tuning.fused > 0 || (b->tuning.fused < 0 && dense);
  if (!f.stream && want_fused && f.groups.size() == 1 && f.groups[0].tok <= 2 && f.groups[0].passes == 1 &&
      f.ldH <= kFusedMaxLd && f.ldH % 4 == 0) {
    MoeGroup& g = f.groups[0];
    const size_t smem_bound = size_t(g.tok) * size_t(f.ldH) * 4 + size_t(kMaxList) * 4 * size_t(1 + g.tok);
    int per_sm = 0;
    if (smem_bound + 1024 <= b->smem_optin &&
        prepare_kernel(b, reinterpret_cast<const void*>(fused_kernel(g.dt, g.tok)), kThreads, smem_bound, &per_sm) == 0) {
      const int bps = std::max(1, std::min(per_sm, b->tuning.fused_bps));
      const double budget = double(b->sms) * bps;
      double work = 0;
      for (int i = g.first; i < g.first + g.count; ++i) work += double(std::max(f.desc[size_t(i)].K, 1));
      std::vector<int> gx(size_t(g.count));
      int gmax = 1, maxP = 1;
      for (int i = 0; i < g.count; ++i) {
        const MoeCall& d = f.desc[size_t(g.first + i)];
        int64_t x = int64_t(budget * double(std::max(d.K, 1)) / work);
        x = std::min<int64_t>(x, std::max(d.K, 1));
        x = std::max<int64_t>({x, (int64_t(d.K) + kMaxList - 1) / kMaxList, 1});
        gx[size_t(i)] = int(std::min<int64_t>(x, 65535));
        gmax = std::max(gmax, gx[size_t(i)]);
        maxP = std::max(maxP, (d.K + gx[size_t(i)] - 1) / gx[size_t(i)]);
      }
      // every block must be resident at once (grid barrier)
      if (int64_t(gmax) * g.count <= int64_t(b->sms) * per_sm && maxP <= kMaxList) {
        f.fused = true;
        g.gx = gmax;
        g.smem = size_t(g.tok) * size_t(f.ldH) * 4 + size_t(maxP) * 4 * size_t(1 + g.tok);
        for (int i = 0; i < g.count; ++i) f.desc[size_t(g.first + i)].gx = gx[size_t(i)];
      }
    }
  }
  f.gxs = 1;
  for (const MoeCall& d : f.desc) f.gxs = std::max(f.gxs, d.gx);

  // down splits: about two blocks per SM over all launches
  int64_t units = 0;
  for (const MoeGroup& g : f.groups)
    for (int i = g.first; i < g.first + g.count; ++i)
      units += int64_t(g.stripes) * ((f.desc[size_t(i)].n + g.tok - 1) / g.tok);
  const bool one_launch = f.fused || f.stream;  // one partial row per block
  int S = one_launch ? f.gxs : b->tuning.down_splits > 0 ? b->tuning.down_splits
                                    : int(std::max<int64_t>(1, 2 * int64_t(b->sms) / std::max<int64_t>(1, units)));
  if (!one_launch) S = std::min(S, kMaxSplits);
  while (!one_launch && S > 1 && double(pairs) * S * f.ldH * 4 > double(size_t(256) << 20)) --S;
  f.S = S;
  if (f.stream) {  // reduce groups of about sqrt(blocks) blocks: two short levels instead of one long one
    f.gs = int(std::ceil(std::sqrt(double(f.gxs))));
    f.ngs = (f.gxs + f.gs - 1) / f.gs;
  }

  // combine plan: per output row, its (call, token) pairs in call order
  f.row_start.assign(size_t(n_rows) + 1, 0);
  for (int64_t c = 0; c < n_calls; ++c)
    for (int64_t j = 0; j < calls[c].n; ++j) f.row_start[size_t(calls[c].rows[j]) + 1]++;
  for (int64_t r = 0; r < n_rows; ++r) {
    f.max_contrib = std::max(f.max_contrib, f.row_start[size_t(r) + 1]);
    f.row_start[size_t(r) + 1] += f.row_start[size_t(r)];
  }
  f.contribs.assign(size_t(pairs), MoeContrib{});
  {
    std::vector<int> fill(f.row_start.begin(), f.row_start.end() - 1);
    std::vector<int> gx_of(size_t(n_calls), 1);
    for (size_t i = 0; i < f.desc.size(); ++i) gx_of[size_t(f.src[i])] = f.desc[i].gx;
    for (int64_t c = 0; c < n_calls; ++c)
      for (int64_t j = 0; j < calls[c].n; ++j) {
        MoeContrib& ct = f.contribs[size_t(fill[size_t(calls[c].rows[j])]++)];
        ct.q = q0[size_t(c)] + int(j);
        ct.w = calls[c].weight[j];
        ct.gx = gx_of[size_t(c)];
      }
  }

  // device layout
  Layout& L = f.L;
  f.x_off = L.add_in(size_t(n_rows * f.ldH) * 4);
  f.rows_off = L.add_in(rows_n * 4);
  f.masks_off = L.add_in(masks_n * 8);
  f.uni_off = L.add_in(uni_n * 8);
  f.calls_off = L.add_in(f.desc.size() * sizeof(MoeCall));
  f.rstart_off = L.add_in(f.row_start.size() * 4);
  f.contrib_off = L.add_in(f.contribs.size() * sizeof(MoeContrib));
  f.bar_off = L.add_in(2 * sizeof(unsigned));  // uploaded as 0; the fused kernel leaves the arrivals at 0
  if (f.stream) {
    f.slist_off = L.add_in(f.slist.size() * 4);
    f.cnt_off = L.add_in((f.desc.size() * size_t(f.ngs + 1) + 1) * sizeof(unsigned));  // uploaded as 0, left at 0
    f.gpart_off = L.add_scratch(size_t(pairs) * size_t(f.ngs) * size_t(f.ldH) * 4);
    f.e_off = L.add_scratch(size_t(pairs) * size_t(f.ldH) * 4);
  }
  f.y_off = L.add_out(size_t(n_rows * H) * 4);
  f.active_off = L.add_out(size_t(pairs) * 4);
  f.idx_off = L.add_scratch(size_t(list_n) * 4);
  f.hv_off = L.add_scratch(size_t(hv_n) * 4);
  f.blk_off = L.add_scratch(size_t(pairs) * size_t(f.gxs) * 4);
  f.part_off = L.add_scratch(size_t(pairs) * size_t(S) * size_t(f.ldH) * 4);
  return 0;
}

// Inputs into the host staging buffer h; device pointers relative to d.
void moe_pack(MoeFrame& f, char* h, char* d, const float* x, const ts_expert_call* calls) {
  float* xh = reinterpret_cast<float*>(h + f.x_off);
  for (int64_t r = 0; r < f.n_rows; ++r) {
    std::memcpy(xh + r * f.ldH, x + r * f.H, size_t(f.H) * 4);
    std::memset(xh + r * f.ldH + f.H, 0, size_t(f.ldH - f.H) * 4);
  }
  int* rows_h = reinterpret_cast<int*>(h + f.rows_off);
  uint64_t* masks_h = reinterpret_cast<uint64_t*>(h + f.masks_off);
  std::memcpy(h + f.uni_off, f.uni.data(), f.uni.size() * 8);
  std::vector<MoeCall> desc = f.desc;
  for (size_t i = 0; i < desc.size(); ++i) {
    const ts_expert_call& ec = calls[f.src[i]];
    const auto* e = static_cast<const Expert*>(ec.expert);
    MoeCall& dc = desc[i];
    std::memcpy(rows_h + f.rows_at[i], ec.rows, size_t(ec.n) * 4);
    std::memcpy(masks_h + f.masks_at[i], ec.masks, size_t(ec.n) * size_t(dc.W) * 8);
    dc.w13 = static_cast<const char*>(e->w13.data);
    dc.s13 = e->w13.scale;
    dc.w2t = static_cast<const char*>(e->w2t.data);
    dc.s2 = e->w2t.scale;
    dc.masks = reinterpret_cast<const uint64_t*>(d + f.masks_off) + f.masks_at[i];
    dc.uni = reinterpret_cast<const uint64_t*>(d + f.uni_off) + f.uni_at[i];
    dc.rows = reinterpret_cast<const int*>(d + f.rows_off) + f.rows_at[i];
    if (f.stream) dc.slist = reinterpret_cast<const uint32_t*>(d + f.slist_off) + f.slist_at[i];
  }
  if (f.stream) {
    std::memcpy(h + f.slist_off, f.slist.data(), f.slist.size() * 4);
    std::memset(h + f.cnt_off, 0, (f.desc.size() * size_t(f.ngs + 1) + 1) * sizeof(unsigned));
  }
  std::memcpy(h + f.calls_off, desc.data(), desc.size() * sizeof(MoeCall));
  std::memcpy(h + f.rstart_off, f.row_start.data(), f.row_start.size() * 4);
  std::memcpy(h + f.contrib_off, f.contribs.data(), f.contribs.size() * sizeof(MoeContrib));
  std::memset(h + f.bar_off, 0, 2 * sizeof(unsigned));
}

int moe_enqueue(Backend* b, const MoeFrame& f, char* d) {
  char* out = d + f.L.out_base();
  char* scr = d + f.L.scratch_base();
  MoeArgs a = {};
  a.x = reinterpret_cast<const float*>(d + f.x_off);
  a.idx = reinterpret_cast<int*>(scr + f.idx_off);
  a.hv = reinterpret_cast<float*>(scr + f.hv_off);
  a.blk_active = reinterpret_cast<int*>(scr + f.blk_off);
  a.partials = reinterpret_cast<float*>(scr + f.part_off);
  a.ldH = int(f.ldH);
  a.S = f.S;
  a.gxs = f.gxs;
  a.dense = f.mode == TS_FFN_DENSE_WITH_MASK;
  MoeCombineArgs c = {};
  c.row_start = reinterpret_cast<const int*>(d + f.rstart_off);
  c.contribs = reinterpret_cast<const MoeContrib*>(d + f.contrib_off);
  c.partials = a.partials;
  c.blk_active = a.blk_active;
  c.y = reinterpret_cast<float*>(out + f.y_off);
  c.active = reinterpret_cast<int*>(out + f.active_off);
  c.H = int(f.H);
  c.ldH = int(f.ldH);
  c.S = f.S;
  c.gxs = f.gxs;
  if (f.stream) {
    const MoeGroup& g = f.groups[0];
    MoeStreamArgs sa = {};
    sa.calls = reinterpret_cast<const MoeCall*>(d + f.calls_off) + g.first;
    sa.x = a.x;
    sa.partials = a.partials;
    sa.gpart = reinterpret_cast<float*>(scr + f.gpart_off);
    sa.e = reinterpret_cast<float*>(scr + f.e_off);
    sa.blk_active = a.blk_active;
    sa.cnt = reinterpret_cast<unsigned*>(d + f.cnt_off);
    sa.row_start = c.row_start;
    sa.contribs = c.contribs;
    sa.y = c.y;
    sa.active = c.active;
    sa.ldH = int(f.ldH);
    sa.H = int(f.H);
    sa.gxs = f.gxs;
    sa.gs = f.gs;
    sa.ngs = f.ngs;
    sa.n_rows = int(f.n_rows);
    sa.ncalls = g.count;
    sa.slots = f.slots;
    sa.stages = b->tuning.ffn_stages;
    TS_CUDA(launch(b, true, stream_kernel(g.dt, g.tok), dim3(unsigned(g.gx), unsigned(g.count)), dim3(kStreamThreads),
                   g.smem, sa));
    return 0;
  }
  if (f.fused) {
    const MoeGroup& g = f.groups[0];
    MoeFusedArgs fa = {};
    fa.a = a;
    fa.a.calls = reinterpret_cast<const MoeCall*>(d + f.calls_off) + g.first;
    fa.c = c;
    fa.bar = reinterpret_cast<unsigned*>(d + f.bar_off);
    fa.n_rows = int(f.n_rows);
    fa.pairs = int(f.pairs);
    fa.max_contrib = f.max_contrib;
    TS_CUDA(launch(b, true, fused_kernel(g.dt, g.tok), dim3(unsigned(g.gx), unsigned(g.count)), dim3(kThreads),
                   g.smem, fa));
    return 0;
  }
  for (const MoeGroup& g : f.groups) {
    a.calls = reinterpret_cast<const MoeCall*>(d + f.calls_off) + g.first;
    TS_CUDA(launch(b, true, gate_up_kernel(g.dt, g.tok), dim3(unsigned(g.gx), unsigned(g.count), unsigned(g.passes)),
                   dim3(kThreads), g.smem, a));
    if (b->tuning.ffn_stages >= 2)
      TS_CUDA(launch(b, true, down_kernel(g.dt, g.tok),
                     dim3(unsigned(g.stripes * f.S), unsigned(g.count), unsigned(g.passes)), dim3(kThreads), 0, a));
  }
  if (b->tuning.ffn_stages < 3) return 0;
  const unsigned gx = unsigned((f.ldH / 4 + kCombineThreads - 1) / kCombineThreads);
  TS_CUDA(launch(b, true, k_combine, dim3(gx, unsigned(f.n_rows)), dim3(kCombineThreads), 0, c));
  return 0;
}

}  // namespace

int moe(ts_backend* tb, ts_ffn_mode mode, int64_t n_rows, int64_t hidden, const float* x, int64_t n_calls,
        const ts_expert_call* calls, float* y, int32_t* active) {
  Backend* b = as_cuda(tb);
  TS_TRY(b->activate());
  if (n_rows == 0) return 0;
  int64_t pairs = 0;
  for (int64_t c = 0; c < n_calls; ++c) pairs += calls[c].n;
  if (pairs == 0) {
    std::memset(y, 0, size_t(n_rows * hidden) * 4);
    return 0;
  }
  MoeFrame f;
  TS_TRY(moe_build(b, mode, n_rows, hidden, n_calls, calls, f));
  return run_staged(
      b, f.L, [&](char* h, char* d) { moe_pack(f, h, d, x, calls); },
      [&](char* d) { return moe_enqueue(b, f, d); },
      [&](const char* h) {
        std::memcpy(y, h + f.y_off, size_t(n_rows * hidden) * 4);
        if (active) std::memcpy(active, h + f.active_off, size_t(pairs) * 4);
      });
}

// ------------------------------------------------------- frames for the bench

MoeFrame* moe_frame_create(ts_backend* tb, ts_ffn_mode mode, int64_t n_rows, int64_t hidden, const float* x,
                           int64_t n_calls, const ts_expert_call* calls) {
  Backend* b = as_cuda(tb);
  if (b->activate()) return nullptr;
  auto* f = new (std::nothrow) MoeFrame();
  if (!f) return ts_fail("out of memory"), nullptr;
  int64_t pairs = 0;
  for (int64_t c = 0; c < n_calls; ++c) pairs += calls[c].n;
  if (n_rows == 0 || pairs == 0) {
    delete f;
    return ts_fail("moe_frame_create: the call has no work"), nullptr;
  }
  if (moe_build(b, mode, n_rows, hidden, n_calls, calls, *f)) {
    delete f;
    return nullptr;
  }
  cudaError_t e = cudaMalloc(reinterpret_cast<void**>(&f->owned), f->L.total());
  if (e != cudaSuccess) {
    f->owned = nullptr;
    ts_fail(cuda_error(e, "cudaMalloc (moe frame)", __FILE__, __LINE__));
    delete f;
    return nullptr;
  }
  std::vector<char> h(f->L.in);
  moe_pack(*f, h.data(), f->owned, x, calls);
  e = cudaMemcpy(f->owned, h.data(), f->L.in, cudaMemcpyHostToDevice);
  if (e != cudaSuccess) {
    ts_fail(cuda_error(e, "cudaMemcpy (moe frame)", __FILE__, __LINE__));
    moe_frame_free(f);
    return nullptr;
  }
  return f;
}

int moe_frame_enqueue(ts_backend* tb, MoeFrame* f) { return moe_enqueue(as_cuda(tb), *f, f->owned); }

int moe_frame_read(ts_backend* tb, MoeFrame* f, float* y, int32_t* active) {
  Backend* b = as_cuda(tb);
  TS_TRY(b->activate());
  TS_CUDA(cudaStreamSynchronize(b->stream));
  const char* out = f->owned + f->L.out_base();
  TS_CUDA(cudaMemcpy(y, out + f->y_off, size_t(f->n_rows * f->H) * 4, cudaMemcpyDeviceToHost));
  if (active) TS_CUDA(cudaMemcpy(active, out + f->active_off, size_t(f->pairs) * 4, cudaMemcpyDeviceToHost));
  return 0;
}

int moe_frame_poison(ts_backend* tb, MoeFrame* f) {
  Backend* b = as_cuda(tb);
  TS_TRY(b->activate());
  TS_CUDA(cudaMemsetAsync(f->owned + f->L.out_base(), 0xff, f->L.out, b->stream));
  return 0;
}

void moe_frame_free(MoeFrame* f) {
  if (!f) return;
  if (f->owned) cudaFree(f->owned);
  delete f;
}

}  // namespace tscuda
