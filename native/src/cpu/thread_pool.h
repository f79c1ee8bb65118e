// thread_pool.h — the CPU backend's own workers. run(f) calls f(share) once for
// every share 0..size()-1 and returns when all are done; an op is a few such
// parallel regions. A share goes to whichever thread claims it first (the caller
// claims too), so a worker that the OS has not scheduled yet (nodes and the
// coordinator sharing a machine's cores) delays nothing: the running threads take
// its share. The split is by share, not by thread, so results do not depend on who
// ran what. Workers spin briefly between regions (an op is ~1 ms, a sleep/wake is
// tens of microseconds), then sleep. No allocation per region: the job is a
// function pointer and a context pointer.
#pragma once
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <thread>
#include <vector>

namespace ts_cpu {

class ThreadPool {
 public:
  explicit ThreadPool(int threads);  // total threads including the caller; <= 0 = all cores
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const { return size_; }

  template <class F>
  void run(F& f) {
    run_raw([](void* ctx, int tid) { (*static_cast<F*>(ctx))(tid); }, &f);
  }

  // Like run(f), but a region of little work (`macs` multiply-adds, about) runs every
  // share on the caller: waking the workers costs more than such a region
  // (tens of microseconds under load). Same split, so the same results.
  template <class F>
  void run(F& f, double macs) {
    if (size_ == 1 || macs < kInlineMacs) {
      for (int tid = 0; tid < size_; tid++) f(tid);
    } else {
      run(f);
    }
  }
  static constexpr double kInlineMacs = 1 << 19;

  // Cores this process may run on (affinity mask), at least 1.
  static int available_cores();

 private:
  using Job = void (*)(void* ctx, int tid);
  void run_raw(Job job, void* ctx);
  void worker();
  // Claims and runs shares of region `region` until none is left (or a later region began).
  void run_shares(uint64_t region);

  int size_;
  std::vector<std::thread> workers_;
  Job job_ = nullptr;
  void* ctx_ = nullptr;
  std::atomic<uint64_t> generation_{0};  // bumped per region; sleepers wait on it
  // The current region in the high bits, the next unclaimed share in the low kShareBits:
  // one compare-and-swap claims a share of exactly that region.
  static constexpr int kShareBits = 16;
  std::atomic<uint64_t> claim_{0};
  uint64_t region_ = 0;  // the caller's count of regions
  std::atomic<int> pending_{0};  // shares of the current region not finished yet
  std::atomic<bool> stop_{false};
  std::mutex mu_;
  std::condition_variable wake_;
  std::atomic<int> sleeping_{0};
};

// Even split of [0, total) into `parts` ranges, each boundary a multiple of `align`.
inline void split_range(int64_t total, int parts, int part, int64_t align, int64_t* begin, int64_t* end) {
  int64_t units = (total + align - 1) / align;
  int64_t b = units * part / parts, e = units * (part + 1) / parts;
  *begin = b * align < total ? b * align : total;
  *end = e * align < total ? e * align : total;
}

}  // namespace ts_cpu
