/*
 * turbosparse.h — the kernel library's plain C ABI.
 *
 * One library, several devices. Everything a caller touches goes through a
 * ts_backend (CPU or CUDA). Weights are uploaded once into backend-owned
 * handles (ts_weight, ts_expert, ts_predictor, ts_kvcache) that the backend
 * frees deterministically; per call only activations (f32, host memory),
 * masks and outputs cross the boundary. Every call is batched: n token rows.
 *
 * Return values: 0 on success, non-zero on error; ts_last_error() then holds
 * a one-line message (thread-local).
 *
 * Threading: a backend runs one op at a time (calls from several threads are
 * serialised inside); each op may use the backend's own worker threads.
 */
#ifndef TURBOSPARSE_H
#define TURBOSPARSE_H

#include <stdint.h>
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(_WIN32)
#define TS_API __declspec(dllexport)
#else
#define TS_API __attribute__((visibility("default")))
#endif

/* Element types. Source data (from safetensors) may be F32, F16 or BF16;
 * stored weights may also be I8 with one f32 scale per row. */
typedef enum ts_dtype {
  TS_F32 = 0,
  TS_F16 = 1,
  TS_BF16 = 2,
  TS_I8 = 3
} ts_dtype;

/* Expert FFN evaluation modes. Both give the same output. */
typedef enum ts_ffn_mode {
  TS_FFN_SPARSE = 0,          /* only the neurons set in the mask are touched */
  TS_FFN_DENSE_WITH_MASK = 1  /* every neuron computed, then masked (baseline) */
} ts_ffn_mode;

typedef struct ts_backend ts_backend;
typedef struct ts_weight ts_weight;       /* a [rows, cols] matrix (a vector is [1, n]) */
typedef struct ts_expert ts_expert;       /* one dReLU expert: w1, w3 packed, w2 transposed */
typedef struct ts_predictor ts_predictor; /* one activation predictor: fc1 [r, H], fc2 [I, r] */
typedef struct ts_kvcache ts_kvcache;     /* one sequence's K/V for every layer */

/* Host-side description of a tensor to upload (row-major). */
typedef struct ts_host_matrix {
  ts_dtype dtype;      /* F32, F16 or BF16 */
  int64_t rows;
  int64_t cols;
  const void* data;    /* rows * cols elements */
} ts_host_matrix;

/* Masks are bitsets: one row of mask_words(I) uint64 words per token;
 * bit (i % 64) of word (i / 64) set = neuron i active. */
static inline int64_t ts_mask_words(int64_t intermediate) { return (intermediate + 63) / 64; }

/* ---------- library / backend ---------- */

TS_API const char* ts_last_error(void);
TS_API const char* ts_version(void);
/* Is a device compiled in and usable here? device: "cpu" or "cuda". */
TS_API int ts_device_available(const char* device);
/* device: "cpu" | "cuda" | "auto" (cuda when usable, else cpu).
 * threads: worker threads for the CPU backend, 0 = all cores. */
TS_API ts_backend* ts_backend_create(const char* device, int threads);
TS_API void ts_backend_free(ts_backend* b);
/* Short description: device name and the kernel variant chosen at run time
 * (e.g. "cpu avx512 (2 threads)" or "cuda NVIDIA H200 sm_90"). */
TS_API const char* ts_backend_describe(const ts_backend* b);
TS_API const char* ts_backend_device(const ts_backend* b); /* "cpu" | "cuda" */
/* Force a CPU kernel variant ("scalar", "avx2", "avx512", or "auto"); for tests
 * and benches. Fails if the variant cannot run on this CPU. */
TS_API int ts_backend_set_variant(ts_backend* b, const char* variant);
/* Bytes of weights this backend holds. */
TS_API int64_t ts_backend_weight_bytes(const ts_backend* b);

/* ---------- weights ---------- */

/* Upload a matrix, converting to `store` (F32, F16, BF16, or I8 with a per-row
 * scale). The caller's data may be freed afterwards. */
TS_API ts_weight* ts_weight_create(ts_backend* b, const ts_host_matrix* m, ts_dtype store);
TS_API void ts_weight_free(ts_weight* w);
TS_API int64_t ts_weight_rows(const ts_weight* w);
TS_API int64_t ts_weight_cols(const ts_weight* w);

/* One expert: w1 (gate) [I, H], w3 (up) [I, H], w2 (down) [H, I], all as in
 * the checkpoint. Packed once here (w2 is stored transposed). */
TS_API ts_expert* ts_expert_create(ts_backend* b, const ts_host_matrix* w1, const ts_host_matrix* w3,
                                   const ts_host_matrix* w2, ts_dtype store);
TS_API void ts_expert_free(ts_expert* e);
TS_API int64_t ts_expert_hidden(const ts_expert* e);
TS_API int64_t ts_expert_intermediate(const ts_expert* e);

/* One predictor: fc1 [r, H], fc2 [I, r]. */
TS_API ts_predictor* ts_predictor_create(ts_backend* b, const ts_host_matrix* fc1, const ts_host_matrix* fc2,
                                         ts_dtype store);
TS_API void ts_predictor_free(ts_predictor* p);
TS_API int64_t ts_predictor_rank(const ts_predictor* p);

/* ---------- dense ops (all activations f32, host memory) ---------- */

