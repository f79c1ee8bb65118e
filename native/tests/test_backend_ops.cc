// test_backend_ops.cc — every case of the op table (op_cases.h) on every
// backend present at run time, as ggml's test-backend-ops: the CPU backend
// (automatic variant), the CPU backend forced onto each kernel variant that runs
// on this CPU (scalar, avx2, avx512), and the CUDA backend when the library was
// built with CUDA and a device is usable (otherwise one line says CUDA cases are
// skipped and why). Each case compares with a double-precision reference, so
// every backend is held to the same stated tolerance on the same inputs.
//
// Usage: test_backend_ops [golden dir (ignored)] ; env TS_TEST_SEED (default 0)
// varies the inputs, TS_TEST_OPS=matmul,moe runs only those ops (tsops::abi_ops), and
// TS_TEST_BACKENDS=cpu,scalar,avx2,avx512,cuda only those backends.
// Prints one line per (backend, case), a summary per backend, and ends with
// "N passed, M failed"; exits non-zero on any failure.
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <set>
#include <sstream>
#include <string>
#include <vector>
#include "op_cases.h"
#include "test_util.h"
#include "turbosparse.h"

namespace {

std::vector<std::string> split(const char* s) {
  std::vector<std::string> out;
  if (!s) return out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ','))
    if (!item.empty()) out.push_back(item);
  return out;
}

bool wanted(const std::vector<std::string>& list, const std::string& name) {
  if (list.empty()) return true;
  for (const auto& x : list)
    if (x == name) return true;
  return false;
}

struct Summary {
  std::string backend;
  int cases = 0, failed = 0;
};

}  // namespace

int main() {
  const uint64_t seed = std::getenv("TS_TEST_SEED") ? std::strtoull(std::getenv("TS_TEST_SEED"), nullptr, 10) : 0;
  const auto ops = split(std::getenv("TS_TEST_OPS"));
  const auto backends = split(std::getenv("TS_TEST_BACKENDS"));
  const auto cases = tsops::op_cases();

  // The table covers every op of the C ABI (and names only ops that exist).
  std::set<std::string> covered;
  for (const auto& c : cases) covered.insert(c.op);
  const auto abi = tsops::abi_ops();
  tstest::check(covered == std::set<std::string>(abi.begin(), abi.end()),
                "the op table covers every op of the C ABI (" + std::to_string(cases.size()) + " cases)");
  auto pick = [&](const tsops::OpCase& c) { return wanted(ops, c.op); };
  int selected = 0;
  for (const auto& c : cases) selected += pick(c);
  std::printf("test_backend_ops: %d cases per backend, seed %llu (TS_TEST_SEED to vary)\n", selected,
              (unsigned long long)seed);

  std::vector<Summary> done;
  auto run_on = [&](ts_backend* b, const std::string& label) {
    std::printf("-- %s: %s\n", label.c_str(), ts_backend_describe(b));
    const int failed = tsops::run_cases(b, label, cases, seed, pick);
    done.push_back({label + " (" + ts_backend_describe(b) + ")", selected, failed});
    tstest::check(ts_backend_weight_bytes(b) == 0, label + " all weight bytes released");
  };

  ts_backend* cpu = ts_backend_create("cpu", 3);
  if (!cpu) {
    std::printf("FAIL cannot create the CPU backend: %s\n0 passed, 1 failed\n", ts_last_error());
    return 1;
  }
  if (wanted(backends, "cpu")) run_on(cpu, "cpu");
  for (const char* v : {"scalar", "avx2", "avx512"}) {
    if (!wanted(backends, v)) continue;
    if (ts_backend_set_variant(cpu, v) != 0) {
      std::printf("skip cpu %s cases: %s\n", v, ts_last_error());
      continue;
    }
    run_on(cpu, std::string("cpu ") + v);
  }
  ts_backend_set_variant(cpu, "auto");
  ts_backend_free(cpu);

  if (wanted(backends, "cuda")) {
    if (!ts_device_available("cuda")) {
      ts_backend* g = ts_backend_create("cuda", 0);  // for the reason
      std::printf("skip cuda cases: %s\n", g ? "ts_device_available(\"cuda\") is 0" : ts_last_error());
      ts_backend_free(g);
    } else if (ts_backend* g = ts_backend_create("cuda", 0)) {
      run_on(g, "cuda");
      ts_backend_free(g);
    } else {
      tstest::check(false, "create the CUDA backend", ts_last_error());
    }
  }

  std::printf("-- summary\n");
  for (const auto& s : done)
    std::printf("%s: %d of %d cases passed\n", s.backend.c_str(), s.cases - s.failed, s.cases);
  return tstest::finish();
}
