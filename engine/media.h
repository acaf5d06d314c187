// Images and videos in, the vision tower's pixel values out. Decoding is OpenCV's (imdecode for
// PNG/JPEG/WebP/BMP; VideoCapture over a private temporary file for MP4/AVI/WebM, since OpenCV
// cannot read a video from memory); preprocessing follows transformers' CLIPImageProcessor:
// RGB, shortest-edge resize with PIL's antialiasing bicubic filter, centre crop, rescale,
// normalise. Undecodable or oversized input is an INVALID_ARGUMENT, never a crash.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>

#include "absl/status/statusor.h"
#include "engine/config.h"

namespace vlc::engine {

// An 8-bit RGB image, rows top to bottom, pixels interleaved (HWC).
struct RgbImage {
  int width = 0;
  int height = 0;
  std::vector<uint8_t> data;  // height * width * 3
};

struct MediaLimits {
  int64_t max_bytes = 64ll << 20;        // encoded size of one image or video
  int64_t max_pixels = 36'000'000;       // width * height of one decoded image or frame
  int max_frames = 64;                   // frames sampled from one video
};

// Decodes an encoded image (PNG, JPEG, WebP, BMP, ...). Alpha is dropped, grey becomes RGB.
absl::StatusOr<RgbImage> DecodeImage(const std::string& bytes, const MediaLimits& limits = {});

// The image as a PNG file (lossless: DecodeImage gives the same pixels back).
absl::StatusOr<std::string> EncodePng(const RgbImage& image);

// Decodes a video and samples `num_frames` frames uniformly over its length (indices
// round-down of linspace(0, n-1, num_frames)); fewer frames than asked when the video is shorter.
absl::StatusOr<std::vector<RgbImage>> DecodeVideo(const std::string& bytes, int num_frames,
                                                  const MediaLimits& limits = {});

// Resizes with PIL's BICUBIC filter as Image.resize applies it (antialiasing when shrinking:
// the kernel support widens by the scale factor; horizontal pass, then vertical; 8-bit rounding
// after each pass).
RgbImage ResizeBicubicPil(const RgbImage& src, int out_width, int out_height);

// CLIPImageProcessor: returns float32 pixel values [N, 3, crop_h, crop_w].
absl::StatusOr<at::Tensor> PreprocessImages(const std::vector<RgbImage>& images,
                                            const PreprocessorConfig& cfg);

// Reads a whole file (for the CLI and tests); NOT_FOUND / INVALID_ARGUMENT with the path.
absl::StatusOr<std::string> ReadFileBytes(const std::string& path, int64_t max_bytes);

}  // namespace vlc::engine
