// common.cuh — what the CUDA backend's files share: the backend and handle
// types, CUDA error checks, the per-op staging (pinned host buffers + one device
// arena, grown when a call needs more, never per call), and the device helpers:
// 16-byte streaming weight loads, dtype unpacking, warp sums and the hooks of
// programmatic dependent launch.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <cstddef>
#include <cstdint>
#include <string>
#include "../backend.h"
#include "cuda_internal.h"

namespace tscuda {

// ---------------------------------------------------------------- host side

// Stored rows are padded to a multiple of 16 elements (zeros), so every row
// starts 16-byte aligned for every dtype and kernels need no tail code.
constexpr int64_t kRowAlign = 16;
inline int64_t padded(int64_t n) { return (n + kRowAlign - 1) / kRowAlign * kRowAlign; }
inline size_t dtype_bytes(ts_dtype d) { return d == TS_F32 ? 4 : d == TS_I8 ? 1 : 2; }
const char* dtype_str(ts_dtype d);
inline size_t align256(size_t n) { return (n + 255) / 256 * 256; }

std::string cuda_error(cudaError_t e, const char* what, const char* file, int line);

// Every CUDA call is checked; the error names the call and where it was made.
#define TS_CUDA(call)                                                                          \
  do {                                                                                         \
    cudaError_t e_ = (call);                                                                   \
    if (e_ != cudaSuccess) return ::ts_fail(::tscuda::cuda_error(e_, #call, __FILE__, __LINE__)); \
  } while (0)
#define TS_CUDA_NULL(call)                                                 \
  do {                                                                     \
    cudaError_t e_ = (call);                                               \
    if (e_ != cudaSuccess) {                                               \
      ::ts_fail(::tscuda::cuda_error(e_, #call, __FILE__, __LINE__));      \
      return nullptr;                                                      \
    }                                                                      \
  } while (0)
#define TS_TRY(expr)          \
  do {                                \
    if ((expr) != 0) return -1;       \
  } while (0)

struct Backend : ts_backend {
  int device = 0;
  cudaStream_t stream = nullptr;
  int sms = 0, cc_major = 0, cc_minor = 0;
  size_t smem_optin = 0;  // largest dynamic shared memory a block may ask for
  size_t l2_bytes = 0;
  Tuning tuning;
  // staging for the op in flight: inputs packed into h_in, one copy up, kernels,
  // one copy down into h_out. Ops are serialised (api.cc holds the lock) and
  // synchronous, so one set of buffers serves every op.
  char* h_in = nullptr;
  size_t h_in_cap = 0;
  char* h_out = nullptr;
  size_t h_out_cap = 0;
  char* d_arena = nullptr;
  size_t d_arena_cap = 0;
  // the kernel-support limits read once: occupancy per (kernel, smem) is cached
  ~Backend() override;
  int activate();                                            // cudaSetDevice for the calling thread
  int ensure(size_t in_bytes, size_t out_bytes, size_t dev_bytes);  // grow the staging buffers
  bool pdl() const { return tuning.pdl && cc_major >= 9; }
};
inline Backend* as_cuda(ts_backend* b) { return static_cast<Backend*>(b); }
inline const Backend* as_cuda(const ts_backend* b) { return static_cast<const Backend*>(b); }

// A stored matrix in device memory: rows x ld elements of dtype (ld = padded(cols)),
// plus one f32 scale per row for I8.
struct Matrix {
  ts_dtype dtype = TS_F32;
  int64_t rows = 0, cols = 0, ld = 0;
  void* data = nullptr;
  float* scale = nullptr;
  size_t bytes() const { return size_t(rows * ld) * dtype_bytes(dtype) + (scale ? size_t(rows) * 4 : 0); }
  size_t row_bytes() const { return size_t(ld) * dtype_bytes(dtype); }
};
int matrix_alloc(Matrix& m, int64_t rows, int64_t cols, ts_dtype dtype);
void matrix_free(Matrix& m);
// Convert host matrix src into rows of dst: src row r goes to dst row r*row_mul + row_add.
// transpose: src is [dst.cols, dst.rows...] and its columns become dst rows.
int matrix_store(Backend* b, const ts_host_matrix* src, bool transpose, Matrix& dst, int64_t row_mul,
                 int64_t row_add);

struct Weight : ts_weight {
  Matrix m;
};
// w13: [2I][ld] with rows 2i = w1_i (gate), 2i+1 = w3_i (up): one neuron's two rows adjacent.
// w2t: [I][ld] = w2 transposed: neuron i's down column as a contiguous row.
struct Expert : ts_expert {
  Matrix w13, w2t;
};
struct Predictor : ts_predictor {
  Matrix fc1, fc2;
};
struct KvCache : ts_kvcache {
  void* k = nullptr;  // [layers][max_tokens][kv_heads][head_dim] of dtype (f32, bf16 or f16)
  void* v = nullptr;
};

// Device buffers of one op: [inputs | outputs | scratch] carved from the arena.
struct Layout {
  size_t in = 0, out = 0, scratch = 0;
  size_t add_in(size_t bytes) { size_t o = align256(in); in = o + bytes; return o; }
  size_t add_out(size_t bytes) { size_t o = align256(out); out = o + bytes; return o; }
  size_t add_scratch(size_t bytes) { size_t o = align256(scratch); scratch = o + bytes; return o; }
  size_t out_base() const { return align256(in); }
  size_t scratch_base() const { return out_base() + align256(out); }
  size_t total() const { return scratch_base() + align256(scratch); }
};

// Run one staged op: ensure buffers, pack(h_in, d_base), copy up, enqueue(d_base),
// copy down, wait, unpack(h_out). The callbacks return 0 or -1 (ts_fail set).
template <class Pack, class Enqueue, class Unpack>
int run_staged(Backend* b, const Layout& L, Pack&& pack, Enqueue&& enqueue, Unpack&& unpack) {
  TS_TRY(b->ensure(L.in, L.out, L.total()));
  char* d = b->d_arena;
  pack(b->h_in, d);
  if (L.in) TS_CUDA(cudaMemcpyAsync(d, b->h_in, L.in, cudaMemcpyHostToDevice, b->stream));
  TS_TRY(enqueue(d));
  if (L.out) TS_CUDA(cudaMemcpyAsync(b->h_out, d + L.out_base(), L.out, cudaMemcpyDeviceToHost, b->stream));
  TS_CUDA(cudaStreamSynchronize(b->stream));
  unpack(b->h_out);
  return 0;
}

// Launch with the backend's stream; `dependent`: the kernel starts with
// griddepcontrol.wait and may be launched before the previous kernel ends;
// `cluster` > 0: blocks per thread-block cluster (sm_90+).
template <typename... KArgs, typename... Args>
cudaError_t launch_clustered(Backend* b, bool dependent, void (*kernel)(KArgs...), dim3 grid, dim3 block, size_t smem,
                             int cluster, Args... args) {
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = grid;
  cfg.blockDim = block;
  cfg.dynamicSmemBytes = smem;
  cfg.stream = b->stream;
  cudaLaunchAttribute attr[2];
  cfg.attrs = attr;
  cfg.numAttrs = 0;
  if (dependent && b->pdl()) {
    attr[cfg.numAttrs].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attr[cfg.numAttrs].val.programmaticStreamSerializationAllowed = 1;
    cfg.numAttrs++;
  }
  if (cluster > 0) {
    attr[cfg.numAttrs].id = cudaLaunchAttributeClusterDimension;
    attr[cfg.numAttrs].val.clusterDim.x = unsigned(cluster);
    attr[cfg.numAttrs].val.clusterDim.y = attr[cfg.numAttrs].val.clusterDim.z = 1;
    cfg.numAttrs++;
  }
  return cudaLaunchKernelEx(&cfg, kernel, static_cast<KArgs>(args)...);
}
template <typename... KArgs, typename... Args>
cudaError_t launch(Backend* b, bool dependent, void (*kernel)(KArgs...), dim3 grid, dim3 block, size_t smem,
                   Args... args) {
  return launch_clustered(b, dependent, kernel, grid, block, smem, 0, args...);
}

// Raise a kernel's dynamic shared memory limit (once per kernel and size) and
// return how many of its blocks fit on one SM.
int prepare_kernel(Backend* b, const void* kernel, int threads, size_t smem, int* blocks_per_sm);
// Whether a cluster of `cluster` such blocks fits on the device at all (asked once per kernel, size and cluster;
// after prepare_kernel raised the kernel's shared memory limit).
bool cluster_fits(Backend* b, const void* kernel, int threads, size_t smem, int cluster);

// Row index of the largest group sizes: tokens handled per pass of a weight.
inline int tokens_per_pass(int64_t n) { return n <= 1 ? 1 : n <= 2 ? 2 : n <= 4 ? 4 : 8; }

// entry points: handle creation (weights.cu) and ops (one file each)
#include "../backend_ops.h"

// -------------------------------------------------------------- device side

// Elements per 16-byte load of a stored row.
template <int DT>
struct Vec {
  static constexpr int n = DT == TS_F32 ? 4 : DT == TS_I8 ? 16 : 8;
  static constexpr int bytes = DT == TS_F32 ? 4 : DT == TS_I8 ? 1 : 2;
};

// Programmatic dependent launch: wait for the previous kernel's results, and let
// the next kernel be scheduled. No-ops before sm_90 and when launched plainly.
__device__ __forceinline__ void pdl_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}
__device__ __forceinline__ void pdl_launch_next() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

// Weights are streamed: read once per call, so keep them out of L1 and first in
// line for eviction from L2 (leaving L2 to activations and prefetched rows).
__device__ __forceinline__ uint64_t l2_evict_first_policy() {
  uint64_t p;
  asm("createpolicy.fractional.L2::evict_first.b64 %0, 1.0;" : "=l"(p));
  return p;
}
__device__ __forceinline__ uint4 ld_stream16(const void* ptr, uint64_t pol) {
  uint4 r;
  asm("ld.global.nc.L1::no_allocate.L2::cache_hint.v4.u32 {%0, %1, %2, %3}, [%4], %5;"
      : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w)
      : "l"(ptr), "l"(pol));
  return r;
}
__device__ __forceinline__ uint2 ld_stream8(const void* ptr, uint64_t pol) {
  uint2 r;
  asm("ld.global.nc.L1::no_allocate.L2::cache_hint.v2.u32 {%0, %1}, [%2], %3;"
      : "=r"(r.x), "=r"(r.y)
      : "l"(ptr), "l"(pol));
  return r;
}
// Asynchronous copies global -> shared (sm_80+): a block keeps many rows in
// flight without holding them in registers. Each thread waits for its own
// copies (wait_group), then a __syncthreads makes every thread's copies visible.
// (No L2::cache_hint here: with it the copy was an illegal instruction on an H200, CUDA 13.)
__device__ __forceinline__ void cp_async16(void* smem, const void* gmem) {
  const unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(s), "l"(gmem) : "memory");
}
template <int BYTES>  // 4 or 8
__device__ __forceinline__ void cp_async_small(void* smem, const void* gmem) {
  const unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  asm volatile("cp.async.ca.shared.global [%0], [%1], %2;" ::"r"(s), "l"(gmem), "n"(BYTES) : "memory");
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;" ::: "memory"); }
// Wait until at most n of this thread's committed groups are still in flight (n < 8).
__device__ __forceinline__ void cp_async_wait(int n) {
  switch (n) {
    case 0: asm volatile("cp.async.wait_group 0;" ::: "memory"); break;
    case 1: asm volatile("cp.async.wait_group 1;" ::: "memory"); break;
    case 2: asm volatile("cp.async.wait_group 2;" ::: "memory"); break;
    case 3: asm volatile("cp.async.wait_group 3;" ::: "memory"); break;
    case 4: asm volatile("cp.async.wait_group 4;" ::: "memory"); break;
    case 5: asm volatile("cp.async.wait_group 5;" ::: "memory"); break;
    case 6: asm volatile("cp.async.wait_group 6;" ::: "memory"); break;
    default: asm volatile("cp.async.wait_group 7;" ::: "memory"); break;
  }
}
__device__ __forceinline__ void prefetch_l2(const void* ptr) { asm volatile("prefetch.global.L2 [%0];" ::"l"(ptr)); }

// 4 bytes -> 2 (bf16, f16) or 4 (i8) floats.
__device__ __forceinline__ void unpack_bf16x2(uint32_t w, float* f) {
  f[0] = __uint_as_float(w << 16);
  f[1] = __uint_as_float(w & 0xffff0000u);
}
__device__ __forceinline__ void unpack_f16x2(uint32_t w, float* f) {
  __half2 h;
  memcpy(&h, &w, 4);
  float2 v = __half22float2(h);
  f[0] = v.x;
  f[1] = v.y;
}
// int8 -> float without I2F: bias to unsigned, splice into the mantissa of 2^23, subtract.
__device__ __forceinline__ void unpack_i8x4(uint32_t w, float* f) {
  const uint32_t u = w ^ 0x80808080u;
  f[0] = __uint_as_float(__byte_perm(u, 0x4B000000u, 0x7440)) - 8388736.f;
  f[1] = __uint_as_float(__byte_perm(u, 0x4B000000u, 0x7441)) - 8388736.f;
  f[2] = __uint_as_float(__byte_perm(u, 0x4B000000u, 0x7442)) - 8388736.f;
  f[3] = __uint_as_float(__byte_perm(u, 0x4B000000u, 0x7443)) - 8388736.f;
}
template <int DT>
__device__ __forceinline__ void unpack_word(uint32_t w, float* f) {
  if constexpr (DT == TS_F32) {
    f[0] = __uint_as_float(w);
  } else if constexpr (DT == TS_BF16) {
    unpack_bf16x2(w, f);
  } else if constexpr (DT == TS_F16) {
    unpack_f16x2(w, f);
  } else {
    unpack_i8x4(w, f);
  }
}
// 16 bytes -> Vec<DT>::n floats
template <int DT>
__device__ __forceinline__ void unpack16(const uint4& v, float* f) {
  constexpr int per = Vec<DT>::n / 4;
  unpack_word<DT>(v.x, f);
  unpack_word<DT>(v.y, f + per);
  unpack_word<DT>(v.z, f + 2 * per);
  unpack_word<DT>(v.w, f + 3 * per);
}

// One element of a stored row as f32 (scale not applied).
__device__ __forceinline__ float stored_at(const void* row, int dt, int64_t i) {
  switch (dt) {
    case TS_F32: return static_cast<const float*>(row)[i];
    case TS_F16: return __half2float(static_cast<const __half*>(row)[i]);
    case TS_BF16: return __bfloat162float(static_cast<const __nv_bfloat16*>(row)[i]);
    default: return float(static_cast<const int8_t*>(row)[i]);
  }
}

template <int N>
__device__ __forceinline__ void warp_sum(float (&v)[N]) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1)
#pragma unroll
    for (int i = 0; i < N; ++i) v[i] += __shfl_xor_sync(0xffffffffu, v[i], o);
}
template <int A, int B>
__device__ __forceinline__ void warp_sum(float (&v)[A][B]) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1)
#pragma unroll
    for (int i = 0; i < A; ++i)
