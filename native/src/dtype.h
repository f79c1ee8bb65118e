// dtype.h — element conversions shared by every device (host side).
// f16/bf16 <-> f32 with round-to-nearest-even, done in portable C++ so a
// weight converts to the same bits on every machine and backend.
// Do not include this from files built with SIMD flags (inline functions
// compiled with -mavx512f could be picked by the linker for portable code).
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>
#include "turbosparse.h"

namespace ts {

inline int64_t dtype_size(ts_dtype t) {
  switch (t) {
    case TS_F32: return 4;
    case TS_F16: return 2;
    case TS_BF16: return 2;
    case TS_I8: return 1;
  }
  return 0;
}

inline const char* dtype_name(ts_dtype t) {
  switch (t) {
    case TS_F32: return "f32";
    case TS_F16: return "f16";
    case TS_BF16: return "bf16";
    case TS_I8: return "i8";
  }
  return "?";
}

inline bool is_source_dtype(int t) { return t == TS_F32 || t == TS_F16 || t == TS_BF16; }
inline bool is_store_dtype(int t) { return t == TS_F32 || t == TS_F16 || t == TS_BF16 || t == TS_I8; }

inline float bits_to_f32(uint32_t u) { float f; std::memcpy(&f, &u, 4); return f; }
inline uint32_t f32_to_bits(float f) { uint32_t u; std::memcpy(&u, &f, 4); return u; }

inline float bf16_to_f32(uint16_t h) { return bits_to_f32(uint32_t(h) << 16); }

inline uint16_t f32_to_bf16(float f) {
  uint32_t u = f32_to_bits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return uint16_t((u >> 16) | 0x40);  // quiet NaN
  return uint16_t((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

inline float f16_to_f32(uint16_t h) {
  uint32_t sign = uint32_t(h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1fu;
  uint32_t mant = h & 0x3ffu;
  if (exp == 0) {
    // zero or subnormal: mant * 2^-24 is exact in f32
    float v = float(mant) * 5.9604644775390625e-8f;
    return bits_to_f32(sign | f32_to_bits(v));
  }
  if (exp == 31) return bits_to_f32(sign | 0x7f800000u | (mant << 13));
  return bits_to_f32(sign | ((exp + 112u) << 23) | (mant << 13));
}

inline uint16_t f32_to_f16(float f) {
  uint32_t x = f32_to_bits(f);
  uint32_t sign = (x >> 16) & 0x8000u;
  uint32_t ax = x & 0x7fffffffu;
  if (ax >= 0x7f800000u) return uint16_t(sign | 0x7c00u | (ax > 0x7f800000u ? 0x200u : 0u));
  if (ax > 0x477ff000u) return uint16_t(sign | 0x7c00u);  // rounds to infinity
  if (ax < 0x38800000u) {
    // below the smallest normal: mantissa = round(v * 2^24), exact product, RNE
    uint32_t m = uint32_t(std::nearbyint(bits_to_f32(ax) * 16777216.0f));
    return uint16_t(sign | m);
  }
  uint32_t h = (((ax >> 23) - 112u) << 10) | ((ax >> 13) & 0x3ffu);
  uint32_t rem = ax & 0x1fffu;
  if (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) h++;
  return uint16_t(sign | h);
}

// Element i of a row-major buffer of type t, as f32 (source dtypes and stored F32/F16/BF16).
inline float load_as_f32(const void* data, ts_dtype t, int64_t i) {
  switch (t) {
    case TS_F32: return static_cast<const float*>(data)[i];
    case TS_F16: return f16_to_f32(static_cast<const uint16_t*>(data)[i]);
    case TS_BF16: return bf16_to_f32(static_cast<const uint16_t*>(data)[i]);
    case TS_I8: return float(static_cast<const int8_t*>(data)[i]);
  }
  return 0.f;
}

}  // namespace ts
