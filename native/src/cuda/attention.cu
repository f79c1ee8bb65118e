// attention.cu — causal GQA attention over device-resident KV caches (one per
// sequence), and the caches themselves.
// Three kernels: write every row's k/v into its cache first (rows of one
// prefill chunk see each other), then split-K attention: a block takes one
// (row, kv head, chunk of positions) and all the query heads that share the kv
// head, so each k/v vector is read once per group; its warps run an online
// softmax over interleaved positions and are merged in shared memory; a last
// kernel merges the chunks of each (row, head). Scores scaled by 1/sqrt(head_dim).
// Caches store f32, bf16 or f16 (rounded when written; one dtype per call); the math is f32.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <new>
#include <string>
#include "common.cuh"

namespace tscuda {

struct AttnRow {
  void* k_dst;         // where this row's k goes (its layer, its position)
  void* v_dst;
  const void* k_base;  // position 0 of its cache at this layer
  const void* v_base;
  int pos;
  int pad;
};

struct AttnArgs {
  const AttnRow* rows;
  const float* q;  // [n][heads * hd]
  const float* k;  // [n][kvh * hd]
  const float* v;
  float* part;     // [n][kvh][ns][2G + G*hd]: m[G], l[G], acc[G][hd]
  float* out;      // [n][heads * hd]
  int heads, kvh, hd, group, chunk, ns;
  float scale;
};

namespace {

constexpr int kAttnThreads = 128;  // 4 warps per (row, kv head, chunk)
constexpr int kGroupMax = 8;       // query heads per kv head
constexpr int kChunk = 256;        // positions per block

template <int DT>
__device__ __forceinline__ float kv_load(const void* p, size_t i) {
  if constexpr (DT == TS_F32) return static_cast<const float*>(p)[i];
  else if constexpr (DT == TS_BF16) return __bfloat162float(static_cast<const __nv_bfloat16*>(p)[i]);
  else return __half2float(static_cast<const __half*>(p)[i]);
}

template <int DT>
__device__ __forceinline__ void kv_store(void* p, size_t i, float x) {
  if constexpr (DT == TS_F32) static_cast<float*>(p)[i] = x;
  else if constexpr (DT == TS_BF16) static_cast<__nv_bfloat16*>(p)[i] = __float2bfloat16_rn(x);
  else static_cast<__half*>(p)[i] = __float2half_rn(x);
}

template <int DT>
__global__ void k_kv_write(AttnArgs a) {
  pdl_wait();
  pdl_launch_next();
  const int i = blockIdx.x;
  const AttnRow r = a.rows[i];
  const int w = a.kvh * a.hd;
  for (int e = threadIdx.x; e < w; e += blockDim.x) {
    kv_store<DT>(r.k_dst, e, a.k[size_t(i) * w + e]);
    kv_store<DT>(r.v_dst, e, a.v[size_t(i) * w + e]);
  }
}

template <int DPL, int DT>
__global__ void __launch_bounds__(kAttnThreads) k_attn(AttnArgs a) {
  pdl_wait();
  pdl_launch_next();
  const int s = blockIdx.x, g = blockIdx.y, i = blockIdx.z;
  const AttnRow row = a.rows[i];
  const int len = row.pos + 1;
  const int p0 = s * a.chunk;
  if (p0 >= len) return;
  const int p1 = min(len, p0 + a.chunk);
  const int G = a.group, hd = a.hd, kvh = a.kvh;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;

  float q[kGroupMax][DPL], acc[kGroupMax][DPL], m[kGroupMax], l[kGroupMax];
#pragma unroll
  for (int gi = 0; gi < kGroupMax; ++gi) {
    m[gi] = -INFINITY;
    l[gi] = 0.f;
#pragma unroll
    for (int j = 0; j < DPL; ++j) {
      const int d = j * 32 + lane;
      q[gi][j] = (gi < G && d < hd) ? a.q[size_t(i) * a.heads * hd + size_t(g * G + gi) * hd + d] * a.scale : 0.f;
      acc[gi][j] = 0.f;
    }
  }
  for (int p = p0 + warp; p < p1; p += nwarps) {
    const size_t at = (size_t(p) * kvh + g) * hd;
    float kv[DPL], vv[DPL];
#pragma unroll
    for (int j = 0; j < DPL; ++j) {
      const int d = j * 32 + lane;
      kv[j] = d < hd ? kv_load<DT>(row.k_base, at + d) : 0.f;
      vv[j] = d < hd ? kv_load<DT>(row.v_base, at + d) : 0.f;
    }
    float sc[kGroupMax];
#pragma unroll
    for (int gi = 0; gi < kGroupMax; ++gi) {
      float t = 0.f;
#pragma unroll
      for (int j = 0; j < DPL; ++j) t = fmaf(q[gi][j], kv[j], t);
      sc[gi] = t;
    }
    warp_sum(sc);
#pragma unroll
    for (int gi = 0; gi < kGroupMax; ++gi) {
      if (gi >= G) break;
      const float mn = fmaxf(m[gi], sc[gi]);
      const float c = __expf(m[gi] - mn), pw = __expf(sc[gi] - mn);
      l[gi] = l[gi] * c + pw;
#pragma unroll
      for (int j = 0; j < DPL; ++j) acc[gi][j] = fmaf(acc[gi][j], c, pw * vv[j]);
      m[gi] = mn;
    }
  }

  // merge the warps
  __shared__ float s_m[kAttnThreads / 32][kGroupMax], s_l[kAttnThreads / 32][kGroupMax];
  __shared__ float s_acc[kAttnThreads / 32][kGroupMax][DPL * 32];
#pragma unroll
  for (int gi = 0; gi < kGroupMax; ++gi) {
    if (lane == 0) {
      s_m[warp][gi] = m[gi];
      s_l[warp][gi] = l[gi];
    }
#pragma unroll
    for (int j = 0; j < DPL; ++j) s_acc[warp][gi][j * 32 + lane] = acc[gi][j];
  }
  __syncthreads();
  const int stride = 2 * G + G * hd;
  float* out = a.part + ((size_t(i) * kvh + g) * a.ns + s) * stride;
  for (int e = threadIdx.x; e < G * hd; e += blockDim.x) {
    const int gi = e / hd, d = e - gi * hd;
    float M = -INFINITY;
    for (int w = 0; w < nwarps; ++w) M = fmaxf(M, s_m[w][gi]);
    float L = 0.f, A = 0.f;
    for (int w = 0; w < nwarps; ++w) {
      const float f = __expf(s_m[w][gi] - M);  // 0 for a warp that saw no position
      L += s_l[w][gi] * f;
      A += s_acc[w][gi][d] * f;
    }
    out[2 * G + e] = A;
    if (d == 0) {
      out[gi] = M;
      out[G + gi] = L;
    }
  }
}

// out[i][h][d] from the chunks of (row i, kv head h / G).
__global__ void k_attn_merge(AttnArgs a) {
  pdl_wait();
  pdl_launch_next();
  const int i = blockIdx.x, h = blockIdx.y;
  const int G = a.group, g = h / G, gi = h - g * G, hd = a.hd;
  const int len = a.rows[i].pos + 1;
  const int nsp = (len + a.chunk - 1) / a.chunk;
  const int stride = 2 * G + G * hd;
  const float* base = a.part + (size_t(i) * a.kvh + g) * a.ns * stride;
  for (int d = threadIdx.x; d < hd; d += blockDim.x) {
    float M = -INFINITY;
    for (int s = 0; s < nsp; ++s) M = fmaxf(M, base[size_t(s) * stride + gi]);
    float L = 0.f, A = 0.f;
    for (int s = 0; s < nsp; ++s) {
      const float* p = base + size_t(s) * stride;
      const float f = __expf(p[gi] - M);
      L += p[G + gi] * f;
      A += p[2 * G + gi * hd + d] * f;
    }
    a.out[size_t(i) * a.heads * hd + size_t(h) * hd + d] = A / L;
  }
}

using AttnKernel = void (*)(AttnArgs);
template <int DT>
AttnKernel attn_kernel(int64_t hd) {
  if (hd <= 32) return k_attn<1, DT>;
  if (hd <= 64) return k_attn<2, DT>;
  if (hd <= 128) return k_attn<4, DT>;
  return k_attn<8, DT>;
}

// The write and attention kernels for the caches' dtype.
void kernels_for(ts_dtype dt, int64_t hd, AttnKernel* write, AttnKernel* attn) {
  switch (dt) {
    case TS_BF16: *write = k_kv_write<TS_BF16>, *attn = attn_kernel<TS_BF16>(hd); break;
    case TS_F16: *write = k_kv_write<TS_F16>, *attn = attn_kernel<TS_F16>(hd); break;
    default: *write = k_kv_write<TS_F32>, *attn = attn_kernel<TS_F32>(hd); break;
  }
}

}  // namespace

int attention(ts_backend* tb, int64_t layer, int64_t n, ts_kvcache* const* caches, const int32_t* positions,
              int64_t heads, int64_t kv_heads, int64_t head_dim, const float* q, const float* k, const float* v,
              float* out) {
  Backend* b = as_cuda(tb);
  TS_TRY(b->activate());
  const int64_t G = heads / kv_heads;
  if (G > kGroupMax) return ts_fail("ts_attention: heads / kv_heads = " + std::to_string(G) + " is more than the CUDA kernel's " + std::to_string(kGroupMax));
  if (head_dim > 256) return ts_fail("ts_attention: head_dim = " + std::to_string(head_dim) + " is more than the CUDA kernel's 256");
  if (n > 65535) return ts_fail("ts_attention: n = " + std::to_string(n) + " is more rows than one CUDA call takes (65535)");
  int64_t longest = 0;
  for (int64_t i = 0; i < n; ++i) longest = std::max<int64_t>(longest, int64_t(positions[i]) + 1);
  const int64_t ns = (longest + kChunk - 1) / kChunk;
  const size_t qb = size_t(n * heads * head_dim) * 4, kb = size_t(n * kv_heads * head_dim) * 4;
  Layout L;
  const size_t q_off = L.add_in(qb), k_off = L.add_in(kb), v_off = L.add_in(kb);
  const size_t r_off = L.add_in(size_t(n) * sizeof(AttnRow));
  const size_t o_off = L.add_out(qb);
  const size_t p_off = L.add_scratch(size_t(n * kv_heads * ns * (2 * G + G * head_dim)) * 4);
  AttnArgs a = {};
  a.heads = int(heads);
  a.kvh = int(kv_heads);
  a.hd = int(head_dim);
  a.group = int(G);
  a.chunk = kChunk;
  a.ns = int(ns);
  a.scale = 1.0f / std::sqrt(float(head_dim));
  return run_staged(
      b, L,
      [&](char* h, char*) {
        std::memcpy(h + q_off, q, qb);
        std::memcpy(h + k_off, k, kb);
        std::memcpy(h + v_off, v, kb);
        auto* rows = reinterpret_cast<AttnRow*>(h + r_off);
        for (int64_t i = 0; i < n; ++i) {
          auto* c = static_cast<KvCache*>(caches[i]);
          const size_t row = size_t(kv_heads * head_dim * c->elem());  // bytes per position
          const size_t base = size_t(layer * c->max_tokens) * row, at = base + size_t(positions[i]) * row;
          char *k = static_cast<char*>(c->k), *v = static_cast<char*>(c->v);
          rows[i] = AttnRow{k + at, v + at, k + base, v + base, positions[i], 0};
        }
      },
      [&](char* d) {
        a.rows = reinterpret_cast<const AttnRow*>(d + r_off);
        a.q = reinterpret_cast<const float*>(d + q_off);
        a.k = reinterpret_cast<const float*>(d + k_off);
        a.v = reinterpret_cast<const float*>(d + v_off);
        a.part = reinterpret_cast<float*>(d + L.scratch_base() + p_off);
        a.out = reinterpret_cast<float*>(d + L.out_base() + o_off);
        AttnKernel write, attn;
        kernels_for(caches[0]->dtype, head_dim, &write, &attn);  // one dtype per call (checked by the API)
        TS_CUDA(launch(b, true, write, dim3(unsigned(n)), dim3(256), 0, a));
        TS_CUDA(launch(b, true, attn, dim3(unsigned(ns), unsigned(kv_heads), unsigned(n)), dim3(kAttnThreads), 0, a));
        TS_CUDA(launch(b, true, k_attn_merge, dim3(unsigned(n), unsigned(heads)),
                       dim3(unsigned(std::min<int64_t>(256, (head_dim + 31) / 32 * 32))), 0, a));
        return 0;
      },
      [&](const char* h) { std::memcpy(out, h + o_off, qb); });
}

// ------------------------------------------------------------------ caches

ts_kvcache* kvcache_create(ts_backend* tb, int64_t layers, int64_t max_tokens, int64_t kv_heads, int64_t head_dim,
                           ts_dtype dtype) {
  Backend* b = as_cuda(tb);
  if (b->activate()) return nullptr;
  auto* c = new (std::nothrow) KvCache();
  if (!c) return ts_fail("out of memory"), nullptr;
  c->dtype = dtype;
  const size_t bytes = size_t(layers * max_tokens * kv_heads * head_dim * c->elem());
  cudaError_t e = cudaMalloc(&c->k, bytes);
  if (e == cudaSuccess) e = cudaMalloc(&c->v, bytes);
  if (e == cudaSuccess) e = cudaMemsetAsync(c->k, 0, bytes, b->stream);
  if (e == cudaSuccess) e = cudaMemsetAsync(c->v, 0, bytes, b->stream);
  if (e == cudaSuccess) e = cudaStreamSynchronize(b->stream);
  if (e != cudaSuccess) {
    cudaGetLastError();
    ts_fail("ts_kvcache_create: cannot allocate " + std::to_string(2 * bytes) + " bytes of device memory for the KV cache: " +
            cudaGetErrorString(e));
    if (c->k) cudaFree(c->k);
    if (c->v) cudaFree(c->v);
    delete c;
    return nullptr;
  }
  c->owner = b;
  c->layers = layers;
  c->max_tokens = max_tokens;
  c->kv_heads = kv_heads;
  c->head_dim = head_dim;
  return c;
}

void kvcache_free(ts_kvcache* tc) {
  auto* c = static_cast<KvCache*>(tc);
  as_cuda(c->owner)->activate();
  cudaFree(c->k);
  cudaFree(c->v);
  delete c;
}

// New zeroed buffers, then one 2-D copy per tensor: layer l's old positions
// (old_max rows) land at the start of its new slot (new_max rows).
int kvcache_grow(ts_kvcache* tc, int64_t max_tokens) {
  auto* c = static_cast<KvCache*>(tc);
  Backend* b = as_cuda(c->owner);
  TS_TRY(b->activate());
  const size_t row = size_t(c->kv_heads * c->head_dim * c->elem());
  const size_t bytes = size_t(c->layers * max_tokens) * row;
  const size_t old_pitch = size_t(c->max_tokens) * row, new_pitch = size_t(max_tokens) * row;
  void *k = nullptr, *v = nullptr;
  cudaError_t e = cudaMalloc(&k, bytes);
  if (e == cudaSuccess) e = cudaMalloc(&v, bytes);
  if (e == cudaSuccess) e = cudaMemsetAsync(k, 0, bytes, b->stream);
  if (e == cudaSuccess) e = cudaMemsetAsync(v, 0, bytes, b->stream);
  if (e == cudaSuccess)
    e = cudaMemcpy2DAsync(k, new_pitch, c->k, old_pitch, old_pitch, size_t(c->layers), cudaMemcpyDeviceToDevice, b->stream);
  if (e == cudaSuccess)
    e = cudaMemcpy2DAsync(v, new_pitch, c->v, old_pitch, old_pitch, size_t(c->layers), cudaMemcpyDeviceToDevice, b->stream);
  if (e == cudaSuccess) e = cudaStreamSynchronize(b->stream);
  if (e != cudaSuccess) {
    cudaGetLastError();
    if (k) cudaFree(k);
    if (v) cudaFree(v);
    return ts_fail("ts_kvcache_grow: cannot grow the KV cache to " + std::to_string(2 * bytes) + " bytes of device memory: " +
                   cudaGetErrorString(e));
  }
  cudaFree(c->k);
  cudaFree(c->v);
  c->k = k;
  c->v = v;
  c->max_tokens = max_tokens;
  return 0;
}

// One 2-D copy per tensor: `tokens` rows of each layer, between the two caches' layer pitches.
int kvcache_copy(ts_kvcache* tdst, const ts_kvcache* tsrc, int64_t tokens) {
  auto* dst = static_cast<KvCache*>(tdst);
  const auto* src = static_cast<const KvCache*>(tsrc);
  Backend* b = as_cuda(dst->owner);
  TS_TRY(b->activate());
  const size_t row = size_t(dst->kv_heads * dst->head_dim * dst->elem());
  const size_t dpitch = size_t(dst->max_tokens) * row, spitch = size_t(src->max_tokens) * row, width = size_t(tokens) * row;
  cudaError_t e = cudaMemcpy2DAsync(dst->k, dpitch, src->k, spitch, width, size_t(dst->layers), cudaMemcpyDeviceToDevice, b->stream);
  if (e == cudaSuccess)
    e = cudaMemcpy2DAsync(dst->v, dpitch, src->v, spitch, width, size_t(dst->layers), cudaMemcpyDeviceToDevice, b->stream);
  if (e == cudaSuccess) e = cudaStreamSynchronize(b->stream);
  if (e != cudaSuccess) {
    cudaGetLastError();
    return ts_fail(std::string("ts_kvcache_copy: ") + cudaGetErrorString(e));
  }
  return 0;
}

}  // namespace tscuda
