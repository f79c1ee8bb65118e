// moe_stream.cuh — the streaming expert FFN for batches of 1-2 tokens (the
// decode case), included by moe.cu after its call descriptors.
//
// Why: at batch 1 an expert at 10% active reads ~35 MB, about 8.5 us of an
// H200's bandwidth. The three-kernel path and the fused kernel both spend most
// of their time in chains of dependent memory round trips (list, gate/up rows,
// h, down rows, partials, reduce), each ~1-2 us under load (bench/RESULTS.md).
// Here a block issues its rows as asynchronous copies (cp.async) into a ring of
// shared-memory slots, one slot = one neuron's gate, up and down rows, so the
// loads of the next `slots` neurons are always in flight while it computes the
// current one: the load chain is one round trip deep however many neurons a
// block has. The neuron list (with each neuron's token bits) is made on the
// host, so a block starts its copies after one small read.
//
// Until the outputs, the kernel reads only what the host uploaded and the
// weights, and writes only shared memory and its own launch's scratch: with
// programmatic dependent launch the whole compute of the next call (and most
// of its reduce) overlaps this call's tail. The tail is a deterministic reduction without a grid barrier: blocks
// write their partial row, and the last block to arrive in a group (an atomic
// counter) sums its group in block order, the last group sums the groups, and
// the last call combines the calls of each output row in call order. Blocks
// that are not last exit at once and free their SM for the next call. Counters
// are left at 0 for the next launch; no float atomics, so the output is
// bitwise repeatable.
#pragma once

