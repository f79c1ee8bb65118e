// test_cuda.cc — the CUDA backend: every case of the op table (op_cases.h:
// every op of the C ABI against a double-precision reference, on random inputs
// with sizes that are not multiples of any tile or vector width, every weight
// dtype, sparse and dense-with-mask, outputs poisoned with NaN first so an
// element the GPU never writes fails) on the default CUDA backend; the table's
// small-batch moe cases once more on backends forced onto each FFN path
// (TS_CUDA_FUSED / TS_CUDA_STREAM; the streaming kernel with either reduce tail,
// larger batches split for it or not: TS_CUDA_STREAM_CLUSTER / _SPLIT); and
// weight bytes tracking.
//
// Ends with "N passed, M failed"; exits non-zero on failure. Without a usable
// GPU (or a library built without CUDA) it prints a skip line and exits 0.
// Seed: TS_TEST_SEED (default: from the clock, printed).
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include "op_cases.h"
#include "test_util.h"
#include "turbosparse.h"

using namespace tstest;
using tsops::fmt;

namespace {

void test_bytes(ts_backend* gpu, Rng& rng) {
  const int64_t before = ts_backend_weight_bytes(gpu);
  auto w = tsops::make_mat(rng, 10, 20, TS_F32, 1.f);
  ts_weight* wg = ts_weight_create(gpu, w->host(), TS_BF16);
  const int64_t during = ts_backend_weight_bytes(gpu);
  ts_weight_free(wg);
  const int64_t after = ts_backend_weight_bytes(gpu);
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
  ts_backend* gpu = ts_backend_create("cuda", 0);
  if (!gpu) {
    std::printf("FAIL cannot create the CUDA backend: %s\n0 passed, 1 failed\n", ts_last_error());
    return 1;
  }
  uint64_t seed = uint64_t(std::chrono::steady_clock::now().time_since_epoch().count());
  if (const char* s = std::getenv("TS_TEST_SEED")) seed = std::strtoull(s, nullptr, 10);
  std::printf("test_cuda: %s, seed %llu (TS_TEST_SEED to repeat)\n", ts_backend_describe(gpu), (unsigned long long)seed);
  Rng rng(seed);
  test_bytes(gpu, rng);
  const auto cases = tsops::op_cases();
  tsops::run_cases(gpu, "cuda", cases, seed);
  // the small-batch cases once more on each of the other FFN paths
  struct Path { const char *fused, *stream, *cluster, *split, *what; };
  for (Path path : {Path{"1", "0", "-1", "2", "the fused kernel for sparse and dense"},
                    Path{"0", "1", "-1", "2", "the streaming kernel for sparse and dense"},
                    Path{"0", "0", "-1", "2", "the three kernels for sparse and dense"},
                    Path{"0", "1", "0", "1", "the streaming kernel, group tail, larger batches split in ones"},
                    Path{"0", "1", "8", "2", "the streaming kernel, clusters of 8"},
                    Path{"0", "1", "2", "1", "the streaming kernel, clusters of 2, larger batches split in ones"},
                    Path{"0", "1", "-1", "0", "the streaming kernel, larger batches not split"}}) {
    setenv("TS_CUDA_FUSED", path.fused, 1);
    setenv("TS_CUDA_STREAM", path.stream, 1);
    setenv("TS_CUDA_STREAM_CLUSTER", path.cluster, 1);
    setenv("TS_CUDA_STREAM_SPLIT", path.split, 1);
    ts_backend* forced = ts_backend_create("cuda", 0);
    for (const char* v : {"TS_CUDA_FUSED", "TS_CUDA_STREAM", "TS_CUDA_STREAM_CLUSTER", "TS_CUDA_STREAM_SPLIT"}) unsetenv(v);
    const std::string env = fmt("TS_CUDA_FUSED=%s TS_CUDA_STREAM=%s TS_CUDA_STREAM_CLUSTER=%s TS_CUDA_STREAM_SPLIT=%s",
                                path.fused, path.stream, path.cluster, path.split);
    if (!forced) {
      check(false, "cuda backend with " + env, ts_last_error());
    } else {
      std::printf("-- the small-batch moe cases with %s (%s)\n", env.c_str(), path.what);
      tsops::run_cases(forced, "cuda " + env, cases, seed, tsops::is_small_batch_moe);
      ts_backend_free(forced);
    }
  }
  check(ts_backend_weight_bytes(gpu) == 0, "all weight bytes released");
  ts_backend_free(gpu);
  return finish();
}
