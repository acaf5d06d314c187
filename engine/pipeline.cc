#include "engine/pipeline.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <sched.h>

#include <chrono>
#include <thread>

#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "engine/scheduler.h"

namespace vlc::engine {
namespace {

using Steady = std::chrono::steady_clock;

double MsSince(Steady::time_point t0) {
  return std::chrono::duration<double, std::milli>(Steady::now() - t0).count();
}

// Cores this process may run on (a container's CPU set), not the machine's total.
int AvailableCores() {
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof(set), &set) == 0) return std::max(1, CPU_COUNT(&set));
  return std::max(1u, std::thread::hardware_concurrency());
}

}  // namespace

absl::StatusOr<std::unique_ptr<Pipeline>> Pipeline::Load(const std::string& model_dir,
                                                         const PipelineOptions& options) {
  std::unique_ptr<Pipeline> p(new Pipeline());
  p->options_ = options;
  if (options.num_threads < 0) {
    return absl::InvalidArgumentError("num_threads must be >= 0 (0 = the cores available)");
  }
  if (options.warm_up_requests < 0) {
    return absl::InvalidArgumentError("warm_up_requests must be >= 0 (0 = no warm-up)");
  }
  // Device and dtype first: a GPU that is not there is the clearest error, before any loading.
  VLC_ASSIGN_OR_RETURN(const ComputeTarget target,
                       ResolveComputeTarget(options.device, options.dtype, options.quantize));
  SetCpuThreads(options.num_threads > 0 ? options.num_threads : AvailableCores());
  VLC_ASSIGN_OR_RETURN(p->model_, LlavaModel::Load(model_dir, target));
  const auto& cfg = p->model_->config();
  VLC_ASSIGN_OR_RETURN(p->tokenizer_, Tokenizer::Load(model_dir, cfg.image_token_index));
  VLC_ASSIGN_OR_RETURN(p->preprocessor_,
                       PreprocessorConfig::FromFileOrDefault(model_dir + "/preprocessor_config.json",
                                                             cfg.vision.image_size));
  VLC_RETURN_IF_ERROR(options.cache_policy.Validate());
  VLC_ASSIGN_OR_RETURN(p->chat_template_,
                       ChatTemplate::Parse(options.chat_template, options.chat_turn_prefix));
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
  for (int i = 0; i < options.warm_up_requests; ++i) VLC_RETURN_IF_ERROR(p->WarmUp());
  return p;
}

absl::Status Pipeline::WarmUp() {
  const auto t0 = Steady::now();
  // The stages a request with a picture takes, called directly: the request limits are the
  // callers' (a server for text alone may allow fewer prompt tokens than a picture takes) and the
  // counters are theirs. Twice the crop size, so that the resize runs too; a ramp, so that the
  // PNG is not flat.
  RgbImage picture;
  picture.width = 2 * preprocessor_.crop_width;
  picture.height = 2 * preprocessor_.crop_height;
  picture.data.resize(static_cast<size_t>(picture.width) * picture.height * 3);
  for (size_t i = 0; i < picture.data.size(); ++i) picture.data[i] = static_cast<uint8_t>(i / 3);
  auto stages = [&]() -> absl::Status {
    VLC_ASSIGN_OR_RETURN(const std::string png, EncodePng(picture));
    VLC_ASSIGN_OR_RETURN(RgbImage decoded, DecodeImage(png));
    VLC_ASSIGN_OR_RETURN(const at::Tensor pixels, PreprocessImages({decoded}, preprocessor_));
    SequenceSpec spec;
    VLC_ASSIGN_OR_RETURN(spec.visual, model_->EncodeImages(pixels));
    VLC_ASSIGN_OR_RETURN(
        spec.prompt_ids,
        tokenizer_->EncodePrompt("What is in the picture?", static_cast<int>(spec.visual.size(0)),
                                 chat_template_.text()));
    spec.sampling.max_new_tokens = 2;
    spec.sampling.ignore_eos = true;  // a decode step runs whatever the first token is
    spec.cache_policy = options_.cache_policy;
    // On the pool the requests use where it has room for the prompt (it is empty now: no
    // scheduler runs yet), else on a cache of its own.
    const int64_t tokens = static_cast<int64_t>(spec.prompt_ids.size()) + 2;
    const int64_t pages = model_->config().text.num_hidden_layers *
                          ((tokens + options_.kv_page_tokens - 1) / options_.kv_page_tokens);
    std::unique_ptr<KvCache> own;
    KvCache* cache = cache_.get();
    if (pages > pool_->free_pages()) cache = (own = model_->NewContiguousCache()).get();
    Generator generator(model_.get(), cache, tokenizer_->eos_id(), options_.prefill_chunk_tokens);
    VLC_ASSIGN_OR_RETURN(auto done, generator.Run({std::move(spec)}));
    if (!done.front().error.ok()) return done.front().error;
    return absl::OkStatus();
  };
  if (absl::Status s = stages(); !s.ok()) {
    return absl::Status(s.code(),
                        absl::StrCat("the warm-up at load (a ", picture.width, "x", picture.height,
                                     " picture and a short question) failed: ", s.message(),
                                     "; warm_up_requests = 0 (--warm-up-requests 0) skips it"));
  }
  ++warm_ups_;
  warm_up_ms_ += MsSince(t0);
  return absl::OkStatus();
}

absl::StatusOr<PreparedPrompt> Pipeline::Prepare(const GenerateRequest& req) const {
  const auto t0 = Steady::now();
  const auto& lim = options_.limits;
  VLC_RETURN_IF_ERROR(ValidateRequest(req, request_limits()));
  const std::string chat_template =
      req.session_opening ? chat_template_.SessionOpening() : chat_template_.text();
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
    ++vision_encodes_;
    out.visual_tokens = static_cast<int>(out.visual.size(0));
    out.media_width = images.front().width;
    out.media_height = images.front().height;
    out.media_frames = static_cast<int>(images.size());
  }
  out.media_ms = MsSince(t0);
  return out;
}

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
  const int n = static_cast<int>(requests.size());
  if (n == 0) return std::vector<GenerateResponse>{};
  SchedulerOptions so;
  so.max_queue = n;
  so.max_running = n;
  so.prefill_chunk_tokens = options_.prefill_chunk_tokens;
  Scheduler scheduler(this, so);
  std::vector<std::shared_ptr<Job>> jobs;
  for (const auto& r : requests) {
    auto job = std::make_shared<Job>();
    job->request = r;
    VLC_RETURN_IF_ERROR(scheduler.Submit(job));
    jobs.push_back(std::move(job));
  }
  scheduler.Start();
  std::vector<GenerateResponse> out(n);
  absl::Status first_error;
  for (int i = 0; i < n; ++i) {
    StreamEvent e;
    while (true) {
      if (!jobs[i]->channel->Pop(&e, std::chrono::milliseconds(100))) continue;
      if (!e.final && e.status.ok() && callbacks[i]) callbacks[i](e.text);
      if (e.final) break;
    }
    if (!e.status.ok()) {
      first_error = n == 1 ? e.status
                           : absl::Status(e.status.code(),
                                          absl::StrCat("request ", i, ": ", e.status.message()));
      for (auto& j : jobs) j->cancelled = true;  // the batch fails as one
      break;
    }
    if (!e.text.empty() && callbacks[i]) callbacks[i](e.text);
    out[i] = std::move(e.usage);
  }
  scheduler.Stop();
  if (!first_error.ok()) return first_error;
  return out;
}

}  // namespace vlc::engine
