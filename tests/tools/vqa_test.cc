// The synthetic VQA set: that an item is a pure function of its spec, that answers follow from the
// scene description alone (and survive a JSON round trip), that every question has exactly one
// answer, that the pixels show what the description says, that kinds and frames are balanced,
// that train and test do not share items, and that the command-line tool writes what it says.
#include "tools/vqa/vqa.h"

#include <gtest/gtest.h>
#include <sys/wait.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/fs.h"

namespace vlc::vqa {
namespace {

using nlohmann::json;

::testing::AssertionResult MessageHas(const absl::Status& status, const std::string& part) {
  if (absl::StrContains(status.message(), part)) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << "\"" << status.message() << "\" lacks \"" << part << "\"";
}

// The scene and the question, without the split and index: what makes two items the same task.
std::string TaskKey(const Item& item) {
  return ClipToJson(item.clip).dump() + "|" + item.question.text;
}

// The answer worked out here, independently of Answer(), from the templates' definitions.
std::string ExpectedAnswer(const Frame& frame, const Question& q) {
  std::vector<const Object*> hits;
  for (const Object& o : frame.objects) {
    switch (q.kind) {
      case QuestionKind::kColorOfShape:
        if (!o.is_box && o.shape == q.shape) hits.push_back(&o);
        break;
      case QuestionKind::kShapeAt:
        if (o.row == q.row && o.col == q.col) hits.push_back(&o);
        break;
      case QuestionKind::kDigitInBox:
      case QuestionKind::kCount:
        if (o.color == q.color && o.is_box == (q.kind == QuestionKind::kDigitInBox)) {
          hits.push_back(&o);
        }
        break;
    }
  }
  if (q.kind == QuestionKind::kCount) return std::to_string(hits.size());
  if (hits.size() != 1) return "<ambiguous>";
  const Object& o = *hits[0];
  switch (q.kind) {
    case QuestionKind::kColorOfShape:
      return ColorName(o.color);
    case QuestionKind::kShapeAt:
      return o.is_box ? absl::StrCat(ColorName(o.color), " box ", o.digit)
                      : absl::StrCat(ColorName(o.color), " ", ShapeName(o.shape));
    default:
      return std::to_string(o.digit);
  }
}

std::array<int, 3> PixelAt(const std::vector<uint8_t>& rgb, const Options& opts, int x, int y) {
  const size_t at = (static_cast<size_t>(y) * opts.image_size + x) * 3;
  return {rgb[at], rgb[at + 1], rgb[at + 2]};
}

::testing::AssertionResult Near(const std::array<int, 3>& px, std::array<uint8_t, 3> want,
                                int tolerance) {
  for (int c = 0; c < 3; ++c) {
    if (std::abs(px[c] - want[c]) > tolerance) {
      return ::testing::AssertionFailure()
             << "pixel (" << px[0] << ", " << px[1] << ", " << px[2] << ") is not within "
             << tolerance << " of (" << int{want[0]} << ", " << int{want[1]} << ", " << int{want[2]}
             << ")";
    }
  }
  return ::testing::AssertionSuccess();
}

constexpr std::array<uint8_t, 3> kWhite = {255, 255, 255};

// ---- Determinism.

TEST(VqaGenerator, SameSpecGivesTheSameItemAndPixels) {
  for (Split split : {Split::kTrain, Split::kValidation, Split::kTest}) {
    for (int frames : {1, 8}) {
      for (int64_t index : {int64_t{0}, int64_t{1}, int64_t{17}, int64_t{123456789012}}) {
        const Item a = MakeItem(split, index, frames);
        const Item b = MakeItem(split, index, frames);
        ASSERT_TRUE(a == b) << ToJson(a).dump() << "\n" << ToJson(b).dump();
        for (int f = 0; f < frames; ++f) {
          EXPECT_EQ(RenderFrame(a.clip.frames[f], a.options),
                    RenderFrame(b.clip.frames[f], b.options));
          EXPECT_EQ(EncodePng(a.clip.frames[f], a.options), EncodePng(b.clip.frames[f], b.options));
        }
      }
    }
  }
}

TEST(VqaGenerator, ImageSizeChangesOnlyThePixels) {
  // The seed leaves the resolution out, so one set can be rendered for several vision towers.
  for (int64_t index = 0; index < 50; ++index) {
    const Item small = MakeItem(Split::kTrain, index, 2, Options{96, 4});
    const Item large = MakeItem(Split::kTrain, index, 2, Options{336, 4});
    EXPECT_TRUE(small.clip == large.clip);
    EXPECT_TRUE(small.question == large.question);
  }
}

TEST(VqaGenerator, DifferentIndicesSplitsAndSizesGiveDifferentItems) {
  std::set<std::string> tasks;
  for (int64_t index = 0; index < 200; ++index)
    tasks.insert(TaskKey(MakeItem(Split::kTrain, index, 1)));
  EXPECT_GE(tasks.size(), 198u);

  int same_split = 0, same_frames = 0;
  for (int64_t index = 0; index < 200; ++index) {
    const Item train = MakeItem(Split::kTrain, index, 2);
    same_split += train.clip == MakeItem(Split::kValidation, index, 2).clip;
    same_frames += train.clip.frames[0] == MakeItem(Split::kTrain, index, 3).clip.frames[0];
  }
  EXPECT_LE(same_split, 2);
  EXPECT_LE(same_frames, 2);
}

// A generated data set must not change under a trained model's feet: this pins the first items.
// If a change to the generator is intended, update the values and say in the change that every
// split is new.
TEST(VqaGenerator, PinnedItemsDoNotDrift) {
  uint64_t hash = 1469598103934665603ull;  // FNV-1a over the items' JSON
  for (Split split : {Split::kTrain, Split::kValidation, Split::kTest}) {
    for (int frames : {1, 4}) {
      for (int64_t index = 0; index < 50; ++index) {
        for (char c : ToJson(MakeItem(split, index, frames)).dump()) {
          hash = (hash ^ static_cast<uint8_t>(c)) * 1099511628211ull;
        }
      }
    }
  }
  const Item first = MakeItem(Split::kTrain, 0, 1);
  const Item clip = MakeItem(Split::kTest, 7, 6);
  EXPECT_EQ(Prompt(first), "what color is the circle?");
  EXPECT_EQ(first.answer, "blue");
  EXPECT_EQ(Prompt(clip), "in frame 2, what color is the circle?");
  EXPECT_EQ(clip.answer, "yellow");
  EXPECT_EQ(hash, 2011086111993480911ull) << "items changed: hash " << hash;
}

// ---- Answers and the description.

TEST(VqaJson, AnswersRederivedAfterARoundTripMatch) {
  for (int frames : {1, 8}) {
    std::map<QuestionKind, int> kinds;
    for (int64_t index = 0; index < 1000; ++index) {
      const Item item = MakeItem(Split::kTrain, index, frames);
      ASSERT_FALSE(item.answer.empty()) << ToJson(item).dump();
      // Through text, as an evaluator reads items.jsonl.
      const auto back = ItemFromJson(json::parse(ToJson(item).dump()));
      ASSERT_TRUE(back.ok()) << back.status() << "\n" << ToJson(item).dump();
      EXPECT_TRUE(*back == item) << ToJson(item).dump();
      EXPECT_EQ(Answer(back->clip, back->question), item.answer);
      EXPECT_EQ(ExpectedAnswer(back->clip.frames[back->question.frame], back->question),
                item.answer)
          << ToJson(item).dump();
      ++kinds[item.question.kind];
    }
    EXPECT_EQ(kinds.size(), 4u) << "frames=" << frames;
  }
}

TEST(VqaGenerator, ScenesFollowTheirSpecAndQuestionsHaveOneAnswer) {
  for (int frames : {1, 4}) {
    for (int64_t index = 0; index < 2000; ++index) {
      const Item item = MakeItem(Split::kValidation, index, frames);
      ASSERT_EQ(static_cast<int>(item.clip.frames.size()), frames);
      for (const Frame& frame : item.clip.frames) {
        int shapes = 0, boxes = 0;
        std::set<std::pair<int, int>> cells;
        for (const Object& o : frame.objects) {
          EXPECT_TRUE(cells.insert({o.row, o.col}).second) << "two objects in one cell";
          EXPECT_TRUE(o.row >= 0 && o.row < 4 && o.col >= 0 && o.col < 4);
          if (o.is_box) {
            ++boxes;
            EXPECT_TRUE(o.digit >= 0 && o.digit <= 9);
          } else {
            ++shapes;
          }
        }
        const int n = static_cast<int>(frame.objects.size());
        if (frames == 1) {
          EXPECT_TRUE(n >= 3 && n <= 6) << n;
          EXPECT_GE(shapes, 2);
        } else {
          EXPECT_TRUE(n >= 2 && n <= 4) << n;
          EXPECT_GE(shapes, 1);
        }
        EXPECT_GE(boxes, 1);
      }

      const Question& q = item.question;
      const Frame& frame = item.clip.frames[q.frame];
      auto count = [&](auto pred) {
        return std::count_if(frame.objects.begin(), frame.objects.end(), pred);
      };
      switch (q.kind) {
        case QuestionKind::kColorOfShape:
          EXPECT_EQ(count([&](const Object& o) { return !o.is_box && o.shape == q.shape; }), 1)
              << ToJson(item).dump();
          break;
        case QuestionKind::kDigitInBox:
          EXPECT_EQ(count([&](const Object& o) { return o.is_box && o.color == q.color; }), 1)
              << ToJson(item).dump();
          break;
        case QuestionKind::kShapeAt:
          EXPECT_EQ(count([&](const Object& o) { return o.row == q.row && o.col == q.col; }), 1)
              << ToJson(item).dump();
          break;
        case QuestionKind::kCount:
          EXPECT_EQ(item.answer, std::to_string(count([&](const Object& o) {
                      return !o.is_box && o.color == q.color;
                    })));
          break;
      }
    }
  }
}

TEST(VqaText, TemplatesAndAnswersAreExact) {
  Clip clip;
  clip.frames.resize(2);
  auto shape = [](Shape s, Color c, int row, int col) {
    Object o;
    o.shape = s;
    o.color = c;
    o.row = row;
    o.col = col;
    return o;
  };
  auto box = [](Color c, int digit, int row, int col) {
    Object o;
    o.is_box = true;
    o.color = c;
    o.digit = digit;
    o.row = row;
    o.col = col;
    return o;
  };
  clip.frames[0].objects = {shape(Shape::kCircle, Color::kRed, 0, 0),
                            shape(Shape::kCircle, Color::kRed, 0, 1),
                            shape(Shape::kCross, Color::kRed, 2, 3),
                            box(Color::kRed, 4, 1, 1),
                            box(Color::kBlue, 9, 3, 0),
                            box(Color::kBlue, 2, 3, 3)};
  clip.frames[1].objects = {shape(Shape::kTriangle, Color::kPurple, 1, 2),
                            box(Color::kOrange, 0, 0, 3)};

  Question q;
  q.kind = QuestionKind::kColorOfShape;
  q.shape = Shape::kCross;
  EXPECT_EQ(QuestionText(q, 1), "what color is the cross?");
  EXPECT_EQ(Answer(clip, q), "red");
  q.shape = Shape::kCircle;  // two circles: no single answer
  EXPECT_EQ(Answer(clip, q), "");
  q.frame = 1;
  q.shape = Shape::kTriangle;
  EXPECT_EQ(QuestionText(q, 2), "in frame 2, what color is the triangle?");
  EXPECT_EQ(Answer(clip, q), "purple");

  q = Question{};
  q.kind = QuestionKind::kShapeAt;
  q.row = 2;
  q.col = 3;
  EXPECT_EQ(QuestionText(q, 1), "what is at row 3 column 4?");
  EXPECT_EQ(Answer(clip, q), "red cross");
  q.row = 1;
  q.col = 1;
  EXPECT_EQ(Answer(clip, q), "red box 4");
  q.row = 2;
  q.col = 2;
  EXPECT_EQ(Answer(clip, q), "");  // empty cell
  q.frame = 1;
  q.row = 0;
  q.col = 3;
  EXPECT_EQ(QuestionText(q, 16), "in frame 2, what is at row 1 column 4?");
  EXPECT_EQ(Answer(clip, q), "orange box 0");

  q = Question{};
  q.kind = QuestionKind::kDigitInBox;
  q.color = Color::kRed;
  EXPECT_EQ(QuestionText(q, 1), "which digit is in the red box?");
  EXPECT_EQ(Answer(clip, q), "4");
  q.color = Color::kBlue;  // two blue boxes
  EXPECT_EQ(Answer(clip, q), "");
  q.color = Color::kGreen;  // none
  EXPECT_EQ(Answer(clip, q), "");

  q = Question{};
  q.kind = QuestionKind::kCount;
  q.color = Color::kRed;
  EXPECT_EQ(QuestionText(q, 1), "how many red shapes are there?");
  EXPECT_EQ(Answer(clip, q), "3");  // the red box is not a shape
  q.color = Color::kBlue;
  EXPECT_EQ(Answer(clip, q), "0");
  q.frame = 2;  // no such frame
  EXPECT_EQ(Answer(clip, q), "");
}

// ---- Balance.

TEST(VqaGenerator, KindsAreBalancedAndCountAnswersVary) {
  for (int frames : {1, 8}) {
    std::map<QuestionKind, int> kinds;
    std::map<std::string, int> counts;
    const int n = 2000;
    for (int64_t index = 0; index < n; ++index) {
      const Item item = MakeItem(Split::kTrain, index, frames);
      ++kinds[item.question.kind];
      if (item.question.kind == QuestionKind::kCount) ++counts[item.answer];
    }
    for (int k = 0; k < kNumKinds; ++k) {
      EXPECT_GT(kinds[static_cast<QuestionKind>(k)], n * 15 / 100)
          << KindName(static_cast<QuestionKind>(k)) << " frames=" << frames;
    }
    // "0" is possible but rarer than the counts that are not a safe guess either.
    EXPECT_GT(counts["0"], 0);
    EXPECT_LT(counts["0"], counts["1"]);
    EXPECT_LT(counts["0"], counts["2"]);
    EXPECT_GT(counts["3"], 0) << "frames=" << frames;
  }
}

TEST(VqaGenerator, ClipQuestionsNameEveryFrame) {
  const int frames = 8;
  std::map<int, int> named;
  for (int64_t index = 0; index < 2000; ++index) {
    const Item item = MakeItem(Split::kTrain, index, frames);
    const int f = item.question.frame;
    ASSERT_TRUE(f >= 0 && f < frames);
    // The text names the same frame, counted from 1.
    EXPECT_TRUE(absl::StartsWith(Prompt(item), absl::StrCat("in frame ", f + 1, ", ")))
        << Prompt(item);
    ++named[f + 1];
  }
  for (int f = 1; f <= frames; ++f) EXPECT_GT(named[f], 2000 / frames / 2) << "frame " << f;

  // A single image never names a frame.
  for (int64_t index = 0; index < 200; ++index) {
    EXPECT_FALSE(absl::StrContains(Prompt(MakeItem(Split::kTrain, index, 1)), "frame"));
  }
}

TEST(VqaSplits, TrainAndTestShareNoSceneQuestionPair) {
  for (int frames : {1, 4}) {
    std::set<std::string> train;
    for (int64_t index = 0; index < 2000; ++index) {
      train.insert(TaskKey(MakeItem(Split::kTrain, index, frames)));
    }
    for (int64_t index = 0; index < 2000; ++index) {
      const Item test = MakeItem(Split::kTest, index, frames);
      EXPECT_EQ(train.count(TaskKey(test)), 0u) << "test item " << index << " frames=" << frames;
    }
  }
}

// ---- Pixels.

TEST(VqaRender, CellsShowTheirObjects) {
  // 99 px over a 4x4 grid leaves a 1 px white margin around 24 px cells.
  for (const Options opts : {Options{}, Options{99, 4}, Options{192, 6}, Options{336, 8}}) {
    const BoxStyle style = BoxStyleFor(opts);
    for (int64_t index = 0; index < 150; ++index) {
      const Item item = MakeItem(Split::kTest, index, 2, opts);
      for (const Frame& frame : item.clip.frames) {
        const std::vector<uint8_t> rgb = RenderFrame(frame, opts);
        ASSERT_EQ(rgb.size(), static_cast<size_t>(opts.image_size) * opts.image_size * 3);
        for (int r = 0; r < opts.grid; ++r) {
          for (int c = 0; c < opts.grid; ++c) {
            const CellRect cell = CellBounds(r, c, opts);
            const int cx = cell.x + cell.size / 2;
            const int cy = cell.y + cell.size / 2;
            const auto it = std::find_if(frame.objects.begin(), frame.objects.end(),
                                         [&](const Object& o) { return o.row == r && o.col == c; });
            if (it == frame.objects.end()) {
              // Nothing spills into an empty cell.
              for (int y = cell.y; y < cell.y + cell.size; ++y) {
                for (int x = cell.x; x < cell.x + cell.size; ++x) {
                  ASSERT_TRUE(Near(PixelAt(rgb, opts, x, y), kWhite, 0))
                      << "empty cell " << r << "," << c << " at " << x << "," << y;
                }
              }
            } else if (it->is_box) {
              const int edge = cell.x + style.margin;
              for (int k = 0; k < style.border; ++k) {
                EXPECT_TRUE(Near(PixelAt(rgb, opts, edge + k, cy), ColorRgb(it->color), 0));
                EXPECT_TRUE(Near(PixelAt(rgb, opts, cx, cell.y + style.margin + k),
                                 ColorRgb(it->color), 0));
              }
              EXPECT_TRUE(Near(
                  PixelAt(rgb, opts, edge + style.border, cell.y + style.margin + style.border),
                  kWhite, 0))
                  << "inside the outline";
            } else {
              EXPECT_TRUE(Near(PixelAt(rgb, opts, cx, cy), ColorRgb(it->color), 8))
                  << ShapeName(it->shape) << " at " << r << "," << c;
            }
          }
        }
        if (opts.image_size == 99) {
          for (int k = 0; k < opts.image_size; ++k) {
            EXPECT_TRUE(Near(PixelAt(rgb, opts, k, 0), kWhite, 0));
            EXPECT_TRUE(Near(PixelAt(rgb, opts, 0, k), kWhite, 0));
          }
        }
      }
    }
  }
}

// The pixels of one object alone in a 96 px image at cell (1, 1).
std::vector<uint8_t> RenderOne(const Object& o, const Options& opts = {}) {
  Frame frame;
  frame.objects = {o};
  return RenderFrame(frame, opts);
}

// The rows and columns of cell (1, 1) whose pixels are darker than `threshold` in every channel
// or differ from white; returned as {width, height} of their bounding box.
std::pair<int, int> InkedExtent(const std::vector<uint8_t>& rgb, const Options& opts,
                                bool dark_only) {
  const CellRect cell = CellBounds(1, 1, opts);
  const BoxStyle style = BoxStyleFor(opts);
  const int inset = dark_only ? style.margin + style.border : 0;
  int x0 = 1 << 20, y0 = 1 << 20, x1 = -1, y1 = -1;
  for (int y = cell.y + inset; y < cell.y + cell.size - inset; ++y) {
    for (int x = cell.x + inset; x < cell.x + cell.size - inset; ++x) {
      const auto px = PixelAt(rgb, opts, x, y);
      const bool inked =
          dark_only ? std::max({px[0], px[1], px[2]}) < 128 : std::min({px[0], px[1], px[2]}) < 200;
      if (!inked) continue;
      x0 = std::min(x0, x), y0 = std::min(y0, y), x1 = std::max(x1, x), y1 = std::max(y1, y);
    }
  }
  return {x1 - x0 + 1, y1 - y0 + 1};
}

TEST(VqaRender, ShapesSpanAboutSeventyPercentOfTheirCellAndDiffer) {
  const Options opts;
  std::set<std::vector<uint8_t>> looks;
  for (int s = 0; s < kNumShapes; ++s) {
    Object o;
    o.shape = static_cast<Shape>(s);
    o.color = Color::kBlue;
    o.row = o.col = 1;
    const std::vector<uint8_t> rgb = RenderOne(o, opts);
    const auto [w, h] = InkedExtent(rgb, opts, false);
    // 70% of 24 px is 16.8 px.
    EXPECT_TRUE(w >= 15 && w <= 19) << ShapeName(o.shape) << " is " << w << " px wide";
    EXPECT_TRUE(h >= 15 && h <= 19) << ShapeName(o.shape) << " is " << h << " px tall";
    looks.insert(rgb);
  }
  EXPECT_EQ(looks.size(), static_cast<size_t>(kNumShapes));
}

TEST(VqaRender, DigitsAreLegibleAndDistinct) {
  const Options opts;
  std::set<std::vector<uint8_t>> looks;
  for (int d = 0; d <= 9; ++d) {
    Object o;
    o.is_box = true;
    o.color = Color::kGreen;
    o.digit = d;
    o.row = o.col = 1;
    const std::vector<uint8_t> rgb = RenderOne(o, opts);
    const auto [w, h] = InkedExtent(rgb, opts, true);
    EXPECT_TRUE(h >= 14 && h <= 16) << "digit " << d << " is " << h << " px tall";
    EXPECT_TRUE(w >= 4 && w <= 14) << "digit " << d << " is " << w << " px wide";
    looks.insert(rgb);
  }
  EXPECT_EQ(looks.size(), 10u);
}

TEST(VqaRender, PngHoldsTheRenderedPixels) {
  for (int64_t index = 0; index < 20; ++index) {
    const Item item = MakeItem(Split::kTrain, index, 1);
    const std::string png = EncodePng(item.clip.frames[0], item.options);
    ASSERT_EQ(png.substr(1, 3), "PNG");
    const cv::Mat bgr =
        cv::imdecode(std::vector<uint8_t>(png.begin(), png.end()), cv::IMREAD_COLOR);
    ASSERT_FALSE(bgr.empty());
    cv::Mat rgb;
    cv::cvtColor(bgr, rgb, cv::COLOR_BGR2RGB);
    EXPECT_EQ(std::vector<uint8_t>(rgb.data, rgb.data + rgb.total() * 3),
              RenderFrame(item.clip.frames[0], item.options));
  }
}

// ---- Validation.

TEST(VqaSpec, RefusesSizesTheSetCannotDraw) {
  EXPECT_TRUE(ValidateSpec(1, {}).ok());
  EXPECT_TRUE(ValidateSpec(kMaxFrames, {}).ok());
  EXPECT_TRUE(MessageHas(ValidateSpec(0, {}), "frames"));
  EXPECT_TRUE(MessageHas(ValidateSpec(kMaxFrames + 1, {}), "frames"));
  EXPECT_TRUE(MessageHas(ValidateSpec(1, Options{96, 2}), "grid"));
  EXPECT_TRUE(MessageHas(ValidateSpec(1, Options{96, 9}), "grid"));
  EXPECT_TRUE(MessageHas(ValidateSpec(1, Options{40, 4}), "image size"));
}

TEST(VqaJson, RejectsMalformedItemsNamingTheField) {
  const json good = ToJson(MakeItem(Split::kTrain, 3, 2));
  ASSERT_TRUE(ItemFromJson(good).ok());
  struct Case {
    const char* what;
    std::function<void(json&)> edit;
    const char* message;
  };
  const std::vector<Case> cases = {
      {"unknown colour", [](json& j) { j["scene"]["frames"][0]["objects"][0]["color"] = "pink"; },
       "pink"},
      {"digit 10",
       [](json& j) {
         j["scene"]["frames"][0]["objects"][0] = {
             {"type", "box"}, {"color", "red"}, {"digit", 10}, {"row", 0}, {"col", 0}};
       },
       "digit"},
      {"two objects in a cell",
       [](json& j) {
         auto& objs = j["scene"]["frames"][1]["objects"];
         objs.push_back(objs[0]);
       },
       "second object"},
      {"outside the grid", [](json& j) { j["scene"]["frames"][0]["objects"][0]["row"] = 5; },
       "outside"},
      {"edited prompt", [](json& j) { j["prompt"] = "what is this?"; }, "prompt"},
      {"question frame", [](json& j) { j["question"]["frame"] = 2; }, "question.frame"},
      {"frame count", [](json& j) { j["frames"] = 3; }, "item.frames"},
      {"missing scene", [](json& j) { j.erase("scene"); }, "\"scene\""},
      {"split", [](json& j) { j["split"] = "dev"; }, "split"},
      {"kind", [](json& j) { j["kind"] = "count_things"; }, "kind"},
  };
  for (const Case& c : cases) {
    json j = good;
    c.edit(j);
    const auto item = ItemFromJson(j);
    ASSERT_FALSE(item.ok()) << c.what;
    EXPECT_EQ(item.status().code(), absl::StatusCode::kInvalidArgument) << c.what;
    EXPECT_TRUE(MessageHas(item.status(), c.message)) << c.what;
  }
}

TEST(VqaCorpus, CoversEveryWordTheItemsUse) {
  std::set<std::string> words;
  auto split_words = [](const std::string& text) {
    std::string cleaned;
    for (char c : text) cleaned += (c == '?' || c == ',') ? ' ' : c;
    return std::vector<std::string>(absl::StrSplit(cleaned, ' ', absl::SkipEmpty()));
  };
  for (const std::string& line : VocabularyCorpus()) {
    for (const std::string& w : split_words(line)) words.insert(w);
  }
  for (int frames : {1, kMaxFrames}) {
    for (int64_t index = 0; index < 500; ++index) {
      const Item item = MakeItem(Split::kTrain, index, frames, Options{kMaxGrid * 12, kMaxGrid});
      for (const std::string& w : split_words(Prompt(item) + " " + item.answer)) {
        EXPECT_EQ(words.count(w), 1u) << "\"" << w << "\" in " << Prompt(item);
      }
    }
  }
}

// ---- The command-line tool, run as a user would.

struct ShellRun {
  int code;
  std::string out;
};

ShellRun Sh(const std::string& cmd) {
  ShellRun r{-1, ""};
  FILE* f = popen((cmd + " 2>&1").c_str(), "r");
  if (!f) return r;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof(buf), f)) > 0) r.out.append(buf, n);
  const int st = pclose(f);
  r.code = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  return r;
}

