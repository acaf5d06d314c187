// What a caller asks of the engine and what it gets back, whatever the entry point (the CLI, the
// gRPC API, later protocols), and the one function that checks a request before any work is done
// for it. Transports convert their messages to a GenerateRequest (filling defaults), call
// ValidateRequest, and map its Status to their error codes.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>

#include "absl/status/status.h"
#include "engine/media.h"
#include "engine/sampling.h"
#include "kvcache/policy.h"

namespace vlc::engine {

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
  // A session's opening: the chat template's head with the media and `prompt` as an optional
  // prefix text (engine/chat_template.h); nothing is generated.
  bool session_opening = false;
};

// The limits a request is checked against (PipelineOptions::request_limits()).
struct RequestLimits {
  MediaLimits media;
  int max_new_tokens = 4096;
};

// INVALID_ARGUMENT, naming the field and the limit, for anything wrong with the request's shape:
// an empty prompt (a session's opening may have none), a prompt holding <image>, images and a
// video together, too many images, media over the byte limit, a bad frame count, bad sampling or
// cache parameters, max_new_tokens over the limit. Decoding and the prompt's token count are
// checked later, when the media are prepared.
absl::Status ValidateRequest(const GenerateRequest& request, const RequestLimits& limits);

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

}  // namespace vlc::engine