/* y[n, rows(W)] = x[n, cols(W)] . W^T */
TS_API int ts_matmul(ts_backend* b, const ts_weight* W, int64_t n, const float* x, float* y);
/* y[n, d] = x / rms(x) * w, w a [1, d] weight. y may equal x. */
TS_API int ts_rmsnorm(ts_backend* b, const ts_weight* w, int64_t n, int64_t d, const float* x, float eps, float* y);
/* Rotate-half RoPE in place on x[n, heads, head_dim] at positions[n]. */
TS_API int ts_rope(ts_backend* b, int64_t n, int64_t heads, int64_t head_dim, const int32_t* positions, double theta,
                   float* x);
/* Router: softmax over logits[n, experts], top-k, weights renormalised to sum 1.
 * Ties break to the lower expert id. Outputs idx[n, k], weight[n, k] (descending). */
TS_API int ts_router_topk(ts_backend* b, int64_t n, int64_t experts, const float* logits, int64_t k, int32_t* idx,
                          float* weight);
/* Predictor: mask bit i = (fc2 . relu(fc1 . x))_i > 0. masks[n, mask_words(I)];
 * counts[n] (may be NULL) = bits set per row. */
TS_API int ts_predict(ts_backend* b, const ts_predictor* p, int64_t n, const float* x, uint64_t* masks,
                      int32_t* counts);

/* Several predictors over one batch (one per routed expert): call c reads the
 * rows c.rows of x and writes c.masks[c.n, mask_words(I)] and c.counts[c.n]. */
typedef struct ts_predict_call {
  const ts_predictor* predictor;
  int64_t n;
  const int32_t* rows;
  uint64_t* masks;
  int32_t* counts;     /* may be NULL */
} ts_predict_call;
TS_API int ts_predict_many(ts_backend* b, int64_t n_rows, int64_t hidden, const float* x, int64_t n_calls,
                           const ts_predict_call* calls);

/* ---------- KV cache and attention ---------- */

/* K/V storage for one sequence: layers x max_tokens x kv_heads x head_dim, f32. */
TS_API ts_kvcache* ts_kvcache_create(ts_backend* b, int64_t layers, int64_t max_tokens, int64_t kv_heads,
                                     int64_t head_dim);
/* The same with K/V stored as dtype: F32, BF16 or F16 (16 bits halve the memory; rows are
 * rounded to it when written, attention math stays f32). */
TS_API ts_kvcache* ts_kvcache_create_typed(ts_backend* b, int64_t layers, int64_t max_tokens, int64_t kv_heads,
                                           int64_t head_dim, ts_dtype dtype);
TS_API void ts_kvcache_free(ts_kvcache* c);
/* Grows the cache to max_tokens positions, keeping every K/V it holds (a sequence's
 * cache grows as it decodes instead of being sized for its longest possible output).
 * max_tokens <= the current size is a no-op. On failure the cache is unchanged. */
TS_API int ts_kvcache_grow(ts_kvcache* c, int64_t max_tokens);
/* Copies positions [0, tokens) of every layer from src into dst (a shared prompt prefix
 * computed once): same backend, layers, kv_heads, head_dim and dtype; tokens <= both sizes. */
TS_API int ts_kvcache_copy(ts_kvcache* dst, const ts_kvcache* src, int64_t tokens);
TS_API int64_t ts_kvcache_bytes(const ts_kvcache* c);

/* Causal GQA attention for n token rows, possibly from different sequences (their caches
 * of one dtype).
 * q[n, heads*hd], k, v [n, kv_heads*hd] (RoPE already applied). First every
 * row's k/v is written to caches[i] at positions[i] (layer `layer`); then row i
 * attends over positions 0..positions[i] of caches[i]. out[n, heads*hd]. */
TS_API int ts_attention(ts_backend* b, int64_t layer, int64_t n, ts_kvcache* const* caches, const int32_t* positions,
                        int64_t heads, int64_t kv_heads, int64_t head_dim, const float* q, const float* k,
                        const float* v, float* out);

/* ---------- the expert FFN ---------- */

/* One expert's share of a batch: `rows` index into x and y. */
typedef struct ts_expert_call {
  const ts_expert* expert;
  int64_t n;               /* token rows routed to this expert */
  const int32_t* rows;     /* [n] row indices into x / y */
  const float* weight;     /* [n] routing weights */
  const uint64_t* masks;   /* [n, mask_words(I)] predictor masks */
} ts_expert_call;

/* Mixture of experts over a batch of hidden rows:
 *   y[r] = sum over calls c in the given order, over rows j with c.rows[j] == r,
 *          of c.weight[j] * expert_c(x[r], c.masks[j])
 * where expert(x, m) = w2 . (m * relu(w1 x) * relu(w3 x)).
 * Each expert output is computed in full in f32, then added with its weight,
 * so the sum is the same whether experts are evaluated together or apart.
 * y[n_rows, H] is overwritten (rows no call touches become 0).
 * active[total rows over calls] (may be NULL): per (call, row) the neurons with
 * mask set AND both relus positive, in call order. */
TS_API int ts_moe(ts_backend* b, ts_ffn_mode mode, int64_t n_rows, int64_t hidden, const float* x,
                  int64_t n_calls, const ts_expert_call* calls, float* y, int32_t* active);

#ifdef __cplusplus
}
#endif
#endif
