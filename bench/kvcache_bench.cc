// The compressed cache against the full one, side by side in one run, on random weights and
// random cache contents (decode time does not depend on the values):
//  * decode step time at several prompt lengths, full versus a policy at budget alpha, against
//    the ideal ratio (bytes a step moves with the full cache / with the compressed one, weights
//    included);
//  * KV bytes kept / full, page rounding included;
//  * prefill overhead of observation, keep plan and compaction, as a ratio to a plain prefill.
//
//   build/bin/vlcache-bench-kvcache --prompts 2048,8192,32768 --budget 0.1 --json out.json
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <thread>
#include <vector>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "engine/model.h"
#include "kvcache/page_pool.h"
#include "kvcache/paged_cache.h"
#include "kvcache/policy.h"
#include "bench/bench_util.h"

namespace {

using namespace vlc;
using bench::Clock;
using bench::Median;
using bench::Seconds;

// A prompt of m tokens: visual tokens, then `text_tail` text tokens (the post-vision rows).
kvcache::PromptShape Shape(const engine::LlavaConfig& c, int64_t m, int64_t text_tail) {
  kvcache::PromptShape s{m, c.text.num_hidden_layers, c.text.num_attention_heads,
                         c.text.num_key_value_heads, std::vector<uint8_t>(m, 0)};
  for (int64_t i = 0; i < m - text_tail; ++i) s.visual[i] = 1;
  return s;
}

// Observations with the statistics of a real prefill (peaked column sums, layers of different
// sparsity), drawn at random: the decode benchmark needs a plan of the right sizes, not a
// particular one.
std::vector<kvcache::LayerObservation> SyntheticObservations(const kvcache::PromptShape& s,
                                                             int64_t rows) {
  std::vector<kvcache::LayerObservation> obs(s.layers);
  for (int l = 0; l < s.layers; ++l) {
    obs[l].col_sums = at::rand({s.heads, s.length}).pow(8) * rows;
    obs[l].causal_entries = rows * s.length;
    const double gamma = 0.5 + 0.45 * (l + 1) / s.layers;
    obs[l].sparse_counts = at::full({s.heads}, static_cast<int64_t>(gamma * rows * s.length));
  }
  return obs;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"KV cache benchmark: compressed versus full cache, measured side by side"};
  int hidden = 4096, inter = 11008, layers = 2, heads = 32, kv_heads = 32, vocab = 32000;
  std::vector<int64_t> prompts = {2048, 8192, 32768};
  std::string policy_name = "vlcache";
  double budget = 0.1;
  int steps = 8, repeats = 5, threads = 0, batch = 1;
  int64_t prefill_prompt = 2048;
  int prefill_hidden = 1024, prefill_inter = 2816, prefill_heads = 16;
  std::string json_path;
  app.add_option("--hidden", hidden)->capture_default_str();
  app.add_option("--intermediate", inter)->capture_default_str();
  app.add_option("--layers", layers)->capture_default_str();
  app.add_option("--heads", heads)->capture_default_str();
  app.add_option("--kv-heads", kv_heads)->capture_default_str();
  app.add_option("--vocab", vocab)->capture_default_str();
  app.add_option("--prompts", prompts, "Prompt lengths for the decode comparison")
      ->delimiter(',')
      ->capture_default_str();
  app.add_option("--policy", policy_name)->capture_default_str();
  app.add_option("--budget", budget, "alpha")->capture_default_str();
  app.add_option("--batch", batch, "Sequences decoded together")->capture_default_str();
  app.add_option("--steps", steps, "Decode steps per repeat")->capture_default_str();
  app.add_option("--repeats", repeats)->capture_default_str();
  app.add_option("--threads", threads, "0 = all cores")->capture_default_str();
  app.add_option("--prefill-prompt", prefill_prompt, "Prompt length of the prefill comparison")
      ->capture_default_str();
  app.add_option("--prefill-hidden", prefill_hidden)->capture_default_str();
  app.add_option("--json", json_path);
  CLI11_PARSE(app, argc, argv);
  at::set_num_threads(threads > 0 ? threads
                                  : static_cast<int>(std::thread::hardware_concurrency()));
  kvcache::PolicyConfig policy;
  policy.name = policy_name;
  policy.budget = budget;
  if (auto st = policy.Validate(); !st.ok()) {
    std::cerr << st << "\n";
    return 2;
  }
  nlohmann::json out = {{"policy", policy_name}, {"budget", budget}, {"batch", batch},
                        {"threads", at::get_num_threads()}};

