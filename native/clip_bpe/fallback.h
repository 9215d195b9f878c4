// The hand-over to the fallback model: the texts of one request that only Python can clean (they
// need ftfy) go to the model named by the `fallback_model` parameter (clip_tokenizer_python), as
// one inference request through Triton's in-process API, and their rows come back into that
// request's rows.
//
// The hand-over keeps the client's terms. It carries the request's priority (its traffic class)
// and a deadline: the request's own timeout when it has one, else the model's
// `fallback_timeout_ms`. Both are set on the inner request too, so a queue in front of the
// fallback orders and drops it as it would the client's. And this instance waits for it no
// longer than the deadline: a fallback that has not answered by then fails its request alone
// (UNAVAILABLE, a message naming the model and the deadline), and the instance goes on serving
// the rest of its batch and the requests behind it. A Python stub that hangs without dying thus
// costs the requests that need it their deadline, never the plain texts queued behind them.
//
// Triton may still answer or release an abandoned call later: the call owns everything Triton
// reads or writes (the input bytes, the response) and deletes itself when both of Triton's
// callbacks have come, so nothing is freed under Triton's feet and nothing leaks.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>

#include "backend_common.h"
#include "model_state.h"
#include "request.h"

namespace clip_bpe_backend {

// The allocator of the fallback's responses: plain host memory, freed once copied.
TRITONSERVER_Error* NewFallbackAllocator(TRITONSERVER_ResponseAllocator** allocator);

class FallbackCall {
 public:
  using Clock = std::chrono::steady_clock;

  // Sends request `p`'s fallback texts (p.fallback) to the fallback model. On success `call`
  // holds the call in flight; Finish takes its rows.
  static TRITONSERVER_Error* Start(const ModelState& model, const Pending& p, std::unique_ptr<FallbackCall>* call);

  // Waits for the call until its deadline, then copies its rows into p's (or returns its error).
  // A call past its deadline is abandoned (it deletes itself when Triton is done with it) and
  // its request gets the deadline's error.
  static TRITONSERVER_Error* Finish(const ModelState& model, std::unique_ptr<FallbackCall> call, Pending* p);

  ~FallbackCall();

 private:
  FallbackCall() = default;
  static void Responded(TRITONSERVER_InferenceResponse* response, const uint32_t flags, void* userp);
  static void Released(TRITONSERVER_InferenceRequest* request, const uint32_t flags, void* userp);
  // Marks one of Triton's callbacks done (keeping its response, if any); true when the call was
  // abandoned and this was the last.
  bool Done(bool* which, TRITONSERVER_InferenceResponse* response = nullptr);

  std::string input_;  // the texts sent, as a BYTES tensor (the request reads it until released)
  Clock::time_point deadline_;
  uint64_t timeout_us_ = 0;
  std::mutex mu_;
  std::condition_variable cv_;
  bool responded_ = false, released_ = false, abandoned_ = false;
  TRITONSERVER_InferenceResponse* response_ = nullptr;
};

}  // namespace clip_bpe_backend
