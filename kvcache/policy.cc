#include "kvcache/policy.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <random>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "kvcache/cuda_ops.h"
#include "common/status.h"

namespace vlc::kvcache {
namespace {

// Rows VL-Cache scores with when no text follows the media (docs/METHODS.md, "Observation
// during prefill").
constexpr int64_t kFallbackScoringRows = 32;

// Products like 0.29 * 100 land just below the integer they stand for; the slack keeps
// floor(fraction * k) at the value a reader computes by hand.
constexpr double kFloorSlack = 1e-9;

int64_t FloorFraction(double fraction, int64_t k) {
  return static_cast<int64_t>(std::floor(fraction * static_cast<double>(k) + kFloorSlack));
}

// The baselines' per-layer budget: max(1, round(alpha * m)), at most m.
int64_t UniformBudget(int64_t m, double alpha) {
  const int64_t k = std::max<int64_t>(1, std::llround(alpha * static_cast<double>(m)));
  return std::min(k, m);
}

std::string ShapeString(const at::Tensor& t) {
  if (!t.defined()) return "undefined";
  return absl::StrCat("[", absl::StrJoin(t.sizes(), ", "), "]");
}

bool IsVlCache(const std::string& name) { return name == "vlcache" || name == "vlcache-guard"; }

bool UsesObservations(const std::string& name) {
  return IsVlCache(name) || name == "h2o" || name == "snapkv" || name == "pyramidkv";
}

// The first row of the text VL-Cache scores with: one past the last visual token, or, when the
// prompt has no visual token or ends with one, the last min(32, m) rows.
int64_t ScoredTextBegin(const PromptShape& shape) {
  const int64_t m = std::max<int64_t>(0, shape.length);
  int64_t v = 0;  // first position after the last visual token; 0 when there is none
  const int64_t n = std::min<int64_t>(m, static_cast<int64_t>(shape.visual.size()));
  for (int64_t i = n - 1; i >= 0; --i) {
    if (shape.visual[i]) {
      v = i + 1;
      break;
    }
  }
  return (v == 0 || v == m) ? m - std::min(kFallbackScoringRows, m) : v;
}

// Densities as the budget rules read them: not positive (or NaN) is 0, all 0 is all 1.
std::vector<double> UsableDensities(const std::vector<double>& density) {
  std::vector<double> d(density.size());
  bool any = false;
  for (size_t l = 0; l < density.size(); ++l) {
    d[l] = density[l] > 0 ? density[l] : 0.0;
    any = any || d[l] > 0;
  }
  if (!any) std::fill(d.begin(), d.end(), 1.0);
  return d;
}

absl::Status CheckShape(const PromptShape& shape) {
  if (shape.length < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("prompt length must be >= 1, got ", shape.length));
  }
  if (shape.layers < 1 || shape.heads < 1 || shape.kv_heads < 1) {
    return absl::InvalidArgumentError(absl::StrCat("layers, heads and kv_heads must be >= 1, got ",
                                                   shape.layers, ", ", shape.heads, ", ",
                                                   shape.kv_heads));
  }
  if (shape.heads % shape.kv_heads != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "heads (", shape.heads, ") must be a multiple of kv_heads (", shape.kv_heads, ")"));
  }
  if (static_cast<int64_t>(shape.visual.size()) != shape.length) {
    return absl::InvalidArgumentError(absl::StrCat("visual mask has ", shape.visual.size(),
                                                   " entries, the prompt ", shape.length));
  }
  return absl::OkStatus();
}

absl::Status CheckObservations(const PolicyConfig& policy, const PromptShape& shape,
                               const std::vector<LayerObservation>& observations) {
  if (static_cast<int64_t>(observations.size()) != shape.layers) {
    return absl::InvalidArgumentError(absl::StrCat("policy ", policy.name, " needs ", shape.layers,
                                                   " layer observations, got ",
                                                   observations.size()));
  }
  for (int l = 0; l < shape.layers; ++l) {
    const LayerObservation& obs = observations[l];
    const at::Tensor& cs = obs.col_sums;
    if (!cs.defined() || cs.dim() != 2 || cs.size(0) != shape.heads || cs.size(1) != shape.length) {
      return absl::InvalidArgumentError(absl::StrCat("layer ", l, " col_sums must be [",
                                                     shape.heads, ", ", shape.length, "], got ",
                                                     ShapeString(cs)));
    }
    if (!IsVlCache(policy.name)) continue;
    if (!obs.sparse_counts.defined() || obs.sparse_counts.numel() != shape.heads) {
      return absl::InvalidArgumentError(absl::StrCat("layer ", l, " sparse_counts must be [",
                                                     shape.heads, "], got ",
                                                     ShapeString(obs.sparse_counts)));
    }
    if (obs.causal_entries < 1) {
      return absl::InvalidArgumentError(
          absl::StrCat("layer ", l, " causal_entries must be >= 1, got ", obs.causal_entries));
    }
  }
  return absl::OkStatus();
}