class VqaCli : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = MakeTempDir("vlcache-vqa-test-");
    ASSERT_FALSE(dir_.empty());
  }
  void TearDown() override { RemoveTree(dir_); }
  const std::string bin_ = std::string(VLC_BIN_DIR) + "/vlcache-vqa";
  std::string dir_;
};

std::string ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

TEST_F(VqaCli, WritesItemsAndFramesThatMatchTheLibrary) {
  const std::string out = dir_ + "/clips";
  ShellRun run = Sh(bin_ + " --split validation --n 5 --start 10 --frames 3 --out " + out);
  ASSERT_EQ(run.code, 0) << run.out;
  std::istringstream lines(ReadAll(out + "/items.jsonl"));
  std::string line;
  int64_t index = 10;
  while (std::getline(lines, line)) {
    const json j = json::parse(line);
    const auto item = ItemFromJson(j);
    ASSERT_TRUE(item.ok()) << item.status();
    EXPECT_TRUE(*item == MakeItem(Split::kValidation, index, 3));
    EXPECT_EQ(j["prompt"], Prompt(*item));
    ASSERT_EQ(j["images"].size(), 3u);
    for (int f = 0; f < 3; ++f) {
      const std::string name = j["images"][f];
      EXPECT_EQ(name, absl::StrCat(index, "_f", f + 1, ".png"));
      EXPECT_EQ(ReadAll(out + "/" + name), EncodePng(item->clip.frames[f], item->options));
    }
    ++index;
  }
  EXPECT_EQ(index, 15);

  // Single images at another size.
  run = Sh(bin_ + " --split test --n 2 --image-size 120 --grid 5 --out " + dir_ + "/single");
  ASSERT_EQ(run.code, 0) << run.out;
  const std::string single = ReadAll(dir_ + "/single/items.jsonl");
  EXPECT_EQ(std::count(single.begin(), single.end(), '\n'), 2);
  const json j = json::parse(single.substr(0, single.find('\n')));
  EXPECT_EQ(j["split"], "test");
  EXPECT_EQ(j["frames"], 1);
  EXPECT_EQ(j["grid"], 5);
  const cv::Mat png = cv::imread(dir_ + "/single/0_f1.png");
  EXPECT_EQ(png.cols, 120);
  EXPECT_EQ(png.rows, 120);
}

TEST_F(VqaCli, RefusesBadOptionsWithExitCodeTwo) {
  const std::string out = " --out " + dir_ + "/bad";
  for (const std::string args :
       {"--split dev --n 1" + out, "--split train --n 0" + out, "--split train --n x" + out,
        "--split train --n 1 --frames 17" + out, "--split train --n 1 --grid 2" + out,
        "--split train --n 1 --image-size 30" + out, "--split train --n 1 --start -1" + out,
        std::string("--split train --n 1"), "--split train --n 1 --bogus" + out}) {
    const ShellRun run = Sh(bin_ + " " + args);
    EXPECT_EQ(run.code, 2) << args << "\n" << run.out;
    EXPECT_FALSE(run.out.empty()) << args;
  }
  const ShellRun help = Sh(bin_ + " --help");
  EXPECT_EQ(help.code, 0);
  for (const char* opt :
       {"--split", "--n", "--start", "--frames", "--image-size", "--grid", "--out"}) {
    EXPECT_TRUE(absl::StrContains(help.out, opt)) << opt;
  }
}

}  // namespace
}  // namespace vlc::vqa
