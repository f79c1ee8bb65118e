// test_util.h — what the standalone tests (test_kernels.cc, test_cuda.cc) share:
// one printed line per check with pass/fail counts, the seeded random source,
// random vectors, and the closing "N passed, M failed" line and exit code.
#pragma once
#include <cstdint>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

namespace tstest {

inline int g_passed = 0, g_failed = 0;

inline void check(bool ok, const std::string& name, const std::string& detail = "") {
  (ok ? g_passed : g_failed)++;
  std::printf("%s %s%s%s\n", ok ? "ok  " : "FAIL", name.c_str(), detail.empty() ? "" : "  ", detail.c_str());
  std::fflush(stdout);
}

struct Rng {
  std::mt19937_64 g;
  explicit Rng(uint64_t seed = 12345) : g(seed) {}
  float uni(float a, float b) { return std::uniform_real_distribution<float>(a, b)(g); }
  int below(int n) { return int(std::uniform_int_distribution<int>(0, n - 1)(g)); }
  uint64_t bits() { return g(); }
};

inline std::vector<float> rand_vec(Rng& rng, size_t n, float lo, float hi) {
  std::vector<float> v(n);
  for (auto& x : v) x = rng.uni(lo, hi);
  return v;
}

// The last line of a test program; its exit code.
inline int finish() {
  std::printf("%d passed, %d failed\n", g_passed, g_failed);
  return g_failed == 0 ? 0 : 1;
}

}  // namespace tstest
