// The demo task's encoding: what the trainer feeds the model is what the serving engine builds for
// the same question and pictures, answers decode back to their text, and the batch's targets and
// mask select exactly the answer and EOS.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cstdio>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "common/fs.h"
#include "engine/pipeline.h"
#include "tools/make_tiny.h"
#include "tools/train/demo_task.h"
#include "tools/train/trainable_llava.h"
#include "tools/vqa/vqa.h"

namespace vlc::train {
namespace {

class DemoTaskTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new std::string(MakeTempDir("vlcache-demo-task-"));
    auto pieces = tools::WriteBpeTokenizer(DemoTokenizerCorpus(), 512, *dir_ + "/tokenizer.model");
    ASSERT_TRUE(pieces.ok()) << pieces.status();
    config_ = new engine::LlavaConfig(DemoConfig(*pieces));
    auto enc = TaskEncoder::Create(*dir_, *config_);
    ASSERT_TRUE(enc.ok()) << enc.status();
    encoder_ = enc->release();
  }
  static void TearDownTestSuite() {
    delete encoder_;
    delete config_;
    if (dir_ && !dir_->empty()) RemoveTree(*dir_);
    delete dir_;
  }
  static std::string* dir_;
  static engine::LlavaConfig* config_;
  static TaskEncoder* encoder_;
};
std::string* DemoTaskTest::dir_ = nullptr;
engine::LlavaConfig* DemoTaskTest::config_ = nullptr;
TaskEncoder* DemoTaskTest::encoder_ = nullptr;

TEST_F(DemoTaskTest, AnswersDecodeToTheirTextAndEndWithEos) {
  const auto& tok = encoder_->tokenizer();
  for (int frames : {1, 3, 8}) {
    for (int i = 0; i < 150; ++i) {
      const vqa::Item item = vqa::MakeItem(vqa::Split::kTrain, i, frames, DemoVqaOptions());
      auto e = encoder_->Encode(item);
      ASSERT_TRUE(e.ok()) << e.status();
      ASSERT_GE(e->answer_ids.size(), 2u);
      EXPECT_EQ(e->answer_ids.back(), tok.eos_id());
      const std::vector<int> answer(e->answer_ids.begin(), e->answer_ids.end() - 1);
      EXPECT_EQ(tok.Decode(answer), item.answer);
      int visual = 0;
      for (int id : e->prompt_ids) visual += id == config_->image_token_index;
      EXPECT_EQ(visual, frames * config_->visual_tokens_per_image());
      EXPECT_EQ(static_cast<int>(e->frames.size()), frames);
      // Every word of the task is in the vocabulary: no byte-fallback pieces.
      for (int id : e->prompt_ids) EXPECT_TRUE(id < 3 || id >= 3 + 256) << id;
    }
  }
}

TEST_F(DemoTaskTest, CaptionsNameEveryObjectOfTheirFrameInReadingOrder) {
  const auto& tok = encoder_->tokenizer();
  for (int frames : {1, 4}) {
    for (int i = 0; i < 100; ++i) {
      const vqa::Item item = vqa::MakeItem(vqa::Split::kTrain, 500 + i, frames, DemoVqaOptions());
      const int f = i % frames;
      const auto [question, answer] = Caption(item, f);
      EXPECT_EQ(question, frames == 1 ? std::string("describe the picture.")
                                      : "describe frame " + std::to_string(f + 1) + ".");
      // One phrase per object, separated by "; ", rows then columns ascending.
      std::vector<std::string> phrases;
      size_t start = 0;
      while (true) {
        const size_t end = answer.find("; ", start);
        phrases.push_back(answer.substr(start, end == std::string::npos ? end : end - start));
        if (end == std::string::npos) break;
        start = end + 2;
      }
      const auto& objects = item.clip.frames[f].objects;
      ASSERT_EQ(phrases.size(), objects.size()) << answer;
      int last = -1;
      for (const auto& phrase : phrases) {
        int row = 0, col = 0;
        ASSERT_EQ(std::sscanf(phrase.c_str(), "row %d column %d", &row, &col), 2) << phrase;
        EXPECT_GT((row - 1) * 100 + col, last) << answer;
        last = (row - 1) * 100 + col;
        const vqa::Object* o = nullptr;
        for (const auto& x : objects) {
          if (x.row == row - 1 && x.col == col - 1) o = &x;
        }
        ASSERT_NE(o, nullptr) << phrase;
        const std::string what = o->is_box ? std::string(vqa::ColorName(o->color)) + " box " +
                                                 std::to_string(o->digit)
                                           : std::string(vqa::ColorName(o->color)) + " " +
                                                 vqa::ShapeName(o->shape);
        EXPECT_EQ(phrase.substr(phrase.size() - what.size()), what) << phrase;
      }
      auto e = encoder_->EncodeCaption(item, f);
      ASSERT_TRUE(e.ok()) << e.status();
      EXPECT_EQ(tok.Decode(std::vector<int>(e->answer_ids.begin(), e->answer_ids.end() - 1)),
                answer);
      for (int id : e->answer_ids) EXPECT_TRUE(id < 3 || id >= 3 + 256) << id;
    }
  }
}

