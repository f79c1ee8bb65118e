// weights.cu — uploading weights once, in the store dtype, at create time.
// The host data goes up in its source dtype (F32/F16/BF16) and is converted on
// the GPU: rounding to f16/bf16 is round-to-nearest-even, I8 uses one scale per
// stored row (largest |value| -> 127, q = rint(v / scale)), exactly as the CPU
// backend does, so both devices hold the same numbers. Experts are packed for
// the sparse FFN: w1/w3 rows of a neuron adjacent, w2 transposed to [I, H].
#include <algorithm>
#include <new>
#include <string>
#include "common.cuh"

namespace tscuda {
namespace {

__device__ __forceinline__ float source_at(const void* p, int dt, size_t i) {
  switch (dt) {
    case TS_F16: return __half2float(static_cast<const __half*>(p)[i]);
    case TS_BF16: return __bfloat162float(static_cast<const __nv_bfloat16*>(p)[i]);
    default: return static_cast<const float*>(p)[i];
  }
}

// One block per row: src rows (source dtype, src_ld elements apart) -> dst rows
// r*row_mul + row_add in the store dtype, zero-padded to dst_ld.
__global__ void k_store_rows(const void* src, int src_dt, int64_t src_ld, int64_t rows, int64_t cols, void* dst,
                             int dst_dt, int64_t dst_ld, float* scale, int64_t row_mul, int64_t row_add) {
  __shared__ float s_max[32];
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const size_t s0 = size_t(r) * size_t(src_ld);
    const int64_t dr = r * row_mul + row_add;
    float inv = 1.f;
    if (dst_dt == TS_I8) {
      float mx = 0.f;
      for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) mx = fmaxf(mx, fabsf(source_at(src, src_dt, s0 + c)));
      for (int o = 16; o > 0; o >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
      if ((threadIdx.x & 31) == 0) s_max[threadIdx.x >> 5] = mx;
      __syncthreads();
      mx = 0.f;
      for (int w = 0; w < int(blockDim.x >> 5); ++w) mx = fmaxf(mx, s_max[w]);
      __syncthreads();  // s_max is reused by the next row
      // isfinite: a NaN/Inf row stores zeros with scale 0 (as the CPU does)
      const bool ok = mx > 0.f && mx <= 3.4028235e38f;
      const float sc = ok ? __fdiv_rn(mx, 127.f) : 0.f;
      if (threadIdx.x == 0) scale[dr] = sc;
      inv = sc;  // divisor below
      int8_t* d = static_cast<int8_t*>(dst) + size_t(dr) * size_t(dst_ld);
      for (int64_t c = threadIdx.x; c < dst_ld; c += blockDim.x) {
        int q = 0;
        if (ok && c < cols) {
          const float v = rintf(__fdiv_rn(source_at(src, src_dt, s0 + c), inv));
          q = int(fminf(127.f, fmaxf(-127.f, v)));
        }
        d[c] = int8_t(q);
      }
      continue;
    }
    const size_t d0 = size_t(dr) * size_t(dst_ld);
    for (int64_t c = threadIdx.x; c < dst_ld; c += blockDim.x) {
      const float v = c < cols ? source_at(src, src_dt, s0 + c) : 0.f;
      switch (dst_dt) {
        case TS_F32: static_cast<float*>(dst)[d0 + c] = v; break;
        case TS_F16: static_cast<__half*>(dst)[d0 + c] = __float2half_rn(v); break;
        default: static_cast<__nv_bfloat16*>(dst)[d0 + c] = __float2bfloat16_rn(v); break;
      }
    }
  }
}

// dst[c][r] = src[r][c] as f32 (src [rows, cols] in its source dtype).
__global__ void k_transpose_f32(const void* src, int src_dt, int64_t rows, int64_t cols, float* dst) {
  __shared__ float tile[32][33];
  const int64_t c0 = int64_t(blockIdx.x) * 32, r0 = int64_t(blockIdx.y) * 32;
  for (int i = threadIdx.y; i < 32; i += blockDim.y) {
    const int64_t r = r0 + i, c = c0 + threadIdx.x;
    tile[i][threadIdx.x] = (r < rows && c < cols) ? source_at(src, src_dt, size_t(r) * size_t(cols) + c) : 0.f;
  }
  __syncthreads();
  for (int i = threadIdx.y; i < 32; i += blockDim.y) {
    const int64_t c = c0 + i, r = r0 + threadIdx.x;
    if (c < cols && r < rows) dst[size_t(c) * size_t(rows) + r] = tile[threadIdx.x][i];
  }
}

size_t source_bytes(ts_dtype d) { return d == TS_F32 ? 4 : 2; }

// Device buffers freed at scope exit (create-time temporaries only).
struct Temp {
  void* p = nullptr;
  ~Temp() {
    if (p) cudaFree(p);
  }
};

}  // namespace

