// backend_ops.h — the entry points every device implements, declared once; the
// device's backend.cc/.cu puts them into its ts_backend_ops vtable (backend.h).
// Include it inside the device's namespace, after backend.h:
//   namespace ts_cpu { #include "../backend_ops.h" }   (cpu_backend.h, common.cuh)
// so each device gets its own copies of the same signatures. Deliberately no
// include guard: each namespace includes it once.

// handle creation and copies
ts_weight* weight_create(ts_backend* b, const ts_host_matrix* m, ts_dtype store);
void weight_free(ts_weight* w);
ts_expert* expert_create(ts_backend* b, const ts_host_matrix* w1, const ts_host_matrix* w3, const ts_host_matrix* w2,
                         ts_dtype store);
void expert_free(ts_expert* e);
ts_predictor* predictor_create(ts_backend* b, const ts_host_matrix* fc1, const ts_host_matrix* fc2, ts_dtype store);
void predictor_free(ts_predictor* p);
ts_kvcache* kvcache_create(ts_backend* b, int64_t layers, int64_t max_tokens, int64_t kv_heads, int64_t head_dim,
                           ts_dtype dtype);
void kvcache_free(ts_kvcache* c);
int kvcache_grow(ts_kvcache* c, int64_t max_tokens);
int kvcache_copy(ts_kvcache* dst, const ts_kvcache* src, int64_t tokens);

// ops (one file each)
int matmul(ts_backend* b, const ts_weight* W, int64_t n, const float* x, float* y);
int rmsnorm(ts_backend* b, const ts_weight* w, int64_t n, int64_t d, const float* x, float eps, float* y);
int rope(ts_backend* b, int64_t n, int64_t heads, int64_t head_dim, const int32_t* positions, double theta, float* x);
int router_topk(ts_backend* b, int64_t n, int64_t experts, const float* logits, int64_t k, int32_t* idx,
                float* weight);
int predict_many(ts_backend* b, int64_t n_rows, int64_t hidden, const float* x, int64_t n_calls,
                 const ts_predict_call* calls);
int attention(ts_backend* b, int64_t layer, int64_t n, ts_kvcache* const* caches, const int32_t* positions,
              int64_t heads, int64_t kv_heads, int64_t head_dim, const float* q, const float* k, const float* v,
              float* out);
int moe(ts_backend* b, ts_ffn_mode mode, int64_t n_rows, int64_t hidden, const float* x, int64_t n_calls,
        const ts_expert_call* calls, float* y, int32_t* active);
