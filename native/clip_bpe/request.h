// One client request inside an execution: its texts read and checked as Triton's own backends
// check a BYTES tensor, the rows of ids it gets, and its response (the outputs it asked for, or
// its error). Every request keeps its own error: a bad request never fails its batch-mates.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "backend_common.h"
#include "model_state.h"

namespace clip_bpe_backend {

struct Pending {
  TRITONBACKEND_Request* request = nullptr;
  std::string data;                                // the TEXT tensor's bytes, gathered
  std::vector<std::pair<size_t, uint32_t>> texts;  // (offset in data, length)
  std::vector<int64_t> rows;                       // [texts, context_length]
  std::vector<size_t> fallback;                    // texts the fallback model tokenizes
  std::vector<size_t> deferred;                    // plain texts, tokenized once the fallback is on its way
  TRITONSERVER_Error* error = nullptr;
};

// Gathers the request's TEXT tensor into `p` and checks it: shape, element count, each text's
// size (max_text_bytes) and UTF-8.
TRITONSERVER_Error* ReadRequest(const ModelState& model, Pending* p);

// <|startoftext|> ids... <|endoftext|>, over a row already filled with the pad id.
void WriteRow(const ModelState& model, const std::vector<int64_t>& ids, int64_t* row);

// Sends the request's response: the outputs it asked for, or its error (also when they cannot be
// written). `answered` says whether the client got them; the returned error, whether sending
// failed. Takes p->error.
TRITONSERVER_Error* Respond(const ModelState& model, Pending* p, bool* answered);

}  // namespace clip_bpe_backend
