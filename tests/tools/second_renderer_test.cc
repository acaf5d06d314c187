// The second renderer draws the scenes the task describes (each object in its cell, in its
// colour, boxes with a legible digit, empty cells blank), at any size it allows, deterministically,
// and differently from the first renderer.
#include "tools/vqa/second_renderer.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <set>
#include <tuple>

namespace vlc::vqa {
namespace {

struct Rgb {
  int r, g, b;
};

Rgb At(const std::vector<uint8_t>& img, int size, int x, int y) {
  const size_t i = (static_cast<size_t>(y) * size + x) * 3;
  return {img[i], img[i + 1], img[i + 2]};
}

bool Near(Rgb p, Color c, int tolerance) {
  const auto want = ColorRgb(c);
  return std::abs(p.r - want[0]) <= tolerance && std::abs(p.g - want[1]) <= tolerance &&
         std::abs(p.b - want[2]) <= tolerance;
}

Frame OneOfEach() {
  Frame f;
  const Shape shapes[] = {Shape::kCircle, Shape::kSquare, Shape::kTriangle, Shape::kDiamond,
                          Shape::kCross};
  for (int i = 0; i < 5; ++i) {
    Object o;
    o.shape = shapes[i];
    o.color = static_cast<Color>(i);
    o.row = i / 4;
    o.col = i % 4;
    f.objects.push_back(o);
  }
  Object box;
  box.is_box = true;
  box.color = Color::kOrange;
  box.digit = 7;
  box.row = 2;
  box.col = 1;
  f.objects.push_back(box);
  return f;
}

TEST(VqaSecondRenderer, EveryShapeIsItsColourAtItsCellsCentreAtEverySize) {
  const Frame f = OneOfEach();
  for (int size : {96, 130, 257, 512}) {
    for (bool aa : {false, true}) {
      SecondStyle style{size, aa, 42};
      const std::vector<uint8_t> img = RenderFrameSecond(f, 4, style);
      ASSERT_EQ(img.size(), static_cast<size_t>(size) * size * 3);
      const double cell = size / 4.0;
      for (const Object& o : f.objects) {
        if (o.is_box) continue;
        const int x = static_cast<int>((o.col + 0.5) * cell);
        const int y = static_cast<int>((o.row + 0.5) * cell);
        EXPECT_TRUE(Near(At(img, size, x, y), o.color, 16))
            << ShapeName(o.shape) << " at size " << size << (aa ? " antialiased" : "");
      }
      // Cells without an object are blank paper, one light shade.
      const int x = static_cast<int>(3.5 * cell), y = static_cast<int>(3.5 * cell);
      const Rgb paper = At(img, size, x, y);
      EXPECT_GE(paper.r, 246);
      EXPECT_EQ(paper.r, paper.g);
      EXPECT_EQ(paper.g, paper.b);
      for (int yy = static_cast<int>(3 * cell) + 1; yy < size; ++yy) {
        for (int xx = static_cast<int>(3 * cell) + 1; xx < size; ++xx) {
          const Rgb p = At(img, size, xx, yy);
          ASSERT_TRUE(p.r == paper.r && p.g == paper.g && p.b == paper.b) << xx << "," << yy;
        }
      }
    }
  }
}

TEST(VqaSecondRenderer, ABoxHasItsOutlineAndADarkDigitInside) {
  const Frame f = OneOfEach();
  const int size = 384;
  const std::vector<uint8_t> img = RenderFrameSecond(f, 4, SecondStyle{size, false, 7});
  const int cell = size / 4, x0 = 1 * cell, y0 = 2 * cell;
  int outline = 0, dark = 0;
  for (int y = y0; y < y0 + cell; ++y) {
    for (int x = x0; x < x0 + cell; ++x) {
      const Rgb p = At(img, size, x, y);
      outline += Near(p, Color::kOrange, 16);
      dark += p.r < 80 && p.g < 80 && p.b < 80;
    }
  }
  // The outline is 6-10% of the cell wide on four sides; the digit a few percent of the cell.
  EXPECT_GT(outline, cell * cell / 6);
  EXPECT_GT(dark, cell * cell / 50);
  // The outline's inset is 3-8% of the cell and its width 6-10%: 8.5% down from the cell's top
  // edge is always on it.
  EXPECT_TRUE(Near(At(img, size, x0 + cell / 2, y0 + static_cast<int>(0.085 * cell)),
                   Color::kOrange, 16));
}

TEST(VqaSecondRenderer, TheTenDigitsAreDrawnDifferently) {
  std::set<std::vector<uint8_t>> seen;
  for (int d = 0; d < 10; ++d) {
    Frame f;
    Object box;
    box.is_box = true;
    box.digit = d;
    f.objects.push_back(box);
    // The same seed: only the digit changes.
    seen.insert(RenderFrameSecond(f, 4, SecondStyle{160, false, 3}));
  }
  EXPECT_EQ(seen.size(), 10u);
}

TEST(VqaSecondRenderer, DeterministicForASeedAndDifferentAcrossSeedsFramesAndRenderers) {
  const Frame f = OneOfEach();
  const SecondStyle style{96, true, 5};
  const auto a = RenderFrameSecond(f, 4, style);
  EXPECT_EQ(a, RenderFrameSecond(f, 4, style));
  EXPECT_NE(a, RenderFrameSecond(f, 4, SecondStyle{96, true, 6}));
  EXPECT_NE(a, RenderFrameSecond(f, 4, style, /*frame_index=*/1));
  Options first;
  first.image_size = 96;
  EXPECT_NE(a, RenderFrame(f, first));
}

TEST(VqaSecondRenderer, WithoutAntialiasingEveryPixelIsPaperOrOneInk) {
  const Frame f = OneOfEach();
  auto count_colours = [&](bool aa) {
    const auto img = RenderFrameSecond(f, 4, SecondStyle{200, aa, 9});
    std::set<std::tuple<int, int, int>> colours;
    for (size_t i = 0; i < img.size(); i += 3) colours.insert({img[i], img[i + 1], img[i + 2]});
    return colours.size();
  };
  // Paper, five shapes, the box's outline and its digit.
  EXPECT_LE(count_colours(false), 8u);
  EXPECT_GT(count_colours(true), 30u);
}

TEST(VqaSecondRenderer, TheDefaultStylesSpreadOverTheSizesAndBothEdgeModes) {
  int lo = 1 << 20, hi = 0, aa = 0;
  for (int64_t i = 0; i < 300; ++i) {
    const SecondStyle s = SecondStyleFor(Split::kTest, i);
    ASSERT_TRUE(ValidateSecondStyle(s, 4).ok());
    lo = std::min(lo, s.image_size);
    hi = std::max(hi, s.image_size);
    aa += s.antialias;
    const SecondStyle again = SecondStyleFor(Split::kTest, i);
    EXPECT_EQ(again.image_size, s.image_size);
    EXPECT_EQ(again.seed, s.seed);
  }
  EXPECT_LT(lo, 120);
  EXPECT_GT(hi, 480);
  EXPECT_GT(aa, 100);
  EXPECT_LT(aa, 200);
  EXPECT_NE(SecondStyleFor(Split::kTest, 0).seed, SecondStyleFor(Split::kValidation, 0).seed);
}

TEST(VqaSecondRenderer, SizesAndGridsOutsideTheRangeAreRefused) {
  EXPECT_EQ(ValidateSecondStyle(SecondStyle{95, true, 0}, 4).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ValidateSecondStyle(SecondStyle{513, true, 0}, 4).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_NE(ValidateSecondStyle(SecondStyle{96, true, 0}, 9).message().find("grid"),
            std::string::npos);
  EXPECT_TRUE(ValidateSecondStyle(SecondStyle{512, false, 0}, 8).ok());
}

TEST(VqaDenseFrames, ClipFramesHoldThreeToSixObjectsAndRoundTripThroughJson) {
  Options dense;
  dense.dense_frames = true;
  std::set<size_t> counts;
  for (int64_t i = 0; i < 40; ++i) {
    const Item item = MakeItem(Split::kTest, i, 4, dense);
    for (const Frame& f : item.clip.frames) {
      EXPECT_GE(f.objects.size(), 3u);
      EXPECT_LE(f.objects.size(), 6u);
      counts.insert(f.objects.size());
    }
    EXPECT_EQ(item.answer, Answer(item.clip, item.question));
    auto back = ItemFromJson(ToJson(item));
    ASSERT_TRUE(back.ok()) << back.status();
    EXPECT_TRUE(*back == item);
  }
  EXPECT_TRUE(counts.count(5) || counts.count(6));
  // The default clips stay as they were: at most 4 objects a frame.
  for (const Frame& f : MakeItem(Split::kTest, 0, 4).clip.frames) EXPECT_LE(f.objects.size(), 4u);
  EXPECT_FALSE(ToJson(MakeItem(Split::kTest, 0, 4)).contains("dense_frames"));
}

// ---- The first renderer's training-time variations (RenderFrameAugmented).

TEST(VqaAugmentedRender, DeterministicForASeedAndSpreadOverSizes) {
  const Frame f = OneOfEach();
  Options opts;
  const AugmentedFrame a = RenderFrameAugmented(f, opts, 1);
  const AugmentedFrame b = RenderFrameAugmented(f, opts, 1);
  EXPECT_EQ(a.image_size, b.image_size);
  EXPECT_EQ(a.rgb, b.rgb);
  int lo = 1 << 20, hi = 0;
  std::set<std::vector<uint8_t>> distinct;
  for (uint64_t seed = 0; seed < 60; ++seed) {
    const AugmentedFrame x = RenderFrameAugmented(f, opts, seed);
    ASSERT_EQ(x.rgb.size(), static_cast<size_t>(x.image_size) * x.image_size * 3);
    ASSERT_GE(x.image_size, kMinAugmentedSize);
    ASSERT_LE(x.image_size, kMaxAugmentedSize);
    lo = std::min(lo, x.image_size);
    hi = std::max(hi, x.image_size);
    distinct.insert(x.rgb);
  }
  EXPECT_LT(lo, 120);
  EXPECT_GT(hi, 330);
  EXPECT_EQ(distinct.size(), 60u);
}

TEST(VqaAugmentedRender, EachShapeStaysInItsCellInItsColour) {
  const Frame f = OneOfEach();
  Options opts;
  for (uint64_t seed = 0; seed < 20; ++seed) {
    const AugmentedFrame x = RenderFrameAugmented(f, opts, seed);
    Options sized = opts;
    sized.image_size = x.image_size;
    for (const Object& o : f.objects) {
      if (o.is_box) continue;
      const CellRect cell = CellBounds(o.row, o.col, sized);
      int near = 0;
      for (int y = cell.y; y < cell.y + cell.size; ++y) {
        for (int xx = cell.x; xx < cell.x + cell.size; ++xx) {
          near += Near(At(x.rgb, x.image_size, xx, y), o.color, 45);
        }
      }
      // The smallest shape (a triangle half the cell wide) covers an eighth of it.
      EXPECT_GT(near, cell.size * cell.size / 25) << ShapeName(o.shape) << " seed " << seed;
    }
    // The empty last cell is paper: no pixel far from grey.
    const CellRect empty = CellBounds(3, 3, sized);
    for (int y = empty.y + 2; y < empty.y + empty.size - 2; ++y) {
      for (int xx = empty.x + 2; xx < empty.x + empty.size - 2; ++xx) {
        const Rgb p = At(x.rgb, x.image_size, xx, y);
        ASSERT_GT(std::min({p.r, p.g, p.b}), 200) << "seed " << seed;
      }
    }
  }
}

// Boxes holding the ten digits, and a circle in the last cell.
Frame TenBoxesAndACircle() {
  Frame f;
  for (int d = 0; d < 10; ++d) {
    Object box;
    box.is_box = true;
    box.color = static_cast<Color>(d % kNumColors);
    box.digit = d;
    box.row = d / 4;
    box.col = d % 4;
    f.objects.push_back(box);
  }
  Object circle;
  circle.shape = Shape::kCircle;
  circle.color = Color::kBlue;
  circle.row = 3;
  circle.col = 3;
  f.objects.push_back(circle);
  return f;
}

// Digits in the VQA tool's own hands (`own_hands` 1), or in its other forms (`other_forms` 1,
// over the own hands at share 0.5): only the boxes' cells change, every digit gets ink inside its
// box, and the pictures stay a function of the seed.
void ExpectOnlyTheDigitsRedrawn(double own_hands, double other_forms) {
  const Frame f = TenBoxesAndACircle();
  Options opts;
  int identical_shape_cells = 0;
  for (uint64_t seed = 0; seed < 20; ++seed) {
    const double base_own = other_forms > 0 ? own_hands : 0;
    const AugmentedFrame hershey = RenderFrameAugmented(f, opts, seed, base_own, 0, 0);
    const AugmentedFrame own = RenderFrameAugmented(f, opts, seed, own_hands, 0, other_forms);
    EXPECT_EQ(own.rgb, RenderFrameAugmented(f, opts, seed, own_hands, 0, other_forms).rgb);
    ASSERT_EQ(own.image_size, hershey.image_size) << "seed " << seed;
    Options sized = opts;
    sized.image_size = own.image_size;
    auto differing = [&](const CellRect& cell) {
      int n = 0;
      for (int y = cell.y; y < cell.y + cell.size; ++y) {
        for (int x = cell.x; x < cell.x + cell.size; ++x) {
          const Rgb a = At(hershey.rgb, own.image_size, x, y);
          const Rgb b = At(own.rgb, own.image_size, x, y);
          n += a.r != b.r || a.g != b.g || a.b != b.b;
        }
      }
      return n;
    };
    for (const Object& o : f.objects) {
      const CellRect cell = CellBounds(o.row, o.col, sized);
      if (!o.is_box) {
        identical_shape_cells += differing(cell) == 0;
        continue;
      }
      // Another hand: many pixels of the box's cell change.
      EXPECT_GT(differing(cell), cell.size / 2) << "digit " << o.digit << " seed " << seed;
      // Dark ink (the digit) in the middle of the box.
      int dark = 0;
      for (int y = cell.y + cell.size / 4; y < cell.y + 3 * cell.size / 4; ++y) {
        for (int x = cell.x + cell.size / 4; x < cell.x + 3 * cell.size / 4; ++x) {
          const Rgb p = At(own.rgb, own.image_size, x, y);
          dark += std::max({p.r, p.g, p.b}) < 110;
        }
      }
      EXPECT_GT(dark, 0) << "digit " << o.digit << " seed " << seed;
    }
  }
  // Without a JPEG round trip (70% of the frames) the shape's cell is byte for byte the same.
  EXPECT_GE(identical_shape_cells, 8);
}

TEST(VqaAugmentedRender, OwnHandsRedrawOnlyTheDigits) { ExpectOnlyTheDigitsRedrawn(1, 0); }

TEST(VqaAugmentedRender, OtherFormsRedrawOnlyTheDigits) {
  ExpectOnlyTheDigitsRedrawn(0.5, 1);
  // At share 0 the pictures are those the recipes before them drew.
  const Frame f = TenBoxesAndACircle();
  for (uint64_t seed = 0; seed < 10; ++seed) {
    EXPECT_EQ(RenderFrameAugmented(f, Options{}, seed, 0.5, 0.5, 0).rgb,
              RenderFrameAugmented(f, Options{}, seed, 0.5, 0.5).rgb);
  }
}

// Shapes with proportions of their own: at share 0 the pictures are the default ones; at share 1
// every shape's cell is drawn anew while the box's stays as it was (outside JPEG round trips),
// the shape still inks its cell in its colour, and the pictures stay a function of the seed.
TEST(VqaAugmentedRender, ShapeVarietyRedrawsOnlyTheShapes) {
  const Frame f = OneOfEach();
  Options opts;
  int identical_box_cells = 0, changed_shape_cells = 0, shape_cells = 0;
  for (uint64_t seed = 0; seed < 20; ++seed) {
    const AugmentedFrame plain = RenderFrameAugmented(f, opts, seed);
    EXPECT_EQ(RenderFrameAugmented(f, opts, seed, 0, 0).rgb, plain.rgb) << "seed " << seed;
    const AugmentedFrame varied = RenderFrameAugmented(f, opts, seed, 0, 1);
    EXPECT_EQ(varied.rgb, RenderFrameAugmented(f, opts, seed, 0, 1).rgb);
    ASSERT_EQ(varied.image_size, plain.image_size) << "seed " << seed;
    Options sized = opts;
    sized.image_size = varied.image_size;
    for (const Object& o : f.objects) {
      const CellRect cell = CellBounds(o.row, o.col, sized);
      int differing = 0, near = 0;
      for (int y = cell.y; y < cell.y + cell.size; ++y) {
        for (int x = cell.x; x < cell.x + cell.size; ++x) {
          const Rgb a = At(plain.rgb, varied.image_size, x, y);
          const Rgb b = At(varied.rgb, varied.image_size, x, y);
          differing += a.r != b.r || a.g != b.g || a.b != b.b;
          if (!o.is_box) near += Near(b, o.color, 45);
        }
      }
      if (o.is_box) {
        identical_box_cells += differing == 0;
        continue;
      }
      ++shape_cells;
      changed_shape_cells += differing > 0;
      EXPECT_GT(near, cell.size * cell.size / 30) << ShapeName(o.shape) << " seed " << seed;
    }
  }
  EXPECT_GE(identical_box_cells, 8);
  EXPECT_GE(changed_shape_cells, shape_cells * 9 / 10);
}

}  // namespace
}  // namespace vlc::vqa
