// An encoded picture through the server's checks: decoding under the media limits, then CLIP
// preprocessing (resize, crop, normalize) as a request's images go.
#include "engine/media.h"
#include "fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  vlc::engine::MediaLimits limits;
  limits.max_bytes = 1 << 20;
  limits.max_pixels = 1 << 20;
  auto image = vlc::engine::DecodeImage(vlc::fuzz::Bytes(data, size), limits);
  if (!image.ok()) return 0;
  vlc::engine::PreprocessorConfig cfg;
  cfg.crop_height = cfg.crop_width = 32;
  cfg.shortest_edge = 32;
  (void)vlc::engine::PreprocessImages({*image}, cfg);
  return 0;
}
