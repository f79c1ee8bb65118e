// op_worker.cc — see op_worker.h.
#include "op_worker.h"

#include <exception>

namespace tsaddon {

OpWorker::OpWorker(Napi::Env env, const char* op, std::shared_ptr<BackendState> state)
    : Napi::AsyncWorker(env, op),
      op_(op),
      state_(std::move(state)),
      backend_(state_->backend),
      deferred_(Napi::Promise::Deferred::New(env)) {}

Napi::Promise OpWorker::Start(std::unique_ptr<OpWorker> worker, int64_t rows) {
  OpWorker* w = worker.release();
  BackendState& s = *w->state_;
  s.BeginOp(w->used_);
  Napi::Promise promise = w->deferred_.Promise();
  if (s.worker_running) {
    s.waiting.push_back(w);
  } else if (rows >= 0 && rows <= s.inline_rows) {
    // What the pool would do, on this thread: Execute, then OnOK/OnError (which
    // settle the Promise and hand the backend on), then delete.
    s.worker_running = true;
    Napi::Env env = w->Env();
    w->OnExecute(env);
    w->OnWorkComplete(env, napi_ok);
  } else {
    s.worker_running = true;
    w->Queue();
  }
  return promise;
}

void OpWorker::Execute() {
  int rc;
  try {
    rc = Run();
  } catch (const std::exception& e) {
    SetError(std::string(op_) + ": " + e.what());
    return;
  }
  if (rc != 0) {
    const char* msg = ts_last_error();
    SetError(std::string(op_) + ": " + (msg && *msg ? msg : "failed (no message from the kernel library)"));
  }
}

void OpWorker::Finish() {
  if (finished_) return;
  finished_ = true;
  // Hand the pool slot to the next waiting call of this backend.
  BackendState& s = *state_;
  if (s.waiting.empty()) {
    s.worker_running = false;
  } else {
    OpWorker* next = s.waiting.front();
    s.waiting.pop_front();
    next->Queue();
  }
  s.EndOp(used_);
}

void OpWorker::OnOK() {
  Napi::Env env = Env();
  Napi::HandleScope scope(env);
  Napi::Value result;
  try {
    result = Result();
  } catch (const Napi::Error& e) {
    Finish();
    deferred_.Reject(e.Value());
    return;
  } catch (const std::exception& e) {
    Finish();
    deferred_.Reject(Napi::Error::New(env, std::string(op_) + ": " + e.what()).Value());
    return;
  }
  Finish();
  deferred_.Resolve(result);
}

void OpWorker::OnError(const Napi::Error& e) {
  Napi::HandleScope scope(Env());
  Finish();
  deferred_.Reject(e.Value());
}

}  // namespace tsaddon
