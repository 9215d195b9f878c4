#include "model_state.h"

#include <rapidjson/document.h>

#include <exception>
#include <fstream>
#include <memory>
#include <sstream>
#include <unordered_map>

#include "fallback.h"

namespace clip_bpe_backend {

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
  RETURN_IF_ERROR(NewFallbackAllocator(&made->allocator));
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
  for (const char* key : {"tokenizer_file", "context_length", "sot_token", "eot_token", "pad_id", "max_text_bytes",
                          "fallback_model", "fallback_timeout_ms", "plain_symbols"}) {
    if (params.find(key) == params.end()) {
      return Error(TRITONSERVER_ERROR_INVALID_ARG, std::string("parameter '") + key + "' is missing");
    }
  }
  context_length = std::stoll(params["context_length"]);
  pad_id = std::stoll(params["pad_id"]);
  max_text_bytes = std::stoull(params["max_text_bytes"]);
  fallback_model = params["fallback_model"];
  fallback_timeout_us = std::stoull(params["fallback_timeout_ms"]) * 1000;
  std::string error;
  if (!clip_bpe::CodePointSet::Parse(params["plain_symbols"], &plain_symbols, &error)) {
    return Error(TRITONSERVER_ERROR_INVALID_ARG, "plain_symbols: " + error);
  }
  if (context_length < 3) {
    return Error(TRITONSERVER_ERROR_INVALID_ARG, "context_length must leave room for a token");
  }
  if (fallback_timeout_us == 0) {
    return Error(TRITONSERVER_ERROR_INVALID_ARG, "fallback_timeout_ms must be above 0: a hand-over waits at most that");
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

}  // namespace clip_bpe_backend
