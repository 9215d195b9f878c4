// CUDA graphs for TorchScript: what lets the fp16 export replay a small batch's forward as one
// graph launch instead of ~150 kernel launches from the TorchScript interpreter (a one-text
// forward is ~3 ms of host time for 0.4 ms of kernels on a current GPU without a graph).
//
// TorchScript cannot capture a graph itself, so these ops bracket a capture around ordinary
// scripted code (export._ScriptedGraphs):
//
//   static = torch.ops.clip_cuda_graphs.stage(ids, rows, length, key)   # ids into a fixed buffer
//   if not torch.ops.clip_cuda_graphs.captured(static):
//       torch.ops.clip_cuda_graphs.enter(static)       # the caller's capture stream becomes current
//       warmed = tower(static)                         # eager once: lazy initialisation stays out
//       torch.ops.clip_cuda_graphs.capture_begin(static, warmed)
//       out = tower(static)                            # recorded, not run
//       torch.ops.clip_cuda_graphs.capture_end(static, out)
//   return torch.ops.clip_cuda_graphs.replay(static)   # a copy of the graph's output
//
// A graph belongs to one caller: (thread, current stream, device) plus its static shape. Triton's
// libtorch backend runs each KIND_GPU instance on its own thread with its own stream, so instances
// never share a graph, a buffer or a memory pool, and replay on their own streams concurrently.
// A caller's graphs go when its thread ends (an unload): see ThreadSlots.
// One caller's graphs share one memory pool: they replay one at a time on that caller's stream,
// and each result is copied out (replay) before the next replay can reuse the pool's scratch.
// Capture runs on a side stream of the caller's in thread-local mode, so other instances keep
// running meanwhile. If the scripted code between enter() and capture_end() throws, the request
// fails and the slot stays uncaptured; the thread's next stage() closes that capture and makes the
// caller's stream current again, and the next batch of that shape captures afresh.
//
// A graph batch is small, and small batches are what queries are. So the caller runs them on a
// stream of the device's highest priority (urgent(), at the top of the scripted small-batch path):
// while another instance or model keeps the GPU busy with a large batch (a bulk job's texts, an
// image bulk job's vision tower), the block scheduler gives a query's kernels the next free SMs
// instead of queueing them behind each of the large batch's kernels. Triton's libtorch backend
// makes the instance's own stream current again before each execution, and the scripted code
// ends on the host (its result is copied to host memory), so nothing queued on the urgent stream
// outlives the call.
//
// Loaded into tritonserver with LD_PRELOAD (Triton's way for custom TorchScript ops), into Python
// with torch.ops.load_library. Built by clip_triton_build.cuda_graphs against the torch whose
// libtorch the backend runs.

#include <ATen/ATen.h>
#include <ATen/cuda/CUDAGraph.h>
#include <c10/core/InferenceMode.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime_api.h>
#include <torch/library.h>

#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>
#include <tuple>
#include <unordered_map>
#include <vector>

