// One instance of `clip_tokenizer`: a tokenizer with its own word cache (this instance's thread
// alone uses it) and the execution of a batch of requests.
//
// An execution first reads every request and starts the hand-overs (fallback.h) of the texts only
// Python can clean, so the Python instances work while this one tokenizes the plain texts; then it
// takes the hand-overs' rows, each within its deadline, and answers every request with its own
// rows or its own error.
#pragma once

#include "backend_common.h"
#include "clip_bpe.h"
#include "model_state.h"

namespace clip_bpe_backend {

class InstanceState {
 public:
  InstanceState(ModelState* model, TRITONBACKEND_ModelInstance* instance)
      : model_(model), instance_(instance),
        tokenizer_(&model->vocabulary, &model->plain_symbols, static_cast<size_t>(model->context_length - 2))
  {
  }

  // Answers and releases every request, each with its own response or error.
  void Execute(TRITONBACKEND_Request** requests, uint32_t count);

 private:
  ModelState* model_;
  TRITONBACKEND_ModelInstance* instance_;
  clip_bpe::Tokenizer tokenizer_;
};

}  // namespace clip_bpe_backend
