// state.cc — native memory ownership for the addon; see state.h.
#include "state.h"

#include <algorithm>

namespace tsaddon {

const char* KindName(HandleKind kind) {
  switch (kind) {
    case HandleKind::Weight: return "weight";
    case HandleKind::Expert: return "expert";
    case HandleKind::Predictor: return "predictor";
    case HandleKind::KvCache: return "kv cache";
  }
  return "handle";
}

void FreeNative(HandleKind kind, void* ptr) {
  if (!ptr) return;
  switch (kind) {
    case HandleKind::Weight: ts_weight_free(static_cast<ts_weight*>(ptr)); break;
    case HandleKind::Expert: ts_expert_free(static_cast<ts_expert*>(ptr)); break;
    case HandleKind::Predictor: ts_predictor_free(static_cast<ts_predictor*>(ptr)); break;
    case HandleKind::KvCache: ts_kvcache_free(static_cast<ts_kvcache*>(ptr)); break;
  }
}

BackendState::BackendState(ts_backend* b) : backend(b) {
  const char* dev = ts_backend_device(b);
  const char* desc = ts_backend_describe(b);
  device = dev ? dev : "";
  description = desc ? desc : device;
}

BackendState::~BackendState() {
  // Workers hold a shared_ptr, so nothing is in flight here.
  closed = true;
  ReleaseAll();
}

std::shared_ptr<HandleRecord> BackendState::Adopt(HandleKind kind, void* ptr) {
  auto rec = std::make_shared<HandleRecord>();
  rec->kind = kind;
  rec->ptr = ptr;
  rec->owner = this;
  live_.push_back(rec);
  return rec;
}

void BackendState::Free(HandleRecord& rec) {
  if (rec.freed) return;
  rec.freed = true;
  // A closed backend releases its handles itself, in order, once idle.
  if (rec.busy == 0 && !closed) Release(rec);
}

void BackendState::Close() {
  if (closed) return;
  closed = true;
  for (auto& rec : live_) rec->freed = true;
  if (inflight == 0) ReleaseAll();
}

void BackendState::BeginOp(const std::vector<std::shared_ptr<HandleRecord>>& used) {
  ++inflight;
  for (auto& rec : used) ++rec->busy;
}

void BackendState::EndOp(const std::vector<std::shared_ptr<HandleRecord>>& used) {
  for (auto& rec : used) {
    --rec->busy;
    if (rec->freed && rec->busy == 0 && rec->ptr && !closed) Release(*rec);
  }
  --inflight;
  if (closed && inflight == 0) ReleaseAll();
}

void BackendState::Release(HandleRecord& rec) {
  FreeNative(rec.kind, rec.ptr);
  rec.ptr = nullptr;
  rec.freed = true;
  auto it = std::find_if(live_.begin(), live_.end(), [&](const auto& r) { return r.get() == &rec; });
  if (it != live_.end()) live_.erase(it);
}

void BackendState::ReleaseAll() {
  // Newest first: a handle never outlives what was created before it.
  while (!live_.empty()) {
    auto rec = live_.back();
    live_.pop_back();
    FreeNative(rec->kind, rec->ptr);
    rec->ptr = nullptr;
    rec->freed = true;
  }
  if (backend) {
    ts_backend_free(backend);
    backend = nullptr;
  }
}

}  // namespace tsaddon
