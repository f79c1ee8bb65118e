// test_cuda.cc — every op of the CUDA backend against the CPU backend (the
// reference), through the public C ABI, on fresh random inputs with sizes that
// are not multiples of any tile or vector width, every weight dtype, sparse and
// dense-with-mask. Output buffers are poisoned with NaN first, so an element the
// GPU never wrote fails. Relative error = ||gpu - cpu|| / ||cpu|| is printed for
// each check and held to a threshold.
//
// Ends with "N passed, M failed"; exits non-zero on failure. Without a usable
// GPU (or a library built without CUDA) it prints a skip line and exits 0.
// Seed: TS_TEST_SEED (default: from the clock, printed).
#include <algorithm>
#include <cstdarg>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <type_traits>
#include <vector>
#include "turbosparse.h"
#include "../src/dtype.h"
#include "test_util.h"

using namespace tstest;

namespace {

std::string fmt(const char* f, ...) __attribute__((format(printf, 1, 2)));
std::string fmt(const char* f, ...) {
  char buf[512];
  va_list ap;
  va_start(ap, f);
  std::vsnprintf(buf, sizeof buf, f, ap);
  va_end(ap);
  return buf;
}

const char* dname(ts_dtype t) { return ts::dtype_name(t); }
const ts_dtype kStores[] = {TS_F32, TS_F16, TS_BF16, TS_I8};

// ---- source data in each source dtype (round to nearest even: ts::f32_to_bf16 / f32_to_f16) ----
// A host matrix in a source dtype (F32, F16 or BF16) with uniform values.
struct Source {
  std::vector<float> f32;
  std::vector<uint16_t> h16;
  ts_host_matrix m{};
};
Source make_source(Rng& rng, int64_t rows, int64_t cols, ts_dtype src, float lo, float hi) {
  Source s;
  const size_t n = size_t(rows * cols);
  s.f32.resize(n);
  for (auto& v : s.f32) v = rng.uni(lo, hi);
  if (src == TS_F32) {
    s.m = {TS_F32, rows, cols, s.f32.data()};
  } else {
    s.h16.resize(n);
    for (size_t i = 0; i < n; i++) s.h16[i] = src == TS_BF16 ? ts::f32_to_bf16(s.f32[i]) : ts::f32_to_f16(s.f32[i]);
    s.m = {src, rows, cols, s.h16.data()};
  }
  return s;
}

template <class T>
void poison(std::vector<T>& v) {
  if constexpr (std::is_floating_point<T>::value) std::fill(v.begin(), v.end(), std::numeric_limits<T>::quiet_NaN());
  else std::fill(v.begin(), v.end(), T(0x5a5a5a5a5a5a5a5aull));
}

// ||a - b|| / ||b||; infinite when a holds a NaN/Inf that b does not
double rel_err(const float* a, const float* b, size_t n) {
  double num = 0, den = 0;
  for (size_t i = 0; i < n; i++) {
    if (!std::isfinite(a[i]) && std::isfinite(b[i])) return INFINITY;
    const double d = double(a[i]) - double(b[i]);
    num += d * d;
    den += double(b[i]) * double(b[i]);
  }
  return den > 0 ? std::sqrt(num / den) : std::sqrt(num);
}

void check_err(const std::string& name, double err, double thr) {
  check(err <= thr, name, fmt("rel err %.3g (<= %.0e)", err, thr));
}

struct Pair {
  ts_backend* cpu;
  ts_backend* gpu;
};

// ------------------------------------------------------------------ matmul

void test_matmul(Pair p, Rng& rng) {
  struct Shape { int64_t rows, cols; ts_dtype src; };
  const Shape shapes[] = {{37, 301, TS_F32}, {130, 1000, TS_BF16}, {515, 67, TS_F16}, {2049, 4096, TS_BF16}};
  const int64_t ns[] = {1, 3, 8, 13};
  for (const Shape& s : shapes)
    for (ts_dtype st : kStores) {
      Source src = make_source(rng, s.rows, s.cols, s.src, -1.f, 1.f);
      ts_weight* wc = ts_weight_create(p.cpu, &src.m, st);
      ts_weight* wg = ts_weight_create(p.gpu, &src.m, st);
      if (!wc || !wg) {
        check(false, fmt("matmul create %s", dname(st)), ts_last_error());
        ts_weight_free(wc);
        ts_weight_free(wg);
        continue;
      }
      for (int64_t n : ns) {
        if (s.rows > 1000 && n != 1 && n != 8) continue;
        auto x = rand_vec(rng, size_t(n * s.cols), -1.f, 1.f);
        std::vector<float> yc(size_t(n * s.rows)), yg(yc.size());
        poison(yg);
        const int rc = ts_matmul(p.cpu, wc, n, x.data(), yc.data());
        const int rg = ts_matmul(p.gpu, wg, n, x.data(), yg.data());
        const std::string name = fmt("matmul %s src %s [%lld x %lld] n=%lld", dname(st), dname(s.src),
                                     (long long)s.rows, (long long)s.cols, (long long)n);
        if (rc || rg) {
          check(false, name, ts_last_error());
          continue;
        }
        check_err(name, rel_err(yg.data(), yc.data(), yg.size()), 1e-5);
      }
      ts_weight_free(wc);
      ts_weight_free(wg);
    }
}

// ------------------------------------------------------------- rmsnorm, rope

void test_rmsnorm(Pair p, Rng& rng) {
  for (int64_t d : {333, 4096})
    for (ts_dtype st : {TS_F32, TS_BF16, TS_I8}) {
      Source w = make_source(rng, 1, d, TS_F32, 0.5f, 1.5f);
      ts_weight* wc = ts_weight_create(p.cpu, &w.m, st);
      ts_weight* wg = ts_weight_create(p.gpu, &w.m, st);
      const int64_t n = 5;
      auto x = rand_vec(rng, size_t(n * d), -3.f, 3.f);
      std::vector<float> yc(x.size()), yg(x.size());
      poison(yg);
      const std::string name = fmt("rmsnorm w %s d=%lld n=%lld", dname(st), (long long)d, (long long)n);
      if (!wc || !wg || ts_rmsnorm(p.cpu, wc, n, d, x.data(), 1e-5f, yc.data()) ||
          ts_rmsnorm(p.gpu, wg, n, d, x.data(), 1e-5f, yg.data())) {
        check(false, name, ts_last_error());
      } else {
        check_err(name, rel_err(yg.data(), yc.data(), yg.size()), 1e-6);
        // in place (y == x)
        std::vector<float> xi = x;
        if (ts_rmsnorm(p.gpu, wg, n, d, xi.data(), 1e-5f, xi.data())) check(false, name + " in place", ts_last_error());
        else check_err(name + " in place", rel_err(xi.data(), yc.data(), xi.size()), 1e-6);
      }
      ts_weight_free(wc);
      ts_weight_free(wg);
    }
}

void test_rope(Pair p, Rng& rng) {
  for (int64_t hd : {16, 128})
    for (double theta : {1e4, 1e6}) {
      const int64_t n = 6, heads = 3;
      std::vector<int32_t> pos(n);
      for (auto& v : pos) v = rng.below(100000);
      pos[0] = 0;
      auto x = rand_vec(rng, size_t(n * heads * hd), -2.f, 2.f);
      std::vector<float> xc = x, xg = x;
      const std::string name = fmt("rope head_dim=%lld theta=%g", (long long)hd, theta);
      if (ts_rope(p.cpu, n, heads, hd, pos.data(), theta, xc.data()) ||
          ts_rope(p.gpu, n, heads, hd, pos.data(), theta, xg.data()))
        check(false, name, ts_last_error());
      else
        check_err(name, rel_err(xg.data(), xc.data(), xg.size()), 1e-6);
    }
}

// ------------------------------------------------------------------ router

void test_router(Pair p, Rng& rng) {
  struct Case { int64_t experts, k; };
  for (Case c : {Case{8, 2}, Case{5, 3}, Case{70, 2}, Case{8, 8}}) {
    const int64_t n = 9;
    auto l = rand_vec(rng, size_t(n * c.experts), -4.f, 4.f);
    l[size_t(1 * c.experts + 3)] = l[size_t(1 * c.experts + 1)];  // a tie
    l[size_t(2 * c.experts + 0)] = std::numeric_limits<float>::quiet_NaN();
    for (int64_t e = 0; e < c.experts; e++) l[size_t(3 * c.experts + e)] = 0.5f;  // all equal
    l[size_t(4 * c.experts + 1)] = 90.f;  // others underflow to 0 probability
    std::vector<int32_t> ic(size_t(n * c.k)), ig(ic.size(), -7);
    std::vector<float> wc(ic.size()), wg(ic.size());
    poison(wg);
    const std::string name = fmt("router experts=%lld k=%lld", (long long)c.experts, (long long)c.k);
    if (ts_router_topk(p.cpu, n, c.experts, l.data(), c.k, ic.data(), wc.data()) ||
        ts_router_topk(p.gpu, n, c.experts, l.data(), c.k, ig.data(), wg.data())) {
      check(false, name, ts_last_error());
      continue;
    }
    check(ic == ig, name + " ids");
    check_err(name + " weights", rel_err(wg.data(), wc.data(), wg.size()), 1e-6);
  }
}

// --------------------------------------------------------------- predictor

struct PredictorPair {
  Source fc1, fc2;
  ts_predictor* c = nullptr;
  ts_predictor* g = nullptr;
  ts_weight* fc1c = nullptr;  // CPU copies as plain weights: the pre-sign values
  ts_weight* fc2c = nullptr;
  int64_t H = 0, R = 0, I = 0;
  ts_dtype st = TS_F32;
};

bool make_predictor(Pair p, Rng& rng, int64_t H, int64_t R, int64_t I, ts_dtype st, PredictorPair* out) {
  out->H = H;
  out->R = R;
  out->I = I;
  out->st = st;
  out->fc1 = make_source(rng, R, H, TS_BF16, -1.f, 1.f);
  out->fc2 = make_source(rng, I, R, TS_F32, -1.f, 1.f);
  out->c = ts_predictor_create(p.cpu, &out->fc1.m, &out->fc2.m, st);
  out->g = ts_predictor_create(p.gpu, &out->fc1.m, &out->fc2.m, st);
  out->fc1c = ts_weight_create(p.cpu, &out->fc1.m, st);
  out->fc2c = ts_weight_create(p.cpu, &out->fc2.m, st);
  return out->c && out->g && out->fc1c && out->fc2c;
}
void free_predictor(PredictorPair& pp) {
  ts_predictor_free(pp.c);
  ts_predictor_free(pp.g);
  ts_weight_free(pp.fc1c);
  ts_weight_free(pp.fc2c);
}

// Compare masks: a bit may differ only where the pre-sign value is ~0 (order
// of summation decides its sign). Counts must equal the popcount of the GPU mask.
void compare_masks(Pair p, const PredictorPair& pp, const std::string& name, const float* x, const int32_t* rows,
                   int64_t n, const std::vector<uint64_t>& mc, const std::vector<uint64_t>& mg,
                   const std::vector<int32_t>& cg) {
  const int64_t W = ts_mask_words(pp.I);
  std::vector<float> xr(size_t(n * pp.H)), t(size_t(n * pp.R)), z(size_t(n * pp.I));
  for (int64_t i = 0; i < n; i++) std::memcpy(&xr[size_t(i * pp.H)], x + int64_t(rows[i]) * pp.H, size_t(pp.H) * 4);
  ts_matmul(p.cpu, pp.fc1c, n, xr.data(), t.data());
  for (auto& v : t) v = std::max(v, 0.f);
  ts_matmul(p.cpu, pp.fc2c, n, t.data(), z.data());
  double rms = 0;
  for (float v : z) rms += double(v) * v;
  rms = std::sqrt(rms / double(z.size()));
  int64_t bad = 0, near = 0;
  bool counts_ok = true;
  for (int64_t i = 0; i < n; i++) {
    int32_t pc = 0;
    for (int64_t w = 0; w < W; w++) {
      pc += __builtin_popcountll(mg[size_t(i * W + w)]);
      const uint64_t diff = mc[size_t(i * W + w)] ^ mg[size_t(i * W + w)];
      for (int b = 0; b < 64; b++)
        if ((diff >> b) & 1) {
          const int64_t k = w * 64 + b;
          if (k >= pp.I || std::fabs(z[size_t(i * pp.I + k)]) > 1e-4 * rms) bad++;
          else near++;
        }
    }
    counts_ok = counts_ok && pc == cg[size_t(i)];
  }
  check(bad == 0, name + " masks", fmt("%lld bits differ, %lld more at |z| ~ 0", (long long)bad, (long long)near));
  check(counts_ok, name + " counts = bits set");
}

void test_predict(Pair p, Rng& rng) {
  for (ts_dtype st : kStores) {
    PredictorPair pp;
    if (!make_predictor(p, rng, 301, 67, 1000, st, &pp)) {
      check(false, fmt("predictor create %s", dname(st)), ts_last_error());
      free_predictor(pp);
      continue;
    }
    for (int64_t n : {1, 5, 11}) {
      const int64_t W = ts_mask_words(pp.I);
      auto x = rand_vec(rng, size_t(n * pp.H), -1.f, 1.f);
      std::vector<uint64_t> mc(size_t(n * W)), mg(mc.size());
      std::vector<int32_t> cc(static_cast<size_t>(n)), cg(static_cast<size_t>(n), -1);
      poison(mg);
      const std::string name = fmt("predict %s [H %lld, r %lld, I %lld] n=%lld", dname(st), (long long)pp.H,
                                   (long long)pp.R, (long long)pp.I, (long long)n);
      if (ts_predict(p.cpu, pp.c, n, x.data(), mc.data(), cc.data()) ||
          ts_predict(p.gpu, pp.g, n, x.data(), mg.data(), cg.data())) {
        check(false, name, ts_last_error());
        continue;
      }
      std::vector<int32_t> iota(static_cast<size_t>(n));
      for (int64_t i = 0; i < n; i++) iota[size_t(i)] = int32_t(i);
      compare_masks(p, pp, name, x.data(), iota.data(), n, mc, mg, cg);
    }
    free_predictor(pp);
  }
  // several predictors of mixed dtypes over row subsets of one batch
  PredictorPair a, b, c;
  const bool ok = make_predictor(p, rng, 256, 96, 640, TS_BF16, &a) && make_predictor(p, rng, 256, 40, 130, TS_I8, &b) &&
                  make_predictor(p, rng, 256, 64, 129, TS_F16, &c);
  if (!ok) {
    check(false, "predict_many create", ts_last_error());
  } else {
    const int64_t n_rows = 7;
    auto x = rand_vec(rng, size_t(n_rows * 256), -1.f, 1.f);
    std::vector<int32_t> ra = {6, 0, 3, 3}, rb = {1, 2, 4, 5, 6, 0, 3}, rc = {2};
    PredictorPair* pps[3] = {&a, &b, &c};
    std::vector<int32_t>* rws[3] = {&ra, &rb, &rc};
    std::vector<uint64_t> mc[3], mg[3];
    std::vector<int32_t> cc[3], cg[3];
    ts_predict_call callc[3], callg[3];
    for (int i = 0; i < 3; i++) {
      const int64_t n = int64_t(rws[i]->size()), W = ts_mask_words(pps[i]->I);
      mc[i].resize(size_t(n * W));
      mg[i].resize(size_t(n * W));
      poison(mg[i]);
      cc[i].resize(size_t(n));
      cg[i].assign(size_t(n), -1);
      callc[i] = {pps[i]->c, n, rws[i]->data(), mc[i].data(), cc[i].data()};
      callg[i] = {pps[i]->g, n, rws[i]->data(), mg[i].data(), cg[i].data()};
    }
    if (ts_predict_many(p.cpu, n_rows, 256, x.data(), 3, callc) || ts_predict_many(p.gpu, n_rows, 256, x.data(), 3, callg)) {
      check(false, "predict_many", ts_last_error());
    } else {
      for (int i = 0; i < 3; i++)
        compare_masks(p, *pps[i], fmt("predict_many call %d (%s)", i, dname(pps[i]->st)), x.data(), rws[i]->data(),
                      int64_t(rws[i]->size()), mc[i], mg[i], cg[i]);
    }
  }
  free_predictor(a);
  free_predictor(b);
  free_predictor(c);
}

// --------------------------------------------------------------- attention

void test_attention(Pair p, Rng& rng) {
  struct Case { int64_t heads, kv, hd; ts_dtype dt; };
  // f32 caches at every shape; 16-bit caches (both sides round the same way) in every head-dim bucket.
  for (Case c : {Case{4, 2, 16, TS_F32}, Case{8, 2, 128, TS_F32}, Case{6, 6, 64, TS_F32}, Case{16, 2, 32, TS_F32},
                 Case{2, 1, 256, TS_F32}, Case{8, 2, 128, TS_BF16}, Case{2, 1, 256, TS_BF16}, Case{4, 2, 16, TS_F16},
                 Case{6, 6, 64, TS_F16}}) {
    const int64_t layers = 2, max_tokens = 700, layer = 1;
    // A's caches start with room for its prefill only and grow before step 2 (ts_kvcache_grow keeps the K/V)
    const int64_t first_size = 300;
    ts_kvcache* cc[2] = {ts_kvcache_create_typed(p.cpu, layers, first_size, c.kv, c.hd, c.dt),
                         ts_kvcache_create_typed(p.cpu, layers, max_tokens, c.kv, c.hd, c.dt)};
    ts_kvcache* cg[2] = {ts_kvcache_create_typed(p.gpu, layers, first_size, c.kv, c.hd, c.dt),
                         ts_kvcache_create_typed(p.gpu, layers, max_tokens, c.kv, c.hd, c.dt)};
    const std::string base = fmt("attention heads=%lld kv=%lld hd=%lld %s cache", (long long)c.heads, (long long)c.kv,
                                 (long long)c.hd, dname(c.dt));
    if (!cc[0] || !cc[1] || !cg[0] || !cg[1]) {
      check(false, base + " cache create", ts_last_error());
    } else {
      // step 1: sequence A prefills 300 positions and B 7, in one call; then
      // step 2: a decode step of each plus a late position of A (past a chunk edge)
      struct Step { std::vector<int> seq, pos; };
      std::vector<Step> steps(2);
      for (int i = 0; i < 300; i++) steps[0].seq.push_back(0), steps[0].pos.push_back(i);
      for (int i = 0; i < 7; i++) steps[0].seq.push_back(1), steps[0].pos.push_back(i);
      steps[1].seq = {1, 0, 0};
      steps[1].pos = {7, 300, 301};
      for (size_t s = 0; s < steps.size(); s++) {
        if (s == 1 && (ts_kvcache_grow(cc[0], max_tokens) || ts_kvcache_grow(cg[0], max_tokens))) {
          check(false, base + " cache grow", ts_last_error());
          break;
        }
        const int64_t n = int64_t(steps[s].seq.size());
        auto q = rand_vec(rng, size_t(n * c.heads * c.hd), -1.f, 1.f);
        auto k = rand_vec(rng, size_t(n * c.kv * c.hd), -1.f, 1.f);
        auto v = rand_vec(rng, size_t(n * c.kv * c.hd), -1.f, 1.f);
        std::vector<ts_kvcache*> rc(static_cast<size_t>(n)), rg(static_cast<size_t>(n));
        std::vector<int32_t> pos(static_cast<size_t>(n));
        for (int64_t i = 0; i < n; i++) {
          rc[size_t(i)] = cc[steps[s].seq[size_t(i)]];
          rg[size_t(i)] = cg[steps[s].seq[size_t(i)]];
          pos[size_t(i)] = steps[s].pos[size_t(i)];
        }
        std::vector<float> oc(q.size()), og(q.size());
        poison(og);
        const std::string name = base + fmt(" step %zu (%lld rows)", s, (long long)n);
        if (ts_attention(p.cpu, layer, n, rc.data(), pos.data(), c.heads, c.kv, c.hd, q.data(), k.data(), v.data(), oc.data()) ||
            ts_attention(p.gpu, layer, n, rg.data(), pos.data(), c.heads, c.kv, c.hd, q.data(), k.data(), v.data(), og.data())) {
          check(false, name, ts_last_error());
          break;
        }
        check_err(name, rel_err(og.data(), oc.data(), og.size()), 2e-5);
      }
    }
    if (cc[0] && cg[0]) {
      // ts_kvcache_copy: A's 302 positions copied into fresh caches attend at position 302 as on the CPU
      // (layer 1; the test's attention steps wrote only that layer).
      // A different size from the source, so a swapped source/destination layer pitch shows.
      ts_kvcache* copy_c = ts_kvcache_create_typed(p.cpu, layers, 400, c.kv, c.hd, c.dt);
      ts_kvcache* copy_g = ts_kvcache_create_typed(p.gpu, layers, 400, c.kv, c.hd, c.dt);
      auto q = rand_vec(rng, size_t(c.heads * c.hd), -1.f, 1.f);
      auto k = rand_vec(rng, size_t(c.kv * c.hd), -1.f, 1.f);
      auto v = rand_vec(rng, size_t(c.kv * c.hd), -1.f, 1.f);
      std::vector<float> oc(q.size()), og(q.size());
      poison(og);
      int32_t pos[1] = {302};
      const std::string name = base + " after ts_kvcache_copy of 302 positions";
      if (!copy_c || !copy_g || ts_kvcache_copy(copy_c, cc[0], 302) || ts_kvcache_copy(copy_g, cg[0], 302) ||
          ts_attention(p.cpu, layer, 1, &copy_c, pos, c.heads, c.kv, c.hd, q.data(), k.data(), v.data(), oc.data()) ||
          ts_attention(p.gpu, layer, 1, &copy_g, pos, c.heads, c.kv, c.hd, q.data(), k.data(), v.data(), og.data())) {
        check(false, name, ts_last_error());
      } else {
        check_err(name, rel_err(og.data(), oc.data(), og.size()), 2e-5);
      }
      ts_kvcache_free(copy_c);
      ts_kvcache_free(copy_g);
    }
    for (int i = 0; i < 2; i++) {
      ts_kvcache_free(cc[i]);
      ts_kvcache_free(cg[i]);
    }
  }
}

// --------------------------------------------------------------------- moe

struct ExpertSrc {
  Source w1, w3, w2;
};
ExpertSrc make_expert_src(Rng& rng, int64_t H, int64_t I) {
  ExpertSrc e;
  // a positive bias on w1/w3 and positive-mean x (below) keep most relus open
  // and some closed, so masks, relus and the active counts all matter
  e.w1 = make_source(rng, I, H, TS_BF16, -0.05f, 0.06f);
  e.w3 = make_source(rng, I, H, TS_F32, -0.05f, 0.06f);
  e.w2 = make_source(rng, H, I, TS_BF16, -0.05f, 0.05f);
  return e;
}

struct MoeCase {
  std::string name;
  int64_t H, I, n_rows;
  std::vector<ts_dtype> dtypes;             // one expert per entry
  std::vector<std::vector<int32_t>> rows;   // per call: rows of x
  float density;                            // mask bits set
};

void run_moe_case(Pair p, Rng& rng, const MoeCase& mc) {
  const int64_t H = mc.H, I = mc.I, W = ts_mask_words(I);
  const size_t ncalls = mc.rows.size();
  std::vector<ExpertSrc> src;
  std::vector<ts_expert*> ec, eg;
  bool ok = true;
  for (size_t e = 0; e < mc.dtypes.size(); e++) {
    src.push_back(make_expert_src(rng, H, I));
  }
  for (size_t e = 0; e < mc.dtypes.size(); e++) {
    ec.push_back(ts_expert_create(p.cpu, &src[e].w1.m, &src[e].w3.m, &src[e].w2.m, mc.dtypes[e]));
    eg.push_back(ts_expert_create(p.gpu, &src[e].w1.m, &src[e].w3.m, &src[e].w2.m, mc.dtypes[e]));
    ok = ok && ec.back() && eg.back();
  }
  if (!ok) {
    check(false, mc.name + " expert create", ts_last_error());
  } else {
    auto x = rand_vec(rng, size_t(mc.n_rows * H), -0.5f, 1.0f);
    std::vector<std::vector<uint64_t>> masks(ncalls);
    std::vector<std::vector<float>> wts(ncalls);
    size_t pairs = 0;
    for (size_t c = 0; c < ncalls; c++) {
      const size_t n = mc.rows[c].size();
      pairs += n;
      masks[c].resize(n * size_t(W));
      for (auto& w : masks[c]) {
        uint64_t bits = 0;
        for (int b = 0; b < 64; b++) bits |= uint64_t(rng.uni(0.f, 1.f) < mc.density) << b;
        w = bits;  // bits past I in the last word are junk on purpose: they must be ignored
      }
      wts[c] = rand_vec(rng, n, 0.1f, 1.f);
    }
    for (ts_ffn_mode mode : {TS_FFN_SPARSE, TS_FFN_DENSE_WITH_MASK}) {
      std::vector<ts_expert_call> cc(ncalls), cg(ncalls);
      for (size_t c = 0; c < ncalls; c++) {
        const size_t e = c % mc.dtypes.size();
        cc[c] = {ec[e], int64_t(mc.rows[c].size()), mc.rows[c].data(), wts[c].data(), masks[c].data()};
        cg[c] = cc[c];
        cg[c].expert = eg[e];
      }
      std::vector<float> yc(size_t(mc.n_rows * H)), yg(yc.size()), yg2(yc.size());
      std::vector<int32_t> ac(pairs), ag(pairs, -1), ag2(pairs, -1);
      poison(yg);
      poison(yg2);
      const std::string name = mc.name + (mode == TS_FFN_SPARSE ? " sparse" : " dense-with-mask");
      if (ts_moe(p.cpu, mode, mc.n_rows, H, x.data(), int64_t(ncalls), cc.data(), yc.data(), ac.data()) ||
          ts_moe(p.gpu, mode, mc.n_rows, H, x.data(), int64_t(ncalls), cg.data(), yg.data(), ag.data()) ||
          ts_moe(p.gpu, mode, mc.n_rows, H, x.data(), int64_t(ncalls), cg.data(), yg2.data(), ag2.data())) {
        check(false, name, ts_last_error());
        continue;
      }
      // i8 experts: per-row scales are the same on both devices; error is summation order only
      check_err(name + " y", rel_err(yg.data(), yc.data(), yg.size()), 2e-5);
      int64_t off = 0, total = 0;
      for (size_t i = 0; i < pairs; i++) {
        off += std::abs(ag[i] - ac[i]);
        total += ac[i];
      }
      // a neuron whose g or u is ~0 may count on one device and not the other
      // (summation order); a real fault (a junk mask bit past I, a lost row)
      // moves the counts by far more
      check(off <= 1 + total / 20000, name + " active",
            fmt("sum |gpu - cpu| = %lld over %lld active (first pair cpu %d gpu %d)", (long long)off, (long long)total,
                ac[0], ag[0]));
      check(std::memcmp(yg.data(), yg2.data(), yg.size() * 4) == 0 && ag == ag2, name + " repeatable (bitwise)");
    }
  }
  for (auto* e : ec) ts_expert_free(e);
  for (auto* e : eg) ts_expert_free(e);
}

void test_moe(Pair p, Rng& rng) {
  for (ts_dtype st : kStores) {
    MoeCase c;
    c.name = fmt("moe %s [H 333, I 1000] 5 rows, 3 calls", dname(st));
    c.H = 333;
    c.I = 1000;
    c.n_rows = 6;  // row 5 is routed nowhere: must come back 0
    c.dtypes = {st, st, st};
    c.rows = {{0, 2, 4}, {1, 2, 3, 4}, {0}};
    c.density = 0.3f;
    run_moe_case(p, rng, c);
  }
  {
    MoeCase c;
    c.name = "moe mixed f32/bf16/i8 [H 200, I 777] 13 rows (two token passes)";
    c.H = 200;
    c.I = 777;
    c.n_rows = 13;
    c.dtypes = {TS_F32, TS_BF16, TS_I8};
    c.rows = {{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10}, {12, 11, 0}, {5, 6}};
    c.density = 0.5f;
    run_moe_case(p, rng, c);
  }
  {
    MoeCase c;
    c.name = "moe bf16 [H 1024, I 3584] 8 rows, top-2 of 4 experts";
    c.H = 1024;
    c.I = 3584;
    c.n_rows = 8;
    c.dtypes = {TS_BF16, TS_BF16, TS_BF16, TS_BF16};
    c.rows = {{0, 3, 5, 6}, {1, 2, 7}, {0, 1, 2, 4, 6, 7}, {3, 4, 5}};
    c.density = 0.1f;
    run_moe_case(p, rng, c);
  }
  {
    MoeCase c;
    c.name = "moe f16 [H 64, I 100] empty masks";
    c.H = 64;
    c.I = 100;
    c.n_rows = 3;
    c.dtypes = {TS_F16};
    c.rows = {{2, 0}};
    c.density = 0.f;
    run_moe_case(p, rng, c);
  }
  {
    MoeCase c;
    c.name = "moe i8 [H 48, I 64] 40 rows (five token passes)";
    c.H = 48;
    c.I = 64;
    c.n_rows = 40;
    c.dtypes = {TS_I8};
    c.rows.resize(1);
    for (int i = 39; i >= 0; i--) c.rows[0].push_back(i);
    c.density = 0.7f;
    run_moe_case(p, rng, c);
  }
}

// Batches of 1-2 tokens of one dtype at hidden <= 4096: the cases of the
// streaming kernel (by default sparse) and the fused kernel (by default
// dense-with-mask), from one block to a few hundred blocks (I 4096 at half
// density: several reduce groups), 1-3 calls, every dtype. main() runs them on
// the default backend and on backends forced onto each path.
void test_moe_fused(Pair p, Rng& rng) {
  for (ts_dtype st : kStores) {
    MoeCase c;
    c.name = fmt("moe fused %s [H 333, I 1000] 2 rows, 2 calls", dname(st));
    c.H = 333;
    c.I = 1000;
    c.n_rows = 3;  // row 1 is routed nowhere: must come back 0
    c.dtypes = {st, st};
    c.rows = {{0, 2}, {2}};
    c.density = 0.3f;
    run_moe_case(p, rng, c);
  }
  for (ts_dtype st : kStores) {
    MoeCase c;
    c.name = fmt("moe fused %s [H 4096, I 640] 1 row, top-2", dname(st));
    c.H = 4096;
    c.I = 640;
    c.n_rows = 1;
    c.dtypes = {st, st};
    c.rows = {{0}, {0}};
    c.density = 0.4f;
    run_moe_case(p, rng, c);
  }
  {
    MoeCase c;
    c.name = "moe fused bf16 [H 4096, I 4096] 1 row (hundreds of blocks)";
    c.H = 4096;
    c.I = 4096;
    c.n_rows = 1;
    c.dtypes = {TS_BF16};
    c.rows = {{0}};
    c.density = 0.5f;
    run_moe_case(p, rng, c);
  }
  {
    MoeCase c;
    c.name = "moe fused bf16 [H 2048, I 3000] 2 rows, 3 calls, 10%";
    c.H = 2048;
    c.I = 3000;
    c.n_rows = 2;
    c.dtypes = {TS_BF16, TS_BF16, TS_BF16};
    c.rows = {{1, 0}, {0}, {1}};
    c.density = 0.1f;
    run_moe_case(p, rng, c);
  }
  {
    MoeCase c;
    c.name = "moe fused bf16 [H 4096, I 7168] 1 row, top-2, 10% (a dozen reduce groups)";
    c.H = 4096;
    c.I = 7168;
    c.n_rows = 1;
    c.dtypes = {TS_BF16, TS_BF16};
    c.rows = {{0}, {0}};
    c.density = 0.1f;
    run_moe_case(p, rng, c);
  }
  {
    MoeCase c;
    c.name = "moe fused f16 [H 64, I 100] empty masks";
    c.H = 64;
    c.I = 100;
    c.n_rows = 2;
    c.dtypes = {TS_F16};
    c.rows = {{1}};
    c.density = 0.f;
    run_moe_case(p, rng, c);
  }
  {
    MoeCase c;
    c.name = "moe bf16 [H 4112, I 300] 1 row (too wide to fuse: three kernels)";
    c.H = 4112;
    c.I = 300;
    c.n_rows = 1;
    c.dtypes = {TS_BF16};
    c.rows = {{0}};
    c.density = 0.5f;
    run_moe_case(p, rng, c);
  }
}

void test_bytes(Pair p, Rng& rng) {
  const int64_t before = ts_backend_weight_bytes(p.gpu);
  Source w = make_source(rng, 10, 20, TS_F32, -1.f, 1.f);
  ts_weight* wg = ts_weight_create(p.gpu, &w.m, TS_BF16);
  const int64_t during = ts_backend_weight_bytes(p.gpu);
  ts_weight_free(wg);
  const int64_t after = ts_backend_weight_bytes(p.gpu);
  check(wg && during >= before + 10 * 20 * 2 && after == before, "weight bytes tracked",
        fmt("%lld -> %lld -> %lld", (long long)before, (long long)during, (long long)after));
}

}  // namespace