TEST_F(DemoTaskTest, PromptAndPixelsEqualWhatTheServingPipelineBuilds) {
  // A checkpoint of the demo shape (random weights) in a directory the pipeline loads.
  auto model = TrainableLlava::Create(*config_);
  ASSERT_TRUE(model.ok()) << model.status();
  const std::string ckpt = *dir_ + "/ckpt";
  ASSERT_TRUE((*model)->Export(ckpt, *dir_ + "/tokenizer.model").ok());
  auto pipeline = engine::Pipeline::Load(ckpt);
  ASSERT_TRUE(pipeline.ok()) << pipeline.status();
  auto enc = TaskEncoder::Create(ckpt, *config_);
  ASSERT_TRUE(enc.ok()) << enc.status();
  for (int frames : {1, 4}) {
    const vqa::Item item = vqa::MakeItem(vqa::Split::kTest, 7, frames, DemoVqaOptions());
    auto e = (*enc)->Encode(item);
    ASSERT_TRUE(e.ok()) << e.status();
    engine::GenerateRequest req;
    for (const auto& f : item.clip.frames) {
      req.media.images.push_back(vqa::EncodePng(f, item.options));
    }
    req.prompt = vqa::Prompt(item);
    auto prepared = (*pipeline)->Prepare(req);
    ASSERT_TRUE(prepared.ok()) << prepared.status();
    EXPECT_EQ(prepared->ids, e->prompt_ids);
    // The visual rows the engine computes from the PNGs equal the trainer's from its pixels.
    auto batch = (*enc)->MakeBatch({*e});
    ASSERT_TRUE(batch.ok()) << batch.status();
    auto visual = (*pipeline)->model().EncodeImages(batch->inputs.pixel_values);
    ASSERT_TRUE(visual.ok()) << visual.status();
    EXPECT_TRUE(at::equal(*visual, prepared->visual));
  }
}

// An augmented item asks the same question of the same scene, in other pictures: the same ids
// and cell labels, frames of other sizes that still batch into the model's 96-pixel input.
TEST_F(DemoTaskTest, AugmentedPicturesKeepTheQuestionAnswerAndCellsAndStillBatch) {
  const vqa::Item item = vqa::MakeItem(vqa::Split::kTrain, 5, 3, DemoVqaOptions());
  auto plain = encoder_->Encode(item);
  auto augmented = encoder_->Encode(item, /*augment_seed=*/12345);
  ASSERT_TRUE(plain.ok() && augmented.ok());
  EXPECT_EQ(augmented->prompt_ids, plain->prompt_ids);
  EXPECT_EQ(augmented->answer_ids, plain->answer_ids);
  EXPECT_EQ(augmented->cells, plain->cells);
  ASSERT_EQ(augmented->frames.size(), 3u);
  std::set<int> sizes;
  for (size_t f = 0; f < 3; ++f) {
    sizes.insert(augmented->frames[f].width);
    EXPECT_NE(augmented->frames[f].data, plain->frames[f].data);
  }
  EXPECT_GT(sizes.size(), 1u);  // each frame draws its own size
  auto batch = encoder_->MakeBatch({*augmented, *plain});
  ASSERT_TRUE(batch.ok()) << batch.status();
  EXPECT_EQ(batch->inputs.pixel_values.size(0), 6);
  EXPECT_EQ(batch->inputs.pixel_values.size(-1), config_->vision.image_size);
  // The same seed, the same pictures.
  EXPECT_EQ(encoder_->Encode(item, 12345)->frames[1].data, augmented->frames[1].data);
}