  // ---- Decode: full versus compressed, one model, one pool.
  auto cfg = bench::TextModelConfig(hidden, inter, layers, heads, kv_heads, vocab);
  auto model = bench::RandomModel(cfg);
  const int64_t max_prompt = *std::max_element(prompts.begin(), prompts.end());
  kvcache::PagePoolOptions po;
  po.kv_heads = kv_heads;
  po.head_dim = hidden / heads;
  const int64_t per_token = 2LL * kv_heads * po.head_dim * 4 * layers;
  po.capacity_bytes = (max_prompt + steps * repeats + 64) * per_token * batch * 11 / 10;
  auto pool = std::move(kvcache::PagePool::Create(po)).value();
  std::printf("%-8s %12s %12s %10s %10s %10s %10s\n", "prompt", "full ms", "compr ms", "speedup",
              "ideal", "of ideal", "kv kept");
  for (int64_t m : prompts) {
    std::vector<double> t_full, t_comp;
    double kept_ratio = 0, ideal = 0;
    for (int r = 0; r < repeats; ++r) {
      for (int compressed = 0; compressed < 2; ++compressed) {
        kvcache::PagedKvCache cache(layers, pool.get());
        std::vector<kvcache::SeqId> seqs;
        std::vector<int> tokens;
        std::vector<int64_t> pos;
        for (int b = 0; b < batch; ++b) {
          (void)cache.AddSequence(b);
          for (int l = 0; l < layers; ++l) {
            auto k = at::randn({kv_heads, m, po.head_dim});
            auto st = cache.Append(b, l, k, at::randn_like(k));
            if (!st.ok()) {
              std::cerr << st << "\n";
              return 1;
            }
          }
          if (compressed) {
            auto shape = Shape(cfg, m, 50);
            auto obs = SyntheticObservations(shape, 50);
            auto plan = kvcache::MakeKeepPlan(policy, shape, obs);
            if (!plan.ok() || !cache.Compact(b, *plan).ok()) {
              std::cerr << "compaction failed\n";
              return 1;
            }
          }
          seqs.push_back(b);
          tokens.push_back(5);
          pos.push_back(m);
        }
        const double full_bytes = static_cast<double>(m) * per_token * batch;
        const double kept_bytes = static_cast<double>(cache.Bytes(0)) * batch;
        if (compressed) {
          kept_ratio = cache.Bytes(0) / (static_cast<double>(m) * per_token);
          const double w = static_cast<double>(model->DecodeWeightBytes());
          ideal = (w + full_bytes) / (w + kept_bytes);
        }
        std::vector<double> per_step;
        for (int s = 0; s < steps; ++s) {
          auto a = Clock::now();
          auto logits = model->DecodeStep(seqs, tokens, pos, &cache);
          per_step.push_back(Seconds(a));
          if (!logits.ok()) {
            std::cerr << logits.status() << "\n";
            return 1;
          }
          for (auto& p : pos) ++p;
        }
        (compressed ? t_comp : t_full).push_back(Median(per_step));
      }
    }
    std::vector<double> speedups;
    for (int r = 0; r < repeats; ++r) speedups.push_back(t_full[r] / t_comp[r]);
    const double speedup = Median(speedups);
    std::printf("%-8lld %12.2f %12.2f %10.2f %10.2f %10.2f %10.4f\n", static_cast<long long>(m),
                Median(t_full) * 1e3, Median(t_comp) * 1e3, speedup, ideal, speedup / ideal,
                kept_ratio);
    out["decode"].push_back({{"prompt", m},
                             {"full_ms_per_step", Median(t_full) * 1e3},
                             {"compressed_ms_per_step", Median(t_comp) * 1e3},
                             {"speedup", speedup},
                             {"speedups_per_repeat", speedups},
                             {"ideal_speedup", ideal},
                             {"fraction_of_ideal", speedup / ideal},
                             {"kv_bytes_kept_over_full", kept_ratio}});
  }
  model.reset();
  pool.reset();

