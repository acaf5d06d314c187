// Generation over a KvCache: prefill a sequence, then decode all running sequences together, one
// token each per step (several sequences batched in one decode step). The caller adds sequences
// whenever it likes and steps the batch; this is the core the scheduler (engine/scheduler.h)
// drives.
//
// Prefill can be chunked: a sequence that Queue() accepted is prefilled by Step() in chunks of at
// most `prefill_chunk_tokens` tokens (all prefilling sequences of one step share that budget), in
// the same step as the decode of the sequences already running, so a long prompt never holds the
// running streams for its whole prefill. A policy's observation is summed over the chunks
// (exactly: each chunk's rows attend to every earlier key) and the cache is compressed once,
// after the last chunk. Add, Open and Resume prefill at once, whatever the chunk size.
#pragma once

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <vector>

#include <ATen/core/Tensor.h>

#include "absl/status/statusor.h"
#include "kvcache/kv_cache.h"
#include "engine/model.h"
#include "engine/sampling.h"
#include "kvcache/policy.h"

namespace vlc::engine {

// The shape a cache policy plans for: `prompt_ids`' length, the decoder's layers and heads, and
// which positions are visual tokens (the config's image token).
kvcache::PromptShape PromptShapeOf(const LlavaConfig& config, const std::vector<int>& prompt_ids);

enum class FinishReason { kLength, kEos, kStopped, kError };
const char* FinishReasonName(FinishReason r);

struct SequenceSpec {
  std::vector<int> prompt_ids;
  at::Tensor visual;  // [image tokens in prompt_ids, hidden]; undefined when there are none
  SamplingParams sampling;
  // How the prompt's cache is compressed once, right after prefill ("full": not at all).
  kvcache::PolicyConfig cache_policy;
  // Called with every sampled token except EOS; returning false ends the sequence (stop string
  // found, caller cancelled).
  std::function<bool(int token)> on_token;
  // Sessions: when set, a finished sequence keeps its cache entry (the compressed prompt and every
  // token fed so far) for a later Resume, and its id stays valid until Close.
  bool keep_cache = false;
  // Opens a session: the prompt is prefilled (and compressed) and the sequence finishes right
  // after, with no token sampled, its cache kept (keep_cache is implied).
  bool prefill_only = false;
};

struct SequenceResult {
  std::vector<int> tokens;  // generated ids, EOS included when it ended the sequence
  FinishReason finish = FinishReason::kLength;
  absl::Status error;       // set when finish == kError
  int prompt_tokens = 0;
  double prefill_ms = 0;    // embedding + prefill + first sample
  double decode_ms = 0;     // all decode steps this sequence took part in
  double compress_ms = 0;   // keep plan and compaction (part of prefill_ms)
  int64_t kv_bytes = 0;     // cache bytes held when the sequence finished
  int64_t kv_bytes_full = 0;  // bytes an uncompressed cache would hold for the same tokens
  std::vector<int64_t> layer_budgets;  // prompt tokens each layer kept after compression
  int64_t next_pos = 0;     // logical length: positions used by the tokens fed so far
};

class Generator {
 public:
  // `eos_id` < 0 disables EOS. The generator owns no memory in `cache` beyond its sequences.
  // `prefill_chunk_tokens` > 0 caps the prompt tokens one Step() prefills; 0 prefills each
  // queued prompt whole in the step after Queue().
  Generator(const LlavaModel* model, KvCache* cache, int eos_id, int64_t prefill_chunk_tokens = 0);
  ~Generator();

  // Queues a sequence for prefill by the coming Step() calls; checks its parameters and embeds
  // its prompt now. With `spec.prefill_only` it finishes once prefilled (a session's opening).
  absl::StatusOr<SeqId> Queue(SequenceSpec spec);
  // Queues a session turn: `ids` appended to the kept sequence `seq` at `start_pos` (see Resume).
  absl::StatusOr<SeqId> QueueResume(SeqId seq, int64_t start_pos, const std::vector<int>& ids,
                                    SequenceSpec spec);

  // Prefills a new sequence and samples its first token; the sequence may already be finished
  // (max_new_tokens 1, EOS, stopped) and is then waiting in TakeFinished().
  absl::StatusOr<SeqId> Add(SequenceSpec spec);

  // Sessions. Open prefills (and compresses) a prompt without generating and keeps it in the
  // cache; it returns the id. Resume appends `ids` (a turn's text) to a kept sequence at its
  // logical position `start_pos`, samples the first token and runs it like any other sequence;
  // the sampled-but-unfed last token of the previous turn must lead `ids`. Close frees it.
  absl::StatusOr<SeqId> Open(SequenceSpec spec, SequenceResult* info);
  absl::StatusOr<SeqId> Resume(SeqId seq, int64_t start_pos, const std::vector<int>& ids,
                               SequenceSpec spec);
  void Close(SeqId seq);
  // A kept sequence made from a session's snapshot: `layers` (per layer K and V, [kv_heads,
  // length, head_dim] in the cache's dtype and device, keys rotated) written into a new cache
  // sequence, whose id is valid until Close. RESOURCE_EXHAUSTED (nothing kept) without the pages.
  absl::StatusOr<SeqId> Restore(const std::vector<std::pair<at::Tensor, at::Tensor>>& layers);