// VL-Cache step 1: d[l] = 1 - mean_h(sparse[l, h] / causal[l]).
std::vector<double> LayerDensities(const std::vector<LayerObservation>& observations) {
  std::vector<double> density;
  density.reserve(observations.size());
  for (const LayerObservation& obs : observations) {
    const double sparse = obs.sparse_counts.to(at::kDouble).mean().item<double>();
    const double gamma = sparse / static_cast<double>(obs.causal_entries);
    density.push_back(1.0 - std::clamp(gamma, 0.0, 1.0));
  }
  return density;
}

// The same `keep` positions for every KV head: the first `sinks` and the last `keep - sinks`.
at::Tensor SinksAndRecent(int64_t m, int kv_heads, int64_t keep, int64_t sinks) {
  auto row = at::cat({at::arange(sinks, at::kLong), at::arange(m - (keep - sinks), m, at::kLong)});
  return row.unsqueeze(0).expand({kv_heads, keep}).contiguous();
}

// The last `recent` positions plus `keep - recent` drawn without replacement from the rest, per
// KV head. Partial Fisher-Yates on one engine, so a seed fixes the whole plan.
at::Tensor RandomWithRecent(int64_t m, int kv_heads, int64_t keep, int64_t recent,
                            std::mt19937_64& rng) {
  const int64_t prefix = m - recent, picks = keep - recent;
  auto out = at::empty({kv_heads, keep}, at::kLong);
  auto acc = out.accessor<int64_t, 2>();
  std::vector<int64_t> pool(prefix);
  for (int h = 0; h < kv_heads; ++h) {
    std::iota(pool.begin(), pool.end(), int64_t{0});
    for (int64_t i = 0; i < picks; ++i) {
      std::uniform_int_distribution<int64_t> pick(i, prefix - 1);
      std::swap(pool[i], pool[pick(rng)]);
    }
    std::sort(pool.begin(), pool.begin() + picks);
    for (int64_t i = 0; i < picks; ++i) acc[h][i] = pool[i];
    for (int64_t i = 0; i < recent; ++i) acc[h][picks + i] = prefix + i;
  }
  return out;
}

// Shares of `total` tokens proportional to `density`, each within [lo, hi]: the fixed point of
// water-filling (clipped layers fixed, the rest shared in proportion, repeated) is
// clamp(lambda * d[l], lo, hi) for the lambda that meets the total. The sum of that clamp is
// piecewise linear and nondecreasing in lambda, so lambda is found exactly on its breakpoints.
// Requires layers * lo <= total <= layers * hi.
std::vector<double> WaterFill(const std::vector<double>& density, double total, double lo,
                              double hi) {
  const size_t layers = density.size();
  auto shares_at = [&](double lambda) {
    std::vector<double> s(layers);
    for (size_t l = 0; l < layers; ++l) s[l] = std::clamp(lambda * density[l], lo, hi);
    return s;
  };
  auto sum_at = [&](double lambda) {
    double sum = 0;
    for (double s : shares_at(lambda)) sum += s;
    return sum;
  };
  std::vector<double> breaks;
  for (double d : density) {
    if (d > 0) {
      breaks.push_back(lo / d);
      breaks.push_back(hi / d);
    }
  }
  std::sort(breaks.begin(), breaks.end());
  const double saturated = breaks.empty() ? 0.0 : breaks.back();
  if (breaks.empty() || sum_at(saturated) < total) {
    // Every dense layer is at hi and the layers of density 0 (stuck at lo) must take the rest,
    // evenly, for the total to stay exact.
    std::vector<double> s = shares_at(saturated);
    std::vector<size_t> zero;
    for (size_t l = 0; l < layers; ++l) {
      if (!(density[l] > 0)) zero.push_back(l);
    }
    double rest = total;
    for (double v : s) rest -= v;
    for (size_t l : zero) s[l] = std::min(hi, s[l] + rest / static_cast<double>(zero.size()));
    return s;
  }
  // The first breakpoint whose sum reaches the total closes the segment holding lambda; on it the
  // sum is fixed + lambda * (density of the layers strictly inside (lo, hi)).
  double left = 0;
  for (double right : breaks) {
    if (sum_at(right) >= total) {
      const double mid = 0.5 * (left + right);
      double fixed = 0, free_density = 0;
      for (size_t l = 0; l < layers; ++l) {
        const double x = mid * density[l];
        if (x <= lo) {
          fixed += lo;
        } else if (x >= hi) {
          fixed += hi;
        } else {
          free_density += density[l];
        }
      }
      const double lambda = free_density > 0 ? (total - fixed) / free_density : right;
      return shares_at(std::clamp(lambda, left, right));
    }
    left = right;
  }
  return shares_at(saturated);
}

