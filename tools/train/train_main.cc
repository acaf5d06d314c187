// vlcache-train: trains the demo LLaVA model on the synthetic VQA task from scratch, on the CPU.
//
//   build/bin/vlcache-train --out models/demo --work /tmp/demo-train --steps 6000
//
// Curriculum: single images first, then batches of single images and clips of 2..--max-frames
// frames. AdamW with linear warm-up and cosine decay, gradient clipping at 1. Every --save-every
// steps it writes a resumable training state to --work and exports the Hugging Face checkpoint to
// --out; every --eval-every steps it reports exact-match accuracy on fixed validation items
// (teacher-forced argmax over the answer and EOS, which equals greedy generation's exact match
// with the full cache). --resume continues from --work/state.pt. Deterministic for a seed and a
// thread count.
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <torch/torch.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <optional>
#include <string>
#include <sys/stat.h>
#include <vector>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "common/fs.h"
#include "common/status.h"
#include "engine/generator.h"
#include "kvcache/policy.h"
#include "tools/make_tiny.h"
#include "tools/train/demo_task.h"
#include "tools/train/trainable_llava.h"
#include "tools/vqa/vqa.h"
#include "common/process_env.h"

namespace {

using namespace vlc;
using Clock = std::chrono::steady_clock;

struct Options {
  std::string out, work;
  int64_t steps = 6000;
  // Stop (after saving) once this step is reached, without changing the schedule, which `steps`
  // sets; 0 = run to `steps`. With --resume it splits one run into several commands, e.g. to
  // change a setting at a given step and still have a command line that reproduces the run.
  int64_t until = 0;
  int64_t single_steps = 1500;  // phase 1: single images only
  int max_frames = 8;
  int min_frames = 2;             // clips have min_frames..max_frames frames, uniformly
  double clip_fraction = 0.6;     // phase 2: share of batches that are clips
  double caption_fraction = 0.3;  // share of items trained as captions (demo_task.h, Caption)
  // Share of items drawn with vqa::RenderFrameAugmented (other sizes, placements, strokes,
  // digit faces, JPEG artefacts), and share of clips with denser frames (3-6 objects).
  double augment_fraction = 0;
  double own_hands = 0;
  double shape_variety = 0;
  double other_forms = 0;
  double dense_fraction = 0;
  // A Hugging Face checkpoint (models/demo) to start from instead of random weights; its
  // tokenizer is used as it is. Ignored when --resume finds a saved state.
  std::string init_from;
  // Weight of the penalty on the share of each image's visual-token energy that all its tokens
  // have in common (see Train).
  double common_mode_penalty = 1.0;
  // Weight of the cell-label loss on the visual tokens (one token per grid cell only): linear
  // heads read each token's colour, kind and digit; they train with the model and are not
  // exported.
  double cell_loss = 1.0;
  // Weight of the frame probe (0: off): a linear head reads, from the decoder's hidden state of
  // each visual token after layer `frame_probe_layer`, which frame of its clip the token is in.
  // The visual tokens of a clip's frames are alike to the decoder except for their positions, so
  // "in frame 5" must be resolved from RoPE alone; the probe asks the first layers to write each
  // token's frame into it, which the question can then match by content. Training-only, not
  // exported.
  double frame_probe_loss = 0.0;
  int frame_probe_layer = 1;
  // KIND=WEIGHT: question kinds come up in proportion to their weights (default 1 each).
  std::vector<std::string> kind_weights;
  // "item": every item weighs the same in the task loss, whatever its answer's length; "token":
  // every answer token does, so 30% of captions of ~30 tokens outweigh the one-word answers
  // (e5 stalled at 0.65 single-image exact match while its token loss kept falling).
  std::string loss_weighting = "item";
  // Compression-aware training: the share of items whose answer is decoded through a cache the
  // policy `compress_policy` compressed at a budget drawn from `compress_budgets`, as the server
  // does after prefill (TrainBatch's plans); the rest see the full cache. The model then learns
  // to answer, and to stop, from what a compressed cache keeps.
  double compress_fraction = 0;
  std::string compress_policy = "vlcache-guard";
  std::vector<double> compress_budgets = {0.1};
  int batch_tokens = 1600;  // prompt + answer tokens per batch (sets the batch size)
  double lr = 1e-3;
  int64_t warmup = 200;
  double min_lr_ratio = 0.05;
  double weight_decay = 0.05;
  uint64_t seed = 1;
  // One LibTorch (OpenMP) thread: OpenBLAS runs each matrix product on every core by itself, and
  // a second OpenMP team spin-waiting beside it made a training step 2.7x slower on 2 cores.
  int threads = 1;
  int64_t eval_every = 250;
  int eval_n = 96;
  int64_t save_every = 250;
  bool resume = false;
};

bool Exists(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0;
}

// The policy compression-aware items are compressed with, at `budget`.
kvcache::PolicyConfig CompressionPolicy(const Options& o, double budget) {
  kvcache::PolicyConfig pc;
  pc.name = o.compress_policy;
  pc.budget = budget;
  return pc;
}

double LearningRate(const Options& o, int64_t step) {
  if (step < o.warmup) return o.lr * static_cast<double>(step + 1) / static_cast<double>(o.warmup);
  const double progress = static_cast<double>(step - o.warmup) /
                          static_cast<double>(std::max<int64_t>(1, o.steps - o.warmup));
  const double cosine = 0.5 * (1 + std::cos(M_PI * std::min(1.0, progress)));
  return o.lr * (o.min_lr_ratio + (1 - o.min_lr_ratio) * cosine);
}

int BatchSize(const Options& o, int frames, int tokens_per_frame) {
  const int tokens = frames * tokens_per_frame + 24;
  return std::max(1, o.batch_tokens / tokens);
}

struct EvalResult {
  std::map<int, double> accuracy;  // by frames
};

// The plans of the batch's items that `policies` (one per item; nullopt: the full cache)
// compress, written into `batch`: observe the prompts with the model as it is, then plan.
absl::Status CompressBatch(const train::TrainableLlava& model,
                           const std::vector<train::EncodedItem>& items,
                           const std::vector<std::optional<kvcache::PolicyConfig>>& policies,
                           train::TaskEncoder::Batch* batch) {
  const auto& c = model.config();
  const size_t n = items.size();
  std::vector<int64_t> prompt_lengths(n, 0);
  std::vector<kvcache::ObservationSpec> specs(n);
  std::vector<kvcache::PromptShape> shapes(n);
  bool any = false;
  for (size_t b = 0; b < n; ++b) {
    if (!policies[b].has_value()) continue;
    shapes[b] = engine::PromptShapeOf(c, items[b].prompt_ids);
    if (!kvcache::Compresses(*policies[b], shapes[b].length)) continue;
    prompt_lengths[b] = shapes[b].length;
    specs[b] = kvcache::ObservationFor(*policies[b], shapes[b]);
    any = true;
  }
  if (!any) return absl::OkStatus();
  VLC_ASSIGN_OR_RETURN(auto observations,
                       model.ObservePrompts(batch->inputs, prompt_lengths, specs));
  std::vector<kvcache::KeepPlan> plans(n);
  for (size_t b = 0; b < n; ++b) {
    if (prompt_lengths[b] == 0) continue;
    VLC_ASSIGN_OR_RETURN(plans[b], kvcache::MakeKeepPlan(*policies[b], shapes[b], observations[b]));
  }
  batch->inputs.prompt_lengths = std::move(prompt_lengths);
  batch->inputs.plans = std::move(plans);
  return absl::OkStatus();
}

// Teacher-forced exact match on the first `n` validation items of each frame count, with the full
// cache or, given `policy`, through a cache it compressed (teacher-forced exact match through the
// compressed cache equals greedy generation's through it: the argmax is right at every step).
absl::StatusOr<EvalResult> Evaluate(const train::TrainableLlava& model,
                                    const train::TaskEncoder& enc, const std::vector<int>& frames,
                                    int n,
                                    const std::optional<kvcache::PolicyConfig>& policy = {}) {
  torch::NoGradGuard no_grad;
  EvalResult r;
  for (int f : frames) {
    int right = 0;
    const int per_batch = std::max(1, 2048 / (f * model.config().visual_tokens_per_image() + 24));
    for (int start = 0; start < n; start += per_batch) {
      std::vector<train::EncodedItem> items;
      for (int i = start; i < std::min(n, start + per_batch); ++i) {
        VLC_ASSIGN_OR_RETURN(auto e, enc.Encode(vqa::MakeItem(vqa::Split::kValidation, i, f,
                                                              train::DemoVqaOptions())));
        items.push_back(std::move(e));
      }
      VLC_ASSIGN_OR_RETURN(auto batch, enc.MakeBatch(items));
      if (policy.has_value()) {
        VLC_RETURN_IF_ERROR(CompressBatch(
            model, items, std::vector<std::optional<kvcache::PolicyConfig>>(items.size(), policy),
            &batch));
      }
      VLC_ASSIGN_OR_RETURN(auto logits, model.Forward(batch.inputs));
      for (bool ok : train::ExactMatches(logits, batch)) right += ok;
    }
    r.accuracy[f] = static_cast<double>(right) / n;
  }
  return r;
}

absl::Status Train(const Options& o) {
  train::KindMix kind_mix;
  for (const auto& a : o.kind_weights) VLC_RETURN_IF_ERROR(kind_mix.Set(a));
  VLC_RETURN_IF_ERROR(kind_mix.Validate());
  if (o.threads > 0) at::set_num_threads(o.threads);
  for (const std::string& dir : {o.work, o.out}) {
    std::error_code ec;
    std::filesystem::create_directories(dir, ec);
    if (ec) return absl::InternalError(absl::StrCat("cannot create ", dir, ": ", ec.message()));
  }
  const std::string tokenizer_path = o.work + "/tokenizer.model";
  const std::string state_path = o.work + "/state.pt";
  if (!o.init_from.empty() && (!o.resume || !Exists(tokenizer_path))) {
    std::error_code ec;
    std::filesystem::copy_file(o.init_from + "/tokenizer.model", tokenizer_path,
                               std::filesystem::copy_options::overwrite_existing, ec);
    if (ec) {
      return absl::InternalError(absl::StrCat("cannot copy ", o.init_from,
                                              "/tokenizer.model: ", ec.message()));
    }
  } else if (!o.resume || !Exists(tokenizer_path)) {
    VLC_ASSIGN_OR_RETURN(
        int pieces, tools::WriteBpeTokenizer(train::DemoTokenizerCorpus(), 512, tokenizer_path));
    std::cout << "tokenizer: " << pieces << " pieces -> " << tokenizer_path << std::endl;
  }
  // The vocabulary size comes from the tokenizer file itself (any id past it for the image).
  VLC_ASSIGN_OR_RETURN(auto probe, engine::Tokenizer::Load(tokenizer_path, 1 << 30));
  const engine::LlavaConfig config = train::DemoConfig(probe->vocab_size());
  std::unique_ptr<train::TrainableLlava> model;
  if (!o.init_from.empty() && !(o.resume && Exists(state_path))) {
    VLC_ASSIGN_OR_RETURN(model, train::TrainableLlava::FromCheckpoint(o.init_from));
    if (model->config().text.vocab_size != config.text.vocab_size) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--init-from ", o.init_from, ": its vocabulary (", model->config().text.vocab_size,
          ") is not the demo model's (", config.text.vocab_size, ")"));
    }
    std::cout << "initialised from " << o.init_from << std::endl;
  } else {
    VLC_ASSIGN_OR_RETURN(model, train::TrainableLlava::Create(config));
    model->Init(o.seed, 0.02f);
  }
  train::AdamWSettings adam;
  adam.lr = o.lr;
  adam.weight_decay = o.weight_decay;
  auto optimizer = model->NewAdamW(adam);
  int64_t step = 0;
  if (o.resume && Exists(state_path)) {
    VLC_ASSIGN_OR_RETURN(step, model->LoadState(state_path, optimizer.get()));
    std::cout << "resumed at step " << step << " from " << state_path << std::endl;
  }
  // Training-only heads that read a cell's colour, kind and digit off its visual token. They
  // give the vision tower direct, dense supervision: the first runs learned where objects are
  // but stayed nearly colour-blind (a red and a blue square 1.2 apart, against 34 for a square
  // and white), because the only colour signal came through a decoder that had not learned to
  // read colours yet.
  const bool one_token_per_cell =
      config.vision.image_size / config.vision.patch_size == train::DemoVqaOptions().grid;
  const int64_t hidden = config.text.hidden_size;
  std::vector<at::Tensor> heads;
  for (int classes :
       {train::kCellColorClasses, train::kCellKindClasses, train::kCellDigitClasses}) {
    auto gen = at::make_generator<at::CPUGeneratorImpl>(o.seed + 99 + classes);
    heads.push_back((at::randn({classes, hidden}, gen) * 0.02).set_requires_grad(true));
    heads.push_back(at::zeros({classes}).set_requires_grad(true));
  }
  torch::optim::AdamW head_optimizer(heads, torch::optim::AdamWOptions(o.lr).weight_decay(0));
  const std::string heads_path = o.work + "/cell_heads.pt";
  if (o.resume && Exists(heads_path)) {
    std::vector<at::Tensor> saved;
    torch::load(saved, heads_path);
    torch::NoGradGuard no_grad;
    for (size_t i = 0; i < heads.size() && i < saved.size(); ++i) heads[i].copy_(saved[i]);
  }
  const bool frame_probe_on = o.frame_probe_loss > 0;
  if (frame_probe_on &&
      (o.frame_probe_layer < 0 || o.frame_probe_layer >= config.text.num_hidden_layers)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--frame-probe-layer must be in [0, ", config.text.num_hidden_layers, ")"));
  }
  std::vector<at::Tensor> frame_head;
  {
    auto gen = at::make_generator<at::CPUGeneratorImpl>(o.seed + 7);
    frame_head.push_back(
        (at::randn({vqa::kMaxFrames, hidden}, gen) * 0.02).set_requires_grad(true));
    frame_head.push_back(at::zeros({vqa::kMaxFrames}).set_requires_grad(true));
  }
  torch::optim::AdamW frame_head_optimizer(frame_head,
                                           torch::optim::AdamWOptions(o.lr).weight_decay(0));
  const std::string frame_head_path = o.work + "/frame_head.pt";
  if (frame_probe_on && o.resume && Exists(frame_head_path)) {
    std::vector<at::Tensor> saved;
    torch::load(saved, frame_head_path);
    torch::NoGradGuard no_grad;
    for (size_t i = 0; i < frame_head.size() && i < saved.size(); ++i)
      frame_head[i].copy_(saved[i]);
  }
  // The encoder reads tokenizer.model from a model directory: the work directory serves.
  VLC_ASSIGN_OR_RETURN(auto enc, train::TaskEncoder::Create(o.work, config));
  enc->set_own_hands(o.own_hands);
  enc->set_shape_variety(o.shape_variety);
  enc->set_other_forms(o.other_forms);
  std::cout << "parameters: " << model->NumTrainableParameters() << ", threads "
            << at::get_num_threads() << std::endl;

  std::ofstream log(o.work + "/log.jsonl", std::ios::app);
  // Single images, the 8-frame clips the demo targets, and the longest clips trained on.
  std::vector<int> eval_frames = {1};
  for (int f : {8, o.max_frames}) {
    if (f <= o.max_frames && f > eval_frames.back()) eval_frames.push_back(f);
  }
  auto t0 = Clock::now();
  double loss_sum = 0, cell_sum = 0, probe_sum = 0;
  int64_t loss_n = 0, samples = 0;
  const int64_t last = o.until > 0 ? std::min(o.until, o.steps) : o.steps;
  for (; step < last;) {
    const int frames =
        train::FrameSchedule{o.single_steps, o.clip_fraction, o.min_frames, o.max_frames}.FramesAt(
            step);
    const int bs = BatchSize(o, frames, config.visual_tokens_per_image());
    std::vector<train::EncodedItem> items;
    std::vector<std::optional<kvcache::PolicyConfig>> compress(bs);
    for (int b = 0; b < bs; ++b) {
      // Whether it is a caption, and of which frame, augmented or dense: a pure function of
      // (step, b).
      uint64_t h = (static_cast<uint64_t>(step) * 64 + b + 1) * 0x9E3779B97F4A7C15ull;
      h ^= h >> 29;
      h *= 0xBF58476D1CE4E5B9ull;
      h ^= h >> 32;
      uint64_t g = h * 0xD6E8FEB86659FD93ull;
      g ^= g >> 32;
      vqa::Options vo = train::DemoVqaOptions();
      vo.dense_frames = frames > 1 && static_cast<double>(g % 10000) / 1e4 < o.dense_fraction;
      const uint64_t augment =
          static_cast<double>(g / 10000 % 10000) / 1e4 < o.augment_fraction ? (g | 1) : 0;
      const vqa::Item item = vqa::MakeItem(
          vqa::Split::kTrain, kind_mix.ItemIndex(step * 64 + b, frames, vo), frames, vo);
      const bool caption = static_cast<double>(h % 10000) / 1e4 < o.caption_fraction;
      uint64_t r = g * 0x94D049BB133111EBull;
      r ^= r >> 31;
      if (static_cast<double>(r % 10000) / 1e4 < o.compress_fraction) {
        compress[b] =
            CompressionPolicy(o, o.compress_budgets[r / 10000 % o.compress_budgets.size()]);
      }
      if (caption) {
        const int frame = static_cast<int>(h / 10000 % frames);
        VLC_ASSIGN_OR_RETURN(auto e, enc->EncodeCaption(item, frame, augment));
        items.push_back(std::move(e));
      } else {
        VLC_ASSIGN_OR_RETURN(auto e, enc->Encode(item, augment));
        items.push_back(std::move(e));
      }
    }
    VLC_ASSIGN_OR_RETURN(auto batch, enc->MakeBatch(items));
    if (o.compress_fraction > 0) {
      VLC_RETURN_IF_ERROR(CompressBatch(*model, items, compress, &batch));
    }
    const double lr = LearningRate(o, step);
    for (auto& group : optimizer->param_groups()) {
      static_cast<torch::optim::AdamWOptions&>(group.options()).lr(lr);
    }
    optimizer->zero_grad();
    head_optimizer.zero_grad();
    frame_head_optimizer.zero_grad();
    at::Tensor visual, decoder_visual;
    VLC_ASSIGN_OR_RETURN(auto logits, model->Forward(batch.inputs, &visual,
                                                     frame_probe_on ? &decoder_visual : nullptr,
                                                     o.frame_probe_layer));
    VLC_ASSIGN_OR_RETURN(
        auto loss, train::TrainableLlava::Loss(logits, batch.targets, batch.mask,
                                               o.loss_weighting == "item"
                                                   ? train::TrainableLlava::Weighting::kPerItem
                                                   : train::TrainableLlava::Weighting::kPerToken));
    at::Tensor objective = loss;
    if (o.common_mode_penalty > 0 && visual.defined()) {
      // Trained from scratch, the vision tower drifts into feeding the decoder tokens that are
      // one large vector shared by every patch plus tiny differences; after the decoder's
      // RMSNorm the picture is then invisible and the model answers from priors alone (seen in
      // the first runs: a shared norm of ~10^4 against differences of ~1). The penalty is the
      // share of each image's token energy in its mean token, which is scale-free and leaves
      // the tokens free to differ.
      const int64_t per_image = config.visual_tokens_per_image();
      auto v = visual.view({-1, per_image, visual.size(1)});
      auto common = v.mean(1).pow(2).sum(-1);
      auto total = v.pow(2).sum(-1).mean(1) + 1e-6;
      objective = loss + o.common_mode_penalty * (common / total).mean();
    }
    if (o.cell_loss > 0 && one_token_per_cell && visual.defined()) {
      const auto labels = batch.cells.view({-1, 3});
      at::Tensor cell = at::zeros({}, at::kFloat);
      for (int a = 0; a < 3; ++a) {
        auto logits_a = at::linear(visual, heads[2 * a], heads[2 * a + 1]);
        cell = cell + at::cross_entropy_loss(logits_a, labels.select(1, a));
      }
      objective = objective + o.cell_loss * cell / 3;
      cell_sum += cell.item<double>() / 3;
    }
    if (frame_probe_on && decoder_visual.defined()) {
      // Row order is the images' order: sequence by sequence, frame by frame, token by token.
      std::vector<int64_t> labels;
      const int64_t per_image = config.visual_tokens_per_image();
      for (int64_t n : batch.inputs.images_per_sequence) {
        for (int64_t f = 0; f < n; ++f) labels.insert(labels.end(), per_image, f);
      }
      auto target = at::tensor(labels, at::kLong);
      auto probe_loss =
          at::cross_entropy_loss(at::linear(decoder_visual, frame_head[0], frame_head[1]), target);
      objective = objective + o.frame_probe_loss * probe_loss;
      probe_sum += probe_loss.item<double>();
    }
    objective.backward();
    torch::nn::utils::clip_grad_norm_(model->parameters(), 1.0);
    optimizer->step();
    head_optimizer.step();
    if (frame_probe_on) frame_head_optimizer.step();
    loss_sum += loss.item<double>();
    ++loss_n;
    samples += bs;
    ++step;

    if (step % 25 == 0) {
      const double secs = std::chrono::duration<double>(Clock::now() - t0).count();
      std::printf("step %6lld  loss %.4f  cell %.4f  lr %.2e  frames %2d  %.1f samples/s",
                  static_cast<long long>(step), loss_sum / loss_n, cell_sum / loss_n, lr, frames,
                  samples / secs);
      if (frame_probe_on) std::printf("  frame probe %.4f", probe_sum / loss_n);
      std::printf("\n");
      std::fflush(stdout);
      log << nlohmann::json({{"step", step},
                             {"loss", loss_sum / loss_n},
                             {"lr", lr},
                             {"samples_per_s", samples / secs}})
                 .dump()
          << std::endl;
      loss_sum = 0;
      cell_sum = 0;
      probe_sum = 0;
      loss_n = 0;
      samples = 0;
      t0 = Clock::now();
    }
    if (step % o.eval_every == 0 || step == last) {
      VLC_ASSIGN_OR_RETURN(auto ev, Evaluate(*model, *enc, eval_frames, o.eval_n));
      nlohmann::json j = {{"step", step}};
      std::string line = absl::StrCat("eval step ", step, ":");
      for (const auto& [f, acc] : ev.accuracy) {
        j[absl::StrCat("val_exact_match_frames_", f)] = acc;
        absl::StrAppend(&line, " frames=", f, " exact-match ", acc);
      }
      if (o.compress_fraction > 0) {
        // Also through the cache compressed at the first budget.
        VLC_ASSIGN_OR_RETURN(auto cev, Evaluate(*model, *enc, eval_frames, o.eval_n,
                                                CompressionPolicy(o, o.compress_budgets[0])));
        for (const auto& [f, acc] : cev.accuracy) {
          j[absl::StrCat("val_exact_match_compressed_frames_", f)] = acc;
          absl::StrAppend(&line, " compressed ", f, " ", acc);
        }
      }
      std::cout << line << std::endl;
      log << j.dump() << std::endl;
    }
    if (step % o.save_every == 0 || step == last) {
      VLC_RETURN_IF_ERROR(model->SaveState(state_path, *optimizer, step));
      torch::save(heads, heads_path);
      if (frame_probe_on) torch::save(frame_head, frame_head_path);
      VLC_RETURN_IF_ERROR(model->Export(o.out, tokenizer_path));
      std::cout << "saved step " << step << " -> " << o.out << std::endl;
    }
  }
  return absl::OkStatus();
}

}  // namespace

