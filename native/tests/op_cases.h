// op_cases.h — one table of op cases that every backend runs (ggml's
// test-backend-ops idea): each case builds random inputs from its own seeded
// stream (the same inputs on every backend), runs one op of the C ABI
// (turbosparse.h) on a given ts_backend, and compares the outputs with a
// double-precision reference under a stated tolerance. Outputs are poisoned
// with NaN first, so an element a backend never writes fails.
//
// Users: test_backend_ops.cc (every case on every backend present at run time),
// test_kernels.cc (every case on each CPU variant), test_cuda.cc (the moe cases
// on each CUDA FFN path). A header (not a .cc): every native/tests/*.cc is a
// program of its own (CMakeLists.txt, test/native/native-kernels.test.ts).
//
// Errors are "max |y - ref| / max |ref|" over an op's outputs unless a case
// says otherwise; exact parts (ids, masks, counts, active neurons, return
// codes, bytes) must hold as stated.
#pragma once
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <functional>
#include <limits>
#include <memory>
#include <string>
#include <vector>
#include "../src/dtype.h"
#include "turbosparse.h"
#include "test_util.h"

namespace tsops {

using tstest::Rng;
using tstest::rand_vec;

inline std::string fmt(const char* f, ...) __attribute__((format(printf, 1, 2)));
inline std::string fmt(const char* f, ...) {
  char buf[512];
  va_list ap;
  va_start(ap, f);
  std::vsnprintf(buf, sizeof buf, f, ap);
  va_end(ap);
  return buf;
}

inline const char* dname(ts_dtype t) { return ts::dtype_name(t); }
inline const ts_dtype kDtypes[] = {TS_F32, TS_F16, TS_BF16, TS_I8};

// ---------------------------------------------------------------- host data

// A host matrix and the exact values a backend should hold after storing it as
// `store`. Without `convert` the source is already exactly representable (bf16/
// f16 sources; i8 values k * 2^-7 with a +-127 per row, or per column when
// by_column: a down matrix is quantised per row of its transpose). With
// `convert` the source is random data in dtype `src` (F32, F16 or BF16) that
// the library must round to `store` (to the values of dtype.h, and for i8 one
// scale max|row| / 127 per stored row, q = nearbyint(v / scale)).
struct HostMat {
  int64_t rows = 0, cols = 0;
  ts_dtype store = TS_F32;
  std::vector<float> f32;
  std::vector<uint16_t> h16;
  // values as stored, [rows * cols]: exact for f32/f16/bf16; i8's q * scale rounded
  // to float (2^-24 relative, far below any tolerance; halves the memory of the
  // large cases, whose references are still summed in double)
  std::vector<float> v;
  ts_host_matrix m{};
  const ts_host_matrix* host() const { return &m; }
  double at(int64_t r, int64_t c) const { return v[size_t(r * cols + c)]; }
  // after the upload: the library keeps no pointer into the source (turbosparse.h)
  void drop_source() {
    std::fill(f32.begin(), f32.end(), std::numeric_limits<float>::quiet_NaN());
    std::vector<float>().swap(f32);
    std::vector<uint16_t>().swap(h16);
    m.data = nullptr;
  }
};

inline float round_to(ts_dtype dt, float x) {
  if (dt == TS_BF16) return ts::bf16_to_f32(ts::f32_to_bf16(x));
  if (dt == TS_F16) return ts::f16_to_f32(ts::f32_to_f16(x));
  return x;
}

// n uniform floats in [lo, hi), two per 64-bit draw (much faster than
// std::uniform_real_distribution for the large cases' matrices)
inline void fill_uniform(Rng& rng, float* out, size_t n, float lo, float hi) {
  const float step = (hi - lo) * 0x1p-24f;
  for (size_t i = 0; i < n; i += 2) {
    const uint64_t u = rng.bits();
    out[i] = lo + float(u >> 40) * step;
    if (i + 1 < n) out[i + 1] = lo + float((u >> 8) & 0xffffffu) * step;
  }
}

inline std::unique_ptr<HostMat> make_mat(Rng& rng, int64_t rows, int64_t cols, ts_dtype store, float scale,
                                         bool convert = false, bool by_column = false, ts_dtype src = TS_F32,
                                         float lo = 0, float hi = 0) {
  auto h = std::make_unique<HostMat>();
  h->rows = rows;
  h->cols = cols;
  h->store = store;
  const size_t n = size_t(rows * cols);
  h->v.resize(n);
  if (lo == hi) lo = -scale, hi = scale;
  if (store == TS_F32 || convert) {
    h->f32.resize(n);
    fill_uniform(rng, h->f32.data(), n, lo, hi);
    if (src != TS_F32)
      for (auto& x : h->f32) x = round_to(src, x);
    if (src == TS_F32) {
      h->m = {TS_F32, rows, cols, h->f32.data()};
    } else {
      h->h16.resize(n);
      for (size_t i = 0; i < n; i++) h->h16[i] = src == TS_BF16 ? ts::f32_to_bf16(h->f32[i]) : ts::f32_to_f16(h->f32[i]);
      h->m = {src, rows, cols, h->h16.data()};
    }
    // the i8 scale of each stored row: a row here, or a column when by_column
    std::vector<float> mx(size_t(by_column ? cols : rows), 0.f);
    for (int64_t r = 0; r < rows; r++)
      for (int64_t c = 0; c < cols; c++) {
        float& m = mx[size_t(by_column ? c : r)];
        m = std::max(m, std::fabs(h->f32[size_t(r * cols + c)]));
      }
    for (int64_t r = 0; r < rows; r++)
      for (int64_t c = 0; c < cols; c++) {
        const float x = h->f32[size_t(r * cols + c)];
        float& out = h->v[size_t(r * cols + c)];
        if (store == TS_I8) {
          const float s = mx[size_t(by_column ? c : r)] / 127.f;
          out = s > 0 ? float(double(std::nearbyint(x / s)) * double(s)) : 0.f;
        } else {
          out = round_to(store, x);
        }
      }
    return h;
  }
  if (store == TS_BF16 || store == TS_F16) {
    h->h16.resize(n);
    std::vector<float> x(n);
    fill_uniform(rng, x.data(), n, lo, hi);
    for (size_t i = 0; i < n; i++) {
      h->h16[i] = store == TS_BF16 ? ts::f32_to_bf16(x[i]) : ts::f32_to_f16(x[i]);
      h->v[i] = store == TS_BF16 ? ts::bf16_to_f32(h->h16[i]) : ts::f16_to_f32(h->h16[i]);
    }
    h->m = {store, rows, cols, h->h16.data()};
    return h;
  }
  // I8: k * unit with |k| <= 127 and one |k| = 127 per row (or column), unit a power of 2
  h->f32.resize(n);
  const double unit = std::ldexp(1.0, int(std::floor(std::log2(double(scale)))) - 7);
  std::vector<int> k(n);
  for (auto& v : k) v = rng.below(255) - 127;
  if (!by_column)
    for (int64_t r = 0; r < rows; r++) k[size_t(r * cols + rng.below(int(cols)))] = rng.below(2) ? 127 : -127;
  else
    for (int64_t c = 0; c < cols; c++) k[size_t(rng.below(int(rows)) * cols + c)] = rng.below(2) ? 127 : -127;
  for (size_t i = 0; i < n; i++) {
    h->f32[i] = float(k[i] * unit);  // exact
    h->v[i] = h->f32[i];
  }
  h->m = {TS_F32, rows, cols, h->f32.data()};
  return h;
}

// max |a - b| / max |b|; infinite when a holds a NaN/Inf where b is finite
inline double rel_err(const float* a, const double* b, size_t n) {
  double d = 0, m = 0;
  for (size_t i = 0; i < n; i++) {
    if (!std::isfinite(a[i]) && std::isfinite(b[i])) return INFINITY;
    d = std::max(d, std::fabs(double(a[i]) - b[i]));
    m = std::max(m, std::fabs(b[i]));
  }
  return d / std::max(m, 1e-30);
}
inline double rel_err(const float* a, const float* b, size_t n) {
  std::vector<double> bd(b, b + n);
  return rel_err(a, bd.data(), n);
}

inline std::vector<float> poisoned(size_t n) { return std::vector<float>(n, std::numeric_limits<float>::quiet_NaN()); }

// Random masks at `density`; the bits past I in each row's last word are set
// (junk a backend must ignore).
inline std::vector<uint64_t> random_masks(Rng& rng, int64_t n, int64_t I, float density) {
  const int64_t W = ts_mask_words(I);
  std::vector<uint64_t> m(size_t(n * W), 0);
  for (int64_t t = 0; t < n; t++)
    for (int64_t i = 0; i < I; i++)
      if (rng.uni(0, 1) < density) m[size_t(t * W + i / 64)] |= uint64_t(1) << (i % 64);
  if (I % 64)
    for (int64_t t = 0; t < n; t++) m[size_t(t * W + W - 1)] |= ~uint64_t(0) << (I % 64);
  return m;
}

// ---------------------------------------------------------------- outcomes

// What one case measured: `err` is held to the case's tolerance; `ok` and
// `why` carry the exact parts (and extra bounds a case states itself).
struct Outcome {
  double err = 0;
  bool ok = true;
  std::string why;
  void fail(const std::string& w) {
    if (ok) why = w;
    ok = false;
  }
  void error(double e) {
    if (!(e <= err)) err = e;  // NaN counts as the worst
  }
  // a call's return code; false (and the library's message) on failure
  bool call(int rc, const std::string& what) {
    if (rc != 0) fail(what + ": " + ts_last_error());
    return rc == 0;
  }
  template <class T>
  bool made(T* p, const std::string& what) {
    if (!p) fail(what + ": " + ts_last_error());
    return p != nullptr;
  }
  void within(double v, double limit, const std::string& what) {
    if (!(v <= limit)) fail(what + fmt(" %.2e > %.0e", v, limit));
  }
};

struct OpCase {
  std::string op;    // the C ABI functions it exercises
  std::string name;  // op and parameters, as printed
  double tol;        // bound on Outcome::err
  std::function<void(ts_backend*, Rng&, Outcome&)> run;
};

// ---------------------------------------------------------------- references (double)

inline std::vector<double> ref_matmul(const HostMat& W, int64_t n, const float* x) {
  std::vector<double> y(size_t(n * W.rows));
  for (int64_t t = 0; t < n; t++)
    for (int64_t r = 0; r < W.rows; r++) {
      double s = 0;
      const float* w = &W.v[size_t(r * W.cols)];
      const float* xr = x + t * W.cols;
      for (int64_t c = 0; c < W.cols; c++) s += double(w[c]) * xr[c];
      y[size_t(t * W.rows + r)] = s;
    }
  return y;
}

struct ExpertRef {
  std::unique_ptr<HostMat> w1, w3, w2;
};

// expert(x, mask) in double; counts neurons on; `ambiguous` = masked neurons whose
// gate or up is so close to 0 that float rounding may flip its sign
inline std::vector<double> ref_expert(const ExpertRef& e, const float* x, const uint64_t* mask, int* on,
                                      int* ambiguous) {
  const int64_t I = e.w1->rows, H = e.w1->cols;
  std::vector<double> y(size_t(H), 0.0);
  *on = 0;
  *ambiguous = 0;
  for (int64_t i = 0; i < I; i++) {
    if (!((mask[i / 64] >> (i % 64)) & 1)) continue;
    double g = 0, u = 0, mg = 0, mu = 0;
    for (int64_t k = 0; k < H; k++) {
      g += e.w1->at(i, k) * x[k];
      u += e.w3->at(i, k) * x[k];
      mg += std::fabs(e.w1->at(i, k) * x[k]);
      mu += std::fabs(e.w3->at(i, k) * x[k]);
    }
    if (std::fabs(g) <= 1e-5 * mg || std::fabs(u) <= 1e-5 * mu) (*ambiguous)++;
    if (g > 0 && u > 0) {
      (*on)++;
      const double a = g * u;
      for (int64_t k = 0; k < H; k++) y[size_t(k)] += a * e.w2->at(k, i);
    }
  }
  return y;
}

struct PredRef {
  std::unique_ptr<HostMat> fc1, fc2;
};

// mask vs double reference; a bit may differ only where |logit| is within rounding of 0
inline bool predictor_matches(const PredRef& p, const float* x, const uint64_t* mask, int32_t count,
                              std::string* why) {
  const int64_t R = p.fc1->rows, H = p.fc1->cols, I = p.fc2->rows;
  std::vector<double> h(static_cast<size_t>(R));
  for (int64_t r = 0; r < R; r++) {
    double s = 0;
    for (int64_t k = 0; k < H; k++) s += p.fc1->at(r, k) * x[k];
    h[size_t(r)] = std::max(s, 0.0);
  }
  int bits_set = 0;
  for (int64_t i = 0; i < I; i++) {
    double s = 0, mag = 0;
    for (int64_t r = 0; r < R; r++) {
      s += p.fc2->at(i, r) * h[size_t(r)];
      mag += std::fabs(p.fc2->at(i, r) * h[size_t(r)]);
    }
    const bool bit = (mask[i / 64] >> (i % 64)) & 1;
    bits_set += bit;
    if (bit != (s > 0) && std::fabs(s) > 1e-5 * mag) {
      *why = "neuron " + std::to_string(i) + " logit " + fmt("%.3e", s);
      return false;
    }
  }
  const int64_t words = ts_mask_words(I);
  if (I % 64 && (mask[words - 1] >> (I % 64)) != 0) return *why = "bits set past I", false;
  if (count >= 0 && count != bits_set) return *why = "count " + std::to_string(count) + " != popcount", false;
  return true;
}

// ---------------------------------------------------------------- the cases

// matmul of a [rows x cols] weight stored as `store` over batches of n rows
inline void case_matmul(ts_backend* b, Rng& rng, Outcome& o, int64_t rows, int64_t cols, ts_dtype store,
                        bool convert, ts_dtype src, std::vector<int64_t> ns) {
  auto W = make_mat(rng, rows, cols, store, 0.5f, convert, false, src);
  ts_weight* w = ts_weight_create(b, W->host(), store);
  if (!o.made(w, "ts_weight_create")) return;
  W->drop_source();
  if (ts_weight_rows(w) != rows || ts_weight_cols(w) != cols) o.fail("ts_weight_rows/cols");
  for (int64_t n : ns) {
    auto x = rand_vec(rng, size_t(n * cols), -1, 1);
    auto y = poisoned(size_t(n * rows));
    if (!o.call(ts_matmul(b, w, n, x.data(), y.data()), fmt("ts_matmul n=%lld", (long long)n))) break;
    auto ref = ref_matmul(*W, n, x.data());
    o.error(rel_err(y.data(), ref.data(), y.size()));
  }
  ts_weight_free(w);
}

// rmsnorm, out of place and in place (y == x gives the same bits)
inline void case_rmsnorm(ts_backend* b, Rng& rng, Outcome& o, int64_t d, int64_t n, ts_dtype store) {
  // f32 weights: exact values; others: weights near 1 (as a model's) rounded by the library
  auto W = store == TS_F32 ? make_mat(rng, 1, d, TS_F32, 1.0f) : make_mat(rng, 1, d, store, 1.f, true, false, TS_F32, 0.5f, 1.5f);
  ts_weight* w = ts_weight_create(b, W->host(), store);
  if (!o.made(w, "ts_weight_create")) return;
  auto x = rand_vec(rng, size_t(n * d), -2, 2);
  auto y = poisoned(x.size());
  if (o.call(ts_rmsnorm(b, w, n, d, x.data(), 1e-5f, y.data()), "ts_rmsnorm")) {
    std::vector<double> ref(x.size());
    for (int64_t i = 0; i < n; i++) {
      double ss = 0;
      for (int64_t k = 0; k < d; k++) ss += double(x[size_t(i * d + k)]) * x[size_t(i * d + k)];
      const double inv = 1.0 / std::sqrt(ss / double(d) + double(1e-5f));
      for (int64_t k = 0; k < d; k++) ref[size_t(i * d + k)] = x[size_t(i * d + k)] * inv * W->at(0, k);
    }
    o.error(rel_err(y.data(), ref.data(), y.size()));
    if (o.call(ts_rmsnorm(b, w, n, d, x.data(), 1e-5f, x.data()), "ts_rmsnorm in place") &&
        std::memcmp(x.data(), y.data(), x.size() * 4) != 0)
      o.fail("in place (y == x) differs from out of place");
  }
  ts_weight_free(w);
}

inline void case_rope(ts_backend* b, Rng& rng, Outcome& o, int64_t n, int64_t heads, int64_t hd, double theta,
                      std::vector<int32_t> pos) {
  while (int64_t(pos.size()) < n) pos.push_back(rng.below(100000));
  auto x = rand_vec(rng, size_t(n * heads * hd), -2, 2);
  std::vector<double> ref(x.size());
  for (int64_t i = 0; i < n; i++)
    for (int64_t h = 0; h < heads; h++)
      for (int64_t j = 0; j < hd / 2; j++) {
        const double f = std::pow(theta, -2.0 * double(j) / double(hd)), a = pos[size_t(i)] * f;
        const size_t off = size_t((i * heads + h) * hd);
        const double x1 = x[off + size_t(j)], x2 = x[off + size_t(j + hd / 2)];
        ref[off + size_t(j)] = x1 * std::cos(a) - x2 * std::sin(a);
        ref[off + size_t(j + hd / 2)] = x2 * std::cos(a) + x1 * std::sin(a);
      }
  if (o.call(ts_rope(b, n, heads, hd, pos.data(), theta, x.data()), "ts_rope")) o.error(rel_err(x.data(), ref.data(), x.size()));
}

// Router: softmax in double, a NaN logit has probability 0 (never preferred, still
// a valid id), ties to the lower id, weights renormalised over the k picked (1/k
// each when all picked are 0). err = max |weight - ref| (weights are in [0, 1]).
inline void case_router(ts_backend* b, Outcome& o, int64_t n, int64_t E, int64_t k, const std::vector<float>& logits) {
  std::vector<int32_t> idx(size_t(n * k), -7);
  auto w = poisoned(size_t(n * k));
  if (!o.call(ts_router_topk(b, n, E, logits.data(), k, idx.data(), w.data()), "ts_router_topk")) return;
  for (int64_t i = 0; i < n; i++) {
    std::vector<double> p(static_cast<size_t>(E));
    double mx = -INFINITY, sum = 0;
    for (int64_t e = 0; e < E; e++)
      if (double(logits[size_t(i * E + e)]) > mx) mx = logits[size_t(i * E + e)];
    for (int64_t e = 0; e < E; e++) {
      p[size_t(e)] = std::exp(double(logits[size_t(i * E + e)]) - mx);
      if (!(p[size_t(e)] >= 0)) p[size_t(e)] = 0;
      sum += p[size_t(e)];
    }
    std::vector<int> order(static_cast<size_t>(E));
    for (int e = 0; e < E; e++) order[size_t(e)] = e;
    std::stable_sort(order.begin(), order.end(), [&](int a, int c) { return p[size_t(a)] > p[size_t(c)]; });
    double picked = 0;
    for (int64_t j = 0; j < k; j++) picked += p[size_t(order[size_t(j)])] / sum;
    for (int64_t j = 0; j < k; j++) {
      if (idx[size_t(i * k + j)] != order[size_t(j)])
        o.fail(fmt("row %lld pick %lld: id %d, expected %d", (long long)i, (long long)j, idx[size_t(i * k + j)],
                   order[size_t(j)]));
      const double want = picked > 0 ? p[size_t(order[size_t(j)])] / sum / picked : 1.0 / double(k);
      const double got = w[size_t(i * k + j)];
      o.error(std::isfinite(got) ? std::fabs(got - want) : INFINITY);
    }
  }
}

// ts_predict over batches of n rows: masks (bits past I clear) and counts
inline void case_predict(ts_backend* b, Rng& rng, Outcome& o, int64_t H, int64_t R, int64_t I, ts_dtype store,
                         bool convert, std::vector<int64_t> ns) {
  const int64_t W = ts_mask_words(I);
  PredRef p;
  p.fc1 = make_mat(rng, R, H, store, 0.5f, convert, false, convert ? TS_BF16 : TS_F32);
  p.fc2 = make_mat(rng, I, R, store, 0.5f, convert);
  ts_predictor* pr = ts_predictor_create(b, p.fc1->host(), p.fc2->host(), store);
  if (!o.made(pr, "ts_predictor_create")) return;
  if (ts_predictor_rank(pr) != R) o.fail("ts_predictor_rank");
  for (int64_t n : ns) {
    auto x = rand_vec(rng, size_t(n * H), -1, 1);
    std::vector<uint64_t> masks(size_t(n * W), 0x5a5a5a5a5a5a5a5aull);
    std::vector<int32_t> counts(size_t(n), -1);
    if (!o.call(ts_predict(b, pr, n, x.data(), masks.data(), counts.data()), "ts_predict")) break;
    std::string why;
    for (int64_t t = 0; t < n; t++)
      if (!predictor_matches(p, x.data() + t * H, masks.data() + t * W, counts[size_t(t)], &why)) {
        o.fail(fmt("n=%lld row %lld: ", (long long)n, (long long)t) + why);
        break;
      }
  }
  ts_predictor_free(pr);
}

// ts_predict_many: predictors of the given dtypes and ranks over row subsets of one batch
inline void case_predict_many(ts_backend* b, Rng& rng, Outcome& o, int64_t H, int64_t n_rows,
                              std::vector<ts_dtype> stores, std::vector<int64_t> ranks, std::vector<int64_t> Is,
                              std::vector<std::vector<int32_t>> rows) {
  const size_t nc = stores.size();
  std::vector<PredRef> refs(nc);
  std::vector<ts_predictor*> prs(nc, nullptr);
  bool made = true;
  for (size_t c = 0; c < nc; c++) {
    refs[c].fc1 = make_mat(rng, ranks[c], H, stores[c], 0.5f);
    refs[c].fc2 = make_mat(rng, Is[c], ranks[c], stores[c], 0.5f);
    prs[c] = ts_predictor_create(b, refs[c].fc1->host(), refs[c].fc2->host(), stores[c]);
    made = made && o.made(prs[c], "ts_predictor_create");
  }
  if (made) {
    auto x = rand_vec(rng, size_t(n_rows * H), -1, 1);
    std::vector<std::vector<uint64_t>> masks(nc);
    std::vector<std::vector<int32_t>> counts(nc);
    std::vector<ts_predict_call> calls(nc);
    for (size_t c = 0; c < nc; c++) {
      const int64_t n = int64_t(rows[c].size());
      masks[c].assign(size_t(n * ts_mask_words(Is[c])), 0x5a5a5a5a5a5a5a5aull);
      counts[c].assign(size_t(n), -1);
      // the last call passes no counts (NULL is allowed)
      calls[c] = {prs[c], n, rows[c].data(), masks[c].data(), c + 1 == nc ? nullptr : counts[c].data()};
    }
    if (o.call(ts_predict_many(b, n_rows, H, x.data(), int64_t(nc), calls.data()), "ts_predict_many")) {
      for (size_t c = 0; c < nc && o.ok; c++) {
        const int64_t W = ts_mask_words(Is[c]);
        std::string why;
        for (size_t j = 0; j < rows[c].size(); j++)
          if (!predictor_matches(refs[c], x.data() + rows[c][j] * H, masks[c].data() + int64_t(j) * W,
                                 c + 1 == nc ? -1 : counts[c][j], &why)) {
            o.fail(fmt("call %zu row %zu: ", c, j) + why);
            break;
          }
      }
    }
  }
  for (auto* p : prs) ts_predictor_free(p);
}

// Attention over caches of `dt` with the K/V the reference expects them to hold
// (rows rounded to dt when written). One call = rows (sequence, position).
struct AttnRef {
  int64_t heads, kvh, hd;
  ts_dtype dt;
  std::vector<std::vector<float>> K, V;  // per sequence: [positions][kvh * hd]
  AttnRef(int64_t heads_, int64_t kvh_, int64_t hd_, ts_dtype dt_, int seqs, int64_t T)
      : heads(heads_), kvh(kvh_), hd(hd_), dt(dt_), K(size_t(seqs), std::vector<float>(size_t(T * kvh_ * hd_))), V(K) {}

