// moe_kernels.cu — the three-kernel path of the MoE FFN (gate_up, down,
// combine; see moe.cu for what each does and the launch rules).
#include "moe_device.cuh"

namespace tscuda {

namespace {

template <int TOK>
struct DownShape {
  static constexpr int U = TOK <= 2 ? 8 : TOK == 4 ? 4 : 2;
};

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

}  // namespace

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
CombineKernel combine_kernel() { return k_combine; }

}  // namespace tscuda
