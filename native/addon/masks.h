// masks.h — predictor masks cross from JS as Uint8Array bytes (rows *
// maskBytes(I)) and are read by the C ABI as uint64 words. Bytes whose
// address is 8-aligned are used in place; others go through an aligned copy.
// Worker thread only.
#pragma once
#include <cstdint>
#include <cstring>
#include <vector>

namespace tsaddon {

class MaskBuffer {
 public:
  MaskBuffer() = default;
  MaskBuffer(uint8_t* bytes, size_t length) : bytes_(bytes), length_(length) {}

  // For masks the kernel reads.
  const uint64_t* In() {
    if (Aligned()) return reinterpret_cast<const uint64_t*>(bytes_);
    copy_.resize(length_ / 8);
    std::memcpy(copy_.data(), bytes_, length_);
    return copy_.data();
  }
  // For masks the kernel writes; call WriteBack() afterwards.
  uint64_t* Out() {
    if (Aligned()) return reinterpret_cast<uint64_t*>(bytes_);
    copy_.assign(length_ / 8, 0);
    return copy_.data();
  }
  void WriteBack() {
    if (!Aligned() && length_ > 0) std::memcpy(bytes_, copy_.data(), length_);
  }

 private:
  bool Aligned() const { return reinterpret_cast<uintptr_t>(bytes_) % alignof(uint64_t) == 0; }
  uint8_t* bytes_ = nullptr;
  size_t length_ = 0;
  std::vector<uint64_t> copy_;
};

}  // namespace tsaddon
