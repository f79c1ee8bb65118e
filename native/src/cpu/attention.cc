// attention.cc — causal GQA attention over per-sequence KV caches.
// Every row's k/v is written first (rows of one prefill chunk see each other),
// then row i, head h attends over positions 0..positions[i] of its cache with
// kv head h / (heads / kv_heads). Scores scaled by 1/sqrt(head_dim); softmax
// in f32 with the max subtracted. Threads split the (row, head) pairs.
// Caches store f32, bf16 or f16 (rounded when written); the math is f32.
#include <algorithm>
#include <cmath>
#include <cstring>
#include "../dtype.h"
#include "cpu_backend.h"

namespace ts_cpu {

namespace {

template <ts_dtype DT>
inline float kv_load(const uint8_t* p, int64_t i) {
  if constexpr (DT == TS_F32) return reinterpret_cast<const float*>(p)[i];
  else if constexpr (DT == TS_BF16) return ts::bf16_to_f32(reinterpret_cast<const uint16_t*>(p)[i]);
  else return ts::f16_to_f32(reinterpret_cast<const uint16_t*>(p)[i]);
}

template <ts_dtype DT>
inline void kv_store(uint8_t* p, const float* x, int64_t n) {
  if constexpr (DT == TS_F32) {
    std::memcpy(p, x, size_t(n) * 4);
  } else {
    auto* h = reinterpret_cast<uint16_t*>(p);
    for (int64_t i = 0; i < n; i++) h[i] = DT == TS_BF16 ? ts::f32_to_bf16(x[i]) : ts::f32_to_f16(x[i]);
  }
}

template <ts_dtype DT>
int attention_t(CpuBackend* cb, int64_t layer, int64_t n, ts_kvcache* const* caches, const int32_t* positions,
                int64_t heads, int64_t kv_heads, int64_t head_dim, const float* q, const float* k, const float* v,
                float* out) {
  const int64_t kv_row = kv_heads * head_dim;
  int64_t longest = 0;
  for (int64_t i = 0; i < n; i++) {
    auto* c = static_cast<CpuKvCache*>(caches[i]);
    kv_store<DT>(c->k_at(layer, positions[i]), k + i * kv_row, kv_row);
    kv_store<DT>(c->v_at(layer, positions[i]), v + i * kv_row, kv_row);
    longest = std::max<int64_t>(longest, positions[i] + 1);
  }
  const int threads = cb->pool.size();
  for (auto& s : cb->scratch) grow(s.scores, size_t(longest + head_dim));
  const int64_t group = heads / kv_heads;
  const float scale = 1.0f / std::sqrt(float(head_dim));
  const int64_t head_bytes = head_dim * (DT == TS_F32 ? 4 : 2);
  auto job = [&](int tid) {
    int64_t t0, t1;
    split_range(n * heads, threads, tid, 1, &t0, &t1);
    float* scores = cb->scratch[size_t(tid)].scores.data();
    float* acc = scores + longest;
    for (int64_t task = t0; task < t1; task++) {
      const int64_t i = task / heads, h = task % heads, kvh = h / group;
      auto* c = static_cast<CpuKvCache*>(caches[i]);
      const float* qi = q + (i * heads + h) * head_dim;
      const int64_t len = int64_t(positions[i]) + 1;
      float mx = -INFINITY;
      for (int64_t j = 0; j < len; j++) {
        const uint8_t* kj = c->k_at(layer, j) + kvh * head_bytes;
        float s = 0.f;
        for (int64_t d = 0; d < head_dim; d++) s += qi[d] * kv_load<DT>(kj, d);
        scores[j] = s * scale;
        mx = std::max(mx, scores[j]);
      }
      float sum = 0.f;
      for (int64_t j = 0; j < len; j++) sum += (scores[j] = std::exp(scores[j] - mx));
      std::fill(acc, acc + head_dim, 0.f);
      for (int64_t j = 0; j < len; j++) {
        const uint8_t* vj = c->v_at(layer, j) + kvh * head_bytes;
        const float p = scores[j];
        for (int64_t d = 0; d < head_dim; d++) acc[d] += p * kv_load<DT>(vj, d);
      }
      float* o = out + (i * heads + h) * head_dim;
      const float inv = 1.f / sum;
      for (int64_t d = 0; d < head_dim; d++) o[d] = acc[d] * inv;
    }
  };
  cb->pool.run(job, 2.0 * double(n) * double(heads) * double(longest) * double(head_dim));
  return 0;
}

}  // namespace

int attention(ts_backend* b, int64_t layer, int64_t n, ts_kvcache* const* caches, const int32_t* positions,
              int64_t heads, int64_t kv_heads, int64_t head_dim, const float* q, const float* k, const float* v,
              float* out) {
  switch (caches[0]->dtype) {  // the API checked that every cache of the call has it
    case TS_BF16: return attention_t<TS_BF16>(cpu(b), layer, n, caches, positions, heads, kv_heads, head_dim, q, k, v, out);
    case TS_F16: return attention_t<TS_F16>(cpu(b), layer, n, caches, positions, heads, kv_heads, head_dim, q, k, v, out);
    default: return attention_t<TS_F32>(cpu(b), layer, n, caches, positions, heads, kv_heads, head_dim, q, k, v, out);
  }
}

// Layers are laid out one after another, so every layer's positions move to its
// new, wider slot; positions past the old size stay zero as after create.
int kvcache_grow(ts_kvcache* tc, int64_t max_tokens) {
  auto* c = static_cast<CpuKvCache*>(tc);
  const size_t row = size_t(c->kv_heads * c->head_dim * c->elem());
  const size_t n = size_t(c->layers * max_tokens) * row;
  std::vector<uint8_t> k, v;
  try {
    k.assign(n, 0);
    v.assign(n, 0);
  } catch (const std::bad_alloc&) {
    return ts_fail("ts_kvcache_grow: out of memory growing a KV cache to " + std::to_string(2 * n) + " bytes");
  }
  const size_t old_layer = size_t(c->max_tokens) * row, new_layer = size_t(max_tokens) * row;
  for (int64_t l = 0; l < c->layers; l++) {
    std::memcpy(k.data() + l * new_layer, c->k.data() + l * old_layer, old_layer);
    std::memcpy(v.data() + l * new_layer, c->v.data() + l * old_layer, old_layer);
  }
  c->k.swap(k);
  c->v.swap(v);
  c->max_tokens = max_tokens;
  return 0;
}

int kvcache_copy(ts_kvcache* tdst, const ts_kvcache* tsrc, int64_t tokens) {
  auto* dst = static_cast<CpuKvCache*>(tdst);
  const auto* src = static_cast<const CpuKvCache*>(tsrc);
  const size_t row = size_t(dst->kv_heads * dst->head_dim * dst->elem()), n = size_t(tokens) * row;
  for (int64_t l = 0; l < dst->layers; l++) {
    std::memcpy(dst->k.data() + size_t(l * dst->max_tokens) * row, src->k.data() + size_t(l * src->max_tokens) * row, n);
    std::memcpy(dst->v.data() + size_t(l * dst->max_tokens) * row, src->v.data() + size_t(l * src->max_tokens) * row, n);
  }
  return 0;
}

}  // namespace ts_cpu
