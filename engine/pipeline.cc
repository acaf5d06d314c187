#include "engine/pipeline.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <sched.h>

#include <chrono>
#include <thread>

#include "absl/strings/str_cat.h"
#include "common/status.h"

namespace vlc::engine {
namespace {

using Clock = std::chrono::steady_clock;

double MsSince(Clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

// Cores this process may run on (a container's CPU set), not the machine's total.
int AvailableCores() {
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof(set), &set) == 0) return std::max(1, CPU_COUNT(&set));
  return std::max(1u, std::thread::hardware_concurrency());
}

}  // namespace

TextAssembler::TextAssembler(const Tokenizer* tok, std::vector<std::string> stop)
    : detok_(tok), stop_(std::move(stop)) {
  for (const auto& s : stop_) max_stop_ = std::max(max_stop_, s.size());
}

bool TextAssembler::Push(int id) {
  if (stopped_) return false;
  const size_t before = text_.size();
  text_ += detok_.Push(id);
  if (!stop_.empty() && text_.size() > before) {
    // A stop string may straddle the old end: search from where it could begin.
    const size_t from = before >= max_stop_ ? before - max_stop_ + 1 : 0;
    size_t cut = std::string::npos;
    for (const auto& s : stop_) cut = std::min(cut, text_.find(s, from));
    if (cut != std::string::npos) {
      text_.resize(cut);
      stopped_ = true;
    }
  }
  return !stopped_;
}

void TextAssembler::Finish() {
  if (!stopped_) text_ += detok_.Flush();
  finished_ = true;
}

std::string TextAssembler::TakeDelta() {
  size_t limit = text_.size();
  if (!stopped_ && !finished_) {
    // Hold back the shortest tail that is still the beginning of some stop string.
    const size_t start = std::max(emitted_, text_.size() >= max_stop_ ? text_.size() - max_stop_ + 1
                                                                         : size_t{0});
    for (size_t i = start; i < text_.size(); ++i) {
      bool prefix = false;
      for (const auto& s : stop_) {
        if (s.compare(0, text_.size() - i, text_, i, std::string::npos) == 0) prefix = true;
      }
      if (prefix) {
        limit = i;
        break;
      }
    }
  }
  if (limit <= emitted_) return "";
  std::string delta = text_.substr(emitted_, limit - emitted_);
  emitted_ = limit;
  return delta;
}

absl::StatusOr<std::unique_ptr<Pipeline>> Pipeline::Load(const std::string& model_dir,
                                                         const PipelineOptions& options) {
  std::unique_ptr<Pipeline> p(new Pipeline());
  p->options_ = options;
  if (options.num_threads < 0) {
    return absl::InvalidArgumentError("num_threads must be >= 0 (0 = the cores available)");
  }
  // Device and dtype first: a GPU that is not there is the clearest error, before any loading.
  VLC_ASSIGN_OR_RETURN(const ComputeTarget target,
                       ResolveComputeTarget(options.device, options.dtype));
  at::set_num_threads(options.num_threads > 0 ? options.num_threads : AvailableCores());
  VLC_ASSIGN_OR_RETURN(p->model_, LlavaModel::Load(model_dir, target));
  const auto& cfg = p->model_->config();
  VLC_ASSIGN_OR_RETURN(p->tokenizer_, Tokenizer::Load(model_dir, cfg.image_token_index));
  VLC_ASSIGN_OR_RETURN(p->preprocessor_,
                       PreprocessorConfig::FromFileOrDefault(model_dir + "/preprocessor_config.json",
                                                             cfg.vision.image_size));
  VLC_RETURN_IF_ERROR(options.cache_policy.Validate());
  kvcache::PagePoolOptions pool;
  pool.capacity_bytes = options.kv_cache_bytes;
  pool.page_tokens = options.kv_page_tokens;
  pool.kv_heads = cfg.text.num_key_value_heads;
  pool.head_dim = cfg.text.head_dim;
  pool.device = target.device;
  pool.dtype = target.device.is_cuda() ? target.dtype : at::kFloat;
  VLC_ASSIGN_OR_RETURN(p->pool_, kvcache::PagePool::Create(pool));
  p->cache_ = std::make_unique<kvcache::PagedKvCache>(cfg.text.num_hidden_layers, p->pool_.get());
  if (p->preprocessor_.crop_height != cfg.vision.image_size ||
      p->preprocessor_.crop_width != cfg.vision.image_size) {
    return absl::InvalidArgumentError(absl::StrCat(
        model_dir, "/preprocessor_config.json: crop size ", p->preprocessor_.crop_height, "x",
        p->preprocessor_.crop_width, " differs from the vision tower's image_size ",
        cfg.vision.image_size));
  }
  return p;
}

