// The demo model's task: how a synthetic VQA item (tools/vqa/vqa.h) becomes the model's input and
// target, shared by the trainer and the evaluator so that both see exactly what the serving engine
// sees. Prompts go through the engine's tokenizer and chat template, pixels through its CLIP
// preprocessing; the answer is the tokenized answer text followed by EOS, which is what greedy
// generation must produce for an exact match.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <utility>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "engine/config.h"
#include "engine/media.h"
#include "engine/tokenizer.h"
#include "tools/train/trainable_llava.h"
#include "tools/vqa/vqa.h"

namespace vlc::train {

// The demo model's shape: a 96-pixel CLIP-style ViT with 24-pixel patches, one per grid cell of
// the VQA pictures (16 visual tokens per frame), a 2-layer projector and a 4-layer Llama decoder
// with grouped-query attention (6 query, 2 KV heads), small enough to train on two CPU cores.
engine::LlavaConfig DemoConfig(int tokenizer_vocab_size);

// The VQA layout the demo config sees (image_size = the vision tower's).
vqa::Options DemoVqaOptions();

// Every line the demo tokenizer is trained on: the VQA vocabulary and the captions inside the chat
// template.
std::vector<std::string> DemoTokenizerCorpus();

// A training-only caption of frame `frame` of the item's clip, as a question and its answer:
// "describe the picture." (a single image) or "describe frame 3." (a clip) answered with every
// occupied cell in reading order, "row 1 column 2 red circle; row 3 column 1 blue box 7". Each of
// its tokens depends on the picture, so captions give the vision tower and the decoder's attention
// far more signal per item than a one-word answer does (LLaVA's first stage trains on captions
// for the same reason). The test questions never ask for one.
std::pair<std::string, std::string> Caption(const vqa::Item& item, int frame);

// An item ready for the model.
struct EncodedItem {
  std::vector<int> prompt_ids;  // BOS, template, visual placeholders, question
  std::vector<int> answer_ids;  // the answer's tokens, then EOS
  std::vector<engine::RgbImage> frames;
  // Per frame, per grid cell in reading order: what the cell holds, as class indices of
  // CellLabels (training-only supervision of the visual tokens when one token is one cell).
  std::vector<std::vector<std::array<int, 3>>> cells;
};

// Classes of a cell's label: colour (0 empty, 1 + vqa::Color), kind (0 empty, 1 + vqa::Shape,
// 1 + kNumShapes for a box) and digit (0 none, 1 + digit).
inline constexpr int kCellColorClasses = 1 + vqa::kNumColors;
inline constexpr int kCellKindClasses = 2 + vqa::kNumShapes;
inline constexpr int kCellDigitClasses = 11;

class TaskEncoder {
 public:
  // `model_dir` holds tokenizer.model (and preprocessor_config.json, else CLIP's defaults).
  static absl::StatusOr<std::unique_ptr<TaskEncoder>> Create(const std::string& model_dir,
                                                             const engine::LlavaConfig& config);

  // `augment_seed` != 0 draws the frames with vqa::RenderFrameAugmented (frame f with seed
  // augment_seed + f) instead of the plain pictures.
  absl::StatusOr<EncodedItem> Encode(const vqa::Item& item, uint64_t augment_seed = 0) const;
  // The share of augmented pictures' digits written in vqa's own hands (RenderFrameAugmented's
  // `own_hands`); 0 by default.
  void set_own_hands(double share) { own_hands_ = share; }
  // The share of augmented pictures' shapes drawn with proportions of their own
  // (RenderFrameAugmented's `shape_variety`); 0 by default.
  void set_shape_variety(double share) { shape_variety_ = share; }
  // The share of augmented pictures' digits written in vqa's other forms (RenderFrameAugmented's
  // `other_forms`); 0 by default.
  void set_other_forms(double share) { other_forms_ = share; }
  // The item's pictures with a caption of frame `frame` (see Caption) in place of its question.
  absl::StatusOr<EncodedItem> EncodeCaption(const vqa::Item& item, int frame,
                                            uint64_t augment_seed = 0) const;

  // A training batch of `items` (right-padded): input ids are prompt + answer without the final
  // EOS, targets are the ids shifted left by one, and the mask selects the positions whose target
  // is an answer token or EOS.
  struct Batch {
    TrainBatch inputs;
    at::Tensor targets;  // [B, T] int64
    at::Tensor mask;     // [B, T] bool
    at::Tensor cells;    // [images, grid * grid, 3] int64: the cell labels, image by image
  };
  absl::StatusOr<Batch> MakeBatch(const std::vector<EncodedItem>& items) const;

  const engine::Tokenizer& tokenizer() const { return *tokenizer_; }

 private:
  TaskEncoder() = default;
  engine::LlavaConfig config_;
  engine::PreprocessorConfig preprocessor_;
  std::unique_ptr<engine::Tokenizer> tokenizer_;
  double own_hands_ = 0;
  double shape_variety_ = 0;
  double other_forms_ = 0;
};

// How many frames each training batch has: single images for the first `single_steps` steps,
// then a `clip_fraction` share of clip batches whose frame count is uniform in
// [min_frames, max_frames]. A pure function of the step, so that a resumed run sees the data the
// uninterrupted run would have.
struct FrameSchedule {
  int64_t single_steps = 1500;
  double clip_fraction = 0.6;
  int min_frames = 2;
  int max_frames = 8;

  int FramesAt(int64_t step) const;
};

// Which training item fills a batch slot when some question kinds should come up more often:
// candidates base, base + kStride, base + 2 * kStride, ... are drawn until one is accepted, a
// candidate of kind k with probability weight[k] / max weight (a deterministic hash of its index
// decides), so kinds come up in proportion to their weights. Equal weights accept the first
// candidate: the item stream is then exactly the unweighted one.
struct KindMix {
  static constexpr int64_t kStride = 1000000007;
  std::array<double, vqa::kNumKinds> weight = {1, 1, 1, 1};

  // INVALID_ARGUMENT for a negative or non-finite weight, or all weights zero.
  absl::Status Validate() const;
  // Sets a kind's weight from "count=2" (a kind name of vqa::KindName, '=', a number >= 0).
  absl::Status Set(const std::string& assignment);
  int64_t ItemIndex(int64_t base, int frames, const vqa::Options& options) const;
};

// Per answer, whether every target token is the argmax of its logits (teacher forcing). With the
// full cache this is exactly whether greedy generation reproduces the answer and stops.
std::vector<bool> ExactMatches(const at::Tensor& logits, const TaskEncoder::Batch& batch);

}  // namespace vlc::train
