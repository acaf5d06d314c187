// An encoded video through the server's checks: decoding with frame sampling under the media
// limits (small ones, so that each run stays short).
#include "engine/media.h"
#include "fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  vlc::engine::MediaLimits limits;
  limits.max_bytes = 1 << 20;
  limits.max_pixels = 1 << 16;
  limits.max_frames = 8;
  (void)vlc::engine::DecodeVideo(vlc::fuzz::Bytes(data, size), 4, limits);
  return 0;
}
