// Cache policies: plain functions from a prompt's shape and its prefill observations to a keep
// plan. VL-Cache (sparsity-aware per-layer budgets, post-vision attention scores) and the
// baselines of docs/METHODS.md ("VL-Cache and the baseline policies"), all under the same
// accounting: a budget ratio alpha keeps sum_l k[l] == max(1, round(alpha * m)) * L prompt tokens
// in total (the paper's unrenormalised VL-Cache excepted, whose total may drift, and
// vlcache-guard, which keeps more when its guarded tokens or floor need more).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>

#include "absl/status/statusor.h"
#include "kvcache/plan.h"

namespace vlc::kvcache {

struct PolicyConfig {
  // full, vlcache, vlcache-guard, snapkv, pyramidkv, h2o, streamingllm, random
  std::string name = "full";
  double budget = 0.1;  // alpha in (0, 1]: fraction of the prompt's KV kept (the paper's 10%); full ignores it

  // Size rule (every policy but full): a prompt shorter than this many tokens is not compressed,
  // since the pages it would free are fewer than the rounding to whole pages keeps. 0: none.
  int min_prompt_tokens = 0;

  // vlcache, vlcache-guard
  double sparsity_threshold = 0.01;  // p: an entry is sparse when A < p * rowmax
  double clip_floor = 0.01;          // beta[l] >= clip_floor
  bool renormalize = true;           // water-filling so the total is exact (false: the paper's)
  int max_scoring_queries = 0;       // > 0: score with at most the last N prompt rows (speed mode)
  bool sparsity_budgets = true;      // false: the same budget in every layer (the step 2 ablation)
  // vlcache-guard: kept in every layer whatever their scores: the first `sinks` tokens and the
  // prompt's last guard_window tokens (within the text after the media: the template's tail,
  // which the end of the answer follows); every layer keeps at least min_layer_tokens (one page
  // of the default size, which a layer holds anyway) and at least the guarded ones. Measured on
  // the demo model (docs/BENCHMARKS.md): guarding the whole question crowds out the visual tokens
  // a small budget needs.
  int guard_window = 4;
  int min_layer_tokens = 16;
  // vlcache-guard scores positions with the attention of the prompt's last guard_scoring_rows rows
  // only (default 4, the template's tail that the answer follows), not every row after the media
  // as vlcache does: those rows decide the answer's first tokens, and the question's earlier rows
  // attend to what they name, not to what the answer needs. 0: every row after the media.
  // Measured on the demo model and a fine-tuned one (docs/BENCHMARKS.md, "Compression by
  // default").
  int guard_scoring_rows = 4;
  // vlcache, h2o, random: the last floor(recent_fraction * k[l]) prompt tokens are always kept
  double recent_fraction = 0.1;
  // snapkv, pyramidkv
  int window = 32;        // observation window (last rows), always kept
  int kernel = 5;         // 1-D average pooling over keys (padding kernel / 2)
  double pyramid_beta = 20;
  // streamingllm, vlcache-guard
  int sinks = 4;
  // random
  uint64_t seed = 0;

  // INVALID_ARGUMENT naming the field: unknown policy, budget outside (0, 1], and the rest.
  absl::Status Validate() const;
};

// The names Validate accepts, for help texts and error messages.
const std::vector<std::string>& PolicyNames();

struct PromptShape {
  int64_t length = 0;  // m
  int layers = 0;
  int heads = 0;
  int kv_heads = 0;
  std::vector<uint8_t> visual;  // [m]: 1 where the prompt position is a visual token
};

// The rows every layer's prefill must observe for `policy` (disabled for policies that need no
// attention: full, streamingllm, random).
ObservationSpec ObservationFor(const PolicyConfig& policy, const PromptShape& shape);

// The plan for a prompt; `observations` has one entry per layer when ObservationFor is enabled.
absl::StatusOr<KeepPlan> MakeKeepPlan(const PolicyConfig& policy, const PromptShape& shape,
                                      const std::vector<LayerObservation>& observations);

// ---- The formulas, exposed for tests and benchmarks.

// VL-Cache step 2: tokens per layer from layer densities d[l] = 1 - gamma[l].
std::vector<int64_t> VlCacheBudgets(const std::vector<double>& density, int64_t m, double alpha,
                                    double clip_floor, bool renormalize);

// vlcache-guard's positions that every layer keeps: [0, sinks) and [guard_begin, m).
struct GuardedSpan {
  int64_t sinks = 0;
  int64_t guard_begin = 0;
  int64_t count(int64_t m) const { return sinks + (m - guard_begin); }
};
GuardedSpan GuardedPositions(const PolicyConfig& policy, const PromptShape& shape);

// vlcache-guard's tokens per layer: every layer keeps at least `floor` (>= the guarded count);
// the total is max(b * L, floor * L) for the baselines' b, shared by density as in VlCacheBudgets
// (each layer within [max(floor, clip_floor * m), m]) or evenly when `by_density` is false.
std::vector<int64_t> GuardBudgets(const std::vector<double>& density, int64_t m, double alpha,
                                  int64_t floor, double clip_floor, bool by_density);

// Whether a prompt of `length` tokens is compressed under `policy` (the size rule).
bool Compresses(const PolicyConfig& policy, int64_t length);

// PyramidKV's schedule: tokens per layer for a uniform budget C, window w, beta.
std::vector<int64_t> PyramidBudgets(int64_t m, int64_t budget, int layers, int window,
                                    double beta);

// Per KV head score from per query head scores [heads, m]: the mean over each GQA group.
at::Tensor GroupMean(const at::Tensor& head_scores, int kv_heads);

// SnapKV's pooling: 1-D average pool along the last dim, kernel k, padding k / 2, stride 1,
// zeros padded and counted (PyTorch's avg_pool1d default).
at::Tensor AvgPool1d(const at::Tensor& scores, int kernel);

// Positions kept per KV head: the last `recent` of [0, m) always, then the `keep - recent`
// highest `scores` [kv_heads, m] among the others (ties: lower position first), ascending. The
// result lives on the scores' device: a GPU's scores go through the CUDA kernel
// (kvcache/cuda_ops.h); GroupMean and AvgPool1d are plain ATen, so observations made on a GPU
// become a plan there.
at::Tensor TopKWithRecent(const at::Tensor& scores, int64_t keep, int64_t recent);

}  // namespace vlc::kvcache