int matrix_alloc(Matrix& m, int64_t rows, int64_t cols, ts_dtype dtype) {
  m.dtype = dtype;
  m.rows = rows;
  m.cols = cols;
  m.ld = padded(cols);
  const size_t bytes = size_t(rows * m.ld) * dtype_bytes(dtype);
  cudaError_t e = cudaMalloc(&m.data, bytes);
  if (e != cudaSuccess) {
    m.data = nullptr;
    cudaGetLastError();
    return ts_fail("cuda: out of device memory for a " + std::to_string(rows) + " x " + std::to_string(cols) + " " +
                   dtype_str(dtype) + " matrix (" + std::to_string(bytes) + " bytes): " + cudaGetErrorString(e));
  }
  if (dtype == TS_I8) {
    e = cudaMalloc(reinterpret_cast<void**>(&m.scale), size_t(rows) * 4);
    if (e != cudaSuccess) {
      m.scale = nullptr;
      cudaGetLastError();
      return ts_fail(std::string("cuda: out of device memory for row scales: ") + cudaGetErrorString(e));
    }
  }
  return 0;
}

void matrix_free(Matrix& m) {
  if (m.data) cudaFree(m.data);
  if (m.scale) cudaFree(m.scale);
  m.data = nullptr;
  m.scale = nullptr;
}

int matrix_store(Backend* b, const ts_host_matrix* src, bool transpose, Matrix& dst, int64_t row_mul,
                 int64_t row_add) {
  const size_t es = source_bytes(src->dtype);
  const int threads = 256;
  if (!transpose) {
    // in chunks of rows, so a big embedding needs no big temporary
    const int64_t chunk = std::max<int64_t>(1, int64_t((size_t(64) << 20) / (size_t(src->cols) * es)));
    const int64_t n0 = std::min(chunk, src->rows);
    Temp raw;
    TS_CUDA(cudaMalloc(&raw.p, size_t(n0 * src->cols) * es));
    for (int64_t r0 = 0; r0 < src->rows; r0 += chunk) {
      const int64_t n = std::min(chunk, src->rows - r0);
      TS_CUDA(cudaMemcpyAsync(raw.p, static_cast<const char*>(src->data) + size_t(r0 * src->cols) * es,
                              size_t(n * src->cols) * es, cudaMemcpyHostToDevice, b->stream));
      const unsigned grid = unsigned(std::min<int64_t>(n, 65535));
      k_store_rows<<<grid, threads, 0, b->stream>>>(raw.p, src->dtype, src->cols, n, src->cols, dst.data, dst.dtype,
                                                    dst.ld, dst.scale, row_mul, row_add + r0 * row_mul);
      TS_CUDA(cudaGetLastError());
    }
    TS_CUDA(cudaStreamSynchronize(b->stream));
    return 0;
  }
  // transposed: the whole source up, transpose to f32 [cols, rows], then store rows
  Temp raw, t32;
  TS_CUDA(cudaMalloc(&raw.p, size_t(src->rows * src->cols) * es));
  TS_CUDA(cudaMalloc(&t32.p, size_t(src->rows * src->cols) * 4));
  TS_CUDA(cudaMemcpyAsync(raw.p, src->data, size_t(src->rows * src->cols) * es, cudaMemcpyHostToDevice, b->stream));
  dim3 grid(unsigned((src->cols + 31) / 32), unsigned((src->rows + 31) / 32));
  if (grid.y > 65535) return ts_fail("cuda: matrix too tall to transpose (" + std::to_string(src->rows) + " rows)");
  k_transpose_f32<<<grid, dim3(32, 8), 0, b->stream>>>(raw.p, src->dtype, src->rows, src->cols,
                                                        static_cast<float*>(t32.p));
  TS_CUDA(cudaGetLastError());
  const unsigned g2 = unsigned(std::min<int64_t>(src->cols, 65535));
  k_store_rows<<<g2, threads, 0, b->stream>>>(t32.p, TS_F32, src->rows, src->cols, src->rows, dst.data, dst.dtype,
                                              dst.ld, dst.scale, row_mul, row_add);
  TS_CUDA(cudaGetLastError());
  TS_CUDA(cudaStreamSynchronize(b->stream));
  return 0;
}

