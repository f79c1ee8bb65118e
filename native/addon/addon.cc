// addon.cc — registration of the turbosparse Node addon and its module
// functions: version(), deviceAvailable(device), createBackend(device, threads).
// The TypeScript surface is core/native.ts.
#include <napi.h>

#include "args.h"
#include "backend_wrap.h"
#include "handles.h"

namespace tsaddon {

namespace {

Napi::Value Version(const Napi::CallbackInfo& info) {
  const char* v = ts_version();
  return Napi::String::New(info.Env(), v ? v : "");
}

std::string ReadDevice(const Args& a, const Napi::Value& v, bool allow_auto) {
  const char* allowed = allow_auto ? "\"cpu\", \"cuda\" or \"auto\"" : "\"cpu\" or \"cuda\"";
  if (!v.IsString()) a.TypeFail(std::string("device must be ") + allowed + " (got " + Describe(v) + ")");
  std::string d = v.As<Napi::String>().Utf8Value();
  if (d != "cpu" && d != "cuda" && !(allow_auto && d == "auto")) {
    a.RangeFail(std::string("device must be ") + allowed + " (got \"" + d + "\")");
  }
  return d;
}

Napi::Value DeviceAvailable(const Napi::CallbackInfo& info) {
  Args a(info, "deviceAvailable");
  std::string device = ReadDevice(a, info[0], /*allow_auto=*/false);
  return Napi::Boolean::New(info.Env(), ts_device_available(device.c_str()) != 0);
}

Napi::Value CreateBackend(const Napi::CallbackInfo& info) {
  Args a(info, "createBackend");
  std::string device = ReadDevice(a, info[0], /*allow_auto=*/true);
  int64_t threads = a.Int(info[1], "threads", 0);
  if (threads > 4096) a.RangeFail("threads must be at most 4096 (got " + std::to_string(threads) + ")");
  ts_backend* b = ts_backend_create(device.c_str(), static_cast<int>(threads));
  if (!b) a.Fail(ts_last_error());
  return BackendWrap::New(info.Env(), b);
}

}  // namespace

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  auto* data = new AddonData();
  env.SetInstanceData(data);  // deleted with the environment
  data->backend = Napi::Persistent(BackendWrap::Define(env));
  data->weight = Napi::Persistent(WeightWrap::Define(env));
  data->expert = Napi::Persistent(ExpertWrap::Define(env));
  data->predictor = Napi::Persistent(PredictorWrap::Define(env));
  data->kvcache = Napi::Persistent(KvCacheWrap::Define(env));

  exports.Set("version", Napi::Function::New(env, Version, "version"));
  exports.Set("deviceAvailable", Napi::Function::New(env, DeviceAvailable, "deviceAvailable"));
  exports.Set("createBackend", Napi::Function::New(env, CreateBackend, "createBackend"));
  return exports;
}

}  // namespace tsaddon

static Napi::Object InitAddon(Napi::Env env, Napi::Object exports) { return tsaddon::Init(env, exports); }
NODE_API_MODULE(turbosparse_addon, InitAddon)