#pragma unroll
      for (int j = 0; j < B; ++j) v[i][j] += __shfl_xor_sync(0xffffffffu, v[i][j], o);
}

// acc[r][t] += dot(row r, x of token t) over this lane's 16-byte chunks
// (chunks lane, lane+32, ...; nch chunks per row). Rows in global memory, x in
// shared memory as f32 rows of xld floats (zero past the real columns). U
// chunks per row are loaded before the first is used: NR*U loads in flight.
template <int DT, int TOK, int NR, int U>
__device__ __forceinline__ void warp_dot(const char* const (&rows)[NR], int nch, const float* xs, int xld,
                                         float (&acc)[NR][TOK], int lane, uint64_t pol) {
  constexpr int VEC = Vec<DT>::n;
  for (int c0 = lane; c0 < nch; c0 += 32 * U) {
    uint4 w[U][NR];
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int c = c0 + 32 * u;
#pragma unroll
      for (int r = 0; r < NR; ++r) w[u][r] = c < nch ? ld_stream16(rows[r] + size_t(c) * 16, pol) : make_uint4(0, 0, 0, 0);
    }
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int c = c0 + 32 * u;
      if (c < nch) {
        float wf[NR][VEC];
#pragma unroll
        for (int r = 0; r < NR; ++r) unpack16<DT>(w[u][r], wf[r]);
#pragma unroll
        for (int t = 0; t < TOK; ++t) {
          const float4* xp = reinterpret_cast<const float4*>(xs + size_t(t) * xld + size_t(c) * VEC);
#pragma unroll
          for (int q = 0; q < VEC / 4; ++q) {
            const float4 xv = xp[q];
#pragma unroll
            for (int r = 0; r < NR; ++r) {
              float a = acc[r][t];
              a = fmaf(wf[r][4 * q + 0], xv.x, a);
              a = fmaf(wf[r][4 * q + 1], xv.y, a);
              a = fmaf(wf[r][4 * q + 2], xv.z, a);
              a = fmaf(wf[r][4 * q + 3], xv.w, a);
              acc[r][t] = a;
            }
          }
        }
      }
    }
  }
}

}  // namespace tscuda
