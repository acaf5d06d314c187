// vlcache-generate: one request from the command line, e.g.
//   vlcache-generate --model models/demo --image cat.png --prompt "What is in the picture?"
// Streams the text to stdout, or prints one JSON object with --json.
#include <sys/resource.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <iostream>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "engine/pipeline.h"
#include "common/process_env.h"

namespace {

// The process's peak resident memory so far (Linux reports ru_maxrss in KiB).
int64_t MaxRssBytes() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return static_cast<int64_t>(usage.ru_maxrss) * 1024;
}

}  // namespace

// Serving and measuring: OpenMP workers sleep between parallel regions (common/process_env.h).
VLC_PREFER_SLEEPING_OPENMP_WORKERS();

int main(int argc, char** argv) {
  using namespace vlc::engine;
  CLI::App app{"vlcache-generate: answer a prompt about images or a video with a LLaVA model"};
  std::string model_dir, video, prompt;
  std::vector<std::string> images;
  int frames = 8;
  bool json = false;
  SamplingParams sp;
  sp.max_new_tokens = 64;
  PipelineOptions opts;
  app.add_option("--model", model_dir, "Model directory in Hugging Face LLaVA layout")->required();
  auto* img = app.add_option("--image", images, "Image file (PNG, JPEG, WebP, BMP); repeatable");
  auto* vid = app.add_option("--video", video, "Video file (MP4, AVI, WebM)");
  img->excludes(vid);
  app.add_option("--frames", frames, "Frames sampled uniformly from the video")
      ->check(CLI::Range(1, 1024))
      ->capture_default_str();
  app.add_option("--prompt", prompt, "The question or instruction")->required();
  app.add_option("--max-new-tokens", sp.max_new_tokens, "Most tokens to generate")
      ->capture_default_str();
  app.add_option("--temperature", sp.temperature, "Sampling temperature; 0 = greedy")
      ->capture_default_str();
  app.add_option("--top-p", sp.top_p, "Nucleus sampling mass in (0, 1]")->capture_default_str();
  app.add_option("--top-k", sp.top_k, "Sample among the k most likely tokens; 0 = all")
      ->capture_default_str();
  app.add_option("--seed", sp.seed, "Random seed for sampling")->capture_default_str();
  app.add_option("--stop", sp.stop, "Stop before this text; repeatable");
  app.add_option("--threads", opts.num_threads,
                 "CPU threads (LibTorch and OpenBLAS); 0 = cores available")
      ->capture_default_str();
  app.add_option("--device", opts.device,
                 "Where the model and KV cache run: cpu, cuda, or auto (cuda when a GPU is usable)")
      ->capture_default_str();
  app.add_option("--dtype", opts.dtype,
                 "Model dtype: auto (float32 on cpu, bfloat16 on cuda), float32, bfloat16, "
                 "float16 (on cpu: float16 weights, float32 activations)")
      ->capture_default_str();
  app.add_option("--quantize", opts.quantize,
                 "Decoder weights: none, or int8 (weight-only, per output channel, quantized at "
                 "load; cpu only)")
      ->capture_default_str();
  app.add_option("--max-frames", opts.limits.max_frames, "Most frames or images per request")
      ->capture_default_str();
  app.add_option("--max-prompt-tokens", opts.max_prompt_tokens,
                 "Most prompt tokens (text and visual)")
      ->capture_default_str();
  app.add_option("--chat-template", opts.chat_template,
                 "Prompt template with {prompt} and one <image>")
      ->capture_default_str();
  std::string policy_names;
  for (const auto& n : vlc::kvcache::PolicyNames()) policy_names += (policy_names.empty() ? "" : ", ") + n;
  app.add_option("--kv-policy", opts.cache_policy.name, "KV cache policy: " + policy_names)
      ->capture_default_str();
  app.add_option("--kv-budget", opts.cache_policy.budget,
                 "Fraction of the prompt's KV cache kept, in (0, 1]")
      ->capture_default_str();
  app.add_option("--kv-cache-bytes", opts.kv_cache_bytes, "Size of the KV page pool in bytes")
      ->capture_default_str();
  app.add_option("--kv-page-tokens", opts.kv_page_tokens, "Tokens per KV page")
      ->capture_default_str();
  app.add_option("--prefill-chunk-tokens", opts.prefill_chunk_tokens,
                 "Prompt tokens prefilled per engine step (0: the whole prompt at once)")
      ->capture_default_str();
  app.add_option("--warm-up-requests", opts.warm_up_requests,
                 "Synthetic requests run at load, so the real one pays no first-use costs "
                 "(counted in load_ms); 0 = none")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  app.add_flag("--json", json, "Print one JSON object with the text, token counts and timings");
  CLI11_PARSE(app, argc, argv);

  // Loading's cost, as a user of a large model sees it: wall time and the process's peak
  // resident memory once the weights are in place (and the warm-up has run), before any request.
  const auto load_start = std::chrono::steady_clock::now();
  auto pipeline = Pipeline::Load(model_dir, opts);
  const double load_ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - load_start)
          .count();
  const int64_t max_rss_after_load = MaxRssBytes();
  if (!pipeline.ok()) {
    std::cerr << "error: " << pipeline.status().message() << "\n";
    return 1;
  }
  GenerateRequest req;
  req.prompt = prompt;
  req.sampling = sp;
  for (const auto& f : images) {
    auto bytes = ReadFileBytes(f, opts.limits.max_bytes);
    if (!bytes.ok()) {
      std::cerr << "error: " << bytes.status().message() << "\n";
      return 1;
    }
    req.media.images.push_back(std::move(*bytes));
  }
  if (!video.empty()) {
    auto bytes = ReadFileBytes(video, opts.limits.max_bytes);
    if (!bytes.ok()) {
      std::cerr << "error: " << bytes.status().message() << "\n";
      return 1;
    }
    req.media.video = std::move(*bytes);
    req.media.video_frames = frames;
  }
  TextCallback stream;
  if (!json) {
    stream = [](const std::string& delta) {
      std::fwrite(delta.data(), 1, delta.size(), stdout);
      std::fflush(stdout);
    };
  }
  auto res = (*pipeline)->Generate(req, stream);
  if (!res.ok()) {
    if (!json) std::cout << std::endl;
    std::cerr << "error: " << res.status().message() << "\n";
    return 1;
  }
  if (json) {
    nlohmann::json j = {
        {"text", res->text},
        {"finish_reason", res->finish_reason},
        {"prompt_tokens", res->prompt_tokens},
        {"visual_tokens", res->visual_tokens},
        {"generated_tokens", res->generated_tokens},
        {"token_ids", res->token_ids},
        {"media_ms", res->media_ms},
        {"ttft_ms", res->ttft_ms},
        {"decode_ms_per_token", res->decode_ms_per_token},
        {"total_ms", res->total_ms},
        {"load_ms", load_ms},
        {"max_rss_after_load_bytes", max_rss_after_load},
        {"max_rss_bytes", MaxRssBytes()},
        {"kv_policy", res->kv_policy},
        {"kv_budget", opts.cache_policy.budget},
        {"kv_bytes_kept", res->kv_bytes},
        {"kv_bytes_full", res->kv_bytes_full},
        {"layer_budgets", res->layer_budgets},
        {"compress_ms", res->compress_ms},
        {"device", ComputeTargetName((*pipeline)->target())},
    };
    std::cout << j.dump() << std::endl;
  } else {
    std::cout << std::endl;
  }
  return 0;
}
