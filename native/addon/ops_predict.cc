// ops_predict.cc — predictMany: several activation predictors over one batch,
// each over its own rows (one per routed expert), writing mask bytes.
#include "handles.h"
#include "masks.h"
#include "op_worker.h"
#include "ops.h"

namespace tsaddon {

namespace {

class PredictManyWorker : public OpWorker {
 public:
  using OpWorker::OpWorker;
  int64_t n_rows = 0, hidden = 0;
  const float* x = nullptr;
  std::vector<ts_predict_call> calls;  // masks filled in on the worker thread
  std::vector<MaskBuffer> masks;       // one per call

 private:
  int Run() override {
    for (size_t c = 0; c < calls.size(); ++c) calls[c].masks = masks[c].Out();
    int rc = ts_predict_many(backend(), n_rows, hidden, x, static_cast<int64_t>(calls.size()), calls.data());
    for (auto& m : masks) m.WriteBack();
    return rc;
  }
};

}  // namespace

// predictMany(nRows, hidden, x, calls: {predictor, rows, masks, counts?}[])
Napi::Value PredictMany(const Args& a, const StatePtr& s) {
  int64_t n_rows = a.Int(a[0], "nRows", 0);
  int64_t hidden = a.Int(a[1], "hidden", 1);
  auto x = a.Float32(a[2], "x");
  Napi::Array calls = a.Array(a[3], "calls");
  a.ExpectSize(x, "x", "nRows * hidden", {n_rows, hidden});

  auto wk = std::make_unique<PredictManyWorker>(a.Env(), a.op(), s);
  wk->n_rows = n_rows;
  wk->hidden = hidden;
  wk->x = x.data;
  wk->Keep(x);
  uint32_t n_calls = calls.Length();
  wk->calls.reserve(n_calls);
  wk->masks.reserve(n_calls);
  for (uint32_t c = 0; c < n_calls; ++c) {
    std::string name = "calls[" + std::to_string(c) + "]";
    Napi::Object call = a.Object(calls.Get(c), name);
    auto p = ReadHandle<HandleKind::Predictor>(a, call.Get("predictor"), name + ".predictor", *s);
    if (p->hidden != hidden) {
      a.RangeFail(name + ".predictor reads hidden size " + std::to_string(p->hidden) + ", but hidden = " +
                  std::to_string(hidden));
    }
    auto rows = a.Int32(call.Get("rows"), name + ".rows");
    auto masks = a.Uint8(call.Get("masks"), name + ".masks");
    Napi::Value counts_v = call.Get("counts");
    ArrayArg<int32_t> counts;
    if (!a.IsAbsent(counts_v)) counts = a.Int32(counts_v, name + ".counts");
    int64_t n = static_cast<int64_t>(rows.length);
    a.ExpectRows(rows, n_rows, name + ".rows");
    a.ExpectSize(masks, name + ".masks", "rows.length * maskBytes(intermediate)", {n, MaskBytes(p->intermediate)});
    if (!counts.object.IsEmpty()) a.ExpectSize(counts, name + ".counts", "rows.length", {n});

    wk->calls.push_back(ts_predict_call{static_cast<const ts_predictor*>(p->ptr), n, rows.data, nullptr,
                                        counts.object.IsEmpty() ? nullptr : counts.data});
    wk->masks.emplace_back(masks.data, masks.length);
    wk->Use(p);
    wk->Keep(rows);
    wk->Keep(masks);
    wk->Keep(counts);
  }
  return OpWorker::Start(std::move(wk));
}

}  // namespace tsaddon
