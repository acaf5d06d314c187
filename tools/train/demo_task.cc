#include "tools/train/demo_task.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/status.h"

namespace vlc::train {

engine::LlavaConfig DemoConfig(int tokenizer_vocab_size) {
  engine::LlavaConfig cfg;
  auto& v = cfg.vision;
  v.hidden_size = 128;
  v.intermediate_size = 512;
  v.num_hidden_layers = 4;
  v.num_attention_heads = 4;
  v.num_channels = 3;
  v.image_size = 96;
  v.patch_size = 24;
  v.layer_norm_eps = 1e-5;
  v.hidden_act = "quick_gelu";

  auto& t = cfg.text;
  t.model_type = "llama";
  // LLaVA's convention: the image token is the id after the SentencePiece vocabulary, and the
  // embedding table is padded to a multiple of 8.
  t.vocab_size = (tokenizer_vocab_size + 1 + 7) / 8 * 8;
  t.hidden_size = 192;
  t.intermediate_size = 512;
  t.num_hidden_layers = 4;
  t.num_attention_heads = 6;
  t.num_key_value_heads = 2;
  t.head_dim = 32;
  t.max_position_embeddings = 4096;
  t.rope_theta = 10000.0;
  t.rms_norm_eps = 1e-5;
  t.hidden_act = "silu";
  t.sliding_window = 0;
  t.tie_word_embeddings = false;
  t.bos_token_id = 1;
  t.eos_token_id = 2;

  cfg.image_token_index = tokenizer_vocab_size;
  // Every vision layer is used (LLaVA takes the second-to-last of a deep tower; this one is
  // shallow enough that the last layer's features are the useful ones).
  cfg.vision_feature_layer = -1;
  cfg.vision_feature_select_strategy = "default";
  cfg.projector_hidden_act = "gelu";
  cfg.multimodal_projector_bias = true;
  return cfg;
}

vqa::Options DemoVqaOptions() {
  vqa::Options o;
  o.image_size = 96;
  o.grid = 4;
  return o;
}

std::pair<std::string, std::string> Caption(const vqa::Item& item, int frame) {
  const int frames = static_cast<int>(item.clip.frames.size());
  std::string question = frames == 1 ? std::string("describe the picture.")
                                     : absl::StrCat("describe frame ", frame + 1, ".");
  std::vector<vqa::Object> objects = item.clip.frames[frame].objects;
  std::sort(objects.begin(), objects.end(), [](const vqa::Object& a, const vqa::Object& b) {
    return std::make_pair(a.row, a.col) < std::make_pair(b.row, b.col);
  });
  std::string answer;
  for (const auto& o : objects) {
    if (!answer.empty()) answer += "; ";
    absl::StrAppend(&answer, "row ", o.row + 1, " column ", o.col + 1, " ",
                    vqa::ColorName(o.color), " ");
    if (o.is_box) {
      absl::StrAppend(&answer, "box ", o.digit);
    } else {
      absl::StrAppend(&answer, vqa::ShapeName(o.shape));
    }
  }
  return {question, answer};
}

std::vector<std::string> DemoTokenizerCorpus() {
  std::vector<std::string> lines;
  for (const std::string& line : vqa::VocabularyCorpus()) {
    // The template's text around the question, so that "USER:", "ASSISTANT:" and the newline
    // become pieces of their own.
    lines.push_back(absl::StrCat("USER: \n", line, " ASSISTANT: ", line));
  }
  // Captions of a few training scenes, single images and clips.
  for (int i = 0; i < 64; ++i) {
    const vqa::Item item = vqa::MakeItem(vqa::Split::kTrain, i, 1 + i % 4, DemoVqaOptions());
    const auto [q, a] = Caption(item, 0);
    lines.push_back(absl::StrCat("USER: \n", q, " ASSISTANT: ", a));
  }
  return lines;
}

absl::StatusOr<std::unique_ptr<TaskEncoder>> TaskEncoder::Create(
    const std::string& model_dir, const engine::LlavaConfig& config) {
  std::unique_ptr<TaskEncoder> e(new TaskEncoder());
  e->config_ = config;
  VLC_ASSIGN_OR_RETURN(e->tokenizer_,
                       engine::Tokenizer::Load(model_dir, config.image_token_index));
  VLC_ASSIGN_OR_RETURN(e->preprocessor_,
                       engine::PreprocessorConfig::FromFileOrDefault(
                           model_dir + "/preprocessor_config.json", config.vision.image_size));
  return e;
}

absl::StatusOr<EncodedItem> TaskEncoder::Encode(const vqa::Item& item,
                                                uint64_t augment_seed) const {
  if (item.options.image_size != config_.vision.image_size) {
    return absl::InvalidArgumentError(
        absl::StrCat("the item is drawn at ", item.options.image_size, " px but the model sees ",
                     config_.vision.image_size, " px"));
  }
  EncodedItem out;
  const int frames = static_cast<int>(item.clip.frames.size());
  VLC_ASSIGN_OR_RETURN(out.prompt_ids,
                       tokenizer_->EncodePrompt(vqa::Prompt(item),
                                                frames * config_.visual_tokens_per_image()));
  out.answer_ids = tokenizer_->Encode(item.answer, /*add_bos=*/false);
  out.answer_ids.push_back(tokenizer_->eos_id());
  const int grid = item.options.grid;
  for (const auto& f : item.clip.frames) {
    std::vector<std::array<int, 3>> cells(static_cast<size_t>(grid * grid), {0, 0, 0});
    for (const auto& o : f.objects) {
      auto& c = cells[static_cast<size_t>(o.row * grid + o.col)];
      c[0] = 1 + static_cast<int>(o.color);
      c[1] = o.is_box ? 1 + vqa::kNumShapes : 1 + static_cast<int>(o.shape);
      c[2] = o.is_box ? 1 + o.digit : 0;
    }
    out.cells.push_back(std::move(cells));
    engine::RgbImage img;
    if (augment_seed != 0) {
      vqa::AugmentedFrame a =
          vqa::RenderFrameAugmented(f, item.options, augment_seed + out.frames.size(), own_hands_,
                                    shape_variety_, other_forms_);
      img.width = img.height = a.image_size;
      img.data = std::move(a.rgb);
    } else {
      img.width = img.height = item.options.image_size;
      img.data = vqa::RenderFrame(f, item.options);
    }
    out.frames.push_back(std::move(img));
  }
  return out;
}

absl::StatusOr<EncodedItem> TaskEncoder::EncodeCaption(const vqa::Item& item, int frame,
                                                       uint64_t augment_seed) const {
  VLC_ASSIGN_OR_RETURN(EncodedItem out, Encode(item, augment_seed));
  const auto [question, answer] = Caption(item, frame);
  const int frames = static_cast<int>(item.clip.frames.size());
  VLC_ASSIGN_OR_RETURN(out.prompt_ids,
                       tokenizer_->EncodePrompt(question,
                                                frames * config_.visual_tokens_per_image()));
  out.answer_ids = tokenizer_->Encode(answer, /*add_bos=*/false);
  out.answer_ids.push_back(tokenizer_->eos_id());
  return out;
}

absl::StatusOr<TaskEncoder::Batch> TaskEncoder::MakeBatch(
    const std::vector<EncodedItem>& items) const {
  if (items.empty()) return absl::InvalidArgumentError("an empty batch");
  Batch b;
  std::vector<std::vector<int>> inputs;
  std::vector<engine::RgbImage> frames;
  for (const auto& it : items) {
    std::vector<int> seq = it.prompt_ids;
    seq.insert(seq.end(), it.answer_ids.begin(), it.answer_ids.end() - 1);
    inputs.push_back(std::move(seq));
    b.inputs.images_per_sequence.push_back(static_cast<int64_t>(it.frames.size()));
    frames.insert(frames.end(), it.frames.begin(), it.frames.end());
  }
  auto [ids, lengths] = PadSequences(inputs, /*pad_id=*/0);
  b.inputs.input_ids = ids;
  b.inputs.lengths = lengths;
  const int64_t batch = static_cast<int64_t>(items.size()), width = ids.size(1);
  b.targets = at::zeros({batch, width}, at::kLong);
  b.mask = at::zeros({batch, width}, at::kBool);
  auto targets = b.targets.accessor<int64_t, 2>();
  auto mask = b.mask.accessor<bool, 2>();
  for (int64_t i = 0; i < batch; ++i) {
    const auto& it = items[i];
    // Position p predicts token p + 1; the answer starts right after the prompt.
    const int64_t first = static_cast<int64_t>(it.prompt_ids.size()) - 1;
    for (size_t k = 0; k < it.answer_ids.size(); ++k) {
      targets[i][first + static_cast<int64_t>(k)] = it.answer_ids[k];
      mask[i][first + static_cast<int64_t>(k)] = true;
    }
  }
  if (!frames.empty()) {
    VLC_ASSIGN_OR_RETURN(b.inputs.pixel_values, engine::PreprocessImages(frames, preprocessor_));
    std::vector<int64_t> labels;
    for (const auto& it : items) {
      for (const auto& frame : it.cells) {
        for (const auto& c : frame) labels.insert(labels.end(), c.begin(), c.end());
      }
    }
    const int64_t per_image = static_cast<int64_t>(items[0].cells[0].size());
    b.cells = at::tensor(labels, at::kLong).view({-1, per_image, 3});
  }
  return b;
}

std::vector<bool> ExactMatches(const at::Tensor& logits, const TaskEncoder::Batch& batch) {
  const auto predicted = logits.detach().argmax(-1);
  const auto right = (predicted == batch.targets) | ~batch.mask;
  const auto all_right = right.all(/*dim=*/1);
  std::vector<bool> out(static_cast<size_t>(all_right.size(0)));
  for (int64_t i = 0; i < all_right.size(0); ++i) out[i] = all_right[i].item<bool>();
  return out;
}

int FrameSchedule::FramesAt(int64_t step) const {
  if (step < single_steps || max_frames < 2) return 1;
  uint64_t h = (static_cast<uint64_t>(step) + 0x9E3779B97F4A7C15ull) * 0xBF58476D1CE4E5B9ull;
  h ^= h >> 31;
  const double u = static_cast<double>(h % 1000000) / 1e6;
  if (u >= clip_fraction) return 1;
  const int lo = std::clamp(min_frames, 2, max_frames);
  return lo + static_cast<int>(h / 1000000 % static_cast<uint64_t>(max_frames - lo + 1));
}

absl::Status KindMix::Validate() const {
  double most = 0;
  for (double w : weight) {
    if (!(w >= 0) || !std::isfinite(w)) {
      return absl::InvalidArgumentError("a question kind's weight must be a finite number >= 0");
    }
    most = std::max(most, w);
  }
  if (most <= 0) return absl::InvalidArgumentError("at least one question kind needs weight > 0");
  return absl::OkStatus();
}

absl::Status KindMix::Set(const std::string& assignment) {
  const size_t eq = assignment.find('=');
  if (eq == std::string::npos) {
    return absl::InvalidArgumentError(
        absl::StrCat("expected KIND=WEIGHT (e.g. count=2), got \"", assignment, "\""));
  }
  VLC_ASSIGN_OR_RETURN(const vqa::QuestionKind kind, vqa::ParseKind(assignment.substr(0, eq)));
  double w = 0;
  if (!absl::SimpleAtod(assignment.substr(eq + 1), &w) || !(w >= 0) || !std::isfinite(w)) {
    return absl::InvalidArgumentError(
        absl::StrCat("the weight in \"", assignment, "\" must be a finite number >= 0"));
  }
  weight[static_cast<size_t>(kind)] = w;
  return absl::OkStatus();
}

int64_t KindMix::ItemIndex(int64_t base, int frames, const vqa::Options& options) const {
  const double most = *std::max_element(weight.begin(), weight.end());
  if (*std::min_element(weight.begin(), weight.end()) >= most) return base;
  int64_t index = base;
  for (int attempt = 0; attempt < 256; ++attempt) {
    index = base + attempt * kStride;
    const double w = weight[static_cast<size_t>(
        vqa::MakeItem(vqa::Split::kTrain, index, frames, options).question.kind)];
    if (w >= most) return index;
    uint64_t h = static_cast<uint64_t>(index) * 0xD6E8FEB86659FD93ull + 0x9E3779B97F4A7C15ull;
    h ^= h >> 32;
    h *= 0xD6E8FEB86659FD93ull;
    h ^= h >> 32;
    if (static_cast<double>(h % 1000000) / 1e6 < w / most) return index;
  }
  return index;
}

}  // namespace vlc::train
