#include "engine/generator.h"

#include <ATen/ATen.h>

#include "absl/strings/str_cat.h"
#include "common/status.h"

namespace vlc::engine {
namespace {

double MsSince(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

const char* FinishReasonName(FinishReason r) {
  switch (r) {
    case FinishReason::kLength: return "length";
    case FinishReason::kEos: return "eos";
    case FinishReason::kStopped: return "stop";
    case FinishReason::kError: return "error";
  }
  return "unknown";
}

Generator::Generator(const LlavaModel* model, KvCache* cache, int eos_id)
    : model_(model), cache_(cache), eos_id_(eos_id) {}

Generator::~Generator() {
  for (auto& [id, r] : running_) cache_->RemoveSequence(id);
}

bool Generator::Accept(Running& r, int token) {
  r.result.tokens.push_back(token);
  if (token == eos_id_ && !r.spec.sampling.ignore_eos) {
    r.result.finish = FinishReason::kEos;
    return false;
  }
  if (r.spec.on_token && !r.spec.on_token(token)) {
    r.result.finish = FinishReason::kStopped;
    return false;
  }
  if (static_cast<int>(r.result.tokens.size()) >= r.spec.sampling.max_new_tokens) {
    r.result.finish = FinishReason::kLength;
    return false;
  }
  return true;
}

void Generator::Finish(SeqId id, FinishReason reason, absl::Status error) {
  auto it = running_.find(id);
  if (it == running_.end()) return;
  SequenceResult res = std::move(it->second.result);
  if (reason == FinishReason::kError) {
    res.finish = reason;
    res.error = std::move(error);
  }
  res.kv_bytes = cache_->Bytes(id);
  // Every token fed to the model so far (prompt and generated) would sit in every layer.
  res.kv_bytes_full = it->second.next_pos * model_->config().text.num_hidden_layers *
                      cache_->BytesPerTokenPerLayer();
  res.next_pos = it->second.next_pos;
  // A session's sequence stays unless it failed; everything else leaves the cache at once. A turn
  // its caller stopped (cancelled, or past its deadline) did not fail: every token fed so far is
  // valid, so the session keeps them, as a chat keeps the part of an answer that was stopped.
  const bool caller_stopped =
      reason == FinishReason::kError && (res.error.code() == absl::StatusCode::kCancelled ||
                                         res.error.code() == absl::StatusCode::kDeadlineExceeded);
  if (!it->second.spec.keep_cache || (reason == FinishReason::kError && !caller_stopped)) {
    cache_->RemoveSequence(id);
  }
  running_.erase(it);
  finished_.emplace_back(id, std::move(res));
}

absl::StatusOr<SeqId> Generator::PrefillNew(SequenceSpec& spec, SequenceResult* result,
                                            at::Tensor* last_logits) {
  VLC_RETURN_IF_ERROR(spec.cache_policy.Validate());
  if (spec.prompt_ids.empty()) return absl::InvalidArgumentError("the prompt is empty");
  VLC_ASSIGN_OR_RETURN(at::Tensor embeds, model_->EmbedPrompt(spec.prompt_ids, spec.visual));
  const auto& cfg = model_->config();
  const bool compress = spec.cache_policy.name != "full";
  kvcache::PromptShape shape;
  kvcache::ObservationSpec observe;
  if (compress) {
    shape.length = static_cast<int64_t>(spec.prompt_ids.size());
    shape.layers = cfg.text.num_hidden_layers;
    shape.heads = cfg.text.num_attention_heads;
    shape.kv_heads = cfg.text.num_key_value_heads;
    shape.visual.resize(spec.prompt_ids.size());
    for (size_t i = 0; i < spec.prompt_ids.size(); ++i) {
      shape.visual[i] = spec.prompt_ids[i] == cfg.image_token_index;
    }
    observe = kvcache::ObservationFor(spec.cache_policy, shape);
  }
  const SeqId id = next_id_++;
  VLC_RETURN_IF_ERROR(cache_->AddSequence(id));
  std::vector<kvcache::LayerObservation> observations;
  auto logits = model_->Prefill(id, embeds, 0, cache_, false, &observe, &observations);
  absl::Status st = logits.status();
  const auto t_plan = std::chrono::steady_clock::now();
  if (st.ok() && compress) {
    // One-shot compression right after prefill; generated tokens are appended and never evicted.
    auto plan = kvcache::MakeKeepPlan(spec.cache_policy, shape, observations);
    st = plan.ok() ? cache_->Compact(id, *plan) : plan.status();
  }
  if (!st.ok()) {
    cache_->RemoveSequence(id);
    return st;
  }
  result->compress_ms = compress ? MsSince(t_plan) : 0;
  result->layer_budgets.clear();
  for (int l = 0; l < cfg.text.num_hidden_layers; ++l) {
    result->layer_budgets.push_back(cache_->Length(id, l));
  }
  result->prompt_tokens = static_cast<int>(spec.prompt_ids.size());
  result->next_pos = static_cast<int64_t>(spec.prompt_ids.size());
  *last_logits = std::move(logits).value();
  spec.visual = at::Tensor();  // prefilled: the cache holds what it contributed
  return id;
}

SeqId Generator::StartRunning(SeqId id, SequenceSpec spec, SequenceResult result,
                              int64_t next_pos, const at::Tensor& logits,
                              std::chrono::steady_clock::time_point t0) {
  Running r;
  r.result = std::move(result);
  r.sampler = std::make_unique<Sampler>(spec.sampling);
  r.next_pos = next_pos;
  r.spec = std::move(spec);
  at::Tensor row = logits.reshape({-1}).contiguous();
  const int token = r.sampler->Sample(row.data_ptr<float>(), static_cast<int>(row.numel()));
  auto& slot = running_.emplace(id, std::move(r)).first->second;
  const bool more = Accept(slot, token);
  slot.result.prefill_ms = MsSince(t0);
  if (!more) Finish(id, slot.result.finish);
  return id;
}

absl::StatusOr<SeqId> Generator::Add(SequenceSpec spec) {
  VLC_RETURN_IF_ERROR(spec.sampling.Validate());
  const auto t0 = std::chrono::steady_clock::now();
  SequenceResult result;
  at::Tensor logits;
  VLC_ASSIGN_OR_RETURN(SeqId id, PrefillNew(spec, &result, &logits));
  const int64_t next_pos = result.next_pos;
  return StartRunning(id, std::move(spec), std::move(result), next_pos, logits, t0);
}

absl::StatusOr<SeqId> Generator::Open(SequenceSpec spec, SequenceResult* info) {
  at::Tensor logits;
  SequenceResult result;
  VLC_ASSIGN_OR_RETURN(SeqId id, PrefillNew(spec, &result, &logits));
  result.kv_bytes = cache_->Bytes(id);
  result.kv_bytes_full =
      result.next_pos * model_->config().text.num_hidden_layers * cache_->BytesPerTokenPerLayer();
  if (info) *info = std::move(result);
  return id;
}

absl::StatusOr<SeqId> Generator::Resume(SeqId seq, int64_t start_pos,
                                        const std::vector<int>& ids, SequenceSpec spec) {
  VLC_RETURN_IF_ERROR(spec.sampling.Validate());
  if (running_.count(seq)) {
    return absl::FailedPreconditionError(absl::StrCat("sequence ", seq, " is still generating"));
  }
  if (!cache_->HasSequence(seq)) {
    return absl::NotFoundError(absl::StrCat("sequence ", seq, " is not in the cache"));
  }
  if (ids.empty()) return absl::InvalidArgumentError("the turn is empty");
  const auto t0 = std::chrono::steady_clock::now();
  VLC_ASSIGN_OR_RETURN(at::Tensor embeds, model_->EmbedPrompt(ids, at::Tensor()));
  // A continued prefill: attends over the compressed cache, appends at the logical positions.
  VLC_ASSIGN_OR_RETURN(at::Tensor logits, model_->Prefill(seq, embeds, start_pos, cache_));
  SequenceResult result;
  result.prompt_tokens = static_cast<int>(ids.size());
  const auto& cfg = model_->config();
  for (int l = 0; l < cfg.text.num_hidden_layers; ++l) {
    result.layer_budgets.push_back(cache_->Length(seq, l));
  }
  spec.keep_cache = true;
  return StartRunning(seq, std::move(spec), std::move(result),
                      start_pos + static_cast<int64_t>(ids.size()), logits, t0);
}

void Generator::Close(SeqId seq) {
  if (running_.count(seq)) Finish(seq, FinishReason::kError, absl::CancelledError("closed"));
  cache_->RemoveSequence(seq);
}

void Generator::MakeRoomForStep() {
  // A decode step appends one token to every layer of every running sequence, and a layer at a
  // page boundary needs a fresh page. When the pool cannot give all of them, the sequences
  // admitted last are stopped with RESOURCE_EXHAUSTED (freeing their pages) until the rest fit:
  // the requests furthest along finish, instead of the whole step failing for everyone.
  int64_t need = PagesForNextStep();
  while (!running_.empty() && need > cache_->FreePages()) {
    const SeqId victim = running_.rbegin()->first;
    Finish(victim, FinishReason::kError,
           absl::ResourceExhaustedError(absl::StrCat(
               "the KV-cache pool ran out of pages while decoding (", need, " pages needed for ",
               running_.size(), " running sequences, ", cache_->FreePages(),
               " free); this request, the last admitted, was stopped so that the others can "
               "finish: retry it, or give the cache more memory")));
    need = PagesForNextStep();
  }
}

int64_t Generator::PagesForNextStep() const {
  int64_t total = 0;
  for (const auto& [id, r] : running_) total += cache_->PagesNeeded(id, 1);
  return total;
}

absl::Status Generator::Step() {
  MakeRoomForStep();
  if (running_.empty()) return absl::OkStatus();
  const auto t0 = std::chrono::steady_clock::now();
  std::vector<SeqId> ids;
  std::vector<int> tokens;
  std::vector<int64_t> positions;
  for (auto& [id, r] : running_) {
    ids.push_back(id);
    tokens.push_back(r.result.tokens.back());
    positions.push_back(r.next_pos);
  }
  auto logits = model_->DecodeStep(ids, tokens, positions, cache_);
  const double ms = MsSince(t0);
  if (!logits.ok()) {
    for (SeqId id : ids) Finish(id, FinishReason::kError, logits.status());
    return logits.status();
  }
  at::Tensor l = logits->contiguous();
  const int vocab = static_cast<int>(l.size(1));
  for (size_t b = 0; b < ids.size(); ++b) {
    Running& r = running_.at(ids[b]);
    r.result.decode_ms += ms;
    r.next_pos += 1;
    const int token = r.sampler->Sample(l[b].data_ptr<float>(), vocab);
    if (!Accept(r, token)) Finish(ids[b], r.result.finish);
  }
  return absl::OkStatus();
}

void Generator::Cancel(SeqId id, absl::Status reason) {
  Finish(id, FinishReason::kError, std::move(reason));
}

std::vector<std::pair<SeqId, SequenceResult>> Generator::TakeFinished() {
  std::vector<std::pair<SeqId, SequenceResult>> out;
  out.swap(finished_);
  return out;
}

absl::StatusOr<std::vector<SequenceResult>> Generator::Run(std::vector<SequenceSpec> specs) {
  std::map<SeqId, size_t> order;
  for (size_t i = 0; i < specs.size(); ++i) {
    auto id = Add(std::move(specs[i]));
    if (!id.ok()) {
      // Leave nothing behind: the sequences added so far are dropped with their cache entries.
      for (auto& [sid, idx] : order) {
        if (running_.count(sid)) Finish(sid, FinishReason::kError, id.status());
      }
      TakeFinished();
      return absl::Status(id.status().code(),
                          absl::StrCat("request ", i, ": ", id.status().message()));
    }
    order[*id] = i;
  }
  while (HasRunning()) {
    absl::Status st = Step();
    if (!st.ok()) {
      TakeFinished();
      return st;
    }
  }
  std::vector<SequenceResult> results(order.size());
  for (auto& [id, res] : TakeFinished()) results[order.at(id)] = std::move(res);
  return results;
}

}  // namespace vlc::engine
