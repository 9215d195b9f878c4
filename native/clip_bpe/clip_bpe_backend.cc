// clip_bpe: the Triton backend of the model `clip_tokenizer`: Triton's entry points.
//
// Why a C++ backend: through Triton's Python backend every request pays a hop to a stub process
// (~0.4 ms with the host idle, more under load), which on a GPU host made the tokenizer the
// largest per-request CPU cost of the ensemble. Most texts are plain (clip_bpe.h says what that
// means and why their tokens need no ftfy), and this backend tokenizes those in-process.
//
// Every other text needs ftfy, which only Python has: the backend hands those texts to the Python
// model named by the `fallback_model` parameter (clip_tokenizer_python), one inference request
// per client request, with the client's priority and a deadline (fallback.h). A request's error
// there is that request's error here; its batch-mates are unaffected.
//
// Two outputs, each written only when requested: the ids (what the encoder reads) and each text's
// token count, <|startoftext|> through <|endoftext|> (what OpenAI's API reports as usage).
//
// The files, as Triton sees the backend:
//   model_state.h     the model: config, vocabulary, the fallback's allocator
//   instance_state.h  an instance: its tokenizer and the execution of a batch
//   request.h         one request: its texts read and checked, its response
//   fallback.h        the hand-over to the Python tokenizer
//   clip_bpe.h        the core: no Triton in it, unit-tested alone (clip_bpe_test.cc)
//
// Exact: tests compare the served ids with open_clip's on hard strings, random ASCII and random
// Unicode, and the core's unit tests on the same strings.

#include "instance_state.h"
#include "model_state.h"

using clip_bpe_backend::InstanceState;
using clip_bpe_backend::ModelState;

extern "C" {

TRITONSERVER_Error*
TRITONBACKEND_ModelInitialize(TRITONBACKEND_Model* model)
{
  ModelState* state = nullptr;
  RETURN_IF_ERROR(ModelState::Create(model, &state));
  return TRITONBACKEND_ModelSetState(model, state);
}

TRITONSERVER_Error*
TRITONBACKEND_ModelFinalize(TRITONBACKEND_Model* model)
{
  void* state;
  RETURN_IF_ERROR(TRITONBACKEND_ModelState(model, &state));
  delete static_cast<ModelState*>(state);
  return nullptr;
}

TRITONSERVER_Error*
TRITONBACKEND_ModelInstanceInitialize(TRITONBACKEND_ModelInstance* instance)
{
  TRITONBACKEND_Model* model;
  void* model_state;
  RETURN_IF_ERROR(TRITONBACKEND_ModelInstanceModel(instance, &model));
  RETURN_IF_ERROR(TRITONBACKEND_ModelState(model, &model_state));
  return TRITONBACKEND_ModelInstanceSetState(
      instance, new InstanceState(static_cast<ModelState*>(model_state), instance));
}

TRITONSERVER_Error*
TRITONBACKEND_ModelInstanceFinalize(TRITONBACKEND_ModelInstance* instance)
{
  void* state;
  RETURN_IF_ERROR(TRITONBACKEND_ModelInstanceState(instance, &state));
  delete static_cast<InstanceState*>(state);
  return nullptr;
}

TRITONSERVER_Error*
TRITONBACKEND_ModelInstanceExecute(
    TRITONBACKEND_ModelInstance* instance, TRITONBACKEND_Request** requests, const uint32_t request_count)
{
  void* state;
  RETURN_IF_ERROR(TRITONBACKEND_ModelInstanceState(instance, &state));
  // Every request is answered and released inside, each with its own response or error.
  static_cast<InstanceState*>(state)->Execute(requests, request_count);
  return nullptr;
}

}  // extern "C"
