// Generation over a KvCache: prefill a sequence, then decode all running sequences together, one
// token each per step (several sequences batched in one decode step). The caller adds sequences
// whenever it likes and steps the batch; this is the core the server's engine thread drives.
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
  Generator(const LlavaModel* model, KvCache* cache, int eos_id);
  ~Generator();

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

  // One decode step for every running sequence. A failing step ends the sequences it involved
  // with kError and returns the error.
  absl::Status Step();

  // Ends a running sequence now (its caller cancelled or its deadline passed) with kError and
  // `reason`; its pages return to the pool. Unknown ids are ignored.
  void Cancel(SeqId id, absl::Status reason);

  bool HasRunning() const { return !running_.empty(); }
  size_t NumRunning() const { return running_.size(); }
  // Pages the next Step() takes from the cache's pool (0 for a cache without a pool). A Step()
  // that finds fewer free stops the most recently admitted sequences (RESOURCE_EXHAUSTED) until
  // the rest fit; a caller with pages to give back (idle sessions) frees them first.
  int64_t PagesForNextStep() const;

  // Results of sequences that finished since the last call; their cache entries are freed.
  std::vector<std::pair<SeqId, SequenceResult>> TakeFinished();

  // Runs `specs` together to completion: each is prefilled, then all decode in one batch.
  absl::StatusOr<std::vector<SequenceResult>> Run(std::vector<SequenceSpec> specs);

 private:
  struct Running {
    SequenceSpec spec;
    SequenceResult result;
    std::unique_ptr<Sampler> sampler;
    int64_t next_pos = 0;  // logical position of the last sampled token
  };
  // Records a sampled token; returns true when the sequence goes on.
  bool Accept(Running& r, int token);
  // Prefill of `spec` (and its compression) into a new cache sequence.
  absl::StatusOr<SeqId> PrefillNew(SequenceSpec& spec, SequenceResult* result,
                                   at::Tensor* last_logits);
  // Samples the first token after a prefill and starts the sequence running.
  SeqId StartRunning(SeqId id, SequenceSpec spec, SequenceResult result, int64_t next_pos,
                     const at::Tensor& logits, std::chrono::steady_clock::time_point t0);
  void Finish(SeqId id, FinishReason reason, absl::Status error = absl::OkStatus());

  const LlavaModel* model_;
  KvCache* cache_;
  int eos_id_;
  SeqId next_id_ = 1;
  std::map<SeqId, Running> running_;  // by id: ids grow with admission

  // Stops the most recently admitted sequences until the pool has the pages the next decode
  // step needs (see generator.cc).
  void MakeRoomForStep();
  std::vector<std::pair<SeqId, SequenceResult>> finished_;
};

}  // namespace vlc::engine
