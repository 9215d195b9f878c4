// clip_bpe: the Triton backend of the model `clip_tokenizer`, the glue around clip_bpe.h.
//
// Why a C++ backend: through Triton's Python backend every request pays a hop to a stub process
// (~0.4 ms with the host idle, more under load), which on a GPU host made the tokenizer the
// largest per-request CPU cost of the ensemble. Most texts are plain (clip_bpe.h says what that
// means and why their tokens need no ftfy), and this backend tokenizes those in-process.
//
// Every other text needs ftfy, which only Python has: the backend sends those texts, one
// inference request per client request, to the Python model named by the `fallback_model`
// parameter (clip_tokenizer_python) through Triton's in-process API, and copies its rows back.
// It starts those calls first, so the Python instances work while this one tokenizes the rest.
// A request's error there is that request's error here; its batch-mates are unaffected.
//
// Two outputs, each written only when requested: the ids (what the encoder reads) and each text's
// token count, <|startoftext|> through <|endoftext|> (what OpenAI's API reports as usage).
//
// Exact: tests compare the served ids with open_clip's on hard strings, random ASCII and random
// Unicode, and the core's unit tests (clip_bpe_test.cc) on the same strings.

#include <rapidjson/document.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <fstream>
#include <memory>
#include <mutex>
#include <sstream>
#include <string>
#include <unordered_map>
#include <vector>

#include "clip_bpe.h"
#include "triton/core/tritonbackend.h"

