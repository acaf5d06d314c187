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
#include <immintrin.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <map>
#include <numeric>
#include <string>
#include <thread>
#include <vector>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "engine/cpu_linear.h"
#include "engine/model.h"
#include "kvcache/page_pool.h"
#include "kvcache/paged_cache.h"
#include "bench/bench_util.h"
#include "common/process_env.h"

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

// Bytes per second of the fastest plain read of `bytes` at `p` this machine does: AVX-512 loads
// into eight independent sums, each thread sweeping one contiguous part (the physical limit of a
// kernel that must read every weight once).
__attribute__((target("avx512f"))) long long SweepPart(const char* p, int64_t c0, int64_t c1) {
  __m512i acc[8];
  for (auto& v : acc) v = _mm512_setzero_si512();
  for (int64_t c = c0; c < c1; ++c) {
    for (int k = 0; k < 8; ++k) {
      acc[k] = _mm512_add_epi64(acc[k], _mm512_loadu_si512(p + c * 512 + k * 64));
    }
  }
  long long s = 0;
  for (auto& v : acc) s += _mm512_reduce_add_epi64(v);
  return s;
}

double SweepRead(const char* p, int64_t bytes) {
  std::vector<long long> partial(at::get_num_threads(), 0);
  auto a = Clock::now();
  at::parallel_for(0, bytes / 512, 1, [&](int64_t c0, int64_t c1) {
    partial[at::get_thread_num()] += SweepPart(p, c0, c1);
  });
  const double t = Seconds(a, Clock::now());
  if (std::accumulate(partial.begin(), partial.end(), 0LL) == 42) std::puts("");
  return static_cast<double>(bytes) / t;
}

// DecodeLinear alone on one [out, in] matrix per weight dtype and one row of x (a decode step's
// largest product), against SweepRead over the same bytes, the two alternating call after call.
int KernelOnly(int64_t in, int64_t out, int repeats, const std::string& json_path) {
  using namespace vlc;
  nlohmann::json j = nlohmann::json::array();
  // Huge-page memory, as the model's weights are held (cpu_linear.h).
  const at::Tensor w32 = kvcache::OnHugePages(at::randn({out, in}));
  const engine::Int8Weight q = engine::QuantizeInt8(w32);
  struct Case {
    std::string name;
    at::Tensor w, scales, x;
  };
  const std::vector<Case> cases = {
      {"float32", w32, {}, at::randn({1, in})},
      {"bfloat16", kvcache::OnHugePages(w32.to(at::kBFloat16)), {},
       at::randn({1, in}).to(at::kBFloat16)},
      {"int8", q.q, q.scale, at::randn({1, in}).to(at::kBFloat16)},
  };
  std::printf("weights    path  kernel GB/s  read GB/s  kernel / read (median [min, max] of %d)"
              "  read from 4 KiB pages / huge pages\n",
              repeats);
  for (const Case& c : cases) {
    const int64_t bytes = c.w.numel() * c.w.element_size();
    // The same bytes in ordinary memory (4 KiB pages unless THP is `always`), to show what the
    // huge pages are worth.
    const at::Tensor small_pages = c.w.clone();
    std::vector<double> kernel, read, ratio, small_ratio;
    for (int r = 0; r < repeats; ++r) {
      auto a = Clock::now();
      auto y = engine::DecodeLinear(c.x, c.w, {}, c.scales);
      kernel.push_back(static_cast<double>(bytes) / Seconds(a, Clock::now()));
      read.push_back(SweepRead(static_cast<const char*>(c.w.data_ptr()), bytes));
      ratio.push_back(kernel.back() / read.back());
      small_ratio.push_back(SweepRead(static_cast<const char*>(small_pages.data_ptr()), bytes) /
                            read.back());
    }
    auto sorted = ratio;
    std::sort(sorted.begin(), sorted.end());
    auto small_sorted = small_ratio;
    std::sort(small_sorted.begin(), small_sorted.end());
    const int path = static_cast<int>(engine::CpuLinearPath(c.x, c.w));
    std::printf("%-9s  %4d  %11.2f  %9.2f  %.3f [%.3f, %.3f]  %.3f [%.3f, %.3f]\n",
                c.name.c_str(), path, Median(kernel) / 1e9, Median(read) / 1e9, Median(ratio),
                sorted.front(), sorted.back(), Median(small_ratio), small_sorted.front(),
                small_sorted.back());
    j.push_back({{"weights", c.name}, {"path", path}, {"kernel_gb_per_s", Median(kernel) / 1e9},
                 {"read_gb_per_s", Median(read) / 1e9}, {"ratio", Median(ratio)},
                 {"ratios", ratio}, {"small_page_read_over_huge", Median(small_ratio)}});
  }
  if (!json_path.empty()) std::ofstream(json_path) << j.dump(2) << "\n";
  return 0;
}

}  // namespace

