#include "fallback.h"

#include <cstdlib>
#include <cstring>

namespace clip_bpe_backend {
namespace {

TRITONSERVER_Error*
Alloc(
    TRITONSERVER_ResponseAllocator*, const char*, size_t byte_size, TRITONSERVER_MemoryType, int64_t, void*,
    void** buffer, void** buffer_userp, TRITONSERVER_MemoryType* actual_type, int64_t* actual_id)
{
  *buffer = byte_size == 0 ? nullptr : std::malloc(byte_size);
  *buffer_userp = nullptr;
  *actual_type = TRITONSERVER_MEMORY_CPU;
  *actual_id = 0;
  if (byte_size != 0 && *buffer == nullptr) {
    return Error(TRITONSERVER_ERROR_INTERNAL, "out of host memory for the fallback's output");
  }
  return nullptr;
}

TRITONSERVER_Error*
Release(TRITONSERVER_ResponseAllocator*, void* buffer, void*, size_t, TRITONSERVER_MemoryType, int64_t)
{
  std::free(buffer);
  return nullptr;
}

// The client's priority and timeout of `request`. TRITONBACKEND_Request has no getter for its
// priority; it is the core's InferenceRequest, the same object a TRITONSERVER_InferenceRequest
// is (the core casts both to it), so the server API's getter reads it.
TRITONSERVER_Error*
ClientTerms(TRITONBACKEND_Request* request, uint64_t* priority, uint64_t* timeout_us)
{
  RETURN_IF_ERROR(TRITONSERVER_InferenceRequestPriorityUInt64(
      reinterpret_cast<TRITONSERVER_InferenceRequest*>(request), priority));
  return TRITONBACKEND_InferenceRequestTimeoutMicroseconds(request, timeout_us);
}

}  // namespace

TRITONSERVER_Error*
NewFallbackAllocator(TRITONSERVER_ResponseAllocator** allocator)
{
  return TRITONSERVER_ResponseAllocatorNew(allocator, Alloc, Release, nullptr /* start_fn */);
}

FallbackCall::~FallbackCall()
{
  if (response_ != nullptr) {
    TRITONSERVER_InferenceResponseDelete(response_);
  }
}

bool
FallbackCall::Done(bool* which, TRITONSERVER_InferenceResponse* response)
{
  std::lock_guard<std::mutex> lock(mu_);
  if (response != nullptr) {
    response_ = response;
  }
  *which = true;
  cv_.notify_all();
  return abandoned_ && responded_ && released_;
}

void
FallbackCall::Responded(TRITONSERVER_InferenceResponse* response, const uint32_t, void* userp)
{
  auto* call = static_cast<FallbackCall*>(userp);
  // a null response only if Triton had nothing to say: Finish reports it
  if (call->Done(&call->responded_, response)) {
    delete call;
  }
}

void
FallbackCall::Released(TRITONSERVER_InferenceRequest* request, const uint32_t, void* userp)
{
  TRITONSERVER_InferenceRequestDelete(request);
  auto* call = static_cast<FallbackCall*>(userp);
  if (call->Done(&call->released_)) {
    delete call;
  }
}

TRITONSERVER_Error*
FallbackCall::Start(const ModelState& model, const Pending& p, std::unique_ptr<FallbackCall>* out)
{
  uint64_t priority = 0, timeout_us = 0;
  RETURN_IF_ERROR(ClientTerms(p.request, &priority, &timeout_us));
  std::unique_ptr<FallbackCall> call(new FallbackCall());
  call->timeout_us_ = timeout_us != 0 ? timeout_us : model.fallback_timeout_us;
  call->deadline_ = Clock::now() + std::chrono::microseconds(call->timeout_us_);
  for (size_t t : p.fallback) {
    const uint32_t length = p.texts[t].second;
    call->input_.append(reinterpret_cast<const char*>(&length), sizeof(length));
    call->input_.append(p.data, p.texts[t].first, length);
  }
  TRITONSERVER_InferenceRequest* request;
  RETURN_IF_ERROR(TRITONSERVER_InferenceRequestNew(&request, model.server, model.fallback_model.c_str(), -1));
  const int64_t shape[2] = {static_cast<int64_t>(p.fallback.size()), 1};
  TRITONSERVER_Error* err = TRITONSERVER_InferenceRequestSetPriorityUInt64(request, priority);
  if (err == nullptr) {
    err = TRITONSERVER_InferenceRequestSetTimeoutMicroseconds(request, call->timeout_us_);
  }
  if (err == nullptr) {
    err = TRITONSERVER_InferenceRequestAddInput(request, model.input_name.c_str(), TRITONSERVER_TYPE_BYTES, shape, 2);
  }
  if (err == nullptr) {
    err = TRITONSERVER_InferenceRequestAppendInputData(
        request, model.input_name.c_str(), call->input_.data(), call->input_.size(), TRITONSERVER_MEMORY_CPU, 0);
  }
  if (err == nullptr) {
    err = TRITONSERVER_InferenceRequestAddRequestedOutput(request, model.ids_output.c_str());
  }
  if (err == nullptr) {
    err = TRITONSERVER_InferenceRequestSetReleaseCallback(request, Released, call.get());
  }
  if (err == nullptr) {
    err = TRITONSERVER_InferenceRequestSetResponseCallback(request, model.allocator, nullptr, Responded, call.get());
  }
  if (err == nullptr) {
    err = TRITONSERVER_ServerInferAsync(model.server, request, nullptr /* trace */);
  }
  if (err != nullptr) {  // Triton took nothing: no callback will come
    TRITONSERVER_InferenceRequestDelete(request);
    return err;
  }
  *out = std::move(call);
  return nullptr;
}

TRITONSERVER_Error*
FallbackCall::Finish(const ModelState& model, std::unique_ptr<FallbackCall> call, Pending* p)
{
  {
    std::unique_lock<std::mutex> lock(call->mu_);
    if (!call->cv_.wait_until(lock, call->deadline_, [&call] { return call->responded_ && call->released_; })) {
      const uint64_t timeout_ms = call->timeout_us_ / 1000;
      call->abandoned_ = true;  // from here Triton's last callback deletes it
      call.release();
      return Error(
          TRITONSERVER_ERROR_UNAVAILABLE,
          model.fallback_model + " did not answer within the tokenizer hand-over deadline of " +
              std::to_string(timeout_ms) + " ms: this request is dropped (the model's other texts are still served)");
    }
  }
  TRITONSERVER_InferenceResponse* response = call->response_;
  if (response == nullptr) {
    return Error(TRITONSERVER_ERROR_INTERNAL, model.fallback_model + " gave no response");
  }
  TRITONSERVER_Error* err = TRITONSERVER_InferenceResponseError(response);
  if (err != nullptr) {  // owned by the response: copy it
    return Error(TRITONSERVER_ErrorCode(err), TRITONSERVER_ErrorMessage(err));
  }
  const char* name;
  TRITONSERVER_DataType datatype;
  const int64_t* shape;
  uint64_t dims;
  const void* base;
  size_t byte_size;
  TRITONSERVER_MemoryType memory;
  int64_t memory_id;
  void* userp;
  RETURN_IF_ERROR(TRITONSERVER_InferenceResponseOutput(
      response, 0, &name, &datatype, &shape, &dims, &base, &byte_size, &memory, &memory_id, &userp));
  const size_t row_bytes = model.context_length * sizeof(int64_t);
  if (datatype != TRITONSERVER_TYPE_INT64 || byte_size != p->fallback.size() * row_bytes) {
    return Error(TRITONSERVER_ERROR_INTERNAL, model.fallback_model + " returned rows of another shape");
  }
  for (size_t k = 0; k < p->fallback.size(); ++k) {
    std::memcpy(
        p->rows.data() + p->fallback[k] * model.context_length, static_cast<const char*>(base) + k * row_bytes,
        row_bytes);
  }
  return nullptr;  // the call, and with it the response, is deleted on return
}

}  // namespace clip_bpe_backend
