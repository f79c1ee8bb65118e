// args.h — reading and checking JS arguments. Every failure throws a
// Napi::TypeError (wrong kind of value) or Napi::RangeError (wrong size or
// value) whose message starts with the call's name and names the argument,
// e.g. "matmul: x has 10 elements, expected n * w.cols = 3 * 4 = 12".
#pragma once
#include <napi.h>

#include <cstdint>
#include <initializer_list>
#include <string>

#include "turbosparse.h"

namespace tsaddon {

// A typed array argument: where its elements live and the JS object to keep alive.
template <typename T>
struct ArrayArg {
  T* data = nullptr;
  size_t length = 0;  // elements
  Napi::Object object;
};

class Args {
 public:
  Args(const Napi::CallbackInfo& info, const char* op) : info_(info), op_(op) {}

  const char* op() const { return op_; }
  Napi::Env Env() const { return info_.Env(); }
  Napi::Value operator[](size_t i) const { return info_[i]; }

  [[noreturn]] void TypeFail(const std::string& msg) const;
  [[noreturn]] void RangeFail(const std::string& msg) const;
  [[noreturn]] void Fail(const std::string& msg) const;  // plain Error

  // An integer number >= min (and below 2^53).
  int64_t Int(const Napi::Value& v, const std::string& name, int64_t min) const;
  double Number(const Napi::Value& v, const std::string& name) const;
  std::string String(const Napi::Value& v, const std::string& name) const;
  Napi::Object Object(const Napi::Value& v, const std::string& name) const;
  Napi::Array Array(const Napi::Value& v, const std::string& name) const;

  ArrayArg<float> Float32(const Napi::Value& v, const std::string& name) const;
  ArrayArg<int32_t> Int32(const Napi::Value& v, const std::string& name) const;
  ArrayArg<uint8_t> Uint8(const Napi::Value& v, const std::string& name) const;
  bool IsAbsent(const Napi::Value& v) const { return v.IsUndefined() || v.IsNull(); }

  // a * b * ...; RangeError naming `what` if it does not fit in 2^53.
  int64_t Product(std::initializer_list<int64_t> factors, const std::string& what) const;

  // RangeError unless arr has as many elements as the product of `factors`;
  // `formula` names them, e.g. ExpectSize(x, "x", "n * w.cols", {n, cols})
  // fails with "x has 10 elements, expected n * w.cols = 3 * 4 = 12".
  template <typename T>
  void ExpectSize(const ArrayArg<T>& arr, const std::string& name, const std::string& formula,
                  std::initializer_list<int64_t> factors) const {
    int64_t expected = Product(factors, formula);
    if (static_cast<int64_t>(arr.length) != expected) LengthFail(arr.length, expected, name, formula, factors);
  }
  // RangeError unless every row index is in [0, n_rows).
  void ExpectRows(const ArrayArg<int32_t>& rows, int64_t n_rows, const std::string& name) const;

  // ts_dtype from "f32" | "f16" | "bf16" (| "i8" when allow_i8).
  ts_dtype DType(const Napi::Value& v, const std::string& name, bool allow_i8) const;

 private:
  [[noreturn]] void LengthFail(size_t got, int64_t expected, const std::string& name, const std::string& formula,
                               std::initializer_list<int64_t> factors) const;
  const Napi::CallbackInfo& info_;
  const char* op_;
};

// "Float64Array", "Array", "number", "null", ... for messages.
std::string Describe(const Napi::Value& v);
// Bytes of one token's mask row (whole uint64 words), as maskBytes() in core/native.ts.
inline int64_t MaskBytes(int64_t intermediate) { return ts_mask_words(intermediate) * 8; }

}  // namespace tsaddon
