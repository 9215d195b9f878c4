// The GPU's SMs, shared by rule between queries and bulk batches.
//
// A batch that has started is not interrupted: its kernels hold the SMs they were given until
// their blocks finish, and a high-priority stream (urgent(), cuda_graphs.cpp) only takes the next
// SM that frees. A query is a chain of ~150 small kernels, each waiting for the one before, so
// beside a large batch each of them waits for an SM again: beside a vision tower's 256-image batch
// a one-text query took tens of milliseconds instead of two.
//
// So large batches run where they cannot take every SM: bulk() makes current a stream of a CUDA
// green context that holds all of the device's SMs but `query_sms` (rounded to the driver's SM
// granularity). The small batches (urgent(), the primary context) may use every SM, and the ones
// the bulk batches cannot touch are free for them at once. One green context per device and
// reserve, shared by every model and instance of the process, so all bulk work leaves the same
// SMs free; each thread (a Triton instance) gets a stream of its own in it, so instances still
// run concurrently. The caller's stream is waited for first (the backend's copy of the inputs),
// and the scripted code ends on the host (its result is copied to host memory), as after urgent().
//
// The driver's green-context API (CUDA 12.4 and later) is reached through the runtime's entry
// point lookup, so the library needs no link to libcuda: a driver without it, or a device that
// cannot split (too few SMs), runs the bulk batch on the caller's stream, as before.

#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda.h>
#include <cuda_runtime_api.h>
#include <torch/library.h>

#include <cstdlib>
#include <map>
#include <mutex>
#include <optional>
#include <vector>

