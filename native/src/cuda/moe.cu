// moe.cu — the dReLU expert FFN over a batch: expert(x, m) = w2 . (m * relu(w1 x) * relu(w3 x)).
//
// Three kernels per call (every expert of the call in the same launches):
//   gate_up  the union of the call's token masks (made on the host from the
//            masks it uploads anyway) is compacted on the device into a list of
//            neurons; each warp takes list entries and does the gathered dot of
//            that neuron's two adjacent rows (w1_i, w3_i) against every token of
//            the pass, so a row wanted by several tokens is read once. Output:
//            h[k][t] = mask_t(i) * relu(g) * relu(u) and the active count. While
//            it is at it, the warp prefetches the neuron's down row into L2 when
//            some token uses it (the down kernel then reads from L2).
//   down     the axpy over the active rows of transposed w2: blocks own a
//            stripe of columns and a slice of the list, skip rows whose h is 0
//            for every token, and write one partial sum per (slice, token).
//   combine  e = sum of the slices (the expert's output, in f32), then
//            y[row] += weight * e in call order; also the active counts.
// DENSE_WITH_MASK is the same path with the list = every neuron and no skip.
// Batches of 1-2 tokens (one dtype, hidden <= 4096) take one launch instead:
// sparse ones the streaming kernel (k_ffn_stream, moe_stream.cuh: rows copied
// asynchronously into a ring of shared-memory slots, no grid barrier; Tuning::stream,
// TS_CUDA_STREAM; sparse batches of up to 16 rows whose calls have more tokens
// are first split into calls of 2 tokens, Tuning::stream_split: a row wanted by
// two parts is read twice, and still 1.8x faster at batch 8 than the three
// kernels on an H200), dense-with-mask ones the fused kernel (Tuning::fused,
// TS_CUDA_FUSED) (k_ffn_fused): each block does gate_up for its slice of the list,
// keeps h in shared memory, then the axpy of those neurons' whole down rows
// (each thread owns fixed columns, so a row is read contiguously by the block)
// into one partial per (block, token); a grid barrier (every block is
// co-resident: the grid is sized from the occupancy) and a fixed-order reduce
// of the partials finish it. No float atomics: the result is bitwise repeatable.
// Kernels are chained with programmatic dependent launch (sm_90+): each one is
// launched while the previous one runs, reads what the host uploaded (call
// descriptors, x, the mask unions) and compacts its list, and only then waits
// for the previous kernel's results. Rule: before pdl_wait() a kernel reads
// nothing any kernel writes, and writes nothing (the streaming kernel also
// writes its own launch's reduce scratch, which no other launch touches).
//
// Files: this one plans, packs and enqueues a call (host); moe_kernels.cu has
// the three kernels, moe_fused.cu the one-launch paths, moe.cuh what they share.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <new>
#include <string>
#include <vector>
#include "../split_calls.h"
#include "moe.cuh"

