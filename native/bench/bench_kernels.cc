// bench_kernels.cc — CPU expert kernels against the memory floor.
//
// At Mixtral width (hidden 4096, intermediate 14336, predictor rank 1024), for
// each weight dtype and batch 1 and 8:
//   - the machine's read bandwidth, measured in the same run (all threads
//     summing a buffer far larger than the last-level cache);
//   - the sparse expert at 5/10/15/25/50% active neurons, the dense-with-mask
//     expert and the predictor;
//   - per line: median milliseconds, GB/s on the bytes the call actually needs
//     (sparse: only the rows of w1, w3, w2 of neurons some token uses), and the
//     ratio of that to the measured read bandwidth.
// Weights are rotated over enough copies, and masks redrawn, that no call finds
// its rows in cache. Prints a table, then one JSON line per measurement
// (--json: only the JSON lines).
//
// A repeat only counts when no other process took our cores during it (see
// measure()); the "clean" column says how many of the tries counted.
//
//   bench_kernels [--json] [--threads N] [--dtypes bf16,f16,i8,f32] [--batches 1,8]
//                 [--variant auto|scalar|avx2|avx512] [--reps 15] [--budget 20] [--quick]
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <fstream>
#include <string>
#include <thread>
#include <vector>
#include "../src/dtype.h"
#include "turbosparse.h"

