#include "instance_state.h"

#include <memory>
#include <vector>

#include "fallback.h"
#include "request.h"

namespace clip_bpe_backend {
namespace {

void
Ignore(TRITONSERVER_Error* err)
{
  if (err != nullptr) {
    TRITONSERVER_ErrorDelete(err);
  }
}

}  // namespace

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
  std::vector<std::pair<Pending*, std::unique_ptr<FallbackCall>>> calls;
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
      std::unique_ptr<FallbackCall> call;
      p.error = FallbackCall::Start(*model_, p, &call);
      if (p.error == nullptr) {
        calls.emplace_back(&p, std::move(call));
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
  for (auto& [p, call] : calls) {  // each ends by its deadline, answered or abandoned
    TRITONSERVER_Error* err = FallbackCall::Finish(*model_, std::move(call), p);
    if (p->error == nullptr) {
      p->error = err;
    } else {
      Ignore(err);
    }
  }
  const uint64_t compute_end = NowNs();
  for (auto& p : pending) {
    bool success;
    Ignore(Respond(*model_, &p, &success));  // not sent: nothing more to tell the client
    Ignore(TRITONBACKEND_ModelInstanceReportStatistics(
        instance_, p.request, success, exec_start, compute_start, compute_end, NowNs()));
    Ignore(TRITONBACKEND_RequestRelease(p.request, TRITONSERVER_REQUEST_RELEASE_ALL));
  }
  Ignore(TRITONBACKEND_ModelInstanceReportBatchStatistics(
      instance_, total_texts, exec_start, compute_start, compute_end, NowNs()));
}

}  // namespace clip_bpe_backend
