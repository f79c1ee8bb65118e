// test_kernels.cc — the CPU backend: every case of the op table (op_cases.h:
// every op of the C ABI against a plain double-precision reference, on random
// inputs with sizes that are not multiples of any vector width, every weight
// dtype, sparse vs dense-with-mask) on every CPU variant (scalar, avx2,
// avx512); the library's f16/bf16 conversions; each SIMD variant against the
// scalar one; thread counts; no allocation on the hot path; argument errors;
// and the golden expert cases of ../shared/golden/tiny-a (path as argv[1]: the
// tiny-a folder or its expert_cases.safetensors; skipped with a message when
// absent).
//
// Prints one line per check and ends with "N passed, M failed"; exits non-zero
// on any failure.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <limits>
#include <map>
#include <memory>
#include <new>
#include <random>
#include <string>
#include <vector>
#include <thread>
#include "../src/cpu/thread_pool.h"  // checked in test_thread_pool
#include "../src/dtype.h"  // the library's conversions (checked in test_conversions)
#include "../src/split_calls.h"  // the CUDA backend's split of small batches (checked in test_split_calls)
#include "op_cases.h"
#include "test_util.h"
#include "turbosparse.h"

// Every operator new of the process (the library's worker threads included) is
// counted while g_count_allocs is set: the hot path must not allocate.
static std::atomic<bool> g_count_allocs{false};
static std::atomic<long> g_allocs{0};
static void* counted_alloc(std::size_t n, std::size_t align) {
  if (g_count_allocs.load(std::memory_order_relaxed)) g_allocs.fetch_add(1, std::memory_order_relaxed);
  if (n == 0) n = 1;
  void* p = align > alignof(std::max_align_t) ? std::aligned_alloc(align, (n + align - 1) / align * align) : std::malloc(n);
  return p;
}
void* operator new(std::size_t n) {
  if (void* p = counted_alloc(n, 0)) return p;
  throw std::bad_alloc();
}
void* operator new[](std::size_t n) { return operator new(n); }
void* operator new(std::size_t n, const std::nothrow_t&) noexcept { return counted_alloc(n, 0); }
void* operator new[](std::size_t n, const std::nothrow_t&) noexcept { return counted_alloc(n, 0); }
void* operator new(std::size_t n, std::align_val_t a) {
  if (void* p = counted_alloc(n, std::size_t(a))) return p;
  throw std::bad_alloc();
}
void* operator new[](std::size_t n, std::align_val_t a) { return operator new(n, a); }
void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t) noexcept { std::free(p); }
void operator delete(void* p, std::align_val_t) noexcept { std::free(p); }
void operator delete[](void* p, std::align_val_t) noexcept { std::free(p); }
void operator delete(void* p, std::size_t, std::align_val_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t, std::align_val_t) noexcept { std::free(p); }

using namespace tstest;

namespace {

// the op table (op_cases.h) and the host data and references it shares
using tsops::ExpertRef;
using tsops::fmt;
using tsops::HostMat;
using tsops::kDtypes;
using tsops::make_mat;
using tsops::MoeSetup;
using tsops::Outcome;
using tsops::random_masks;
using tsops::rel_err;
using ts::dtype_name;

// ---------- references for the library's conversions (dtype.h), in double ----------
// Value of a non-negative encoding with `mant_bits` of mantissa and exponent
// bias `bias`, as if the exponent had no top (the all-ones exponent reads as
// the next power of two: rounding up to it means overflow to infinity).
double encoding_value(uint32_t h, int mant_bits, int bias) {
  const uint32_t e = h >> mant_bits, m = h & ((1u << mant_bits) - 1);
  return e == 0 ? std::ldexp(double(m), 1 - bias - mant_bits)
                : std::ldexp(double(m | (1u << mant_bits)), int(e) - bias - mant_bits);
}
double f16_value(uint16_t h) {
  const double v = encoding_value(h & 0x7fffu, 10, 15);
  return (h & 0x8000u) ? -v : v;
}
// The nearest encoding (ties to the even one) of |f| among those whose magnitude
// bits lie in [lo, hi]: the answer of RNE rounding, found by bisection.
uint32_t nearest_encoding(double a, uint32_t lo, uint32_t hi, int mant_bits, int bias) {
  while (lo < hi) {  // first encoding with value >= a
    const uint32_t mid = (lo + hi) / 2;
    if (encoding_value(mid, mant_bits, bias) < a) lo = mid + 1; else hi = mid;
  }
  if (lo == 0) return 0;
  const double up = encoding_value(lo, mant_bits, bias) - a, down = a - encoding_value(lo - 1, mant_bits, bias);
  return (down < up || (down == up && ((lo - 1) & 1u) == 0)) ? lo - 1 : lo;
}

std::string hex(uint32_t v) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "0x%x", v);
  return buf;
}
uint32_t bits(float f) { uint32_t u; std::memcpy(&u, &f, 4); return u; }
float from_bits(uint32_t u) { float f; std::memcpy(&f, &u, 4); return f; }