namespace {

constexpr int64_t kHidden = 4096, kInter = 14336, kRank = 1024;

struct Options {
  bool json_only = false;
  int threads = 0;
  std::vector<std::string> dtypes = {"bf16", "f16", "i8", "f32"};
  std::vector<int> batches = {1, 8};
  std::string variant = "auto";
  int reps = 15;
  double budget_s = 20;  // per measurement, to collect clean repeats on a busy machine
  std::vector<double> actives = {0.05, 0.10, 0.15, 0.25, 0.50};
  std::vector<std::string> kernels = {"dense", "sparse", "predictor"};
  bool has(const std::string& k) const { return std::find(kernels.begin(), kernels.end(), k) != kernels.end(); }
};

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

// Process CPU time (all threads), seconds.
double cpu_s() {
  timespec t;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
  return double(t.tv_sec) + double(t.tv_nsec) * 1e-9;
}

// ---- read bandwidth: every thread (the caller too) sums its slice of a buffer >> LLC ----
struct ReadBuffer {
  std::vector<uint64_t> buf;
  explicit ReadBuffer(size_t bytes) : buf(bytes / 8) {
    for (size_t i = 0; i < buf.size(); i++) buf[i] = i * 0x9E3779B97F4A7C15ull;
  }
  uint64_t sum(size_t b, size_t e) const {
    const uint64_t* p = buf.data();
    uint64_t a0 = 0, a1 = 0, a2 = 0, a3 = 0, a4 = 0, a5 = 0, a6 = 0, a7 = 0;
    size_t i = b;
    for (; i + 8 <= e; i += 8) {
      a0 += p[i]; a1 += p[i + 1]; a2 += p[i + 2]; a3 += p[i + 3];
      a4 += p[i + 4]; a5 += p[i + 5]; a6 += p[i + 6]; a7 += p[i + 7];
    }
    for (; i < e; i++) a0 += p[i];
    return a0 + a1 + a2 + a3 + a4 + a5 + a6 + a7;
  }
  // one pass over the whole buffer with `threads` threads
  void pass(int threads) const {
    std::atomic<uint64_t> sink{0};
    std::vector<std::thread> ts;
    const size_t n = buf.size();
    for (int t = 1; t < threads; t++)
      ts.emplace_back([&, t] { sink += sum(n * size_t(t) / size_t(threads), n * size_t(t + 1) / size_t(threads)); });
    sink += sum(0, n / size_t(threads));
    for (auto& t : ts) t.join();
    if (sink.load() == 42) std::fprintf(stderr, " ");
  }
};

// A repeat counts ("clean") when our threads held their cores for the whole
// call: process CPU time >= 93% of threads x wall time. On a shared machine a
// repeat during which another process ran is dropped instead of measured.
bool clean_run(int threads, double wall_s, double cpu_s_used) { return cpu_s_used >= 0.93 * threads * wall_s; }

// Share of the machine's CPU time that was idle over the last `window_s` (Linux; 1 elsewhere).
double idle_share(double window_s) {
  auto sample = [](double* total, double* idle) {
    std::ifstream f("/proc/stat");
    std::string cpu;
    double v[10] = {0};
    f >> cpu;
    for (double& x : v) f >> x;
    *total = 0;
    for (double x : v) *total += x;
    *idle = v[3] + v[4];
    return bool(f) && cpu == "cpu";
  };
  double t0, i0, t1, i1;
  if (!sample(&t0, &i0)) return 1;
  std::this_thread::sleep_for(std::chrono::duration<double>(window_s));
  if (!sample(&t1, &i1) || t1 <= t0) return 1;
  return (i1 - i0) / (t1 - t0);
}

// Waits (up to `until`) for a moment when other processes leave the cores
// alone, so that repeats are not spent, and counted, while they run.
void wait_for_quiet(double until) {
  while (now_s() < until && idle_share(0.25) < 0.85) {
  }
}

struct Timing {
  double median_s = 0;  // of the clean repeats (of all when fewer than half were clean)
  double read_gbps = 0; // read bandwidth measured between them
  int clean = 0, tries = 0;
};

// Times fn(rep) `want` clean times, interleaved with passes of the read
// bandwidth test (about as long as the calls between them), so every line's
// ratio compares kernel and bandwidth measured over the same seconds: the
// bandwidth of a shared machine drifts over a run.
template <class F>
Timing measure(int threads, int warmup, int want, double budget_s, const ReadBuffer& rb, F&& fn) {
  double t0 = now_s();
  for (int r = 0; r < warmup; r++) fn(r);
  const double t_call = (now_s() - t0) / std::max(warmup, 1);
  t0 = now_s();
  rb.pass(threads);
  const double t_read = now_s() - t0;
  const int calls_per_read = int(std::min(50.0, std::max(1.0, std::round(t_read / std::max(t_call, 1e-6)))));

  std::vector<double> clean, all, read_clean, read_all;
  const double t_end = now_s() + budget_s;
  const double bytes = double(rb.buf.size() * 8);
  int r = warmup;
  while ((int(clean.size()) < want || read_clean.size() < 3) &&
         (now_s() < t_end || all.size() < size_t(want) || read_all.empty())) {
    wait_for_quiet(t_end);
    {
      const double w0 = now_s(), c0 = cpu_s();
      rb.pass(threads);
      const double w1 = now_s(), c1 = cpu_s();
      read_all.push_back(bytes / (w1 - w0) / 1e9);
      if (clean_run(threads, w1 - w0, c1 - c0)) read_clean.push_back(read_all.back());
    }
    for (int k = 0; k < calls_per_read && int(clean.size()) < want; k++) {
      const double w0 = now_s(), c0 = cpu_s();
      fn(r++);
      const double w1 = now_s(), c1 = cpu_s();
      all.push_back(w1 - w0);
      if (clean_run(threads, w1 - w0, c1 - c0)) clean.push_back(w1 - w0);
    }
  }
  Timing t;
  t.clean = int(clean.size());
  t.tries = int(all.size());
  t.median_s = median(t.clean * 2 >= want ? clean : all);
  t.read_gbps = median(read_clean.size() >= 3 ? read_clean : read_all);
  return t;
}

void die(const std::string& what) {
  std::fprintf(stderr, "bench_kernels: %s: %s\n", what.c_str(), ts_last_error());
  std::exit(1);
}

// Fast deterministic random numbers (weights for ~180M parameters).
struct XorShift {
  uint64_t s;
  explicit XorShift(uint64_t seed) : s(seed * 0x9E3779B97F4A7C15ull + 1) {}
  uint64_t next() {
    s ^= s << 13;
    s ^= s >> 7;
    s ^= s << 17;
    return s;
  }
  float uni(float a, float b) { return a + (b - a) * float(next() >> 40) * (1.0f / 16777216.0f); }
};

struct Result {
  std::string kernel, dtype;
  double active;     // fraction of neurons set in each token's mask (1 for dense / predictor)
  int batch;
  double rows_read;  // fraction of the expert's neurons read (the union over the batch's masks)
  double ms, gbps, read_gbps;
  double speedup;    // sparse vs dense-with-mask of the same dtype and batch (0: n/a)
  int clean = 0, tries = 0;
};

ts_dtype parse_dtype(const std::string& s) {
  if (s == "f32") return TS_F32;
  if (s == "f16") return TS_F16;
  if (s == "bf16") return TS_BF16;
  if (s == "i8") return TS_I8;
  std::fprintf(stderr, "bench_kernels: unknown dtype '%s' (use f32, f16, bf16, i8)\n", s.c_str());
  std::exit(2);
}

// masks [batch, words] with exactly round(frac * I) neurons per token, each token drawn independently
std::vector<uint64_t> draw_masks(XorShift& rng, int batch, double frac, int64_t* union_count) {
  const int64_t W = ts_mask_words(kInter), k = int64_t(std::llround(frac * double(kInter)));
  std::vector<uint64_t> m(size_t(batch * W), 0);
  std::vector<int32_t> idx(static_cast<size_t>(kInter));
  for (int t = 0; t < batch; t++) {
    for (int64_t i = 0; i < kInter; i++) idx[size_t(i)] = int32_t(i);
    for (int64_t j = 0; j < k; j++) {  // partial Fisher-Yates
      int64_t r = j + int64_t(rng.next() % uint64_t(kInter - j));
      std::swap(idx[size_t(j)], idx[size_t(r)]);
      const int64_t i = idx[size_t(j)];
      m[size_t(t * W + i / 64)] |= uint64_t(1) << (i % 64);
    }
  }
  int64_t u = 0;
  for (int64_t w = 0; w < W; w++) {
    uint64_t any = 0;
    for (int t = 0; t < batch; t++) any |= m[size_t(t * W + w)];
    u += __builtin_popcountll(any);
  }
  *union_count = u;
  return m;
}

void print_row(FILE* f, const Result& r) {
  char act[16], rows[16], spd[16], clean[24];
  std::snprintf(act, sizeof act, r.kernel == "sparse_expert" ? "%.0f%%" : "-", r.active * 100);
  std::snprintf(rows, sizeof rows, "%.0f%%", r.rows_read * 100);
  std::snprintf(spd, sizeof spd, r.speedup > 0 ? "%.1fx" : "-", r.speedup);
  std::snprintf(clean, sizeof clean, "%d/%d", r.clean, r.tries);
  std::fprintf(f, "%-14s %-5s %5d %7s %7s %9.3f %8.1f %8.1f %7.2f %8s %7s\n", r.kernel.c_str(), r.dtype.c_str(),
               r.batch, act, rows, r.ms, r.gbps, r.read_gbps, r.gbps / r.read_gbps, spd, clean);
  std::fflush(f);
}

void print_json(const Result& r) {
  std::printf(
      "{\"kernel\": \"%s\", \"dtype\": \"%s\", \"active\": %.2f, \"batch\": %d, \"ms\": %.4f, \"gbps\": %.2f, "
      "\"read_gbps\": %.2f, \"ratio\": %.3f}\n",
      r.kernel.c_str(), r.dtype.c_str(), r.active, r.batch, r.ms, r.gbps, r.read_gbps, r.gbps / r.read_gbps);
}

std::vector<std::string> split(const std::string& s) {
  std::vector<std::string> out;
  size_t a = 0;
  while (a <= s.size()) {
    size_t b = s.find(',', a);
    if (b == std::string::npos) b = s.size();
    if (b > a) out.push_back(s.substr(a, b - a));
    a = b + 1;
  }
  return out;
}

[[noreturn]] void usage_error(const std::string& msg) {
  std::fprintf(stderr, "bench_kernels: %s\n", msg.c_str());
  std::exit(2);
}

// The whole of `s` as an integer in [lo, hi], or a one-line error naming the flag.
int64_t parse_int(const std::string& flag, const std::string& s, int64_t lo, int64_t hi) {
  char* end = nullptr;
  errno = 0;
  const long long v = s.empty() ? 0 : std::strtoll(s.c_str(), &end, 10);
  if (s.empty() || *end != '\0' || errno != 0 || v < lo || v > hi)
    usage_error(flag + ": '" + s + "' is not an integer in [" + std::to_string(lo) + ", " + std::to_string(hi) + "]");
  return v;
}

// The whole of `s` as a number in [lo, hi].
double parse_number(const std::string& flag, const std::string& s, double lo, double hi) {
  char* end = nullptr;
  const double v = s.empty() ? 0 : std::strtod(s.c_str(), &end);
  if (s.empty() || *end != '\0' || !(v >= lo && v <= hi)) {
    char range[64];
    std::snprintf(range, sizeof range, "[%g, %g]", lo, hi);
    usage_error(flag + ": '" + s + "' is not a number in " + range);
  }
  return v;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  bool quick = false, set_reps = false, set_dtypes = false, set_actives = false;
  for (int i = 1; i < argc; i++) {
    std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) usage_error(a + " needs a value");
      return argv[++i];
    };
    if (a == "--json") o.json_only = true;
    else if (a == "--threads") o.threads = int(parse_int(a, next(), 0, 256));
    else if (a == "--dtypes") {
      o.dtypes = split(next());
      set_dtypes = true;
    } else if (a == "--batches") {
      o.batches.clear();
      for (auto& s : split(next())) o.batches.push_back(int(parse_int(a, s, 1, 256)));
    } else if (a == "--variant") o.variant = next();
    else if (a == "--reps") {
      o.reps = int(parse_int(a, next(), 3, 100000));
      set_reps = true;
    } else if (a == "--budget") o.budget_s = parse_number(a, next(), 1, 1e6);
    else if (a == "--kernels") {
      o.kernels = split(next());
      for (auto& k : o.kernels)
        if (k != "dense" && k != "sparse" && k != "predictor")
          usage_error("--kernels: unknown kernel '" + k + "' (use dense, sparse, predictor)");
    } else if (a == "--actives") {
      o.actives.clear();
      for (auto& v : split(next())) o.actives.push_back(parse_number(a, v, 0.001, 1));
      set_actives = true;
    } else if (a == "--quick") {
      quick = true;
    } else if (a == "--help" || a == "-h") {
      std::printf(
          "usage: bench_kernels [--json] [--threads N] [--dtypes bf16,f16,i8,f32] [--batches 1,8]\n"
          "                     [--variant auto|scalar|avx2|avx512] [--reps 15] [--budget 20]\n"
          "                     [--kernels dense,sparse,predictor] [--actives 0.05,0.1,...] [--quick]\n"
          "  --json     only the JSON lines (the table and notes go to stderr)\n"
          "  --threads  worker threads, 0 = all cores (default)\n"
          "  --batches  tokens per call, 1-256 each (default 1,8)\n"
          "  --reps     clean repeats per measurement (median reported), >= 3\n"
          "  --budget   seconds per measurement to collect them on a busy machine, >= 1\n"
          "  --kernels  any of dense,sparse,predictor (default all)\n"
          "  --actives  sparse active fractions in [0.001, 1] (default 0.05,0.1,0.15,0.25,0.5)\n"
          "  --quick    bf16 only, 10%% active, 5 repeats (unless --dtypes/--actives/--reps say otherwise)\n");
      return 0;
    } else {
      usage_error("unknown option " + a + " (see --help)");
    }
  }
  if (quick) {
    if (!set_reps) o.reps = 5;
    if (!set_dtypes) o.dtypes = {"bf16"};
    if (!set_actives) o.actives = {0.10};
  }
  if (o.dtypes.empty()) usage_error("--dtypes is empty (use any of f32, f16, bf16, i8)");
  if (o.batches.empty()) usage_error("--batches is empty (use e.g. 1,8)");
  if (o.kernels.empty()) usage_error("--kernels is empty (use any of dense, sparse, predictor)");
  for (auto& d : o.dtypes) parse_dtype(d);

  ts_backend* b = ts_backend_create("cpu", o.threads);
  if (!b) die("cannot create the CPU backend");
  if (ts_backend_set_variant(b, o.variant.c_str()) != 0) die("variant " + o.variant);
  int threads = o.threads;
  {
    // the backend chose the thread count; read it back from the description "(N threads)"
    const char* d = ts_backend_describe(b);
    const char* p = std::strchr(d, '(');
    threads = p ? std::atoi(p + 1) : 1;
  }
  FILE* info = o.json_only ? stderr : stdout;
  {
    char date[32];
    const std::time_t now = std::time(nullptr);
    std::strftime(date, sizeof date, "%Y-%m-%d %H:%M", std::localtime(&now));
    std::string model = "unknown CPU";
    std::ifstream cpuinfo("/proc/cpuinfo");
    for (std::string line; std::getline(cpuinfo, line);)
      if (line.rfind("model name", 0) == 0) {
        model = line.substr(line.find(':') + 2);
        break;
      }
    std::fprintf(info, "%s, %s, %u cores; backend: %s\n", date, model.c_str(), std::thread::hardware_concurrency(),
                 ts_backend_describe(b));
    std::fprintf(info, "Mixtral expert H=%lld I=%lld, predictor rank %lld; median of %d clean repeats\n",
                 (long long)kHidden, (long long)kInter, (long long)kRank, o.reps);
  }

  // ---- source weights (f32, positive-leaning so gate and up are > 0 for our
  //      inputs: every masked neuron is really active, w2 rows included) ----
  XorShift rng(7);
  const float ws = 1.0f / std::sqrt(float(kHidden));
  std::vector<float> w1(size_t(kInter * kHidden)), w3(w1.size()), w2(w1.size());
  for (auto& v : w1) v = rng.uni(-0.5f, 1.0f) * ws;
  for (auto& v : w3) v = rng.uni(-0.5f, 1.0f) * ws;
  for (auto& v : w2) v = rng.uni(-1.0f, 1.0f) * ws;
  std::vector<float> fc1(size_t(kRank * kHidden)), fc2(size_t(kInter * kRank));
  for (auto& v : fc1) v = rng.uni(-1.f, 1.f) * ws;
  for (auto& v : fc2) v = rng.uni(-1.f, 1.f) / std::sqrt(float(kRank));
  const ts_host_matrix m1{TS_F32, kInter, kHidden, w1.data()}, m3{TS_F32, kInter, kHidden, w3.data()},
      m2{TS_F32, kHidden, kInter, w2.data()}, p1{TS_F32, kRank, kHidden, fc1.data()},
      p2{TS_F32, kInter, kRank, fc2.data()};

  const int max_batch = *std::max_element(o.batches.begin(), o.batches.end());
  std::vector<float> x(size_t(max_batch * kHidden)), y(x.size());
  for (auto& v : x) v = rng.uni(0.f, 1.f);
  std::vector<int32_t> rows(static_cast<size_t>(max_batch)), active(static_cast<size_t>(max_batch)),
      counts(static_cast<size_t>(max_batch));
  std::vector<float> weight(static_cast<size_t>(max_batch), 1.f);
  for (int t = 0; t < max_batch; t++) rows[size_t(t)] = t;
  const int64_t W = ts_mask_words(kInter);

  std::vector<Result> results;
  ReadBuffer readbuf(size_t(512) << 20);  // 16x a 32 MB LLC
  std::fprintf(info, "\n%-14s %-5s %5s %7s %7s %9s %8s %8s %7s %8s %7s\n", "kernel", "dtype", "batch", "active", "rows",
               "ms", "GB/s", "read", "ratio", "speedup", "clean");

  for (const auto& dname : o.dtypes) {
    const ts_dtype dt = parse_dtype(dname);
    const int64_t scale_bytes = dt == TS_I8 ? 4 : 0;  // one f32 scale per i8 row
    const int64_t row_bytes = 3 * (kHidden * ts::dtype_size(dt) + scale_bytes);  // one neuron: w1, w3 rows + w2 column
    const int64_t expert_bytes = kInter * row_bytes;
    const int64_t pred_bytes = (kRank * kHidden + kInter * kRank) * ts::dtype_size(dt) + (kRank + kInter) * scale_bytes;
    // enough copies that one rotation touches several times the LLC even at 5% active
    const int copies = int(std::min<int64_t>(12, std::max<int64_t>(4, (int64_t(2) << 30) / expert_bytes)));
    const int pcopies = int(std::min<int64_t>(12, std::max<int64_t>(4, (int64_t(256) << 20) / pred_bytes)));
    std::fprintf(stderr, "[%s] packing %d expert copies (%.0f MB each) and %d predictor copies...\n", dname.c_str(),
                 copies, double(expert_bytes) / 1e6, pcopies);
    std::vector<ts_expert*> experts;
    for (int c = 0; c < copies; c++) {
      ts_expert* e = ts_expert_create(b, &m1, &m3, &m2, dt);
      if (!e) die("expert_create");
      experts.push_back(e);
    }
    std::vector<ts_predictor*> preds;
    for (int c = 0; c < pcopies; c++) {
      ts_predictor* p = ts_predictor_create(b, &p1, &p2, dt);
      if (!p) die("predictor_create");
      preds.push_back(p);
    }
    std::fprintf(stderr, "[%s] measuring...\n", dname.c_str());

    for (int batch : o.batches) {
      // one ts_moe call of `batch` rows on one expert copy with one mask set
      auto run_moe = [&](ts_ffn_mode mode, const std::vector<std::vector<uint64_t>>& sets, int rep) {
        const std::vector<uint64_t>& m = sets[size_t(rep % int(sets.size()))];
        ts_expert_call call{experts[size_t(rep % copies)], batch, rows.data(), weight.data(), m.data()};
        if (ts_moe(b, mode, batch, kHidden, x.data(), 1, &call, y.data(), active.data()) != 0) die("ts_moe");
      };
      auto add = [&](Result r, const Timing& t) {
        r.clean = t.clean;
        r.tries = t.tries;
        results.push_back(r);
        print_row(info, r);
      };

      // dense-with-mask baseline: reads the whole expert whatever the mask
      int64_t u;
      double dense_ms = 0;
      if (o.has("dense")) {
      std::vector<std::vector<uint64_t>> dense_sets;
      for (int k = 0; k < 7; k++) dense_sets.push_back(draw_masks(rng, batch, 0.10, &u));
      const Timing td = measure(threads, 2, std::max(5, o.reps / 2), o.budget_s, readbuf,
                                [&](int r) { run_moe(TS_FFN_DENSE_WITH_MASK, dense_sets, r); });
      dense_ms = td.median_s * 1e3;
      add(Result{"dense_expert", dname, 1.0, batch, 1.0, dense_ms, double(expert_bytes) / td.median_s / 1e9,
                 td.read_gbps, 0},
          td);
      }

      for (double frac : o.has("sparse") ? o.actives : std::vector<double>{}) {
        // a different mask draw per call (7 sets, a count prime to the copies)
        std::vector<std::vector<uint64_t>> sets;
        double mean_union = 0;
        for (int k = 0; k < 7; k++) {
          sets.push_back(draw_masks(rng, batch, frac, &u));
          mean_union += double(u) / 7;
        }
        int64_t on = 0, masked = 0;
        const Timing ts = measure(threads, 2, o.reps, o.budget_s, readbuf, [&](int r) {
          run_moe(TS_FFN_SPARSE, sets, r);
          for (int t = 0; t < batch; t++) on += active[size_t(t)];
          masked += batch * std::llround(frac * double(kInter));
        });
        // bytes needed: the rows of every neuron some token's mask has (read once for all tokens)
        Result r{"sparse_expert", dname, frac, batch, mean_union / double(kInter), ts.median_s * 1e3,
                 mean_union * double(row_bytes) / ts.median_s / 1e9, ts.read_gbps, dense_ms / (ts.median_s * 1e3)};
        add(r, ts);
        if (double(on) < 0.99 * double(masked))
          std::fprintf(stderr, "note: only %.1f%% of masked neurons had both relus > 0 (their w2 rows are skipped)\n",
                       100.0 * double(on) / double(masked));
      }

      // the predictor: fc1 [r, H] and fc2 [I, r], read in full
      if (!o.has("predictor")) continue;
      std::vector<uint64_t> masks(size_t(batch * W));
      const Timing tp = measure(threads, 2, o.reps, o.budget_s, readbuf, [&](int r) {
        if (ts_predict(b, preds[size_t(r % pcopies)], batch, x.data(), masks.data(), counts.data()) != 0)
          die("ts_predict");
      });
      add(Result{"predictor", dname, 1.0, batch, 1.0, tp.median_s * 1e3, double(pred_bytes) / tp.median_s / 1e9,
                 tp.read_gbps, 0},
          tp);
    }
    for (auto* e : experts) ts_expert_free(e);
    for (auto* p : preds) ts_predictor_free(p);
  }
  if (!o.json_only) std::printf("\n");
  for (const auto& r : results) print_json(r);
  ts_backend_free(b);
  return 0;
}
