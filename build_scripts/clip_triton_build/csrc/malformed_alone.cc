// A Triton custom batching strategy: a request whose BYTES input is malformed is batched alone.
//
// Why: the r24.10 core accepts a BYTES tensor whose last length prefix overstates its data
// (InferenceRequest::ValidateBytesInputs never checks what is left of the last element), and
// the Python backend then fails every request of the execution that holds it
// (SaveRequestsToSharedMemory -> GetInputTensor -> ValidateStringBuffer). With a dynamic batcher
// on the tokenizer, one such request would fail its batch-mates. This strategy keeps the batcher
// and keeps a bad request alone: it parses each request's BYTES inputs as ValidateStringBuffer
// will, and a request that would not parse either starts a batch that takes nothing more, or is
// left for the next batch, which it then starts.
//
// Triton loads it as `batchstrategy.so` from the model's folder (core: backend_model.cc,
// TritonModel::Create). The five functions below are its whole interface (tritonbackend.h,
// "TRITONBACKEND Batching"); the TRITONBACKEND_* calls they make resolve in the server process.

#include <cstdint>
#include <cstring>

#include "triton/core/tritonbackend.h"

namespace {

// One pending batch: how many requests it holds, and whether its first one is malformed (then
// it takes no other).
struct PendingBatch {
  uint32_t requests = 0;
  bool closed = false;
};

// The element count `shape` calls for, or -1 for a shape no request can carry.
int64_t ElementCount(const int64_t* shape, uint32_t dims)
{
  int64_t count = 1;
  for (uint32_t d = 0; d < dims; ++d) {
    if (shape[d] < 0) {
      return -1;
    }
    count *= shape[d];
  }
  return count;
}

// Walks one BYTES tensor spread over several buffers: each element is a 4-byte little-endian
// length, then that many bytes. Well-formed means exactly `expected` elements and no byte over,
// which is what ValidateStringBuffer demands of the same bytes gathered into one buffer.
class BytesWalker {
 public:
  explicit BytesWalker(int64_t expected) : expected_(expected) {}

  bool Feed(const char* data, uint64_t size)
  {
    while (size > 0) {
      if (remaining_ > 0) {  // inside an element's data
        const uint64_t take = size < remaining_ ? size : remaining_;
        remaining_ -= take;
        data += take;
        size -= take;
        continue;
      }
      // inside a length prefix, which may straddle buffers
      prefix_[prefix_bytes_++] = *data++;
      --size;
      if (prefix_bytes_ == sizeof(uint32_t)) {
        uint32_t length;
        std::memcpy(&length, prefix_, sizeof(length));
        prefix_bytes_ = 0;
        remaining_ = length;
        if (++elements_ > expected_) {
          return false;
        }
      }
    }
    return true;
  }

  bool Complete() const
  {
    return remaining_ == 0 && prefix_bytes_ == 0 && elements_ == expected_;
  }

 private:
  const int64_t expected_;
  int64_t elements_ = 0;
  uint64_t remaining_ = 0;
  char prefix_[sizeof(uint32_t)] = {};
  uint32_t prefix_bytes_ = 0;
};

bool BytesInputWellFormed(TRITONBACKEND_Input* input)
{
  const char* name;
  TRITONSERVER_DataType datatype;
  const int64_t* shape;
  uint32_t dims;
  uint64_t byte_size;
  uint32_t buffers;
  TRITONSERVER_Error* err = TRITONBACKEND_InputProperties(
      input, &name, &datatype, &shape, &dims, &byte_size, &buffers);
  if (err != nullptr) {
    TRITONSERVER_ErrorDelete(err);
    return false;
  }
  if (datatype != TRITONSERVER_TYPE_BYTES) {
    return true;  // the core has already checked its byte size against its shape
  }
  const int64_t expected = ElementCount(shape, dims);
  if (expected < 0) {
    return false;
  }
  BytesWalker walker(expected);
  for (uint32_t b = 0; b < buffers; ++b) {
    const void* data;
    uint64_t size;
    TRITONSERVER_MemoryType memory = TRITONSERVER_MEMORY_CPU;
    int64_t memory_id = 0;
    err = TRITONBACKEND_InputBuffer(input, b, &data, &size, &memory, &memory_id);
    if (err != nullptr) {
      TRITONSERVER_ErrorDelete(err);
      return false;
    }
    // Bytes in GPU memory cannot be read here: such a request goes alone.
    if (memory == TRITONSERVER_MEMORY_GPU) {
      return false;
    }
    if (!walker.Feed(static_cast<const char*>(data), size)) {
      return false;
    }
  }
  return walker.Complete();
}

bool RequestWellFormed(TRITONBACKEND_Request* request)
{
  uint32_t count;
  TRITONSERVER_Error* err = TRITONBACKEND_RequestInputCount(request, &count);
  if (err != nullptr) {
    TRITONSERVER_ErrorDelete(err);
    return false;
  }
  for (uint32_t i = 0; i < count; ++i) {
    TRITONBACKEND_Input* input;
    err = TRITONBACKEND_RequestInputByIndex(request, i, &input);
    if (err != nullptr) {
      TRITONSERVER_ErrorDelete(err);
      return false;
    }
    if (!BytesInputWellFormed(input)) {
      return false;
    }
  }
  return true;
}

}  // namespace

extern "C" {

// No model-wide state: every decision is about the pending batch and one request.
TRITONSERVER_Error*
TRITONBACKEND_ModelBatcherInitialize(
    TRITONBACKEND_Batcher** batcher, TRITONBACKEND_Model* /* model */)
{
  *batcher = nullptr;
  return nullptr;
}

TRITONSERVER_Error*
TRITONBACKEND_ModelBatcherFinalize(TRITONBACKEND_Batcher* /* batcher */)
{
  return nullptr;
}

TRITONSERVER_Error*
TRITONBACKEND_ModelBatchInitialize(
    const TRITONBACKEND_Batcher* /* batcher */, void** userp)
{
  *userp = new PendingBatch();
  return nullptr;
}

TRITONSERVER_Error*
TRITONBACKEND_ModelBatchFinalize(void* userp)
{
  delete static_cast<PendingBatch*>(userp);
  return nullptr;
}

TRITONSERVER_Error*
TRITONBACKEND_ModelBatchIncludeRequest(
    TRITONBACKEND_Request* request, void* userp, bool* should_include)
{
  auto* batch = static_cast<PendingBatch*>(userp);
  const bool well_formed = RequestWellFormed(request);
  if (batch->requests == 0) {
    // A batch's first request is always taken: refusing it would leave it at the head of the
    // queue, where the next batch would refuse it again.
    *should_include = true;
    batch->closed = !well_formed;
  } else {
    *should_include = well_formed && !batch->closed;
  }
  if (*should_include) {
    ++batch->requests;
  }
  return nullptr;
}

}  // extern "C"
