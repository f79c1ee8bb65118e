// api.cc — the public C ABI: validate arguments (one-line errors naming the
// argument), take the backend's lock, dispatch through its vtable.
// Also owns the thread-local error, the registry of live handles (so a
// backend frees whatever its caller left behind, and a double free is
// harmless), and the CUDA stubs when the library is built without CUDA.
#include <algorithm>
#include <cstring>
#include <exception>
#include <mutex>
#include <new>
#include <string>
#include <unordered_map>
#include <vector>
#include "backend.h"
#include "dtype.h"

namespace {

thread_local std::string g_error;

enum class Kind { weight, expert, predictor, kvcache };
struct Entry {
  ts_backend* owner;
  Kind kind;
};
struct Registry {
  std::mutex mu;
  std::unordered_map<const void*, Entry> live;
};
Registry& registry() {
  static Registry* r = new Registry();  // never destroyed: handles may be freed during static destruction
  return *r;
}
void remember(const void* h, ts_backend* owner, Kind kind) {
  std::lock_guard<std::mutex> lk(registry().mu);
  registry().live[h] = Entry{owner, kind};
}
// Removes h from the registry; false when it is not a live handle of that kind.
bool forget(const void* h, Kind kind, ts_backend** owner) {
  std::lock_guard<std::mutex> lk(registry().mu);
  auto it = registry().live.find(h);
  if (it == registry().live.end() || it->second.kind != kind) return false;
  *owner = it->second.owner;
  registry().live.erase(it);
  return true;
}

std::string S(int64_t v) { return std::to_string(v); }

// Runs f, turning a C++ exception into an error return.
template <class F, class R>
R guarded(const char* fn, R on_error, F&& f) {
  try {
    return f();
  } catch (const std::bad_alloc&) {
    ts_fail(std::string(fn) + ": out of memory");
  } catch (const std::exception& e) {
    ts_fail(std::string(fn) + ": " + e.what());
  } catch (...) {
    ts_fail(std::string(fn) + ": unexpected error");
  }
  return on_error;
}

bool check_backend(const char* fn, const ts_backend* b) {
  if (!b) return ts_fail(std::string(fn) + ": backend is NULL"), false;
  return true;
}

bool check_owner(const char* fn, const char* what, const void* h, const ts_backend* owner, const ts_backend* b) {
  if (!h) return ts_fail(std::string(fn) + ": " + what + " is NULL"), false;
  if (owner != b) return ts_fail(std::string(fn) + ": " + what + " belongs to another backend"), false;
  return true;
}

bool check_ptr(const char* fn, const char* what, const void* p) {
  if (!p) return ts_fail(std::string(fn) + ": " + what + " is NULL"), false;
  return true;
}

bool check_matrix(const char* fn, const char* name, const ts_host_matrix* m) {
  const std::string at = std::string(fn) + ": " + name;
  if (!m) return ts_fail(at + " is NULL"), false;
  if (!ts::is_source_dtype(m->dtype))
    return ts_fail(at + ".dtype " + S(m->dtype) + " is not a source dtype (F32, F16 or BF16)"), false;
  if (m->rows <= 0 || m->cols <= 0)
    return ts_fail(at + " has shape [" + S(m->rows) + ", " + S(m->cols) + "]; both must be > 0"), false;
  if (!m->data) return ts_fail(at + ".data is NULL"), false;
  return true;
}

bool check_store(const char* fn, ts_dtype store) {
  if (!ts::is_store_dtype(store))
    return ts_fail(std::string(fn) + ": store dtype " + S(store) + " is not one of F32, F16, BF16, I8"), false;
  return true;
}

std::string shape(const ts_host_matrix* m) { return "[" + S(m->rows) + ", " + S(m->cols) + "]"; }

// "fn: what[i]" — built only when a check fails (validation must not allocate per call)
std::string item(const char* fn, const char* what, int64_t i) { return std::string(fn) + ": " + what + "[" + S(i) + "]"; }

// rows[0..n) of item `what`[c] must index [0, limit)
bool check_rows(const char* fn, const char* what, int64_t c, const int32_t* rows, int64_t n, int64_t limit) {
  if (n > 0 && !rows) return ts_fail(item(fn, what, c) + ".rows is NULL"), false;
  for (int64_t j = 0; j < n; j++)
    if (rows[j] < 0 || rows[j] >= limit)
      return ts_fail(item(fn, what, c) + ".rows[" + S(j) + "] = " + S(rows[j]) + " is outside [0, " + S(limit) + ")"),
             false;
  return true;
}

void free_handle(ts_backend* b, const void* h, Kind kind) {
  switch (kind) {
    case Kind::weight: b->ops->weight_free(const_cast<ts_weight*>(static_cast<const ts_weight*>(h))); break;
    case Kind::expert: b->ops->expert_free(const_cast<ts_expert*>(static_cast<const ts_expert*>(h))); break;
    case Kind::predictor:
      b->ops->predictor_free(const_cast<ts_predictor*>(static_cast<const ts_predictor*>(h)));
      break;
    case Kind::kvcache: b->ops->kvcache_free(const_cast<ts_kvcache*>(static_cast<const ts_kvcache*>(h))); break;
  }
}

template <class H>
void free_one(H* h, Kind kind) {
  if (!h) return;
  ts_backend* owner = nullptr;
  if (!forget(h, kind, &owner)) return;  // not live: already freed, or never ours
  std::lock_guard<std::mutex> lk(owner->lock);
  free_handle(owner, h, kind);
}

}  // namespace