// ------------------------------------------------------------------ handles

ts_weight* weight_create(ts_backend* tb, const ts_host_matrix* m, ts_dtype store) {
  Backend* b = as_cuda(tb);
  if (b->activate()) return nullptr;
  auto* w = new (std::nothrow) Weight();
  if (!w) return ts_fail("out of memory"), nullptr;
  if (matrix_alloc(w->m, m->rows, m->cols, store) || matrix_store(b, m, false, w->m, 1, 0)) {
    matrix_free(w->m);
    delete w;
    return nullptr;
  }
  w->owner = b;
  w->rows = m->rows;
  w->cols = m->cols;
  w->dtype = store;
  b->weight_bytes += int64_t(w->m.bytes());
  return w;
}

void weight_free(ts_weight* tw) {
  auto* w = static_cast<Weight*>(tw);
  Backend* b = as_cuda(w->owner);
  b->activate();
  b->weight_bytes -= int64_t(w->m.bytes());
  matrix_free(w->m);
  delete w;
}

ts_expert* expert_create(ts_backend* tb, const ts_host_matrix* w1, const ts_host_matrix* w3, const ts_host_matrix* w2,
                         ts_dtype store) {
  Backend* b = as_cuda(tb);
  if (b->activate()) return nullptr;
  const int64_t I = w1->rows, H = w1->cols;
  if (I > (int64_t(1) << 30) || H > (int64_t(1) << 24))
    return ts_fail("ts_expert_create: expert too large for the CUDA kernels (I <= 2^30, H <= 2^24)"), nullptr;
  auto* e = new (std::nothrow) Expert();
  if (!e) return ts_fail("out of memory"), nullptr;
  const bool ok = matrix_alloc(e->w13, 2 * I, H, store) == 0 && matrix_alloc(e->w2t, I, H, store) == 0 &&
                  matrix_store(b, w1, false, e->w13, 2, 0) == 0 && matrix_store(b, w3, false, e->w13, 2, 1) == 0 &&
                  matrix_store(b, w2, true, e->w2t, 1, 0) == 0;
  if (!ok) {
    matrix_free(e->w13);
    matrix_free(e->w2t);
    delete e;
    return nullptr;
  }
  e->owner = b;
  e->hidden = H;
  e->intermediate = I;
  e->dtype = store;
  b->weight_bytes += int64_t(e->w13.bytes() + e->w2t.bytes());
  return e;
}

void expert_free(ts_expert* te) {
  auto* e = static_cast<Expert*>(te);
  Backend* b = as_cuda(e->owner);
  b->activate();
  b->weight_bytes -= int64_t(e->w13.bytes() + e->w2t.bytes());
  matrix_free(e->w13);
  matrix_free(e->w2t);
  delete e;
}

ts_predictor* predictor_create(ts_backend* tb, const ts_host_matrix* fc1, const ts_host_matrix* fc2, ts_dtype store) {
  Backend* b = as_cuda(tb);
  if (b->activate()) return nullptr;
  auto* p = new (std::nothrow) Predictor();
  if (!p) return ts_fail("out of memory"), nullptr;
  const bool ok = matrix_alloc(p->fc1, fc1->rows, fc1->cols, store) == 0 &&
                  matrix_alloc(p->fc2, fc2->rows, fc2->cols, store) == 0 &&
                  matrix_store(b, fc1, false, p->fc1, 1, 0) == 0 && matrix_store(b, fc2, false, p->fc2, 1, 0) == 0;
  if (!ok) {
    matrix_free(p->fc1);
    matrix_free(p->fc2);
    delete p;
    return nullptr;
  }
  p->owner = b;
  p->hidden = fc1->cols;
  p->rank = fc1->rows;
  p->intermediate = fc2->rows;
  p->dtype = store;
  b->weight_bytes += int64_t(p->fc1.bytes() + p->fc2.bytes());
  return p;
}

void predictor_free(ts_predictor* tp) {
  auto* p = static_cast<Predictor*>(tp);
  Backend* b = as_cuda(p->owner);
  b->activate();
  b->weight_bytes -= int64_t(p->fc1.bytes() + p->fc2.bytes());
  matrix_free(p->fc1);
  matrix_free(p->fc2);
  delete p;
}

}  // namespace tscuda
