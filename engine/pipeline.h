// A request end to end: media bytes and a prompt in, text out. Decodes and preprocesses the media,
// runs the vision tower, builds the prompt with the chat template, generates over the paged KV
// cache (compressed by the request's policy), detokenizes and applies stop strings. The CLI and
// (later) the server's engine thread call this. Not thread-safe: one caller owns a Pipeline.
#pragma once

#include <functional>
#include <optional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/config.h"
#include "engine/generator.h"
#include "engine/media.h"
#include "engine/model.h"
#include "engine/sampling.h"
#include "engine/tokenizer.h"
#include "kvcache/page_pool.h"
#include "kvcache/paged_cache.h"
#include "kvcache/policy.h"

namespace vlc::engine {

struct PipelineOptions {
  int num_threads = 0;  // LibTorch intra-op threads; 0 = the cores available to this process
  // Where the model and the KV cache live and the model's element type (engine/device.h):
  // device cpu | cuda | auto (cuda when a GPU is usable), dtype auto (float32 on the CPU, bfloat16
  // on a GPU) | float32 | bfloat16 | float16 (GPU only). On a GPU the page pool holds the model's
  // dtype; on the CPU it holds float32 (the CPU kernels' type) whatever the model computes in.
  std::string device = "cpu";
  std::string dtype = "auto";
  MediaLimits limits;
  int max_prompt_tokens = 8192;  // text and visual tokens together
  int max_new_tokens_limit = 4096;
  int default_video_frames = 8;
  std::string chat_template = kDefaultChatTemplate;
  int64_t kv_cache_bytes = int64_t{1} << 30;  // the page pool, allocated once at load
  int kv_page_tokens = 16;
  kvcache::PolicyConfig cache_policy;  // requests without their own policy use this one
};

struct MediaInput {
  std::vector<std::string> images;  // encoded image files, in prompt order
  std::string video;                // an encoded video file (exclusive with images)
  int video_frames = 0;             // 0: PipelineOptions::default_video_frames
};

struct GenerateRequest {
  MediaInput media;
  std::string prompt;
  SamplingParams sampling;
  std::optional<kvcache::PolicyConfig> cache_policy;  // unset: PipelineOptions::cache_policy
  // Overrides PipelineOptions::chat_template; an empty prompt is then allowed (a session's
  // media with no prefix text).
  std::string chat_template;
};

struct GenerateResponse {
  std::string text;
  std::vector<int> token_ids;
  std::string finish_reason;  // "length", "eos", "stop"
  int prompt_tokens = 0;      // text and visual
  int visual_tokens = 0;
  int generated_tokens = 0;
  double media_ms = 0;        // decode, preprocess, vision tower
  double ttft_ms = 0;         // request start to first token
  double decode_ms_per_token = 0;
  double total_ms = 0;
  double compress_ms = 0;
  std::string kv_policy;
  int64_t kv_bytes = 0;       // the pages the sequence held at the end
  int64_t kv_bytes_full = 0;  // what the uncompressed cache would hold for the same tokens
  std::vector<int64_t> layer_budgets;  // prompt tokens each layer kept
  // The media as decoded, before preprocessing (the server's data-quality telemetry watches
  // them): the first image's or frame's size, and the pictures that went through the vision
  // tower (images, or frames sampled from the video). 0 for a text-only request or a session
  // turn, whose media belong to the session.
  int media_width = 0;
  int media_height = 0;
  int media_frames = 0;
};

// A prompt ready for the generator: ids with image tokens, and the visual rows they stand for.
struct PreparedPrompt {
  std::vector<int> ids;
  at::Tensor visual;
  int visual_tokens = 0;
  double media_ms = 0;
  int media_width = 0;  // the first image or frame as decoded (GenerateResponse::media_width)
  int media_height = 0;
  int media_frames = 0;  // images, or frames sampled from the video
};

using TextCallback = std::function<void(const std::string& delta)>;

class Pipeline {
 public:
  static absl::StatusOr<std::unique_ptr<Pipeline>> Load(const std::string& model_dir,
                                                        const PipelineOptions& options = {});

  const LlavaModel& model() const { return *model_; }
  // The device and dtype the options resolved to.
  const ComputeTarget& target() const { return model_->target(); }
  const Tokenizer& tokenizer() const { return *tokenizer_; }
  const PipelineOptions& options() const { return options_; }

  // Checks the request's shape (media combination, limits, sampling) and builds the prompt.
  absl::StatusOr<PreparedPrompt> Prepare(const GenerateRequest& request) const;
  // The generator's view of a prepared request (no callback set).
  SequenceSpec SpecFor(const GenerateRequest& request, const PreparedPrompt& prompt) const;

  // The paged cache every request of this pipeline runs on; a caller that drives its own
  // Generator (the server's engine thread) uses it, one thread at a time.
  kvcache::PagedKvCache* cache() const { return cache_.get(); }
  const kvcache::PagePool& pool() const { return *pool_; }

  // One request; `on_text` receives text deltas as they become final (never past a stop string).
  absl::StatusOr<GenerateResponse> Generate(const GenerateRequest& request,
                                            const TextCallback& on_text = nullptr) const;

  // Several requests decoded together in one batch; results in request order.
  absl::StatusOr<std::vector<GenerateResponse>> GenerateBatch(
      const std::vector<GenerateRequest>& requests) const;

 private:
  Pipeline() = default;
  absl::StatusOr<std::vector<GenerateResponse>> GenerateBatchWithCallbacks(
      const std::vector<GenerateRequest>& requests,
      const std::vector<TextCallback>& callbacks) const;
  PipelineOptions options_;
  PreprocessorConfig preprocessor_;
  std::unique_ptr<LlavaModel> model_;
  std::unique_ptr<Tokenizer> tokenizer_;
  std::unique_ptr<kvcache::PagePool> pool_;
  std::unique_ptr<kvcache::PagedKvCache> cache_;
};

// The response for a finished sequence whose text is final.
GenerateResponse SummarizeSequence(const PreparedPrompt& prompt, const SequenceResult& res,
                                   const std::string& text, const std::string& policy,
                                   double ttft_ms, double total_ms);

// Turns generated ids into text, ending it before the first stop string and holding back any tail
// that could still become one, so streamed text never has to be taken back.
class TextAssembler {
 public:
  TextAssembler(const Tokenizer* tok, std::vector<std::string> stop);
  // Adds a token; returns false once a stop string has appeared.
  bool Push(int id);
  // Text that became final since the last call.
  std::string TakeDelta();
  // Ends the text: everything not cut by a stop string becomes final.
  void Finish();
  const std::string& text() const { return text_; }

 private:
  StreamingDetokenizer detok_;
  std::vector<std::string> stop_;
  size_t max_stop_ = 0;
  std::string text_;     // all text so far (cut at a stop string once one appears)
  size_t emitted_ = 0;   // bytes of text_ handed out by TakeDelta
  bool stopped_ = false;
  bool finished_ = false;
};

}  // namespace vlc::engine
