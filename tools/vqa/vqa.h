// A deterministic synthetic visual question-answering set: grids of coloured shapes and numbered
// boxes, single images or clips of independent frames, with one templated question each whose
// answer is decided by a small part of the picture (one cell, one shape, one box, or the shapes of
// one colour in one frame). It trains the small demo VLM and measures what KV-cache compression
// costs: a cache that drops the visual tokens the question points at gets the answer wrong.
//
// Every item is a pure function of (split, index, frames, options): the generator draws from its
// own PRNG and integer helpers, never from <random>'s distributions, whose results differ between
// standard libraries. The scene description, not the pixels, is the source of truth: Answer()
// computes the answer from it alone, the generator calls the same function, and the JSON form
// round-trips so that an evaluator can re-derive every answer.
#pragma once

#include <array>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace vlc::vqa {

enum class Shape { kCircle, kSquare, kTriangle, kDiamond, kCross };
enum class Color { kRed, kGreen, kBlue, kYellow, kPurple, kOrange };
enum class Split { kTrain, kValidation, kTest };
enum class QuestionKind { kColorOfShape, kShapeAt, kDigitInBox, kCount };

inline constexpr int kNumShapes = 5;
inline constexpr int kNumColors = 6;
inline constexpr int kNumKinds = 4;

// Limits of the size spec (ValidateSpec). Grids stop at 8 so that rows and columns are single
// digits; clips stop at 16 frames.
inline constexpr int kMinGrid = 3;
inline constexpr int kMaxGrid = 8;
inline constexpr int kMinCellPixels = 12;  // below this a digit is no longer legible
inline constexpr int kMaxFrames = 16;

// One occupied cell. A shape has `shape` and no digit (-1); a box has a digit 0-9 and its `shape`
// is unused (left at kCircle so that equal scenes compare equal).
struct Object {
  bool is_box = false;
  Shape shape = Shape::kCircle;
  Color color = Color::kRed;
  int digit = -1;
  int row = 0;  // 0-based, top to bottom
  int col = 0;  // 0-based, left to right
};

struct Frame {
  std::vector<Object> objects;  // distinct cells, in the order they were drawn
};

// A single image is a clip of one frame.
struct Clip {
  std::vector<Frame> frames;
};

// The fields a kind does not use keep their defaults: kColorOfShape uses `shape`; kShapeAt uses
// `row` and `col` (0-based); kDigitInBox and kCount use `color`.
struct Question {
  QuestionKind kind = QuestionKind::kColorOfShape;
  int frame = 0;  // 0-based; the text numbers frames from 1
  Shape shape = Shape::kCircle;
  Color color = Color::kRed;
  int row = -1;
  int col = -1;
  std::string text;
};

struct Options {
  int image_size = 96;  // square images of image_size x image_size pixels
  int grid = 4;         // grid x grid cells
  // Clip frames of 3 to 6 objects (at least 2 shapes and 1 box, as single images), instead of
  // 2 to 4: denser scenes than the demo model was trained on, for robustness checks.
  bool dense_frames = false;
};

struct Item {
  Split split = Split::kTrain;
  int64_t index = 0;
  Clip clip;
  Question question;
  std::string answer;
  Options options;  // what the item was made with: enough to render it again
};

bool operator==(const Object& a, const Object& b);
bool operator==(const Frame& a, const Frame& b);
bool operator==(const Clip& a, const Clip& b);
bool operator==(const Question& a, const Question& b);
bool operator==(const Options& a, const Options& b);
bool operator==(const Item& a, const Item& b);
inline bool operator!=(const Item& a, const Item& b) { return !(a == b); }

// INVALID_ARGUMENT unless 1 <= frames <= kMaxFrames, kMinGrid <= grid <= kMaxGrid and each cell is
// at least kMinCellPixels wide. MakeItem requires a valid spec.
absl::Status ValidateSpec(int frames, const Options& opts);

// The item `index` of `split`. frames == 1: a single image of 3 to 6 objects (at least 2 shapes
// and 1 box) and a question without a frame; frames >= 2: a clip whose frames hold 2 to 4 objects
// each (at least 1 shape and 1 box), and a question "in frame f, ...". Aborts on a spec that
// ValidateSpec refuses (a programming error: check user input with ValidateSpec first).
Item MakeItem(Split split, int64_t index, int frames, const Options& opts = {});

// The question text the item is asked with (the chat template is applied elsewhere).
std::string Prompt(const Item& item);

// The text of `q` for a clip of `num_frames` frames: the templates, lower case, rows, columns and
// frames numbered from 1, with the "in frame f, " prefix when num_frames >= 2.
std::string QuestionText(const Question& q, int num_frames);

