#include "request.h"

#include <algorithm>
#include <cstring>

namespace clip_bpe_backend {
namespace {

// The TEXT tensor's bytes checked as Triton's backends check them (ValidateStringBuffer):
// exactly `expected` elements of a 4-byte length and that many bytes.
TRITONSERVER_Error*
ParseBytes(const std::string& name, Pending* p, uint64_t expected)
{
  size_t at = 0;
  const size_t size = p->data.size();
  while (size - at >= sizeof(uint32_t)) {
    if (p->texts.size() >= expected) {
      return Error(
          TRITONSERVER_ERROR_INVALID_ARG, "unexpected number of string elements " +
                                              std::to_string(p->texts.size() + 1) + " for inference input '" +
                                              name + "', expecting " + std::to_string(expected));
    }
    uint32_t length;
    std::memcpy(&length, p->data.data() + at, sizeof(length));
    at += sizeof(length);
    if (size - at < length) {
      return Error(
          TRITONSERVER_ERROR_INVALID_ARG, "incomplete string data for inference input '" + name +
                                              "', expecting string of length " + std::to_string(length) +
                                              " but only " + std::to_string(size - at) + " bytes available");
    }
    p->texts.emplace_back(at, length);
    at += length;
  }
  if (at != size || p->texts.size() != expected) {
    return Error(
        TRITONSERVER_ERROR_INVALID_ARG, "expected " + std::to_string(expected) +
                                            " string elements for inference input '" + name + "', got " +
                                            std::to_string(p->texts.size()));
  }
  return nullptr;
}

// One output of a response, copied from host memory.
TRITONSERVER_Error*
WriteOutput(TRITONBACKEND_Response* response, const char* name, const int64_t* shape, const void* data, uint64_t bytes)
{
  TRITONBACKEND_Output* output;
  RETURN_IF_ERROR(TRITONBACKEND_ResponseOutput(response, &output, name, TRITONSERVER_TYPE_INT64, shape, 2));
  void* buffer = nullptr;
  TRITONSERVER_MemoryType memory = TRITONSERVER_MEMORY_CPU;
  int64_t memory_id = 0;
  RETURN_IF_ERROR(TRITONBACKEND_OutputBuffer(output, &buffer, bytes, &memory, &memory_id));
  if (memory == TRITONSERVER_MEMORY_GPU) {
    return Error(TRITONSERVER_ERROR_INTERNAL, "clip_bpe writes its outputs to host memory only");
  }
  if (bytes != 0) {
    std::memcpy(buffer, data, bytes);
  }
  return nullptr;
}

// Each row's tokens, <|startoftext|> through <|endoftext|>.
std::vector<int64_t>
TokenCounts(const ModelState& model, const std::vector<int64_t>& rows)
{
  std::vector<int64_t> counts(rows.size() / model.context_length);
  const int64_t eot = model.vocabulary.eot_id();
  for (size_t r = 0; r < counts.size(); ++r) {
    const int64_t* row = rows.data() + r * model.context_length;
    counts[r] = std::find(row + 1, row + model.context_length, eot) - row + 1;
  }
  return counts;
}

}  // namespace

TRITONSERVER_Error*
ReadRequest(const ModelState& model, Pending* p)
{
  TRITONBACKEND_Input* input;
  RETURN_IF_ERROR(TRITONBACKEND_RequestInput(p->request, model.input_name.c_str(), &input));
  const char* name;
  TRITONSERVER_DataType datatype;
  const int64_t* shape;
  uint32_t dims, buffers;
  uint64_t byte_size;
  RETURN_IF_ERROR(TRITONBACKEND_InputProperties(input, &name, &datatype, &shape, &dims, &byte_size, &buffers));
  if (datatype != TRITONSERVER_TYPE_BYTES || dims != 2 || shape[1] != 1) {
    return Error(TRITONSERVER_ERROR_INVALID_ARG, model.input_name + " must be BYTES of shape [batch, 1]");
  }
  p->data.reserve(byte_size);
  for (uint32_t b = 0; b < buffers; ++b) {
    const void* data;
    uint64_t size;
    TRITONSERVER_MemoryType memory = TRITONSERVER_MEMORY_CPU;
    int64_t memory_id = 0;
    RETURN_IF_ERROR(TRITONBACKEND_InputBuffer(input, b, &data, &size, &memory, &memory_id));
    if (memory == TRITONSERVER_MEMORY_GPU) {
      return Error(TRITONSERVER_ERROR_INVALID_ARG, model.input_name + " must be in host memory");
    }
    p->data.append(static_cast<const char*>(data), size);
  }
  RETURN_IF_ERROR(ParseBytes(model.input_name, p, static_cast<uint64_t>(shape[0])));
  for (size_t t = 0; t < p->texts.size(); ++t) {
    const std::string item = model.input_name + "[" + std::to_string(t) + "]";
    const size_t size = p->texts[t].second;
    if (size > model.max_text_bytes) {
      return Error(
          TRITONSERVER_ERROR_INVALID_ARG,
          item + " has " + std::to_string(size) + " bytes; the limit is " + std::to_string(model.max_text_bytes) +
              " (CLIP reads only its first " + std::to_string(model.context_length - 2) + " tokens anyway)");
    }
    const auto* text = reinterpret_cast<const unsigned char*>(p->data.data() + p->texts[t].first);
    const size_t bad = clip_bpe::InvalidUtf8At(text, size);
    if (bad != size) {
      return Error(
          TRITONSERVER_ERROR_INVALID_ARG,
          item + " is not valid UTF-8: byte 0x" + "0123456789abcdef"[text[bad] >> 4] +
              "0123456789abcdef"[text[bad] & 15] + " at position " + std::to_string(bad));
    }
  }
  return nullptr;
}

void
WriteRow(const ModelState& model, const std::vector<int64_t>& ids, int64_t* row)
{
  row[0] = model.vocabulary.sot_id();
  std::copy(ids.begin(), ids.end(), row + 1);
  row[ids.size() + 1] = model.vocabulary.eot_id();
}

TRITONSERVER_Error*
Respond(const ModelState& model, Pending* p, bool* answered)
{
  *answered = false;
  TRITONBACKEND_Response* response;
  TRITONSERVER_Error* err = TRITONBACKEND_ResponseNew(&response, p->request);
  if (err != nullptr) {
    if (p->error != nullptr) {
      TRITONSERVER_ErrorDelete(p->error);
      p->error = nullptr;
    }
    return err;
  }
  err = p->error;
  uint32_t requested = 0;
  if (err == nullptr) {
    err = TRITONBACKEND_RequestOutputCount(p->request, &requested);
  }
  for (uint32_t i = 0; err == nullptr && i < requested; ++i) {
    const char* name;
    err = TRITONBACKEND_RequestOutputName(p->request, i, &name);
    if (err != nullptr) {
      break;
    }
    const int64_t rows = static_cast<int64_t>(p->texts.size());
    if (model.ids_output == name) {
      const int64_t shape[2] = {rows, model.context_length};
      err = WriteOutput(response, name, shape, p->rows.data(), p->rows.size() * sizeof(int64_t));
    } else if (model.count_output == name) {
      const int64_t shape[2] = {rows, 1};
      const std::vector<int64_t> counts = TokenCounts(model, p->rows);
      err = WriteOutput(response, name, shape, counts.data(), counts.size() * sizeof(int64_t));
    }
  }
  TRITONSERVER_Error* sent = TRITONBACKEND_ResponseSend(response, TRITONSERVER_RESPONSE_COMPLETE_FINAL, err);
  *answered = err == nullptr && sent == nullptr;
  if (err != nullptr) {
    TRITONSERVER_ErrorDelete(err);
  }
  p->error = nullptr;  // deleted above, whether it was the request's or the response's
  return sent;
}

}  // namespace clip_bpe_backend
