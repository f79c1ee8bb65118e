// args.cc — argument checks shared by every call; see args.h.
#include "args.h"

#include <cmath>

namespace tsaddon {

namespace {
constexpr double kMaxSafeInteger = 9007199254740991.0;  // 2^53 - 1

const char* TypedArrayName(napi_typedarray_type t) {
  switch (t) {
    case napi_int8_array: return "Int8Array";
    case napi_uint8_array: return "Uint8Array";
    case napi_uint8_clamped_array: return "Uint8ClampedArray";
    case napi_int16_array: return "Int16Array";
    case napi_uint16_array: return "Uint16Array";
    case napi_int32_array: return "Int32Array";
    case napi_uint32_array: return "Uint32Array";
    case napi_float32_array: return "Float32Array";
    case napi_float64_array: return "Float64Array";
    case napi_bigint64_array: return "BigInt64Array";
    case napi_biguint64_array: return "BigUint64Array";
    default: return "TypedArray";
  }
}

std::string FormatNumber(double d) {
  if (std::isfinite(d) && d == std::floor(d) && std::fabs(d) < 1e15) return std::to_string(static_cast<int64_t>(d));
  return std::to_string(d);
}

template <typename T>
ArrayArg<T> ReadTyped(const Args& a, const Napi::Value& v, const std::string& name, napi_typedarray_type want) {
  if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != want) {
    a.TypeFail(name + " must be a " + TypedArrayName(want) + " (got " + Describe(v) + ")");
  }
  // napi_get_typedarray_info gives the element pointer directly, also for
  // arrays over a SharedArrayBuffer (which Napi::ArrayBuffer refuses).
  napi_typedarray_type type;
  size_t length = 0;
  void* data = nullptr;
  napi_status st = napi_get_typedarray_info(a.Env(), v, &type, &length, &data, nullptr, nullptr);
  if (st != napi_ok) a.Fail("cannot read " + name);
  ArrayArg<T> out;
  out.object = v.As<Napi::Object>();
  out.length = length;
  out.data = static_cast<T*>(data);
  if (out.data == nullptr && out.length > 0) a.Fail(name + " has no backing memory (was its buffer detached?)");
  return out;
}
}  // namespace

std::string Describe(const Napi::Value& v) {
  if (v.IsUndefined()) return "undefined";
  if (v.IsNull()) return "null";
  if (v.IsTypedArray()) return TypedArrayName(v.As<Napi::TypedArray>().TypedArrayType());
  if (v.IsArray()) return "Array";
  if (v.IsNumber()) return "number " + FormatNumber(v.As<Napi::Number>().DoubleValue());
  if (v.IsString()) return "string \"" + v.As<Napi::String>().Utf8Value() + "\"";
  if (v.IsBoolean()) return "boolean";
  if (v.IsFunction()) return "function";
  if (v.IsArrayBuffer()) return "ArrayBuffer";
  return "object";
}

void Args::TypeFail(const std::string& msg) const {
  throw Napi::TypeError::New(Env(), std::string(op_) + ": " + msg);
}
void Args::RangeFail(const std::string& msg) const {
  throw Napi::RangeError::New(Env(), std::string(op_) + ": " + msg);
}
void Args::Fail(const std::string& msg) const { throw Napi::Error::New(Env(), std::string(op_) + ": " + msg); }

int64_t Args::Int(const Napi::Value& v, const std::string& name, int64_t min) const {
  const char* what = min == 0 ? "a non-negative integer" : min == 1 ? "a positive integer" : "an integer";
  if (!v.IsNumber()) TypeFail(name + " must be " + what + " (got " + Describe(v) + ")");
  double d = v.As<Napi::Number>().DoubleValue();
  if (!std::isfinite(d) || d != std::floor(d) || d < static_cast<double>(min) || d > kMaxSafeInteger) {
    RangeFail(name + " must be " + what + " (got " + FormatNumber(d) + ")");
  }
  return static_cast<int64_t>(d);
}

double Args::Number(const Napi::Value& v, const std::string& name) const {
  if (!v.IsNumber()) TypeFail(name + " must be a number (got " + Describe(v) + ")");
  double d = v.As<Napi::Number>().DoubleValue();
  if (!std::isfinite(d)) RangeFail(name + " must be a finite number (got " + FormatNumber(d) + ")");
  return d;
}

std::string Args::String(const Napi::Value& v, const std::string& name) const {
  if (!v.IsString()) TypeFail(name + " must be a string (got " + Describe(v) + ")");
  return v.As<Napi::String>().Utf8Value();
}

Napi::Object Args::Object(const Napi::Value& v, const std::string& name) const {
  if (!v.IsObject() || v.IsArray() || v.IsTypedArray() || v.IsFunction()) {
    TypeFail(name + " must be an object (got " + Describe(v) + ")");
  }
  return v.As<Napi::Object>();
}

Napi::Array Args::Array(const Napi::Value& v, const std::string& name) const {
  if (!v.IsArray()) TypeFail(name + " must be an Array (got " + Describe(v) + ")");
  return v.As<Napi::Array>();
}

ArrayArg<float> Args::Float32(const Napi::Value& v, const std::string& name) const {
  return ReadTyped<float>(*this, v, name, napi_float32_array);
}
ArrayArg<int32_t> Args::Int32(const Napi::Value& v, const std::string& name) const {
  return ReadTyped<int32_t>(*this, v, name, napi_int32_array);
}
ArrayArg<uint8_t> Args::Uint8(const Napi::Value& v, const std::string& name) const {
  return ReadTyped<uint8_t>(*this, v, name, napi_uint8_array);
}

int64_t Args::Product(std::initializer_list<int64_t> factors, const std::string& what) const {
  int64_t p = 1;
  for (int64_t f : factors) {
    if (__builtin_mul_overflow(p, f, &p) || static_cast<double>(p) > kMaxSafeInteger) RangeFail(what + " is too large");
  }
  return p;
}

void Args::LengthFail(size_t got, int64_t expected, const std::string& name, const std::string& formula,
                      std::initializer_list<int64_t> factors) const {
  std::string why = formula;
  if (factors.size() > 1) {
    why += " =";
    bool first = true;
    for (int64_t f : factors) {
      why += (first ? " " : " * ") + std::to_string(f);
      first = false;
    }
  }
  RangeFail(name + " has " + std::to_string(got) + " elements, expected " + why + " = " + std::to_string(expected));
}

void Args::ExpectRows(const ArrayArg<int32_t>& rows, int64_t n_rows, const std::string& name) const {
  for (size_t j = 0; j < rows.length; ++j) {
    int32_t r = rows.data[j];
    if (r < 0 || r >= n_rows) {
      RangeFail(name + "[" + std::to_string(j) + "] = " + std::to_string(r) + " is not a row of the batch (0 <= row < " +
                std::to_string(n_rows) + ")");
    }
  }
}

ts_dtype Args::DType(const Napi::Value& v, const std::string& name, bool allow_i8) const {
  const char* allowed = allow_i8 ? "\"f32\", \"f16\", \"bf16\" or \"i8\"" : "\"f32\", \"f16\" or \"bf16\"";
  if (!v.IsString()) TypeFail(name + " must be " + allowed + " (got " + Describe(v) + ")");
  std::string s = v.As<Napi::String>().Utf8Value();
  if (s == "f32") return TS_F32;
  if (s == "f16") return TS_F16;
  if (s == "bf16") return TS_BF16;
  if (s == "i8" && allow_i8) return TS_I8;
  RangeFail(name + " must be " + allowed + " (got \"" + s + "\")");
}

}  // namespace tsaddon
