// backend.cc — the CPU device: vtable, construction, kernel variant choice.
// The variant (scalar / avx2 / avx512) is picked from the CPU's features at
// run time; nothing is built with -march=native (see cmake/simd.cmake).
#include <cstring>
#include <new>
#include <string>
#include "cpu_backend.h"

namespace ts_cpu {
namespace {

bool cpu_has_avx2() {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
#else
  return false;
#endif
}

bool cpu_has_avx512() {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  __builtin_cpu_init();
  return cpu_has_avx2() && __builtin_cpu_supports("avx512f");
#else
  return false;
#endif
}

// The kernels for a variant name, or nullptr (with the reason) if it cannot run here.
const KernelSet* kernels_for(const char* variant, std::string* why) {
  if (std::strcmp(variant, "scalar") == 0) return scalar_kernels();
  if (std::strcmp(variant, "avx2") == 0) {
    if (!avx2_kernels()) return *why = "the avx2 variant is not built into this library (not x86-64)", nullptr;
    if (!cpu_has_avx2()) return *why = "this CPU lacks AVX2/FMA/F16C", nullptr;
    return avx2_kernels();
  }
  if (std::strcmp(variant, "avx512") == 0) {
    if (!avx512_kernels()) return *why = "the avx512 variant is not built into this library (not x86-64)", nullptr;
    if (!cpu_has_avx512()) return *why = "this CPU lacks AVX-512F", nullptr;
    return avx512_kernels();
  }
  if (std::strcmp(variant, "auto") == 0) {
    if (avx512_kernels() && cpu_has_avx512()) return avx512_kernels();
    if (avx2_kernels() && cpu_has_avx2()) return avx2_kernels();
    return scalar_kernels();
  }
  *why = std::string("unknown CPU variant '") + variant + "' (use scalar, avx2, avx512 or auto)";
  return nullptr;
}

void describe(CpuBackend* b) {
  int n = b->pool.size();
  b->description = std::string("cpu ") + b->kernels->name + " (" + std::to_string(n) + (n == 1 ? " thread)" : " threads)");
}

void destroy(ts_backend* b) { delete cpu(b); }

int set_variant(ts_backend* b, const char* variant) {
  std::string why;
  const KernelSet* k = kernels_for(variant, &why);
  if (!k) return ts_fail("ts_backend_set_variant: " + why);
  cpu(b)->kernels = k;
  describe(cpu(b));
  return 0;
}

const ts_backend_ops kCpuOps = {
    "cpu",          destroy,          set_variant,      weight_create, weight_free,
    expert_create,  expert_free,      predictor_create, predictor_free, kvcache_create,
    kvcache_free,   kvcache_grow,     kvcache_copy,     matmul,           rmsnorm,          rope,          router_topk,
    predict_many,   attention,        moe,
};

}  // namespace
}  // namespace ts_cpu

ts_backend* ts_cpu_backend_create(int threads) {
  using namespace ts_cpu;
  CpuBackend* b = nullptr;
  try {
    b = new CpuBackend(threads);
  } catch (const std::exception& e) {
    ts_fail(std::string("cannot start the CPU backend: ") + e.what());
    return nullptr;
  }
  b->ops = &kCpuOps;
  std::string why;
  b->kernels = kernels_for("auto", &why);
  b->scratch.resize(size_t(b->pool.size()));
  describe(b);
  return b;
}
