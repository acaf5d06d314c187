// A second, independent drawing of the synthetic VQA task's scenes (tools/vqa/vqa.h), to measure
// how much the demo model depends on the one renderer it was trained on. The scene description
// and the answers are the task's own; the pixels are not: this file rasterises every shape, box
// outline and digit itself (coverage by point sampling, no OpenCV drawing call), on a grid of
// fractional cell sizes, at any image size from 96 to 512 pixels, with or without antialiasing,
// with shape proportions of its own (ellipses, rounded squares, squatter triangles, narrower
// diamonds, wider crosses), objects a little off their cell's centre, colours within a few
// levels of the named colour's, and digits from a stroke font of its own. Deterministic: a seed
// fixes every jitter.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "tools/vqa/vqa.h"

namespace vlc::vqa {

inline constexpr int kSecondMinSize = 96;
inline constexpr int kSecondMaxSize = 512;

struct SecondStyle {
  int image_size = 96;    // square, kSecondMinSize to kSecondMaxSize pixels
  bool antialias = true;  // 4 x 4 samples per pixel; false: one, at the pixel's centre
  uint64_t seed = 0;      // fixes the per-object jitter and the background shade
};

// The style item `index` of `split` is drawn with by default: a size spread over 96 to 512
// pixels and antialiasing for about half the items, both fixed per item (own PRNG, not the
// generator's stream, so the scene is the generator's whatever the style).
SecondStyle SecondStyleFor(Split split, int64_t index);

// INVALID_ARGUMENT unless the size lies in [kSecondMinSize, kSecondMaxSize] and the grid in
// [kMinGrid, kMaxGrid].
absl::Status ValidateSecondStyle(const SecondStyle& style, int grid);

// Frame `frame` of a `grid` x `grid` scene: image_size * image_size * 3 bytes, RGB, rows top to
// bottom. `frame_index` varies the jitter between the frames of a clip. Requires a valid style.
std::vector<uint8_t> RenderFrameSecond(const Frame& frame, int grid, const SecondStyle& style,
                                       int frame_index = 0);

// The same pixels as a PNG file.
std::string EncodePngSecond(const Frame& frame, int grid, const SecondStyle& style,
                            int frame_index = 0);

}  // namespace vlc::vqa