// Serving and measuring: OpenMP workers sleep between parallel regions (common/process_env.h).
VLC_PREFER_SLEEPING_OPENMP_WORKERS();

int main(int argc, char** argv) {
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
  app.add_option("--threads", threads, "CPU threads (LibTorch and OpenBLAS); 0 = all cores")
      ->capture_default_str();
  app.add_option("--repeats", repeats, "Repeats; medians are reported")->capture_default_str();
  app.add_option("--json", json_path, "Also write the results here");
  std::string dtype = "float32";
  app.add_option("--dtype", dtype,
                 "Weights' dtype: float32, bfloat16, float16 (float32 activations; the KV cache "
                 "stays float32)")
      ->check(CLI::IsMember({"float32", "bfloat16", "float16"}))
      ->capture_default_str();
  std::string quantize = "none";
  app.add_option("--quantize", quantize, "Decoder weights: none or int8 (weight-only)")
      ->check(CLI::IsMember({"none", "int8"}))
      ->capture_default_str();
  bool kernel = false;
  app.add_flag("--kernel", kernel,
               "The decode kernel alone: one [--intermediate, --hidden] matrix per weight dtype "
               "against a plain read of its bytes, --repeats times");
  app.add_option("--batches", batches,
                 "Batch scaling: these batch sizes against batch 1, alternated --repeats times")
      ->delimiter(',');
  CLI11_PARSE(app, argc, argv);
  t.head_dim = t.hidden_size / t.num_attention_heads;
  c.image_token_index = t.vocab_size - 1;
  engine::SetCpuThreads(threads > 0 ? threads
                                    : static_cast<int>(std::thread::hardware_concurrency()));

  if (kernel) return KernelOnly(t.hidden_size, t.intermediate_size, repeats, json_path);
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
    // The paged cache the server decodes over (float32 pages on the CPU), with room for every
    // sequence's prompt and steps.
    kvcache::PagePoolOptions po;
    po.page_tokens = 16;
    po.kv_heads = t.num_key_value_heads;
    po.head_dim = t.head_dim;
    po.capacity_bytes = int64_t{batch} * t.num_hidden_layers * ((prompt + steps + 31) / 16) * 16 *
                        2 * t.num_key_value_heads * t.head_dim * 4;
    auto pool = kvcache::PagePool::Create(po);
    if (!pool.ok()) {
      std::cerr << pool.status() << "\n";
      return 1;
    }
    auto cache = std::make_unique<kvcache::PagedKvCache>(t.num_hidden_layers, pool->get());
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
  const vlc::engine::Bf16PrefillGemm gemm = vlc::engine::BFloat16PrefillGemm();
  const char* gemm_name = gemm == vlc::engine::Bf16PrefillGemm::kFloat32    ? "float32 GEMM"
                          : gemm == vlc::engine::Bf16PrefillGemm::kBFloat16 ? "bfloat16 GEMM"
                                                                            : "none";
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
      {"bf16_prefill_gemm", gemm_name},
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
  if (gemm != vlc::engine::Bf16PrefillGemm::kUndecided) {
    std::printf("          bfloat16 activations through %s\n", gemm_name);
  }
  std::printf("decode    %8.2f ms/step    batch %d, %.2f GB moved per step\n", step * 1e3, batch,
              bytes / 1e9);
  std::printf("bandwidth %8.2f GB/s decode vs %.2f GB/s limit (copy %.2f, read %.2f)\n",
              achieved / 1e9, limit / 1e9, Median(copy_bw) / 1e9, Median(read_bw) / 1e9);
  std::printf("ratio    %8.2f of the limit (median of per-repeat ratios)\n", Median(ratio));
  if (!json_path.empty()) std::ofstream(json_path) << j.dump(2) << "\n";
  return 0;
}