namespace {

struct Driver {
  decltype(&cuDeviceGet) device_get = nullptr;
  decltype(&cuDeviceGetDevResource) get_resource = nullptr;
  decltype(&cuDevSmResourceSplitByCount) split = nullptr;
  decltype(&cuDevResourceGenerateDesc) describe = nullptr;
  decltype(&cuGreenCtxCreate) create = nullptr;
  decltype(&cuGreenCtxStreamCreate) stream_create = nullptr;
  bool complete = false;
};

template <typename F>
void lookup(const char* name, F* out) {
  void* fn = nullptr;
  cudaDriverEntryPointQueryResult found;
#if CUDART_VERSION >= 12050
  auto looked_up = cudaGetDriverEntryPointByVersion(name, &fn, CUDA_VERSION, cudaEnableDefault, &found);
#else
  auto looked_up = cudaGetDriverEntryPoint(name, &fn, cudaEnableDefault, &found);
#endif
  if (looked_up == cudaSuccess && found == cudaDriverEntryPointSuccess)
    *out = reinterpret_cast<F>(fn);
  else
    cudaGetLastError();  // a missing symbol is an answer, not an error for the next call
}

const Driver& driver() {
  static const Driver d = [] {
    Driver d;
    lookup("cuDeviceGet", &d.device_get);
    lookup("cuDeviceGetDevResource", &d.get_resource);
    lookup("cuDevSmResourceSplitByCount", &d.split);
    lookup("cuDevResourceGenerateDesc", &d.describe);
    lookup("cuGreenCtxCreate", &d.create);
    lookup("cuGreenCtxStreamCreate", &d.stream_create);
    d.complete = d.device_get && d.get_resource && d.split && d.describe && d.create && d.stream_create;
    return d;
  }();
  return d;
}

// The green context of (device, reserve): null where the device cannot leave `reserve` SMs free.
struct Bulk {
  CUgreenCtx context = nullptr;
  unsigned sms = 0;    // the SMs bulk batches may use
  unsigned total = 0;  // the device's
  std::vector<CUstream> idle_streams;  // streams of threads that ended, for the next thread
};

std::mutex mutex;
std::map<std::pair<c10::DeviceIndex, int64_t>, Bulk> bulks;

Bulk& bulk_of(c10::DeviceIndex device, int64_t reserve) {
  std::lock_guard<std::mutex> lock(mutex);
  auto [it, fresh] = bulks.try_emplace({device, reserve});
  if (!fresh) return it->second;
  const Driver& d = driver();
  if (!d.complete) return it->second;
  CUdevice dev;
  CUdevResource all;
  if (d.device_get(&dev, device) != CUDA_SUCCESS || d.get_resource(dev, &all, CU_DEV_RESOURCE_TYPE_SM) != CUDA_SUCCESS)
    return it->second;
  it->second.total = all.sm.smCount;
  if (reserve >= static_cast<int64_t>(all.sm.smCount)) return it->second;
  // One group of as many SMs as leave `reserve`; the driver rounds a group up to its granularity,
  // so ask for less until the group fits.
  for (unsigned want = all.sm.smCount - reserve; want > 0; --want) {
    CUdevResource group, rest;
    unsigned groups = 1;
    if (d.split(&group, &groups, &all, &rest, 0, want) != CUDA_SUCCESS || groups != 1) continue;
    if (group.sm.smCount + reserve > all.sm.smCount) continue;
    CUdevResourceDesc desc;
    CUgreenCtx context;
    if (d.describe(&desc, &group, 1) != CUDA_SUCCESS || d.create(&context, desc, dev, CU_GREEN_CTX_DEFAULT_STREAM) != CUDA_SUCCESS)
      return it->second;
    it->second.context = context;
    it->second.sms = group.sm.smCount;
    break;
  }
  return it->second;
}

// This thread's bulk stream per (device, reserve); handed to the next thread when this one ends
// (a Triton instance's thread ends when its model unloads), never destroyed: the caching allocator
// may still hold blocks recorded against it.
struct ThreadStreams {
  std::map<std::pair<c10::DeviceIndex, int64_t>, c10::cuda::CUDAStream> streams;
  ~ThreadStreams() {
    std::lock_guard<std::mutex> lock(mutex);
    for (auto& [key, stream] : streams) bulks[key].idle_streams.push_back(stream.stream());
  }
};
thread_local ThreadStreams thread_streams;

std::optional<c10::cuda::CUDAStream> stream_of(c10::DeviceIndex device, int64_t reserve) {
  auto key = std::make_pair(device, reserve);
  auto found = thread_streams.streams.find(key);
  if (found != thread_streams.streams.end()) return found->second;
  Bulk& bulk = bulk_of(device, reserve);
  if (!bulk.context) return std::nullopt;
  CUstream raw = nullptr;
  {
    std::lock_guard<std::mutex> lock(mutex);
    if (!bulk.idle_streams.empty()) {
      raw = bulk.idle_streams.back();
      bulk.idle_streams.pop_back();
    }
  }
  if (!raw && driver().stream_create(&raw, bulk.context, CU_STREAM_NON_BLOCKING, 0) != CUDA_SUCCESS) return std::nullopt;
  auto stream = c10::cuda::getStreamFromExternal(reinterpret_cast<cudaStream_t>(raw), device);
  thread_streams.streams.emplace(key, stream);
  return stream;
}

// The SMs to leave free: the model file's `query_sms`, unless the server's environment sets
// CLIP_QUERY_SMS (an operator's choice for a GPU whose queries need more, or 0 for none: how the
// GPU run measures the split against no split on one server build).
int64_t reserve_for(int64_t query_sms) {
  static const int64_t chosen = [] {
    const char* value = std::getenv("CLIP_QUERY_SMS");
    return value && *value ? std::strtoll(value, nullptr, 10) : -1;
  }();
  return chosen >= 0 ? chosen : query_sms;
}

// Makes this thread's bulk stream current for `like`'s device, after what the current stream has
// queued so far (the backend's copy of the inputs). No SMs to leave: the caller's stream stays.
void bulk(const at::Tensor& like, int64_t query_sms) {
  TORCH_CHECK(like.is_cuda(), "clip_cuda_graphs.bulk: a CUDA tensor tells the device");
  query_sms = reserve_for(query_sms);
  if (query_sms <= 0) return;
  auto device = like.device().index();
  auto stream = stream_of(device, query_sms);
  if (!stream) return;
  auto current = c10::cuda::getCurrentCUDAStream(device);
  if (current == *stream) return;
  cudaEvent_t event;
  C10_CUDA_CHECK(cudaEventCreateWithFlags(&event, cudaEventDisableTiming));
  C10_CUDA_CHECK(cudaEventRecord(event, current.stream()));
  C10_CUDA_CHECK(cudaStreamWaitEvent(stream->stream(), event, 0));
  C10_CUDA_CHECK(cudaEventDestroy(event));
  c10::cuda::setCurrentCUDAStream(*stream);
}

}  // namespace

// CONSERVATIVE, as the other ops: bulk() changes the current stream, which no schema can state.
TORCH_LIBRARY_FRAGMENT(clip_cuda_graphs, m) {
  auto op = [](const char* schema) { return torch::schema(schema, c10::AliasAnalysisKind::CONSERVATIVE); };
  m.def(op("bulk(Tensor like, int query_sms) -> ()"), &bulk);
}