namespace {

using Caller = std::tuple<std::thread::id, c10::StreamId, c10::DeviceIndex>;
using Shape = std::tuple<int64_t, int64_t, int64_t>;  // rows, length, the caller's key

struct Slot {
  at::Tensor input;   // the graph reads its ids from here: stage() copies each batch in
  at::Tensor output;  // what the capture produced; replay() rewrites it in place
  std::unique_ptr<at::cuda::CUDAGraph> graph;
  std::optional<c10::cuda::CUDAStream> caller_stream;  // set while a capture is open
  bool captured = false;
};

std::mutex mutex;
std::map<std::tuple<Caller, Shape>, std::shared_ptr<Slot>> slots;
std::map<Caller, at::cuda::MempoolId_t> pools;
std::map<Caller, c10::cuda::CUDAStream> side_streams;  // each caller's capture stream (side_stream)
std::unordered_map<const void*, std::shared_ptr<Slot>> by_input;  // stage()'s result -> its slot

// The slot whose capture this thread has open (enter() to capture_end()), if any.
thread_local std::shared_ptr<Slot> open_slot;

// `waiter` runs what is queued on it next only after what `producer` has queued so far.
void wait_for(const c10::cuda::CUDAStream& waiter, const c10::cuda::CUDAStream& producer) {
  if (waiter == producer) return;
  cudaEvent_t event;
  C10_CUDA_CHECK(cudaEventCreateWithFlags(&event, cudaEventDisableTiming));
  C10_CUDA_CHECK(cudaEventRecord(event, producer.stream()));
  C10_CUDA_CHECK(cudaStreamWaitEvent(waiter.stream(), event, 0));
  C10_CUDA_CHECK(cudaEventDestroy(event));  // freed once the wait is done with it
}

// Drops this thread's buffers, graphs, pools and capture streams when the thread ends. A Triton
// instance's thread ends when its model is unloaded; a later instance (a reload, another model)
// can get the same thread id and stream handle back, and must then capture anew against its own
// weights instead of replaying graphs that read the freed ones.
struct ThreadSlots {
  bool used = false;
  ~ThreadSlots() {
    if (!used) return;
    std::vector<std::shared_ptr<Slot>> dropped;  // destroyed after the lock is released
    std::lock_guard<std::mutex> lock(mutex);
    auto me = std::this_thread::get_id();
    for (auto it = slots.begin(); it != slots.end();) {
      if (std::get<0>(std::get<0>(it->first)) != me) {
        ++it;
        continue;
      }
      by_input.erase(it->second->input.data_ptr());
      dropped.push_back(it->second);
      it = slots.erase(it);
    }
    for (auto it = pools.begin(); it != pools.end();)
      it = std::get<0>(it->first) == me ? pools.erase(it) : std::next(it);
    for (auto it = side_streams.begin(); it != side_streams.end();)
      it = std::get<0>(it->first) == me ? side_streams.erase(it) : std::next(it);
  }
};
thread_local ThreadSlots thread_slots;

Caller current_caller(c10::DeviceIndex device) {
  return {std::this_thread::get_id(), c10::cuda::getCurrentCUDAStream(device).id(), device};
}

std::shared_ptr<Slot> slot_of(const at::Tensor& input) {
  std::lock_guard<std::mutex> lock(mutex);
  auto found = by_input.find(input.data_ptr());
  TORCH_CHECK(found != by_input.end(), "clip_cuda_graphs: not a tensor from stage()");
  return found->second;
}

void leave(Slot& slot);

// A capture this thread left open (the scripted code in it threw): closed and discarded, and the
// caller's stream current again, so the next batch of that shape captures afresh.
void abandon_open_capture() {
  if (!open_slot) return;
  auto slot = open_slot;
  if (slot->graph) {
    try {
      slot->graph->capture_end();  // fails on an invalidated capture; it ends it either way
    } catch (...) {
    }
    slot->graph.reset();
  }
  leave(*slot);
}

// ids [r, >= length] (r <= rows) -> the caller's static [rows, length] buffer holding them, the
// rows past r zero: their results are never read, but a graph's work may depend on every row (a
// packed graph's tokens), so none may keep an earlier batch's ids. `key` tells apart graphs that
// read same-shaped buffers but differ otherwise (a packed graph's token count): each (rows,
// length, key) has its own buffer and graph.
at::Tensor stage(const at::Tensor& ids, int64_t rows, int64_t length, int64_t key) {
  TORCH_CHECK(ids.is_cuda() && ids.dim() == 2, "clip_cuda_graphs.stage: ids must be a 2-d CUDA tensor");
  abandon_open_capture();
  TORCH_CHECK(ids.size(0) <= rows && ids.size(1) >= length, "clip_cuda_graphs.stage: ids do not fit ", rows, "x", length);
  c10::cuda::CUDAGuard guard(ids.device());
  thread_slots.used = true;
  auto slot_key = std::make_tuple(current_caller(ids.device().index()), Shape{rows, length, key});
  std::shared_ptr<Slot> slot;
  {
    std::lock_guard<std::mutex> lock(mutex);
    auto& found = slots[slot_key];
    if (!found) {
      found = std::make_shared<Slot>();
      // a normal tensor even under Triton's InferenceMode, so callers outside it may write it too
      c10::InferenceMode normal(false);
      found->input = at::zeros({rows, length}, ids.options());
      by_input[found->input.data_ptr()] = found;
    }
    slot = found;
  }
  slot->input.narrow(0, 0, ids.size(0)).copy_(ids.narrow(1, 0, length), /*non_blocking=*/true);
  slot->input.narrow(0, ids.size(0), rows - ids.size(0)).zero_();
  return slot->input;
}

bool captured(const at::Tensor& input) { return slot_of(input)->captured; }

// The caller's capture stream: its own, so a capture never shares a stream with anything else
// the caller runs, and the same one every time, so what a first run on a stream sets up (cuBLAS's
// workspace for it) exists before any capture on it. Of the caller's priority: torch instantiates
// graphs with cudaGraphInstantiateFlagUseNodePriority, so each kernel of a graph keeps the
// priority of the stream it was captured on, whatever stream replays it. Captured on a normal
// stream, a query's graph replayed on the urgent stream would queue behind a bulk batch's kernels.
c10::cuda::CUDAStream side_stream(const Caller& caller, const c10::cuda::CUDAStream& caller_stream) {
  std::lock_guard<std::mutex> lock(mutex);
  auto found = side_streams.find(caller);
  if (found == side_streams.end()) {
    int least = 0, greatest = 0;
    C10_CUDA_CHECK(cudaDeviceGetStreamPriorityRange(&least, &greatest));
    bool urgent = caller_stream.priority() < least;  // numerically lower is more urgent
    found = side_streams.emplace(caller, c10::cuda::getStreamFromPool(urgent, std::get<2>(caller))).first;
  }
  return found->second;
}

// Makes the caller's capture stream current, after what the caller queued (stage's copy). The
// eager run that follows on it initialises outside the capture what a first run initialises.
void enter(const at::Tensor& input) {
  auto slot = slot_of(input);
  TORCH_CHECK(!slot->captured && !slot->caller_stream, "clip_cuda_graphs.enter: captured or capturing already");
  auto device = input.device().index();
  auto caller = c10::cuda::getCurrentCUDAStream(device);
  auto side = side_stream(current_caller(device), caller);
  wait_for(side, caller);
  c10::cuda::setCurrentCUDAStream(side);
  slot->caller_stream = caller;
  open_slot = slot;
}

// Puts the caller's stream back as current; it waits for the capture stream.
void leave(Slot& slot) {
  auto caller = *slot.caller_stream;
  slot.caller_stream.reset();
  open_slot.reset();
  auto side = c10::cuda::getCurrentCUDAStream(caller.device_index());
  c10::cuda::setCurrentCUDAStream(caller);
  wait_for(caller, side);
}

// `warmed`: the eager run's result. Taking it keeps TorchScript from dropping that run as unused.
void capture_begin(const at::Tensor& input, const at::Tensor& warmed) {
  (void)warmed;
  auto slot = slot_of(input);
  TORCH_CHECK(slot->caller_stream, "clip_cuda_graphs.capture_begin: enter() first");
  auto device = input.device().index();
  at::cuda::MempoolId_t pool;
  {
    std::lock_guard<std::mutex> lock(mutex);
    // keyed by the caller's own stream (the capture stream is current now)
    auto& found = pools[Caller{std::this_thread::get_id(), slot->caller_stream->id(), device}];
    if (found == at::cuda::MempoolId_t{0, 0}) found = at::cuda::graph_pool_handle();
    pool = found;
  }
  slot->graph = std::make_unique<at::cuda::CUDAGraph>();
  try {
    slot->graph->capture_begin(pool, cudaStreamCaptureModeThreadLocal);
  } catch (...) {
    slot->graph.reset();
    leave(*slot);
    throw;
  }
}

void capture_end(const at::Tensor& input, const at::Tensor& output) {
  auto slot = slot_of(input);
  TORCH_CHECK(slot->caller_stream && slot->graph, "clip_cuda_graphs.capture_end: no capture open");
  try {
    slot->graph->capture_end();
  } catch (...) {
    slot->graph.reset();
    leave(*slot);
    throw;
  }
  leave(*slot);
  slot->output = output;
  slot->captured = true;
}

// Each thread's urgent stream, per device: the same one every time, so a caller's graphs (keyed
// by its current stream) are found again.
thread_local std::map<c10::DeviceIndex, c10::cuda::CUDAStream> urgent_streams;

// Makes this thread's highest-priority stream current for `like`'s device, after what the current
// stream has queued so far (the backend's copy of the inputs).
void urgent(const at::Tensor& like) {
  TORCH_CHECK(like.is_cuda(), "clip_cuda_graphs.urgent: a CUDA tensor tells the device");
  auto device = like.device().index();
  auto found = urgent_streams.find(device);
  if (found == urgent_streams.end())
    found = urgent_streams.emplace(device, c10::cuda::getStreamFromPool(/*isHighPriority=*/true, device)).first;
  auto current = c10::cuda::getCurrentCUDAStream(device);
  if (current == found->second) return;
  wait_for(found->second, current);
  c10::cuda::setCurrentCUDAStream(found->second);
}

at::Tensor replay(const at::Tensor& input) {
  auto slot = slot_of(input);
  TORCH_CHECK(slot->captured, "clip_cuda_graphs.replay: nothing captured for this buffer");
  c10::cuda::CUDAGuard guard(input.device());
  slot->graph->replay();
  return slot->output.clone();  // the next replay rewrites output: the caller gets its own copy
}

}  // namespace

// CONSERVATIVE: every op here has effects the schema cannot state (a buffer, a capture, the
// current stream), so TorchScript must neither drop, merge nor reorder them.
TORCH_LIBRARY(clip_cuda_graphs, m) {
  auto op = [](const char* schema) { return torch::schema(schema, c10::AliasAnalysisKind::CONSERVATIVE); };
  m.def(op("stage(Tensor ids, int rows, int length, int key=0) -> Tensor"), &stage);
  m.def(op("captured(Tensor input) -> bool"), &captured);
  m.def(op("enter(Tensor input) -> ()"), &enter);
  m.def(op("capture_begin(Tensor input, Tensor warmed) -> ()"), &capture_begin);
  m.def(op("capture_end(Tensor input, Tensor output) -> ()"), &capture_end);
  m.def(op("replay(Tensor input) -> Tensor"), &replay);
  m.def(op("urgent(Tensor like) -> ()"), &urgent);
}