// Serving and measuring: OpenMP workers sleep between parallel regions (common/process_env.h).
VLC_PREFER_SLEEPING_OPENMP_WORKERS();

int main(int argc, char** argv) {
  CLI::App app{"Trains the demo LLaVA model on the synthetic VQA task (CPU)"};
  Options o;
  app.add_option("--out", o.out, "Exported Hugging Face checkpoint directory")->required();
  app.add_option("--work", o.work, "Training state, tokenizer and log (default: OUT.work)");
  app.add_option("--steps", o.steps, "Optimizer steps in all")->capture_default_str();
  app.add_option("--until", o.until,
                 "Stop after saving at this step (the schedule still follows --steps); 0 = --steps")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--single-steps", o.single_steps, "Steps of single images before clips")
      ->capture_default_str();
  app.add_option("--loss-weighting", o.loss_weighting,
                 "item: each item weighs the same in the task loss; token: each answer token does")
      ->check(CLI::IsMember({"item", "token"}))
      ->capture_default_str();
  app.add_option("--max-frames", o.max_frames, "Longest clip trained on")
      ->check(CLI::Range(1, vqa::kMaxFrames))
      ->capture_default_str();
  app.add_option("--min-frames", o.min_frames,
                 "Shortest clip trained on (clips are drawn uniformly from min to max frames)")
      ->check(CLI::Range(2, vqa::kMaxFrames))
      ->capture_default_str();
  app.add_option("--clip-fraction", o.clip_fraction, "Share of clip batches after phase 1")
      ->check(CLI::Range(0.0, 1.0))
      ->capture_default_str();
  app.add_option("--augment-fraction", o.augment_fraction,
                 "Share of items drawn with varied sizes, placements, strokes, digit faces and "
                 "JPEG artefacts")
      ->check(CLI::Range(0.0, 1.0))
      ->capture_default_str();
  app.add_option("--own-hand-fraction", o.own_hands,
                 "Share of augmented pictures' digits written in the VQA tool's own round and "
                 "segmented hands instead of Hershey's faces")
      ->check(CLI::Range(0.0, 1.0))
      ->capture_default_str();
  app.add_option("--shape-variety-fraction", o.shape_variety,
                 "Share of augmented pictures' shapes drawn with proportions of their own "
                 "(ellipses, oblongs, squat or tall triangles and diamonds, other crosses)")
      ->check(CLI::Range(0.0, 1.0))
      ->capture_default_str();
  app.add_option("--other-forms-fraction", o.other_forms,
                 "Share of augmented pictures' digits written in forms neither Hershey's faces nor "
                 "the own hands write (flat-topped 3, curved-neck 2, one-stroke 8, straight-tailed "
                 "9...), drawn last so the rest of each picture is unchanged")
      ->check(CLI::Range(0.0, 1.0))
      ->capture_default_str();
  app.add_option("--dense-fraction", o.dense_fraction,
                 "Share of clips whose frames hold 3 to 6 objects")
      ->check(CLI::Range(0.0, 1.0))
      ->capture_default_str();
  app.add_option("--init-from", o.init_from,
                 "Start from this Hugging Face checkpoint (its tokenizer too) instead of random "
                 "weights");
  app.add_option("--caption-fraction", o.caption_fraction, "Share of items trained as captions")
      ->check(CLI::Range(0.0, 1.0))
      ->capture_default_str();
  app.add_option("--common-mode-penalty", o.common_mode_penalty,
                 "Weight of the penalty on visual tokens' shared component (0: off)")
      ->capture_default_str();
  app.add_option("--cell-loss", o.cell_loss,
                 "Weight of the per-cell label loss on visual tokens (0: off)")
      ->capture_default_str();
  app.add_option("--kind-weight", o.kind_weights,
                 "KIND=WEIGHT (repeatable): how often a question kind comes up relative to the "
                 "others, e.g. count=2 (kinds: color_of_shape, shape_at, digit_in_box, count)");
  app.add_option("--frame-probe-loss", o.frame_probe_loss,
                 "Weight of the training-only probe that reads each visual token's frame from "
                 "the decoder (0: off)")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  app.add_option("--frame-probe-layer", o.frame_probe_layer,
                 "Decoder layer (0-based) whose output the frame probe reads")
      ->capture_default_str();
  app.add_option("--compress-fraction", o.compress_fraction,
                 "Share of items whose answer is decoded through a compressed cache (0: none)")
      ->check(CLI::Range(0.0, 1.0))
      ->capture_default_str();
  app.add_option("--compress-policy", o.compress_policy,
                 "Cache policy that compresses those items (kvcache/policy.h names)")
      ->capture_default_str();
  app.add_option("--compress-budgets", o.compress_budgets,
                 "Budgets those items are compressed at, drawn uniformly per item; the first is "
                 "also the periodic evaluation's")
      ->delimiter(',')
      ->check(CLI::Range(1e-6, 1.0))
      ->capture_default_str();
  app.add_option("--batch-tokens", o.batch_tokens, "Tokens per batch (sets the batch size)")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_option("--lr", o.lr, "Peak learning rate")->capture_default_str();
  app.add_option("--warmup", o.warmup, "Warm-up steps")->capture_default_str();
  app.add_option("--weight-decay", o.weight_decay)->capture_default_str();
  app.add_option("--seed", o.seed, "Initialisation seed")->capture_default_str();
  app.add_option("--threads", o.threads, "LibTorch threads (0: LibTorch's default)")
      ->capture_default_str();
  app.add_option("--eval-every", o.eval_every)->check(CLI::PositiveNumber)->capture_default_str();
  app.add_option("--eval-n", o.eval_n, "Validation items per frame count")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_option("--save-every", o.save_every)->check(CLI::PositiveNumber)->capture_default_str();
  app.add_flag("--resume", o.resume, "Continue from WORK/state.pt when it exists");
  CLI11_PARSE(app, argc, argv);
  if (o.work.empty()) o.work = o.out + ".work";
  if (o.max_frames >= 2 && o.min_frames > o.max_frames) {
    std::cerr << "vlcache-train: --min-frames " << o.min_frames << " is above --max-frames "
              << o.max_frames << "\n";
    return 2;
  }
  if (o.compress_budgets.empty()) {
    std::cerr << "vlcache-train: --compress-budgets needs at least one budget\n";
    return 2;
  }
  if (const absl::Status v = CompressionPolicy(o, o.compress_budgets[0]).Validate(); !v.ok()) {
    std::cerr << "vlcache-train: --compress-policy: " << v.message() << "\n";
    return 2;
  }
  const absl::Status st = Train(o);
  if (!st.ok()) {
    std::cerr << "vlcache-train: " << st.message() << "\n";
    return 1;
  }
  return 0;
}
