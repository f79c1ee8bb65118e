// backend.cu — the CUDA device: vtable, construction, the staging buffers that
// carry activations over PCIe, and the bookkeeping shared by the op files.
// One stream per backend; every op is: pack inputs into pinned memory, one copy
// up, kernels, one copy down, wait. Buffers grow to the largest call seen and
// are then reused, so steady-state calls allocate nothing.
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <new>
#include <string>
#include <tuple>
#include <utility>
#include "common.cuh"

namespace tscuda {

const char* dtype_str(ts_dtype d) {
  switch (d) {
    case TS_F32: return "f32";
    case TS_F16: return "f16";
    case TS_BF16: return "bf16";
    case TS_I8: return "i8";
  }
  return "?";
}

std::string cuda_error(cudaError_t e, const char* what, const char* file, int line) {
  const char* base = std::strrchr(file, '/');
  return std::string("cuda: ") + what + " failed: " + cudaGetErrorName(e) + " (" + cudaGetErrorString(e) + ") at " +
         (base ? base + 1 : file) + ":" + std::to_string(line);
}

Backend::~Backend() {
  cudaSetDevice(device);
  if (stream) cudaStreamSynchronize(stream);
  if (h_in) cudaFreeHost(h_in);
  if (h_out) cudaFreeHost(h_out);
  if (d_arena) cudaFree(d_arena);
  if (stream) cudaStreamDestroy(stream);
}

int Backend::activate() {
  TS_CUDA(cudaSetDevice(device));
  return 0;
}

namespace {
size_t grown(size_t have, size_t need) {
  size_t cap = have + have / 2;
  if (cap < need) cap = need;
  const size_t mb = size_t(1) << 20;
  return (cap + mb - 1) / mb * mb;
}
}  // namespace

int Backend::ensure(size_t in_bytes, size_t out_bytes, size_t dev_bytes) {
  if (in_bytes > h_in_cap) {
    if (h_in) cudaFreeHost(h_in);
    h_in = nullptr;
    h_in_cap = 0;
    const size_t cap = grown(0, in_bytes);
    TS_CUDA(cudaHostAlloc(reinterpret_cast<void**>(&h_in), cap, cudaHostAllocDefault));
    h_in_cap = cap;
  }
  if (out_bytes > h_out_cap) {
    if (h_out) cudaFreeHost(h_out);
    h_out = nullptr;
    h_out_cap = 0;
    const size_t cap = grown(0, out_bytes);
    TS_CUDA(cudaHostAlloc(reinterpret_cast<void**>(&h_out), cap, cudaHostAllocDefault));
    h_out_cap = cap;
  }
  if (dev_bytes > d_arena_cap) {
    TS_CUDA(cudaStreamSynchronize(stream));
    if (d_arena) cudaFree(d_arena);
    d_arena = nullptr;
    const size_t cap = grown(d_arena_cap, dev_bytes);
    d_arena_cap = 0;
    TS_CUDA(cudaMalloc(reinterpret_cast<void**>(&d_arena), cap));
    d_arena_cap = cap;
  }
  return 0;
}

int prepare_kernel(Backend* b, const void* kernel, int threads, size_t smem, int* blocks_per_sm) {
  // (device, kernel, smem) -> blocks per SM; the attribute is raised once per kernel
  static std::mutex mu;
  static std::map<std::pair<int, const void*>, size_t> raised;
  static std::map<std::tuple<int, const void*, int, size_t>, int> occupancy;
  std::lock_guard<std::mutex> lk(mu);
  auto key = std::make_tuple(b->device, kernel, threads, smem);
  auto it = occupancy.find(key);
  if (it != occupancy.end()) {
    *blocks_per_sm = it->second;
    return 0;
  }
  if (smem > b->smem_optin)
    return ts_fail("cuda: a kernel needs " + std::to_string(smem) + " bytes of shared memory, the device allows " +
                   std::to_string(b->smem_optin));
  // raised for any size: the 48 KB default limit counts static shared memory too
  size_t& have = raised[{b->device, kernel}];
  if (smem > have) {
    TS_CUDA(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)));
    have = smem;
  }
  int n = 0;
  TS_CUDA(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, kernel, threads, smem));
  if (n < 1) return ts_fail("cuda: a kernel cannot fit one block of " + std::to_string(threads) + " threads on an SM");
  occupancy[key] = n;
  *blocks_per_sm = n;
  return 0;
}

bool cluster_fits(Backend* b, const void* kernel, int threads, size_t smem, int cluster) {
  static std::mutex mu;
  static std::map<std::tuple<int, const void*, int, size_t, int>, bool> fits;
  std::lock_guard<std::mutex> lk(mu);
  const auto key = std::make_tuple(b->device, kernel, threads, smem, cluster);
  if (auto it = fits.find(key); it != fits.end()) return it->second;
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = dim3(unsigned(cluster));
  cfg.blockDim = dim3(unsigned(threads));
  cfg.dynamicSmemBytes = smem;
  cudaLaunchAttribute attr;
  attr.id = cudaLaunchAttributeClusterDimension;
  attr.val.clusterDim.x = unsigned(cluster);
  attr.val.clusterDim.y = attr.val.clusterDim.z = 1;
  cfg.attrs = &attr;
  cfg.numAttrs = 1;
  int clusters = 0;
  const bool ok = cudaOccupancyMaxActiveClusters(&clusters, kernel, &cfg) == cudaSuccess && clusters >= 1;
  if (!ok) cudaGetLastError();  // a refused query is an answer, not a sticky error
  return fits[key] = ok;
}

