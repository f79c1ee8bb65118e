// backend_wrap.h — the JS Backend class: one ts_backend, the handles created
// through it, and every op. Heavy calls return Promises (see ops.h); the
// rest are synchronous.
#pragma once
#include <napi.h>

#include <memory>

#include "args.h"
#include "ops.h"
#include "state.h"

namespace tsaddon {

class BackendWrap : public Napi::ObjectWrap<BackendWrap> {
 public:
  static Napi::Function Define(Napi::Env env);
  // Wraps a freshly created ts_backend (the new object owns it).
  static Napi::Object New(Napi::Env env, ts_backend* b);

  explicit BackendWrap(const Napi::CallbackInfo& info);

  using AsyncOp = Napi::Value (*)(const Args&, const StatePtr&);

 private:
  // Runs an op's argument checks and start; any throw becomes a rejected Promise.
  template <AsyncOp Op>
  Napi::Value Async(const Napi::CallbackInfo& info);
  // Throws "<op>: the backend is closed" after close().
  void RequireOpen(const Args& a) const;

  Napi::Value Device(const Napi::CallbackInfo& info);
  Napi::Value Description(const Napi::CallbackInfo& info);
  Napi::Value WeightBytes(const Napi::CallbackInfo& info);
  Napi::Value SetVariant(const Napi::CallbackInfo& info);
  Napi::Value SetInlineRows(const Napi::CallbackInfo& info);
  Napi::Value CreateKvCache(const Napi::CallbackInfo& info);
  Napi::Value Close(const Napi::CallbackInfo& info);

  StatePtr state_;
};

}  // namespace tsaddon