int ts_fail(const std::string& msg) {
  g_error = msg;
  return -1;
}

#ifndef TS_HAVE_CUDA
bool ts_cuda_available() { return false; }
ts_backend* ts_cuda_backend_create() {
  ts_fail("this turbosparse library was built without CUDA");
  return nullptr;
}
#endif

extern "C" {

const char* ts_last_error(void) { return g_error.c_str(); }

const char* ts_version(void) { return "0.1.0"; }

int ts_device_available(const char* device) {
  if (!device) return 0;
  if (std::strcmp(device, "cpu") == 0) return 1;
  if (std::strcmp(device, "cuda") == 0) return guarded("ts_device_available", false, [] { return ts_cuda_available(); });
  return 0;
}

ts_backend* ts_backend_create(const char* device, int threads) {
  static const char* fn = "ts_backend_create";
  if (!device) return ts_fail(std::string(fn) + ": device is NULL (use \"cpu\", \"cuda\" or \"auto\")"), nullptr;
  if (threads < 0) return ts_fail(std::string(fn) + ": threads = " + S(threads) + " must be >= 0 (0 = all cores)"), nullptr;
  return guarded(fn, static_cast<ts_backend*>(nullptr), [&]() -> ts_backend* {
    if (std::strcmp(device, "cpu") == 0) return ts_cpu_backend_create(threads);
    if (std::strcmp(device, "cuda") == 0) return ts_cuda_backend_create();  // sets the reason when it cannot
    if (std::strcmp(device, "auto") == 0) {
      if (ts_cuda_available()) {
        if (ts_backend* b = ts_cuda_backend_create()) return b;
      }
      return ts_cpu_backend_create(threads);
    }
    ts_fail(std::string(fn) + ": unknown device '" + device + "' (use \"cpu\", \"cuda\" or \"auto\")");
    return nullptr;
  });
}

void ts_backend_free(ts_backend* b) {
  if (!b) return;
  // free what the caller left behind, experts and predictors first
  std::vector<std::pair<const void*, Kind>> left;
  {
    std::lock_guard<std::mutex> lk(registry().mu);
    for (auto it = registry().live.begin(); it != registry().live.end();) {
      if (it->second.owner == b) {
        left.emplace_back(it->first, it->second.kind);
        it = registry().live.erase(it);
      } else {
        ++it;
      }
    }
  }
  {
    std::lock_guard<std::mutex> lk(b->lock);
    for (Kind k : {Kind::expert, Kind::predictor, Kind::weight, Kind::kvcache})
      for (auto& h : left)
        if (h.second == k) free_handle(b, h.first, k);
  }
  b->ops->destroy(b);
}

const char* ts_backend_describe(const ts_backend* b) { return b ? b->description.c_str() : ""; }

const char* ts_backend_device(const ts_backend* b) { return b ? b->ops->device : ""; }

int ts_backend_set_variant(ts_backend* b, const char* variant) {
  static const char* fn = "ts_backend_set_variant";
  if (!check_backend(fn, b) || !check_ptr(fn, "variant", variant)) return -1;
  if (!b->ops->set_variant) return ts_fail(std::string(fn) + ": the " + b->ops->device + " backend has no variants");
  std::lock_guard<std::mutex> lk(b->lock);
  return guarded(fn, -1, [&] { return b->ops->set_variant(b, variant); });
}

int64_t ts_backend_weight_bytes(const ts_backend* b) {
  if (!b) return 0;
  std::lock_guard<std::mutex> lk(const_cast<ts_backend*>(b)->lock);
  return b->weight_bytes;
}

// ---------- weights ----------

ts_weight* ts_weight_create(ts_backend* b, const ts_host_matrix* m, ts_dtype store) {
  static const char* fn = "ts_weight_create";
  if (!check_backend(fn, b) || !check_matrix(fn, "matrix", m) || !check_store(fn, store)) return nullptr;
  std::lock_guard<std::mutex> lk(b->lock);
  ts_weight* w = guarded(fn, static_cast<ts_weight*>(nullptr), [&] { return b->ops->weight_create(b, m, store); });
  if (w) remember(w, b, Kind::weight);
  return w;
}

void ts_weight_free(ts_weight* w) { free_one(w, Kind::weight); }
int64_t ts_weight_rows(const ts_weight* w) { return w ? w->rows : 0; }
int64_t ts_weight_cols(const ts_weight* w) { return w ? w->cols : 0; }

ts_expert* ts_expert_create(ts_backend* b, const ts_host_matrix* w1, const ts_host_matrix* w3,
                            const ts_host_matrix* w2, ts_dtype store) {
  static const char* fn = "ts_expert_create";
  if (!check_backend(fn, b) || !check_matrix(fn, "w1", w1) || !check_matrix(fn, "w3", w3) ||
      !check_matrix(fn, "w2", w2) || !check_store(fn, store))
    return nullptr;
  if (w3->rows != w1->rows || w3->cols != w1->cols)
    return ts_fail(std::string(fn) + ": w3 is " + shape(w3) + " but w1 is " + shape(w1) + "; both must be [I, H]"),
           nullptr;
  if (w2->rows != w1->cols || w2->cols != w1->rows)
    return ts_fail(std::string(fn) + ": w2 is " + shape(w2) + "; with w1 " + shape(w1) + " it must be [" +
                   S(w1->cols) + ", " + S(w1->rows) + "] ([H, I])"),
           nullptr;
  std::lock_guard<std::mutex> lk(b->lock);
  ts_expert* e = guarded(fn, static_cast<ts_expert*>(nullptr), [&] { return b->ops->expert_create(b, w1, w3, w2, store); });
  if (e) remember(e, b, Kind::expert);
  return e;
}

void ts_expert_free(ts_expert* e) { free_one(e, Kind::expert); }
int64_t ts_expert_hidden(const ts_expert* e) { return e ? e->hidden : 0; }
int64_t ts_expert_intermediate(const ts_expert* e) { return e ? e->intermediate : 0; }

ts_predictor* ts_predictor_create(ts_backend* b, const ts_host_matrix* fc1, const ts_host_matrix* fc2,
                                  ts_dtype store) {
  static const char* fn = "ts_predictor_create";
  if (!check_backend(fn, b) || !check_matrix(fn, "fc1", fc1) || !check_matrix(fn, "fc2", fc2) ||
      !check_store(fn, store))
    return nullptr;
  if (fc2->cols != fc1->rows)
    return ts_fail(std::string(fn) + ": fc2 is " + shape(fc2) + " but fc1 is " + shape(fc1) +
                   "; fc2 must have fc1's rows (the rank) as columns"),
           nullptr;
  std::lock_guard<std::mutex> lk(b->lock);
  ts_predictor* p =
      guarded(fn, static_cast<ts_predictor*>(nullptr), [&] { return b->ops->predictor_create(b, fc1, fc2, store); });
  if (p) remember(p, b, Kind::predictor);
  return p;
}

void ts_predictor_free(ts_predictor* p) { free_one(p, Kind::predictor); }
int64_t ts_predictor_rank(const ts_predictor* p) { return p ? p->rank : 0; }

// ---------- dense ops ----------

int ts_matmul(ts_backend* b, const ts_weight* W, int64_t n, const float* x, float* y) {
  static const char* fn = "ts_matmul";
  if (!check_backend(fn, b) || !check_owner(fn, "W", W, W ? W->owner : nullptr, b)) return -1;
  if (n < 0) return ts_fail(std::string(fn) + ": n = " + S(n) + " must be >= 0");
  if (n == 0) return 0;
  if (!check_ptr(fn, "x", x) || !check_ptr(fn, "y", y)) return -1;
  std::lock_guard<std::mutex> lk(b->lock);
  return guarded(fn, -1, [&] { return b->ops->matmul(b, W, n, x, y); });
}

int ts_rmsnorm(ts_backend* b, const ts_weight* w, int64_t n, int64_t d, const float* x, float eps, float* y) {
  static const char* fn = "ts_rmsnorm";
  if (!check_backend(fn, b) || !check_owner(fn, "w", w, w ? w->owner : nullptr, b)) return -1;
  if (n < 0 || d <= 0) return ts_fail(std::string(fn) + ": n = " + S(n) + ", d = " + S(d) + " (need n >= 0, d > 0)");
  if (!((w->rows == 1 && w->cols == d) || (w->cols == 1 && w->rows == d)))
    return ts_fail(std::string(fn) + ": w is [" + S(w->rows) + ", " + S(w->cols) + "] but d = " + S(d) +
                   "; w must be [1, d]");
  if (!(eps >= 0)) return ts_fail(std::string(fn) + ": eps must be >= 0");
  if (n == 0) return 0;
  if (!check_ptr(fn, "x", x) || !check_ptr(fn, "y", y)) return -1;
  std::lock_guard<std::mutex> lk(b->lock);
  return guarded(fn, -1, [&] { return b->ops->rmsnorm(b, w, n, d, x, eps, y); });
}

int ts_rope(ts_backend* b, int64_t n, int64_t heads, int64_t head_dim, const int32_t* positions, double theta,
            float* x) {
  static const char* fn = "ts_rope";
  if (!check_backend(fn, b)) return -1;
  if (n < 0 || heads <= 0 || head_dim <= 0 || head_dim % 2)
    return ts_fail(std::string(fn) + ": n = " + S(n) + ", heads = " + S(heads) + ", head_dim = " + S(head_dim) +
                   " (need n >= 0, heads > 0, head_dim > 0 and even)");
  if (!(theta > 0)) return ts_fail(std::string(fn) + ": theta must be > 0");
  if (n == 0) return 0;
  if (!check_ptr(fn, "positions", positions) || !check_ptr(fn, "x", x)) return -1;
  for (int64_t i = 0; i < n; i++)
    if (positions[i] < 0) return ts_fail(std::string(fn) + ": positions[" + S(i) + "] = " + S(positions[i]) + " is negative");
  std::lock_guard<std::mutex> lk(b->lock);
  return guarded(fn, -1, [&] { return b->ops->rope(b, n, heads, head_dim, positions, theta, x); });
}

int ts_router_topk(ts_backend* b, int64_t n, int64_t experts, const float* logits, int64_t k, int32_t* idx,
                   float* weight) {
  static const char* fn = "ts_router_topk";
  if (!check_backend(fn, b)) return -1;
  if (n < 0 || experts <= 0) return ts_fail(std::string(fn) + ": n = " + S(n) + ", experts = " + S(experts) + " (need n >= 0, experts > 0)");
  if (k < 1 || k > experts) return ts_fail(std::string(fn) + ": k = " + S(k) + " must be in [1, experts = " + S(experts) + "]");
  if (n == 0) return 0;
  if (!check_ptr(fn, "logits", logits) || !check_ptr(fn, "idx", idx) || !check_ptr(fn, "weight", weight)) return -1;
  std::lock_guard<std::mutex> lk(b->lock);
  return guarded(fn, -1, [&] { return b->ops->router_topk(b, n, experts, logits, k, idx, weight); });
}

int ts_predict_many(ts_backend* b, int64_t n_rows, int64_t hidden, const float* x, int64_t n_calls,
                    const ts_predict_call* calls) {
  static const char* fn = "ts_predict_many";
  if (!check_backend(fn, b)) return -1;
  if (n_rows < 0 || hidden <= 0 || n_calls < 0)
    return ts_fail(std::string(fn) + ": n_rows = " + S(n_rows) + ", hidden = " + S(hidden) + ", n_calls = " +
                   S(n_calls) + " (need n_rows >= 0, hidden > 0, n_calls >= 0)");
  if (n_calls == 0) return 0;
  if (!check_ptr(fn, "calls", calls)) return -1;
  bool any = false;
  for (int64_t c = 0; c < n_calls; c++) {
    const ts_predict_call& pc = calls[c];
    if (!pc.predictor) return ts_fail(item(fn, "calls", c) + ".predictor is NULL");
    if (pc.predictor->owner != b) return ts_fail(item(fn, "calls", c) + ".predictor belongs to another backend");
    if (pc.predictor->hidden != hidden)
      return ts_fail(item(fn, "calls", c) + ".predictor has hidden " + S(pc.predictor->hidden) + " but hidden = " +
                     S(hidden));
    if (pc.n < 0) return ts_fail(item(fn, "calls", c) + ".n = " + S(pc.n) + " must be >= 0");
    if (!check_rows(fn, "calls", c, pc.rows, pc.n, n_rows)) return -1;
    if (pc.n > 0 && !pc.masks) return ts_fail(item(fn, "calls", c) + ".masks is NULL");
    any = any || pc.n > 0;
  }
  if (!any) return 0;
  if (!check_ptr(fn, "x", x)) return -1;
  std::lock_guard<std::mutex> lk(b->lock);
  return guarded(fn, -1, [&] { return b->ops->predict_many(b, n_rows, hidden, x, n_calls, calls); });
}

int ts_predict(ts_backend* b, const ts_predictor* p, int64_t n, const float* x, uint64_t* masks, int32_t* counts) {
  static const char* fn = "ts_predict";
  if (!check_backend(fn, b) || !check_owner(fn, "predictor", p, p ? p->owner : nullptr, b)) return -1;
  if (n < 0) return ts_fail(std::string(fn) + ": n = " + S(n) + " must be >= 0");
  if (n == 0) return 0;
  if (!check_ptr(fn, "x", x) || !check_ptr(fn, "masks", masks)) return -1;
  thread_local std::vector<int32_t> iota;
  if (int64_t(iota.size()) < n) {
    size_t from = iota.size();
    iota.resize(size_t(n));
    for (size_t i = from; i < iota.size(); i++) iota[i] = int32_t(i);
  }
  ts_predict_call call{p, n, iota.data(), masks, counts};
  return ts_predict_many(b, n, p->hidden, x, 1, &call);
}

// ---------- KV cache and attention ----------

ts_kvcache* ts_kvcache_create(ts_backend* b, int64_t layers, int64_t max_tokens, int64_t kv_heads,
                              int64_t head_dim) {
  return ts_kvcache_create_typed(b, layers, max_tokens, kv_heads, head_dim, TS_F32);
}

ts_kvcache* ts_kvcache_create_typed(ts_backend* b, int64_t layers, int64_t max_tokens, int64_t kv_heads,
                                    int64_t head_dim, ts_dtype dtype) {
  static const char* fn = "ts_kvcache_create";
  if (!check_backend(fn, b)) return nullptr;
  if (dtype != TS_F32 && dtype != TS_BF16 && dtype != TS_F16)
    return ts_fail(std::string(fn) + ": dtype " + S(dtype) + " is not one of F32, BF16, F16"), nullptr;
  if (layers <= 0 || max_tokens <= 0 || kv_heads <= 0 || head_dim <= 0)
    return ts_fail(std::string(fn) + ": layers = " + S(layers) + ", max_tokens = " + S(max_tokens) +
                   ", kv_heads = " + S(kv_heads) + ", head_dim = " + S(head_dim) + " must all be > 0"),
           nullptr;
  std::lock_guard<std::mutex> lk(b->lock);
  ts_kvcache* c = guarded(fn, static_cast<ts_kvcache*>(nullptr),
                          [&] { return b->ops->kvcache_create(b, layers, max_tokens, kv_heads, head_dim, dtype); });
  if (c) remember(c, b, Kind::kvcache);
  return c;
}

void ts_kvcache_free(ts_kvcache* c) { free_one(c, Kind::kvcache); }

int ts_kvcache_grow(ts_kvcache* c, int64_t max_tokens) {
  static const char* fn = "ts_kvcache_grow";
  if (!c) return ts_fail(std::string(fn) + ": cache is NULL");
  ts_backend* b = c->owner;
  std::lock_guard<std::mutex> lk(b->lock);
  if (max_tokens <= c->max_tokens) return 0;
  return guarded(fn, -1, [&] { return b->ops->kvcache_grow(c, max_tokens); });
}

int ts_kvcache_copy(ts_kvcache* dst, const ts_kvcache* src, int64_t tokens) {
  static const char* fn = "ts_kvcache_copy";
  if (!dst || !src) return ts_fail(std::string(fn) + ": " + (dst ? "src" : "dst") + " is NULL");
  if (dst->owner != src->owner) return ts_fail(std::string(fn) + ": dst and src belong to different backends");
  if (dst->dtype != src->dtype)
    return ts_fail(std::string(fn) + ": dst stores " + ts::dtype_name(dst->dtype) + " but src " + ts::dtype_name(src->dtype));
  if (dst->layers != src->layers || dst->kv_heads != src->kv_heads || dst->head_dim != src->head_dim)
    return ts_fail(std::string(fn) + ": dst holds " + S(dst->layers) + " layers x " + S(dst->kv_heads) + " kv heads x " +
                   S(dst->head_dim) + " but src " + S(src->layers) + " x " + S(src->kv_heads) + " x " + S(src->head_dim));
  if (tokens < 0 || tokens > dst->max_tokens || tokens > src->max_tokens)
    return ts_fail(std::string(fn) + ": tokens = " + S(tokens) + " is outside [0, " +
                   S(std::min(dst->max_tokens, src->max_tokens)) + "] (the smaller cache's size)");
  if (tokens == 0 || dst == src) return 0;
  ts_backend* b = dst->owner;
  std::lock_guard<std::mutex> lk(b->lock);
  return guarded(fn, -1, [&] { return b->ops->kvcache_copy(dst, src, tokens); });
}

int64_t ts_kvcache_bytes(const ts_kvcache* c) {
  return c ? 2 * c->layers * c->max_tokens * c->kv_heads * c->head_dim * c->elem() : 0;
}

int ts_attention(ts_backend* b, int64_t layer, int64_t n, ts_kvcache* const* caches, const int32_t* positions,
                 int64_t heads, int64_t kv_heads, int64_t head_dim, const float* q, const float* k, const float* v,
                 float* out) {
  static const char* fn = "ts_attention";
  if (!check_backend(fn, b)) return -1;
  if (n < 0 || heads <= 0 || kv_heads <= 0 || head_dim <= 0)
    return ts_fail(std::string(fn) + ": n = " + S(n) + ", heads = " + S(heads) + ", kv_heads = " + S(kv_heads) +
                   ", head_dim = " + S(head_dim) + " (need n >= 0 and the rest > 0)");
  if (heads % kv_heads)
    return ts_fail(std::string(fn) + ": heads = " + S(heads) + " is not a multiple of kv_heads = " + S(kv_heads));
  if (n == 0) return 0;
  if (!check_ptr(fn, "caches", caches) || !check_ptr(fn, "positions", positions) || !check_ptr(fn, "q", q) ||
      !check_ptr(fn, "k", k) || !check_ptr(fn, "v", v) || !check_ptr(fn, "out", out))
    return -1;
  for (int64_t i = 0; i < n; i++) {
    const ts_kvcache* c = caches[i];
    if (!c) return ts_fail(item(fn, "caches", i) + " is NULL");
    if (c->owner != b) return ts_fail(item(fn, "caches", i) + " belongs to another backend");
    if (c->kv_heads != kv_heads || c->head_dim != head_dim)
      return ts_fail(item(fn, "caches", i) + " holds kv_heads " + S(c->kv_heads) + ", head_dim " + S(c->head_dim) +
                     " but the call has " + S(kv_heads) + ", " + S(head_dim));
    if (c->dtype != caches[0]->dtype)
      return ts_fail(item(fn, "caches", i) + " stores " + ts::dtype_name(c->dtype) + " but caches[0] " +
                     ts::dtype_name(caches[0]->dtype) + ": one call takes caches of one dtype");
    if (layer < 0 || layer >= c->layers)
      return ts_fail(std::string(fn) + ": layer = " + S(layer) + " is outside [0, " + S(c->layers) + ")");
    if (positions[i] < 0 || positions[i] >= c->max_tokens)
      return ts_fail(std::string(fn) + ": positions[" + S(i) + "] = " + S(positions[i]) + " is outside the cache [0, " +
                     S(c->max_tokens) + ")");
  }
  std::lock_guard<std::mutex> lk(b->lock);
  return guarded(fn, -1, [&] {
    return b->ops->attention(b, layer, n, caches, positions, heads, kv_heads, head_dim, q, k, v, out);
  });
}

// ---------- the expert FFN ----------

int ts_moe(ts_backend* b, ts_ffn_mode mode, int64_t n_rows, int64_t hidden, const float* x, int64_t n_calls,
           const ts_expert_call* calls, float* y, int32_t* active) {
  static const char* fn = "ts_moe";
  if (!check_backend(fn, b)) return -1;
  if (mode != TS_FFN_SPARSE && mode != TS_FFN_DENSE_WITH_MASK)
    return ts_fail(std::string(fn) + ": mode " + S(mode) + " is not TS_FFN_SPARSE or TS_FFN_DENSE_WITH_MASK");
  if (n_rows < 0 || hidden <= 0 || n_calls < 0)
    return ts_fail(std::string(fn) + ": n_rows = " + S(n_rows) + ", hidden = " + S(hidden) + ", n_calls = " +
                   S(n_calls) + " (need n_rows >= 0, hidden > 0, n_calls >= 0)");
  if (n_calls > 0 && !check_ptr(fn, "calls", calls)) return -1;
  bool any = false;
  for (int64_t c = 0; c < n_calls; c++) {
    const ts_expert_call& ec = calls[c];
    if (!ec.expert) return ts_fail(item(fn, "calls", c) + ".expert is NULL");
    if (ec.expert->owner != b) return ts_fail(item(fn, "calls", c) + ".expert belongs to another backend");
    if (ec.expert->hidden != hidden)
      return ts_fail(item(fn, "calls", c) + ".expert has hidden " + S(ec.expert->hidden) + " but hidden = " + S(hidden));
    if (ec.n < 0) return ts_fail(item(fn, "calls", c) + ".n = " + S(ec.n) + " must be >= 0");
    if (!check_rows(fn, "calls", c, ec.rows, ec.n, n_rows)) return -1;
    if (ec.n > 0 && !ec.weight) return ts_fail(item(fn, "calls", c) + ".weight is NULL");
    if (ec.n > 0 && !ec.masks) return ts_fail(item(fn, "calls", c) + ".masks is NULL");
    any = any || ec.n > 0;
  }
  if (n_rows > 0 && !check_ptr(fn, "y", y)) return -1;
  if (any && !check_ptr(fn, "x", x)) return -1;
  std::lock_guard<std::mutex> lk(b->lock);
  return guarded(fn, -1, [&] { return b->ops->moe(b, mode, n_rows, hidden, x, n_calls, calls, y, active); });
}

}  // extern "C"
