// The model side of a request: loads a checkpoint (model, tokenizer, preprocessor, the paged KV
// cache it serves from) and turns a request's media and prompt into a prompt the generator can
// take (decode, preprocess, vision tower, chat template). Prepare is thread-safe and runs on the
// scheduler's media workers; the cache is the scheduler's alone while one runs.
//
// Generate and GenerateBatch answer in-process callers (the CLI, the evaluation tool) through the
// same scheduler the server runs (engine/scheduler.h): there is one generation path.
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/chat_template.h"
#include "engine/config.h"
#include "engine/generator.h"
#include "engine/media.h"
#include "engine/model.h"
#include "engine/request.h"
#include "engine/sampling.h"
#include "engine/tokenizer.h"
#include "kvcache/page_pool.h"
#include "kvcache/paged_cache.h"
#include "kvcache/policy.h"

namespace vlc::engine {

struct PipelineOptions {
  int num_threads = 0;  // LibTorch's and OpenBLAS's threads; 0 = the cores available
  // Where the model and the KV cache live and the model's element type (engine/device.h):
  // device cpu | cuda | auto (cuda when a GPU is usable), dtype auto (float32 on the CPU, bfloat16
  // on a GPU) | float32 | bfloat16 | float16 (GPU only). On a GPU the page pool holds the model's
  // dtype; on the CPU it holds float32 (the CPU kernels' type) whatever the model computes in.
  std::string device = "cpu";
  std::string dtype = "auto";
  // none | int8: weight-only int8 for the decoder's matrices and the LM head, quantized at load
  // (CPU only; engine/device.h).
  std::string quantize = "none";
  MediaLimits limits;
  int max_prompt_tokens = 8192;  // text and visual tokens together
  int max_new_tokens_limit = 4096;
  int default_video_frames = 8;
  // engine/chat_template.h; checked at Load. An empty turn prefix: the template's text before
  // <image> starts every later session turn.
  std::string chat_template = kDefaultChatTemplate;
  std::string chat_turn_prefix;
  int64_t kv_cache_bytes = int64_t{1} << 30;  // the page pool, allocated once at load
  int kv_page_tokens = 16;
  kvcache::PolicyConfig cache_policy;  // requests without their own policy use this one
  // In-process Generate: prompt tokens prefilled per scheduler step (0: whole prompts).
  int64_t prefill_chunk_tokens = 512;
  // Warm-up runs at Load, before the pipeline is handed out: a made-up picture and a short
  // question through every stage a request takes (PNG decoding, the vision tower, prefill with
  // the default cache policy, a decode step). The first use of the image codecs, of LibTorch's
  // kernels and of the weights' pages costs more than a request (on the demo model the first
  // request's time to first token was about twice a warm one's), and a server should not charge
  // it to its first user. 0 skips it (a faster start).
  int warm_up_requests = 1;

  RequestLimits request_limits() const { return {limits, max_new_tokens_limit}; }
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
  const ChatTemplate& chat_template() const { return chat_template_; }
  RequestLimits request_limits() const { return options_.request_limits(); }

  // Checks the request (ValidateRequest), builds the prompt with the chat template, decodes and
  // preprocesses the media and runs the vision tower. Thread-safe.
  absl::StatusOr<PreparedPrompt> Prepare(const GenerateRequest& request) const;
  // The warm-up runs done at Load (PipelineOptions::warm_up_requests) and their time.
  int warm_ups() const { return warm_ups_; }
  double warm_up_ms() const { return warm_up_ms_; }
  // Requests whose media went through the vision tower so far (Prepare calls that encoded).
  int64_t vision_encodes() const { return vision_encodes_.load(); }
  // The generator's view of a prepared request (no callback set).
  SequenceSpec SpecFor(const GenerateRequest& request, const PreparedPrompt& prompt) const;

  // The paged cache every request of this pipeline runs on; the scheduler that serves this
  // pipeline drives it from its engine thread, one scheduler at a time.
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
  absl::Status WarmUp();
  absl::StatusOr<std::vector<GenerateResponse>> GenerateBatchWithCallbacks(
      const std::vector<GenerateRequest>& requests,
      const std::vector<TextCallback>& callbacks) const;
  PipelineOptions options_;
  ChatTemplate chat_template_;
  PreprocessorConfig preprocessor_;
  std::unique_ptr<LlavaModel> model_;
  std::unique_ptr<Tokenizer> tokenizer_;
  std::unique_ptr<kvcache::PagePool> pool_;
  std::unique_ptr<kvcache::PagedKvCache> cache_;
  mutable std::atomic<int64_t> vision_encodes_{0};
  int warm_ups_ = 0;
  double warm_up_ms_ = 0;
};

// The response for a finished sequence whose text is final.
GenerateResponse SummarizeSequence(const PreparedPrompt& prompt, const SequenceResult& res,
                                   const std::string& text, const std::string& policy,
                                   double ttft_ms, double total_ms);

}  // namespace vlc::engine
