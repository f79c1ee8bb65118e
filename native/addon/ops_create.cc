// ops_create.cc — createWeight / createExpert / createPredictor: upload and
// convert (or pack) host matrices on the thread pool, then wrap the new
// native handle in a JS object owned by the backend.
#include <cstring>

#include "../src/dtype.h"  // dtype_size, dtype_name
#include "handles.h"
#include "op_worker.h"
#include "ops.h"

namespace tsaddon {

namespace {

// A HostMatrix argument ({dtype, rows, cols, data: Uint8Array}), checked.
struct HostMatrixArg {
  ts_dtype dtype = TS_F32;
  int64_t rows = 0, cols = 0;
  ArrayArg<uint8_t> data;
};

std::string Shape(int64_t rows, int64_t cols) {
  return "[" + std::to_string(rows) + ", " + std::to_string(cols) + "]";
}

HostMatrixArg ReadHostMatrix(const Args& a, const Napi::Value& v, const std::string& name) {
  Napi::Object o = a.Object(v, name);
  HostMatrixArg m;
  m.dtype = a.DType(o.Get("dtype"), name + ".dtype", /*allow_i8=*/false);
  m.rows = a.Int(o.Get("rows"), name + ".rows", 1);
  m.cols = a.Int(o.Get("cols"), name + ".cols", 1);
  m.data = a.Uint8(o.Get("data"), name + ".data");
  int64_t size = ts::dtype_size(m.dtype);
  int64_t bytes = a.Product({m.rows, m.cols, size}, name + ".rows * " + name + ".cols");
  if (static_cast<int64_t>(m.data.length) != bytes) {
    a.RangeFail(name + ".data has " + std::to_string(m.data.length) + " bytes, expected rows * cols * " +
                std::to_string(size) + " = " + std::to_string(bytes) + " for " + ts::dtype_name(m.dtype) + " " +
                Shape(m.rows, m.cols));
  }
  return m;
}

// A checked host matrix as the C ABI wants it. The bytes are read on the
// worker thread; data not aligned to its element size is copied first.
class SourceMatrix {
 public:
  SourceMatrix() = default;
  explicit SourceMatrix(const HostMatrixArg& m) : arg_(m) {}
  const ts_host_matrix* Get() {
    const uint8_t* data = arg_.data.data;
    const size_t size = size_t(ts::dtype_size(arg_.dtype));
    if (reinterpret_cast<uintptr_t>(data) % size != 0) {
      aligned_.resize((arg_.data.length + 7) / 8);
      std::memcpy(aligned_.data(), data, arg_.data.length);
      data = reinterpret_cast<const uint8_t*>(aligned_.data());
    }
    m_ = ts_host_matrix{arg_.dtype, arg_.rows, arg_.cols, data};
    return &m_;
  }
  void Release() { std::vector<uint64_t>().swap(aligned_); }

 private:
  HostMatrixArg arg_;
  std::vector<uint64_t> aligned_;
  ts_host_matrix m_{};
};

// Base of the create workers: adopts the new handle on the JS thread, or
// frees it when the backend was closed meanwhile.
class CreateWorker : public OpWorker {
 public:
  CreateWorker(Napi::Env env, const char* op, const StatePtr& s, HandleKind kind) : OpWorker(env, op, s), kind_(kind) {}
  ~CreateWorker() override { FreeNative(kind_, created_); }

 protected:
  HandleKind kind_;
  void* created_ = nullptr;  // the new native handle until adopted
  HandleRecord shape_;       // shape fields, filled on the worker thread

  Napi::Value Result() override {
    if (state()->closed) {
      FreeNative(kind_, created_);
      created_ = nullptr;
      throw Napi::Error::New(Env(), std::string(op()) + ": the backend was closed before the " + KindName(kind_) +
                                        " was ready");
    }
    auto rec = state()->Adopt(kind_, created_);
    created_ = nullptr;
    rec->rows = shape_.rows;
    rec->cols = shape_.cols;
    rec->hidden = shape_.hidden;
    rec->intermediate = shape_.intermediate;
    rec->rank = shape_.rank;
    switch (kind_) {
      case HandleKind::Weight: return WeightWrap::New(Env(), state(), rec);
      case HandleKind::Expert: return ExpertWrap::New(Env(), state(), rec);
      case HandleKind::Predictor: return PredictorWrap::New(Env(), state(), rec);
      case HandleKind::KvCache: return KvCacheWrap::New(Env(), state(), rec);
    }
    return Env().Undefined();
  }
};

class CreateWeightWorker : public CreateWorker {
 public:
  CreateWeightWorker(Napi::Env env, const char* op, const StatePtr& s) : CreateWorker(env, op, s, HandleKind::Weight) {}
  SourceMatrix m;
  ts_dtype store = TS_F32;

