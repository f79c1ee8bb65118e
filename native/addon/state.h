// state.h — who owns native memory, seen from the addon.
//
// A BackendState owns one ts_backend and every handle created through it.
// JS objects (Backend, Weight, ...) hold shared pointers to it; in-flight
// workers do too, so nothing is released under a running op. Everything here
// runs on the JS thread only (workers touch it in their constructor, OnOK and
// OnError), so there are no locks.
//
// Release rules:
//   handle.free()   marks the handle freed (further use throws) and releases
//                   it now, or when the last op using it completes.
//   backend.close() marks the backend and every handle closed; once no op is
//                   in flight it releases the handles in reverse creation
//                   order, then the backend.
//   garbage         when the last JS object and worker referring to a backend
//                   are gone, the destructor does what close() would.
#pragma once
#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <vector>

#include "turbosparse.h"

namespace tsaddon {

enum class HandleKind { Weight, Expert, Predictor, KvCache };

struct BackendState;
class OpWorker;

// One native handle as the addon tracks it.
struct HandleRecord {
  HandleKind kind;
  void* ptr = nullptr;  // ts_weight* / ts_expert* / ... ; null once released
  bool freed = false;   // free() was called or the backend was closed
  int busy = 0;         // in-flight ops that read or write it
  BackendState* owner = nullptr;

  // Shapes, cached at creation so they stay readable after free().
  int64_t rows = 0, cols = 0;             // weight
  int64_t hidden = 0, intermediate = 0;   // expert, predictor
  int64_t rank = 0;                       // predictor
  int64_t layers = 0, max_tokens = 0, kv_heads = 0, head_dim = 0, bytes = 0;  // kv cache
};

struct BackendState {
  explicit BackendState(ts_backend* b);
  ~BackendState();
  BackendState(const BackendState&) = delete;
  BackendState& operator=(const BackendState&) = delete;

  ts_backend* backend;  // null once released
  std::string device;
  std::string description;
  bool closed = false;
  int inflight = 0;  // queued or running workers (ops and create* calls)

  // The C ABI runs one op at a time per backend, so only one worker per
  // backend goes to the libuv pool; the rest wait here, in call order, rather
  // than parking pool threads (shared with fs, dns, zlib) on the backend lock.
  bool worker_running = false;
  std::deque<OpWorker*> waiting;
  // Ops of at most this many rows that find the backend idle run right here on
  // the JS thread (backend.setInlineRows): a one-row op is shorter than the two
  // thread hand-offs of the pool. 0: every op goes to the pool.
  int64_t inline_rows = 0;

  // Takes ownership of a freshly created native handle.
  std::shared_ptr<HandleRecord> Adopt(HandleKind kind, void* ptr);
  // handle.free(): idempotent.
  void Free(HandleRecord& rec);
  // backend.close(): idempotent.
  void Close();

  // Workers bracket their lifetime with these.
  void BeginOp(const std::vector<std::shared_ptr<HandleRecord>>& used);
  void EndOp(const std::vector<std::shared_ptr<HandleRecord>>& used);

 private:
  void Release(HandleRecord& rec);
  void ReleaseAll();
  std::vector<std::shared_ptr<HandleRecord>> live_;  // creation order
};

// ts_weight_free / ts_expert_free / ... by kind.
void FreeNative(HandleKind kind, void* ptr);
const char* KindName(HandleKind kind);

}  // namespace tsaddon
