// A trainable LLaVA: the function engine::LlavaModel computes (CLIP vision tower -> projector ->
// Llama/Mistral decoder -> LM head), written with differentiable LibTorch ops over parameters that
// carry the engine's canonical weight names (engine/weights.h), with q/k/v and gate/up unfused as
// in Hugging Face checkpoints. It runs a right-padded batch of sequences at once for training,
// exports a Hugging Face checkpoint that engine::LlavaModel and engine::Pipeline load, and saves
// and restores training state (parameters, AdamW moments, step) so a long run can resume.
//
// FP32 on the CPU. Not thread-safe; one trainer owns a model. Threads, measured on the 2-core
// machine: at::set_num_threads(1) is the fastest setting (OpenBLAS still runs each GEMM on its
// own 2 threads); with 2 OpenMP threads a step ran 2.5 times slower on the idle machine and up to
// 12 times slower while another process held a core, as the spinning OpenMP workers take the
// cores OpenBLAS' threads need.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "engine/config.h"
#include "kvcache/plan.h"

namespace torch::optim {
class AdamW;
}  // namespace torch::optim

namespace vlc::train {

// One training batch. Sequence b is input_ids[b, 0:lengths[b]]; positions past its length are
// padding and never influence its real positions. Its image-token positions (id ==
// config.image_token_index) take, in order, the visual tokens of the next images_per_sequence[b]
// images of pixel_values, so it must hold exactly images_per_sequence[b] *
// config.visual_tokens_per_image() of them.
struct TrainBatch {
  at::Tensor pixel_values;  // [sum of images_per_sequence, C, S, S] float; undefined if no images
  at::Tensor input_ids;     // [B, T] integer ids, right-padded (padding ids are ignored)
  std::vector<int64_t> lengths;              // B
  std::vector<int64_t> images_per_sequence;  // B

  // Optional: sequences that decode their answer through a compressed cache, as the server does
  // after prefill (KeepPlan per sequence, from kvcache::MakeKeepPlan). Empty: every sequence sees
  // its full cache. Otherwise B entries each: rows at positions >= prompt_lengths[b] (the answer's
  // tokens, which the engine decodes one at a time after compacting the prompt's cache) see, of
  // the prompt's keys, only those plans[b] keeps in that layer for that KV head, and every
  // answer key; the prompt's rows, and so the answer's first token, see the whole prompt.
  // prompt_lengths[b] == 0 leaves sequence b uncompressed.
  std::vector<int64_t> prompt_lengths;
  std::vector<kvcache::KeepPlan> plans;
};

// input_ids [B, max length] (int64) and lengths of `sequences`, right-padded with `pad_id`.
std::pair<at::Tensor, std::vector<int64_t>> PadSequences(
    const std::vector<std::vector<int>>& sequences, int pad_id = 0);

struct AdamWSettings {
  double lr = 1e-3;
  double beta1 = 0.9;
  double beta2 = 0.95;
  double eps = 1e-8;
  // Applied to matrices and embedding tables only; norms and biases are not decayed.
  double weight_decay = 0.1;
};

class TrainableLlava {
 public:
  // Parameters shaped for `config`, normal(0, 0.02)-initialised with seed 0 (call Init for
  // another draw). The config goes through the JSON that Export writes and back, so an invalid
  // config is INVALID_ARGUMENT here rather than an unloadable export later, and the model trains
  // exactly the function the exported checkpoint computes.
  static absl::StatusOr<std::unique_ptr<TrainableLlava>> Create(const engine::LlavaConfig& config);

  // Config and weights of the Hugging Face checkpoint in `dir` (any layout LoadCheckpointWeights
  // reads), to resume or fine-tune. Every tensor the engine needs must be present; vision layers
  // past the feature layer and the vision post_layernorm, which the engine ignores, keep their
  // initial values when absent.
  static absl::StatusOr<std::unique_ptr<TrainableLlava>> FromCheckpoint(const std::string& dir);

  // Redraws every parameter in place (optimizers holding them stay valid), deterministically from
  // `seed`: matrices, embedding tables and the class embedding ~ N(0, init_std), the output
  // projections of residual branches (out_proj, fc2, o_proj, down_proj) ~ N(0, init_std /
  // sqrt(2 * layers of their tower)) so the residual stream's variance does not grow with depth;
  // norm weights 1, biases 0.
  void Init(uint64_t seed, float init_std);

  const engine::LlavaConfig& config() const { return config_; }

  // Every tensor of the model in export order, under its canonical name. Tensors the forward
  // never reads (vision layers past the feature layer, the vision post_layernorm) are exported
  // but do not require grad.
  const std::vector<std::pair<std::string, at::Tensor>>& named_tensors() const { return tensors_; }
  // The tensors that train (requires_grad), in a fixed order.
  std::vector<at::Tensor> parameters() const;
  int64_t NumTrainableParameters() const;