namespace {

// -- errors and small helpers ---------------------------------------------------------------------

TRITONSERVER_Error*
Error(TRITONSERVER_Error_Code code, const std::string& message)
{
  return TRITONSERVER_ErrorNew(code, message.c_str());
}

#define RETURN_IF_ERROR(X)              \
  do {                                  \
    TRITONSERVER_Error* err__ = (X);    \
    if (err__ != nullptr) return err__; \
  } while (false)

uint64_t
NowNs()
{
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// -- the model: its config, the vocabulary, and the fallback's allocator -----------------------

class ModelState {
 public:
  static TRITONSERVER_Error* Create(TRITONBACKEND_Model* model, ModelState** state);
  ~ModelState();

  TRITONSERVER_Server* server = nullptr;
  TRITONSERVER_ResponseAllocator* allocator = nullptr;
  std::string input_name, ids_output, count_output, fallback_model;
  int64_t context_length = 0, pad_id = 0;
  uint64_t max_text_bytes = 0;
  clip_bpe::CodePointSet plain_symbols;
  clip_bpe::Vocabulary vocabulary;

 private:
  TRITONSERVER_Error* ReadConfig(TRITONBACKEND_Model* model, std::string* tokenizer_path);
  TRITONSERVER_Error* ReadTokenizer(const std::string& path, const std::string& sot, const std::string& eot);
};

// Output buffers for the fallback model's responses: plain host memory, freed once copied.
TRITONSERVER_Error*
FallbackAlloc(
    TRITONSERVER_ResponseAllocator*, const char*, size_t byte_size, TRITONSERVER_MemoryType,
    int64_t, void*, void** buffer, void** buffer_userp, TRITONSERVER_MemoryType* actual_type,
    int64_t* actual_id)
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
FallbackRelease(
    TRITONSERVER_ResponseAllocator*, void* buffer, void*, size_t, TRITONSERVER_MemoryType, int64_t)
{
  std::free(buffer);
  return nullptr;
}

TRITONSERVER_Error*
ModelState::Create(TRITONBACKEND_Model* model, ModelState** state)
{
  std::unique_ptr<ModelState> made(new ModelState());
  std::string tokenizer_path;
  try {  // a number parameter that is not one
    RETURN_IF_ERROR(made->ReadConfig(model, &tokenizer_path));
  }
  catch (const std::exception& e) {
    return Error(TRITONSERVER_ERROR_INVALID_ARG, std::string("clip_bpe: a parameter does not parse: ") + e.what());
  }
  RETURN_IF_ERROR(TRITONBACKEND_ModelServer(model, &made->server));
  RETURN_IF_ERROR(TRITONSERVER_ResponseAllocatorNew(
      &made->allocator, FallbackAlloc, FallbackRelease, nullptr /* start_fn */));
  *state = made.release();
  return nullptr;
}

ModelState::~ModelState()
{
  if (allocator != nullptr) {
    TRITONSERVER_ResponseAllocatorDelete(allocator);
  }
}

TRITONSERVER_Error*
ModelState::ReadConfig(TRITONBACKEND_Model* model, std::string* tokenizer_path)
{
  TRITONSERVER_Message* message;
  RETURN_IF_ERROR(TRITONBACKEND_ModelConfig(model, 1 /* config_version */, &message));
  const char* json;
  size_t json_size;
  TRITONSERVER_Error* err = TRITONSERVER_MessageSerializeToJson(message, &json, &json_size);
  rapidjson::Document config;
  if (err == nullptr) {
    config.Parse(json, json_size);
  }
  TRITONSERVER_MessageDelete(message);
  RETURN_IF_ERROR(err);
  if (config.HasParseError() || !config.IsObject()) {
    return Error(TRITONSERVER_ERROR_INVALID_ARG, "the model config is not a JSON object");
  }
  // tensor names: the config is their home (one input; the ids, then the token counts)
  if (!config.HasMember("input") || config["input"].Size() != 1 || !config.HasMember("output") ||
      config["output"].Size() != 2) {
    return Error(TRITONSERVER_ERROR_INVALID_ARG, "clip_bpe serves one input and two outputs (ids, token counts)");
  }
  input_name = config["input"][0]["name"].GetString();
  ids_output = config["output"][0]["name"].GetString();
  count_output = config["output"][1]["name"].GetString();

  std::unordered_map<std::string, std::string> params;
  if (config.HasMember("parameters")) {
    for (const auto& p : config["parameters"].GetObject()) {
      if (p.value.IsObject()) {  // JSON leaves out an empty string_value, as protobuf does
        params[p.name.GetString()] = p.value.HasMember("string_value") ? p.value["string_value"].GetString() : "";
      }
    }
  }
  for (const char* key : {"tokenizer_file", "context_length", "sot_token", "eot_token", "pad_id",
                          "max_text_bytes", "fallback_model", "plain_symbols"}) {
    if (params.find(key) == params.end()) {
      return Error(TRITONSERVER_ERROR_INVALID_ARG, std::string("parameter '") + key + "' is missing");
    }
  }
  context_length = std::stoll(params["context_length"]);
  pad_id = std::stoll(params["pad_id"]);
  max_text_bytes = std::stoull(params["max_text_bytes"]);
  fallback_model = params["fallback_model"];
  std::string error;
  if (!clip_bpe::CodePointSet::Parse(params["plain_symbols"], &plain_symbols, &error)) {
    return Error(TRITONSERVER_ERROR_INVALID_ARG, "plain_symbols: " + error);
  }
  if (context_length < 3) {
    return Error(TRITONSERVER_ERROR_INVALID_ARG, "context_length must leave room for a token");
  }

  TRITONBACKEND_ArtifactType artifact;
  const char* location;
  uint64_t version;
  RETURN_IF_ERROR(TRITONBACKEND_ModelRepository(model, &artifact, &location));
  RETURN_IF_ERROR(TRITONBACKEND_ModelVersion(model, &version));
  *tokenizer_path = std::string(location) + "/" + std::to_string(version) + "/" + params["tokenizer_file"];
  return ReadTokenizer(*tokenizer_path, params["sot_token"], params["eot_token"]);
}

TRITONSERVER_Error*
ModelState::ReadTokenizer(const std::string& path, const std::string& sot, const std::string& eot)
{
  std::ifstream file(path, std::ios::binary);
  if (!file) {
    return Error(
        TRITONSERVER_ERROR_NOT_FOUND,
        path + " is missing: run `python -m clip_triton_build` to build the repository's artifacts");
  }
  std::stringstream text;
  text << file.rdbuf();
  std::string error;
  if (!clip_bpe::Vocabulary::FromJson(text.str(), sot, eot, &vocabulary, &error)) {
    return Error(TRITONSERVER_ERROR_INVALID_ARG, path + ": " + error);
  }
  return nullptr;
}

// -- one instance: a word cache, and the execution ---------------------------------------------

class InstanceState {
 public:
  explicit InstanceState(ModelState* model, TRITONBACKEND_ModelInstance* instance)
      : model_(model), instance_(instance),
        tokenizer_(&model->vocabulary, &model->plain_symbols, static_cast<size_t>(model->context_length - 2))
  {
  }

  void Execute(TRITONBACKEND_Request** requests, uint32_t count);

 private:
  ModelState* model_;
  TRITONBACKEND_ModelInstance* instance_;
  clip_bpe::Tokenizer tokenizer_;  // this instance's thread alone uses its word cache
};

// One client request: its texts, then its rows of ids or its error.
struct Pending {
  TRITONBACKEND_Request* request = nullptr;
  std::string data;                          // the TEXT tensor's bytes, gathered
  std::vector<std::pair<size_t, uint32_t>> texts;  // (offset in data, length)
  std::vector<int64_t> rows;                 // [texts, context_length]
  std::vector<size_t> fallback;              // texts the Python model tokenizes
  std::vector<size_t> deferred;              // plain texts, tokenized once the fallback is on its way
  TRITONSERVER_Error* error = nullptr;
};

// A fallback inference in flight: done once its response and its release have both come back.
struct Fallback {
  Pending* pending = nullptr;
  std::string input;  // the texts sent, as a BYTES tensor (the request reads it until released)
  std::mutex mu;
  std::condition_variable cv;
  bool responded = false, released = false;
  TRITONSERVER_InferenceResponse* response = nullptr;
};

void
FallbackResponded(TRITONSERVER_InferenceResponse* response, const uint32_t, void* userp)
{
  auto* call = static_cast<Fallback*>(userp);
  std::lock_guard<std::mutex> lock(call->mu);
  call->response = response;  // null only if Triton had nothing to say: FinishFallback reports it
  call->responded = true;
  call->cv.notify_all();
}

void
FallbackReleased(TRITONSERVER_InferenceRequest* request, const uint32_t, void* userp)
{
  TRITONSERVER_InferenceRequestDelete(request);
  auto* call = static_cast<Fallback*>(userp);
  std::lock_guard<std::mutex> lock(call->mu);
  call->released = true;
  call->cv.notify_all();
}

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

// Sends a request's fallback texts to the Python model; the caller waits for the result.
TRITONSERVER_Error*
StartFallback(const ModelState& model, Fallback* call)
{
  const Pending& p = *call->pending;
  for (size_t t : p.fallback) {
    const uint32_t length = p.texts[t].second;
    call->input.append(reinterpret_cast<const char*>(&length), sizeof(length));
    call->input.append(p.data, p.texts[t].first, length);
  }
  TRITONSERVER_InferenceRequest* request;
  RETURN_IF_ERROR(TRITONSERVER_InferenceRequestNew(&request, model.server, model.fallback_model.c_str(), -1));
  const int64_t shape[2] = {static_cast<int64_t>(p.fallback.size()), 1};
  TRITONSERVER_Error* err = TRITONSERVER_InferenceRequestAddInput(
      request, model.input_name.c_str(), TRITONSERVER_TYPE_BYTES, shape, 2);
  if (err == nullptr) {
    err = TRITONSERVER_InferenceRequestAppendInputData(
        request, model.input_name.c_str(), call->input.data(), call->input.size(), TRITONSERVER_MEMORY_CPU, 0);
  }
  if (err == nullptr) {
    err = TRITONSERVER_InferenceRequestAddRequestedOutput(request, model.ids_output.c_str());
  }
  if (err == nullptr) {
    err = TRITONSERVER_InferenceRequestSetReleaseCallback(request, FallbackReleased, call);
  }
  if (err == nullptr) {
    err = TRITONSERVER_InferenceRequestSetResponseCallback(
        request, model.allocator, nullptr, FallbackResponded, call);
  }
  if (err == nullptr) {
    err = TRITONSERVER_ServerInferAsync(model.server, request, nullptr /* trace */);
  }
  if (err != nullptr) {
    TRITONSERVER_InferenceRequestDelete(request);
    return err;
  }
  return nullptr;
}

// Waits for a fallback, then copies its rows into the request's (or takes its error).
TRITONSERVER_Error*
FinishFallback(const ModelState& model, Fallback* call)
{
  {
    std::unique_lock<std::mutex> lock(call->mu);
    call->cv.wait(lock, [call] { return call->responded && call->released; });
  }
  TRITONSERVER_InferenceResponse* response = call->response;
  if (response == nullptr) {
    return Error(TRITONSERVER_ERROR_INTERNAL, model.fallback_model + " gave no response");
  }
  TRITONSERVER_Error* err = TRITONSERVER_InferenceResponseError(response);
  if (err != nullptr) {  // owned by the response: copy it
    err = Error(TRITONSERVER_ErrorCode(err), TRITONSERVER_ErrorMessage(err));
  } else {
    const char* name;
    TRITONSERVER_DataType datatype;
    const int64_t* shape;
    uint64_t dims;
    const void* base;
    size_t byte_size;
    TRITONSERVER_MemoryType memory;
    int64_t memory_id;
    void* userp;
    err = TRITONSERVER_InferenceResponseOutput(
        response, 0, &name, &datatype, &shape, &dims, &base, &byte_size, &memory, &memory_id, &userp);
    const size_t row_bytes = model.context_length * sizeof(int64_t);
    Pending& p = *call->pending;
    if (err == nullptr &&
        (datatype != TRITONSERVER_TYPE_INT64 || byte_size != p.fallback.size() * row_bytes)) {
      err = Error(TRITONSERVER_ERROR_INTERNAL, model.fallback_model + " returned rows of another shape");
    }
    for (size_t k = 0; err == nullptr && k < p.fallback.size(); ++k) {
      std::memcpy(
          p.rows.data() + p.fallback[k] * model.context_length, static_cast<const char*>(base) + k * row_bytes,
          row_bytes);
    }
  }
  TRITONSERVER_InferenceResponseDelete(response);
  return err;
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

// Sends the request's response: the outputs it asked for, or its error (also when they cannot be
// written). `answered` says whether the client got them; the returned error, whether sending failed.
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

// <|startoftext|> ids... <|endoftext|>, over a row already filled with the pad id.
void
WriteRow(const ModelState& model, const std::vector<int64_t>& ids, int64_t* row)
{
  row[0] = model.vocabulary.sot_id();
  std::copy(ids.begin(), ids.end(), row + 1);
  row[ids.size() + 1] = model.vocabulary.eot_id();
}

void
InstanceState::Execute(TRITONBACKEND_Request** requests, uint32_t count)
{
  const uint64_t exec_start = NowNs();
  std::vector<Pending> pending(count);
  for (uint32_t r = 0; r < count; ++r) {
    pending[r].request = requests[r];
  }
  const uint64_t compute_start = NowNs();
  size_t total_texts = 0;
  std::vector<std::unique_ptr<Fallback>> calls;
  std::vector<int64_t> ids;
  // First the texts only Python can clean, so that its instances work while this one tokenizes
  // the rest. Texts that are plain all through and short wait for the second loop; the others
  // are tried now (their plain prefix may hold all the tokens CLIP reads), and those that need
  // ftfy go to the fallback.
  for (auto& p : pending) {
    p.error = ReadRequest(*model_, &p);
    if (p.error != nullptr) {
      continue;
    }
    total_texts += p.texts.size();
    p.rows.assign(p.texts.size() * model_->context_length, model_->pad_id);
    for (size_t t = 0; t < p.texts.size(); ++t) {
      const char* text = p.data.data() + p.texts[t].first;
      const size_t size = p.texts[t].second;
      const size_t plain = clip_bpe::PlainPrefix(text, size, model_->plain_symbols);
      if (plain == size && size <= clip_bpe::kMaxWordBytes) {
        p.deferred.push_back(t);
      } else if (tokenizer_.Ids(text, size, plain, &ids)) {
        WriteRow(*model_, ids, p.rows.data() + t * model_->context_length);
      } else {
        p.fallback.push_back(t);
      }
    }
    if (!p.fallback.empty()) {
      calls.emplace_back(new Fallback());
      calls.back()->pending = &p;
      p.error = StartFallback(*model_, calls.back().get());
      if (p.error != nullptr) {
        calls.pop_back();
      }
    }
  }
  for (auto& p : pending) {
    for (size_t k = 0; p.error == nullptr && k < p.deferred.size(); ++k) {
      const size_t t = p.deferred[k];
      const size_t size = p.texts[t].second;
      if (!tokenizer_.Ids(p.data.data() + p.texts[t].first, size, size, &ids)) {
        p.error = Error(TRITONSERVER_ERROR_INTERNAL, "tokenizer.json lacks a byte's symbol");
        break;
      }
      WriteRow(*model_, ids, p.rows.data() + t * model_->context_length);
    }
  }
  for (auto& call : calls) {
    TRITONSERVER_Error* err = FinishFallback(*model_, call.get());  // always waits: the call must end
    if (call->pending->error == nullptr) {
      call->pending->error = err;
    } else if (err != nullptr) {
      TRITONSERVER_ErrorDelete(err);
    }
  }
  const uint64_t compute_end = NowNs();
  for (auto& p : pending) {
    bool success;
    TRITONSERVER_Error* err = Respond(*model_, &p, &success);
    if (err != nullptr) {  // the response could not be sent: nothing more to tell the client
      TRITONSERVER_ErrorDelete(err);
    }
    const uint64_t exec_end = NowNs();
    err = TRITONBACKEND_ModelInstanceReportStatistics(
        instance_, p.request, success, exec_start, compute_start, compute_end, exec_end);
    if (err != nullptr) {
      TRITONSERVER_ErrorDelete(err);
    }
    err = TRITONBACKEND_RequestRelease(p.request, TRITONSERVER_REQUEST_RELEASE_ALL);
    if (err != nullptr) {
      TRITONSERVER_ErrorDelete(err);
    }
  }
  TRITONSERVER_Error* err = TRITONBACKEND_ModelInstanceReportBatchStatistics(
      instance_, total_texts, exec_start, compute_start, compute_end, NowNs());
  if (err != nullptr) {
    TRITONSERVER_ErrorDelete(err);
  }
}

}  // namespace

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
