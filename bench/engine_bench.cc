// Engine throughput for a model shape given on the command line, with random weights:
// prefill tokens/s, decode ms/token, and decode's bytes moved per second as a fraction of this
// machine's copy bandwidth measured in the same run (the physical limit of a memory-bound step).
//
//   build/bin/vlcache-bench-engine --hidden 4096 --layers 2 --intermediate 11008 --json out.json
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
#include "bench/bench_util.h"

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

}  // namespace

int main(int argc, char** argv) {
  using namespace vlc;
  CLI::App app{"Engine benchmark: prefill and decode on random weights, against memory bandwidth"};
  engine::LlavaConfig c = bench::TextModelConfig(4096, 11008, 2, 32, 32, 32000);
  auto& t = c.text;
  int prompt = 512, steps = 32, batch = 1, threads = 0, repeats = 5;
  std::string json_path;
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
  CLI11_PARSE(app, argc, argv);
  t.head_dim = t.hidden_size / t.num_attention_heads;
  c.image_token_index = t.vocab_size - 1;
  if (threads > 0) at::set_num_threads(threads);
  else at::set_num_threads(static_cast<int>(std::thread::hardware_concurrency()));

  auto model_ptr = bench::RandomModel(c);
  auto& model = *model_ptr;
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
