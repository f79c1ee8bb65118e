// backend.h — the per-device vtable behind the C ABI (internal).
// A device is a few functions: the public ts_* calls validate arguments, take
// the backend's lock, then dispatch here. CPU lives in src/cpu, CUDA in src/cuda.
#pragma once
#include <mutex>
#include <string>
#include "turbosparse.h"

struct ts_backend_ops {
  const char* device;  // "cpu" | "cuda"
  void (*destroy)(ts_backend* b);
  int (*set_variant)(ts_backend* b, const char* variant);

  ts_weight* (*weight_create)(ts_backend* b, const ts_host_matrix* m, ts_dtype store);
  void (*weight_free)(ts_weight* w);
  ts_expert* (*expert_create)(ts_backend* b, const ts_host_matrix* w1, const ts_host_matrix* w3,
                              const ts_host_matrix* w2, ts_dtype store);
  void (*expert_free)(ts_expert* e);
  ts_predictor* (*predictor_create)(ts_backend* b, const ts_host_matrix* fc1, const ts_host_matrix* fc2,
                                    ts_dtype store);
  void (*predictor_free)(ts_predictor* p);
  ts_kvcache* (*kvcache_create)(ts_backend* b, int64_t layers, int64_t max_tokens, int64_t kv_heads,
                                int64_t head_dim, ts_dtype dtype);
  void (*kvcache_free)(ts_kvcache* c);
  int (*kvcache_grow)(ts_kvcache* c, int64_t max_tokens);  // max_tokens > c->max_tokens
  int (*kvcache_copy)(ts_kvcache* dst, const ts_kvcache* src, int64_t tokens);  // checked by the API

  int (*matmul)(ts_backend* b, const ts_weight* W, int64_t n, const float* x, float* y);
  int (*rmsnorm)(ts_backend* b, const ts_weight* w, int64_t n, int64_t d, const float* x, float eps, float* y);
  int (*rope)(ts_backend* b, int64_t n, int64_t heads, int64_t head_dim, const int32_t* positions, double theta,
              float* x);
  int (*router_topk)(ts_backend* b, int64_t n, int64_t experts, const float* logits, int64_t k, int32_t* idx,
                     float* weight);
  int (*predict_many)(ts_backend* b, int64_t n_rows, int64_t hidden, const float* x, int64_t n_calls,
                      const ts_predict_call* calls);
  int (*attention)(ts_backend* b, int64_t layer, int64_t n, ts_kvcache* const* caches, const int32_t* positions,
                   int64_t heads, int64_t kv_heads, int64_t head_dim, const float* q, const float* k,
                   const float* v, float* out);
  int (*moe)(ts_backend* b, ts_ffn_mode mode, int64_t n_rows, int64_t hidden, const float* x, int64_t n_calls,
             const ts_expert_call* calls, float* y, int32_t* active);
};

// Common header of every backend object; devices extend it.
struct ts_backend {
  const ts_backend_ops* ops;
  std::mutex lock;            // one op at a time per backend
  std::string description;
  int64_t weight_bytes = 0;
  virtual ~ts_backend() = default;
};

// Common headers of handles: devices derive from these.
struct ts_weight { ts_backend* owner; int64_t rows, cols; ts_dtype dtype; virtual ~ts_weight() = default; };
struct ts_expert { ts_backend* owner; int64_t hidden, intermediate; ts_dtype dtype; virtual ~ts_expert() = default; };
struct ts_predictor { ts_backend* owner; int64_t hidden, rank, intermediate; ts_dtype dtype; virtual ~ts_predictor() = default; };
struct ts_kvcache {
  ts_backend* owner;
  int64_t layers, max_tokens, kv_heads, head_dim;
  ts_dtype dtype = TS_F32;  // of the stored K/V: F32, BF16 or F16
  int64_t elem() const { return dtype == TS_F32 ? 4 : 2; }
  virtual ~ts_kvcache() = default;
};

// Set the thread-local error message; returns -1 so callers can `return ts_fail(...)`.
int ts_fail(const std::string& msg);

// Device constructors (cuda returns nullptr + error when not compiled in / no GPU).
ts_backend* ts_cpu_backend_create(int threads);
ts_backend* ts_cuda_backend_create();
bool ts_cuda_available();
