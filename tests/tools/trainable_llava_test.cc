// The trainable LLaVA computes the engine's function (checked through an exported checkpoint that
// the engine loads), learns, and resumes from its training state exactly.
#include "tools/train/trainable_llava.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>
#include <gtest/gtest.h>
#include <torch/optim/adamw.h>

#include <chrono>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "common/fs.h"
#include "engine/generator.h"
#include "engine/model.h"
#include "kvcache/page_pool.h"
#include "kvcache/paged_cache.h"
#include "kvcache/policy.h"
#include "tests/engine/test_models.h"

#ifdef VLC_TRAIN_TEST_PIPELINE
#include <opencv2/imgcodecs.hpp>

#include "engine/pipeline.h"
#include "tools/make_tiny.h"
#endif

namespace vlc::train {
namespace {

using engine::LlavaConfig;
using engine::LlavaModel;

// A private directory removed at the end of the test.
class TempDir {
 public:
  TempDir() : path_(MakeTempDir("vlcache-train-")) { EXPECT_FALSE(path_.empty()); }
  ~TempDir() { RemoveTree(path_); }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

std::unique_ptr<TrainableLlava> Create(const LlavaConfig& c) {
  auto m = TrainableLlava::Create(c);
  EXPECT_TRUE(m.ok()) << m.status();
  return m.ok() ? std::move(m).value() : nullptr;
}

// Init, then noise on every tensor, norms and biases included: a tensor the forward misused or
// the export misnamed would then change the logits.
void RandomizeAll(TrainableLlava* m, uint64_t seed) {
  m->Init(seed, 0.1f);
  at::NoGradGuard no_grad;
  at::Generator gen = at::detail::createCPUGenerator(seed + 1000);
  for (auto& [name, t] : m->named_tensors()) {
    at::Tensor tensor = t;
    tensor.add_(at::normal(0.0, 0.1, tensor.sizes(), gen));
  }
}

at::Tensor Pixels(int64_t n, const LlavaConfig& c, uint64_t seed) {
  at::Generator gen = at::detail::createCPUGenerator(seed);
  return at::normal(0.0, 1.0, {n, c.vision.num_channels, c.vision.image_size, c.vision.image_size},
                    gen);
}

// Text ids in [3, 90) around `images` runs of image tokens.
std::vector<int> Prompt(const LlavaConfig& c, int images, int text_between, int seed) {
  std::vector<int> ids = {1};
  for (int img = 0; img <= images; ++img) {
    for (int i = 0; i < text_between; ++i) ids.push_back(3 + (seed * 7 + img * 5 + i * 13) % 87);
    if (img < images) {
      for (int i = 0; i < c.visual_tokens_per_image(); ++i) ids.push_back(c.image_token_index);
    }
  }
  return ids;
}

// The engine's logits [T, vocab] for one sequence, the way the server computes them.
at::Tensor EngineLogits(const LlavaModel& m, const std::vector<int>& ids,
                        const at::Tensor& pixels) {
  at::Tensor visual;
  if (pixels.defined() && pixels.size(0) > 0) {
    auto v = m.EncodeImages(pixels);
    EXPECT_TRUE(v.ok()) << v.status();
    visual = *v;
  }
  auto embeds = m.EmbedPrompt(ids, visual);
  EXPECT_TRUE(embeds.ok()) << embeds.status();
  auto logits = m.ForwardFull(*embeds);
  EXPECT_TRUE(logits.ok()) << logits.status();
  return *logits;
}

struct Variant {
  std::string name;
  std::string strategy;
  std::string text_type;
  int sliding_window;
  bool tie_embeddings;
  bool projector_bias;
  int vision_layers;
  int feature_layer;
};

void PrintTo(const Variant& v, std::ostream* os) { *os << v.name; }

LlavaConfig VariantConfig(const Variant& v) {
  LlavaConfig c = engine::SmallConfig(v.text_type, v.sliding_window);
  c.vision.num_hidden_layers = v.vision_layers;
  c.vision_feature_layer = v.feature_layer;
  c.vision_feature_select_strategy = v.strategy;
  c.text.tie_word_embeddings = v.tie_embeddings;
  c.multimodal_projector_bias = v.projector_bias;
  return c;
}

class TrainableLlavaParity : public ::testing::TestWithParam<Variant> {};

TEST_P(TrainableLlavaParity, ExportedCheckpointGivesTheSameLogitsForOneSequenceAndAPaddedBatch) {
  const LlavaConfig c = VariantConfig(GetParam());
  ASSERT_LT(c.text.num_key_value_heads, c.text.num_attention_heads);  // GQA is exercised
  auto m = Create(c);
  ASSERT_NE(m, nullptr);
  RandomizeAll(m.get(), 5);
  TempDir dir;
  ASSERT_TRUE(m->Export(dir.path()).ok());
  auto engine = LlavaModel::Load(dir.path());
  ASSERT_TRUE(engine.ok()) << engine.status();

  // Three images in a sequence longer than one attention block (64 rows), one image, and text
  // only; the padding id is the image token, which must not count as one past a sequence's end.
  const std::vector<std::vector<int>> seqs = {Prompt(c, 3, 12, 1), Prompt(c, 1, 3, 2),
                                              Prompt(c, 0, 5, 3)};
  ASSERT_GT(seqs[0].size(), 90u);
  const std::vector<int64_t> images = {3, 1, 0};
  const at::Tensor pixels = Pixels(4, c, 11);
  std::vector<at::Tensor> own_pixels = {pixels.slice(0, 0, 3), pixels.slice(0, 3, 4), at::Tensor()};

  // Alone.
  for (size_t b = 0; b < seqs.size(); ++b) {
    auto [ids, lengths] = PadSequences({seqs[b]});
    auto logits = m->Forward({own_pixels[b], ids, lengths, {images[b]}});
    ASSERT_TRUE(logits.ok()) << logits.status();
    const at::Tensor want = EngineLogits(**engine, seqs[b], own_pixels[b]);
    ASSERT_EQ((*logits)[0].sizes(), want.sizes());
    EXPECT_GT(want.abs().max().item<double>(), 0.1);  // not a trivially small function
    EXPECT_LT(((*logits)[0] - want).abs().max().item<double>(), 1e-4) << "sequence " << b;
  }

  // Together, right-padded.
  auto [ids, lengths] = PadSequences(seqs, c.image_token_index);
  ASSERT_GT(ids.size(1), lengths[1]);
  auto logits = m->Forward({pixels, ids, lengths, images});
  ASSERT_TRUE(logits.ok()) << logits.status();
  for (size_t b = 0; b < seqs.size(); ++b) {
    const at::Tensor want = EngineLogits(**engine, seqs[b], own_pixels[b]);
    const at::Tensor got = (*logits)[b].slice(0, 0, lengths[b]);
    EXPECT_LT((got - want).abs().max().item<double>(), 1e-4) << "sequence " << b;
  }
}

INSTANTIATE_TEST_SUITE_P(
    Configs, TrainableLlavaParity,
    ::testing::Values(Variant{"DefaultStrategy", "default", "llama", 0, false, true, 3, -2},
                      Variant{"FullStrategy", "full", "llama", 0, false, true, 3, -2},
                      // A window shorter than the prompts, tied embeddings, no projector bias, and
                      // a feature layer counted from the front.
                      Variant{"MistralWindowTiedNoProjectorBias", "default", "mistral", 7, true,
                              false, 2, 1}),
    [](const ::testing::TestParamInfo<Variant>& info) { return info.param.name; });

TEST(TrainableLlava, RejectsMismatchedImageTokensAndIdsOutsideTheVocabulary) {
  const LlavaConfig c = engine::SmallConfig();
  auto m = Create(c);
  ASSERT_NE(m, nullptr);
  auto [ids, lengths] = PadSequences({Prompt(c, 1, 2, 1)});
  auto two_images = m->Forward({Pixels(2, c, 1), ids, lengths, {2}});
  EXPECT_EQ(two_images.status().code(), absl::StatusCode::kInvalidArgument);
  auto unowned = m->Forward({Pixels(2, c, 1), ids, lengths, {1}});
  EXPECT_EQ(unowned.status().code(), absl::StatusCode::kInvalidArgument);
  auto bad = PadSequences({{1, c.text.vocab_size + 3, 4}});
  auto outside = m->Forward({at::Tensor(), bad.first, bad.second, {0}});
  EXPECT_EQ(outside.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(m->Forward({Pixels(1, c, 1), ids, lengths, {1}}).ok());
}

TEST(TrainableLlava, DecoderVisualOutIsTheImagePositionsAfterTheChosenLayerOnly) {
  const LlavaConfig c = engine::SmallConfig();
  ASSERT_GE(c.text.num_hidden_layers, 2);
  auto m = Create(c);
  ASSERT_NE(m, nullptr);
  RandomizeAll(m.get(), 5);
  // Two sequences, right-padded: two images, then one.
  auto [ids, lengths] = PadSequences({Prompt(c, 2, 3, 1), Prompt(c, 1, 2, 2)});
  const TrainBatch batch{Pixels(3, c, 4), ids, lengths, {2, 1}};
  at::Tensor visual, hidden;
  auto logits = m->Forward(batch, &visual, &hidden, 0);
  ASSERT_TRUE(logits.ok()) << logits.status();
  ASSERT_TRUE(hidden.defined());
  EXPECT_EQ(hidden.size(0), 3 * c.visual_tokens_per_image());
  EXPECT_EQ(hidden.size(1), c.text.hidden_size);
  EXPECT_EQ(hidden.sizes(), visual.sizes());
  // Layer 0 added something to what the projector fed it.
  EXPECT_GT((hidden - visual).abs().max().item<double>(), 1e-3);

  // A loss on it trains the layers up to the chosen one and nothing after.
  hidden.pow(2).sum().backward();
  const std::string last = "lm.layers." + std::to_string(c.text.num_hidden_layers - 1) + ".";
  int first_with_grad = 0, later_with_grad = 0;
  for (const auto& [name, t] : m->named_tensors()) {
    const bool has = t.grad().defined() && t.grad().abs().sum().item<double>() > 0;
    if (name.rfind("lm.layers.0.", 0) == 0) first_with_grad += has;
    if (name.rfind(last, 0) == 0) later_with_grad += has;
  }
  EXPECT_GT(first_with_grad, 0);
  EXPECT_EQ(later_with_grad, 0);

  EXPECT_EQ(m->Forward(batch, nullptr, &hidden, c.text.num_hidden_layers).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(m->Forward(batch, nullptr, &hidden, -1).status().code(),
            absl::StatusCode::kInvalidArgument);
}

// A compressed batch computes what the server does: prefill the prompt with the policy's
// observation, plan, compact the paged cache, then decode the answer one token at a time. The
// trainer's observations must equal the engine's, and its logits at the answer's rows the engine's
// decode logits, which a mask on the wrong head, layer or rows could not fake.
TEST(TrainableLlava, CompressedBatchEqualsDecodingThroughACompactedCache) {
  const LlavaConfig c = engine::SmallConfig("llama", 0, 3);
  auto m = Create(c);
  ASSERT_NE(m, nullptr);
  RandomizeAll(m.get(), 9);
  TempDir dir;
  ASSERT_TRUE(m->Export(dir.path()).ok());
  auto engine = LlavaModel::Load(dir.path());
  ASSERT_TRUE(engine.ok()) << engine.status();

  // Sequence 0: three images and a question (past one 64-row attention block), then a 10-token
  // answer, compressed. Sequence 1: one image, not compressed, shorter (padding).
  const std::vector<int> prompt = Prompt(c, 3, 12, 1);
  const int64_t n = static_cast<int64_t>(prompt.size());
  ASSERT_GT(n, 64);
  std::vector<int> answer;
  for (int i = 0; i < 10; ++i) answer.push_back(3 + (i * 11) % 80);
  std::vector<int> seq0 = prompt;
  seq0.insert(seq0.end(), answer.begin(), answer.end());
  const std::vector<int> seq1 = Prompt(c, 1, 4, 2);
  const at::Tensor pixels = Pixels(4, c, 12);
  auto [ids, lengths] = PadSequences({seq0, seq1}, c.image_token_index);

  const kvcache::PromptShape shape = engine::PromptShapeOf(c, prompt);
  for (const char* policy : {"vlcache-guard", "snapkv", "vlcache"}) {
    SCOPED_TRACE(policy);
    kvcache::PolicyConfig pc;
    pc.name = policy;
    pc.budget = 0.3;
    pc.window = 8;
    const kvcache::ObservationSpec spec = kvcache::ObservationFor(pc, shape);
    ASSERT_TRUE(spec.enabled);

    // The engine: prefill with observation, plan, compact, decode the answer teacher-forced.
    auto visual = (*engine)->EncodeImages(pixels.slice(0, 0, 3));
    ASSERT_TRUE(visual.ok());
    auto embeds = (*engine)->EmbedPrompt(prompt, *visual);
    ASSERT_TRUE(embeds.ok());
    auto pool = engine::Pool(c);
    kvcache::PagedKvCache paged(c.text.num_hidden_layers, pool.get());
    ASSERT_TRUE(paged.AddSequence(1).ok());
    std::vector<kvcache::LayerObservation> engine_obs;
    auto first = (*engine)->Prefill(1, *embeds, 0, &paged, false, &spec, &engine_obs);
    ASSERT_TRUE(first.ok()) << first.status();
    auto plan = kvcache::MakeKeepPlan(pc, shape, engine_obs);
    ASSERT_TRUE(plan.ok()) << plan.status();
    ASSERT_TRUE(paged.Compact(1, *plan).ok());
    std::vector<at::Tensor> want = {(*first)[0]};
    for (size_t i = 0; i + 1 < answer.size(); ++i) {
      auto step = (*engine)->DecodeStep({1}, {answer[i]}, {n + static_cast<int64_t>(i)}, &paged);
      ASSERT_TRUE(step.ok()) << step.status();
      want.push_back((*step)[0]);
    }

    // The trainer: the same observations, hence the same plan, then one compressed forward.
    TrainBatch batch{pixels, ids, lengths, {3, 1}};
    auto obs = m->ObservePrompts(batch, {n, 0}, {spec, kvcache::ObservationSpec{}});
    ASSERT_TRUE(obs.ok()) << obs.status();
    ASSERT_EQ((*obs)[0].size(), engine_obs.size());
    EXPECT_TRUE((*obs)[1].empty());
    for (size_t l = 0; l < engine_obs.size(); ++l) {
      EXPECT_LT(((*obs)[0][l].col_sums - engine_obs[l].col_sums).abs().max().item<double>(), 1e-4);
      ASSERT_EQ((*obs)[0][l].sparse_counts.defined(), engine_obs[l].sparse_counts.defined());
      if (spec.sparsity) {
        EXPECT_TRUE((*obs)[0][l].sparse_counts.equal(engine_obs[l].sparse_counts)) << "layer " << l;
      }
      EXPECT_EQ((*obs)[0][l].causal_entries, engine_obs[l].causal_entries);
    }
    auto own_plan = kvcache::MakeKeepPlan(pc, shape, (*obs)[0]);
    ASSERT_TRUE(own_plan.ok());
    for (size_t l = 0; l < plan->layers.size(); ++l) {
      ASSERT_EQ(own_plan->layers[l].keep, plan->layers[l].keep);
      ASSERT_TRUE(own_plan->layers[l].positions.defined());
      ASSERT_TRUE(own_plan->layers[l].positions.equal(plan->layers[l].positions)) << "layer " << l;
    }
    batch.prompt_lengths = {n, 0};
    batch.plans = {*own_plan, kvcache::KeepPlan{}};
    auto logits = m->Forward(batch);
    ASSERT_TRUE(logits.ok()) << logits.status();
    auto full = m->Forward(TrainBatch{pixels, ids, lengths, {3, 1}});
    ASSERT_TRUE(full.ok());
    double worst = 0, changed = 0;
    for (size_t i = 0; i < want.size(); ++i) {
      const auto row = (*logits)[0][n - 1 + static_cast<int64_t>(i)];
      worst = std::max(worst, (row - want[i]).abs().max().item<double>());
      changed = std::max(
          changed, (row - (*full)[0][n - 1 + static_cast<int64_t>(i)]).abs().max().item<double>());
    }
    EXPECT_LT(worst, 1e-4);
    EXPECT_GT(changed, 1e-2);  // the eviction mattered to the answer's rows
    // The prompt's rows and the uncompressed sequence are untouched.
    EXPECT_LT(((*logits)[0].slice(0, 0, n) - (*full)[0].slice(0, 0, n)).abs().max().item<double>(),
              1e-5);
    EXPECT_LT(((*logits)[1].slice(0, 0, lengths[1]) - (*full)[1].slice(0, 0, lengths[1]))
                  .abs()
                  .max()
                  .item<double>(),
              1e-5);
  }
}

TEST(TrainableLlava, RejectsACompressedBatchWhosePlansDoNotFit) {
  const LlavaConfig c = engine::SmallConfig();
  auto m = Create(c);
  ASSERT_NE(m, nullptr);
  auto [ids, lengths] = PadSequences({Prompt(c, 1, 3, 1)});
  const int64_t n = lengths[0] - 2;
  kvcache::KeepPlan plan;
  plan.layers.resize(c.text.num_hidden_layers);
  TrainBatch batch{Pixels(1, c, 1), ids, lengths, {1}};
  batch.prompt_lengths = {n};
  batch.plans = {plan};
  EXPECT_TRUE(m->Forward(batch).ok());  // undefined positions: every layer keeps all
  plan.layers[0].positions = at::tensor({0, int(n)}, at::kLong)
                                 .view({1, 2})
                                 .expand({c.text.num_key_value_heads, 2})
                                 .contiguous();  // position n is not in the prompt
  batch.plans = {plan};
  auto bad = m->Forward(batch);
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(bad.status().message().find("within the prompt"), std::string::npos) << bad.status();
  batch.plans.clear();
  EXPECT_EQ(m->Forward(batch).status().code(), absl::StatusCode::kInvalidArgument);
  batch.prompt_lengths = {lengths[0] + 1};
  batch.plans = {kvcache::KeepPlan{}};
  EXPECT_EQ(m->Forward(batch).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(m->ObservePrompts(batch, {n}, {}).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(TrainableLlava, RejectsAnInvalidConfig) {
  LlavaConfig c = engine::SmallConfig();
  c.text.num_key_value_heads = 3;  // does not divide 4 query heads
  EXPECT_EQ(TrainableLlava::Create(c).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(TrainableLlava, LossIsTheMeanCrossEntropyOverMaskedPositionsOnly) {
  at::manual_seed(3);
  auto logits = at::randn({2, 4, 10});
  auto targets = at::randint(0, 10, {2, 4}, at::kLong);
  targets[1][3] = -7;  // unmasked: any value is ignored
  auto mask = at::zeros({2, 4}, at::kBool);
  mask[0][1] = true;
  mask[1][2] = true;
  auto loss = TrainableLlava::Loss(logits, targets, mask);
  ASSERT_TRUE(loss.ok()) << loss.status();
  auto lp = at::log_softmax(logits, -1);
  const double want = -0.5 * (lp[0][1][targets[0][1].item<int64_t>()].item<double>() +
                              lp[1][2][targets[1][2].item<int64_t>()].item<double>());
  EXPECT_NEAR(loss->item<double>(), want, 1e-6);
  EXPECT_EQ(TrainableLlava::Loss(logits, targets, at::zeros({2, 4}, at::kBool)).status().code(),
            absl::StatusCode::kInvalidArgument);
  mask[1][3] = true;  // now the -7 counts
  EXPECT_EQ(TrainableLlava::Loss(logits, targets, mask).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(TrainableLlava, PerItemLossAveragesEachRowFirst) {
  at::manual_seed(4);
  auto logits = at::randn({3, 5, 10});
  auto targets = at::randint(0, 10, {3, 5}, at::kLong);
  auto mask = at::zeros({3, 5}, at::kBool);
  mask[0][0] = true;  // row 0: one position
  for (int t = 1; t < 5; ++t) mask[1][t] = true;  // row 1: four; row 2: none
  auto lp = at::log_softmax(logits, -1);
  auto nll = [&](int b, int t) { return -lp[b][t][targets[b][t].item<int64_t>()].item<double>(); };
  const double row1 = (nll(1, 1) + nll(1, 2) + nll(1, 3) + nll(1, 4)) / 4;
  auto item = TrainableLlava::Loss(logits, targets, mask, TrainableLlava::Weighting::kPerItem);
  ASSERT_TRUE(item.ok()) << item.status();
  EXPECT_NEAR(item->item<double>(), 0.5 * (nll(0, 0) + row1), 1e-6);
  auto token = TrainableLlava::Loss(logits, targets, mask, TrainableLlava::Weighting::kPerToken);
  ASSERT_TRUE(token.ok()) << token.status();
  EXPECT_NEAR(token->item<double>(), (nll(0, 0) + 4 * row1) / 5, 1e-6);
}

// Three fixed images, each answered by its own token after the same question token: only a model
// that looks at the image gets below ln 3.
struct Toy {
  TrainBatch batch;
  at::Tensor targets, mask;
  std::vector<int64_t> answers = {20, 30, 40};
  int64_t question_pos = 0;
};

Toy MakeToy(const LlavaConfig& c) {
  Toy toy;
  std::vector<std::vector<int>> seqs;
  for (int64_t answer : toy.answers) {
    std::vector<int> s = {1};
    for (int i = 0; i < c.visual_tokens_per_image(); ++i) s.push_back(c.image_token_index);
    s.push_back(7);
    s.push_back(static_cast<int>(answer));
    seqs.push_back(s);
  }
  auto [ids, lengths] = PadSequences(seqs);
  toy.batch = {Pixels(3, c, 42), ids, lengths, {1, 1, 1}};
  toy.question_pos = ids.size(1) - 2;
  toy.targets = at::zeros_like(ids);
  toy.mask = at::zeros(ids.sizes(), at::kBool);
  for (int b = 0; b < 3; ++b) {
    toy.targets[b][toy.question_pos] = toy.answers[b];
    toy.mask[b][toy.question_pos] = true;
  }
  return toy;
}

double TrainStep(TrainableLlava* m, torch::optim::AdamW* opt, const Toy& toy) {
  opt->zero_grad();
  auto logits = m->Forward(toy.batch);
  EXPECT_TRUE(logits.ok()) << logits.status();
  auto loss = TrainableLlava::Loss(*logits, toy.targets, toy.mask);
  EXPECT_TRUE(loss.ok()) << loss.status();
  loss->backward();
  opt->step();
  return loss->item<double>();
}

LlavaConfig ToyConfig() {
  LlavaConfig c = engine::SmallConfig();
  c.vision_feature_layer = -2;
  return c;
}

TEST(TrainableLlava, HundredAdamWStepsLearnAnImageDependentAnswer) {
  at::set_num_threads(1);  // the fastest setting here (see trainable_llava.h)
  const LlavaConfig c = ToyConfig();
  auto m = Create(c);
  ASSERT_NE(m, nullptr);
  m->Init(1, 0.02f);
  auto opt = m->NewAdamW({/*lr=*/3e-3, 0.9, 0.95, 1e-8, /*weight_decay=*/0.0});
  const Toy toy = MakeToy(c);
  const auto start = std::chrono::steady_clock::now();
  const double before = TrainStep(m.get(), opt.get(), toy);
  double after = before;
  for (int step = 1; step < 100; ++step) after = TrainStep(m.get(), opt.get(), toy);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  // Random init is near ln(96) = 4.56; ignoring the image cannot go below ln(3) = 1.10.
  EXPECT_GT(before, 3.5);
  EXPECT_LT(after, 0.3);
  EXPECT_LT(seconds, 20.0);
  auto logits = m->Forward(toy.batch);
  ASSERT_TRUE(logits.ok());
  for (int b = 0; b < 3; ++b) {
    EXPECT_EQ((*logits)[b][toy.question_pos].argmax().item<int64_t>(), toy.answers[b]);
  }
  std::cout << "loss " << before << " -> " << after << " in 100 steps, " << seconds << " s\n";
}

TEST(TrainableLlava, SavedStateResumesExactlyWhereItStopped) {
  at::set_num_threads(1);
  const LlavaConfig c = ToyConfig();
  const Toy toy = MakeToy(c);
  const AdamWSettings settings{1e-3, 0.9, 0.95, 1e-8, 0.1};
  auto a = Create(c);
  ASSERT_NE(a, nullptr);
  a->Init(1, 0.02f);
  auto opt_a = a->NewAdamW(settings);
  TrainStep(a.get(), opt_a.get(), toy);
  TrainStep(a.get(), opt_a.get(), toy);
  TempDir dir;
  const std::string path = dir.path() + "/state.pt";
  ASSERT_TRUE(a->SaveState(path, *opt_a, 2).ok());

  auto b = Create(c);
  ASSERT_NE(b, nullptr);
  b->Init(99, 0.02f);
  auto opt_b = b->NewAdamW(settings);
  auto step = b->LoadState(path, opt_b.get());
  ASSERT_TRUE(step.ok()) << step.status();
  EXPECT_EQ(*step, 2);
  ASSERT_EQ(a->named_tensors().size(), b->named_tensors().size());
  for (size_t i = 0; i < a->named_tensors().size(); ++i) {
    EXPECT_TRUE(at::equal(a->named_tensors()[i].second, b->named_tensors()[i].second))
        << a->named_tensors()[i].first;
  }
  ASSERT_FALSE(opt_b->state().empty());
  for (const auto& entry : opt_b->state()) {
    EXPECT_EQ(static_cast<const torch::optim::AdamWParamState&>(*entry.second).step(), 2);
  }

  TrainStep(a.get(), opt_a.get(), toy);
  TrainStep(b.get(), opt_b.get(), toy);
  for (size_t i = 0; i < a->named_tensors().size(); ++i) {
    EXPECT_TRUE(at::equal(a->named_tensors()[i].second, b->named_tensors()[i].second))
        << a->named_tensors()[i].first;
  }

  LlavaConfig other = c;
  other.text.num_hidden_layers = 1;
  auto d = Create(other);
  ASSERT_NE(d, nullptr);
  auto opt_d = d->NewAdamW(settings);
  EXPECT_EQ(d->LoadState(path, opt_d.get()).status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(d->LoadState(dir.path() + "/absent.pt", opt_d.get()).status().code(),
            absl::StatusCode::kNotFound);
}

TEST(TrainableLlava, FromCheckpointReadsBackWhatExportWrote) {
  const LlavaConfig c = VariantConfig({"", "full", "llama", 0, false, true, 3, -2});
  auto m = Create(c);
  ASSERT_NE(m, nullptr);
  RandomizeAll(m.get(), 8);
  TempDir dir;
  ASSERT_TRUE(m->Export(dir.path()).ok());
  ASSERT_TRUE(m->Export(dir.path()).ok());  // over an earlier export
  auto back = TrainableLlava::FromCheckpoint(dir.path());
  ASSERT_TRUE(back.ok()) << back.status();
  ASSERT_EQ((*back)->named_tensors().size(), m->named_tensors().size());
  for (size_t i = 0; i < m->named_tensors().size(); ++i) {
    EXPECT_EQ((*back)->named_tensors()[i].first, m->named_tensors()[i].first);
    EXPECT_TRUE(at::equal((*back)->named_tensors()[i].second, m->named_tensors()[i].second))
        << m->named_tensors()[i].first;
  }
  // The vision layer past the feature layer is exported but does not train.
  EXPECT_LT((*back)->parameters().size(), (*back)->named_tensors().size());
  EXPECT_EQ((*back)->NumTrainableParameters(), m->NumTrainableParameters());
}

#ifdef VLC_TRAIN_TEST_PIPELINE
TEST(TrainableLlava, ExportWithMakeTinysConfigAndTokenizerServesThroughThePipeline) {
  TempDir dir;
  const std::string tiny = dir.path() + "/tiny", out = dir.path() + "/trained";
  ASSERT_TRUE(tools::MakeTinyCheckpoint(tiny, {}).ok());
  auto config = LlavaConfig::FromFile(tiny + "/config.json");
  ASSERT_TRUE(config.ok()) << config.status();
  auto m = Create(*config);
  ASSERT_NE(m, nullptr);
  m->Init(4, 0.02f);
  ASSERT_TRUE(m->Export(out, tiny + "/tokenizer.model").ok());

  engine::PipelineOptions options;
  options.num_threads = 1;
  options.kv_cache_bytes = int64_t{16} << 20;
  auto pipeline = engine::Pipeline::Load(out, options);
  ASSERT_TRUE(pipeline.ok()) << pipeline.status();
  cv::Mat image(40, 48, CV_8UC3, cv::Scalar(20, 120, 200));
  std::vector<uchar> png;
  ASSERT_TRUE(cv::imencode(".png", image, png));
  engine::GenerateRequest request;
  request.media.images = {std::string(png.begin(), png.end())};
  request.prompt = "what is shown in the image?";
  request.sampling.max_new_tokens = 3;
  request.sampling.ignore_eos = true;
  auto response = (*pipeline)->Generate(request);
  ASSERT_TRUE(response.ok()) << response.status();
  EXPECT_EQ(response->visual_tokens, config->visual_tokens_per_image());
  EXPECT_EQ(response->generated_tokens, 3);
}
#endif

}  // namespace
}  // namespace vlc::train
