// moe_device.cuh — device helpers shared by the MoE kernels (moe_kernels.cu, moe_fused.cu).
#pragma once
#include <type_traits>
#include "moe.cuh"

namespace tscuda {
namespace {

// (neurons per warp R, 16-byte chunks per row in flight U) of gate_up for TOK tokens
template <int TOK>
struct GateUpShape {
  static constexpr int R = TOK == 8 ? 2 : 1;
  static constexpr int U = TOK <= 2 ? 8 : TOK == 4 ? 4 : 2;
};
// down: elements per lane load (16 bytes; 8 bytes of I8) and rows in flight per warp
template <int DT>
struct DownVec {
  static constexpr int n = DT == TS_F32 ? 4 : 8;
};

// Block-wide: list[0..cnt) = neurons at positions [pos0, pos0+cnt) of the
// ascending list of set bits of uni[0..W).
__device__ void compact_list(const uint64_t* uni, int W, int pos0, int cnt, int* list, int* s_warp) {
  const int tid = threadIdx.x, nth = blockDim.x, lane = tid & 31, warp = tid >> 5;
  const int per = (W + nth - 1) / nth;
  const int w0 = min(W, tid * per), w1 = min(W, w0 + per);
  int mine = 0;
  for (int w = w0; w < w1; ++w) mine += __popcll(uni[w]);
  int incl = mine;
#pragma unroll
  for (int o = 1; o < 32; o <<= 1) {
    const int v = __shfl_up_sync(0xffffffffu, incl, o);
    if (lane >= o) incl += v;
  }
  if (lane == 31) s_warp[warp] = incl;
  __syncthreads();
  if (warp == 0) {
    int v = lane < (nth >> 5) ? s_warp[lane] : 0;
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
      const int u = __shfl_up_sync(0xffffffffu, v, o);
      if (lane >= o) v += u;
    }
    s_warp[lane] = v;  // inclusive over warps
  }
  __syncthreads();
  int pos = (warp ? s_warp[warp - 1] : 0) + incl - mine;
  const int end = pos0 + cnt;
  for (int w = w0; w < w1 && pos < end; ++w) {
    uint64_t u = uni[w];
    const int c = __popcll(u);
    if (pos + c <= pos0) {
      pos += c;
      continue;
    }
    while (u) {
      const int bit = __ffsll(static_cast<long long>(u)) - 1;
      u &= u - 1;
      if (pos >= pos0 && pos < end) list[pos - pos0] = w * 64 + bit;
      ++pos;
    }
  }
}

// pick(std::integral_constant<int, DT>()) for the stored dtype dt: the one
// switch from a run-time dtype to the DT template argument of the kernels.
template <class Pick>
auto for_dtype(ts_dtype dt, Pick pick) {
  switch (dt) {
    case TS_F32: return pick(std::integral_constant<int, TS_F32>());
    case TS_F16: return pick(std::integral_constant<int, TS_F16>());
    case TS_BF16: return pick(std::integral_constant<int, TS_BF16>());
    default: return pick(std::integral_constant<int, TS_I8>());
  }
}

}  // namespace
}  // namespace tscuda
