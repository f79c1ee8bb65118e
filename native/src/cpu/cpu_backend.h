// cpu_backend.h — the CPU device: its handle types, scratch and op entry points.
// Weights are converted once at create time to the store dtype; rows are
// padded to 64 bytes so every row starts on a cache line.
#pragma once
#include <cstdint>
#include <cstdlib>
#include <vector>
#include "../backend.h"
#include "kernels.h"
#include "layout.h"
#include "thread_pool.h"

namespace ts_cpu {

// A 64-byte aligned, zeroed block; big blocks are 2 MiB aligned and marked for
// transparent huge pages (fewer TLB misses when a sparse expert jumps between rows).
class AlignedBuffer {
 public:
  AlignedBuffer() = default;
  ~AlignedBuffer() { std::free(p_); }
  AlignedBuffer(const AlignedBuffer&) = delete;
  AlignedBuffer& operator=(const AlignedBuffer&) = delete;
  bool allocate(size_t bytes);  // false when out of memory
  uint8_t* data() const { return static_cast<uint8_t*>(p_); }
  size_t bytes() const { return bytes_; }

 private:
  void* p_ = nullptr;
  size_t bytes_ = 0;
};

// Bytes between row starts for `cols` elements of `dtype` (a multiple of 64).
int64_t row_stride(ts_dtype dtype, int64_t cols);

// A stored matrix: rows of `dtype`, `stride` bytes apart; I8 rows have scales.
struct Mat {
  ts_dtype dtype = TS_F32;
  int64_t rows = 0, cols = 0, stride = 0;
  AlignedBuffer data;
  std::vector<float> scales;  // [rows], I8 only
  const uint8_t* row(int64_t r) const { return data.data() + r * stride; }
  float scale(int64_t r) const { return dtype == TS_I8 ? scales[r] : 1.f; }
  int64_t bytes() const { return rows * stride + int64_t(scales.size() * sizeof(float)); }
};

// Convert a host matrix into `out` (store dtype), rows split over the pool.
// Returns false with ts_fail() set on error.
bool convert_matrix(ThreadPool& pool, const ts_host_matrix& m, ts_dtype store, Mat* out);
// Store `src` row `r` (f32 values) into dst as `store`; returns the I8 scale (1 otherwise).
float store_row(const float* src, int64_t n, ts_dtype store, uint8_t* dst);

struct CpuWeight : ts_weight {
  Mat m;
};

// One expert, neuron-major: neuron i is one contiguous block of three rows
// [w1_i | w3_i | w2T_i] (gate, up, down column), so the sparse FFN touches one
// contiguous span per active neuron and the dense one streams the whole buffer.
struct CpuExpert : ts_expert {
  int64_t stride = 0;         // bytes per row (64-multiple)
  AlignedBuffer data;         // [I][3][stride]
  std::vector<float> scales;  // [I][3] (w1, w3, w2T row scales), I8 only
  const uint8_t* neuron(int64_t i) const { return data.data() + i * 3 * stride; }
  int64_t bytes() const { return int64_t(data.bytes() + scales.size() * sizeof(float)); }
};

struct CpuPredictor : ts_predictor {
  Mat fc1;  // [r, H]
  Mat fc2;  // [I, r]
};

struct CpuKvCache : ts_kvcache {
  std::vector<uint8_t> k, v;  // [layers][max_tokens][kv_heads][head_dim] of dtype
  size_t offset(int64_t layer, int64_t pos) const { return size_t(((layer * max_tokens + pos) * kv_heads) * head_dim * elem()); }
  uint8_t* k_at(int64_t layer, int64_t pos) { return k.data() + offset(layer, pos); }
  uint8_t* v_at(int64_t layer, int64_t pos) { return v.data() + offset(layer, pos); }
};

// Grows, never shrinks: the hot path allocates only the first time a size is seen.
template <class T>
T* grow(std::vector<T>& v, size_t n) {
  if (v.size() < n) v.resize(n);
  return v.data();
}

struct ThreadScratch {
  std::vector<float> acc;       // moe: per-token expert accumulators [tokens, H]
  std::vector<float> logits;    // predictor: [tokens, 64] fc2 outputs of one mask word
  std::vector<float> scores;    // attention: scores over positions
  std::vector<int32_t> counts;  // moe: active neurons per token
};

struct CpuBackend : ts_backend {
  explicit CpuBackend(int threads) : pool(threads) {}
  ThreadPool pool;
  const KernelSet* kernels = nullptr;
  std::vector<ThreadScratch> scratch;  // [pool.size()]
  // shared scratch
  std::vector<uint32_t> moe_list;      // (neuron index, token bits) pairs
  std::vector<float> pred_hidden;      // predictor: relu(fc1 x) [tokens, r]
  std::vector<const float*> xptr;      // row pointers
  std::vector<float> xperm, hperm;     // activations in a variant's interleaved layout
  std::vector<const float*> accs;      // moe: the threads' accumulators
  std::vector<float*> yptr;
  std::vector<double> rope_cs;         // rope: cos/sin of one position
  std::vector<double> router_p;        // router: probabilities of one row
};

inline CpuBackend* cpu(ts_backend* b) { return static_cast<CpuBackend*>(b); }

// ---- entry points: handle creation (weights.cc) and ops (one file each) ----
#include "../backend_ops.h"

// y[t][r - y_base] = W[r] . x[t] for r in [r0, r1), t < nt (scales applied).
// The rows are read once per call and reused for all nt tokens from cache.
void mat_rows(const KernelSet* ks, const Mat& W, int64_t r0, int64_t r1, int nt, const float* const* x,
              float* const* y, int64_t y_base = 0);

// Points x[0..nt) (rows of n values) at copies in layout l when l is not
// natural (the copies live in `scratch`); mat_rows wants its x in the layout
// of the weight's dtype.
void in_layout(const Layout& l, int nt, int64_t n, const float** x, std::vector<float>& scratch);

}  // namespace ts_cpu
