#include "engine/request.h"

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "engine/chat_template.h"

namespace vlc::engine {

absl::Status ValidateRequest(const GenerateRequest& req, const RequestLimits& limits) {
  const auto bad = [](auto&&... parts) {
    return absl::InvalidArgumentError(absl::StrCat(parts...));
  };
  if (req.prompt.empty() && !req.session_opening) return bad("the prompt is empty");
  if (absl::StrContains(req.prompt, kImagePlaceholder)) {
    return bad("the prompt must not contain ", kImagePlaceholder,
               ": the media go in the request's media, the template places them");
  }
  const auto& media = req.media;
  if (!media.images.empty() && !media.video.empty()) {
    return bad("media: send either images or one video, not both");
  }
  if (static_cast<int64_t>(media.images.size()) > limits.media.max_frames) {
    return bad("media: ", media.images.size(), " images exceed the limit of ",
               limits.media.max_frames, " per request");
  }
  for (size_t i = 0; i < media.images.size(); ++i) {
    if (static_cast<int64_t>(media.images[i].size()) > limits.media.max_bytes) {
      return bad("media.images[", i, "] is ", media.images[i].size(),
                 " bytes, more than the limit of ", limits.media.max_bytes);
    }
  }
  if (static_cast<int64_t>(media.video.size()) > limits.media.max_bytes) {
    return bad("media.video is ", media.video.size(), " bytes, more than the limit of ",
               limits.media.max_bytes);
  }
  if (media.video_frames < 0 || media.video_frames > limits.media.max_frames) {
    return bad("media.video_frames must be in [0, ", limits.media.max_frames, "], got ",
               media.video_frames);
  }
  if (!req.session_opening) {
    if (absl::Status st = req.sampling.Validate(); !st.ok()) {
      return bad("sampling: ", st.message());
    }
    if (req.sampling.max_new_tokens > limits.max_new_tokens) {
      return bad("sampling.max_new_tokens ", req.sampling.max_new_tokens,
                 " exceeds the limit of ", limits.max_new_tokens);
    }
  }
  if (req.cache_policy) {
    if (absl::Status st = req.cache_policy->Validate(); !st.ok()) {
      return bad("cache: ", st.message());
    }
  }
  return absl::OkStatus();
}

}  // namespace vlc::engine