  // AdamW over parameters() in two groups: group 0 is decayed (tensors of 2 or more dims), group
  // 1 is not. A learning-rate schedule sets the lr of both groups' AdamWOptions.
  std::unique_ptr<torch::optim::AdamW> NewAdamW(const AdamWSettings& settings) const;

  // Logits [B, T, vocab] of the batch (differentiable). Rows at padding positions hold values
  // that mean nothing; mask them out of the loss. INVALID_ARGUMENT for ids outside the vocabulary,
  // image-token counts that do not match the images, shapes that disagree with the config.
  // When `visual_out` is given it receives the projected visual tokens [images * tokens per image,
  // hidden] (differentiable), for regularizers on what the decoder is fed.
  // When `decoder_visual_out` is given it receives the decoder's hidden states at the image
  // positions after decoder layer `decoder_layer` (0-based), in the same row order as
  // `visual_out`: what a training-only probe on the decoder's view of the visual tokens reads.
  absl::StatusOr<at::Tensor> Forward(const TrainBatch& batch, at::Tensor* visual_out = nullptr,
                                     at::Tensor* decoder_visual_out = nullptr,
                                     int decoder_layer = 0) const;

  // What each decoder layer's attention observes over each sequence's prompt
  // input_ids[b, 0:prompt_lengths[b]], exactly as the engine's prefill fills it for a cache policy
  // (kvcache::CausalAttention with specs[b]): result[b][layer]. Sequences with prompt length 0 or a
  // disabled spec get no observations (an empty vector). Computed without gradients; it is what a
  // caller turns into the plans of a compressed batch. The batch's own plans are ignored (the
  // prompt's rows never see them).
  absl::StatusOr<std::vector<std::vector<kvcache::LayerObservation>>> ObservePrompts(
      const TrainBatch& batch, const std::vector<int64_t>& prompt_lengths,
      const std::vector<kvcache::ObservationSpec>& specs) const;

  // Mean cross-entropy of logits [B, T, vocab] against targets [B, T] over the positions where
  // mask [B, T] (bool or 0/1) is set; targets elsewhere are ignored (any value). Position t's
  // logits predict targets[b][t], so for next-token training targets are the ids shifted left by
  // one. INVALID_ARGUMENT when the mask selects nothing or shapes disagree.
  //
  // kPerToken averages over every selected position of the batch, so an item weighs as many
  // tokens as its answer has; kPerItem averages each item's selected positions first, then the
  // items (rows with nothing selected are left out), so a one-word answer weighs as much as a
  // long caption.
  enum class Weighting { kPerToken, kPerItem };
  static absl::StatusOr<at::Tensor> Loss(const at::Tensor& logits, const at::Tensor& targets,
                                         const at::Tensor& mask,
                                         Weighting weighting = Weighting::kPerToken);

  // Writes a Hugging Face LLaVA checkpoint into `dir` (created if needed): config.json,
  // model.safetensors (F32, transformers' language_model.model.* key layout),
  // preprocessor_config.json (CLIP's processor, resize and crop to the image size) and, when
  // `tokenizer_model_path` is not empty, a copy of that tokenizer.model. Files are replaced
  // atomically; a stale shard index in `dir`, which loaders would prefer, is removed.
  absl::Status Export(const std::string& dir, const std::string& tokenizer_model_path = "") const;

  // A training checkpoint at `path` (written atomically): the config, every tensor, the state of
  // `optimizer` (which must have been built over parameters(), e.g. by NewAdamW) and the caller's
  // step counter.
  absl::Status SaveState(const std::string& path, const torch::optim::AdamW& optimizer,
                         int64_t step) const;
  // Restores what SaveState wrote into this model's tensors (in place) and into `optimizer`
  // (built over this model's parameters() the same way as when saved); returns the step.
  // FAILED_PRECONDITION when the file was saved from a model of another config.
  absl::StatusOr<int64_t> LoadState(const std::string& path, torch::optim::AdamW* optimizer);

  ~TrainableLlava();

 private:
  struct Params;
  explicit TrainableLlava(const engine::LlavaConfig& config);
  absl::StatusOr<at::Tensor> EncodeImages(const at::Tensor& pixel_values) const;
  struct Observe;
  absl::StatusOr<at::Tensor> ForwardImpl(const TrainBatch& batch, at::Tensor* visual_out,
                                         at::Tensor* decoder_visual_out, int decoder_layer,
                                         Observe* observe) const;

  engine::LlavaConfig config_;
  std::vector<std::pair<std::string, at::Tensor>> tensors_;
  std::unique_ptr<Params> p_;  // typed views of tensors_ for the forward
};

}  // namespace vlc::train
