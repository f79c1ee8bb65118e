#include "thread_pool.h"

#include <chrono>
#if defined(__linux__)
#include <sched.h>
#endif
#if defined(__x86_64__) || defined(_M_X64) || defined(__i386__)
#include <immintrin.h>
#define TS_CPU_RELAX() _mm_pause()
#elif defined(__aarch64__)
#define TS_CPU_RELAX() __asm__ __volatile__("yield")
#else
#define TS_CPU_RELAX() ((void)0)
#endif

namespace ts_cpu {

// How long an idle worker spins before it sleeps: long enough to cover the
// gap between the ops of one decode step, short enough not to burn a core.
static constexpr auto kSpinFor = std::chrono::microseconds(300);

int ThreadPool::available_cores() {
#if defined(__linux__)
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof(set), &set) == 0) {
    int n = CPU_COUNT(&set);
    if (n > 0) return n;
  }
#endif
  unsigned n = std::thread::hardware_concurrency();
  return n > 0 ? int(n) : 1;
}

ThreadPool::ThreadPool(int threads) {
  size_ = threads > 0 ? threads : available_cores();
  if (size_ > 256) size_ = 256;
  workers_.reserve(size_ - 1);
  for (int t = 1; t < size_; t++) workers_.emplace_back([this] { worker(); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lk(mu_);
    stop_.store(true);
  }
  wake_.notify_all();
  for (auto& w : workers_) w.join();
}

void ThreadPool::worker() {
  uint64_t seen = 0;
  for (;;) {
    uint64_t g;
    auto spin_start = std::chrono::steady_clock::now();
    unsigned spins = 0;
    while ((g = generation_.load()) == seen && !stop_.load()) {
      if ((++spins & 255u) != 0) {
        TS_CPU_RELAX();
        continue;
      }
      // give the core away now and then: if another thread of ours (or anyone)
      // waits for this core, spinning on it would stall both for a time slice
      std::this_thread::yield();
      if (std::chrono::steady_clock::now() - spin_start < kSpinFor) continue;
      std::unique_lock<std::mutex> lk(mu_);
      sleeping_.fetch_add(1);
      wake_.wait(lk, [&] { return generation_.load() != seen || stop_.load(); });
      sleeping_.fetch_sub(1);
      spin_start = std::chrono::steady_clock::now();
    }
    if (stop_.load()) return;
    seen = g;
    // the region now current (claim_ is published before generation_ moves), which may
    // be later than g if this thread was not scheduled for a while: then it helps that one
    run_shares(claim_.load(std::memory_order_acquire) >> kShareBits);
  }
}

void ThreadPool::run_shares(uint64_t region) {
  uint64_t c = claim_.load(std::memory_order_acquire);
  for (;;) {
    if ((c >> kShareBits) != region) return;
    int share = int(c & ((uint64_t(1) << kShareBits) - 1));
    if (share >= size_) return;
    // acquire: job_/ctx_ were written before the region was published; they stay until
    // every claimed share is finished (pending_), so this share's run reads them safely
    if (!claim_.compare_exchange_weak(c, c + 1, std::memory_order_acq_rel, std::memory_order_acquire)) continue;
    job_(ctx_, share);
    pending_.fetch_sub(1, std::memory_order_release);
    c = claim_.load(std::memory_order_acquire);
  }
}

void ThreadPool::run_raw(Job job, void* ctx) {
  if (size_ == 1) {
    job(ctx, 0);
    return;
  }
  job_ = job;
  ctx_ = ctx;
  pending_.store(size_, std::memory_order_relaxed);
  region_++;
  claim_.store(region_ << kShareBits, std::memory_order_release);
  generation_.fetch_add(1);  // seq_cst: pairs with the sleepers' check (see worker)
  if (sleeping_.load() > 0) {
    std::lock_guard<std::mutex> lk(mu_);
    wake_.notify_all();
  }
  run_shares(region_);
  // wait for the shares other threads claimed: spin briefly, then yield so that a
  // worker sharing this core (a busy machine) gets to finish instead of waiting out our slice
  for (unsigned spins = 0; pending_.load(std::memory_order_acquire) != 0; spins++) {
    if (spins < 2048) TS_CPU_RELAX();
    else std::this_thread::yield();
  }
}

}  // namespace ts_cpu