absl::StatusOr<PreparedPrompt> Pipeline::Prepare(const GenerateRequest& req) const {
  const auto t0 = Clock::now();
  const auto& lim = options_.limits;
  if (req.prompt.empty() && req.chat_template.empty()) {
    return absl::InvalidArgumentError("the prompt is empty");
  }
  const std::string& chat_template =
      req.chat_template.empty() ? options_.chat_template : req.chat_template;
  if (!req.media.images.empty() && !req.media.video.empty()) {
    return absl::InvalidArgumentError("send either images or one video, not both");
  }
  if (static_cast<int>(req.media.images.size()) > lim.max_frames) {
    return absl::InvalidArgumentError(absl::StrCat(req.media.images.size(),
                                                   " images exceed the limit of ", lim.max_frames,
                                                   " per request"));
  }
  VLC_RETURN_IF_ERROR(req.sampling.Validate());
  if (req.cache_policy) VLC_RETURN_IF_ERROR(req.cache_policy->Validate());
  if (req.sampling.max_new_tokens > options_.max_new_tokens_limit) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_new_tokens ", req.sampling.max_new_tokens, " exceeds the limit of ",
                     options_.max_new_tokens_limit));
  }
  const int frames = req.media.video_frames > 0 ? req.media.video_frames
                                                : options_.default_video_frames;
  // The prompt's length is known before any pixel is decoded: check it first.
  const int per_image = model_->config().visual_tokens_per_image();
  const int expected_images = req.media.video.empty() ? static_cast<int>(req.media.images.size())
                                                      : frames;
  PreparedPrompt out;
  VLC_ASSIGN_OR_RETURN(out.ids, tokenizer_->EncodePrompt(req.prompt, expected_images * per_image,
                                                         chat_template));
  if (static_cast<int>(out.ids.size()) > options_.max_prompt_tokens) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the prompt is ", out.ids.size(), " tokens (", expected_images * per_image,
        " of them visual), over the limit of ", options_.max_prompt_tokens,
        "; send fewer frames or a shorter prompt"));
  }
  std::vector<RgbImage> images;
  if (!req.media.video.empty()) {
    VLC_ASSIGN_OR_RETURN(images, DecodeVideo(req.media.video, frames, lim));
  } else {
    for (size_t i = 0; i < req.media.images.size(); ++i) {
      auto img = DecodeImage(req.media.images[i], lim);
      if (!img.ok()) {
        return absl::Status(img.status().code(),
                            absl::StrCat("image ", i, ": ", img.status().message()));
      }
      images.push_back(std::move(*img));
    }
  }
  if (static_cast<int>(images.size()) != expected_images) {
    // A video shorter than the frames asked for: rebuild the prompt for the frames it has.
    VLC_ASSIGN_OR_RETURN(out.ids,
                         tokenizer_->EncodePrompt(req.prompt, static_cast<int>(images.size()) *
                                                                  per_image,
                                                  chat_template));
  }
  if (!images.empty()) {
    VLC_ASSIGN_OR_RETURN(at::Tensor pixels, PreprocessImages(images, preprocessor_));
    VLC_ASSIGN_OR_RETURN(out.visual, model_->EncodeImages(pixels));
    out.visual_tokens = static_cast<int>(out.visual.size(0));
    out.media_width = images.front().width;
    out.media_height = images.front().height;
    out.media_frames = static_cast<int>(images.size());
  }
  out.media_ms = MsSince(t0);
  return out;
}

namespace {

struct Tracker {
  std::unique_ptr<TextAssembler> text;
  Clock::time_point start;
  double ttft_ms = -1;
  const TextCallback* on_text = nullptr;
  std::string policy;
};

GenerateResponse MakeResponse(const PreparedPrompt& prompt, SequenceResult& res, Tracker& tr) {
  tr.text->Finish();
  if (tr.on_text && *tr.on_text) {
    std::string rest = tr.text->TakeDelta();
    if (!rest.empty()) (*tr.on_text)(rest);
  }
  return SummarizeSequence(prompt, res, tr.text->text(), tr.policy, tr.ttft_ms,
                           MsSince(tr.start));
}

}  // namespace