// Integers summing to exactly `total` from real shares that sum to it: floor each, then one more
// token to the largest fractional parts (ties to the lower layer), never above `cap`.
std::vector<int64_t> LargestRemainder(const std::vector<double>& shares, int64_t total,
                                      int64_t cap) {
  const size_t layers = shares.size();
  std::vector<int64_t> k(layers);
  std::vector<double> frac(layers);
  int64_t assigned = 0;
  for (size_t l = 0; l < layers; ++l) {
    // The slack absorbs shares like 49.9999999 that stand for 50.
    k[l] = std::clamp<int64_t>(static_cast<int64_t>(std::floor(shares[l] + kFloorSlack)), 0, cap);
    frac[l] = shares[l] - static_cast<double>(k[l]);
    assigned += k[l];
  }
  std::vector<size_t> order(layers);
  std::iota(order.begin(), order.end(), size_t{0});
  std::stable_sort(order.begin(), order.end(),
                   [&](size_t a, size_t b) { return frac[a] > frac[b]; });
  // Rounding of the shares can leave the floors a token or two away from the total in either
  // direction; walk the order until it is met.
  while (assigned < total) {
    bool moved = false;
    for (size_t l : order) {
      if (assigned == total) break;
      if (k[l] < cap) {
        ++k[l];
        ++assigned;
        moved = true;
      }
    }
    if (!moved) break;
  }
  while (assigned > total) {
    bool moved = false;
    for (auto it = order.rbegin(); it != order.rend() && assigned > total; ++it) {
      if (k[*it] > 1) {
        --k[*it];
        --assigned;
        moved = true;
      }
    }
    if (!moved) break;
  }
  return k;
}

// VL-Cache's step 2 after clipping: per_layer * L tokens shared in proportion to the usable
// densities `d`, each layer within [lo, m] (evenly when the total cannot give every layer lo),
// made integers by largest remainder and kept within [min_keep, m].
std::vector<int64_t> ShareByDensity(const std::vector<double>& d, int64_t m, int64_t per_layer,
                                    double lo, int64_t min_keep) {
  const size_t layers = d.size();
  const int64_t total = per_layer * static_cast<int64_t>(layers);
  std::vector<double> shares;
  if (static_cast<double>(total) <= static_cast<double>(layers) * lo) {
    // The floor cannot hold for every layer: the exact total wins, evenly.
    shares.assign(layers, static_cast<double>(per_layer));
  } else {
    shares = WaterFill(d, static_cast<double>(total), lo, static_cast<double>(m));
  }
  std::vector<int64_t> k = LargestRemainder(shares, total, m);
  for (int64_t& x : k) x = std::clamp<int64_t>(x, min_keep, m);
  return k;
}

}  // namespace

const std::vector<std::string>& PolicyNames() {
  static const auto* names = new std::vector<std::string>{
      "full", "vlcache", "vlcache-guard", "snapkv", "pyramidkv", "h2o", "streamingllm", "random"};
  return *names;
}

