// weights.cc — converting and packing weights at create time (never per call).
#include <algorithm>
#include <cmath>
#include <cstring>
#include <new>
#include <string>
#if defined(__linux__)
#include <sys/mman.h>
#endif
#include "../dtype.h"
#include "cpu_backend.h"

namespace ts_cpu {

bool AlignedBuffer::allocate(size_t bytes) {
  std::free(p_);
  p_ = nullptr;
  bytes_ = 0;
  const size_t huge = size_t(2) << 20;
  const size_t align = bytes >= 2 * huge ? huge : 64;
  size_t rounded = (bytes + align - 1) / align * align;
  if (rounded == 0) rounded = align;
  p_ = std::aligned_alloc(align, rounded);
  if (!p_) return false;
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  if (align == huge) madvise(p_, rounded, MADV_HUGEPAGE);
#endif
  std::memset(p_, 0, rounded);
  bytes_ = bytes;
  return true;
}

int64_t row_stride(ts_dtype dtype, int64_t cols) { return (cols * ts::dtype_size(dtype) + 63) / 64 * 64; }

float store_row(const float* src, int64_t n, ts_dtype store, uint8_t* dst) {
  switch (store) {
    case TS_F32:
      std::memcpy(dst, src, size_t(n) * 4);
      return 1.f;
    case TS_F16: {
      auto* d = reinterpret_cast<uint16_t*>(dst);
      for (int64_t k = 0; k < n; k++) d[k] = ts::f32_to_f16(src[k]);
      return 1.f;
    }
    case TS_BF16: {
      auto* d = reinterpret_cast<uint16_t*>(dst);
      for (int64_t k = 0; k < n; k++) d[k] = ts::f32_to_bf16(src[k]);
      return 1.f;
    }
    case TS_I8: {
      // symmetric per-row scale: the largest |value| maps to 127
      float mx = 0.f;
      for (int64_t k = 0; k < n; k++) mx = std::max(mx, std::fabs(src[k]));
      auto* d = reinterpret_cast<int8_t*>(dst);
      if (mx == 0.f || !std::isfinite(mx)) {
        std::memset(d, 0, size_t(n));
        return 0.f;
      }
      const float scale = mx / 127.f;
      for (int64_t k = 0; k < n; k++) {
        float q = std::nearbyint(src[k] / scale);
        d[k] = int8_t(std::min(127.f, std::max(-127.f, q)));
      }
      return scale;
    }
  }
  return 1.f;
}

namespace {

bool fail_oom(const char* what, int64_t bytes) {
  ts_fail(std::string("out of memory allocating ") + what + " (" + std::to_string(bytes) + " bytes)");
  return false;
}

// Columns [c0, c0 + nc) of a host matrix as rows, f32: out[j][r] = m[r][c0 + j].
void load_block_transposed(const ts_host_matrix& m, int64_t c0, int64_t nc, float* out) {
  for (int64_t r = 0; r < m.rows; r++)
    for (int64_t j = 0; j < nc; j++) out[j * m.rows + r] = ts::load_as_f32(m.data, m.dtype, r * m.cols + c0 + j);
}

void load_row(const ts_host_matrix& m, int64_t r, float* out) {
  for (int64_t c = 0; c < m.cols; c++) out[c] = ts::load_as_f32(m.data, m.dtype, r * m.cols + c);
}

}  // namespace

bool convert_matrix(ThreadPool& pool, const ts_host_matrix& m, ts_dtype store, Mat* out) {
  const int64_t rows = m.rows, cols = m.cols;
  out->dtype = store;
  out->rows = rows;
  out->cols = cols;
  out->stride = row_stride(store, cols);
  if (!out->data.allocate(size_t(rows * out->stride))) return fail_oom("a weight matrix", rows * out->stride);
  if (store == TS_I8) out->scales.assign(size_t(rows), 1.f);
  // rows split over the pool in runs of 64; one f32 row of scratch per thread (allocated here, not in the workers)
  std::vector<std::vector<float>> bufs(size_t(pool.size()), std::vector<float>(size_t(cols)));
  auto job = [&](int tid) {
    float* tmp = bufs[size_t(tid)].data();
    int64_t r0, r1;
    split_range(rows, pool.size(), tid, 64, &r0, &r1);
    for (int64_t r = r0; r < r1; r++) {
      load_row(m, r, tmp);
      const float s = store_row(tmp, cols, store, out->data.data() + r * out->stride);
      if (store == TS_I8) out->scales[size_t(r)] = s;
    }
  };
  pool.run(job);
  return true;
}

ts_weight* weight_create(ts_backend* b, const ts_host_matrix* m, ts_dtype store) {
  auto* w = new (std::nothrow) CpuWeight();
  if (!w) return ts_fail("out of memory"), nullptr;
  if (!convert_matrix(cpu(b)->pool, *m, store, &w->m)) {
    delete w;
    return nullptr;
  }
  w->owner = b;
  w->rows = m->rows;
  w->cols = m->cols;
  w->dtype = store;
  b->weight_bytes += w->m.bytes();
  return w;
}

void weight_free(ts_weight* w) {
  auto* cw = static_cast<CpuWeight*>(w);
  cw->owner->weight_bytes -= cw->m.bytes();
  delete cw;
}

ts_expert* expert_create(ts_backend* b, const ts_host_matrix* w1, const ts_host_matrix* w3, const ts_host_matrix* w2,
                         ts_dtype store) {
  const int64_t I = w1->rows, H = w1->cols;
  auto* e = new (std::nothrow) CpuExpert();
  if (!e) return ts_fail("out of memory"), nullptr;
  e->owner = b;
  e->hidden = H;
  e->intermediate = I;
  e->dtype = store;
  e->stride = row_stride(store, H);
  if (!e->data.allocate(size_t(I * 3 * e->stride))) {
    fail_oom("an expert", I * 3 * e->stride);
    delete e;
    return nullptr;
  }
  if (store == TS_I8) e->scales.assign(size_t(I * 3), 1.f);
  auto set_scale = [&](int64_t i, int part, float s) {
    if (store == TS_I8) e->scales[size_t(i * 3 + part)] = s;
  };
  // blocks of 64 neurons split over the pool: gate and up rows as they are,
  // then w2 [H, I] read row by row into the block's columns (its down rows)
  ThreadPool& pool = cpu(b)->pool;
  const int64_t block = 64, blocks = (I + block - 1) / block;
  std::vector<std::vector<float>> bufs(size_t(pool.size()), std::vector<float>(size_t(block * H)));
  auto job = [&](int tid) {
    float* cols = bufs[size_t(tid)].data();
    int64_t b0, b1;
    split_range(blocks, pool.size(), tid, 1, &b0, &b1);
    for (int64_t blk = b0; blk < b1; blk++) {
      const int64_t i0 = blk * block, ni = std::min(block, I - i0);
      for (int64_t j = 0; j < ni; j++) {
        uint8_t* base = e->data.data() + (i0 + j) * 3 * e->stride;
        load_row(*w1, i0 + j, cols);
        set_scale(i0 + j, 0, store_row(cols, H, store, base));
        load_row(*w3, i0 + j, cols);
        set_scale(i0 + j, 1, store_row(cols, H, store, base + e->stride));
      }
      load_block_transposed(*w2, i0, ni, cols);
      for (int64_t j = 0; j < ni; j++) {
        uint8_t* base = e->data.data() + (i0 + j) * 3 * e->stride;
        set_scale(i0 + j, 2, store_row(cols + j * H, H, store, base + 2 * e->stride));
      }
    }
  };
  pool.run(job);
  b->weight_bytes += e->bytes();
  return e;
}

void expert_free(ts_expert* e) {
  auto* ce = static_cast<CpuExpert*>(e);
  ce->owner->weight_bytes -= ce->bytes();
  delete ce;
}

ts_predictor* predictor_create(ts_backend* b, const ts_host_matrix* fc1, const ts_host_matrix* fc2, ts_dtype store) {
  auto* p = new (std::nothrow) CpuPredictor();
  if (!p) return ts_fail("out of memory"), nullptr;
  if (!convert_matrix(cpu(b)->pool, *fc1, store, &p->fc1) || !convert_matrix(cpu(b)->pool, *fc2, store, &p->fc2)) {
    delete p;
    return nullptr;
  }
  p->owner = b;
  p->hidden = fc1->cols;
  p->rank = fc1->rows;
  p->intermediate = fc2->rows;
  p->dtype = store;
  b->weight_bytes += p->fc1.bytes() + p->fc2.bytes();
  return p;
}

void predictor_free(ts_predictor* p) {
  auto* cp = static_cast<CpuPredictor*>(p);
  cp->owner->weight_bytes -= cp->fc1.bytes() + cp->fc2.bytes();
  delete cp;
}

ts_kvcache* kvcache_create(ts_backend* b, int64_t layers, int64_t max_tokens, int64_t kv_heads, int64_t head_dim,
                           ts_dtype dtype) {
  auto* c = new (std::nothrow) CpuKvCache();
  if (!c) return ts_fail("out of memory"), nullptr;
  c->owner = b;
  c->layers = layers;
  c->max_tokens = max_tokens;
  c->kv_heads = kv_heads;
  c->head_dim = head_dim;
  c->dtype = dtype;
  const size_t n = size_t(layers * max_tokens * kv_heads * head_dim * c->elem());
  try {
    c->k.assign(n, 0);
    c->v.assign(n, 0);
  } catch (const std::bad_alloc&) {
    delete c;
    ts_fail("out of memory allocating a KV cache (" + std::to_string(2 * n) + " bytes)");
    return nullptr;
  }
  return c;
}

void kvcache_free(ts_kvcache* c) { delete static_cast<CpuKvCache*>(c); }

}  // namespace ts_cpu
