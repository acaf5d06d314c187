// Engine throughput for a model shape given on the command line, with random weights:
// prefill tokens/s, decode ms/token, and decode's bytes moved per second as a fraction of this
// machine's copy bandwidth measured in the same run (the physical limit of a memory-bound step).
//
//   build/bin/vlcache-bench-engine --hidden 4096 --layers 2 --intermediate 11008 --json out.json
//
// With --batches 1,2,4,8,16 it measures batch scaling instead: the decode step time of each batch
// size against batch 1's in the same round, the sizes alternating round after round (the
// machine's bandwidth drifts), each sequence's paged cache (as the server holds it) filled with
// --prompt random tokens.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "engine/model.h"
#include "kvcache/page_pool.h"
#include "kvcache/paged_cache.h"
#include "bench/bench_util.h"
#include "common/openmp_env.h"

namespace {

using vlc::bench::Clock;
using vlc::bench::Median;
using vlc::bench::Seconds;

struct Bandwidth {
  double copy;  // bytes read plus bytes written per second, copying `bytes`
  double read;  // bytes read per second, summing `bytes`
};

// The machine's streaming rates over a buffer far larger than the caches, medians of `repeats`,
// with LibTorch's own parallel kernels on the same threads the model uses.
Bandwidth MeasureBandwidth(int64_t bytes, int repeats) {
  auto src = at::rand({bytes / 4});
  auto dst = at::empty_like(src);
  dst.copy_(src);  // touch every page once
  std::vector<double> tc, tr;
  double sink = 0;
  for (int i = 0; i < repeats; ++i) {
    auto a = Clock::now();
    dst.copy_(src);
    auto b = Clock::now();
    sink += src.sum().item<double>();
    tc.push_back(Seconds(a, b));
    tr.push_back(Seconds(b, Clock::now()));
  }
  if (sink == 42.0) std::puts("");  // keeps the sums observable
  return {2.0 * static_cast<double>(bytes) / Median(tc), static_cast<double>(bytes) / Median(tr)};
}

// Decode step time for each batch size against batch 1, measured round after round with the
// sizes in turn (a different order each round), each ratio taken within its round.
int BatchScaling(const vlc::engine::LlavaModel& model, std::vector<int> batches, int prompt,
                 int steps, int repeats, const std::string& json_path) {
  using namespace vlc;
  const auto& t = model.config().text;
  if (std::find(batches.begin(), batches.end(), 1) == batches.end()) batches.insert(batches.begin(), 1);
  const int max_b = *std::max_element(batches.begin(), batches.end());
  // The paged cache the server decodes over, with room for every sequence's prompt and the
  // tokens all rounds append.
  const int64_t tokens = prompt + static_cast<int64_t>(steps) * repeats * batches.size() + 16;
  kvcache::PagePoolOptions po;
  po.page_tokens = 16;
  po.kv_heads = t.num_key_value_heads;
  po.head_dim = t.head_dim;
  po.capacity_bytes = int64_t{max_b} * t.num_hidden_layers * ((tokens + 15) / 16) * 16 * 2 *
                      t.num_key_value_heads * t.head_dim * 4;
  auto pool = kvcache::PagePool::Create(po);
  if (!pool.ok()) {
    std::cerr << pool.status() << "\n";
    return 1;
  }
  auto cache = std::make_unique<kvcache::PagedKvCache>(t.num_hidden_layers, pool->get());
  std::vector<int64_t> pos(max_b, prompt);
  for (int b = 0; b < max_b; ++b) {
    (void)cache->AddSequence(b);
    for (int l = 0; l < t.num_hidden_layers; ++l) {
      auto k = at::randn({t.num_key_value_heads, prompt, t.head_dim});
      auto v = at::randn({t.num_key_value_heads, prompt, t.head_dim});
      if (absl::Status st = cache->Append(b, l, k, v); !st.ok()) {
        std::cerr << st << "\n";
        return 1;
      }
    }
  }
  auto step_ms = [&](int b) {
    std::vector<engine::SeqId> seqs(b);
    std::vector<int> tokens(b);
    std::vector<int64_t> p(b);
    std::vector<double> per_step;
    for (int s = 0; s < steps; ++s) {
      for (int i = 0; i < b; ++i) {
        seqs[i] = i;
        tokens[i] = 3 + i;
        p[i] = pos[i];
      }
      auto a = Clock::now();
      auto logits = model.DecodeStep(seqs, tokens, p, cache.get());
      per_step.push_back(Seconds(a, Clock::now()));
      if (!logits.ok()) {
        std::cerr << logits.status() << "\n";
        std::exit(1);
      }
      for (int i = 0; i < b; ++i) ++pos[i];
    }
    return Median(per_step) * 1e3;
  };
  std::map<int, std::vector<double>> ms, ratio;
  std::vector<int> order = batches;
  for (int r = 0; r < repeats; ++r) {
    std::rotate(order.begin(), order.begin() + 1, order.end());
    std::map<int, double> round;
    for (int b : order) round[b] = step_ms(b);
    for (int b : batches) {
      ms[b].push_back(round[b]);
      ratio[b].push_back(round[b] / round[1]);
    }
  }
  nlohmann::json j = {{"hidden", t.hidden_size}, {"intermediate", t.intermediate_size},
                      {"layers", t.num_hidden_layers}, {"prompt", prompt},
                      {"threads", at::get_num_threads()}, {"repeats", repeats}};
  std::printf("batch  ms/step (median)  step / batch-1 step: median [min, max]  tokens/s vs batch 1\n");
  for (int b : batches) {
    auto sorted = ratio[b];
    std::sort(sorted.begin(), sorted.end());
    const double med = Median(ratio[b]);
    std::printf("%5d  %15.2f  %10.3f [%.3f, %.3f]  %18.2fx\n", b, Median(ms[b]), med,
                sorted.front(), sorted.back(), b / med);
    j["batches"].push_back({{"batch", b}, {"ms_per_step", Median(ms[b])},
                            {"ratio_to_batch1", med}, {"ratio_min", sorted.front()},
                            {"ratio_max", sorted.back()}, {"ratios", ratio[b]}});
  }
  if (!json_path.empty()) std::ofstream(json_path) << j.dump(2) << "\n";
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  vlc::PreferSleepingOpenMpWorkers(argv);
  using namespace vlc;
  CLI::App app{"Engine benchmark: prefill and decode on random weights, against memory bandwidth"};
  engine::LlavaConfig c = bench::TextModelConfig(4096, 11008, 2, 32, 32, 32000);
  auto& t = c.text;
  int prompt = 512, steps = 32, batch = 1, threads = 0, repeats = 5;
  std::string json_path;
  std::vector<int> batches;
  app.add_option("--hidden", t.hidden_size, "Text hidden size")->capture_default_str();
  app.add_option("--intermediate", t.intermediate_size, "MLP size")->capture_default_str();
  app.add_option("--layers", t.num_hidden_layers, "Decoder layers")->capture_default_str();
  app.add_option("--heads", t.num_attention_heads, "Query heads")->capture_default_str();
  app.add_option("--kv-heads", t.num_key_value_heads, "KV heads")->capture_default_str();
  app.add_option("--vocab", t.vocab_size, "Vocabulary size")->capture_default_str();
  app.add_option("--prompt", prompt, "Prompt tokens prefilled")->capture_default_str();
  app.add_option("--steps", steps, "Decode steps timed per repeat")->capture_default_str();
  app.add_option("--batch", batch, "Sequences decoded together")->capture_default_str();
  app.add_option("--threads", threads, "LibTorch threads; 0 = all cores")->capture_default_str();
  app.add_option("--repeats", repeats, "Repeats; medians are reported")->capture_default_str();
  app.add_option("--json", json_path, "Also write the results here");
  std::string dtype = "float32";
  app.add_option("--dtype", dtype, "Weights' dtype: float32, bfloat16 (the KV cache stays float32)")
      ->check(CLI::IsMember({"float32", "bfloat16"}))
      ->capture_default_str();
  std::string quantize = "none";
  app.add_option("--quantize", quantize, "Decoder weights: none or int8 (weight-only)")
      ->check(CLI::IsMember({"none", "int8"}))
      ->capture_default_str();
  app.add_option("--batches", batches,
                 "Batch scaling: these batch sizes against batch 1, alternated --repeats times")
      ->delimiter(',');
  CLI11_PARSE(app, argc, argv);
  t.head_dim = t.hidden_size / t.num_attention_heads;
  c.image_token_index = t.vocab_size - 1;
  if (threads > 0) at::set_num_threads(threads);
  else at::set_num_threads(static_cast<int>(std::thread::hardware_concurrency()));

  auto target = engine::ResolveComputeTarget("cpu", dtype, quantize);
  if (!target.ok()) {
    std::cerr << target.status() << "\n";
    return 1;
  }
  auto model_ptr = bench::RandomModel(c, *target);
  auto& model = *model_ptr;
  if (!batches.empty()) return BatchScaling(model, batches, prompt, steps, repeats, json_path);
  // The machine is shared and its bandwidth drifts between seconds: each repeat measures the
  // limit right before its decode steps, and the ratio is taken per repeat.
  std::vector<double> copy_bw, read_bw, ratio;

  std::vector<double> prefill_s, step_s;
  const int64_t kv_row = 2LL * t.num_hidden_layers * t.num_key_value_heads * t.head_dim * 4;
  for (int r = 0; r < repeats; ++r) {
    const Bandwidth measured = MeasureBandwidth(int64_t{1} << 30, 3);
    copy_bw.push_back(measured.copy);
    read_bw.push_back(measured.read);
    auto cache = model.NewContiguousCache();
    std::vector<engine::SeqId> seqs;
    std::vector<int> tokens;
    std::vector<int64_t> pos;
    for (int b = 0; b < batch; ++b) {
      (void)cache->AddSequence(b);
      auto embeds = at::randn({prompt, t.hidden_size}) * 0.02;
      auto a = Clock::now();
      auto logits = model.Prefill(b, embeds, 0, cache.get());
      if (!logits.ok()) {
        std::cerr << logits.status() << "\n";
        return 1;
      }
      if (b == 0) prefill_s.push_back(Seconds(a, Clock::now()));
      seqs.push_back(b);
      tokens.push_back(3 + b);
      pos.push_back(prompt);
    }
    std::vector<double> per_step;
    for (int s = 0; s < steps; ++s) {
      auto a = Clock::now();
      auto logits = model.DecodeStep(seqs, tokens, pos, cache.get());
      per_step.push_back(Seconds(a, Clock::now()));
      if (!logits.ok()) {
        std::cerr << logits.status() << "\n";
        return 1;
      }
      for (auto& p : pos) ++p;
    }
    step_s.push_back(Median(per_step));
  }
  const double ctx = prompt + steps / 2.0;
  // Each step reads every decoder weight once and each sequence's whole cache.
  const double bytes = static_cast<double>(model.DecodeWeightBytes()) + batch * ctx * kv_row;
  for (int r = 0; r < repeats; ++r) {
    // Decode mostly reads; the limit is the better of the two streaming rates.
    ratio.push_back(bytes / step_s[r] / std::max(copy_bw[r], read_bw[r]));
  }
  const double prefill = Median(prefill_s), step = Median(step_s);
  const double achieved = bytes / step;
  const double limit = std::max(Median(copy_bw), Median(read_bw));
  nlohmann::json j = {
      {"hidden", t.hidden_size},       {"layers", t.num_hidden_layers},
      {"intermediate", t.intermediate_size}, {"heads", t.num_attention_heads},
      {"kv_heads", t.num_key_value_heads},   {"vocab", t.vocab_size},
      {"prompt", prompt},              {"batch", batch},
      {"threads", at::get_num_threads()},
      {"dtype", dtype},
      {"quantize", quantize},
      {"prefill_tokens_per_s", prompt / prefill},
      {"decode_ms_per_step", step * 1e3},
      {"decode_bytes_per_step", bytes},
      {"decode_gb_per_s", achieved / 1e9},
      {"copy_bandwidth_gb_per_s", Median(copy_bw) / 1e9},
      {"read_bandwidth_gb_per_s", Median(read_bw) / 1e9},
      {"decode_fraction_of_bandwidth", Median(ratio)},
      {"decode_fraction_of_bandwidth_per_repeat", ratio},
  };
  std::printf("prefill   %8.1f tokens/s   (%d tokens, median of %d)\n", prompt / prefill, prompt,
              repeats);
  std::printf("decode    %8.2f ms/step    batch %d, %.2f GB moved per step\n", step * 1e3, batch,
              bytes / 1e9);
  std::printf("bandwidth %8.2f GB/s decode vs %.2f GB/s limit (copy %.2f, read %.2f)\n",
              achieved / 1e9, limit / 1e9, Median(copy_bw) / 1e9, Median(read_bw) / 1e9);
  std::printf("ratio    %8.2f of the limit (median of per-repeat ratios)\n", Median(ratio));
  if (!json_path.empty()) std::ofstream(json_path) << j.dump(2) << "\n";
  return 0;
}