absl::Status PolicyConfig::Validate() const {
  const auto& names = PolicyNames();
  if (std::find(names.begin(), names.end(), name) == names.end()) {
    return absl::InvalidArgumentError(
        absl::StrCat("unknown kv cache policy '", name, "'; valid: ", absl::StrJoin(names, ", ")));
  }
  // Written so that NaN fails every range check.
  if (!(budget > 0 && budget <= 1)) {
    return absl::InvalidArgumentError(absl::StrCat("kv budget must be in (0, 1], got ", budget));
  }
  if (!(sparsity_threshold > 0 && sparsity_threshold < 1)) {
    return absl::InvalidArgumentError(
        absl::StrCat("sparsity_threshold must be in (0, 1), got ", sparsity_threshold));
  }
  if (!(clip_floor > 0 && clip_floor <= 1)) {
    return absl::InvalidArgumentError(
        absl::StrCat("clip_floor must be in (0, 1], got ", clip_floor));
  }
  if (!(recent_fraction >= 0 && recent_fraction < 1)) {
    return absl::InvalidArgumentError(
        absl::StrCat("recent_fraction must be in [0, 1), got ", recent_fraction));
  }
  if (window < 1) {
    return absl::InvalidArgumentError(absl::StrCat("window must be >= 1, got ", window));
  }
  if (kernel < 1 || kernel % 2 == 0) {
    return absl::InvalidArgumentError(absl::StrCat("kernel must be odd and >= 1, got ", kernel));
  }
  if (!(pyramid_beta > 0)) {
    return absl::InvalidArgumentError(absl::StrCat("pyramid_beta must be > 0, got ", pyramid_beta));
  }
  if (sinks < 0) {
    return absl::InvalidArgumentError(absl::StrCat("sinks must be >= 0, got ", sinks));
  }
  if (guard_window < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("guard_window must be >= 0, got ", guard_window));
  }
  if (min_layer_tokens < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("min_layer_tokens must be >= 1, got ", min_layer_tokens));
  }
  if (min_prompt_tokens < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("min_prompt_tokens must be >= 0, got ", min_prompt_tokens));
  }
  if (guard_scoring_rows < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("guard_scoring_rows must be >= 0, got ", guard_scoring_rows));
  }
  if (max_scoring_queries < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_scoring_queries must be >= 0, got ", max_scoring_queries));
  }
  return absl::OkStatus();
}

ObservationSpec ObservationFor(const PolicyConfig& policy, const PromptShape& shape) {
  ObservationSpec spec;
  const int64_t m = std::max<int64_t>(0, shape.length);
  if (policy.name == "h2o") {
    spec.enabled = true;
    spec.query_begin = 0;
  } else if (policy.name == "snapkv" || policy.name == "pyramidkv") {
    spec.enabled = true;
    spec.query_begin = std::max<int64_t>(0, m - policy.window);
  } else if (IsVlCache(policy.name)) {
    spec.enabled = true;
    spec.query_begin = ScoredTextBegin(shape);
    if (policy.max_scoring_queries > 0) {
      spec.query_begin = std::max<int64_t>(spec.query_begin, m - policy.max_scoring_queries);
    }
    if (policy.name == "vlcache-guard" && policy.guard_scoring_rows > 0) {
      spec.query_begin = std::max<int64_t>(spec.query_begin, m - policy.guard_scoring_rows);
    }
    spec.sparsity = true;
    spec.threshold = policy.sparsity_threshold;
  }
  return spec;
}

std::vector<int64_t> VlCacheBudgets(const std::vector<double>& density, int64_t m, double alpha,
                                    double clip_floor, bool renormalize) {
  const size_t layers = density.size();
  if (layers == 0) return {};
  if (m < 1) return std::vector<int64_t>(layers, 0);
  // Densities are 1 - gamma in [0, 1]; anything else (NaN included) is read as no density.
  const std::vector<double> d = UsableDensities(density);
  const double sum = std::accumulate(d.begin(), d.end(), 0.0);
  const double md = static_cast<double>(m), ld = static_cast<double>(layers);

  if (!renormalize) {
    // The paper's formula: clip each layer's ratio, round, and let the total drift.
    std::vector<int64_t> k(layers);
    for (size_t l = 0; l < layers; ++l) {
      const double beta = std::clamp(d[l] / sum * alpha * ld, clip_floor, 1.0);
      k[l] = std::clamp<int64_t>(std::llround(beta * md), 1, m);
    }
    return k;
  }

  return ShareByDensity(d, m, UniformBudget(m, alpha), std::max(1.0, clip_floor * md), 1);
}

GuardedSpan GuardedPositions(const PolicyConfig& policy, const PromptShape& shape) {
  const int64_t m = std::max<int64_t>(0, shape.length);
  GuardedSpan g;
  g.guard_begin =
      std::max(ScoredTextBegin(shape), m - std::min<int64_t>(m, std::max(0, policy.guard_window)));
  g.sinks = std::clamp<int64_t>(policy.sinks, 0, g.guard_begin);
  return g;
}

