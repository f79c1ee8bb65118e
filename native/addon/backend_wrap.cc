// backend_wrap.cc — see backend_wrap.h.
#include "backend_wrap.h"

#include <exception>

#include "handles.h"

namespace tsaddon {

Napi::Function BackendWrap::Define(Napi::Env env) {
  return DefineClass(env, "Backend",
                     {
                         InstanceAccessor("device", &BackendWrap::Device, nullptr, napi_enumerable),
                         InstanceAccessor("description", &BackendWrap::Description, nullptr, napi_enumerable),
                         InstanceMethod("weightBytes", &BackendWrap::WeightBytes),
                         InstanceMethod("setVariant", &BackendWrap::SetVariant),
                         InstanceMethod("setInlineRows", &BackendWrap::SetInlineRows),
                         InstanceMethod("createWeight", &BackendWrap::Async<CreateWeight>),
                         InstanceMethod("createExpert", &BackendWrap::Async<CreateExpert>),
                         InstanceMethod("createPredictor", &BackendWrap::Async<CreatePredictor>),
                         InstanceMethod("createKvCache", &BackendWrap::CreateKvCache),
                         InstanceMethod("growKvCache", &BackendWrap::Async<GrowKvCache>),
                         InstanceMethod("copyKvCache", &BackendWrap::Async<CopyKvCache>),
                         InstanceMethod("matmul", &BackendWrap::Async<Matmul>),
                         InstanceMethod("rmsnorm", &BackendWrap::Async<Rmsnorm>),
                         InstanceMethod("rope", &BackendWrap::Async<Rope>),
                         InstanceMethod("routerTopk", &BackendWrap::Async<RouterTopk>),
                         InstanceMethod("predictMany", &BackendWrap::Async<PredictMany>),
                         InstanceMethod("attention", &BackendWrap::Async<Attention>),
                         InstanceMethod("moe", &BackendWrap::Async<Moe>),
                         InstanceMethod("close", &BackendWrap::Close),
                     });
}

Napi::Object BackendWrap::New(Napi::Env env, ts_backend* b) {
  return Data(env).backend.New({Napi::External<ts_backend>::New(env, b)});
}

BackendWrap::BackendWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<BackendWrap>(info) {
  if (info.Length() != 1 || !info[0].IsExternal()) {
    throw Napi::TypeError::New(info.Env(), "Backend cannot be constructed from JS; use createBackend()");
  }
  state_ = std::make_shared<BackendState>(info[0].As<Napi::External<ts_backend>>().Data());
}

void BackendWrap::RequireOpen(const Args& a) const {
  if (state_->closed) a.Fail("the backend is closed; create a new one with createBackend()");
}

// Method names, for messages ("matmul: x has ...").
template <BackendWrap::AsyncOp Op> struct OpName;
template <> struct OpName<CreateWeight> { static constexpr const char* name = "createWeight"; };
template <> struct OpName<CreateExpert> { static constexpr const char* name = "createExpert"; };
template <> struct OpName<CreatePredictor> { static constexpr const char* name = "createPredictor"; };
template <> struct OpName<Matmul> { static constexpr const char* name = "matmul"; };
template <> struct OpName<Rmsnorm> { static constexpr const char* name = "rmsnorm"; };
template <> struct OpName<Rope> { static constexpr const char* name = "rope"; };
template <> struct OpName<RouterTopk> { static constexpr const char* name = "routerTopk"; };
template <> struct OpName<PredictMany> { static constexpr const char* name = "predictMany"; };
template <> struct OpName<Attention> { static constexpr const char* name = "attention"; };
template <> struct OpName<GrowKvCache> { static constexpr const char* name = "growKvCache"; };
template <> struct OpName<CopyKvCache> { static constexpr const char* name = "copyKvCache"; };
template <> struct OpName<Moe> { static constexpr const char* name = "moe"; };

template <BackendWrap::AsyncOp Op>
Napi::Value BackendWrap::Async(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto reject = [&](const Napi::Value& error) {
    auto d = Napi::Promise::Deferred::New(env);
    d.Reject(error);
    return d.Promise();
  };
  try {
    Args a(info, OpName<Op>::name);
    RequireOpen(a);
    return Op(a, state_);
  } catch (const Napi::Error& e) {
    return reject(e.Value());
  } catch (const std::exception& e) {
    return reject(Napi::Error::New(env, std::string(OpName<Op>::name) + ": " + e.what()).Value());
  }
}

Napi::Value BackendWrap::Device(const Napi::CallbackInfo& info) { return Napi::String::New(info.Env(), state_->device); }

Napi::Value BackendWrap::Description(const Napi::CallbackInfo& info) {
  return Napi::String::New(info.Env(), state_->description);
}

Napi::Value BackendWrap::WeightBytes(const Napi::CallbackInfo& info) {
  Args a(info, "weightBytes");
  RequireOpen(a);
  return Napi::Number::New(info.Env(), static_cast<double>(ts_backend_weight_bytes(state_->backend)));
}

Napi::Value BackendWrap::SetVariant(const Napi::CallbackInfo& info) {
  Args a(info, "setVariant");
  RequireOpen(a);
  std::string variant = a.String(info[0], "variant");
  if (ts_backend_set_variant(state_->backend, variant.c_str()) != 0) a.Fail(ts_last_error());
  // The chosen kernel variant is part of the description.
  const char* desc = ts_backend_describe(state_->backend);
  if (desc) state_->description = desc;
  return info.Env().Undefined();
}

Napi::Value BackendWrap::SetInlineRows(const Napi::CallbackInfo& info) {
  Args a(info, "setInlineRows");
  RequireOpen(a);
  state_->inline_rows = a.Int(info[0], "rows", 0);
  return info.Env().Undefined();
}

Napi::Value BackendWrap::CreateKvCache(const Napi::CallbackInfo& info) {
  Args a(info, "createKvCache");
  RequireOpen(a);
  int64_t layers = a.Int(info[0], "layers", 1);
  int64_t max_tokens = a.Int(info[1], "maxTokens", 1);
  int64_t kv_heads = a.Int(info[2], "kvHeads", 1);
  int64_t head_dim = a.Int(info[3], "headDim", 1);
  // dtype (optional, default "f32"): how K/V are stored.
  ts_dtype dtype = info.Length() > 4 && !info[4].IsUndefined() ? a.DType(info[4], "dtype", false) : TS_F32;
  ts_kvcache* c = ts_kvcache_create_typed(state_->backend, layers, max_tokens, kv_heads, head_dim, dtype);
  if (!c) a.Fail(ts_last_error());
  auto rec = state_->Adopt(HandleKind::KvCache, c);
  rec->layers = layers;
  rec->max_tokens = max_tokens;
  rec->kv_heads = kv_heads;
  rec->head_dim = head_dim;
  rec->bytes = ts_kvcache_bytes(c);
  return KvCacheWrap::New(info.Env(), state_, rec);
}

Napi::Value BackendWrap::Close(const Napi::CallbackInfo& info) {
  state_->Close();
  return info.Env().Undefined();
}

}  // namespace tsaddon
