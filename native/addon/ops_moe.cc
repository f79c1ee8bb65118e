// ops_moe.cc — the expert FFN over a batch: one ts_expert_call per JS call
// object, y overwritten, optional per-(call, row) active-neuron counts.
#include "handles.h"
#include "masks.h"
#include "op_worker.h"
#include "ops.h"

namespace tsaddon {

namespace {

class MoeWorker : public OpWorker {
 public:
  using OpWorker::OpWorker;
  ts_ffn_mode mode = TS_FFN_SPARSE;
  int64_t n_rows = 0, hidden = 0;
  const float* x = nullptr;
  std::vector<ts_expert_call> calls;  // masks filled in on the worker thread
  std::vector<MaskBuffer> masks;      // one per call
  float* y = nullptr;
  int32_t* active = nullptr;

 private:
  int Run() override {
    for (size_t c = 0; c < calls.size(); ++c) calls[c].masks = masks[c].In();
    return ts_moe(backend(), mode, n_rows, hidden, x, static_cast<int64_t>(calls.size()), calls.data(), y, active);
  }
};

}  // namespace

// moe(mode, nRows, hidden, x, calls: {expert, rows, weight, masks}[], y, active)
Napi::Value Moe(const Args& a, const StatePtr& s) {
  std::string mode = a.String(a[0], "mode");
  if (mode != "sparse" && mode != "dense") a.RangeFail("mode must be \"sparse\" or \"dense\" (got \"" + mode + "\")");
  int64_t n_rows = a.Int(a[1], "nRows", 0);
  int64_t hidden = a.Int(a[2], "hidden", 1);
  auto x = a.Float32(a[3], "x");
  Napi::Array calls = a.Array(a[4], "calls");
  auto y = a.Float32(a[5], "y");
  ArrayArg<int32_t> active;
  if (!a.IsAbsent(a[6])) active = a.Int32(a[6], "active");
  a.ExpectSize(x, "x", "nRows * hidden", {n_rows, hidden});
  a.ExpectSize(y, "y", "nRows * hidden", {n_rows, hidden});

  auto wk = std::make_unique<MoeWorker>(a.Env(), a.op(), s);
  wk->mode = mode == "sparse" ? TS_FFN_SPARSE : TS_FFN_DENSE_WITH_MASK;
  wk->n_rows = n_rows;
  wk->hidden = hidden;
  wk->x = x.data;
  wk->y = y.data;
  wk->Keep(x);
  wk->Keep(y);
  uint32_t n_calls = calls.Length();
  wk->calls.reserve(n_calls);
  wk->masks.reserve(n_calls);
  int64_t total_rows = 0;
  for (uint32_t c = 0; c < n_calls; ++c) {
    std::string name = "calls[" + std::to_string(c) + "]";
    Napi::Object call = a.Object(calls.Get(c), name);
    auto e = ReadHandle<HandleKind::Expert>(a, call.Get("expert"), name + ".expert", *s);
    if (e->hidden != hidden) {
      a.RangeFail(name + ".expert has hidden size " + std::to_string(e->hidden) + ", but hidden = " +
                  std::to_string(hidden));
    }
    auto rows = a.Int32(call.Get("rows"), name + ".rows");
    auto weight = a.Float32(call.Get("weight"), name + ".weight");
    auto masks = a.Uint8(call.Get("masks"), name + ".masks");
    int64_t n = static_cast<int64_t>(rows.length);
    a.ExpectRows(rows, n_rows, name + ".rows");
    a.ExpectSize(weight, name + ".weight", "rows.length", {n});
    a.ExpectSize(masks, name + ".masks", "rows.length * maskBytes(intermediate)", {n, MaskBytes(e->intermediate)});
    total_rows += n;

    wk->calls.push_back(ts_expert_call{static_cast<const ts_expert*>(e->ptr), n, rows.data, weight.data, nullptr});
    wk->masks.emplace_back(masks.data, masks.length);
    wk->Use(e);
    wk->Keep(rows);
    wk->Keep(weight);
    wk->Keep(masks);
  }
  if (!active.object.IsEmpty()) {
    a.ExpectSize(active, "active", "the total rows over calls", {total_rows});
    wk->active = active.data;
    wk->Keep(active);
  }
  return OpWorker::Start(std::move(wk), n_rows);
}

}  // namespace tsaddon
