#include "engine/generator.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <limits>
#include <optional>

#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "kvcache/attention.h"

namespace vlc::engine {
namespace {

double MsSince(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

kvcache::PromptShape PromptShapeOf(const LlavaConfig& config, const std::vector<int>& prompt_ids) {
  kvcache::PromptShape shape;
  shape.length = static_cast<int64_t>(prompt_ids.size());
  shape.layers = config.text.num_hidden_layers;
  shape.heads = config.text.num_attention_heads;
  shape.kv_heads = config.text.num_key_value_heads;
  shape.visual.resize(prompt_ids.size());
  for (size_t i = 0; i < prompt_ids.size(); ++i) {
    shape.visual[i] = prompt_ids[i] == config.image_token_index;
  }
  return shape;
}

const char* FinishReasonName(FinishReason r) {
  switch (r) {
    case FinishReason::kLength: return "length";
    case FinishReason::kEos: return "eos";
    case FinishReason::kStopped: return "stop";
    case FinishReason::kError: return "error";
  }
  return "unknown";
}

Generator::Generator(const LlavaModel* model, KvCache* cache, int eos_id,
                     int64_t prefill_chunk_tokens)
    : model_(model), cache_(cache), eos_id_(eos_id),
      prefill_chunk_tokens_(std::max<int64_t>(0, prefill_chunk_tokens)) {}

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
  // A session that was still being opened has nothing valid, and neither has a turn stopped
  // between two chunks of its text (its positions would no longer follow the session's).
  const Running& r = it->second;
  const bool caller_stopped =
      reason == FinishReason::kError && (res.error.code() == absl::StatusCode::kCancelled ||
                                         res.error.code() == absl::StatusCode::kDeadlineExceeded);
  const bool partly_fed = r.prefill && r.prefill->done > 0;
  const bool keep = r.spec.keep_cache || r.spec.prefill_only;
  const bool unusable = reason == FinishReason::kError &&
                        (r.spec.prefill_only || !caller_stopped || partly_fed);
  if (!keep || unusable) cache_->RemoveSequence(id);
  running_.erase(it);
  finished_.emplace_back(id, std::move(res));
}

absl::StatusOr<SeqId> Generator::QueueNew(SequenceSpec spec) {
  VLC_RETURN_IF_ERROR(spec.cache_policy.Validate());
  if (!spec.prefill_only) VLC_RETURN_IF_ERROR(spec.sampling.Validate());
  if (spec.prompt_ids.empty()) return absl::InvalidArgumentError("the prompt is empty");
  auto pre = std::make_unique<Prefill>();
  VLC_ASSIGN_OR_RETURN(pre->embeds, model_->EmbedPrompt(spec.prompt_ids, spec.visual));
  const auto& cfg = model_->config();
  // The size rule: a prompt too short to gain whole pages stays uncompressed.
  pre->compress =
      kvcache::Compresses(spec.cache_policy, static_cast<int64_t>(spec.prompt_ids.size()));
  if (pre->compress) {
    pre->shape = PromptShapeOf(cfg, spec.prompt_ids);
    pre->observe = kvcache::ObservationFor(spec.cache_policy, pre->shape);
  }
  spec.visual = at::Tensor();  // embedded: the prompt's rows carry what it contributed
  const SeqId id = next_id_++;
  VLC_RETURN_IF_ERROR(cache_->AddSequence(id));
  Running r;
  r.result.prompt_tokens = static_cast<int>(spec.prompt_ids.size());
  r.spec = std::move(spec);
  if (!r.spec.prefill_only) r.sampler = std::make_unique<Sampler>(r.spec.sampling);
  r.prefill = std::move(pre);
  running_.emplace(id, std::move(r));
  return id;
}

absl::StatusOr<SeqId> Generator::Queue(SequenceSpec spec) { return QueueNew(std::move(spec)); }

absl::StatusOr<SeqId> Generator::QueueResume(SeqId seq, int64_t start_pos,
                                             const std::vector<int>& ids, SequenceSpec spec) {
  VLC_RETURN_IF_ERROR(spec.sampling.Validate());
  if (running_.count(seq)) {
    return absl::FailedPreconditionError(absl::StrCat("sequence ", seq, " is still generating"));
  }
  if (!cache_->HasSequence(seq)) {
    return absl::NotFoundError(absl::StrCat("sequence ", seq, " is not in the cache"));
  }
  if (ids.empty()) return absl::InvalidArgumentError("the turn is empty");
  auto pre = std::make_unique<Prefill>();
  // A continued prefill: attends over the compressed cache, appends at the logical positions.
  VLC_ASSIGN_OR_RETURN(pre->embeds, model_->EmbedPrompt(ids, at::Tensor()));
  pre->start_pos = start_pos;
  Running r;
  r.result.prompt_tokens = static_cast<int>(ids.size());
  r.next_pos = start_pos;
  spec.keep_cache = true;
  spec.prefill_only = false;
  r.spec = std::move(spec);
  r.sampler = std::make_unique<Sampler>(r.spec.sampling);
  r.prefill = std::move(pre);
  running_.emplace(seq, std::move(r));
  return seq;
}

absl::Status Generator::AdvancePrefill(SeqId id, int64_t max_tokens,
                                       const LlavaModel::DecodeRows* decode,
                                       absl::StatusOr<at::Tensor>* decode_logits) {
  Running& r = running_.at(id);
  Prefill& pre = *r.prefill;
  const int64_t total = pre.embeds.size(0);
  const int64_t n = max_tokens > 0 ? std::min(max_tokens, total - pre.done) : total - pre.done;
  const bool last = pre.done + n == total;
  const auto t0 = std::chrono::steady_clock::now();
  std::vector<kvcache::LayerObservation> part;
  const at::Tensor piece = pre.embeds.slice(0, pre.done, pre.done + n);
  LlavaModel::PromptChunk chunk{id, piece, pre.start_pos + pre.done, /*all_logits=*/false,
                                pre.observe.enabled ? &pre.observe : nullptr,
                                pre.observe.enabled ? &part : nullptr};
  auto out = model_->Step(decode, &chunk, cache_);
  if (decode_logits) {
    *decode_logits = out.ok() ? absl::StatusOr<at::Tensor>(out->decode)
                              : absl::StatusOr<at::Tensor>(out.status());
  }
  absl::StatusOr<at::Tensor> logits =
      out.ok() ? absl::StatusOr<at::Tensor>(out->chunk) : absl::StatusOr<at::Tensor>(out.status());
  absl::Status st = logits.status();
  if (st.ok() && pre.observe.enabled) {
    if (pre.observations.empty()) pre.observations.resize(part.size());
    for (size_t l = 0; l < part.size(); ++l) {
      kvcache::AddObservation(part[l], pre.shape.length, &pre.observations[l]);
    }
  }
  pre.done += n;
  const auto& cfg = model_->config();
  if (st.ok() && last && pre.compress) {
    // One-shot compression once the whole prompt is in; generated tokens are appended and never
    // evicted.
    const auto t_plan = std::chrono::steady_clock::now();
    auto plan = kvcache::MakeKeepPlan(r.spec.cache_policy, pre.shape, pre.observations);
    st = plan.ok() ? cache_->Compact(id, *plan) : plan.status();
    r.result.compress_ms = MsSince(t_plan);
  }
  pre.ms += MsSince(t0);
  if (!st.ok()) {
    Finish(id, FinishReason::kError, st);
    return st;
  }
  if (!last) return absl::OkStatus();
  r.result.layer_budgets.clear();
  for (int l = 0; l < cfg.text.num_hidden_layers; ++l) {
    r.result.layer_budgets.push_back(cache_->Length(id, l));
  }
  r.next_pos = pre.start_pos + total;
  r.result.next_pos = r.next_pos;
  const double prefill_ms = pre.ms;
  r.prefill.reset();
  if (r.spec.prefill_only) {
    r.result.prefill_ms = prefill_ms;
    Finish(id, FinishReason::kLength);
    return absl::OkStatus();
  }
  const auto t_sample = std::chrono::steady_clock::now();
  at::Tensor row = logits->reshape({-1}).contiguous();
  const int token = r.sampler->Sample(row.data_ptr<float>(), static_cast<int>(row.numel()));
  const bool more = Accept(r, token);
  r.result.prefill_ms = prefill_ms + MsSince(t_sample);
  if (!more) Finish(id, r.result.finish);
  return absl::OkStatus();
}

absl::StatusOr<SeqId> Generator::PrefillNow(absl::StatusOr<SeqId> queued, bool drop_cache_on_error) {
  VLC_RETURN_IF_ERROR(queued.status());
  const SeqId id = *queued;
  absl::Status st = AdvancePrefill(id, /*max_tokens=*/0);
  if (!st.ok()) {
    // The failure is the caller's answer, not a finished sequence to collect later.
    finished_.erase(std::remove_if(finished_.begin(), finished_.end(),
                                   [id](const auto& f) { return f.first == id; }),
                    finished_.end());
    if (drop_cache_on_error) cache_->RemoveSequence(id);
    return st;
  }
  return id;
}

absl::StatusOr<SeqId> Generator::Add(SequenceSpec spec) {
  spec.prefill_only = false;
  return PrefillNow(QueueNew(std::move(spec)), /*drop_cache_on_error=*/true);
}

absl::StatusOr<SeqId> Generator::Open(SequenceSpec spec, SequenceResult* info) {
  spec.prefill_only = true;
  VLC_ASSIGN_OR_RETURN(SeqId id, PrefillNow(QueueNew(std::move(spec)), true));
  // Finished at once: its result is the caller's, not one to collect from TakeFinished.
  for (auto it = finished_.begin(); it != finished_.end(); ++it) {
    if (it->first != id) continue;
    if (info) *info = std::move(it->second);
    finished_.erase(it);
    break;
  }
  return id;
}

absl::StatusOr<SeqId> Generator::Resume(SeqId seq, int64_t start_pos,
                                        const std::vector<int>& ids, SequenceSpec spec) {
  // A failed turn leaves the session's cache as the failure left it (Finish decides).
  return PrefillNow(QueueResume(seq, start_pos, ids, std::move(spec)), false);
}

absl::StatusOr<SeqId> Generator::Restore(
    const std::vector<std::pair<at::Tensor, at::Tensor>>& layers) {
  const int num_layers = model_->config().text.num_hidden_layers;
  if (static_cast<int>(layers.size()) != num_layers) {
    return absl::FailedPreconditionError(absl::StrCat(
        "the snapshot has ", layers.size(), " layers, the model ", num_layers));
  }
  const SeqId id = next_id_++;
  VLC_RETURN_IF_ERROR(cache_->AddSequence(id));
  for (int l = 0; l < num_layers; ++l) {
    if (absl::Status s = cache_->Append(id, l, layers[l].first, layers[l].second); !s.ok()) {
      cache_->RemoveSequence(id);
      return s;
    }
  }
  return id;
}

void Generator::Close(SeqId seq) {
  if (running_.count(seq)) Finish(seq, FinishReason::kError, absl::CancelledError("closed"));
  cache_->RemoveSequence(seq);
}

size_t Generator::NumPrefilling() const {
  size_t n = 0;
  for (const auto& [id, r] : running_) n += r.prefill != nullptr;
  return n;
}

std::vector<std::pair<SeqId, int64_t>> Generator::PlanChunks() const {
  std::vector<std::pair<SeqId, int64_t>> chunks;
  int64_t budget = prefill_chunk_tokens_ > 0 ? prefill_chunk_tokens_
                                             : std::numeric_limits<int64_t>::max();
  for (const auto& [id, r] : running_) {
    if (!r.prefill || budget <= 0) continue;
    const int64_t n = std::min(budget, r.prefill->embeds.size(0) - r.prefill->done);
    chunks.emplace_back(id, n);
    budget -= n;
  }
  return chunks;
}

void Generator::MakeRoomForStep() {
  // A step appends its prefill chunks and one token to every layer of every decoding sequence,
  // and a layer at a page boundary needs a fresh page. When the pool cannot give all of them,
  // the sequences admitted last are stopped with RESOURCE_EXHAUSTED (freeing their pages) until
  // the rest fit: the requests furthest along finish, instead of the whole step failing for
  // everyone.
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
  for (const auto& [id, r] : running_) {
    if (!r.prefill) total += cache_->PagesNeeded(id, 1);
  }
  for (const auto& [id, n] : PlanChunks()) total += cache_->PagesNeeded(id, n);
  return total;
}

int64_t Generator::PagesToFinish() const {
  int64_t total = 0;
  for (const auto& [id, r] : running_) {
    // Every sampled token but the last is fed to the cache: at most max_new_tokens more feeds.
    int64_t tokens = r.spec.prefill_only
                         ? 0
                         : std::max<int64_t>(0, r.spec.sampling.max_new_tokens -
                                                    static_cast<int64_t>(r.result.tokens.size()));
    if (r.prefill) tokens += r.prefill->embeds.size(0) - r.prefill->done;
    total += cache_->PagesNeeded(id, tokens);
  }
  return total;
}

absl::Status Generator::Step() {
  MakeRoomForStep();
  last_step_batch_ = 0;
  if (running_.empty()) return absl::OkStatus();
  // The sequences that decode this step: those that were decoding before it. A prompt whose last
  // chunk runs now samples its first token from the prefill and joins from the next step.
  std::vector<SeqId> ids;
  std::vector<int> tokens;
  std::vector<int64_t> positions;
  for (auto& [id, r] : running_) {
    if (r.prefill) continue;
    ids.push_back(id);
    tokens.push_back(r.result.tokens.back());
    positions.push_back(r.next_pos);
  }
  last_step_batch_ = ids.size();
  // The first chunk rides in the decode step's forward pass (the weights are read once for
  // both); further chunks of the step's budget run on their own.
  const auto t0 = std::chrono::steady_clock::now();
  const LlavaModel::DecodeRows rows{ids, tokens, positions};
  std::optional<absl::StatusOr<at::Tensor>> fused;
  absl::Status prefill_status;
  for (const auto& [id, n] : PlanChunks()) {
    absl::Status st;
    if (!fused && !ids.empty()) {
      fused.emplace(absl::UnknownError("no decode logits"));
      st = AdvancePrefill(id, n, &rows, &*fused);
    } else {
      st = AdvancePrefill(id, n);
    }
    if (!st.ok() && prefill_status.ok()) prefill_status = st;
  }
  if (ids.empty()) return prefill_status;
  auto logits = fused ? std::move(*fused) : model_->DecodeStep(ids, tokens, positions, cache_);
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
  return prefill_status;
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
