// moe_fused.cu — the one-launch paths of the MoE FFN for batches of 1-2 tokens:
// the fused kernel (k_ffn_fused, dense-with-mask) and the selector of the
// streaming kernel (k_ffn_stream, moe_stream.cuh). See moe.cu.
#include "moe_device.cuh"

namespace tscuda {

namespace {

// ------------------------------------------------------------ fused (batch <= 2)

// down chunks (DownVec elements each) per thread of the fused kernel: 256 * CJ * LV = 4096 columns
template <int DT>
struct FusedCJ {
  static constexpr int n = DT == TS_F32 ? 4 : 2;
};
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

}  // namespace

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

}  // namespace tscuda
