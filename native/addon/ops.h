// ops.h — the heavy calls of a Backend. Each reads its arguments in the order
// of core/native.ts, checks them against the shapes (throwing a TypeError or
// RangeError that names the argument), then queues one OpWorker and returns
// its Promise. Backend (backend_wrap.cc) turns a throw into a rejection.
#pragma once
#include <napi.h>

#include <memory>

#include "args.h"
#include "state.h"

namespace tsaddon {

using StatePtr = std::shared_ptr<BackendState>;

// ops_create.cc: weights are converted/packed on the thread pool.
Napi::Value CreateWeight(const Args& a, const StatePtr& s);
Napi::Value CreateExpert(const Args& a, const StatePtr& s);
Napi::Value CreatePredictor(const Args& a, const StatePtr& s);

// ops_dense.cc
Napi::Value Matmul(const Args& a, const StatePtr& s);
Napi::Value Rmsnorm(const Args& a, const StatePtr& s);
Napi::Value Rope(const Args& a, const StatePtr& s);
Napi::Value RouterTopk(const Args& a, const StatePtr& s);

// ops_predict.cc
Napi::Value PredictMany(const Args& a, const StatePtr& s);

// ops_attention.cc
Napi::Value Attention(const Args& a, const StatePtr& s);
Napi::Value GrowKvCache(const Args& a, const StatePtr& s);
Napi::Value CopyKvCache(const Args& a, const StatePtr& s);

// ops_moe.cc
Napi::Value Moe(const Args& a, const StatePtr& s);

}  // namespace tsaddon