// The answer to `q` from the scene description alone: "red", "blue square", "green box 7", "7",
// "3". Empty when the question has no single answer in that clip (frame out of range, the shape
// or the box colour not unique in the frame, an empty cell).
std::string Answer(const Clip& clip, const Question& q);

// ---- Pixels.

// Where cell (row, col) lies in the image: its top-left corner and side in pixels. The grid is
// centred when image_size is not a multiple of grid (the margin stays white).
struct CellRect {
  int x = 0;
  int y = 0;
  int size = 0;
};
CellRect CellBounds(int row, int col, const Options& opts);

// A box's outline is a ring `border` pixels wide whose outer edge is `margin` pixels inside
// its cell (2 and 1 at the default 24-pixel cells; both in proportion to the cell elsewhere).
struct BoxStyle {
  int margin = 1;
  int border = 2;
};
BoxStyle BoxStyleFor(const Options& opts);

// The fixed RGB value each colour is drawn with.
std::array<uint8_t, 3> ColorRgb(Color color);

// Frame `frame` drawn on white: image_size * image_size * 3 bytes, RGB, rows top to bottom (what
// engine::RgbImage holds). Objects outside the grid are not drawn.
std::vector<uint8_t> RenderFrame(const Frame& frame, const Options& opts);

// The same pixels as a PNG file (lossless; what a client sends).
std::string EncodePng(const Frame& frame, const Options& opts);

// Training-time variations of these pictures, drawn from `seed` (and nothing else): an image
// size from kMinAugmentedSize to kMaxAugmentedSize pixels (the engine's preprocessing resizes it),
// a paper shade, and per object its extent (0.5-0.85 of the cell) and place within its cell, a
// colour shade within 20 levels, the box outline's width, the digit's Hershey face, height and
// stroke width, edges with or without antialiasing; then, for 30% of the frames, a JPEG round
// trip at quality 30-90. With `own_hands` > 0, that share of the digits is written instead in
// one of two hands of this file's own (round strokes or straight segments, each with the usual
// variants of 1, 4, 6, 7 and 9, a random width, slant and smooth warp); the rest of the picture
// is the same at any `own_hands`. With `shape_variety` > 0, that share of the objects get shape
// proportions of their own (width and height each 0.75-1.2 times, a cross's bars 0.22-0.45 of its
// half-extent wide: ellipses, oblongs, squat or tall triangles and diamonds), drawn after
// everything else, so the rest of the picture is the same at any `shape_variety`. With
// `other_forms` > 0, that share of the digits is written, last of all, in the forms neither
// Hershey's faces nor those two hands write (a flat-topped 3, a 2 with a curved neck, an 8 of one
// crossing stroke, a 9 with a straight tail...). The scene and its answers are the frame's.
inline constexpr int kMinAugmentedSize = 72;
inline constexpr int kMaxAugmentedSize = 384;
struct AugmentedFrame {
  int image_size = 0;
  std::vector<uint8_t> rgb;  // image_size * image_size * 3, RGB
};
AugmentedFrame RenderFrameAugmented(const Frame& frame, const Options& opts, uint64_t seed,
                                    double own_hands = 0, double shape_variety = 0,
                                    double other_forms = 0);

// ---- Names.

const char* ShapeName(Shape shape);
const char* ColorName(Color color);
const char* KindName(QuestionKind kind);  // "color_of_shape", "shape_at", "digit_in_box", "count"
const char* SplitName(Split split);       // "train", "validation", "test"
absl::StatusOr<Shape> ParseShape(std::string_view name);
absl::StatusOr<Color> ParseColor(std::string_view name);
absl::StatusOr<QuestionKind> ParseKind(std::string_view name);
absl::StatusOr<Split> ParseSplit(std::string_view name);

// ---- JSON.
//
// A scene is {"frames": [{"objects": [{"type": "shape", "shape": "circle", "color": "red",
// "row": 0, "col": 2}, {"type": "box", "color": "blue", "digit": 7, "row": 1, "col": 0}]}]}.
// An item is {"split", "index", "frames", "image_size", "grid", "prompt", "answer", "kind",
// "question": {"kind", "frame" (0-based), and "shape" | "color" | "row" and "col"}, "scene"}.
nlohmann::json ClipToJson(const Clip& clip);
absl::StatusOr<Clip> ClipFromJson(const nlohmann::json& j);
nlohmann::json ToJson(const Item& item);
// Checks what a hand-edited or corrupt file could get wrong: names, ranges, one object per cell,
// cells inside the grid, and that "prompt" is the question's text. It does not check the answer:
// compare it with Answer() to verify a file.
absl::StatusOr<Item> ItemFromJson(const nlohmann::json& j);

// Lines that together use every word and number the questions and answers can contain (each
// template with each value of each of its slots, with and without the frame prefix), for training
// a tokenizer.
std::vector<std::string> VocabularyCorpus();

}  // namespace vlc::vqa
