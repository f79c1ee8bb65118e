// op_worker.h — the base of every heavy call: an AsyncWorker that runs one
// ts_* call on the libuv thread pool and settles a Promise.
//
// While it is queued or running it keeps every typed array it reads or writes
// alive (Keep) and marks every handle it uses busy (Use), so free()/close()
// defer the release until it completes. A nonzero return from the C ABI
// rejects the Promise with "<op>: " + ts_last_error(), read on the worker
// thread right after the call (the message is thread-local).
#pragma once
#include <napi.h>

#include <memory>
#include <string>
#include <vector>

#include "args.h"
#include "state.h"

namespace tsaddon {

class OpWorker : public Napi::AsyncWorker {
 public:
  OpWorker(Napi::Env env, const char* op, std::shared_ptr<BackendState> state);

  void Keep(const Napi::Object& o) { keep_.push_back(Napi::Persistent(o)); }
  template <typename T>
  void Keep(const ArrayArg<T>& a) {
    if (!a.object.IsEmpty()) Keep(a.object);
  }
  void Use(std::shared_ptr<HandleRecord> rec) { used_.push_back(std::move(rec)); }

  // Marks the op in flight, queues it (behind the backend's running call, if
  // any) and returns its Promise. The worker deletes itself when done. An op of
  // `rows` rows (>= 0) within the backend's inline_rows that finds the backend
  // idle runs on the JS thread now instead; its Promise is settled on return.
  static Napi::Promise Start(std::unique_ptr<OpWorker> worker, int64_t rows = -1);

 protected:
  // Worker thread: the ts_* call. Return nonzero on failure.
  virtual int Run() = 0;
  // JS thread, after success: the value the Promise resolves with. May throw
  // a Napi::Error to reject instead.
  virtual Napi::Value Result() { return Env().Undefined(); }

  ts_backend* backend() const { return backend_; }
  const std::shared_ptr<BackendState>& state() const { return state_; }
  const char* op() const { return op_; }

 private:
  void Execute() override;
  void OnOK() override;
  void OnError(const Napi::Error& e) override;
  void Finish();

  const char* op_;
  std::shared_ptr<BackendState> state_;
  ts_backend* backend_;  // valid while this op is in flight
  Napi::Promise::Deferred deferred_;
  std::vector<Napi::ObjectReference> keep_;
  std::vector<std::shared_ptr<HandleRecord>> used_;
  bool finished_ = false;
};

}  // namespace tsaddon
