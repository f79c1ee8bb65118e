// ops_dense.cc — matmul, rmsnorm, rope, routerTopk: one AsyncWorker each.
#include "handles.h"
#include "op_worker.h"
#include "ops.h"

namespace tsaddon {

namespace {

class MatmulWorker : public OpWorker {
 public:
  using OpWorker::OpWorker;
  const ts_weight* w = nullptr;
  int64_t n = 0;
  const float* x = nullptr;
  float* y = nullptr;

 private:
  int Run() override { return ts_matmul(backend(), w, n, x, y); }
};

class RmsnormWorker : public OpWorker {
 public:
  using OpWorker::OpWorker;
  const ts_weight* w = nullptr;
  int64_t n = 0, d = 0;
  const float* x = nullptr;
  float eps = 0;
  float* y = nullptr;

 private:
  int Run() override { return ts_rmsnorm(backend(), w, n, d, x, eps, y); }
};

class RopeWorker : public OpWorker {
 public:
  using OpWorker::OpWorker;
  int64_t n = 0, heads = 0, head_dim = 0;
  const int32_t* positions = nullptr;
  double theta = 0;
  float* x = nullptr;

 private:
  int Run() override { return ts_rope(backend(), n, heads, head_dim, positions, theta, x); }
};

class RouterTopkWorker : public OpWorker {
 public:
  using OpWorker::OpWorker;
  int64_t n = 0, experts = 0, k = 0;
  const float* logits = nullptr;
  int32_t* idx = nullptr;
  float* weight = nullptr;

 private:
  int Run() override { return ts_router_topk(backend(), n, experts, logits, k, idx, weight); }
};

}  // namespace

// matmul(w, n, x, y): y[n, w.rows] = x[n, w.cols] . w^T
Napi::Value Matmul(const Args& a, const StatePtr& s) {
  auto w = ReadHandle<HandleKind::Weight>(a, a[0], "w", *s);
  int64_t n = a.Int(a[1], "n", 0);
  auto x = a.Float32(a[2], "x");
  auto y = a.Float32(a[3], "y");
  a.ExpectSize(x, "x", "n * w.cols", {n, w->cols});
  a.ExpectSize(y, "y", "n * w.rows", {n, w->rows});
  auto wk = std::make_unique<MatmulWorker>(a.Env(), a.op(), s);
  wk->w = static_cast<const ts_weight*>(w->ptr);
  wk->n = n;
  wk->x = x.data;
  wk->y = y.data;
  wk->Use(w);
  wk->Keep(x);
  wk->Keep(y);
  return OpWorker::Start(std::move(wk));
}

// rmsnorm(w, n, d, x, eps, y): y may be x.
Napi::Value Rmsnorm(const Args& a, const StatePtr& s) {
  auto w = ReadHandle<HandleKind::Weight>(a, a[0], "w", *s);
  int64_t n = a.Int(a[1], "n", 0);
  int64_t d = a.Int(a[2], "d", 1);
  auto x = a.Float32(a[3], "x");
  double eps = a.Number(a[4], "eps");
  auto y = a.Float32(a[5], "y");
  // A norm weight is a vector: [1, d] (or [d, 1]).
  if (!((w->rows == 1 && w->cols == d) || (w->cols == 1 && w->rows == d))) {
    a.RangeFail("w is [" + std::to_string(w->rows) + ", " + std::to_string(w->cols) + "], expected [1, d] = [1, " +
                std::to_string(d) + "]");
  }
  a.ExpectSize(x, "x", "n * d", {n, d});
  a.ExpectSize(y, "y", "n * d", {n, d});
  auto wk = std::make_unique<RmsnormWorker>(a.Env(), a.op(), s);
  wk->w = static_cast<const ts_weight*>(w->ptr);
  wk->n = n;
  wk->d = d;
  wk->x = x.data;
  wk->eps = static_cast<float>(eps);
  wk->y = y.data;
  wk->Use(w);
  wk->Keep(x);
  wk->Keep(y);
  return OpWorker::Start(std::move(wk));
}

// rope(n, heads, headDim, positions, theta, x): in place on x[n, heads, headDim].
Napi::Value Rope(const Args& a, const StatePtr& s) {
  int64_t n = a.Int(a[0], "n", 0);
  int64_t heads = a.Int(a[1], "heads", 1);
  int64_t head_dim = a.Int(a[2], "headDim", 1);
  auto positions = a.Int32(a[3], "positions");
  double theta = a.Number(a[4], "theta");
  auto x = a.Float32(a[5], "x");
  a.ExpectSize(positions, "positions", "n", {n});
  a.ExpectSize(x, "x", "n * heads * headDim", {n, heads, head_dim});
  auto wk = std::make_unique<RopeWorker>(a.Env(), a.op(), s);
  wk->n = n;
  wk->heads = heads;
  wk->head_dim = head_dim;
  wk->positions = positions.data;
  wk->theta = theta;
  wk->x = x.data;
  wk->Keep(positions);
  wk->Keep(x);
  return OpWorker::Start(std::move(wk));
}

// routerTopk(n, experts, logits, k, idx, weight)
Napi::Value RouterTopk(const Args& a, const StatePtr& s) {
  int64_t n = a.Int(a[0], "n", 0);
  int64_t experts = a.Int(a[1], "experts", 1);
  auto logits = a.Float32(a[2], "logits");
  int64_t k = a.Int(a[3], "k", 1);
  auto idx = a.Int32(a[4], "idx");
  auto weight = a.Float32(a[5], "weight");
  if (k > experts) a.RangeFail("k = " + std::to_string(k) + " is more than experts = " + std::to_string(experts));
  a.ExpectSize(logits, "logits", "n * experts", {n, experts});
  a.ExpectSize(idx, "idx", "n * k", {n, k});
  a.ExpectSize(weight, "weight", "n * k", {n, k});
  auto wk = std::make_unique<RouterTopkWorker>(a.Env(), a.op(), s);
  wk->n = n;
  wk->experts = experts;
  wk->k = k;
  wk->logits = logits.data;
  wk->idx = idx.data;
  wk->weight = weight.data;
  wk->Keep(logits);
  wk->Keep(idx);
  wk->Keep(weight);
  return OpWorker::Start(std::move(wk));
}

}  // namespace tsaddon