GenerateResponse SummarizeSequence(const PreparedPrompt& prompt, const SequenceResult& res,
                                   const std::string& text, const std::string& policy,
                                   double ttft_ms, double total_ms) {
  GenerateResponse r;
  r.text = text;
  r.token_ids = res.tokens;
  r.finish_reason = FinishReasonName(res.finish);
  r.kv_policy = policy;
  r.prompt_tokens = res.prompt_tokens;
  r.visual_tokens = prompt.visual_tokens;
  r.generated_tokens = static_cast<int>(res.tokens.size());
  r.media_ms = prompt.media_ms;
  r.ttft_ms = ttft_ms;
  r.decode_ms_per_token = r.generated_tokens > 1 ? res.decode_ms / (r.generated_tokens - 1) : 0;
  r.total_ms = total_ms;
  r.compress_ms = res.compress_ms;
  r.kv_bytes = res.kv_bytes;
  r.kv_bytes_full = res.kv_bytes_full;
  r.layer_budgets = res.layer_budgets;
  r.media_width = prompt.media_width;
  r.media_height = prompt.media_height;
  r.media_frames = prompt.media_frames;
  return r;
}

SequenceSpec Pipeline::SpecFor(const GenerateRequest& request,
                               const PreparedPrompt& prompt) const {
  SequenceSpec spec;
  spec.prompt_ids = prompt.ids;
  spec.visual = prompt.visual;
  spec.sampling = request.sampling;
  spec.cache_policy = request.cache_policy.value_or(options_.cache_policy);
  return spec;
}

absl::StatusOr<GenerateResponse> Pipeline::Generate(const GenerateRequest& request,
                                                    const TextCallback& on_text) const {
  TextCallback cb = on_text;
  std::vector<GenerateResponse> out;
  VLC_ASSIGN_OR_RETURN(out, GenerateBatchWithCallbacks({request}, {cb}));
  return std::move(out[0]);
}

absl::StatusOr<std::vector<GenerateResponse>> Pipeline::GenerateBatch(
    const std::vector<GenerateRequest>& requests) const {
  return GenerateBatchWithCallbacks(requests, std::vector<TextCallback>(requests.size()));
}

absl::StatusOr<std::vector<GenerateResponse>> Pipeline::GenerateBatchWithCallbacks(
    const std::vector<GenerateRequest>& requests, const std::vector<TextCallback>& callbacks) const {
  const auto start = Clock::now();
  std::vector<PreparedPrompt> prompts;
  std::vector<Tracker> trackers(requests.size());
  std::vector<SequenceSpec> specs;
  for (size_t i = 0; i < requests.size(); ++i) {
    auto p = Prepare(requests[i]);
    if (!p.ok()) {
      if (requests.size() == 1) return p.status();
      return absl::Status(p.status().code(),
                          absl::StrCat("request ", i, ": ", p.status().message()));
    }
    prompts.push_back(std::move(*p));
    Tracker& tr = trackers[i];
    tr.text = std::make_unique<TextAssembler>(tokenizer_.get(), requests[i].sampling.stop);
    tr.start = start;
    tr.on_text = &callbacks[i];
    SequenceSpec spec = SpecFor(requests[i], prompts.back());
    spec.on_token = [&tr](int token) {
      if (tr.ttft_ms < 0) tr.ttft_ms = MsSince(tr.start);
      const bool more = tr.text->Push(token);
      if (*tr.on_text) {
        std::string delta = tr.text->TakeDelta();
        if (!delta.empty()) (*tr.on_text)(delta);
      }
      return more;
    };
    specs.push_back(std::move(spec));
  }
  Generator gen(model_.get(), cache_.get(), tokenizer_->eos_id());
  VLC_ASSIGN_OR_RETURN(auto results, gen.Run(std::move(specs)));
  std::vector<GenerateResponse> out;
  for (size_t i = 0; i < results.size(); ++i) {
    trackers[i].policy = requests[i].cache_policy.value_or(options_.cache_policy).name;
    // A sequence that ended on EOS at once never called on_token: its first token time is now.
    if (trackers[i].ttft_ms < 0) trackers[i].ttft_ms = MsSince(start);
    out.push_back(MakeResponse(prompts[i], results[i], trackers[i]));
  }
  return out;
}

}  // namespace vlc::engine
