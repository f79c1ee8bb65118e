// handles.h — the JS classes for native handles: Weight, Expert, Predictor,
// KvCache. Each wraps one HandleRecord of its backend; free() releases the
// native memory (idempotent), and the shape getters stay readable afterwards.
// JS cannot construct them; the backend's create* calls do.
#pragma once
#include <napi.h>

#include <memory>
#include <string>

#include "args.h"
#include "state.h"

namespace tsaddon {

// Per-environment constructors (one addon instance per worker thread).
struct AddonData {
  Napi::FunctionReference backend;
  Napi::FunctionReference weight;
  Napi::FunctionReference expert;
  Napi::FunctionReference predictor;
  Napi::FunctionReference kvcache;
  Napi::FunctionReference& Handle(HandleKind kind);
};
AddonData& Data(Napi::Env env);

template <HandleKind K>
class HandleWrap : public Napi::ObjectWrap<HandleWrap<K>> {
 public:
  static Napi::Function Define(Napi::Env env);
  // A new JS object for a record that `state` just adopted.
  static Napi::Object New(Napi::Env env, std::shared_ptr<BackendState> state, std::shared_ptr<HandleRecord> rec);

  explicit HandleWrap(const Napi::CallbackInfo& info);

  std::shared_ptr<BackendState> state;
  std::shared_ptr<HandleRecord> rec;

 private:
  Napi::Value Free(const Napi::CallbackInfo& info);
  template <int64_t HandleRecord::*Field>
  Napi::Value Get(const Napi::CallbackInfo& info) {
    return Napi::Number::New(info.Env(), static_cast<double>((*rec).*Field));
  }
};

using WeightWrap = HandleWrap<HandleKind::Weight>;
using ExpertWrap = HandleWrap<HandleKind::Expert>;
using PredictorWrap = HandleWrap<HandleKind::Predictor>;
using KvCacheWrap = HandleWrap<HandleKind::KvCache>;

// Reads a handle argument of kind K that belongs to `state` and is not freed.
// `name` is the argument as the caller knows it, e.g. "w" or "calls[1].expert".
template <HandleKind K>
std::shared_ptr<HandleRecord> ReadHandle(const Args& a, const Napi::Value& v, const std::string& name,
                                         const BackendState& state);

}  // namespace tsaddon