// dtype.h against the references: f16/bf16 -> f32 for every encoding, and
// f32 -> f16/bf16 at every f16 rounding boundary (ties, one ulp either side),
// on random f32 bit patterns, and at overflow, infinity and NaN.
void test_conversions() {
  bool ok16 = true, okb = true;
  std::string why16, whyb;
  auto fail16 = [&](const char* what, uint32_t v) {
    if (ok16) why16 = std::string(what) + " at " + hex(v);
    ok16 = false;
  };
  auto failb = [&](const char* what, uint32_t v) {
    if (okb) whyb = std::string(what) + " at " + hex(v);
    okb = false;
  };
  for (uint32_t h = 0; h < 0x10000u; h++) {
    const float f = ts::f16_to_f32(uint16_t(h));
    const bool nan = (h & 0x7c00u) == 0x7c00u && (h & 0x3ffu);
    if (nan ? !std::isnan(f) : (h & 0x7fffu) == 0x7c00u ? !(std::isinf(f) && std::signbit(f) == bool(h & 0x8000u))
                                                         : double(f) != f16_value(uint16_t(h)))
      fail16("f16_to_f32", h);
    const float g = ts::bf16_to_f32(uint16_t(h));
    if ((h & 0x7f80u) != 0x7f80u && double(g) != ((h & 0x8000u) ? -1 : 1) * encoding_value(h & 0x7fffu, 7, 127))
      failb("bf16_to_f32", h);
  }
  // f32 -> f16 at and around every boundary between neighbouring f16 magnitudes (all exact in f32)
  auto want16 = [](float f) -> uint16_t {
    const double a = std::fabs(double(f));
    const uint16_t sign = std::signbit(f) ? 0x8000u : 0;
    return uint16_t(sign | nearest_encoding(a, 0, 0x7c00u, 10, 15));  // 0x7c00 = infinity (2^16 unbounded)
  };
  for (uint32_t h = 0; h < 0x7c00u && ok16; h++) {
    const float v = float(f16_value(uint16_t(h)));
    const float mid = float((f16_value(uint16_t(h)) + encoding_value(h + 1, 10, 15)) / 2);
    for (float f : {v, mid, std::nextafter(mid, 0.f), std::nextafter(mid, 1e30f)})
      for (float sf : {f, -f})
        if (ts::f32_to_f16(sf) != want16(sf)) fail16("f32_to_f16", bits(sf));
  }
  // f32 -> bf16 at, and one ulp either side of, every tie between neighbouring bf16 magnitudes
  auto wantb = [](float f) -> uint16_t {
    const uint16_t sign = std::signbit(f) ? 0x8000u : 0;
    return uint16_t(sign | nearest_encoding(std::fabs(double(f)), 0, 0x7f80u, 7, 127));  // 0x7f80 = infinity
  };
  for (uint32_t h = 0; h < 0x7f80u && okb; h++)
    for (uint32_t u : {h << 16, (h << 16) | 0x8000u, (h << 16) | 0x7fffu, (h << 16) | 0x8001u})
      for (uint32_t su : {u, u | 0x80000000u})
        if (ts::f32_to_bf16(from_bits(su)) != wantb(from_bits(su))) failb("f32_to_bf16", su);
  // f32 -> bf16 and f16 on random finite bit patterns
  std::mt19937 g(99);
  for (int i = 0; i < 200000; i++) {
    const uint32_t u = uint32_t(g());
    if ((u & 0x7f800000u) == 0x7f800000u) continue;
    const float f = from_bits(u);
    if (ts::f32_to_bf16(f) != wantb(f)) failb("f32_to_bf16", u);
    if (ts::f32_to_f16(f) != want16(f)) fail16("f32_to_f16", u);
  }
  const float inf = std::numeric_limits<float>::infinity(), nan = std::numeric_limits<float>::quiet_NaN();
  if (ts::f32_to_f16(65519.f) != 0x7bffu || ts::f32_to_f16(65520.f) != 0x7c00u || ts::f32_to_f16(-inf) != 0xfc00u ||
      !std::isnan(ts::f16_to_f32(ts::f32_to_f16(nan))))
    fail16("overflow, infinity or NaN", 0);
  if (ts::f32_to_bf16(inf) != 0x7f80u || ts::f32_to_bf16(-inf) != 0xff80u ||
      !std::isnan(ts::bf16_to_f32(ts::f32_to_bf16(nan))) ||
      !std::isnan(ts::bf16_to_f32(ts::f32_to_bf16(from_bits(0x7f800001u)))))  // a NaN whose top half reads as inf
    failb("infinity or NaN", 0);
  check(ok16, "dtype.h f16 <-> f32: every encoding, every rounding boundary, random f32", why16);
  check(okb, "dtype.h bf16 <-> f32: every encoding, every rounding tie, random f32, infinity and NaN", whyb);
}

std::vector<std::string> runnable_variants(ts_backend* b) {
  std::vector<std::string> out;
  for (const char* v : {"scalar", "avx2", "avx512"}) {
    if (ts_backend_set_variant(b, v) == 0) out.push_back(v);
    else std::printf("skip variant %s: %s\n", v, ts_last_error());
  }
  ts_backend_set_variant(b, "auto");
  return out;
}

// ---------- tiny safetensors reader ----------

struct Tensor {
  std::string dtype;
  std::vector<int64_t> shape;
  std::vector<float> data;  // F32 only (enough for the golden files)
};