int main() {
  if (!ts_device_available("cuda")) {
    ts_backend* b = ts_backend_create("cuda", 0);
    std::printf("skip test_cuda: no usable CUDA device (%s)\n", b ? "?" : ts_last_error());
    if (b) ts_backend_free(b);
    return 0;
  }
  Pair p{ts_backend_create("cpu", 0), ts_backend_create("cuda", 0)};
  if (!p.cpu || !p.gpu) {
    std::printf("FAIL cannot create the backends: %s\n0 passed, 1 failed\n", ts_last_error());
    return 1;
  }
  uint64_t seed = uint64_t(std::chrono::steady_clock::now().time_since_epoch().count());
  if (const char* s = std::getenv("TS_TEST_SEED")) seed = std::strtoull(s, nullptr, 10);
  std::printf("test_cuda: %s vs %s, seed %llu (TS_TEST_SEED to repeat)\n", ts_backend_describe(p.gpu),
              ts_backend_describe(p.cpu), (unsigned long long)seed);
  Rng rng(seed);
  test_bytes(p, rng);
  test_matmul(p, rng);
  test_rmsnorm(p, rng);
  test_rope(p, rng);
  test_router(p, rng);
  test_predict(p, rng);
  test_attention(p, rng);
  test_moe(p, rng);
  test_moe_fused(p, rng);
  // the small-batch cases once more on each of the other FFN paths
  struct Path { const char *fused, *stream, *what; };
  for (Path path : {Path{"1", "0", "the fused kernel for sparse and dense"},
                    Path{"0", "1", "the streaming kernel for sparse and dense"},
                    Path{"0", "0", "the three kernels for sparse and dense"}}) {
    setenv("TS_CUDA_FUSED", path.fused, 1);
    setenv("TS_CUDA_STREAM", path.stream, 1);
    Pair pf{p.cpu, ts_backend_create("cuda", 0)};
    unsetenv("TS_CUDA_FUSED");
    unsetenv("TS_CUDA_STREAM");
    const std::string env = fmt("TS_CUDA_FUSED=%s TS_CUDA_STREAM=%s", path.fused, path.stream);
    if (!pf.gpu) {
      check(false, "cuda backend with " + env, ts_last_error());
    } else {
      std::printf("-- the same small-batch cases with %s (%s)\n", env.c_str(), path.what);
      test_moe_fused(pf, rng);
      ts_backend_free(pf.gpu);
    }
  }
  ts_backend_free(p.gpu);
  ts_backend_free(p.cpu);
  return finish();
}
