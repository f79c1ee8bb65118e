// moe.cuh — what the MoE FFN's host code (moe.cu) and its kernels (moe_kernels.cu:
// the three-kernel path; moe_fused.cu: the one-launch paths) share: the
// argument structs, the launch shapes, and the selectors from a run-time
// (dtype, tokens per pass) to a kernel. moe.cu explains the paths.
#pragma once
#include "common.cuh"

namespace tscuda {

// One expert call, as the kernels see it.
struct MoeCall {
  const char* w13;         // [2I][ldH]
  const float* s13;        // [2I] I8 scales
  const char* w2t;         // [I][ldH]
  const float* s2;         // [I]
  const uint64_t* masks;   // [n][W]
  const uint64_t* uni;     // [W] union of the masks (bits < I only)
  const int* rows;         // [n] rows of x
  const uint32_t* slist;   // streaming kernel: [K] neuron | token bits << 24, made on the host
  long long list_off;      // this call's first entry in idx
  long long hv_off;        // ... and in hv (floats)
  int I, W, n, npad;       // npad: h row length (n rounded up to the token pass, >= 4)
  int K;                   // list length (popcount of the union; I when dense)
  int gx;                  // gate_up blocks along x for this call
  int q0;                  // index of (this call, token 0) among all (call, token) pairs
  int prefetch;            // gate_up prefetches active down rows into L2
};

struct MoeArgs {
  const MoeCall* calls;  // this launch's calls (grid.y)
  const float* x;        // [n_rows][ldH]
  int* idx;              // list: neuron of entry k
  float* hv;             // h[k][t]
  int* blk_active;       // [pairs][gxs] active counts of each gate_up block
  float* partials;       // [pairs][S][ldH]
  int ldH, S, gxs, dense;
};

struct MoeContrib {
  int q;      // (call, token) pair
  float w;    // routing weight
  int gx;     // gate_up blocks that counted its active neurons
  int pad;
};

struct MoeCombineArgs {
  const int* row_start;   // [n_rows + 1] into contribs (call order within a row)
  const MoeContrib* contribs;
  const float* partials;
  const int* blk_active;
  float* y;               // [n_rows][H]
  int* active;            // [pairs]
  int H, ldH, S, gxs;
};

struct MoeFusedArgs {
  MoeArgs a;
  MoeCombineArgs c;
  unsigned* bar;          // [2] grid barrier: arrivals (0 between uses), generation
  int n_rows, pairs, max_contrib;
};

}  // namespace tscuda
#include "moe_stream.cuh"
namespace tscuda {

constexpr int kThreads = 256;       // per block of gate_up and down
constexpr int kCombineThreads = 128;
constexpr int kMaxList = 4096;      // list entries one gate_up block may hold
constexpr int kMaxSplits = 32;
constexpr int kFusedMaxLd = 4096;   // widest hidden row the fused kernel takes

using MoeKernel = void (*)(MoeArgs);
using FusedKernel = void (*)(MoeFusedArgs);
using StreamKernel = void (*)(MoeStreamArgs);
using CombineKernel = void (*)(MoeCombineArgs);

// The kernel for a call group of dtype dt with tok tokens per pass.
StreamKernel stream_kernel(ts_dtype dt, int tok);    // moe_fused.cu
FusedKernel fused_kernel(ts_dtype dt, int tok);      // moe_fused.cu
MoeKernel gate_up_kernel(ts_dtype dt, int tok);      // moe_kernels.cu
MoeKernel down_kernel(ts_dtype dt, int tok);         // moe_kernels.cu
CombineKernel combine_kernel();                      // moe_kernels.cu
inline int down_lane_elems(ts_dtype dt) { return dt == TS_F32 ? 4 : 8; }

}  // namespace tscuda