std::vector<int64_t> GuardBudgets(const std::vector<double>& density, int64_t m, double alpha,
                                  int64_t floor, double clip_floor, bool by_density) {
  const size_t layers = density.size();
  if (layers == 0) return {};
  if (m < 1) return std::vector<int64_t>(layers, 0);
  const int64_t f = std::clamp<int64_t>(floor, 1, m);
  const int64_t per_layer = std::max(UniformBudget(m, alpha), f);
  if (!by_density) return std::vector<int64_t>(layers, per_layer);
  return ShareByDensity(UsableDensities(density), m, per_layer,
                        std::max(static_cast<double>(f), clip_floor * static_cast<double>(m)), f);
}

bool Compresses(const PolicyConfig& policy, int64_t length) {
  return policy.name != "full" && length >= policy.min_prompt_tokens;
}

std::vector<int64_t> PyramidBudgets(int64_t m, int64_t budget, int layers, int window,
                                    double beta) {
  if (layers < 1) return {};
  const int64_t c = std::clamp<int64_t>(budget, 1, std::max<int64_t>(1, m));
  if (c <= window || layers == 1) return std::vector<int64_t>(layers, c);
  const double excess = static_cast<double>(c - window);
  double min_keep = excess / beta;
  double max_keep = 2 * excess - min_keep;
  const double room = static_cast<double>(m - window);
  if (max_keep >= room) {
    max_keep = room;
    min_keep = 2 * excess - max_keep;
  }
  const double step = (max_keep - min_keep) / static_cast<double>(layers - 1);
  std::vector<int64_t> k(layers);
  for (int l = 0; l < layers; ++l) {
    const double keep = static_cast<double>(window) + max_keep - static_cast<double>(l) * step;
    k[l] = std::clamp<int64_t>(std::llround(keep), 1, std::max<int64_t>(1, m));
  }
  return k;
}

at::Tensor GroupMean(const at::Tensor& head_scores, int kv_heads) {
  TORCH_CHECK(head_scores.dim() == 2, "GroupMean: head scores must be [heads, m], got ",
              head_scores.sizes());
  const int64_t heads = head_scores.size(0), m = head_scores.size(1);
  TORCH_CHECK(kv_heads >= 1 && heads % kv_heads == 0, "GroupMean: ", heads,
              " heads are not a multiple of ", kv_heads, " kv heads");
  // Query head h = kv * G + g reads KV head kv (HF's repeat_kv), so groups are consecutive rows.
  return head_scores.to(at::kFloat).reshape({kv_heads, heads / kv_heads, m}).mean(1);
}

at::Tensor AvgPool1d(const at::Tensor& scores, int kernel) {
  TORCH_CHECK(kernel >= 1 && kernel % 2 == 1, "AvgPool1d: kernel must be odd and >= 1, got ",
              kernel);
  TORCH_CHECK(scores.dim() >= 1, "AvgPool1d: scores need at least one dimension");
  const int64_t m = scores.size(-1);
  auto rows = scores.to(at::kFloat).reshape({-1, 1, m});
  auto pooled = at::avg_pool1d(rows, {kernel}, {1}, {kernel / 2}, /*ceil_mode=*/false,
                               /*count_include_pad=*/true);
  return pooled.reshape(scores.sizes());
}

at::Tensor TopKWithRecent(const at::Tensor& scores, int64_t keep, int64_t recent) {
  TORCH_CHECK(scores.dim() == 2, "TopKWithRecent: scores must be [kv_heads, m], got ",
              scores.sizes());
  const int64_t kv_heads = scores.size(0), m = scores.size(1);
  TORCH_CHECK(0 <= recent && recent <= keep && keep <= m, "TopKWithRecent: need 0 <= recent (",
              recent, ") <= keep (", keep, ") <= m (", m, ")");
  if (keep == m) {
    return at::arange(m, at::TensorOptions().dtype(at::kLong).device(scores.device()))
        .unsqueeze(0)
        .expand({kv_heads, m})
        .contiguous();
  }
  // Scores observed on a GPU are selected there (the same positions, kvcache/cuda/select.h).
  if (scores.is_cuda()) return CudaTopKWithRecent(scores, keep, recent);
  const int64_t prefix = m - recent, picks = keep - recent;
  auto s = scores.to(at::kCPU, at::kFloat).contiguous();
  auto sa = s.accessor<float, 2>();
  auto out = at::empty({kv_heads, keep}, at::kLong);
  auto acc = out.accessor<int64_t, 2>();
  std::vector<int64_t> idx(prefix);
  std::vector<float> key(prefix);
  for (int64_t h = 0; h < kv_heads; ++h) {
    for (int64_t j = 0; j < prefix; ++j) {
      // NaN would break the strict ordering; it ranks as the lowest score.
      key[j] = std::isnan(sa[h][j]) ? -std::numeric_limits<float>::infinity() : sa[h][j];
    }
    std::iota(idx.begin(), idx.end(), int64_t{0});
    // A total order (score descending, position ascending) makes the selected set unique.
    auto before = [&](int64_t a, int64_t b) {
      return key[a] > key[b] || (key[a] == key[b] && a < b);
    };
    if (picks > 0 && picks < prefix) {
      std::nth_element(idx.begin(), idx.begin() + picks, idx.end(), before);
    }
    std::sort(idx.begin(), idx.begin() + picks);
    for (int64_t i = 0; i < picks; ++i) acc[h][i] = idx[i];
    for (int64_t i = 0; i < recent; ++i) acc[h][picks + i] = prefix + i;
  }
  return out;
}