  // runs one ts_attention over rows (seq[i], pos[i]) with fresh random q/k/v; returns the error
  double run(ts_backend* b, Rng& rng, Outcome& o, int64_t layer, const std::vector<ts_kvcache*>& seq_caches,
             const std::vector<int>& seq, const std::vector<int32_t>& pos) {
    const int64_t n = int64_t(seq.size());
    auto q = rand_vec(rng, size_t(n * heads * hd), -1, 1);
    auto k = rand_vec(rng, size_t(n * kvh * hd), -1, 1);
    auto v = rand_vec(rng, size_t(n * kvh * hd), -1, 1);
    std::vector<ts_kvcache*> caches;
    for (int s : seq) caches.push_back(seq_caches[size_t(s)]);
    auto out = poisoned(size_t(n * heads * hd));
    if (!o.call(ts_attention(b, layer, n, caches.data(), pos.data(), heads, kvh, hd, q.data(), k.data(), v.data(),
                             out.data()),
                fmt("ts_attention (%lld rows)", (long long)n)))
      return INFINITY;
    for (int64_t i = 0; i < n; i++)
      for (int64_t e = 0; e < kvh * hd; e++) {
        K[size_t(seq[size_t(i)])][size_t(pos[size_t(i)] * kvh * hd + e)] = round_to(dt, k[size_t(i * kvh * hd + e)]);
        V[size_t(seq[size_t(i)])][size_t(pos[size_t(i)] * kvh * hd + e)] = round_to(dt, v[size_t(i * kvh * hd + e)]);
      }
    std::vector<double> ref(out.size());
    for (int64_t i = 0; i < n; i++) {
      const auto& Ks = K[size_t(seq[size_t(i)])];
      const auto& Vs = V[size_t(seq[size_t(i)])];
      const int64_t len = pos[size_t(i)] + 1;
      std::vector<double> s(static_cast<size_t>(len));
      for (int64_t h = 0; h < heads; h++) {
        const int64_t g = h / (heads / kvh);
        double mx = -1e300, sum = 0;
        for (int64_t j = 0; j < len; j++) {
          double d = 0;
          for (int64_t c = 0; c < hd; c++)
            d += double(q[size_t((i * heads + h) * hd + c)]) * Ks[size_t((j * kvh + g) * hd + c)];
          s[size_t(j)] = d / std::sqrt(double(hd));
          mx = std::max(mx, s[size_t(j)]);
        }
        for (auto& e : s) sum += (e = std::exp(e - mx));
        for (int64_t c = 0; c < hd; c++) {
          double acc = 0;
          for (int64_t j = 0; j < len; j++) acc += s[size_t(j)] * Vs[size_t((j * kvh + g) * hd + c)];
          ref[size_t((i * heads + h) * hd + c)] = acc / sum;
        }
      }
    }
    const double e = rel_err(out.data(), ref.data(), out.size());
    o.error(e);
    return e;
  }
};

// Two sequences in one batch: prefill of b, prefill of a (rows see each other) +
// a decode of b, then a decode of both with a past its first size (grown), and
// a copy of a's prefix attending as a does. Also the cache calls' own rules:
// grow to fewer positions is a no-op, bytes, copies between sizes, shapes and
// dtypes, and one dtype per attention call.
inline void case_attention_small(ts_backend* b, Rng& rng, Outcome& o, ts_dtype dt) {
  const int64_t L = 2, T = 12, heads = 4, kvh = 2, hd = 18, layer = 1;
  ts_kvcache* ca = ts_kvcache_create_typed(b, L, 5, kvh, hd, dt);  // grows before its 6th position
  ts_kvcache* cb = ts_kvcache_create_typed(b, L, T, kvh, hd, dt);
  if (o.made(ca, "ts_kvcache_create_typed") && o.made(cb, "ts_kvcache_create_typed")) {
    AttnRef r(heads, kvh, hd, dt, 2, T);
    const std::vector<ts_kvcache*> seqs = {ca, cb};
    r.run(b, rng, o, layer, seqs, {1, 1, 1}, {0, 1, 2});
    r.run(b, rng, o, layer, seqs, {0, 0, 0, 0, 0, 1}, {0, 1, 2, 3, 4, 3});
    const int64_t elem = dt == TS_F32 ? 4 : 2;
    if (ts_kvcache_grow(ca, 3) != 0 || ts_kvcache_bytes(ca) != 2 * L * 5 * kvh * hd * elem)
      o.fail("kvcache grow to fewer positions is not a no-op");
    if (o.call(ts_kvcache_grow(ca, T), "ts_kvcache_grow")) {
      r.run(b, rng, o, layer, seqs, {1, 0}, {4, 5});
      if (ts_kvcache_bytes(ca) != 2 * L * T * kvh * hd * elem) o.fail("ts_kvcache_bytes after grow");
      // a copy of a's first 6 positions into a larger cache attends exactly as a does at position 6
      ts_kvcache* cc = ts_kvcache_create_typed(b, L, T + 4, kvh, hd, dt);
      if (o.made(cc, "ts_kvcache_create_typed")) {
        if (!(ts_kvcache_copy(cc, ca, T + 1) != 0 && std::strstr(ts_last_error(), "tokens = 13")))
          o.fail("kvcache copy past the source's size does not fail");
        if (o.call(ts_kvcache_copy(cc, ca, 6), "ts_kvcache_copy")) {
          auto q = rand_vec(rng, size_t(heads * hd), -1, 1), k = rand_vec(rng, size_t(kvh * hd), -1, 1),
               v = rand_vec(rng, size_t(kvh * hd), -1, 1);
          auto oa = poisoned(q.size()), oc = poisoned(q.size());
          int32_t p6[1] = {6};
          ts_kvcache* one_a[1] = {ca};
          ts_kvcache* one_c[1] = {cc};
          if (o.call(ts_attention(b, layer, 1, one_a, p6, heads, kvh, hd, q.data(), k.data(), v.data(), oa.data()),
                     "ts_attention") &&
              o.call(ts_attention(b, layer, 1, one_c, p6, heads, kvh, hd, q.data(), k.data(), v.data(), oc.data()),
                     "ts_attention") &&
              std::memcmp(oa.data(), oc.data(), oa.size() * 4) != 0)
            o.fail("attention over a copied prefix differs from the original's");
        }
        ts_kvcache* other = ts_kvcache_create_typed(b, L, T, kvh + 1, hd, dt);
        if (!(ts_kvcache_copy(other, ca, 2) != 0 && std::strstr(ts_last_error(), "kv heads")))
          o.fail("kvcache copy between shapes does not fail");
        ts_kvcache_free(other);
        const ts_dtype odt = dt == TS_F32 ? TS_BF16 : TS_F32;
        ts_kvcache* mixed = ts_kvcache_create_typed(b, L, T, kvh, hd, odt);
        if (!(ts_kvcache_copy(mixed, ca, 2) != 0 && std::strstr(ts_last_error(), " stores ")))
          o.fail("kvcache copy between dtypes does not fail");
        ts_kvcache* two[2] = {ca, mixed};
        int32_t p2[2] = {6, 0};
        std::vector<float> q2(size_t(2 * heads * hd)), kv2(size_t(2 * kvh * hd)), o2(q2.size());
        if (!(ts_attention(b, layer, 2, two, p2, heads, kvh, hd, q2.data(), kv2.data(), kv2.data(), o2.data()) != 0 &&
              std::strstr(ts_last_error(), "one call takes caches of one dtype")))
          o.fail("attention over caches of two dtypes does not fail");
        ts_kvcache_free(mixed);
        ts_kvcache_free(cc);
      }
    }
  }
  ts_kvcache_free(ca);
  ts_kvcache_free(cb);
}

// Long sequences: A prefills 300 positions and B 7 in one call; A's cache grows
// from 300 to 700 positions; then a decode of each plus a late position of A
// (past a chunk edge); then A's 302 positions copied into a cache of another
// size (a swapped layer pitch shows) attend at position 302.
inline void case_attention_long(ts_backend* b, Rng& rng, Outcome& o, int64_t heads, int64_t kvh, int64_t hd,
                                ts_dtype dt) {
  const int64_t layers = 2, max_tokens = 700, layer = 1, first = 300;
  ts_kvcache* ca = ts_kvcache_create_typed(b, layers, first, kvh, hd, dt);
  ts_kvcache* cb = ts_kvcache_create_typed(b, layers, max_tokens, kvh, hd, dt);
  ts_kvcache* copy = ts_kvcache_create_typed(b, layers, 400, kvh, hd, dt);
  if (o.made(ca, "ts_kvcache_create_typed") && o.made(cb, "ts_kvcache_create_typed") &&
      o.made(copy, "ts_kvcache_create_typed")) {
    AttnRef r(heads, kvh, hd, dt, 3, max_tokens);
    std::vector<ts_kvcache*> seqs = {ca, cb, copy};
    std::vector<int> seq;
    std::vector<int32_t> pos;
    for (int i = 0; i < 300; i++) seq.push_back(0), pos.push_back(i);
    for (int i = 0; i < 7; i++) seq.push_back(1), pos.push_back(i);
    r.run(b, rng, o, layer, seqs, seq, pos);
    if (o.ok && o.call(ts_kvcache_grow(ca, max_tokens), "ts_kvcache_grow")) {
      r.run(b, rng, o, layer, seqs, {1, 0, 0}, {7, 300, 301});
      if (o.ok && o.call(ts_kvcache_copy(copy, ca, 302), "ts_kvcache_copy")) {
        r.K[2] = r.K[0];
        r.V[2] = r.V[0];
        r.run(b, rng, o, layer, seqs, {2}, {302});
      }
    }
  }
  ts_kvcache_free(ca);
  ts_kvcache_free(cb);
  ts_kvcache_free(copy);
}

// Experts and the calls of one ts_moe.
struct MoeSetup {
  std::vector<ExpertRef> refs;
  std::vector<ts_expert*> experts;
  struct Call {
    int expert;
    std::vector<int32_t> rows;
    std::vector<float> weight;
    std::vector<uint64_t> masks;
  };
  std::vector<Call> calls;
  ~MoeSetup() {
    for (auto* e : experts) ts_expert_free(e);
  }
};

// The double reference of one ts_moe: y, and per (call, row) pair the neurons
// on and how many of them are ambiguous (gate or up ~0).
struct MoeRef {
  std::vector<double> y;
  std::vector<int> on, amb;
};
inline MoeRef moe_reference(const MoeSetup& s, int64_t n_rows, int64_t H, const std::vector<float>& x) {
  MoeRef r;
  r.y.assign(size_t(n_rows * H), 0.0);
  for (auto& c : s.calls) {
    const ExpertRef& e = s.refs[size_t(c.expert)];
    const int64_t W = ts_mask_words(e.w1->rows);
    for (size_t j = 0; j < c.rows.size(); j++) {
      int on, amb;
      auto yr = ref_expert(e, x.data() + c.rows[j] * H, c.masks.data() + int64_t(j) * W, &on, &amb);
      for (int64_t k = 0; k < H; k++) r.y[size_t(c.rows[j] * H + k)] += c.weight[j] * yr[size_t(k)];
      r.on.push_back(on);
      r.amb.push_back(amb);
    }
  }
  return r;
}

// One ts_moe vs the reference (computed here when not given): returns the
// error; active counts must match up to the ambiguous neurons. y and active out.
inline double run_moe(ts_backend* b, Outcome& o, ts_ffn_mode mode, const MoeSetup& s, int64_t n_rows, int64_t H,
                      const std::vector<float>& x, std::vector<float>* y_out, std::vector<int32_t>* active_out,
                      const MoeRef* given = nullptr) {
  std::vector<ts_expert_call> ec;
  size_t total = 0;
  for (auto& c : s.calls) {
    ec.push_back({s.experts[size_t(c.expert)], int64_t(c.rows.size()), c.rows.data(), c.weight.data(), c.masks.data()});
    total += c.rows.size();
  }
  auto y = poisoned(size_t(n_rows * H));
  std::vector<int32_t> active(total, -1);
  const char* mname = mode == TS_FFN_SPARSE ? "sparse" : "dense-with-mask";
  if (!o.call(ts_moe(b, mode, n_rows, H, x.data(), int64_t(ec.size()), ec.data(), y.data(), active.data()),
              std::string("ts_moe ") + mname))
    return INFINITY;
  MoeRef own;
  if (!given) own = moe_reference(s, n_rows, H, x);
  const MoeRef& ref = given ? *given : own;
  for (size_t at = 0; at < total; at++)
    if (std::abs(active[at] - ref.on[at]) > ref.amb[at]) {
      o.fail(fmt("%s active[%zu] = %d, expected %d", mname, at, active[at], ref.on[at]));
      break;
    }
  if (y_out) *y_out = y;
  if (active_out) *active_out = active;
  const double e = rel_err(y.data(), ref.y.data(), y.size());
  o.error(e);
  return e;
}

// Both modes vs the reference; sparse and dense-with-mask within 1e-5 of each
// other with equal active counts; each mode bitwise repeatable.
inline void moe_both_modes(ts_backend* b, Outcome& o, const MoeSetup& s, int64_t n_rows, int64_t H,
                           const std::vector<float>& x) {
  const MoeRef ref = moe_reference(s, n_rows, H, x);
  std::vector<float> y[2], again_y;
  std::vector<int32_t> act[2], again_act;
  const ts_ffn_mode modes[2] = {TS_FFN_SPARSE, TS_FFN_DENSE_WITH_MASK};
  for (int m = 0; m < 2; m++) run_moe(b, o, modes[m], s, n_rows, H, x, &y[m], &act[m], &ref);
  if (!o.ok) return;
  o.within(rel_err(y[0].data(), y[1].data(), y[0].size()), 1e-5, "sparse vs dense-with-mask");
  if (act[0] != act[1]) o.fail("sparse and dense-with-mask active counts differ");
  for (int m = 0; m < 2; m++) {
    Outcome again;
    run_moe(b, again, modes[m], s, n_rows, H, x, &again_y, &again_act, &ref);
    if (!again.ok || std::memcmp(again_y.data(), y[m].data(), y[m].size() * 4) != 0 || again_act != act[m])
      o.fail(std::string(m == 0 ? "sparse" : "dense-with-mask") + " not repeatable (bitwise) " + again.why);
  }
}

// 3 experts H x I of `store`; per batch of n rows top-2 routing of every row,
// plus one call that lists row 0 twice; masks at 35% (90% at n = 3). Then rows
// no call touches and empty masks give 0.
inline void case_moe_topk(ts_backend* b, Rng& rng, Outcome& o, int64_t H, int64_t I, ts_dtype store,
                          std::vector<int64_t> ns) {
  MoeSetup s;
  for (int e = 0; e < 3; e++) {
    ExpertRef r;
    r.w1 = make_mat(rng, I, H, store, 0.3f);
    r.w3 = make_mat(rng, I, H, store, 0.3f);
    r.w2 = make_mat(rng, H, I, store, 0.3f, false, true);
    ts_expert* ex = ts_expert_create(b, r.w1->host(), r.w3->host(), r.w2->host(), store);
    if (!o.made(ex, "ts_expert_create")) return;
    s.refs.push_back(std::move(r));
    s.experts.push_back(ex);
  }
  if (ts_expert_hidden(s.experts[0]) != H || ts_expert_intermediate(s.experts[0]) != I)
    o.fail("ts_expert_hidden/intermediate");
  for (int64_t n : ns) {
    auto x = rand_vec(rng, size_t(n * H), -1, 1);
    s.calls.assign(3, {});
    for (int e = 0; e < 3; e++) s.calls[size_t(e)].expert = e;
    for (int64_t r = 0; r < n; r++) {
      const int a = rng.below(3), c = (a + 1 + rng.below(2)) % 3;
      for (int e : {a, c}) {
        s.calls[size_t(e)].rows.push_back(int32_t(r));
        s.calls[size_t(e)].weight.push_back(rng.uni(0.1f, 0.9f));
      }
    }
    s.calls[0].rows.push_back(0);
    s.calls[0].weight.push_back(0.25f);
    for (auto& c : s.calls) c.masks = random_masks(rng, int64_t(c.rows.size()), I, n == 3 ? 0.9f : 0.35f);
    moe_both_modes(b, o, s, n, H, x);
  }
  // rows no call touches become 0; empty masks give 0
  std::vector<float> x(size_t(4 * H), 1.f), y(size_t(4 * H), 7.f);
  std::vector<int32_t> rows = {2};
  std::vector<float> wt = {1.f};
  std::vector<uint64_t> m(size_t(ts_mask_words(I)), 0);
  ts_expert_call c{s.experts[0], 1, rows.data(), wt.data(), m.data()};
  int32_t act = -1;
  if (o.call(ts_moe(b, TS_FFN_SPARSE, 4, H, x.data(), 1, &c, y.data(), &act), "ts_moe (empty masks)")) {
    bool zero = act == 0;
    for (float v : y) zero = zero && v == 0.f;
    if (!zero) o.fail("untouched rows and empty masks do not give 0");
  }
}

// Experts of the given stores converted from 16- and 32-bit sources (w1 bf16,
// w3 f32, w2 bf16, values in [-0.05, 0.06] with x in [-0.5, 1] so most relus
// are open and some closed); calls over given rows with masks at `density`.
inline void case_moe_calls(ts_backend* b, Rng& rng, Outcome& o, int64_t H, int64_t I, int64_t n_rows,
                           std::vector<ts_dtype> stores, std::vector<std::vector<int32_t>> rows, float density) {
  MoeSetup s;
  for (ts_dtype st : stores) {
    ExpertRef r;
    r.w1 = make_mat(rng, I, H, st, 0.f, true, false, TS_BF16, -0.05f, 0.06f);
    r.w3 = make_mat(rng, I, H, st, 0.f, true, false, TS_F32, -0.05f, 0.06f);
    r.w2 = make_mat(rng, H, I, st, 0.f, true, true, TS_BF16, -0.05f, 0.05f);
    ts_expert* ex = ts_expert_create(b, r.w1->host(), r.w3->host(), r.w2->host(), st);
    if (!o.made(ex, "ts_expert_create")) return;
    for (auto* m : {r.w1.get(), r.w3.get(), r.w2.get()}) m->drop_source();
    s.refs.push_back(std::move(r));
    s.experts.push_back(ex);
  }
  auto x = rand_vec(rng, size_t(n_rows * H), -0.5f, 1.0f);
  for (size_t c = 0; c < rows.size(); c++) {
    MoeSetup::Call call;
    call.expert = int(c % stores.size());
    call.rows = rows[c];
    call.weight = rand_vec(rng, rows[c].size(), 0.1f, 1.f);
    call.masks = random_masks(rng, int64_t(rows[c].size()), I, density);
    s.calls.push_back(std::move(call));
  }
  moe_both_modes(b, o, s, n_rows, H, x);
}

inline std::string rows_str(const std::vector<std::vector<int32_t>>& rows) {
  size_t n = 0;
  for (auto& r : rows) n += r.size();
  return fmt("%zu calls, %zu (row, expert) pairs", rows.size(), n);
}

// ---------------------------------------------------------------- the table

inline std::vector<OpCase> op_cases() {
  std::vector<OpCase> t;
  auto add = [&](std::string op, std::string name, double tol, std::function<void(ts_backend*, Rng&, Outcome&)> f) {
    t.push_back({std::move(op), std::move(name), tol, std::move(f)});
  };

  // matmul: every store, exact and rounded by the library (from f32), odd sizes
  for (ts_dtype dt : kDtypes)
    for (bool convert : {false, true}) {
      if (convert && dt == TS_F32) continue;
      add("matmul", fmt("matmul %s%s [131x67] n=1,3,8,21", dname(dt), convert ? " (from f32)" : ""), 2e-5,
          [=](ts_backend* b, Rng& r, Outcome& o) { case_matmul(b, r, o, 131, 67, dt, convert, TS_F32, {1, 3, 8, 21}); });
    }
  // larger shapes from 16- and 32-bit sources into every store (tile and vector edges)
  struct MM { int64_t rows, cols; ts_dtype src; std::vector<int64_t> ns; };
  for (const MM& s : {MM{37, 301, TS_F32, {1, 3, 8, 13}}, MM{130, 1000, TS_BF16, {1, 3, 8, 13}},
                      MM{515, 67, TS_F16, {1, 3, 8, 13}}, MM{2049, 4096, TS_BF16, {1, 8}}})
    for (ts_dtype dt : kDtypes) {
      std::string ns;
      for (int64_t n : s.ns) ns += (ns.empty() ? "" : ",") + std::to_string(n);
      add("matmul",
          fmt("matmul %s (from %s) [%lldx%lld] n=%s", dname(dt), dname(s.src), (long long)s.rows, (long long)s.cols,
              ns.c_str()),
          2e-5, [=](ts_backend* b, Rng& r, Outcome& o) { case_matmul(b, r, o, s.rows, s.cols, dt, true, s.src, s.ns); });
    }

  // rmsnorm (and in place)
  add("rmsnorm", "rmsnorm f32 d=67 n=3 (and in place)", 1e-6,
      [](ts_backend* b, Rng& r, Outcome& o) { case_rmsnorm(b, r, o, 67, 3, TS_F32); });
  for (int64_t d : {333, 4096})
    for (ts_dtype dt : {TS_F32, TS_BF16, TS_I8})
      add("rmsnorm", fmt("rmsnorm w %s d=%lld n=5 (and in place)", dname(dt), (long long)d), 1e-6,
          [=](ts_backend* b, Rng& r, Outcome& o) { case_rmsnorm(b, r, o, d, 5, dt); });

  // rope: positions up to 1e5 (angles in double)
  for (int64_t hd : {16, 128}) {
    add("rope", fmt("rope head_dim=%lld theta=1e6 positions 0,1,977,100000", (long long)hd), 1e-6,
        [=](ts_backend* b, Rng& r, Outcome& o) { case_rope(b, r, o, 4, 3, hd, 1e6, {0, 1, 977, 100000}); });
    add("rope", fmt("rope head_dim=%lld theta=1e4 random positions", (long long)hd), 1e-6,
        [=](ts_backend* b, Rng& r, Outcome& o) { case_rope(b, r, o, 6, 3, hd, 1e4, {0}); });
  }

  // router: ties, NaN, all equal, underflow, k = experts
  add("router_topk", "router softmax top-2 of 8 (ties -> lower id)", 1e-7, [](ts_backend* b, Rng& r, Outcome& o) {
    const int64_t n = 5, E = 8;
    auto l = rand_vec(r, size_t(n * E), -3, 3);
    for (int64_t e = 0; e < E; e++) l[size_t(4 * E + e)] = 1.25f;  // row 4: all tie -> experts 0, 1
    l[size_t(3 * E + 5)] = 4.f;  // row 3: a tie for second between 6 and 2 -> 2
    l[size_t(3 * E + 2)] = 3.5f;
    l[size_t(3 * E + 6)] = 3.5f;
    case_router(b, o, n, E, 2, l);
  });
  struct RC { int64_t experts, k; };
  for (RC c : {RC{8, 2}, RC{5, 3}, RC{70, 2}, RC{8, 8}})
    add("router_topk", fmt("router experts=%lld k=%lld (tie, NaN, all equal, underflow rows)", (long long)c.experts,
                           (long long)c.k),
        1e-6, [=](ts_backend* b, Rng& r, Outcome& o) {
          const int64_t n = 9, E = c.experts;
          auto l = rand_vec(r, size_t(n * E), -4, 4);
          l[size_t(1 * E + 3)] = l[size_t(1 * E + 1)];
          l[size_t(2 * E + 0)] = std::numeric_limits<float>::quiet_NaN();
          for (int64_t e = 0; e < E; e++) l[size_t(3 * E + e)] = 0.5f;
          l[size_t(4 * E + 1)] = 90.f;
          case_router(b, o, n, E, c.k, l);
        });

  // predictor
  for (ts_dtype dt : kDtypes)
    add("predict", fmt("predict %s r=37 I=131 H=67 n=1,3,8,19", dname(dt)), 0,
        [=](ts_backend* b, Rng& r, Outcome& o) { case_predict(b, r, o, 67, 37, 131, dt, false, {1, 3, 8, 19}); });
  for (ts_dtype dt : kDtypes)
    add("predict", fmt("predict %s (fc1 from bf16, fc2 from f32) r=67 I=1000 H=301 n=1,5,11", dname(dt)), 0,
        [=](ts_backend* b, Rng& r, Outcome& o) { case_predict(b, r, o, 301, 67, 1000, dt, true, {1, 5, 11}); });
  for (ts_dtype dt : kDtypes)
    add("predict_many", fmt("predict_many %s 2 predictors over row subsets", dname(dt)), 0,
        [=](ts_backend* b, Rng& r, Outcome& o) {
          case_predict_many(b, r, o, 67, 5, {dt, dt}, {37, 45}, {131, 131}, {{4, 0, 2}, {1, 4}});
        });
  add("predict_many", "predict_many bf16/i8/f16 3 predictors (I 640, 130, 129) over row subsets", 0,
      [](ts_backend* b, Rng& r, Outcome& o) {
        case_predict_many(b, r, o, 256, 7, {TS_BF16, TS_I8, TS_F16}, {96, 40, 64}, {640, 130, 129},
                          {{6, 0, 3, 3}, {1, 2, 4, 5, 6, 0, 3}, {2}});
      });

  // KV caches and attention
  for (ts_dtype dt : {TS_F32, TS_BF16, TS_F16})
    add("attention",
        fmt("attention GQA 4/2 heads, head_dim 18, prefill + mixed decode + grown cache + copied prefix (%s cache)",
            dname(dt)),
        1e-5, [=](ts_backend* b, Rng& r, Outcome& o) { case_attention_small(b, r, o, dt); });
  struct AC { int64_t heads, kv, hd; ts_dtype dt; };
  for (AC c : {AC{4, 2, 16, TS_F32}, AC{8, 2, 128, TS_F32}, AC{6, 6, 64, TS_F32}, AC{16, 2, 32, TS_F32},
               AC{2, 1, 256, TS_F32}, AC{8, 2, 128, TS_BF16}, AC{2, 1, 256, TS_BF16}, AC{4, 2, 16, TS_F16},
               AC{6, 6, 64, TS_F16}})
    add("attention",
        fmt("attention heads=%lld kv=%lld hd=%lld %s cache: 300 + 7 prefill, grow, decode, copy of 302", (long long)c.heads,
            (long long)c.kv, (long long)c.hd, dname(c.dt)),
        2e-5, [=](ts_backend* b, Rng& r, Outcome& o) { case_attention_long(b, r, o, c.heads, c.kv, c.hd, c.dt); });

  // the expert FFN, sparse and dense-with-mask
  for (ts_dtype dt : kDtypes)
    add("moe", fmt("moe %s 3 experts H=67 I=131 n=1,3,8,21, top-2 + a repeated row", dname(dt)), 2e-5,
        [=](ts_backend* b, Rng& r, Outcome& o) { case_moe_topk(b, r, o, 67, 131, dt, {1, 3, 8, 21}); });
  struct MC { std::string what; int64_t H, I, n_rows; std::vector<ts_dtype> stores; std::vector<std::vector<int32_t>> rows; float density; };
  std::vector<MC> moe;
  for (ts_dtype dt : kDtypes)  // row 5 is routed nowhere: must come back 0
    moe.push_back({dname(dt), 333, 1000, 6, {dt, dt, dt}, {{0, 2, 4}, {1, 2, 3, 4}, {0}}, 0.3f});
  moe.push_back({"f32/bf16/i8 (two token passes)", 200, 777, 13, {TS_F32, TS_BF16, TS_I8},
                 {{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10}, {12, 11, 0}, {5, 6}}, 0.5f});
  moe.push_back({"bf16 top-2 of 4 experts", 1024, 3584, 8, {TS_BF16, TS_BF16, TS_BF16, TS_BF16},
                 {{0, 3, 5, 6}, {1, 2, 7}, {0, 1, 2, 4, 6, 7}, {3, 4, 5}}, 0.1f});
  moe.push_back({"f16 empty masks", 64, 100, 3, {TS_F16}, {{2, 0}}, 0.f});
  {
    std::vector<int32_t> rev;
    for (int i = 39; i >= 0; i--) rev.push_back(i);
    moe.push_back({"i8 (five token passes)", 48, 64, 40, {TS_I8}, {rev}, 0.7f});
  }
  for (const MC& c : moe)
    add("moe", fmt("moe %s [H %lld, I %lld] %lld rows, %s, %.0f%% masks", c.what.c_str(), (long long)c.H,
                   (long long)c.I, (long long)c.n_rows, rows_str(c.rows).c_str(), c.density * 100),
        2e-5, [=](ts_backend* b, Rng& r, Outcome& o) { case_moe_calls(b, r, o, c.H, c.I, c.n_rows, c.stores, c.rows, c.density); });

  // small batches (1-8 tokens) at hidden <= 4096: the CUDA backend's streaming and
  // fused kernels, from one block to hundreds (several reduce groups); test_cuda
  // runs these (names starting "moe small batch") on each FFN path
  std::vector<MC> small;
  for (ts_dtype dt : kDtypes)  // row 1 is routed nowhere
    small.push_back({dname(dt), 333, 1000, 3, {dt, dt}, {{0, 2}, {2}}, 0.3f});
  for (ts_dtype dt : kDtypes) small.push_back({std::string(dname(dt)) + " top-2", 4096, 640, 1, {dt, dt}, {{0}, {0}}, 0.4f});
  small.push_back({"bf16 (hundreds of blocks)", 4096, 4096, 1, {TS_BF16}, {{0}}, 0.5f});
  small.push_back({"bf16", 2048, 3000, 2, {TS_BF16, TS_BF16, TS_BF16}, {{1, 0}, {0}, {1}}, 0.1f});
  small.push_back({"bf16 top-2 (a dozen reduce groups)", 4096, 7168, 1, {TS_BF16, TS_BF16}, {{0}, {0}}, 0.1f});
  small.push_back({"f16 empty masks", 64, 100, 2, {TS_F16}, {{1}}, 0.f});
  small.push_back({"bf16 (too wide to fuse)", 4112, 300, 1, {TS_BF16}, {{0}}, 0.5f});
  // 3-8 tokens: split into calls of 1-2 tokens for the streaming kernel (TS_CUDA_STREAM_SPLIT)
  for (ts_dtype dt : kDtypes)
    small.push_back({std::string(dname(dt)) + " five tokens", 333, 1000, 6, {dt, dt}, {{0, 1, 2, 3, 5}, {5, 4, 1}}, 0.3f});
  small.push_back({"bf16 eight tokens (hundreds of blocks)", 2048, 2048, 9, {TS_BF16, TS_BF16, TS_BF16},
                   {{0, 1, 2, 3, 4, 5, 6, 7}, {8, 1}, {2, 3, 4, 5}}, 0.2f});
  small.push_back({"f16 four tokens, empty masks", 64, 100, 4, {TS_F16}, {{0, 1, 2, 3}}, 0.f});
  for (const MC& c : small)
    add("moe", fmt("moe small batch %s [H %lld, I %lld] %lld rows, %s, %.0f%% masks", c.what.c_str(), (long long)c.H,
                         (long long)c.I, (long long)c.n_rows, rows_str(c.rows).c_str(), c.density * 100),
        2e-5, [=](ts_backend* b, Rng& r, Outcome& o) { case_moe_calls(b, r, o, c.H, c.I, c.n_rows, c.stores, c.rows, c.density); });
  return t;
}

// The ops of the C ABI (ts_<op> in turbosparse.h) the table must cover; the
// handle calls (weights, experts, predictors, KV caches) run inside them.
inline std::vector<std::string> abi_ops() {
  return {"matmul", "rmsnorm", "rope", "router_topk", "predict", "predict_many", "attention", "moe"};
}

inline bool is_small_batch_moe(const OpCase& c) { return c.name.rfind("moe small batch", 0) == 0; }

// FNV-1a of the case name: each case's own input stream, whatever runs before it.
inline uint64_t case_seed(const std::string& name, uint64_t seed) {
  uint64_t h = 1469598103934665603ull ^ seed;
  for (unsigned char c : name) h = (h ^ c) * 1099511628211ull;
  return h;
}

// Runs the cases (all, or those `pick` accepts) on b, one check line each
// prefixed by `label`; returns how many failed. Weight bytes must be back where
// they were after every case (handles freed).
inline int run_cases(ts_backend* b, const std::string& label, const std::vector<OpCase>& cases, uint64_t seed = 0,
                     const std::function<bool(const OpCase&)>& pick = nullptr) {
  int failed = 0;
  for (const OpCase& c : cases) {
    if (pick && !pick(c)) continue;
    Rng rng(case_seed(c.name, seed));
    Outcome o;
    const int64_t bytes = ts_backend_weight_bytes(b);
    const auto t0 = std::chrono::steady_clock::now();
    c.run(b, rng, o);
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (ts_backend_weight_bytes(b) != bytes) o.fail("weight bytes not released");
    const bool pass = o.ok && o.err <= c.tol;
    failed += !pass;
    tstest::check(pass, label + " " + c.name, fmt("err %.2e (tol %.0e) %.2fs", o.err, c.tol, secs) + (o.why.empty() ? "" : " " + o.why));
  }
  return failed;
}

}  // namespace tsops
