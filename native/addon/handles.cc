// handles.cc — Weight, Expert, Predictor and KvCache JS classes; see handles.h.
#include "handles.h"

namespace tsaddon {

namespace {
// JS class name and the create call that makes it, per kind.
template <HandleKind K> struct Names;
template <> struct Names<HandleKind::Weight> {
  static constexpr const char* cls = "Weight";
  static constexpr const char* maker = "backend.createWeight()";
};
template <> struct Names<HandleKind::Expert> {
  static constexpr const char* cls = "Expert";
  static constexpr const char* maker = "backend.createExpert()";
};
template <> struct Names<HandleKind::Predictor> {
  static constexpr const char* cls = "Predictor";
  static constexpr const char* maker = "backend.createPredictor()";
};
template <> struct Names<HandleKind::KvCache> {
  static constexpr const char* cls = "KvCache";
  static constexpr const char* maker = "backend.createKvCache()";
};

// What the native side passes to a handle's constructor.
struct HandleInit {
  std::shared_ptr<BackendState> state;
  std::shared_ptr<HandleRecord> rec;
};
}  // namespace

Napi::FunctionReference& AddonData::Handle(HandleKind kind) {
  switch (kind) {
    case HandleKind::Weight: return weight;
    case HandleKind::Expert: return expert;
    case HandleKind::Predictor: return predictor;
    case HandleKind::KvCache: return kvcache;
  }
  return weight;
}

AddonData& Data(Napi::Env env) { return *env.GetInstanceData<AddonData>(); }

template <HandleKind K>
Napi::Function HandleWrap<K>::Define(Napi::Env env) {
  using W = HandleWrap<K>;
  std::vector<typename W::PropertyDescriptor> props = {W::InstanceMethod("free", &W::Free)};
  switch (K) {
    case HandleKind::Weight:
      props.push_back(W::InstanceAccessor("rows", &W::template Get<&HandleRecord::rows>, nullptr, napi_enumerable));
      props.push_back(W::InstanceAccessor("cols", &W::template Get<&HandleRecord::cols>, nullptr, napi_enumerable));
      break;
    case HandleKind::Expert:
      props.push_back(W::InstanceAccessor("hidden", &W::template Get<&HandleRecord::hidden>, nullptr, napi_enumerable));
      props.push_back(
          W::InstanceAccessor("intermediate", &W::template Get<&HandleRecord::intermediate>, nullptr, napi_enumerable));
      break;
    case HandleKind::Predictor:
      props.push_back(W::InstanceAccessor("rank", &W::template Get<&HandleRecord::rank>, nullptr, napi_enumerable));
      break;
    case HandleKind::KvCache:
      props.push_back(W::InstanceAccessor("bytes", &W::template Get<&HandleRecord::bytes>, nullptr, napi_enumerable));
      props.push_back(
          W::InstanceAccessor("maxTokens", &W::template Get<&HandleRecord::max_tokens>, nullptr, napi_enumerable));
      break;
  }
  return W::DefineClass(env, Names<K>::cls, props);
}

template <HandleKind K>
Napi::Object HandleWrap<K>::New(Napi::Env env, std::shared_ptr<BackendState> state,
                                std::shared_ptr<HandleRecord> rec) {
  HandleInit init{std::move(state), std::move(rec)};
  return Data(env).Handle(K).New({Napi::External<HandleInit>::New(env, &init)});
}

template <HandleKind K>
HandleWrap<K>::HandleWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<HandleWrap<K>>(info) {
  if (info.Length() != 1 || !info[0].IsExternal()) {
    throw Napi::TypeError::New(info.Env(), std::string(Names<K>::cls) + " cannot be constructed from JS; use " +
                                               Names<K>::maker);
  }
  auto* init = info[0].As<Napi::External<HandleInit>>().Data();
  state = init->state;
  rec = init->rec;
}

template <HandleKind K>
Napi::Value HandleWrap<K>::Free(const Napi::CallbackInfo& info) {
  state->Free(*rec);
  return info.Env().Undefined();
}

template <HandleKind K>
std::shared_ptr<HandleRecord> ReadHandle(const Args& a, const Napi::Value& v, const std::string& name,
                                         const BackendState& state) {
  auto& ctor = Data(a.Env()).Handle(K);
  if (!v.IsObject() || !v.As<Napi::Object>().InstanceOf(ctor.Value())) {
    a.TypeFail(name + " must be a " + Names<K>::cls + " from " + Names<K>::maker + " (got " + Describe(v) + ")");
  }
  auto* w = HandleWrap<K>::Unwrap(v.As<Napi::Object>());
  if (w == nullptr || !w->rec) a.TypeFail(name + " is not an initialised " + Names<K>::cls);
  if (w->rec->owner != &state) a.Fail(name + " belongs to a different backend");
  if (w->rec->freed) {
    a.Fail(name + " was freed (free() was called on it); create a new " + KindName(K));
  }
  return w->rec;
}

template class HandleWrap<HandleKind::Weight>;
template class HandleWrap<HandleKind::Expert>;
template class HandleWrap<HandleKind::Predictor>;
template class HandleWrap<HandleKind::KvCache>;
template std::shared_ptr<HandleRecord> ReadHandle<HandleKind::Weight>(const Args&, const Napi::Value&,
                                                                      const std::string&, const BackendState&);
template std::shared_ptr<HandleRecord> ReadHandle<HandleKind::Expert>(const Args&, const Napi::Value&,
                                                                      const std::string&, const BackendState&);
template std::shared_ptr<HandleRecord> ReadHandle<HandleKind::Predictor>(const Args&, const Napi::Value&,
                                                                         const std::string&, const BackendState&);
template std::shared_ptr<HandleRecord> ReadHandle<HandleKind::KvCache>(const Args&, const Napi::Value&,
                                                                       const std::string&, const BackendState&);

}  // namespace tsaddon