absl::StatusOr<KeepPlan> MakeKeepPlan(const PolicyConfig& policy, const PromptShape& shape,
                                      const std::vector<LayerObservation>& observations) {
  VLC_RETURN_IF_ERROR(policy.Validate());
  VLC_RETURN_IF_ERROR(CheckShape(shape));
  if (UsesObservations(policy.name)) {
    VLC_RETURN_IF_ERROR(CheckObservations(policy, shape, observations));
  }
  const int64_t m = shape.length;
  const int layers = shape.layers, kv_heads = shape.kv_heads;
  KeepPlan plan;
  plan.layers.resize(layers);
  VLC_RETURN_IF_ERROR(CatchAll("kv cache policy", [&] {
    if (policy.name == "full") {
      for (LayerPlan& lp : plan.layers) lp.keep = m;
      return;
    }
    const int64_t uniform = UniformBudget(m, policy.budget);
    std::vector<int64_t> keep(layers, uniform);
    GuardedSpan guarded;
    if (policy.name == "vlcache") {
      if (policy.sparsity_budgets) {
        keep = VlCacheBudgets(LayerDensities(observations), m, policy.budget, policy.clip_floor,
                              policy.renormalize);
      }
    } else if (policy.name == "vlcache-guard") {
      guarded = GuardedPositions(policy, shape);
      const int64_t floor =
          std::min(m, std::max<int64_t>(guarded.count(m), policy.min_layer_tokens));
      keep = GuardBudgets(LayerDensities(observations), m, policy.budget, floor, policy.clip_floor,
                          policy.sparsity_budgets);
    } else if (policy.name == "pyramidkv") {
      keep = PyramidBudgets(m, uniform, layers, policy.window, policy.pyramid_beta);
    }
    std::mt19937_64 rng(policy.seed);
    for (int l = 0; l < layers; ++l) {
      LayerPlan& lp = plan.layers[l];
      lp.keep = keep[l];
      if (policy.name == "streamingllm") {
        lp.positions =
            SinksAndRecent(m, kv_heads, lp.keep, std::min<int64_t>(policy.sinks, lp.keep));
      } else if (policy.name == "random") {
        lp.positions = RandomWithRecent(m, kv_heads, lp.keep,
                                        FloorFraction(policy.recent_fraction, lp.keep), rng);
      } else {
        // vlcache, vlcache-guard and h2o score with the observed column sums as they are; snapkv
        // and pyramidkv smooth them first and keep their whole observation window.
        at::Tensor scores = GroupMean(observations[l].col_sums, kv_heads);
        int64_t recent = FloorFraction(policy.recent_fraction, lp.keep);
        if (policy.name == "vlcache-guard") {
          // The guarded text is the "recent" suffix; the sinks outrank every scored position.
          recent = m - guarded.guard_begin;
          if (guarded.sinks > 0) {
            scores.slice(1, 0, guarded.sinks).fill_(std::numeric_limits<float>::infinity());
          }
        } else if (policy.name == "snapkv" || policy.name == "pyramidkv") {
          scores = AvgPool1d(scores, policy.kernel);
          recent = std::min<int64_t>(policy.window, lp.keep);
        }
        lp.positions = TopKWithRecent(scores, lp.keep, recent);
      }
    }
  }));
  return plan;
}

}  // namespace vlc::kvcache
