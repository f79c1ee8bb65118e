// cuda_internal.h — what the CUDA backend offers beyond the vtable: device-resident
// "frames" of an expert FFN or predictor call, for the standalone GPU bench
// (native/bench/gpu_bench.cc) to time by CUDA-graph replay without PCIe in the
// loop, and a few tuning knobs. Host-only C++ (no CUDA syntax): plain .cc files
// include it. Only meaningful when the library is built with TS_HAVE_CUDA.
#pragma once
#include <cuda_runtime_api.h>
#include <cstdint>
#include "../backend.h"

namespace tscuda {

// Knobs the bench flips to compare variants; defaults are what the library uses.
struct Tuning {
  bool pdl = true;        // programmatic dependent launch (sm_90+): the next kernel's launch overlaps this one's tail
  bool prefetch = false;  // sparse FFN: the gate/up kernel prefetches the active down rows into L2 (measured
                          // 0.6 us slower at batch 1, 10%, on an H200 in two runs: off by default)
  int down_splits = 0;    // sparse/dense FFN: K-splits of the down kernel (0 = chosen from the SM count)
  int ffn_stages = 3;     // bench breakdown only: launch the first 1 (gate_up), 2 (+down) or 3 (+combine) kernels;
                          // the streaming kernel stops after its copies and compute (1), its partial rows (2)
  int fused = -1;         // FFN of batches <= 2 (one dtype, hidden <= 4096) in one kernel (gate/up, down, grid
                          // barrier, fixed-order reduce) instead of gate_up + down + combine: 1 always, 0 never,
                          // -1 dense-with-mask only (faster there on an H200, 2026-11-28; no faster when sparse)
  int fused_bps = 2;      // fused FFN: blocks per SM (capped by occupancy; all blocks must be co-resident)
  int stream = -1;        // FFN of batches <= 2 (one dtype, hidden <= 4096) in the streaming kernel (rows copied
                          // asynchronously into a ring of shared-memory slots, reduce without a grid barrier,
                          // moe_stream.cuh): 1 always, 0 never, -1 sparse only; it goes before the fused kernel
  int stream_slots = 3;   // streaming FFN: neurons (gate, up and down rows) in flight per block
  int stream_bps = 1;     // streaming FFN: blocks per SM per call (1 leaves room for the next call's blocks)
  int stream_blocks = 0;  // streaming FFN: blocks per launch instead (bench: fewer, longer blocks; 0: stream_bps per SM)
  int stream_split = 2;   // streaming FFN of calls of more tokens (batches of <= 16 rows): every call split into calls
                          // of this many tokens (1 or 2), all in one launch; 0: such batches take the three kernels.
                          // H200, bf16, 10%, batch 8: 2.50x the floor with three kernels, 1.41x split in twos
  int stream_cluster = -1; // streaming FFN: blocks per thread-block cluster of its cluster tail (1-8, sm_90+; partial
                          // rows summed through distributed shared memory), 0: the group tail, -1: clusters of 4 for
                          // calls of one token, else the group tail (H200: 3-7% faster at batch 1, slower at 2)
};
Tuning get_tuning(ts_backend* b);
void set_tuning(ts_backend* b, const Tuning& t);

// The backend's stream (every op of the backend runs on it; capture it for graphs).
cudaStream_t backend_stream(ts_backend* b);
int backend_sm_count(ts_backend* b);

// One ts_moe call whose inputs (x, rows, weights, masks) were uploaded once into
// device memory owned by the frame. enqueue only launches kernels on the backend
// stream (capturable into a CUDA graph); read waits and copies y / active out.
struct MoeFrame;
MoeFrame* moe_frame_create(ts_backend* b, ts_ffn_mode mode, int64_t n_rows, int64_t hidden, const float* x,
                           int64_t n_calls, const ts_expert_call* calls);
int moe_frame_enqueue(ts_backend* b, MoeFrame* f);
int moe_frame_read(ts_backend* b, MoeFrame* f, float* y, int32_t* active);
// Fill the frame's outputs with 0xff bytes (NaN, -1) on the backend stream: a launch after
// many graph replays must write them again (the kernels' own counters were reset right).
int moe_frame_poison(ts_backend* b, MoeFrame* f);
void moe_frame_free(MoeFrame* f);

// Likewise for ts_predict_many.
struct PredictFrame;
PredictFrame* predict_frame_create(ts_backend* b, int64_t n_rows, int64_t hidden, const float* x, int64_t n_calls,
                                   const ts_predict_call* calls);
int predict_frame_enqueue(ts_backend* b, PredictFrame* f);
// masks[c] / counts[c]: where call c's outputs go (counts[c] may be NULL).
int predict_frame_read(ts_backend* b, PredictFrame* f, uint64_t* const* masks, int32_t* const* counts);
void predict_frame_free(PredictFrame* f);

}  // namespace tscuda