Tuning get_tuning(ts_backend* b) { return as_cuda(b)->tuning; }
void set_tuning(ts_backend* b, const Tuning& t) { as_cuda(b)->tuning = t; }
cudaStream_t backend_stream(ts_backend* b) { return as_cuda(b)->stream; }
int backend_sm_count(ts_backend* b) { return as_cuda(b)->sms; }

namespace {

void destroy(ts_backend* b) { delete as_cuda(b); }

int set_variant(ts_backend* b, const char* variant) {
  (void)b;
  if (std::strcmp(variant, "auto") == 0) return 0;
  return ts_fail(std::string("ts_backend_set_variant: the cuda backend has no variant '") + variant +
                 "' (only \"auto\"; variants are CPU instruction sets)");
}

const ts_backend_ops kCudaOps = {
    "cuda",         destroy,          set_variant,      weight_create, weight_free,
    expert_create,  expert_free,      predictor_create, predictor_free, kvcache_create,
    kvcache_free,   kvcache_grow,     kvcache_copy,     matmul,           rmsnorm,          rope,          router_topk,
    predict_many,   attention,        moe,
};

int pick_device() {
  const char* env = std::getenv("TS_CUDA_DEVICE");
  return env && *env ? std::atoi(env) : 0;
}

}  // namespace
}  // namespace tscuda

bool ts_cuda_available() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();  // clear: "no driver" is an answer, not an error to carry
    return false;
  }
  return n > 0;
}

ts_backend* ts_cuda_backend_create() {
  using namespace tscuda;
  int count = 0;
  cudaError_t e = cudaGetDeviceCount(&count);
  if (e != cudaSuccess || count == 0) {
    cudaGetLastError();
    ts_fail(std::string("cuda: no usable GPU (") +
            (e != cudaSuccess ? std::string(cudaGetErrorName(e)) + ": " + cudaGetErrorString(e) : "no devices") + ")");
    return nullptr;
  }
  const int dev = pick_device();
  if (dev < 0 || dev >= count) {
    ts_fail("cuda: TS_CUDA_DEVICE = " + std::to_string(dev) + " but " + std::to_string(count) + " GPU(s) are visible");
    return nullptr;
  }
  auto* b = new (std::nothrow) Backend();
  if (!b) return ts_fail("out of memory"), nullptr;
  b->ops = &kCudaOps;
  b->device = dev;
  auto fail = [&](cudaError_t err, const char* what) -> ts_backend* {
    ts_fail(cuda_error(err, what, __FILE__, __LINE__));
    delete b;
    return nullptr;
  };
  if ((e = cudaSetDevice(dev)) != cudaSuccess) return fail(e, "cudaSetDevice");
  cudaDeviceProp prop;
  if ((e = cudaGetDeviceProperties(&prop, dev)) != cudaSuccess) return fail(e, "cudaGetDeviceProperties");
  if (prop.major < 8) {
    ts_fail(std::string("cuda: ") + prop.name + " is sm_" + std::to_string(prop.major) + std::to_string(prop.minor) +
            "; the kernels need sm_80 or newer");
    delete b;
    return nullptr;
  }
  if ((e = cudaStreamCreateWithFlags(&b->stream, cudaStreamNonBlocking)) != cudaSuccess)
    return fail(e, "cudaStreamCreateWithFlags");
  b->sms = prop.multiProcessorCount;
  b->cc_major = prop.major;
  b->cc_minor = prop.minor;
  b->smem_optin = prop.sharedMemPerBlockOptin;
  b->l2_bytes = size_t(prop.l2CacheSize);
  // TS_CUDA_FUSED: the fused FFN kernel for batches of 1-2: 1 always, 0 never, -1 (default) dense-with-mask only
  if (const char* fz = std::getenv("TS_CUDA_FUSED"); fz && *fz) b->tuning.fused = std::atoi(fz) > 0 ? 1 : std::atoi(fz) == 0 ? 0 : -1;
  // TS_CUDA_STREAM: the streaming FFN kernel for batches of 1-2: 1 always, 0 never, -1 (default) sparse only
  if (const char* st = std::getenv("TS_CUDA_STREAM"); st && *st) b->tuning.stream = std::atoi(st) > 0 ? 1 : std::atoi(st) == 0 ? 0 : -1;
  // TS_CUDA_STREAM_SPLIT: larger small batches split into calls of this many tokens (1 or 2) for the streaming
  // kernel, 0: off
  if (const char* st = std::getenv("TS_CUDA_STREAM_SPLIT"); st && *st) b->tuning.stream_split = std::atoi(st);
  // TS_CUDA_STREAM_BLOCKS: blocks per streaming launch (0: one per SM per call)
  if (const char* st = std::getenv("TS_CUDA_STREAM_BLOCKS"); st && *st) b->tuning.stream_blocks = std::atoi(st);
  // TS_CUDA_STREAM_CLUSTER: blocks per cluster of the streaming kernel's cluster tail, 0: the group tail, -1: auto
  if (const char* st = std::getenv("TS_CUDA_STREAM_CLUSTER"); st && *st) b->tuning.stream_cluster = std::atoi(st);
  // a first small arena so the first call does not pay for growth of tiny buffers
  if (b->ensure(size_t(1) << 20, size_t(1) << 20, size_t(8) << 20) != 0) {
    delete b;
    return nullptr;
  }
  b->description = std::string("cuda ") + prop.name + " sm_" + std::to_string(prop.major) +
                   std::to_string(prop.minor) + " (" + std::to_string(prop.multiProcessorCount) + " SMs, " +
                   std::to_string(prop.totalGlobalMem >> 30) + " GiB)";
  return b;
}