class SafeTensors {
 public:
  bool open(const std::string& path, std::string* err) {
    std::ifstream f(path, std::ios::binary);
    if (!f) return *err = "cannot open " + path, false;
    uint64_t hlen = 0;
    f.read(reinterpret_cast<char*>(&hlen), 8);
    if (!f || hlen > (uint64_t(1) << 30)) return *err = path + ": bad header length", false;
    header_.resize(size_t(hlen));
    f.read(&header_[0], std::streamsize(hlen));
    std::vector<char> rest((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    data_.swap(rest);
    pos_ = 0;
    if (!parse_header()) return *err = path + ": cannot parse header", false;
    return true;
  }
  bool get(const std::string& name, Tensor* t) const {
    auto it = entries_.find(name);
    if (it == entries_.end()) return false;
    const Entry& e = it->second;
    if (e.dtype != "F32" || e.end > int64_t(data_.size()) || e.begin > e.end) return false;
    t->dtype = e.dtype;
    t->shape = e.shape;
    t->data.resize(size_t((e.end - e.begin) / 4));
    std::memcpy(t->data.data(), data_.data() + e.begin, t->data.size() * 4);
    return true;
  }
  std::vector<std::string> names() const {
    std::vector<std::string> n;
    for (auto& kv : entries_) n.push_back(kv.first);
    return n;
  }

 private:
  struct Entry {
    std::string dtype;
    std::vector<int64_t> shape;
    int64_t begin = 0, end = 0;
  };
  void ws() { while (pos_ < header_.size() && std::isspace(static_cast<unsigned char>(header_[pos_]))) pos_++; }
  bool eat(char c) {
    ws();
    if (pos_ < header_.size() && header_[pos_] == c) return pos_++, true;
    return false;
  }
  bool str(std::string* s) {
    ws();
    if (!eat('"')) return false;
    s->clear();
    while (pos_ < header_.size() && header_[pos_] != '"') {
      if (header_[pos_] == '\\') pos_++;
      s->push_back(header_[pos_++]);
    }
    return eat('"');
  }
  bool num(int64_t* v) {
    ws();
    size_t start = pos_;
    while (pos_ < header_.size() && (std::isdigit(static_cast<unsigned char>(header_[pos_])) || header_[pos_] == '-')) pos_++;
    if (start == pos_) return false;
    *v = std::stoll(header_.substr(start, pos_ - start));
    return true;
  }
  bool num_list(std::vector<int64_t>* out) {
    if (!eat('[')) return false;
    out->clear();
    if (eat(']')) return true;
    do {
      int64_t v;
      if (!num(&v)) return false;
      out->push_back(v);
    } while (eat(','));
    return eat(']');
  }
  bool skip_value() {  // for __metadata__: an object of strings
    ws();
    if (eat('{')) {
      if (eat('}')) return true;
      do {
        std::string k, v;
        if (!str(&k) || !eat(':') || !str(&v)) return false;
      } while (eat(','));
      return eat('}');
    }
    std::string s;
    return str(&s);
  }
  bool parse_header() {
    if (!eat('{')) return false;
    if (eat('}')) return true;
    do {
      std::string name;
      if (!str(&name) || !eat(':')) return false;
      if (name == "__metadata__") {
        if (!skip_value()) return false;
        continue;
      }
      Entry e;
      if (!eat('{')) return false;
      do {
        std::string key;
        if (!str(&key) || !eat(':')) return false;
        if (key == "dtype") {
          if (!str(&e.dtype)) return false;
        } else if (key == "shape") {
          if (!num_list(&e.shape)) return false;
        } else if (key == "data_offsets") {
          std::vector<int64_t> off;
          if (!num_list(&off) || off.size() != 2) return false;
          e.begin = off[0];
          e.end = off[1];
        } else {
          return false;
        }
      } while (eat(','));
      if (!eat('}')) return false;
      entries_[name] = e;
    } while (eat(','));
    return eat('}');
  }
  std::string header_;
  std::vector<char> data_;
  size_t pos_ = 0;
  std::map<std::string, Entry> entries_;
};

// ---------- the checks ----------

// The per-op checks (matmul, rmsnorm, rope, router, predictor, kv caches and
// attention, moe) are the op table of op_cases.h, run on every variant by main().

// No allocation on the hot path: after one warm-up call of each shape, moe
// (sparse and dense-with-mask), predict and matmul on a 2-thread backend, with
// new masks and inputs each call, make no operator new on any thread.
void test_no_alloc(Rng& rng) {
  const int64_t H = 300, I = 700, R = 90, W = ts_mask_words(I);
  ts_backend* b = ts_backend_create("cpu", 2);
  bool ok = b != nullptr;
  std::string why;
  for (ts_dtype dt : kDtypes) {
    if (!ok) break;
    auto w1 = make_mat(rng, I, H, dt, 0.3f), w3 = make_mat(rng, I, H, dt, 0.3f);
    auto w2 = make_mat(rng, H, I, dt, 0.3f, false, true);
    auto f1 = make_mat(rng, R, H, dt, 0.3f), f2 = make_mat(rng, I, R, dt, 0.3f);
    ts_expert* e = ts_expert_create(b, w1->host(), w3->host(), w2->host(), dt);
    ts_predictor* p = ts_predictor_create(b, f1->host(), f2->host(), dt);
    ts_weight* mw = ts_weight_create(b, w1->host(), dt);
    if (!e || !p || !mw) {
      ok = false;
      why = ts_last_error();
      break;
    }
    for (const char* var : {"scalar", "avx2", "avx512", "auto"}) {
      if (ts_backend_set_variant(b, var) != 0) continue;  // not on this CPU
      const int64_t n = 20;  // two token blocks of the moe
      std::vector<float> x(size_t(n * H)), y(size_t(n * H)), mm(size_t(n * I)), wt(size_t(n), 0.5f);
      std::vector<int32_t> rows(static_cast<size_t>(n)), active(static_cast<size_t>(n)), counts(static_cast<size_t>(n));
      std::vector<uint64_t> masks(size_t(n * W)), pm(size_t(n * W));
      for (int64_t t = 0; t < n; t++) rows[size_t(t)] = int32_t(n - 1 - t);
      bool rc_ok = true;
      for (int rep = 0; rep < 4; rep++) {
        if (rep == 1) {
          g_allocs.store(0);
          g_count_allocs.store(true);
        }
        for (auto& v : x) v = rng.uni(-1, 1);
        for (auto& m : masks) m = (uint64_t(rng.g()) & uint64_t(rng.g())) >> (rep % 3);  // ~25% and sparser
        const ts_expert_call c{e, n, rows.data(), wt.data(), masks.data()};
        rc_ok = rc_ok && ts_moe(b, TS_FFN_SPARSE, n, H, x.data(), 1, &c, y.data(), active.data()) == 0 &&
                ts_moe(b, TS_FFN_DENSE_WITH_MASK, n, H, x.data(), 1, &c, y.data(), active.data()) == 0 &&
                ts_predict(b, p, n, x.data(), pm.data(), counts.data()) == 0 &&
                ts_matmul(b, mw, n, x.data(), mm.data()) == 0;
      }
      g_count_allocs.store(false);
      if (!rc_ok || g_allocs.load() != 0) {
        ok = false;
        why = std::string(dtype_name(dt)) + " " + var + ": " +
              (rc_ok ? std::to_string(g_allocs.load()) + " allocations in 3 rounds" : ts_last_error());
        break;
      }
    }
  }
  if (b) ts_backend_free(b);
  check(ok, "no allocation after warm-up: moe sparse + dense, predict, matmul, every dtype and variant, 2 threads", why);
}

// results must not depend on how many threads the backend has (beyond rounding)
void test_threads(Rng& rng) {
  const int64_t H = 67, I = 131;
  ExpertRef r;
  r.w1 = make_mat(rng, I, H, TS_BF16, 0.3f);
  r.w3 = make_mat(rng, I, H, TS_BF16, 0.3f);
  r.w2 = make_mat(rng, H, I, TS_BF16, 0.3f, false, true);
  Outcome o;
  bool described = true;
  for (int threads : {1, 2, 5}) {
    ts_backend* b = ts_backend_create("cpu", threads);
    if (!o.made(b, "ts_backend_create")) break;
    {
      MoeSetup s;  // frees its expert before the backend goes
      ts_expert* e = ts_expert_create(b, r.w1->host(), r.w3->host(), r.w2->host(), TS_BF16);
      if (o.made(e, "ts_expert_create")) {
        s.experts.push_back(e);
        s.refs.resize(1);
        s.refs[0].w1.reset(new HostMat(*r.w1));
        s.refs[0].w3.reset(new HostMat(*r.w3));
        s.refs[0].w2.reset(new HostMat(*r.w2));
        auto x = rand_vec(rng, size_t(5 * H), -1, 1);
        s.calls.push_back({0, {0, 1, 2, 3, 4}, {1, 0.5f, 0.25f, 1, 1}, random_masks(rng, 5, I, 0.5f)});
        tsops::run_moe(b, o, TS_FFN_SPARSE, s, 5, H, x, nullptr, nullptr);
      }
    }
    described = described &&
                std::string(ts_backend_describe(b)).find("(" + std::to_string(threads) + " thread") != std::string::npos;
    ts_backend_free(b);
  }
  check(o.ok && described && o.err <= 2e-5, "moe with 1, 2 and 5 threads", fmt("rel err %.2e ", o.err) + o.why);
}

// Every SIMD variant against the scalar reference on the same inputs, for every
// dtype, at sizes around the vector widths (8, 16) and the unrolled steps (32, 64).
void test_variants_vs_scalar(ts_backend* b, Rng& rng, const std::vector<std::string>& variants) {
  if (variants.size() < 2) {
    std::printf("skip variants vs scalar: only the scalar variant runs here\n");
    return;
  }
  struct Size { int64_t H, I; };
  for (ts_dtype dt : kDtypes) {
    for (Size sz : {Size{67, 131}, Size{45, 200}, Size{16, 64}, Size{130, 77}, Size{7, 9}}) {
      const int64_t H = sz.H, I = sz.I, W = ts_mask_words(I);
      auto w1 = make_mat(rng, I, H, dt, 0.3f), w3 = make_mat(rng, I, H, dt, 0.3f);
      auto w2 = make_mat(rng, H, I, dt, 0.3f, false, true);
      ts_expert* e = ts_expert_create(b, w1->host(), w3->host(), w2->host(), dt);
      ts_weight* mw = ts_weight_create(b, w1->host(), dt);
      if (!e || !mw) {
        check(false, "variants: create", ts_last_error());
        return;
      }
      for (int64_t n : {1, 3, 8, 21}) {
        auto x = rand_vec(rng, size_t(n * H), -1, 1);
        std::vector<int32_t> rows(static_cast<size_t>(n));
        std::vector<float> wt(static_cast<size_t>(n));
        for (int64_t t = 0; t < n; t++) {
          rows[size_t(t)] = int32_t(n - 1 - t);
          wt[size_t(t)] = rng.uni(0.2f, 1.f);
        }
        auto masks = random_masks(rng, n, I, 0.4f);
        ts_expert_call c{e, n, rows.data(), wt.data(), masks.data()};
        struct Out {
          std::vector<float> mm, ys, yd;
          std::vector<int32_t> as, ad;
        };
        auto run = [&](const std::string& var, Out* o) {
          ts_backend_set_variant(b, var.c_str());
          o->mm.assign(size_t(n * I), 0.f);
          o->ys.assign(size_t(n * H), 0.f);
          o->yd.assign(size_t(n * H), 0.f);
          o->as.assign(size_t(n), -1);
          o->ad.assign(size_t(n), -1);
          return ts_matmul(b, mw, n, x.data(), o->mm.data()) == 0 &&
                 ts_moe(b, TS_FFN_SPARSE, n, H, x.data(), 1, &c, o->ys.data(), o->as.data()) == 0 &&
                 ts_moe(b, TS_FFN_DENSE_WITH_MASK, n, H, x.data(), 1, &c, o->yd.data(), o->ad.data()) == 0;
        };
        Out ref;
        if (!run("scalar", &ref)) {
          check(false, "variants: scalar run", ts_last_error());
          continue;
        }
        for (const auto& var : variants) {
          if (var == "scalar") continue;
          Out o;
          bool ok = run(var, &o);
          const double em = ok ? rel_err(o.mm.data(), ref.mm.data(), o.mm.size()) : 1e9;
          const double es = ok ? rel_err(o.ys.data(), ref.ys.data(), o.ys.size()) : 1e9;
          const double ed = ok ? rel_err(o.yd.data(), ref.yd.data(), o.yd.size()) : 1e9;
          ok = ok && em <= 1e-5 && es <= 1e-5 && ed <= 1e-5 && o.as == ref.as && o.ad == ref.ad;
          char name[160];
          std::snprintf(name, sizeof name, "%s vs scalar %s H=%lld I=%lld n=%lld: matmul, moe sparse, moe dense",
                        var.c_str(), dtype_name(dt), (long long)H, (long long)I, (long long)n);
          char det[120];
          std::snprintf(det, sizeof det, "rel diff %.1e %.1e %.1e%s", em, es, ed,
                        o.as == ref.as && o.ad == ref.ad ? "" : ", active counts differ");
          check(ok, name, det);
        }
      }
      (void)W;
      ts_backend_set_variant(b, "auto");
      ts_expert_free(e);
      ts_weight_free(mw);
    }
  }
}

bool fails_with(int rc, const char* needle) {
  return rc != 0 && std::strstr(ts_last_error(), needle) != nullptr;
}

void test_errors(ts_backend* b, Rng& rng) {
  auto W = make_mat(rng, 4, 6, TS_F32, 1);
  ts_weight* w = ts_weight_create(b, W->host(), TS_F32);
  float x[24] = {0}, y[24] = {0};
  bool ok = true;
  ok = ok && fails_with(ts_matmul(b, w, 1, nullptr, y), "x is NULL");
  ok = ok && fails_with(ts_matmul(nullptr, w, 1, x, y), "backend is NULL");
  ok = ok && fails_with(ts_rmsnorm(b, w, 1, 6, x, 1e-5f, y), "must be [1, d]");
  ts_host_matrix bad = W->m;
  bad.dtype = TS_I8;
  ok = ok && ts_weight_create(b, &bad, TS_F32) == nullptr && std::strstr(ts_last_error(), "dtype");
  auto w1 = make_mat(rng, 8, 6, TS_F32, 1), w3 = make_mat(rng, 8, 6, TS_F32, 1), w2 = make_mat(rng, 8, 6, TS_F32, 1);
  ok = ok && ts_expert_create(b, w1->host(), w3->host(), w2->host(), TS_F32) == nullptr && std::strstr(ts_last_error(), "w2");
  auto w2ok = make_mat(rng, 6, 8, TS_F32, 1);
  ts_expert* e = ts_expert_create(b, w1->host(), w3->host(), w2ok->host(), TS_BF16);
  ok = ok && e != nullptr;
  int32_t rows[1] = {3};
  float wt[1] = {1};
  uint64_t m[1] = {0xff};
  ts_expert_call c{e, 1, rows, wt, m};
  ok = ok && fails_with(ts_moe(b, TS_FFN_SPARSE, 2, 6, x, 1, &c, y, nullptr), "calls[0].rows[0] = 3");
  ok = ok && fails_with(ts_moe(b, TS_FFN_SPARSE, 4, 5, x, 1, &c, y, nullptr), "hidden");
  ok = ok && fails_with(ts_router_topk(b, 1, 4, x, 5, rows, wt), "k = 5");
  ok = ok && fails_with(ts_rope(b, 1, 1, 5, rows, 1e4, x), "even");
  ok = ok && fails_with(ts_backend_set_variant(b, "sse9"), "unknown CPU variant");
  ok = ok && ts_backend_create("tpu", 0) == nullptr && std::strstr(ts_last_error(), "unknown device");
  ts_backend* other = ts_backend_create("cpu", 1);
  ok = ok && fails_with(ts_matmul(other, w, 1, x, y), "another backend");
  ts_backend_free(other);
  ts_kvcache* kv = ts_kvcache_create(b, 1, 4, 1, 2);
  int32_t pos[1] = {4};
  ok = ok && fails_with(ts_attention(b, 0, 1, &kv, pos, 1, 1, 2, x, x, x, y), "positions[0] = 4");
  ts_kvcache_free(kv);
  ts_expert_free(e);
  ts_expert_free(e);  // double free is ignored
  ts_weight_free(w);
  check(ok, "argument errors give one-line messages", ok ? "" : ts_last_error());
  check(ts_device_available("cpu") == 1 && ts_device_available("tpu") == 0 && std::strcmp(ts_version(), "") != 0,
        "device availability, version set");
}

// The golden expert cases of tiny-a with the expert stored in every dtype, on
// every variant: f32 against the golden outputs at float precision; f16, bf16
// and i8 within their rounding of the weights (the golden model is f32), and
// each SIMD variant within 1e-5 of the scalar one on the same stored weights.
// The predictor (f32) must give the golden masks bit for bit.
void test_golden(ts_backend* b, const char* arg, const std::vector<std::string>& variants) {
  std::string dir = arg ? arg : "";
  std::string cases = dir;
  if (cases.size() > 12 && cases.substr(cases.size() - 12) == ".safetensors") {
    dir = cases.substr(0, cases.find_last_of('/') == std::string::npos ? 0 : cases.find_last_of('/'));
  } else {
    cases = dir + "/expert_cases.safetensors";
  }
  const std::string model = (dir.empty() ? "." : dir) + "/model/model.safetensors";
  std::ifstream probe(cases);
  if (!arg || !probe) {
    std::printf("skip golden expert cases: %s (pass ../shared/golden/tiny-a as argv[1])\n",
                arg ? (cases + " not found").c_str() : "no path given");
    return;
  }
  SafeTensors ec, mt;
  std::string err;
  if (!ec.open(cases, &err) || !mt.open(model, &err)) {
    check(false, "golden files readable", err);
    return;
  }
  struct Case {
    std::string key;
    Tensor x, mask, y, w1, w2, w3, fc1, fc2;
    std::vector<uint64_t> masks;
  };
  std::vector<Case> all;
  for (const auto& name : ec.names()) {
    if (name.size() < 2 || name.substr(name.size() - 2) != ".x") continue;
    Case c;
    c.key = name.substr(0, name.size() - 2);  // "L.E"
    const std::string L = c.key.substr(0, c.key.find('.')), E = c.key.substr(c.key.find('.') + 1);
    const std::string pre = "model.layers." + L + ".block_sparse_moe.experts." + E + ".";
    if (!ec.get(c.key + ".x", &c.x) || !ec.get(c.key + ".mask", &c.mask) || !ec.get(c.key + ".y", &c.y) ||
        !mt.get(pre + "w1.weight", &c.w1) || !mt.get(pre + "w2.weight", &c.w2) || !mt.get(pre + "w3.weight", &c.w3) ||
        !mt.get(pre + "predictor.fc1.weight", &c.fc1) || !mt.get(pre + "predictor.fc2.weight", &c.fc2)) {
      check(false, "golden tensors for expert " + c.key);
      return;
    }
    const int64_t n = c.x.shape[0], I = c.w1.shape[0], Wd = ts_mask_words(I);
    c.masks.assign(size_t(n * Wd), 0);
    for (int64_t t = 0; t < n; t++)
      for (int64_t i = 0; i < I; i++)
        if (c.mask.data[size_t(t * I + i)] != 0.f) c.masks[size_t(t * Wd + i / 64)] |= uint64_t(1) << (i % 64);
    all.push_back(std::move(c));
  }
  if (all.empty()) {
    check(false, "golden expert cases present in " + cases);
    return;
  }
  const std::string count = std::to_string(all.size()) + " experts x " + std::to_string(all[0].x.shape[0]) + " rows";

  for (ts_dtype dt : kDtypes) {
    // max |y - golden| / max |golden|: f32 is float rounding; the others are
    // the weights' own rounding (bf16 8 bits, f16 11 bits, i8 per-row 1/254)
    const double tol = dt == TS_F32 ? 1e-4 : dt == TS_F16 ? 2e-3 : dt == TS_BF16 ? 1.5e-2 : 4e-2;
    std::map<std::string, double> worst, vs_scalar;
    std::string why;
    for (const Case& c : all) {
      ts_host_matrix m1{TS_F32, c.w1.shape[0], c.w1.shape[1], c.w1.data.data()};
      ts_host_matrix m3{TS_F32, c.w3.shape[0], c.w3.shape[1], c.w3.data.data()};
      ts_host_matrix m2{TS_F32, c.w2.shape[0], c.w2.shape[1], c.w2.data.data()};
      ts_expert* e = ts_expert_create(b, &m1, &m3, &m2, dt);
      if (!e) {
        why = ts_last_error();
        for (const auto& var : variants) worst[var] = 1e9;
        continue;
      }
      const int64_t n = c.x.shape[0], H = c.x.shape[1];
      std::vector<int32_t> rows(static_cast<size_t>(n));
      std::vector<float> wt(size_t(n), 1.f);
      for (int64_t t = 0; t < n; t++) rows[size_t(t)] = int32_t(t);
      const ts_expert_call call{e, n, rows.data(), wt.data(), c.masks.data()};
      std::vector<float> scalar_y[2];
      for (const auto& var : variants) {  // scalar first
        ts_backend_set_variant(b, var.c_str());
        int m = 0;
        for (ts_ffn_mode mode : {TS_FFN_SPARSE, TS_FFN_DENSE_WITH_MASK}) {
          std::vector<float> y(size_t(n * H), 12345.f);
          if (ts_moe(b, mode, n, H, c.x.data.data(), 1, &call, y.data(), nullptr) != 0) {
            why = ts_last_error();
            worst[var] = 1e9;
            m++;
            continue;
          }
          worst[var] = std::max(worst[var], rel_err(y.data(), c.y.data.data(), y.size()));
          if (var == "scalar") scalar_y[m] = y;
          else if (scalar_y[m].size() == y.size())  // empty when the scalar run failed (already counted)
            vs_scalar[var] = std::max(vs_scalar[var], rel_err(y.data(), scalar_y[m].data(), y.size()));
          m++;
        }
      }
      ts_backend_set_variant(b, "auto");
      ts_expert_free(e);
    }
    for (const auto& var : variants) {
      const bool vs_ok = var == "scalar" || vs_scalar[var] <= 1e-5;
      std::string detail = fmt("max rel err %.2e", worst[var]) + fmt(" (limit %.0e)", tol);
      if (var != "scalar") detail += fmt(", vs scalar %.1e", vs_scalar[var]);
      check(worst[var] <= tol && vs_ok,
            std::string("golden tiny-a expert cases ") + dtype_name(dt) + " " + var + " (" + count + ", sparse + dense)",
            detail + (why.empty() ? "" : " " + why));
    }
  }

  // the predictor (f32) on the same inputs should give the golden masks
  for (const auto& var : variants) {
    ts_backend_set_variant(b, var.c_str());
    int mask_diff = 0, mask_total = 0;
    std::string why;
    for (const Case& c : all) {
      const int64_t n = c.x.shape[0], I = c.w1.shape[0];
      ts_host_matrix p1{TS_F32, c.fc1.shape[0], c.fc1.shape[1], c.fc1.data.data()};
      ts_host_matrix p2{TS_F32, c.fc2.shape[0], c.fc2.shape[1], c.fc2.data.data()};
      ts_predictor* p = ts_predictor_create(b, &p1, &p2, TS_F32);
      std::vector<uint64_t> pm(c.masks.size());
      if (p && ts_predict(b, p, n, c.x.data.data(), pm.data(), nullptr) == 0) {
        for (size_t k = 0; k < pm.size(); k++) mask_diff += __builtin_popcountll(pm[k] ^ c.masks[k]);
        mask_total += int(n * I);
      } else {
        why = ts_last_error();
        mask_diff = 1 << 30;
      }
      ts_predictor_free(p);
    }
    check(mask_diff == 0, "golden tiny-a predictor masks " + var,
          std::to_string(mask_diff) + " of " + std::to_string(mask_total) + " bits differ " + why);
  }
  ts_backend_set_variant(b, "auto");
}

}  // namespace

// The pool runs every share of every region exactly once, whoever claims it, with the
// share's writes visible to the caller when run returns; also with more threads than
// cores and workers that the OS deschedules mid-region (the yields), where the caller
// takes the shares of workers that have not started.
// The CUDA backend cuts a small batch's calls into calls of 1-2 tokens (split_calls.h): host code, checked here
// where no GPU is. Parts in order, each pointing into its call's rows, weights and masks; empty calls kept.
void test_split_calls() {
  ts_expert e;
  e.intermediate = 130;  // 3 mask words
  const int64_t W = ts_mask_words(e.intermediate);
  const std::vector<int64_t> ns = {5, 0, 2, 1, 3};
  std::vector<std::vector<int32_t>> rows;
  std::vector<std::vector<float>> weights;
  std::vector<std::vector<uint64_t>> masks;
  std::vector<ts_expert_call> calls;
  int32_t next_row = 0;
  for (int64_t n : ns) {
    rows.emplace_back();
    weights.emplace_back();
    masks.emplace_back(size_t(n * W));
    for (int64_t j = 0; j < n; ++j) {
      rows.back().push_back(next_row++);
      weights.back().push_back(0.5f + float(j));
      for (int64_t w = 0; w < W; ++w) masks.back()[size_t(j * W + w)] = uint64_t(next_row) << w;
    }
  }
  for (size_t c = 0; c < ns.size(); ++c)
    calls.push_back({&e, ns[c], rows[c].data(), weights[c].data(), masks[c].data()});
  for (int64_t S : {1, 2, 3, 5}) {
    std::vector<ts_expert_call> parts;
    ts::split_calls(calls.data(), int64_t(calls.size()), S, parts);
    bool ok = true;
    std::string why;
    std::vector<int32_t> order;  // the rows of every part, in order: the original (call, token) pairs
    size_t want_parts = 0;
    for (int64_t n : ns) want_parts += n == 0 ? 1 : size_t((n + S - 1) / S);
    if (parts.size() != want_parts) ok = false, why = fmt("%zu parts, want %zu", parts.size(), want_parts);
    for (const ts_expert_call& p : parts) {
      if (p.expert != &e || p.n > S || p.n < 0) ok = false, why = "a part's expert or size";
      for (int64_t j = 0; j < p.n; ++j) {
        order.push_back(p.rows[j]);
        // the part's own token j: its weight and its mask words travel with its row
        const int32_t r = p.rows[j];
        if (p.masks[j * W] != uint64_t(r + 1) || p.masks[j * W + W - 1] != uint64_t(r + 1) << (W - 1))
          ok = false, why = fmt("row %d: mask words of another token", r);
      }
    }
    for (int32_t r = 0; r < next_row; ++r)
      if (size_t(r) >= order.size() || order[size_t(r)] != r) ok = false, why = "the pairs out of order";
    // weights: the part starting at token j of a call points at that call's weight j
    size_t k = 0;
    for (size_t c = 0; c < ns.size() && ok; ++c) {
      if (ns[c] == 0) {
        if (parts[k].n != 0 || parts[k].rows != calls[c].rows) ok = false, why = "an empty call not passed through";
        ++k;
        continue;
      }
      for (int64_t j = 0; j < ns[c]; j += S, ++k)
        if (parts[k].weight != weights[c].data() + j) ok = false, why = fmt("call %zu part at %lld: weight", c, (long long)j);
    }
    check(ok, fmt("split_calls: calls of 5, 0, 2, 1, 3 tokens into parts of %lld", (long long)S), why);
  }
}

void test_thread_pool() {
  bool ok = true;
  std::string why;
  for (int threads : {2, 3, 5, 9}) {
    ts_cpu::ThreadPool pool(threads);
    std::vector<int> runs(size_t(threads), 0);  // plain ints: the pool's ordering must publish them
    std::vector<std::thread::id> who(static_cast<size_t>(threads));
    int by_caller_only = 0;
    const int regions = 20000;
    for (int r = 0; r < regions && ok; r++) {
      auto job = [&](int share) {
        runs[size_t(share)]++;
        who[size_t(share)] = std::this_thread::get_id();
        if ((r + share) % 97 == 0) std::this_thread::yield();
      };
      pool.run(job);
      int mine = 0;
      for (int s = 0; s < threads; s++) {
        if (runs[size_t(s)] != r + 1) {
          ok = false;
          why = fmt("%d threads, region %d: share %d ran %d times in all", threads, r, s, runs[size_t(s)]);
        }
        mine += who[size_t(s)] == std::this_thread::get_id();
      }
      by_caller_only += mine == threads;
    }
    if (ok && threads == 2) why = fmt("2 threads: the caller ran both shares in %d of %d regions", by_caller_only, regions);
  }
  check(ok, "thread pool: every share once per region, 2-9 threads", why);
}

int main(int argc, char** argv) {
  ts_backend* b = ts_backend_create("cpu", 3);
  if (!b) {
    std::printf("FAIL cannot create the CPU backend: %s\n0 passed, 1 failed\n", ts_last_error());
    return 1;
  }
  std::printf("backend: %s, library %s\n", ts_backend_describe(b), ts_version());
  check(std::strcmp(ts_backend_device(b), "cpu") == 0, "cpu backend device name");
  ts_backend* a = ts_backend_create("auto", 1);
  check(a != nullptr, std::string("auto backend: ") + (a ? ts_backend_describe(a) : ts_last_error()));
  if (a) ts_backend_free(a);
  const auto variants = runnable_variants(b);
  test_conversions();
  Rng rng;
  // every case of the op table on every variant (test_backend_ops runs the same
  // table on every backend, CUDA included)
  for (const auto& var : variants) {
    ts_backend_set_variant(b, var.c_str());
    tsops::run_cases(b, "cpu " + var, tsops::op_cases());
  }
  ts_backend_set_variant(b, "auto");
  check(ts_kvcache_create_typed(b, 1, 4, 1, 2, TS_I8) == nullptr && std::strstr(ts_last_error(), "not one of F32, BF16, F16"),
        "an i8 kv cache is refused");
  test_variants_vs_scalar(b, rng, variants);
  test_thread_pool();
  test_split_calls();
  test_threads(rng);
  test_no_alloc(rng);
  test_errors(b, rng);
  test_golden(b, argc > 1 ? argv[1] : nullptr, variants);
  check(ts_backend_weight_bytes(b) == 0, "all weight bytes released",
        std::to_string(ts_backend_weight_bytes(b)) + " bytes left");
  ts_backend_free(b);
  return finish();
}