  // One decode step for every running sequence. A failing step ends the sequences it involved
  // with kError and returns the error.
  absl::Status Step();

  // Ends a running sequence now (its caller cancelled or its deadline passed) with kError and
  // `reason`; its pages return to the pool. Unknown ids are ignored.
  void Cancel(SeqId id, absl::Status reason);

  // Sequences prefilling or decoding.
  bool HasRunning() const { return !running_.empty(); }
  size_t NumRunning() const { return running_.size(); }
  // Sequences whose prompt is not fully prefilled yet.
  size_t NumPrefilling() const;
  // Sequences the last Step() decoded a token for.
  size_t LastStepBatch() const { return last_step_batch_; }
  // Pages the next Step() takes from the cache's pool (0 for a cache without a pool): its prefill
  // chunks and one token per decoding sequence. A Step() that finds fewer free stops the most
  // recently admitted sequences (RESOURCE_EXHAUSTED) until the rest fit; a caller with pages to
  // give back (idle sessions) frees them first.
  int64_t PagesForNextStep() const;
  // Pages the running sequences may still take: the rest of their prompts and every token up to
  // their max_new_tokens (a compressing sequence counted at its uncompressed size until its prefill
  // ends). What an admission must leave free so that no admitted sequence runs out mid-decode.
  int64_t PagesToFinish() const;

  // Results of sequences that finished since the last call; their cache entries are freed.
  std::vector<std::pair<SeqId, SequenceResult>> TakeFinished();

  // Runs `specs` together to completion: each is prefilled, then all decode in one batch.
  absl::StatusOr<std::vector<SequenceResult>> Run(std::vector<SequenceSpec> specs);

 private:
  // A sequence's prompt on its way into the cache, chunk by chunk.
  struct Prefill {
    at::Tensor embeds;      // [tokens, hidden]: the prompt (or a turn's text) still to feed
    int64_t done = 0;       // rows of embeds fed so far
    int64_t start_pos = 0;  // logical position of embeds row 0
    bool compress = false;  // a new sequence whose policy compresses once prefilled
    kvcache::PromptShape shape;
    kvcache::ObservationSpec observe;
    std::vector<kvcache::LayerObservation> observations;  // summed over the chunks
    double ms = 0;          // compute time of the chunks so far
  };
  struct Running {
    SequenceSpec spec;
    SequenceResult result;
    std::unique_ptr<Sampler> sampler;
    int64_t next_pos = 0;  // logical position of the last sampled token
    std::unique_ptr<Prefill> prefill;  // set while prefilling
  };
  // Records a sampled token; returns true when the sequence goes on.
  bool Accept(Running& r, int token);
  // A new cache sequence for `spec`, its prompt embedded and waiting for its first chunk.
  absl::StatusOr<SeqId> QueueNew(SequenceSpec spec);
  // Feeds up to `max_tokens` (<= 0: all) more prompt rows of a prefilling sequence. After the
  // last chunk it compresses, samples the first token and starts decoding (or finishes a
  // prefill-only one). A failure ends the sequence with kError and is returned.
  // With `decode`, the chunk and the decode step's rows go through one forward pass, whose
  // decode logits (or error) land in `decode_logits`.
  absl::Status AdvancePrefill(SeqId id, int64_t max_tokens,
                              const LlavaModel::DecodeRows* decode = nullptr,
                              absl::StatusOr<at::Tensor>* decode_logits = nullptr);
  // Runs a just-queued sequence's whole prefill now; on failure nothing of it is left (its error
  // is returned, and for a new sequence its cache entry is gone).
  absl::StatusOr<SeqId> PrefillNow(absl::StatusOr<SeqId> queued, bool drop_cache_on_error);
  // The prefill chunks the next Step() runs: (sequence, tokens), in admission order.
  std::vector<std::pair<SeqId, int64_t>> PlanChunks() const;
  void Finish(SeqId id, FinishReason reason, absl::Status error = absl::OkStatus());

  const LlavaModel* model_;
  KvCache* cache_;
  int eos_id_;
  int64_t prefill_chunk_tokens_;
  SeqId next_id_ = 1;
  size_t last_step_batch_ = 0;
  std::map<SeqId, Running> running_;  // by id: ids grow with admission

  // Stops the most recently admitted sequences until the pool has the pages the next step
  // needs (see generator.cc).
  void MakeRoomForStep();
  std::vector<std::pair<SeqId, SequenceResult>> finished_;
};

}  // namespace vlc::engine
