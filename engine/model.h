// The LLaVA model on LibTorch: CLIP vision tower -> projector -> Llama/Mistral decoder -> LM head.
// FP32 on the CPU by default; a ComputeTarget (engine/device.h) converts the weights once at load
// to another dtype and device (bfloat16 on a GPU), and activations follow them. Prefill and decode
// write keys and values through a KvCache; ForwardFull recomputes everything without a cache and
// is the reference the cached paths are tested against. Whatever the target, logits come back as
// float32 on the CPU (sampling runs on the host); prefill observations stay on the target's
// device, where the policy selects (kvcache/policy.h).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>

#include "absl/status/statusor.h"
#include "engine/config.h"
#include "engine/device.h"
#include "kvcache/kv_cache.h"
#include "kvcache/plan.h"
#include "engine/weights.h"

namespace vlc::engine {

using kvcache::KvCache;
using kvcache::SeqId;

class LlavaModel {
 public:
  // Loads config.json and the weights of the checkpoint in `dir` (read as float32, then
  // converted to the target once).
  static absl::StatusOr<std::unique_ptr<LlavaModel>> Load(const std::string& dir,
                                                          const ComputeTarget& target = {});
  // Builds a model from canonical weights (see weights.h); every tensor the config needs must be
  // present with the right shape, else INVALID_ARGUMENT naming it.
  static absl::StatusOr<std::unique_ptr<LlavaModel>> FromWeights(const LlavaConfig& config,
                                                                 WeightMap weights,
                                                                 const ComputeTarget& target = {});
  ~LlavaModel();

  const LlavaConfig& config() const { return config_; }
  const ComputeTarget& target() const { return target_; }
  // Parameter bytes the language model reads per decode step (all its matrices and the LM head).
  int64_t DecodeWeightBytes() const;

  // pixel_values [n, 3, S, S] (any device and floating dtype) -> projected visual tokens
  // [n * visual_tokens_per_image, hidden] on the target.
  absl::StatusOr<at::Tensor> EncodeImages(const at::Tensor& pixel_values) const;

  // Token embeddings [ids, hidden] with each image-token position replaced, in order, by the next
  // row of `visual` ([count of image tokens, hidden]; undefined when there are none).
  absl::StatusOr<at::Tensor> EmbedPrompt(const std::vector<int>& ids,
                                         const at::Tensor& visual) const;

  // Runs the decoder over `embeds` [t, hidden] of one sequence whose first token sits at
  // `start_pos`, after whatever the cache already holds for it, and appends its K/V to the cache.
  // Returns logits [t, vocab] when `all_logits`, else only the last row [1, vocab]. With an
  // enabled `observe`, each layer's attention also fills one entry of `observations` for a cache
  // policy (kvcache/policy.h). A prompt may be prefilled in chunks: the cache must then hold the
  // first `start_pos` prompt tokens uncompressed, `observe.query_begin` stays in prompt
  // positions, and each chunk observes its own rows of the observed range against every key so
  // far ([heads, start_pos + t] column sums; undefined when no row of the chunk is observed), so
  // that the chunks' observations add up to the whole prompt's (kvcache::AddObservation).
  absl::StatusOr<at::Tensor> Prefill(
      SeqId seq, const at::Tensor& embeds, int64_t start_pos, KvCache* cache,
      bool all_logits = false, const kvcache::ObservationSpec* observe = nullptr,
      std::vector<kvcache::LayerObservation>* observations = nullptr) const;

  // One decode step for a batch: token `tokens[b]` of sequence `seqs[b]` at `positions[b]`.
  // Returns logits [batch, vocab].
  absl::StatusOr<at::Tensor> DecodeStep(const std::vector<SeqId>& seqs,
                                        const std::vector<int>& tokens,
                                        const std::vector<int64_t>& positions,
                                        KvCache* cache) const;

  // One forward pass over a decode step's rows and a prompt chunk's rows together (either may be
  // absent), so that every weight is read once for both: what DecodeStep and Prefill compute,
  // from one pass. Prefill and DecodeStep are this with one part.
  struct DecodeRows {
    const std::vector<SeqId>& seqs;
    const std::vector<int>& tokens;
    const std::vector<int64_t>& positions;
  };
  struct PromptChunk {
    SeqId seq;
    const at::Tensor& embeds;
    int64_t start_pos = 0;
    bool all_logits = false;
    const kvcache::ObservationSpec* observe = nullptr;
    std::vector<kvcache::LayerObservation>* observations = nullptr;
  };
  struct StepLogits {
    at::Tensor decode;  // [decode rows, vocab]
    at::Tensor chunk;   // [1, vocab], or [chunk rows, vocab] with all_logits
  };
  absl::StatusOr<StepLogits> Step(const DecodeRows* decode, const PromptChunk* chunk,
                                  KvCache* cache) const;

  // Logits [t, vocab] of the whole sequence `embeds` (positions 0..t-1) without a cache.
  absl::StatusOr<at::Tensor> ForwardFull(const at::Tensor& embeds) const;

  // A KV cache shaped for this model, on its device in its dtype.
  std::unique_ptr<KvCache> NewContiguousCache() const;

 private:
  struct Impl;
  LlavaModel(const LlavaConfig& config, const ComputeTarget& target);
  LlavaConfig config_;
  ComputeTarget target_;
  std::unique_ptr<Impl> impl_;
};

}  // namespace vlc::engine
