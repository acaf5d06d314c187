// Choosing the next token from logits: greedy, or temperature / top-k / top-p sampling from a
// seeded generator, so that the same seed gives the same text.
#pragma once

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "absl/status/status.h"

namespace vlc::engine {

struct SamplingParams {
  int max_new_tokens = 128;
  float temperature = 0.0f;  // <= 0: greedy
  float top_p = 1.0f;        // (0, 1]: nucleus size
  int top_k = 0;             // 0: no limit
  uint64_t seed = 0;
  std::vector<std::string> stop;  // generation ends before the first occurrence of any of these
  bool ignore_eos = false;

  // INVALID_ARGUMENT naming the parameter and its valid range.
  absl::Status Validate() const;
};

class Sampler {
 public:
  explicit Sampler(const SamplingParams& params);
  // Picks a token from `logits` (length `vocab`). Greedy ties go to the lowest id.
  int Sample(const float* logits, int vocab);

 private:
  SamplingParams params_;
  std::mt19937_64 rng_;
  std::vector<std::pair<float, int>> scratch_;
};

}  // namespace vlc::engine
