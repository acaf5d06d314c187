#include "engine/sampling.h"

#include <gtest/gtest.h>

#include <cmath>
#include <map>

namespace vlc::engine {
namespace {

TEST(Sampler, GreedyPicksTheArgmaxAndTheLowestIdOnTies) {
  Sampler s(SamplingParams{});
  std::vector<float> logits = {0.1f, 2.0f, -1.0f, 2.0f};
  EXPECT_EQ(s.Sample(logits.data(), 4), 1);
}

TEST(Sampler, TopKOneAndTinyTopPAreGreedy) {
  std::vector<float> logits = {0.3f, 0.1f, 0.9f, 0.5f};
  SamplingParams k1;
  k1.temperature = 1.0f;
  k1.top_k = 1;
  SamplingParams p0;
  p0.temperature = 1.0f;
  p0.top_p = 1e-6f;
  Sampler a(k1), b(p0);
  for (int i = 0; i < 50; ++i) {
    EXPECT_EQ(a.Sample(logits.data(), 4), 2);
    EXPECT_EQ(b.Sample(logits.data(), 4), 2);
  }
}

TEST(Sampler, FrequenciesFollowTheSoftmax) {
  std::vector<float> logits = {std::log(0.5f), std::log(0.3f), std::log(0.2f)};
  SamplingParams p;
  p.temperature = 1.0f;
  p.seed = 42;
  Sampler s(p);
  std::map<int, int> count;
  const int n = 20000;
  for (int i = 0; i < n; ++i) count[s.Sample(logits.data(), 3)]++;
  EXPECT_NEAR(count[0] / double(n), 0.5, 0.02);
  EXPECT_NEAR(count[1] / double(n), 0.3, 0.02);
  EXPECT_NEAR(count[2] / double(n), 0.2, 0.02);
}

TEST(Sampler, TopPKeepsTheSmallestNucleus) {
  // Probabilities 0.5, 0.3, 0.2: top_p 0.7 keeps the first two only.
  std::vector<float> logits = {std::log(0.5f), std::log(0.3f), std::log(0.2f)};
  SamplingParams p;
  p.temperature = 1.0f;
  p.top_p = 0.7f;
  Sampler s(p);
  std::map<int, int> count;
  for (int i = 0; i < 5000; ++i) count[s.Sample(logits.data(), 3)]++;
  EXPECT_EQ(count[2], 0);
  EXPECT_NEAR(count[0] / 5000.0, 0.5 / 0.8, 0.03);
}

TEST(Sampler, SameSeedSameDraws) {
  std::vector<float> logits(50);
  for (int i = 0; i < 50; ++i) logits[i] = std::sin(i * 1.3f);
  SamplingParams p;
  p.temperature = 0.8f;
  p.seed = 9;
  Sampler a(p), b(p);
  p.seed = 10;
  Sampler c(p);
  std::vector<int> da, db, dc;
  for (int i = 0; i < 100; ++i) {
    da.push_back(a.Sample(logits.data(), 50));
    db.push_back(b.Sample(logits.data(), 50));
    dc.push_back(c.Sample(logits.data(), 50));
  }
  EXPECT_EQ(da, db);
  EXPECT_NE(da, dc);
}

TEST(SamplingParams, ValidateNamesTheParameter) {
  SamplingParams p;
  p.max_new_tokens = 0;
  EXPECT_NE(p.Validate().message().find("max_new_tokens"), std::string::npos);
  p = SamplingParams{};
  p.temperature = -1;
  EXPECT_NE(p.Validate().message().find("temperature"), std::string::npos);
  p = SamplingParams{};
  p.top_k = -2;
  EXPECT_NE(p.Validate().message().find("top_k"), std::string::npos);
  p = SamplingParams{};
  p.stop = {""};
  EXPECT_FALSE(p.Validate().ok());
  EXPECT_TRUE(SamplingParams{}.Validate().ok());
}

}  // namespace
}  // namespace vlc::engine