namespace tscuda {

// ------------------------------------------------------------------ planning

// Calls of one dtype, launched together.
struct MoeGroup {
  ts_dtype dt;
  int first = 0, count = 0;  // range of descriptors
  int tok = 1, passes = 1, gx = 1, stripes = 1;
  size_t smem = 0;
};

struct MoeFrame {
  ts_ffn_mode mode = TS_FFN_SPARSE;
  int64_t n_rows = 0, H = 0, ldH = 0, pairs = 0;
  int S = 1, gxs = 1;
  bool fused = false;                 // one k_ffn_fused launch (groups.size() == 1)
  bool stream = false;                // one k_ffn_stream launch (groups.size() == 1)
  int slots = 0, gs = 1, ngs = 1;     // streaming kernel: ring slots, blocks per reduce group, groups
  int cluster = 0;                    // streaming kernel: blocks per cluster of the cluster tail (groups = clusters)
  size_t slist_off = 0, cnt_off = 0, gpart_off = 0, e_off = 0;
  std::vector<uint32_t> slist;        // streaming kernel: every call's list, per desc at slist_at
  std::vector<size_t> slist_at;
  int max_contrib = 0;                // most (call, token) pairs of one output row
  size_t bar_off = 0;
  Layout L;
  size_t x_off = 0, rows_off = 0, masks_off = 0, uni_off = 0, calls_off = 0, rstart_off = 0, contrib_off = 0;
  size_t y_off = 0, active_off = 0, idx_off = 0, hv_off = 0, blk_off = 0, part_off = 0;
  std::vector<MoeGroup> groups;
  std::vector<MoeCall> desc;          // descriptors, grouped by dtype (device pointers relative to 0 until packed)
  std::vector<int> src;               // desc[i] is calls[src[i]]
  std::vector<size_t> rows_at, masks_at;  // per desc: element offsets into the rows / masks segments
  std::vector<uint64_t> uni;          // all unions, per desc at desc.uni offset
  std::vector<size_t> uni_at;
  std::vector<const uint64_t*> call_masks;  // per desc: the caller's masks (read while planning only)
  std::vector<int> row_start;         // [n_rows + 1]
  std::vector<MoeContrib> contribs;
  std::vector<ts_expert_call> split;  // the calls as planned when split for the streaming kernel (else empty)
  char* owned = nullptr;              // device memory of a bench frame
};

namespace {

// Sparse batches take the streaming kernel unless Tuning::stream says otherwise (1 always, 0 never).
bool wants_stream(const Tuning& t, bool dense) { return t.stream > 0 || (t.stream < 0 && !dense); }

constexpr int64_t kStreamMaxRows = 16;  // its last block writes every output row
constexpr int kStreamMaxTok = 2;        // tokens of one call: x and the accumulators live in registers

// The streaming kernel's plan for a launch of calls of one dtype with 1-2 tokens each:
// blocks (about tuning.stream_bps per SM, shared by the calls in proportion to
// their lists; whole clusters with the cluster tail), ring slots, and the
// host-made lists. Leaves f.stream false when it does not fit (the fused kernel
// or the three kernels run instead).
int plan_stream(Backend* b, bool dense, MoeFrame& f) {
  MoeGroup& g = f.groups[0];
  for (int i = g.first; i < g.first + g.count; ++i)
    if (int64_t(f.desc[size_t(i)].I) > int64_t(kStreamNeuronBits) + 1) return 0;
  const int want_cs = b->tuning.stream_cluster >= 0 ? b->tuning.stream_cluster : g.tok == 1 ? 4 : 0;
  const int cs = b->cc_major >= 9 ? std::min(want_cs, 8) : 0;
  const int unit = std::max(cs, 1);
  const size_t rowb = size_t(f.ldH) * dtype_bytes(g.dt);
  const double budget =
      b->tuning.stream_blocks > 0 ? double(b->tuning.stream_blocks) : double(b->sms) * std::max(1, b->tuning.stream_bps);
  double work = 0;
  for (int i = g.first; i < g.first + g.count; ++i) work += double(std::max(f.desc[size_t(i)].K, 1));
  std::vector<int> gx(size_t(g.count));
  int gmax = 1, maxP = 0;
  for (int i = 0; i < g.count; ++i) {
    const MoeCall& d = f.desc[size_t(g.first + i)];
    int64_t x = int64_t(budget * double(std::max(d.K, 1)) / work);
    x = std::max<int64_t>(1, std::min<int64_t>({x, std::max(d.K, 1), 65535 / unit * unit}));
    x = std::max<int64_t>(unit, x / unit * unit);  // whole clusters, rounded down: no second wave
    gx[size_t(i)] = int(x);
    gmax = std::max(gmax, gx[size_t(i)]);
    maxP = std::max(maxP, (d.K + gx[size_t(i)] - 1) / gx[size_t(i)]);
  }
  if (maxP > 4096) return 0;  // the list of a block lives in shared memory
  const auto kernel = reinterpret_cast<const void*>(stream_kernel(g.dt, g.tok));
  int slots = std::min(std::max(2, b->tuning.stream_slots), kStreamMaxSlots);
  for (; slots >= 2; --slots) {
    const size_t smem = stream_smem(g.tok, slots, rowb, f.ldH, maxP, cs > 0);
    int per_sm = 0;
    if (smem + 1024 <= b->smem_optin && prepare_kernel(b, kernel, kStreamThreads, smem, &per_sm) == 0) {
      g.smem = smem;
      break;
    }
  }
  if (slots < 2) return 0;
  if (cs > 0 && !cluster_fits(b, kernel, kStreamThreads, g.smem, cs)) return 0;
  f.stream = true;
  f.slots = slots;
  f.cluster = cs;
  g.gx = gmax;
  for (int i = 0; i < g.count; ++i) f.desc[size_t(g.first + i)].gx = gx[size_t(i)];
  // the lists: neuron | (token t has it) << (24 + t), in neuron order
  for (size_t i = 0; i < f.desc.size(); ++i) {
    const MoeCall& d = f.desc[i];
    const uint64_t* masks = f.call_masks[i];
    const uint64_t* uni = f.uni.data() + f.uni_at[i];
    f.slist_at.push_back(f.slist.size());
    for (int w = 0; w < d.W; ++w) {
      uint64_t u = dense ? ~uint64_t(0) : uni[w];
      if (w == d.W - 1 && d.I % 64) u &= (uint64_t(1) << (d.I % 64)) - 1;
      while (u) {
        const int bit = __builtin_ctzll(u);
        u &= u - 1;
        uint32_t ent = uint32_t(w * 64 + bit);
        for (int t = 0; t < d.n; ++t) ent |= uint32_t((masks[size_t(t) * d.W + w] >> bit) & 1u) << (24 + t);
        f.slist.push_back(ent);
      }
    }
  }
  return 0;
}

// A batch of more tokens than the streaming kernel takes (Tuning::stream_split > 0): every call split into
// calls of stream_split tokens of the same expert, in place, so the batch runs in one streaming launch
// with x in registers. The (call, token) pairs, and the order of each output row's terms, are unchanged;
// a weight row wanted by tokens of two parts is read twice. False when the batch does not qualify.
bool split_for_stream(const Backend* b, bool dense, int64_t n_rows, int64_t H, int64_t n_calls,
                      const ts_expert_call* calls, std::vector<ts_expert_call>& out) {
  const Tuning& t = b->tuning;
  const int S = t.stream_split;
  if (S < 1 || S > kStreamMaxTok || !wants_stream(t, dense) || n_rows > kStreamMaxRows || padded(H) > kStreamMaxLd) return false;
  int64_t maxn = 0;
  int dt = -1;
  for (int64_t c = 0; c < n_calls; ++c) {
    if (calls[c].n == 0) continue;
    maxn = std::max(maxn, calls[c].n);
    if (dt >= 0 && dt != int(calls[c].expert->dtype)) return false;  // one launch takes one dtype
    dt = int(calls[c].expert->dtype);
  }
  if (maxn <= kStreamMaxTok) return false;  // it takes the batch whole
  ts::split_calls(calls, n_calls, S, out);
  return true;
}

int moe_build(Backend* b, ts_ffn_mode mode, int64_t n_rows, int64_t H, int64_t n_calls, const ts_expert_call* calls,
              MoeFrame& f) {
  const bool dense = mode == TS_FFN_DENSE_WITH_MASK;
  if (split_for_stream(b, dense, n_rows, H, n_calls, calls, f.split)) {
    calls = f.split.data();
    n_calls = int64_t(f.split.size());
  }
  f.mode = mode;
  f.n_rows = n_rows;
  f.H = H;
  f.ldH = padded(H);
  if (n_rows > 65535) return ts_fail("ts_moe: n_rows = " + std::to_string(n_rows) + " is more than one CUDA call takes (65535)");
  if (size_t(f.ldH) * 4 * 1 > b->smem_optin)
    return ts_fail("ts_moe: hidden = " + std::to_string(H) + " is too wide for the CUDA kernels");

  // descriptors in dtype order; pairs (call, token) numbered in call order
  std::vector<int> q0(size_t(n_calls), 0);
  int64_t pairs = 0;
  for (int64_t c = 0; c < n_calls; ++c) {
    q0[size_t(c)] = int(pairs);
    pairs += calls[c].n;
  }
  f.pairs = pairs;
  if (pairs > (int64_t(1) << 30)) return ts_fail("ts_moe: too many (call, row) pairs for one CUDA call");
  size_t rows_n = 0, masks_n = 0, uni_n = 0;
  long long list_n = 0, hv_n = 0;
  for (ts_dtype dt : {TS_F32, TS_F16, TS_BF16, TS_I8}) {
    MoeGroup g;
    g.dt = dt;
    g.first = int(f.desc.size());
    for (int64_t c = 0; c < n_calls; ++c) {
      const ts_expert_call& ec = calls[c];
      if (ec.n == 0 || ec.expert->dtype != dt) continue;
      const auto* e = static_cast<const Expert*>(ec.expert);
      MoeCall d = {};
      d.I = int(e->intermediate);
      d.W = int(ts_mask_words(e->intermediate));
      d.n = int(ec.n);
      d.q0 = q0[size_t(c)];
      // union of the masks, bits past I cleared
      f.uni_at.push_back(uni_n);
      f.uni.resize(uni_n + size_t(d.W));
      uint64_t* u = f.uni.data() + uni_n;
      int K = 0;
      for (int w = 0; w < d.W; ++w) {
        uint64_t any = 0;
        for (int64_t t = 0; t < ec.n; ++t) any |= ec.masks[size_t(t) * d.W + w];
        if (w == d.W - 1 && d.I % 64) any &= (uint64_t(1) << (d.I % 64)) - 1;
        u[w] = any;
        K += __builtin_popcountll(any);
      }
      d.K = dense ? d.I : K;
      f.rows_at.push_back(rows_n);
      f.masks_at.push_back(masks_n);
      rows_n += size_t(ec.n);
      masks_n += size_t(ec.n) * size_t(d.W);
      uni_n += size_t(d.W);
      f.desc.push_back(d);
      f.src.push_back(int(c));
      f.call_masks.push_back(ec.masks);
    }
    g.count = int(f.desc.size()) - g.first;
    if (g.count == 0) continue;
    if (g.count > 65535) return ts_fail("ts_moe: too many calls for one CUDA launch");
    int maxn = 0;
    for (int i = g.first; i < g.first + g.count; ++i) maxn = std::max(maxn, f.desc[size_t(i)].n);
    int tok = tokens_per_pass(maxn);
    auto smem_for = [&](int t) { return size_t(t) * size_t(f.ldH) * 4 + size_t(kMaxList) * 4; };
    while (tok > 1 && smem_for(tok) + 1024 > b->smem_optin) tok /= 2;
    if (smem_for(tok) + 1024 > b->smem_optin)
      return ts_fail("ts_moe: hidden = " + std::to_string(H) + " is too wide for the CUDA kernels");
    g.tok = tok;
    g.passes = (maxn + tok - 1) / tok;
    if (g.passes > 65535) return ts_fail("ts_moe: too many rows for one expert in one CUDA call");
    int per_sm = 1;
    TS_TRY(prepare_kernel(b, reinterpret_cast<const void*>(gate_up_kernel(dt, tok)), kThreads, smem_for(tok), &per_sm));
    int dummy = 1;
    TS_TRY(prepare_kernel(b, reinterpret_cast<const void*>(down_kernel(dt, tok)), kThreads, 0, &dummy));
    // one wave of blocks, shared by the calls in proportion to their work
    const double budget = double(b->sms) * std::min(per_sm, 2);
    double work = 0;
    for (int i = g.first; i < g.first + g.count; ++i) {
      const MoeCall& d = f.desc[size_t(i)];
      work += double(std::max(d.K, 1)) * ((d.n + tok - 1) / tok);
    }
    constexpr int R = 2;  // neurons per warp at the widest; fewer blocks than K/R would idle warps
    int maxP = 1;
    g.gx = 1;
    for (int i = g.first; i < g.first + g.count; ++i) {
      MoeCall& d = f.desc[size_t(i)];
      const int64_t min_gx = (int64_t(d.K) + kMaxList - 1) / kMaxList;
      int64_t gx = int64_t(budget * double(std::max(d.K, 1)) / work);
      gx = std::min<int64_t>(gx, (int64_t(d.K) + R - 1) / R);
      gx = std::max<int64_t>({gx, min_gx, 1});
      d.gx = int(std::min<int64_t>(gx, 65535));
      g.gx = std::max(g.gx, d.gx);
      maxP = std::max(maxP, (d.K + d.gx - 1) / d.gx);
    }
    g.smem = size_t(tok) * size_t(f.ldH) * 4 + size_t(maxP) * 4;
    g.stripes = int((f.ldH / down_lane_elems(dt) + 31) / 32);
    for (int i = g.first; i < g.first + g.count; ++i) {
      MoeCall& d = f.desc[size_t(i)];
      d.npad = std::max(4, (d.n + tok - 1) / tok * tok);
      d.npad = (d.npad + 3) / 4 * 4;
      d.list_off = list_n;
      d.hv_off = hv_n;
      list_n += d.K;
      hv_n += (long long)d.K * d.npad;
      d.prefetch = (!dense && b->tuning.prefetch &&
                    double(d.K) * double(f.ldH) * dtype_bytes(dt) <= 0.5 * double(b->l2_bytes))
                       ? 1
                       : 0;
    }
    f.groups.push_back(g);
  }
  // batch <= 2 of one dtype (also a larger one split above): plan the streaming kernel, else the fused
  // kernel, else the three kernels
  if (wants_stream(b->tuning, dense) && f.groups.size() == 1 && f.groups[0].tok <= kStreamMaxTok && f.groups[0].passes == 1 &&
      f.ldH <= kStreamMaxLd && n_rows <= kStreamMaxRows)
    TS_TRY(plan_stream(b, dense, f));
  const bool want_fused = b->tuning.fused > 0 || (b->tuning.fused < 0 && dense);
  if (!f.stream && want_fused && f.groups.size() == 1 && f.groups[0].tok <= 2 && f.groups[0].passes == 1 &&
      f.ldH <= kFusedMaxLd && f.ldH % 4 == 0) {
    MoeGroup& g = f.groups[0];
    const size_t smem_bound = size_t(g.tok) * size_t(f.ldH) * 4 + size_t(kMaxList) * 4 * size_t(1 + g.tok);
    int per_sm = 0;
    if (smem_bound + 1024 <= b->smem_optin &&
        prepare_kernel(b, reinterpret_cast<const void*>(fused_kernel(g.dt, g.tok)), kThreads, smem_bound, &per_sm) == 0) {
      const int bps = std::max(1, std::min(per_sm, b->tuning.fused_bps));
      const double budget = double(b->sms) * bps;
      double work = 0;
      for (int i = g.first; i < g.first + g.count; ++i) work += double(std::max(f.desc[size_t(i)].K, 1));
      std::vector<int> gx(size_t(g.count));
      int gmax = 1, maxP = 1;
      for (int i = 0; i < g.count; ++i) {
        const MoeCall& d = f.desc[size_t(g.first + i)];
        int64_t x = int64_t(budget * double(std::max(d.K, 1)) / work);
        x = std::min<int64_t>(x, std::max(d.K, 1));
        x = std::max<int64_t>({x, (int64_t(d.K) + kMaxList - 1) / kMaxList, 1});
        gx[size_t(i)] = int(std::min<int64_t>(x, 65535));
        gmax = std::max(gmax, gx[size_t(i)]);
        maxP = std::max(maxP, (d.K + gx[size_t(i)] - 1) / gx[size_t(i)]);
      }
      // every block must be resident at once (grid barrier)
      if (int64_t(gmax) * g.count <= int64_t(b->sms) * per_sm && maxP <= kMaxList) {
        f.fused = true;
        g.gx = gmax;
        g.smem = size_t(g.tok) * size_t(f.ldH) * 4 + size_t(maxP) * 4 * size_t(1 + g.tok);
        for (int i = 0; i < g.count; ++i) f.desc[size_t(g.first + i)].gx = gx[size_t(i)];
      }
    }
  }
  f.gxs = 1;
  for (const MoeCall& d : f.desc) f.gxs = std::max(f.gxs, d.gx);

  // down splits: about two blocks per SM over all launches
  int64_t units = 0;
  for (const MoeGroup& g : f.groups)
    for (int i = g.first; i < g.first + g.count; ++i)
      units += int64_t(g.stripes) * ((f.desc[size_t(i)].n + g.tok - 1) / g.tok);
  const bool one_launch = f.fused || f.stream;  // one partial row per block
  int S = one_launch ? f.gxs : b->tuning.down_splits > 0 ? b->tuning.down_splits
                                    : int(std::max<int64_t>(1, 2 * int64_t(b->sms) / std::max<int64_t>(1, units)));
  if (!one_launch) S = std::min(S, kMaxSplits);
  while (!one_launch && S > 1 && double(pairs) * S * f.ldH * 4 > double(size_t(256) << 20)) --S;
  f.S = S;
  if (f.stream) {  // reduce groups of about sqrt(blocks) blocks: two short levels instead of one long one
    f.gs = f.cluster > 0 ? f.cluster : int(std::ceil(std::sqrt(double(f.gxs))));
    f.ngs = (f.gxs + f.gs - 1) / f.gs;
  }

  // combine plan: per output row, its (call, token) pairs in call order
  f.row_start.assign(size_t(n_rows) + 1, 0);
  for (int64_t c = 0; c < n_calls; ++c)
    for (int64_t j = 0; j < calls[c].n; ++j) f.row_start[size_t(calls[c].rows[j]) + 1]++;
  for (int64_t r = 0; r < n_rows; ++r) {
    f.max_contrib = std::max(f.max_contrib, f.row_start[size_t(r) + 1]);
    f.row_start[size_t(r) + 1] += f.row_start[size_t(r)];
  }
  f.contribs.assign(size_t(pairs), MoeContrib{});
  {
    std::vector<int> fill(f.row_start.begin(), f.row_start.end() - 1);
    std::vector<int> gx_of(size_t(n_calls), 1);
    for (size_t i = 0; i < f.desc.size(); ++i) gx_of[size_t(f.src[i])] = f.desc[i].gx;
    for (int64_t c = 0; c < n_calls; ++c)
      for (int64_t j = 0; j < calls[c].n; ++j) {
        MoeContrib& ct = f.contribs[size_t(fill[size_t(calls[c].rows[j])]++)];
        ct.q = q0[size_t(c)] + int(j);
        ct.w = calls[c].weight[j];
        ct.gx = gx_of[size_t(c)];
      }
  }

  // device layout
  Layout& L = f.L;
  f.x_off = L.add_in(size_t(n_rows * f.ldH) * 4);
  f.rows_off = L.add_in(rows_n * 4);
  f.masks_off = L.add_in(masks_n * 8);
  f.uni_off = L.add_in(uni_n * 8);
  f.calls_off = L.add_in(f.desc.size() * sizeof(MoeCall));
  f.rstart_off = L.add_in(f.row_start.size() * 4);
  f.contrib_off = L.add_in(f.contribs.size() * sizeof(MoeContrib));
  f.bar_off = L.add_in(2 * sizeof(unsigned));  // uploaded as 0; the fused kernel leaves the arrivals at 0
  if (f.stream) {
    f.slist_off = L.add_in(f.slist.size() * 4);
    f.cnt_off = L.add_in((f.desc.size() * size_t(f.ngs + 1) + 1) * sizeof(unsigned));  // uploaded as 0, left at 0
    f.gpart_off = L.add_scratch(size_t(pairs) * size_t(f.ngs) * size_t(f.ldH) * 4);
    f.e_off = L.add_scratch(size_t(pairs) * size_t(f.ldH) * 4);
  }
  f.y_off = L.add_out(size_t(n_rows * H) * 4);
  f.active_off = L.add_out(size_t(pairs) * 4);
  f.idx_off = L.add_scratch(size_t(list_n) * 4);
  f.hv_off = L.add_scratch(size_t(hv_n) * 4);
  f.blk_off = L.add_scratch(size_t(pairs) * size_t(f.gxs) * 4);
  f.part_off = L.add_scratch(size_t(pairs) * size_t(S) * size_t(f.ldH) * 4);
  return 0;
}

// Inputs into the host staging buffer h; device pointers relative to d.
void moe_pack(MoeFrame& f, char* h, char* d, const float* x, const ts_expert_call* calls) {
  if (!f.split.empty()) calls = f.split.data();
  float* xh = reinterpret_cast<float*>(h + f.x_off);
  for (int64_t r = 0; r < f.n_rows; ++r) {
    std::memcpy(xh + r * f.ldH, x + r * f.H, size_t(f.H) * 4);
    std::memset(xh + r * f.ldH + f.H, 0, size_t(f.ldH - f.H) * 4);
  }
  int* rows_h = reinterpret_cast<int*>(h + f.rows_off);
  uint64_t* masks_h = reinterpret_cast<uint64_t*>(h + f.masks_off);
  std::memcpy(h + f.uni_off, f.uni.data(), f.uni.size() * 8);
  std::vector<MoeCall> desc = f.desc;
  for (size_t i = 0; i < desc.size(); ++i) {
    const ts_expert_call& ec = calls[f.src[i]];
    const auto* e = static_cast<const Expert*>(ec.expert);
    MoeCall& dc = desc[i];
    std::memcpy(rows_h + f.rows_at[i], ec.rows, size_t(ec.n) * 4);
    std::memcpy(masks_h + f.masks_at[i], ec.masks, size_t(ec.n) * size_t(dc.W) * 8);
    dc.w13 = static_cast<const char*>(e->w13.data);
    dc.s13 = e->w13.scale;
    dc.w2t = static_cast<const char*>(e->w2t.data);
    dc.s2 = e->w2t.scale;
    dc.masks = reinterpret_cast<const uint64_t*>(d + f.masks_off) + f.masks_at[i];
    dc.uni = reinterpret_cast<const uint64_t*>(d + f.uni_off) + f.uni_at[i];
    dc.rows = reinterpret_cast<const int*>(d + f.rows_off) + f.rows_at[i];
    if (f.stream) dc.slist = reinterpret_cast<const uint32_t*>(d + f.slist_off) + f.slist_at[i];
  }
  if (f.stream) {
    std::memcpy(h + f.slist_off, f.slist.data(), f.slist.size() * 4);
    std::memset(h + f.cnt_off, 0, (f.desc.size() * size_t(f.ngs + 1) + 1) * sizeof(unsigned));
  }
  std::memcpy(h + f.calls_off, desc.data(), desc.size() * sizeof(MoeCall));
  std::memcpy(h + f.rstart_off, f.row_start.data(), f.row_start.size() * 4);
  std::memcpy(h + f.contrib_off, f.contribs.data(), f.contribs.size() * sizeof(MoeContrib));
  std::memset(h + f.bar_off, 0, 2 * sizeof(unsigned));
}

int moe_enqueue(Backend* b, const MoeFrame& f, char* d) {
  char* out = d + f.L.out_base();
  char* scr = d + f.L.scratch_base();
  MoeArgs a = {};
  a.x = reinterpret_cast<const float*>(d + f.x_off);
  a.idx = reinterpret_cast<int*>(scr + f.idx_off);
  a.hv = reinterpret_cast<float*>(scr + f.hv_off);
  a.blk_active = reinterpret_cast<int*>(scr + f.blk_off);
  a.partials = reinterpret_cast<float*>(scr + f.part_off);
  a.ldH = int(f.ldH);
  a.S = f.S;
  a.gxs = f.gxs;
  a.dense = f.mode == TS_FFN_DENSE_WITH_MASK;
  MoeCombineArgs c = {};
  c.row_start = reinterpret_cast<const int*>(d + f.rstart_off);
  c.contribs = reinterpret_cast<const MoeContrib*>(d + f.contrib_off);
  c.partials = a.partials;
  c.blk_active = a.blk_active;
  c.y = reinterpret_cast<float*>(out + f.y_off);
  c.active = reinterpret_cast<int*>(out + f.active_off);
  c.H = int(f.H);
  c.ldH = int(f.ldH);
  c.S = f.S;
  c.gxs = f.gxs;
  if (f.stream) {
    const MoeGroup& g = f.groups[0];
    MoeStreamArgs sa = {};
    sa.calls = reinterpret_cast<const MoeCall*>(d + f.calls_off) + g.first;
    sa.x = a.x;
    sa.partials = a.partials;
    sa.gpart = reinterpret_cast<float*>(scr + f.gpart_off);
    sa.e = reinterpret_cast<float*>(scr + f.e_off);
    sa.blk_active = a.blk_active;
    sa.cnt = reinterpret_cast<unsigned*>(d + f.cnt_off);
    sa.row_start = c.row_start;
    sa.contribs = c.contribs;
    sa.y = c.y;
    sa.active = c.active;
    sa.ldH = int(f.ldH);
    sa.H = int(f.H);
    sa.gxs = f.gxs;
    sa.gs = f.gs;
    sa.ngs = f.ngs;
    sa.n_rows = int(f.n_rows);
    sa.ncalls = g.count;
    sa.slots = f.slots;
    sa.stages = b->tuning.ffn_stages;
    sa.cluster = f.cluster;
    TS_CUDA(launch_clustered(b, true, stream_kernel(g.dt, g.tok), dim3(unsigned(g.gx), unsigned(g.count)),
                             dim3(kStreamThreads), g.smem, f.cluster, sa));
    return 0;
  }
  if (f.fused) {
    const MoeGroup& g = f.groups[0];
    MoeFusedArgs fa = {};
    fa.a = a;
    fa.a.calls = reinterpret_cast<const MoeCall*>(d + f.calls_off) + g.first;
    fa.c = c;
    fa.bar = reinterpret_cast<unsigned*>(d + f.bar_off);
    fa.n_rows = int(f.n_rows);
    fa.pairs = int(f.pairs);
    fa.max_contrib = f.max_contrib;
    TS_CUDA(launch(b, true, fused_kernel(g.dt, g.tok), dim3(unsigned(g.gx), unsigned(g.count)), dim3(kThreads),
                   g.smem, fa));
    return 0;
  }
  for (const MoeGroup& g : f.groups) {
    a.calls = reinterpret_cast<const MoeCall*>(d + f.calls_off) + g.first;
    TS_CUDA(launch(b, true, gate_up_kernel(g.dt, g.tok), dim3(unsigned(g.gx), unsigned(g.count), unsigned(g.passes)),
                   dim3(kThreads), g.smem, a));
    if (b->tuning.ffn_stages >= 2)
      TS_CUDA(launch(b, true, down_kernel(g.dt, g.tok),
                     dim3(unsigned(g.stripes * f.S), unsigned(g.count), unsigned(g.passes)), dim3(kThreads), 0, a));
  }
  if (b->tuning.ffn_stages < 3) return 0;
  const unsigned gx = unsigned((f.ldH / 4 + kCombineThreads - 1) / kCombineThreads);
  TS_CUDA(launch(b, true, combine_kernel(), dim3(gx, unsigned(f.n_rows)), dim3(kCombineThreads), 0, c));
  return 0;
}

}  // namespace

int moe(ts_backend* tb, ts_ffn_mode mode, int64_t n_rows, int64_t hidden, const float* x, int64_t n_calls,
        const ts_expert_call* calls, float* y, int32_t* active) {
  Backend* b = as_cuda(tb);
  TS_TRY(b->activate());
  if (n_rows == 0) return 0;
  int64_t pairs = 0;
  for (int64_t c = 0; c < n_calls; ++c) pairs += calls[c].n;
  if (pairs == 0) {
    std::memset(y, 0, size_t(n_rows * hidden) * 4);
    return 0;
  }
  MoeFrame f;
  TS_TRY(moe_build(b, mode, n_rows, hidden, n_calls, calls, f));
  return run_staged(
      b, f.L, [&](char* h, char* d) { moe_pack(f, h, d, x, calls); },
      [&](char* d) { return moe_enqueue(b, f, d); },
      [&](const char* h) {
        std::memcpy(y, h + f.y_off, size_t(n_rows * hidden) * 4);
        if (active) std::memcpy(active, h + f.active_off, size_t(pairs) * 4);
      });
}

// ------------------------------------------------------- frames for the bench

MoeFrame* moe_frame_create(ts_backend* tb, ts_ffn_mode mode, int64_t n_rows, int64_t hidden, const float* x,
                           int64_t n_calls, const ts_expert_call* calls) {
  Backend* b = as_cuda(tb);
  if (b->activate()) return nullptr;
  auto* f = new (std::nothrow) MoeFrame();
  if (!f) return ts_fail("out of memory"), nullptr;
  int64_t pairs = 0;
  for (int64_t c = 0; c < n_calls; ++c) pairs += calls[c].n;
  if (n_rows == 0 || pairs == 0) {
    delete f;
    return ts_fail("moe_frame_create: the call has no work"), nullptr;
  }
  if (moe_build(b, mode, n_rows, hidden, n_calls, calls, *f)) {
    delete f;
    return nullptr;
  }
  cudaError_t e = cudaMalloc(reinterpret_cast<void**>(&f->owned), f->L.total());
  if (e != cudaSuccess) {
    f->owned = nullptr;
    ts_fail(cuda_error(e, "cudaMalloc (moe frame)", __FILE__, __LINE__));
    delete f;
    return nullptr;
  }
  std::vector<char> h(f->L.in);
  moe_pack(*f, h.data(), f->owned, x, calls);
  e = cudaMemcpy(f->owned, h.data(), f->L.in, cudaMemcpyHostToDevice);
  if (e != cudaSuccess) {
    ts_fail(cuda_error(e, "cudaMemcpy (moe frame)", __FILE__, __LINE__));
    moe_frame_free(f);
    return nullptr;
  }
  return f;
}

int moe_frame_enqueue(ts_backend* tb, MoeFrame* f) { return moe_enqueue(as_cuda(tb), *f, f->owned); }

int moe_frame_read(ts_backend* tb, MoeFrame* f, float* y, int32_t* active) {
  Backend* b = as_cuda(tb);
  TS_TRY(b->activate());
  TS_CUDA(cudaStreamSynchronize(b->stream));
  const char* out = f->owned + f->L.out_base();
  TS_CUDA(cudaMemcpy(y, out + f->y_off, size_t(f->n_rows * f->H) * 4, cudaMemcpyDeviceToHost));
  if (active) TS_CUDA(cudaMemcpy(active, out + f->active_off, size_t(f->pairs) * 4, cudaMemcpyDeviceToHost));
  return 0;
}

int moe_frame_poison(ts_backend* tb, MoeFrame* f) {
  Backend* b = as_cuda(tb);
  TS_TRY(b->activate());
  TS_CUDA(cudaMemsetAsync(f->owned + f->L.out_base(), 0xff, f->L.out, b->stream));
  return 0;
}

void moe_frame_free(MoeFrame* f) {
  if (!f) return;
  if (f->owned) cudaFree(f->owned);
  delete f;
}

}  // namespace tscuda