TEST_F(DemoTaskTest, BatchTargetsAndMaskSelectTheAnswerAndEos) {
  std::vector<EncodedItem> items;
  for (int i = 0; i < 5; ++i) {
    auto e = encoder_->Encode(vqa::MakeItem(vqa::Split::kTrain, 100 + i, 1 + i % 2,
                                            DemoVqaOptions()));
    ASSERT_TRUE(e.ok());
    items.push_back(*e);
  }
  auto b = encoder_->MakeBatch(items);
  ASSERT_TRUE(b.ok()) << b.status();
  ASSERT_EQ(b->inputs.pixel_values.size(0), 1 + 2 + 1 + 2 + 1);
  // One label triple per grid cell of every image, in image order: colour, kind, digit.
  const int grid = DemoVqaOptions().grid;
  ASSERT_EQ(b->cells.sizes().vec(), std::vector<int64_t>({7, grid * grid, 3}));
  int64_t image = 0;
  for (int i = 0; i < 5; ++i) {
    const vqa::Item item = vqa::MakeItem(vqa::Split::kTrain, 100 + i, 1 + i % 2, DemoVqaOptions());
    for (const auto& frame : item.clip.frames) {
      int occupied = 0;
      for (int64_t c = 0; c < grid * grid; ++c) occupied += b->cells[image][c][0].item<int>() != 0;
      EXPECT_EQ(occupied, static_cast<int>(frame.objects.size()));
      for (const auto& o : frame.objects) {
        const auto label = b->cells[image][o.row * grid + o.col];
        EXPECT_EQ(label[0].item<int>(), 1 + static_cast<int>(o.color));
        EXPECT_EQ(label[1].item<int>(),
                  o.is_box ? 1 + vqa::kNumShapes : 1 + static_cast<int>(o.shape));
        EXPECT_EQ(label[2].item<int>(), o.is_box ? 1 + o.digit : 0);
      }
      ++image;
    }
  }
  for (size_t i = 0; i < items.size(); ++i) {
    const auto& it = items[i];
    const int64_t len = static_cast<int64_t>(it.prompt_ids.size() + it.answer_ids.size()) - 1;
    EXPECT_EQ(b->inputs.lengths[i], len);
    EXPECT_EQ(b->inputs.images_per_sequence[i], static_cast<int64_t>(it.frames.size()));
    std::vector<int> masked_targets;
    for (int64_t t = 0; t < b->targets.size(1); ++t) {
      if (b->mask[i][t].item<bool>()) masked_targets.push_back(b->targets[i][t].item<int>());
      if (t < len) {
        // The input at t + 1 is the target at t inside the sequence (teacher forcing).
        if (t + 1 < len && b->mask[i][t].item<bool>()) {
          EXPECT_EQ(b->inputs.input_ids[i][t + 1].item<int>(), b->targets[i][t].item<int>());
        }
      }
    }
    EXPECT_EQ(masked_targets, it.answer_ids);
    for (size_t k = 0; k < it.prompt_ids.size(); ++k) {
      EXPECT_EQ(b->inputs.input_ids[i][k].item<int>(), it.prompt_ids[k]);
    }
  }
}

TEST_F(DemoTaskTest, ExactMatchNeedsEveryAnswerTokenRight) {
  std::vector<EncodedItem> items;
  for (int i = 0; i < 3; ++i) {
    auto e = encoder_->Encode(vqa::MakeItem(vqa::Split::kTrain, i, 1, DemoVqaOptions()));
    ASSERT_TRUE(e.ok());
    items.push_back(*e);
  }
  auto b = encoder_->MakeBatch(items);
  ASSERT_TRUE(b.ok());
  const int64_t vocab = config_->text.vocab_size;
  // Logits that put the most mass on each target, and something else where the mask is off.
  auto logits = at::one_hot(b->targets, vocab).to(at::kFloat);
  logits.select(2, 0).masked_fill_(~b->mask, 5.0f);
  EXPECT_EQ(ExactMatches(logits, *b), std::vector<bool>({true, true, true}));
  // One wrong token in the middle of item 1's answer (or on its EOS) fails item 1 only.
  int64_t last = -1;
  for (int64_t t = 0; t < b->mask.size(1); ++t) {
    if (b->mask[1][t].item<bool>()) last = t;
  }
  ASSERT_GE(last, 0);
  logits[1][last][b->targets[1][last].item<int64_t>()] = -1.0f;
  EXPECT_EQ(ExactMatches(logits, *b), std::vector<bool>({true, false, true}));
}