  // ---- Prefill: plain versus observation + plan + compaction.
  auto pcfg = bench::TextModelConfig(prefill_hidden, prefill_inter, layers, prefill_heads,
                                     prefill_heads, vocab);
  auto pmodel = bench::RandomModel(pcfg);
  kvcache::PagePoolOptions ppo;
  ppo.kv_heads = prefill_heads;
  ppo.head_dim = prefill_hidden / prefill_heads;
  ppo.capacity_bytes = (prefill_prompt + 64) * 2LL * ppo.kv_heads * ppo.head_dim * 4 * layers * 2;
  auto ppool = std::move(kvcache::PagePool::Create(ppo)).value();
  auto shape = Shape(pcfg, prefill_prompt, 50);
  std::vector<double> plain, observed, ratios, plan_ms, compact_ms;
  // Repeat -1 warms allocator and caches up and is not recorded.
  for (int r = -1; r < repeats; ++r) {
    auto embeds = at::randn({prefill_prompt, prefill_hidden}) * 0.02;
    // Alternate which variant runs first, so drift on a shared machine favours neither.
    for (int turn = 0; turn < 2; ++turn) {
      const int with = (turn + r) % 2;
      kvcache::PagedKvCache cache(layers, ppool.get());
      (void)cache.AddSequence(0);
      auto a = Clock::now();
      if (with) {
        auto spec = kvcache::ObservationFor(policy, shape);
        std::vector<kvcache::LayerObservation> obs;
        auto logits = pmodel->Prefill(0, embeds, 0, &cache, false, &spec, &obs);
        auto b = Clock::now();
        auto plan = kvcache::MakeKeepPlan(policy, shape, obs);
        auto c = Clock::now();
        if (!logits.ok() || !plan.ok() || !cache.Compact(0, *plan).ok()) {
          std::cerr << "prefill with compression failed\n";
          return 1;
        }
        if (r >= 0) {
          observed.push_back(Seconds(a));
          plan_ms.push_back(std::chrono::duration<double, std::milli>(c - b).count());
          compact_ms.push_back(Seconds(c) * 1e3);
        }
      } else {
        auto logits = pmodel->Prefill(0, embeds, 0, &cache);
        if (!logits.ok()) return 1;
        if (r >= 0) plain.push_back(Seconds(a));
      }
    }
    if (r >= 0) ratios.push_back(observed.back() / plain.back());
  }
  std::printf("prefill %lld tokens: plain %.1f ms, with %s observation + compaction %.1f ms, "
              "ratio %.3f (plan %.2f ms, compaction %.2f ms)\n",
              static_cast<long long>(prefill_prompt), Median(plain) * 1e3, policy_name.c_str(),
              Median(observed) * 1e3, Median(ratios), Median(plan_ms), Median(compact_ms));
  out["prefill"] = {{"prompt", prefill_prompt},
                    {"hidden", prefill_hidden},
                    {"plain_ms", Median(plain) * 1e3},
                    {"compressed_ms", Median(observed) * 1e3},
                    {"overhead_ratio", Median(ratios)},
                    {"plan_ms", Median(plan_ms)},
                    {"compaction_ms", Median(compact_ms)},
                    {"ratios_per_repeat", ratios}};
  if (!json_path.empty()) std::ofstream(json_path) << out.dump(2) << "\n";
  return 0;
}
