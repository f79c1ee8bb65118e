// ops_attention.cc — causal GQA attention over KV caches (one per row).
#include <algorithm>

#include "handles.h"
#include "op_worker.h"
#include "ops.h"

namespace tsaddon {

namespace {

class AttentionWorker : public OpWorker {
 public:
  using OpWorker::OpWorker;
  int64_t layer = 0, n = 0, heads = 0, kv_heads = 0, head_dim = 0;
  std::vector<ts_kvcache*> caches;
  const int32_t* positions = nullptr;
  const float *q = nullptr, *k = nullptr, *v = nullptr;
  float* out = nullptr;

 private:
  int Run() override {
    return ts_attention(backend(), layer, n, caches.data(), positions, heads, kv_heads, head_dim, q, k, v, out);
  }
};

class GrowKvCacheWorker : public OpWorker {
 public:
  using OpWorker::OpWorker;
  std::shared_ptr<HandleRecord> cache;
  int64_t max_tokens = 0;

 private:
  int Run() override { return ts_kvcache_grow(static_cast<ts_kvcache*>(cache->ptr), max_tokens); }
  // The shape the JS side checks positions against changes only once the copy is done.
  Napi::Value Result() override {
    cache->max_tokens = std::max(cache->max_tokens, max_tokens);
    cache->bytes = ts_kvcache_bytes(static_cast<ts_kvcache*>(cache->ptr));
    return Env().Undefined();
  }
};

class CopyKvCacheWorker : public OpWorker {
 public:
  using OpWorker::OpWorker;
  ts_kvcache* dst = nullptr;
  const ts_kvcache* src = nullptr;
  int64_t tokens = 0;

 private:
  int Run() override { return ts_kvcache_copy(dst, src, tokens); }
};

}  // namespace

// copyKvCache(dst, src, tokens): positions [0, tokens) of every layer.
Napi::Value CopyKvCache(const Args& a, const StatePtr& s) {
  auto dst = ReadHandle<HandleKind::KvCache>(a, a[0], "dst", *s);
  auto src = ReadHandle<HandleKind::KvCache>(a, a[1], "src", *s);
  int64_t tokens = a.Int(a[2], "tokens", 0);
  if (dst->layers != src->layers || dst->kv_heads != src->kv_heads || dst->head_dim != src->head_dim) {
    a.RangeFail("dst and src differ in shape (layers, kvHeads, headDim): " + std::to_string(dst->layers) + ", " +
                std::to_string(dst->kv_heads) + ", " + std::to_string(dst->head_dim) + " vs " + std::to_string(src->layers) +
                ", " + std::to_string(src->kv_heads) + ", " + std::to_string(src->head_dim));
  }
  if (tokens > dst->max_tokens || tokens > src->max_tokens) {
    a.RangeFail("tokens = " + std::to_string(tokens) + " is more than dst (" + std::to_string(dst->max_tokens) + ") or src (" +
                std::to_string(src->max_tokens) + ") holds");
  }
  auto wk = std::make_unique<CopyKvCacheWorker>(a.Env(), a.op(), s);
  wk->dst = static_cast<ts_kvcache*>(dst->ptr);
  wk->src = static_cast<const ts_kvcache*>(src->ptr);
  wk->tokens = tokens;
  wk->Use(dst);
  wk->Use(src);
  return OpWorker::Start(std::move(wk));
}

// growKvCache(cache, maxTokens): keeps the cache's contents; a smaller maxTokens is a no-op.
Napi::Value GrowKvCache(const Args& a, const StatePtr& s) {
  auto c = ReadHandle<HandleKind::KvCache>(a, a[0], "cache", *s);
  int64_t max_tokens = a.Int(a[1], "maxTokens", 1);
  auto wk = std::make_unique<GrowKvCacheWorker>(a.Env(), a.op(), s);
  wk->cache = c;
  wk->max_tokens = max_tokens;
  wk->Use(c);
  return OpWorker::Start(std::move(wk));
}

// attention(layer, n, caches, positions, heads, kvHeads, headDim, q, k, v, out)
Napi::Value Attention(const Args& a, const StatePtr& s) {
  int64_t layer = a.Int(a[0], "layer", 0);
  int64_t n = a.Int(a[1], "n", 0);
  Napi::Array caches = a.Array(a[2], "caches");
  auto positions = a.Int32(a[3], "positions");
  int64_t heads = a.Int(a[4], "heads", 1);
  int64_t kv_heads = a.Int(a[5], "kvHeads", 1);
  int64_t head_dim = a.Int(a[6], "headDim", 1);
  auto q = a.Float32(a[7], "q");
  auto k = a.Float32(a[8], "k");
  auto v = a.Float32(a[9], "v");
  auto out = a.Float32(a[10], "out");

  if (heads % kv_heads != 0) {
    a.RangeFail("heads = " + std::to_string(heads) + " is not a multiple of kvHeads = " + std::to_string(kv_heads));
  }
  if (static_cast<int64_t>(caches.Length()) != n) {
    a.RangeFail("caches has " + std::to_string(caches.Length()) + " entries, expected n = " + std::to_string(n) +
                " (one per row)");
  }
  a.ExpectSize(positions, "positions", "n", {n});
  a.ExpectSize(q, "q", "n * heads * headDim", {n, heads, head_dim});
  a.ExpectSize(k, "k", "n * kvHeads * headDim", {n, kv_heads, head_dim});
  a.ExpectSize(v, "v", "n * kvHeads * headDim", {n, kv_heads, head_dim});
  a.ExpectSize(out, "out", "n * heads * headDim", {n, heads, head_dim});

  auto wk = std::make_unique<AttentionWorker>(a.Env(), a.op(), s);
  wk->caches.reserve(n);
  for (int64_t i = 0; i < n; ++i) {
    std::string name = "caches[" + std::to_string(i) + "]";
    auto c = ReadHandle<HandleKind::KvCache>(a, caches.Get(static_cast<uint32_t>(i)), name, *s);
    if (layer >= c->layers) {
      a.RangeFail("layer = " + std::to_string(layer) + " is out of range for " + name + " (" +
                  std::to_string(c->layers) + " layers)");
    }
    if (c->kv_heads != kv_heads || c->head_dim != head_dim) {
      a.RangeFail(name + " holds " + std::to_string(c->kv_heads) + " kv heads of " + std::to_string(c->head_dim) +
                  ", but kvHeads = " + std::to_string(kv_heads) + " and headDim = " + std::to_string(head_dim));
    }
    int32_t pos = positions.data[i];
    if (pos < 0 || pos >= c->max_tokens) {
      a.RangeFail("positions[" + std::to_string(i) + "] = " + std::to_string(pos) + " is outside " + name +
                  " (0 <= position < maxTokens = " + std::to_string(c->max_tokens) + ")");
    }
    wk->caches.push_back(static_cast<ts_kvcache*>(c->ptr));
    wk->Use(c);
  }
  wk->layer = layer;
  wk->n = n;
  wk->heads = heads;
  wk->kv_heads = kv_heads;
  wk->head_dim = head_dim;
  wk->positions = positions.data;
  wk->q = q.data;
  wk->k = k.data;
  wk->v = v.data;
  wk->out = out.data;
  wk->Keep(caches);
  wk->Keep(positions);
  wk->Keep(q);
  wk->Keep(k);
  wk->Keep(v);
  wk->Keep(out);
  return OpWorker::Start(std::move(wk));
}

}  // namespace tsaddon