namespace tscuda {

constexpr int kStreamThreads = 256;
constexpr int kStreamMaxLd = 4096;  // x and the partial row of a thread stay in registers up to this width
constexpr int kStreamMaxSlots = 8;

// 16-byte chunks of a row each thread owns (chunk tid + 256 j): 16 elements per thread at 4096
template <int DT>
struct StreamCJ {
  static constexpr int n = kStreamMaxLd / (kStreamThreads * Vec<DT>::n);
};

// One entry of the host-made list: neuron in the low 24 bits, bit 24 + t set when token t's mask has it.
constexpr uint32_t kStreamNeuronBits = 0xffffffu;

struct MoeStreamArgs {
  const MoeCall* calls;     // grid.y; call.slist is the list, call.gx its blocks
  const float* x;           // [n_rows][ldH]
  float* partials;          // [pairs][gxs][ldH]   one row per (pair, block)
  float* gpart;             // [pairs][ngs][ldH]   one row per (pair, group of blocks)
  float* e;                 // [pairs][ldH]        the expert output of each pair
  int* blk_active;          // [pairs][gxs]
  unsigned* cnt;            // [calls][ngs + 1] group and call arrivals, then [1] call arrivals: left at 0
  const int* row_start;     // [n_rows + 1] into contribs
  const MoeContrib* contribs;
  float* y;                 // [n_rows][H]
  int* active;              // [pairs]
  int ldH, H, gxs, gs, ngs, n_rows, ncalls, slots;
  int stages;               // bench breakdown (Tuning::ffn_stages): 1 = copies and compute only, 2 = + partial rows, 3 = all
};

// Block-wide: the last block to arrive at counter c (of `expected`) gets true; it resets the counter.
// The barrier orders the block's writes before thread 0's release; its acquire (then the barrier)
// orders the other blocks' writes before this block's reads, which go to L2 (ld.cg).
__device__ __forceinline__ bool last_to_arrive(unsigned* c, unsigned expected, unsigned* s_flag) {
  __syncthreads();
  if (threadIdx.x == 0) {
    unsigned old;
    asm volatile("atom.acq_rel.gpu.global.add.u32 %0, [%1], 1;" : "=r"(old) : "l"(c) : "memory");
    const bool last = old == expected - 1;
    if (last) atomicExch(c, 0u);
    *s_flag = last;
  }
  __syncthreads();
  return *s_flag != 0;
}

// dst row (q0 + t) = sum over rows r in [r0, r1) of src row (q0 + t) * stride + r, in row order
// (float4 columns; a thread owns columns tid + 256 j). Four rows at a time: 16 loads in flight.
__device__ __forceinline__ void sum_rows(const float* src, size_t stride, int q0, int nt, int r0, int r1, int ldH,
                                         float* dst, size_t dst_stride) {
  constexpr int CPT = kStreamMaxLd / 4 / kStreamThreads, RU = 2;
  const int q4 = ldH / 4, tid = threadIdx.x;
  const float4 zero = make_float4(0.f, 0.f, 0.f, 0.f);
  for (int t = 0; t < nt; ++t) {
    const float* base = src + size_t(q0 + t) * stride * size_t(ldH);
    float4 s[CPT];
#pragma unroll
    for (int j = 0; j < CPT; ++j) s[j] = zero;
    for (int r = r0; r < r1; r += RU) {
      float4 v[RU][CPT];
#pragma unroll
      for (int u = 0; u < RU; ++u)
#pragma unroll
        for (int j = 0; j < CPT; ++j) {
          const int c = tid + kStreamThreads * j;
          v[u][j] = (r + u < r1 && c < q4)
                        ? __ldcg(reinterpret_cast<const float4*>(base + size_t(r + u) * ldH + size_t(c) * 4))
                        : zero;
        }
#pragma unroll
      for (int u = 0; u < RU; ++u)
#pragma unroll
        for (int j = 0; j < CPT; ++j) {
          s[j].x += v[u][j].x;
          s[j].y += v[u][j].y;
          s[j].z += v[u][j].z;
          s[j].w += v[u][j].w;
        }
    }
#pragma unroll
    for (int j = 0; j < CPT; ++j) {
      const int c = tid + kStreamThreads * j;
      if (c < q4) *reinterpret_cast<float4*>(dst + size_t(q0 + t) * dst_stride + size_t(c) * 4) = s[j];
    }
  }
}

template <int DT, int TOK>
__global__ void __launch_bounds__(kStreamThreads, TOK == 1 ? 3 : 2) k_ffn_stream(MoeStreamArgs a) {
  constexpr int V = Vec<DT>::n, CJ = StreamCJ<DT>::n, NW = kStreamThreads / 32;
  pdl_launch_next();  // no block ever waits for another: the next call may take SMs as they free up
  const MoeCall d = a.calls[blockIdx.y];
  if (int(blockIdx.x) >= d.gx) return;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int ldH = a.ldH, nt = d.n, slots = a.slots;
  const int nch = ldH / V;  // 16-byte chunks per row
  const size_t rowb = size_t(nch) * 16;
  const int P = (d.K + d.gx - 1) / d.gx;
  const int pos0 = int(blockIdx.x) * P;
  const int cnt = max(0, min(P, d.K - pos0));

  extern __shared__ float4 smem_moe[];
  char* ring = reinterpret_cast<char*>(smem_moe);                              // [slots][gate | up | down]
  float* scales = reinterpret_cast<float*>(ring + size_t(slots) * 3 * rowb);  // [slots][4]: I8 s_gate, s_up, s_down
  uint32_t* list = reinterpret_cast<uint32_t*>(scales + 4 * slots);           // [P]
  __shared__ float red[NW][2 * TOK];
  __shared__ unsigned s_flag;

  for (int i = tid; i < cnt; i += kStreamThreads) list[i] = d.slist[pos0 + i];
  __syncthreads();
  // neuron k of the slice -> slot k % slots: its two adjacent w13 rows and its w2t row
  auto issue = [&](int k) {
    const int i = int(list[k] & kStreamNeuronBits), s = k % slots;
    char* dst = ring + size_t(s) * 3 * rowb;
    const char* gu = d.w13 + size_t(2 * i) * rowb;
    const char* dn = d.w2t + size_t(i) * rowb;
    for (int c = tid; c < 2 * nch; c += kStreamThreads) cp_async16(dst + size_t(c) * 16, gu + size_t(c) * 16);
    for (int c = tid; c < nch; c += kStreamThreads) cp_async16(dst + 2 * rowb + size_t(c) * 16, dn + size_t(c) * 16);
    if (DT == TS_I8 && tid == 0) {
      cp_async_small<8>(scales + 4 * s, d.s13 + 2 * i);
      cp_async_small<4>(scales + 4 * s + 2, d.s2 + i);
    }
  };
  for (int k = 0; k < slots; ++k) {
    if (k < cnt) issue(k);
    cp_async_commit();
  }

  // this thread's columns of x, in registers for the whole call
  float xr[TOK][CJ][V];
#pragma unroll
  for (int t = 0; t < TOK; ++t) {
    const float* xp = a.x + size_t(d.rows[min(t, nt - 1)]) * ldH;
#pragma unroll
    for (int j = 0; j < CJ; ++j) {
      const int c = tid + kStreamThreads * j;
#pragma unroll
      for (int q = 0; q < V / 4; ++q) {
        float4 v = make_float4(0.f, 0.f, 0.f, 0.f);
        if (c < nch && t < nt) v = *reinterpret_cast<const float4*>(xp + size_t(c) * V + 4 * q);
        xr[t][j][4 * q] = v.x;
        xr[t][j][4 * q + 1] = v.y;
        xr[t][j][4 * q + 2] = v.z;
        xr[t][j][4 * q + 3] = v.w;
      }
    }
  }
  float acc[TOK][CJ][V];
#pragma unroll
  for (int t = 0; t < TOK; ++t)
#pragma unroll
    for (int j = 0; j < CJ; ++j)
#pragma unroll
      for (int v = 0; v < V; ++v) acc[t][j][v] = 0.f;
  int act = 0;  // thread t < nt: token t's active neurons in this slice

  for (int k = 0; k < cnt; ++k) {
    // neuron k is group k: k + 1 groups must be done of slots + max(0, k - 1) committed
    cp_async_wait(k == 0 ? slots - 1 : slots - 2);
    __syncthreads();  // every thread's copies of neuron k landed; slot (k - 1) % slots is free
    if (k >= 1) {
      if (k - 1 + slots < cnt) issue(k - 1 + slots);
      cp_async_commit();
    }
    const int s = k % slots;
    const char* sg = ring + size_t(s) * 3 * rowb;
    float pg[TOK], pu[TOK];
#pragma unroll
    for (int t = 0; t < TOK; ++t) pg[t] = pu[t] = 0.f;
#pragma unroll
    for (int j = 0; j < CJ; ++j) {
      const int c = tid + kStreamThreads * j;
      if (c < nch) {
        float g[V], u[V];
        unpack16<DT>(*reinterpret_cast<const uint4*>(sg + size_t(c) * 16), g);
        unpack16<DT>(*reinterpret_cast<const uint4*>(sg + rowb + size_t(c) * 16), u);
#pragma unroll
        for (int t = 0; t < TOK; ++t)
#pragma unroll
          for (int v = 0; v < V; ++v) {
            pg[t] = fmaf(g[v], xr[t][j][v], pg[t]);
            pu[t] = fmaf(u[v], xr[t][j][v], pu[t]);
          }
      }
    }
    warp_sum(pg);
    warp_sum(pu);
    if (lane == 0)
#pragma unroll
      for (int t = 0; t < TOK; ++t) {
        red[warp][2 * t] = pg[t];
        red[warp][2 * t + 1] = pu[t];
      }
    __syncthreads();  // red is read below and next written after the next iteration's first barrier
    const uint32_t ent = list[k];
    float sgt = 1.f, sut = 1.f, sdn = 1.f;
    if (DT == TS_I8) {
      sgt = scales[4 * s];
      sut = scales[4 * s + 1];
      sdn = scales[4 * s + 2];
    }
    float h[TOK];
    bool any = false;
#pragma unroll
    for (int t = 0; t < TOK; ++t) {
      float gg = 0.f, uu = 0.f;
#pragma unroll
      for (int w = 0; w < NW; ++w) {
        gg += red[w][2 * t];
        uu += red[w][2 * t + 1];
      }
      gg *= sgt;
      uu *= sut;
      const bool on = t < nt && ((ent >> (24 + t)) & 1u) && gg > 0.f && uu > 0.f;
      h[t] = on ? gg * uu * sdn : 0.f;
      any |= on;
      if (t == tid) act += on;
    }
    if (any) {
#pragma unroll
      for (int j = 0; j < CJ; ++j) {
        const int c = tid + kStreamThreads * j;
        if (c < nch) {
          float f[V];
          unpack16<DT>(*reinterpret_cast<const uint4*>(sg + 2 * rowb + size_t(c) * 16), f);
#pragma unroll
          for (int t = 0; t < TOK; ++t)
#pragma unroll
            for (int v = 0; v < V; ++v) acc[t][j][v] = fmaf(h[t], f[v], acc[t][j][v]);
        }
      }
    }
  }
  cp_async_wait(0);  // only empty groups can be left; nothing may be in flight at exit
  if (a.stages < 2) {  // bench breakdown only: keep the compute (a store the compiler cannot drop)
    float keep = 0.f;
#pragma unroll
    for (int t = 0; t < TOK; ++t)
#pragma unroll
      for (int j = 0; j < CJ; ++j)
#pragma unroll
        for (int v = 0; v < V; ++v) keep += acc[t][j][v];
    if (keep == 1.2345f) a.y[0] = keep;
    return;
  }

  // ---- tail. The partial rows, group sums and counters are this launch's own scratch (an op's
  // launches have the arena to themselves; bench frames own theirs), so levels 1-2 run before
  // pdl_wait too: only level 3, which writes the outputs, waits for the previous kernel.
  const unsigned call = blockIdx.y;
  const int bx = blockIdx.x;
#pragma unroll
  for (int t = 0; t < TOK; ++t) {
    if (t >= nt) break;
    float* dst = a.partials + (size_t(d.q0 + t) * a.gxs + bx) * ldH;
#pragma unroll
    for (int j = 0; j < CJ; ++j) {
      const int c = tid + kStreamThreads * j;
      if (c < nch)
#pragma unroll
        for (int v = 0; v < V; v += 4)
          *reinterpret_cast<float4*>(dst + size_t(c) * V + v) =
              make_float4(acc[t][j][v], acc[t][j][v + 1], acc[t][j][v + 2], acc[t][j][v + 3]);
    }
  }
  if (tid < nt) a.blk_active[size_t(d.q0 + tid) * a.gxs + bx] = act;
  if (a.stages < 3) return;  // bench breakdown only

  // level 1: the last block of each group of gs blocks sums the group in block order
  const int g = bx / a.gs, b0 = g * a.gs, b1 = min(d.gx, b0 + a.gs);
  const int ng = (d.gx + a.gs - 1) / a.gs;
  unsigned* cnt_call = a.cnt + size_t(call) * (a.ngs + 1);
  if (!last_to_arrive(cnt_call + g, unsigned(b1 - b0), &s_flag)) return;
  if (ng == 1) {
    sum_rows(a.partials, a.gxs, d.q0, nt, b0, b1, ldH, a.e, ldH);
  } else {
    sum_rows(a.partials, a.gxs, d.q0, nt, b0, b1, ldH, a.gpart + size_t(g) * ldH, size_t(a.ngs) * ldH);
    // level 2: the last group of the call sums the groups in order
    if (!last_to_arrive(cnt_call + a.ngs, unsigned(ng), &s_flag)) return;
    sum_rows(a.gpart, a.ngs, d.q0, nt, 0, ng, ldH, a.e, ldH);
  }
  // the call's active counts: integer sums, so any order gives the same result
  __shared__ int s_count[TOK];
  if (tid < TOK) s_count[tid] = 0;
  __syncthreads();
  for (int i = tid; i < nt * d.gx; i += kStreamThreads) {
    const int t = i / d.gx;
    atomicAdd(&s_count[t], __ldcg(a.blk_active + size_t(d.q0 + t) * a.gxs + (i - t * d.gx)));
  }
  __syncthreads();
  pdl_wait();  // outputs from here on
  if (tid < nt) a.active[d.q0 + tid] = s_count[tid];
  // level 3: the last call writes y[r] = sum over r's (call, token) pairs in call order of w * e
  if (!last_to_arrive(a.cnt + size_t(a.ncalls) * (a.ngs + 1), unsigned(a.ncalls), &s_flag)) return;
  constexpr int CPT = kStreamMaxLd / 4 / kStreamThreads;
  const int q4 = ldH / 4;
  for (int r = 0; r < a.n_rows; ++r) {
    float y[CPT][4];
#pragma unroll
    for (int j = 0; j < CPT; ++j) y[j][0] = y[j][1] = y[j][2] = y[j][3] = 0.f;
    for (int i = a.row_start[r]; i < a.row_start[r + 1]; ++i) {
      const MoeContrib ct = a.contribs[i];
      float4 v[CPT];
#pragma unroll
      for (int j = 0; j < CPT; ++j) {
        const int c = tid + kStreamThreads * j;
        v[j] = c < q4 ? __ldcg(reinterpret_cast<const float4*>(a.e + size_t(ct.q) * ldH + size_t(c) * 4))
                      : make_float4(0.f, 0.f, 0.f, 0.f);
      }
#pragma unroll
      for (int j = 0; j < CPT; ++j) {
        y[j][0] += ct.w * v[j].x;
        y[j][1] += ct.w * v[j].y;
        y[j][2] += ct.w * v[j].z;
        y[j][3] += ct.w * v[j].w;
      }
    }
    float* yr = a.y + size_t(r) * a.H;
#pragma unroll
    for (int j = 0; j < CPT; ++j) {
      const int c = tid + kStreamThreads * j;
#pragma unroll
      for (int v = 0; v < 4; ++v)
        if (c * 4 + v < a.H) yr[c * 4 + v] = y[j][v];
    }
  }
}

}  // namespace tscuda
