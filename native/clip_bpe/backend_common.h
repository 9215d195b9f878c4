// What every file of the clip_bpe backend shares: Triton's error type made from a message, the
// early return on an error, and the clock Triton's statistics read.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

#include "triton/core/tritonbackend.h"

namespace clip_bpe_backend {

inline TRITONSERVER_Error*
Error(TRITONSERVER_Error_Code code, const std::string& message)
{
  return TRITONSERVER_ErrorNew(code, message.c_str());
}

#define RETURN_IF_ERROR(X)              \
  do {                                  \
    TRITONSERVER_Error* err__ = (X);    \
    if (err__ != nullptr) return err__; \
  } while (false)

// Nanoseconds on the steady clock, as TRITONBACKEND_ModelInstanceReportStatistics takes them.
inline uint64_t
NowNs()
{
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

}  // namespace clip_bpe_backend
