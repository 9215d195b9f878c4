// The model `clip_tokenizer` as the clip_bpe backend holds it: its config (tensor names and the
// parameters of model_repository/clip_tokenizer/config.pbtxt, whose comments say why each value),
// the vocabulary every instance shares, and what it needs to hand texts to the fallback model.
#pragma once

#include <cstdint>
#include <string>

#include "backend_common.h"
#include "clip_bpe.h"

namespace clip_bpe_backend {

class ModelState {
 public:
  static TRITONSERVER_Error* Create(TRITONBACKEND_Model* model, ModelState** state);
  ~ModelState();

  TRITONSERVER_Server* server = nullptr;
  TRITONSERVER_ResponseAllocator* allocator = nullptr;  // for the fallback's responses (fallback.h)
  std::string input_name, ids_output, count_output, fallback_model;
  int64_t context_length = 0, pad_id = 0;
  uint64_t max_text_bytes = 0;
  // How long a hand-over to the fallback model may take when the request carries no timeout of
  // its own (fallback.h).
  uint64_t fallback_timeout_us = 0;
  clip_bpe::CodePointSet plain_symbols;
  clip_bpe::Vocabulary vocabulary;

 private:
  TRITONSERVER_Error* ReadConfig(TRITONBACKEND_Model* model, std::string* tokenizer_path);
  TRITONSERVER_Error* ReadTokenizer(const std::string& path, const std::string& sot, const std::string& eot);
};

}  // namespace clip_bpe_backend