 private:
  int Run() override {
    auto* w = ts_weight_create(backend(), m.Get(), store);
    m.Release();
    if (!w) return -1;
    created_ = w;
    shape_.rows = ts_weight_rows(w);
    shape_.cols = ts_weight_cols(w);
    return 0;
  }
};

class CreateExpertWorker : public CreateWorker {
 public:
  CreateExpertWorker(Napi::Env env, const char* op, const StatePtr& s) : CreateWorker(env, op, s, HandleKind::Expert) {}
  SourceMatrix w1, w3, w2;
  ts_dtype store = TS_F32;

 private:
  int Run() override {
    auto* e = ts_expert_create(backend(), w1.Get(), w3.Get(), w2.Get(), store);
    w1.Release();
    w3.Release();
    w2.Release();
    if (!e) return -1;
    created_ = e;
    shape_.hidden = ts_expert_hidden(e);
    shape_.intermediate = ts_expert_intermediate(e);
    return 0;
  }
};

class CreatePredictorWorker : public CreateWorker {
 public:
  CreatePredictorWorker(Napi::Env env, const char* op, const StatePtr& s)
      : CreateWorker(env, op, s, HandleKind::Predictor) {}
  SourceMatrix fc1, fc2;
  ts_dtype store = TS_F32;
  // The predictor's input and output widths, for checking predictMany calls.
  void SetWidths(int64_t hidden, int64_t intermediate) {
    shape_.hidden = hidden;
    shape_.intermediate = intermediate;
  }

 private:
  int Run() override {
    auto* p = ts_predictor_create(backend(), fc1.Get(), fc2.Get(), store);
    fc1.Release();
    fc2.Release();
    if (!p) return -1;
    created_ = p;
    shape_.rank = ts_predictor_rank(p);
    return 0;
  }
};

}  // namespace

Napi::Value CreateWeight(const Args& a, const StatePtr& s) {
  HostMatrixArg m = ReadHostMatrix(a, a[0], "m");
  ts_dtype store = a.DType(a[1], "store", /*allow_i8=*/true);
  auto w = std::make_unique<CreateWeightWorker>(a.Env(), a.op(), s);
  w->m = SourceMatrix(m);
  w->store = store;
  w->Keep(m.data);
  return OpWorker::Start(std::move(w));
}

Napi::Value CreateExpert(const Args& a, const StatePtr& s) {
  HostMatrixArg w1 = ReadHostMatrix(a, a[0], "w1");
  HostMatrixArg w3 = ReadHostMatrix(a, a[1], "w3");
  HostMatrixArg w2 = ReadHostMatrix(a, a[2], "w2");
  ts_dtype store = a.DType(a[3], "store", /*allow_i8=*/true);
  // w1 (gate) and w3 (up) are [intermediate, hidden]; w2 (down) is [hidden, intermediate].
  if (w3.rows != w1.rows || w3.cols != w1.cols) {
    a.RangeFail("w3 is " + Shape(w3.rows, w3.cols) + ", expected " + Shape(w1.rows, w1.cols) +
                " like w1 ([intermediate, hidden])");
  }
  if (w2.rows != w1.cols || w2.cols != w1.rows) {
    a.RangeFail("w2 is " + Shape(w2.rows, w2.cols) + ", expected " + Shape(w1.cols, w1.rows) +
                " ([hidden, intermediate], w1 transposed)");
  }
  auto w = std::make_unique<CreateExpertWorker>(a.Env(), a.op(), s);
  w->w1 = SourceMatrix(w1);
  w->w3 = SourceMatrix(w3);
  w->w2 = SourceMatrix(w2);
  w->store = store;
  w->Keep(w1.data);
  w->Keep(w3.data);
  w->Keep(w2.data);
  return OpWorker::Start(std::move(w));
}

Napi::Value CreatePredictor(const Args& a, const StatePtr& s) {
  HostMatrixArg fc1 = ReadHostMatrix(a, a[0], "fc1");
  HostMatrixArg fc2 = ReadHostMatrix(a, a[1], "fc2");
  ts_dtype store = a.DType(a[2], "store", /*allow_i8=*/true);
  // fc1 is [rank, hidden]; fc2 is [intermediate, rank].
  if (fc2.cols != fc1.rows) {
    a.RangeFail("fc2 is " + Shape(fc2.rows, fc2.cols) + ", expected [intermediate, " + std::to_string(fc1.rows) +
                "] (its cols must equal fc1.rows, the predictor rank)");
  }
  auto w = std::make_unique<CreatePredictorWorker>(a.Env(), a.op(), s);
  w->fc1 = SourceMatrix(fc1);
  w->fc2 = SourceMatrix(fc2);
  w->store = store;
  w->Keep(fc1.data);
  w->Keep(fc2.data);
  w->SetWidths(fc1.cols, fc2.rows);
  return OpWorker::Start(std::move(w));
}

}  // namespace tsaddon