TEST(FrameScheduleTest, SingleImagesFirstThenClipsOfTheConfiguredLengths) {
  FrameSchedule s;
  s.single_steps = 100;
  s.clip_fraction = 0.6;
  s.min_frames = 5;
  s.max_frames = 8;
  for (int64_t step = 0; step < 100; ++step) EXPECT_EQ(s.FramesAt(step), 1) << step;
  std::map<int, int> seen;
  const int n = 20000;
  for (int64_t step = 100; step < 100 + n; ++step) {
    const int f = s.FramesAt(step);
    EXPECT_EQ(f, s.FramesAt(step)) << "not a function of the step";
    ++seen[f];
  }
  ASSERT_EQ(seen.size(), 5u) << "1 and 5..8 only";
  EXPECT_EQ(seen.begin()->first, 1);
  EXPECT_EQ(seen.rbegin()->first, 8);
  EXPECT_NEAR(static_cast<double>(seen[1]) / n, 0.4, 0.02);
  for (int f = 5; f <= 8; ++f) EXPECT_NEAR(static_cast<double>(seen[f]) / n, 0.15, 0.015) << f;
}

TEST(FrameScheduleTest, DefaultRangeKeepsTheDataOfRunsStartedBeforeMinFrames) {
  // Frames of four batches as the log of the demo model's training run printed them (single
  // steps 6000, clip fraction 0.6, clips of 2 to 8 frames): resuming that run must see the same data.
  FrameSchedule s;
  s.single_steps = 6000;
  EXPECT_EQ(s.FramesAt(12524), 7);
  EXPECT_EQ(s.FramesAt(12549), 1);
  EXPECT_EQ(s.FramesAt(12699), 8);
  EXPECT_EQ(s.FramesAt(12724), 1);
}

TEST(FrameScheduleTest, OneFrameCeilingMeansSingleImagesOnly) {
  FrameSchedule s;
  s.single_steps = 0;
  s.clip_fraction = 1.0;
  s.max_frames = 1;
  for (int64_t step = 0; step < 1000; ++step) ASSERT_EQ(s.FramesAt(step), 1);
}

TEST(KindMixTest, EqualWeightsKeepTheUnweightedItemStream) {
  KindMix mix;
  for (int64_t base : {0, 1, 777, 123456}) EXPECT_EQ(mix.ItemIndex(base, 8, DemoVqaOptions()), base);
  ASSERT_TRUE(mix.Set("count=2.5").ok());
  ASSERT_TRUE(mix.Set("color_of_shape=2.5").ok());
  ASSERT_TRUE(mix.Set("shape_at=2.5").ok());
  ASSERT_TRUE(mix.Set("digit_in_box=2.5").ok());
  EXPECT_EQ(mix.ItemIndex(42, 1, DemoVqaOptions()), 42);
}

TEST(KindMixTest, KindsComeUpInProportionToTheirWeights) {
  KindMix mix;
  ASSERT_TRUE(mix.Set("count=3").ok());
  ASSERT_TRUE(mix.Set("digit_in_box=0").ok());
  ASSERT_TRUE(mix.Validate().ok());
  std::map<vqa::QuestionKind, int> seen;
  const int n = 3000;
  for (int64_t base = 0; base < n; ++base) {
    const int64_t index = mix.ItemIndex(base, 4, DemoVqaOptions());
    EXPECT_EQ(index, mix.ItemIndex(base, 4, DemoVqaOptions())) << "not deterministic";
    ++seen[vqa::MakeItem(vqa::Split::kTrain, index, 4, DemoVqaOptions()).question.kind];
  }
  // Weights 1, 1, 0, 3 over kinds drawn uniformly: shares 1/5, 1/5, 0, 3/5.
  EXPECT_EQ(seen[vqa::QuestionKind::kDigitInBox], 0);
  EXPECT_NEAR(seen[vqa::QuestionKind::kCount] / static_cast<double>(n), 0.6, 0.03);
  EXPECT_NEAR(seen[vqa::QuestionKind::kShapeAt] / static_cast<double>(n), 0.2, 0.03);
  EXPECT_NEAR(seen[vqa::QuestionKind::kColorOfShape] / static_cast<double>(n), 0.2, 0.03);
}

TEST(KindMixTest, RejectsMalformedAndImpossibleWeights) {
  KindMix mix;
  EXPECT_EQ(mix.Set("count").code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(mix.Set("colour=2").code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(mix.Set("count=-1").code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(mix.Set("count=lots").code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(mix.Set("count=inf").code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(mix.Set("count=nan").code(), absl::StatusCode::kInvalidArgument);
  for (const char* k : {"count=0", "shape_at=0", "digit_in_box=0", "color_of_shape=0"}) {
    ASSERT_TRUE(mix.Set(k).ok()) << k;
  }
  EXPECT_EQ(mix.Validate().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace vlc::train
