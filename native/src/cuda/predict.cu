// predict.cu — the activation predictor: mask bit i = (fc2 . relu(fc1 . x))_i > 0.
// Two launches per dtype group, every predictor of the call in each: fc1 with
// a relu epilogue into a device scratch row per token, then fc2 with the mask
// epilogue (a block owns whole 64-bit mask words and counts their bits).
// Kernels: rowdot.cuh (instantiated in matmul.cu).
#include <algorithm>
#include <cstring>
#include <new>
#include <string>
#include <vector>
#include "rowdot.cuh"

namespace tscuda {

struct PredictGroup {
  ts_dtype dt;
  int first = 0, count = 0;  // range of jobs
  RowDotPlan fc1, fc2;
};

struct PredictFrame {
  int64_t n_rows = 0, hidden = 0;
  Layout L;
  size_t x_off = 0, rows_off = 0, jobs1_off = 0, jobs2_off = 0, counts_off = 0, masks_off = 0, t_off = 0;
  size_t counts_n = 0;
  std::vector<PredictGroup> groups;
  std::vector<int> src;                 // job i serves calls[src[i]]
  std::vector<size_t> rows_at, counts_at, masks_at, t_at;  // per job, element offsets
  std::vector<int64_t> n, words, ldr;   // per job
  char* owned = nullptr;
};

namespace {

int predict_build(Backend* b, int64_t n_rows, int64_t hidden, int64_t n_calls, const ts_predict_call* calls,
                  PredictFrame& f) {
  f.n_rows = n_rows;
  f.hidden = hidden;
  size_t rows_n = 0, counts_n = 0, masks_n = 0, t_n = 0;
  for (ts_dtype dt : {TS_F32, TS_F16, TS_BF16, TS_I8}) {
    PredictGroup g;
    g.dt = dt;
    g.first = int(f.src.size());
    int64_t maxn = 0, rank_sum = 0, words_sum = 0, ld1 = 0, ld2 = 0;
    for (int64_t c = 0; c < n_calls; ++c) {
      const ts_predict_call& pc = calls[c];
      if (pc.n == 0 || pc.predictor->dtype != dt) continue;
      const auto* p = static_cast<const Predictor*>(pc.predictor);
      f.src.push_back(int(c));
      f.n.push_back(pc.n);
      f.words.push_back(ts_mask_words(p->intermediate));
      f.ldr.push_back(padded(p->rank));
      f.rows_at.push_back(rows_n);
      f.counts_at.push_back(counts_n);
      f.masks_at.push_back(masks_n);
      f.t_at.push_back(t_n);
      rows_n += size_t(pc.n);
      counts_n += size_t(pc.n);
      masks_n += size_t(pc.n * ts_mask_words(p->intermediate));
      t_n += size_t(pc.n * padded(p->rank));
      maxn = std::max(maxn, pc.n);
      rank_sum += p->rank;
      words_sum += ts_mask_words(p->intermediate);
      ld1 = std::max(ld1, p->fc1.ld);
      ld2 = std::max(ld2, p->fc2.ld);
    }
    g.count = int(f.src.size()) - g.first;
    if (g.count == 0) continue;
    TS_TRY(rowdot_plan(b, dt, false, maxn, ld1, rank_sum, g.count, &g.fc1));
    TS_TRY(rowdot_plan(b, dt, true, maxn, ld2, words_sum, g.count, &g.fc2));
    f.groups.push_back(g);
  }
  f.counts_n = counts_n;
  Layout& L = f.L;
  f.x_off = L.add_in(size_t(n_rows * hidden) * 4);
  f.rows_off = L.add_in(rows_n * 4);
  f.jobs1_off = L.add_in(f.src.size() * sizeof(RowDotJob));
  f.jobs2_off = L.add_in(f.src.size() * sizeof(RowDotJob));
  f.counts_off = L.add_out(counts_n * 4);
  f.masks_off = L.add_out(masks_n * 8);
  f.t_off = L.add_scratch(t_n * 4);
  return 0;
}

void predict_pack(const PredictFrame& f, char* h, char* d, const float* x, const ts_predict_call* calls) {
  std::memcpy(h + f.x_off, x, size_t(f.n_rows * f.hidden) * 4);
  int* rows_h = reinterpret_cast<int*>(h + f.rows_off);
  auto* j1 = reinterpret_cast<RowDotJob*>(h + f.jobs1_off);
  auto* j2 = reinterpret_cast<RowDotJob*>(h + f.jobs2_off);
  char* out = d + f.L.out_base();
  char* scr = d + f.L.scratch_base();
  for (size_t i = 0; i < f.src.size(); ++i) {
    const ts_predict_call& pc = calls[f.src[i]];
    const auto* p = static_cast<const Predictor*>(pc.predictor);
    std::memcpy(rows_h + f.rows_at[i], pc.rows, size_t(pc.n) * 4);
    float* t = reinterpret_cast<float*>(scr + f.t_off) + f.t_at[i];
    RowDotJob a = {};
    a.W = p->fc1.data;
    a.scale = p->fc1.scale;
    a.x = reinterpret_cast<const float*>(d + f.x_off);
    a.xrows = reinterpret_cast<const int*>(d + f.rows_off) + f.rows_at[i];
    a.y = t;
    a.rows = int(p->fc1.rows);
    a.cols = int(p->fc1.cols);
    a.ldw = int(p->fc1.ld);
    a.xld = int(f.hidden);
    a.n = int(pc.n);
    a.yld = int(f.ldr[i]);
    a.relu = 1;
    j1[i] = a;
    RowDotJob m = {};
    m.W = p->fc2.data;
    m.scale = p->fc2.scale;
    m.x = t;
    m.mask = reinterpret_cast<uint64_t*>(out + f.masks_off) + f.masks_at[i];
    m.counts = reinterpret_cast<int*>(out + f.counts_off) + f.counts_at[i];
    m.rows = int(p->fc2.rows);
    m.cols = int(p->fc2.cols);
    m.ldw = int(p->fc2.ld);
    m.xld = int(f.ldr[i]);
    m.n = int(pc.n);
    m.words = int(f.words[i]);
    j2[i] = m;
  }
}

int predict_enqueue(Backend* b, const PredictFrame& f, char* d) {
  TS_CUDA(cudaMemsetAsync(d + f.L.out_base() + f.counts_off, 0, f.counts_n * 4, b->stream));
  const auto* j1 = reinterpret_cast<const RowDotJob*>(d + f.jobs1_off);
  const auto* j2 = reinterpret_cast<const RowDotJob*>(d + f.jobs2_off);
  for (const PredictGroup& g : f.groups) {
    TS_TRY(rowdot_launch(b, g.dt, false, g.fc1, j1 + g.first, g.count));
    TS_TRY(rowdot_launch(b, g.dt, true, g.fc2, j2 + g.first, g.count));
  }
  return 0;
}

void predict_unpack(const PredictFrame& f, const char* out_base, uint64_t* const* masks, int32_t* const* counts) {
  for (size_t i = 0; i < f.src.size(); ++i) {
    const int c = f.src[i];
    std::memcpy(masks[c], out_base + f.masks_off + f.masks_at[i] * 8, size_t(f.n[i] * f.words[i]) * 8);
    if (counts[c]) std::memcpy(counts[c], out_base + f.counts_off + f.counts_at[i] * 4, size_t(f.n[i]) * 4);
  }
}

}  // namespace

int predict_many(ts_backend* tb, int64_t n_rows, int64_t hidden, const float* x, int64_t n_calls,
                 const ts_predict_call* calls) {
  Backend* b = as_cuda(tb);
  TS_TRY(b->activate());
  PredictFrame f;
  TS_TRY(predict_build(b, n_rows, hidden, n_calls, calls, f));
  if (f.src.empty()) return 0;
  std::vector<uint64_t*> masks(static_cast<size_t>(n_calls));
  std::vector<int32_t*> counts(static_cast<size_t>(n_calls));
  for (int64_t c = 0; c < n_calls; ++c) {
    masks[size_t(c)] = calls[c].masks;
    counts[size_t(c)] = calls[c].counts;
  }
  return run_staged(
      b, f.L, [&](char* h, char* d) { predict_pack(f, h, d, x, calls); },
      [&](char* d) { return predict_enqueue(b, f, d); },
      [&](const char* h) { predict_unpack(f, h, masks.data(), counts.data()); });
}

// ------------------------------------------------------- frames for the bench

PredictFrame* predict_frame_create(ts_backend* tb, int64_t n_rows, int64_t hidden, const float* x, int64_t n_calls,
                                   const ts_predict_call* calls) {
  Backend* b = as_cuda(tb);
  if (b->activate()) return nullptr;
  auto* f = new (std::nothrow) PredictFrame();
  if (!f) return ts_fail("out of memory"), nullptr;
  if (predict_build(b, n_rows, hidden, n_calls, calls, *f) || f->src.empty()) {
    if (f->src.empty()) ts_fail("predict_frame_create: the call has no work");
    delete f;
    return nullptr;
  }
  cudaError_t e = cudaMalloc(reinterpret_cast<void**>(&f->owned), f->L.total());
  if (e != cudaSuccess) {
    f->owned = nullptr;
    ts_fail(cuda_error(e, "cudaMalloc (predict frame)", __FILE__, __LINE__));
    delete f;
    return nullptr;
  }
  std::vector<char> h(f->L.in);
  predict_pack(*f, h.data(), f->owned, x, calls);
  e = cudaMemcpy(f->owned, h.data(), f->L.in, cudaMemcpyHostToDevice);
  if (e != cudaSuccess) {
    ts_fail(cuda_error(e, "cudaMemcpy (predict frame)", __FILE__, __LINE__));
    predict_frame_free(f);
    return nullptr;
  }
  return f;
}

int predict_frame_enqueue(ts_backend* tb, PredictFrame* f) { return predict_enqueue(as_cuda(tb), *f, f->owned); }

int predict_frame_read(ts_backend* tb, PredictFrame* f, uint64_t* const* masks, int32_t* const* counts) {
  Backend* b = as_cuda(tb);
  TS_TRY(b->activate());
  TS_CUDA(cudaStreamSynchronize(b->stream));
  std::vector<char> out(f->L.out);
  TS_CUDA(cudaMemcpy(out.data(), f->owned + f->L.out_base(), f->L.out, cudaMemcpyDeviceToHost));
  predict_unpack(*f, out.data(), masks, counts);
  return 0;
}

void predict_frame_free(PredictFrame* f) {
  if (!f) return;
  if (f->owned) cudaFree(f->owned);
  delete f;
}

}  // namespace tscuda
