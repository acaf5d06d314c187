// The serving core under load, in-process (engine/scheduler.h) on a random checkpoint of a given
// size, two figures:
//
// Head-of-line blocking: --streams sequences decode; then a --long-prompt token prompt arrives.
// For each --chunks size (prompt tokens prefilled per step; 0 = whole prompts), the running
// streams' inter-token gaps while that prompt prefills, p99 and max, against the streams' median
// gap before and after it in the same trial; and the long prompt's time to first token. Chunk sizes alternate trial
// after trial (--repeats rounds), since the machine's speed drifts.
//
// Page pressure: --queued image requests arrive at once at a KV pool that holds one of them;
// they run one after another, and the vision tower runs once per request (encodes counted), not
// once per admission attempt.
//
//   build/bin/vlcache-bench-serving --hidden 1024 --intermediate 2816 --layers 4 \
//       --streams 4 --long-prompt 2048 --chunks 0,512,128,64 --repeats 3 --json out.json
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "bench/timing.h"
#include "common/fs.h"
#include "engine/pipeline.h"
#include "engine/scheduler.h"
#include "tools/make_tiny.h"
#include "common/process_env.h"

namespace {

using namespace vlc;
using bench::Median;

// Inter-token gaps as the engine measures them, with the time each gap ended.
class GapSink : public engine::MetricsSink {
 public:
  void ObserveInterToken(double seconds) override {
    std::lock_guard<std::mutex> lock(mu_);
    gaps_.push_back({bench::Clock::now(), seconds});
  }
  void ObserveMediaPrepared(double seconds, int64_t pictures) override {
    std::lock_guard<std::mutex> lock(mu_);
    media_seconds_ += seconds;
  }
  void SetBatchSize(int64_t n) override {
    std::lock_guard<std::mutex> lock(mu_);
    max_batch_ = std::max(max_batch_, n);
  }
  struct Gap {
    bench::Clock::time_point end;
    double seconds;
  };
  std::vector<Gap> Take() {
    std::lock_guard<std::mutex> lock(mu_);
    std::vector<Gap> out;
    out.swap(gaps_);
    return out;
  }
  double media_seconds() {
    std::lock_guard<std::mutex> lock(mu_);
    return media_seconds_;
  }
  // Gaps that ended after `t`.
  size_t CountAfter(bench::Clock::time_point t) {
    std::lock_guard<std::mutex> lock(mu_);
    return static_cast<size_t>(std::count_if(gaps_.begin(), gaps_.end(),
                                             [t](const Gap& g) { return g.end > t; }));
  }
  int64_t max_batch() {
    std::lock_guard<std::mutex> lock(mu_);
    return max_batch_;
  }

 private:
  std::mutex mu_;
  std::vector<Gap> gaps_;
  double media_seconds_ = 0;
  int64_t max_batch_ = 0;
};

double Quantile(std::vector<double> v, double q) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t i = std::min(v.size() - 1, static_cast<size_t>(q * (v.size() - 1) + 0.5));
  return v[i];
}

// Waits for the job's final event; counts the streamed events on the way.
engine::StreamEvent Drain(const std::shared_ptr<engine::Job>& job) {
  engine::StreamEvent e;
  while (true) {
    if (!job->channel->Pop(&e, std::chrono::milliseconds(100))) continue;
    if (e.final) return e;
  }
}

// Waits until `n` streamed events of the job arrived (or it ended).
void WaitEvents(const std::shared_ptr<engine::Job>& job, int n) {
  engine::StreamEvent e;
  for (int seen = 0; seen < n;) {
    if (!job->channel->Pop(&e, std::chrono::milliseconds(100))) continue;
    if (e.final) return;
    ++seen;
  }
}

// A text prompt of about `tokens` tokens under the pipeline's template.
std::string LongPrompt(const engine::Pipeline& p, int tokens) {
  std::string text;
  const char* words[] = {"red", "square", "left", "of", "the", "blue", "circle", "and", "two"};
  int i = 0;
  while (true) {
    auto ids = p.tokenizer().EncodePrompt(text, 0, p.chat_template().text());
    if (ids.ok() && static_cast<int>(ids->size()) >= tokens) return text;
    for (int k = 0; k < 16; ++k) text += std::string(words[(i++) % 9]) + " ";
  }
}

struct Trial {
  double median_gap = 0, p99_gap = 0, max_gap = 0;
  double long_ttft = 0;
  int gaps_during = 0;
};

Trial RunTrial(const engine::Pipeline& p, int64_t chunk, int streams, const std::string& long_text,
               GapSink* sink) {
  engine::SchedulerOptions so;
  so.max_running = streams + 1;
  so.prefill_chunk_tokens = chunk;
  so.metrics = sink;
  engine::Scheduler scheduler(&p, so);
  scheduler.Start();
  std::vector<std::shared_ptr<engine::Job>> running;
  for (int s = 0; s < streams; ++s) {
    auto job = std::make_shared<engine::Job>();
    job->request.prompt = "count the shapes " + std::to_string(s);
    job->request.sampling.max_new_tokens = 4000;  // far more than the trial lasts
    job->request.sampling.ignore_eos = true;
    (void)scheduler.Submit(job);
    running.push_back(job);
  }
  for (auto& job : running) WaitEvents(job, 8);  // every stream decoding
  sink->Take();                                   // (warm-up gaps are not counted)
  const size_t window = 16 * static_cast<size_t>(streams);
  // Gaps before the long prompt arrives, and as many after it has its first token. The streams'
  // channels are left to fill: their events are not needed, only the engine's own timings.
  auto wait_gaps_after = [&](bench::Clock::time_point t) {
    for (int i = 0; i < 60000 && sink->CountAfter(t) < window; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
  };
  wait_gaps_after(bench::Clock::now());
  auto long_job = std::make_shared<engine::Job>();
  long_job->request.prompt = long_text;
  long_job->request.sampling.max_new_tokens = 1;
  long_job->request.sampling.ignore_eos = true;
  const auto t0 = bench::Clock::now();
  (void)scheduler.Submit(long_job);
  const engine::StreamEvent done = Drain(long_job);
  const auto t1 = bench::Clock::now();
  wait_gaps_after(t1);
  for (auto& job : running) job->cancelled = true;
  for (auto& job : running) Drain(job);
  scheduler.Stop();
  std::vector<double> outside, during;  // the streams' gaps before and after it, and while it ran
  for (const auto& g : sink->Take()) {
    (g.end > t0 && g.end <= t1 ? during : outside).push_back(g.seconds);
  }
  Trial t;
  t.median_gap = Median(outside);
  t.p99_gap = Quantile(during, 0.99);
  t.max_gap = during.empty() ? 0 : *std::max_element(during.begin(), during.end());
  t.gaps_during = static_cast<int>(during.size());
  t.long_ttft = done.status.ok() ? done.usage.ttft_ms / 1e3 : -1;
  return t;
}

std::string Png(int seed) { return tools::RandomPng(40, 30, seed); }

}  // namespace

// Serving and measuring: OpenMP workers sleep between parallel regions (common/process_env.h).
VLC_PREFER_SLEEPING_OPENMP_WORKERS();

int main(int argc, char** argv) {
  CLI::App app{"Serving core: head-of-line blocking with and without chunked prefill; page pressure"};
  tools::TinyOptions tiny;
  tiny.text_hidden_size = 1024;
  tiny.text_intermediate_size = 2816;
  tiny.text_layers = 4;
  int streams = 4, long_prompt = 2048, repeats = 3, queued = 8;
  std::vector<int64_t> chunks = {0, 512, 128, 64};
  std::string json_path;
  app.add_option("--hidden", tiny.text_hidden_size, "Text hidden size")->capture_default_str();
  app.add_option("--intermediate", tiny.text_intermediate_size, "MLP size")->capture_default_str();
  app.add_option("--layers", tiny.text_layers, "Decoder layers")->capture_default_str();
  app.add_option("--streams", streams, "Sequences decoding when the long prompt arrives")
      ->capture_default_str();
  app.add_option("--long-prompt", long_prompt, "Tokens of the prompt that arrives")
      ->capture_default_str();
  app.add_option("--chunks", chunks, "Prefill chunk sizes compared (0: whole prompts)")
      ->delimiter(',');
  app.add_option("--repeats", repeats, "Rounds over the chunk sizes")->capture_default_str();
  app.add_option("--queued", queued, "Page pressure: image requests queued behind a full pool")
      ->capture_default_str();
  app.add_option("--json", json_path, "Also write the results here");
  CLI11_PARSE(app, argc, argv);

  char tmpl[] = "/tmp/vlcache-bench-serving-XXXXXX";
  const std::string dir = mkdtemp(tmpl);
  tiny.seed = 1;
  if (auto st = tools::MakeTinyCheckpoint(dir + "/model", tiny); !st.ok()) {
    std::cerr << st << "\n";
    return 1;
  }
  engine::PipelineOptions opts;
  opts.max_prompt_tokens = long_prompt + 64;
  opts.kv_cache_bytes = int64_t{2} << 30;
  auto loaded = engine::Pipeline::Load(dir + "/model", opts);
  if (!loaded.ok()) {
    std::cerr << loaded.status() << "\n";
    return 1;
  }
  const engine::Pipeline& p = **loaded;
  const std::string long_text = LongPrompt(p, long_prompt);
  const int long_tokens = static_cast<int>(p.tokenizer().EncodePrompt(long_text, 0, p.chat_template().text())->size());
  GapSink sink;
  nlohmann::json j = {{"hidden", tiny.text_hidden_size}, {"intermediate", tiny.text_intermediate_size},
                      {"layers", tiny.text_layers}, {"streams", streams},
                      {"long_prompt_tokens", long_tokens}, {"threads", at::get_num_threads()}};
  std::map<int64_t, std::vector<Trial>> trials;
  std::vector<int64_t> order = chunks;
  for (int r = 0; r < repeats; ++r) {
    for (int64_t c : order) trials[c].push_back(RunTrial(p, c, streams, long_text, &sink));
    std::rotate(order.begin(), order.begin() + 1, order.end());
  }
  std::printf("head-of-line: %d streams decoding, a %d-token prompt arrives (%d rounds)\n", streams,
              long_tokens, repeats);
  std::printf("chunk  median gap ms  p99 during ms  p99/median [min, max]  max/median  long TTFT s\n");
  for (int64_t c : chunks) {
    std::vector<double> med, p99, ratio, mx, ttft;
    for (const auto& t : trials[c]) {
      med.push_back(t.median_gap);
      p99.push_back(t.p99_gap);
      ratio.push_back(t.p99_gap / t.median_gap);
      mx.push_back(t.max_gap / t.median_gap);
      ttft.push_back(t.long_ttft);
    }
    const auto [lo, hi] = std::minmax_element(ratio.begin(), ratio.end());
    std::printf("%5lld  %13.1f  %13.1f  %8.2f [%.2f, %.2f]  %10.2f  %11.2f\n",
                static_cast<long long>(c), Median(med) * 1e3, Median(p99) * 1e3, Median(ratio),
                *lo, *hi, Median(mx), Median(ttft));
    j["head_of_line"].push_back({{"chunk", c}, {"median_gap_s", Median(med)},
                                 {"p99_during_s", Median(p99)}, {"p99_over_median", Median(ratio)},
                                 {"p99_over_median_per_round", ratio},
                                 {"max_over_median", Median(mx)}, {"long_ttft_s", Median(ttft)}});
  }

  // Page pressure: a pool that holds one image request at a time.
  {
    engine::PipelineOptions small = opts;
    engine::GenerateRequest r;
    r.media.images = {Png(1)};
    r.prompt = "what color is the triangle?";
    r.sampling.ignore_eos = true;
    auto prompt = p.Prepare(r);
    // One page per layer holds a whole request (prompt and 3 tokens); the pool holds one
    // request, not two. Admission reserves a prompt's pages, so the requests queue.
    const int64_t n = static_cast<int64_t>(prompt->ids.size());
    const int64_t token_bytes =
        p.pool().capacity_bytes() / p.pool().num_pages() / opts.kv_page_tokens;
    small.kv_page_tokens = static_cast<int>(n + 3);
    small.kv_cache_bytes = (2 * tiny.text_layers - 1) * token_bytes * small.kv_page_tokens;
    auto sp = engine::Pipeline::Load(dir + "/model", small);
    if (!sp.ok()) {
      std::cerr << sp.status() << "\n";
      return 1;
    }
    GapSink pressure;
    engine::SchedulerOptions so;
    so.metrics = &pressure;
    engine::Scheduler scheduler(sp->get(), so);
    scheduler.Start();
    r.sampling.max_new_tokens = 3;
    std::vector<std::shared_ptr<engine::Job>> jobs;
    const auto t0 = bench::Clock::now();
    for (int i = 0; i < queued; ++i) {
      auto job = std::make_shared<engine::Job>();
      job->request = r;
      job->request.media.images = {Png(i + 2)};
      (void)scheduler.Submit(job);
      jobs.push_back(job);
    }
    int ok = 0;
    for (auto& job : jobs) ok += Drain(job).status.ok();
    const double wall = bench::Seconds(t0);
    scheduler.Stop();
    const int64_t encodes = (*sp)->vision_encodes();
    std::printf("page pressure: %d image requests, pool for one: %d answered, largest batch %lld, "
                "vision encodes %lld (%.2f per request), media time %.3f s of %.3f s wall\n",
                queued, ok, static_cast<long long>(pressure.max_batch()),
                static_cast<long long>(encodes), static_cast<double>(encodes) / queued,
                pressure.media_seconds(), wall);
    j["page_pressure"] = {{"requests", queued}, {"answered", ok},
                          {"largest_batch", pressure.max_batch()}, {"vision_encodes", encodes},
                          {"media_seconds", pressure.media_seconds()}, {"wall_seconds", wall}};
  }
  RemoveTree(dir);
  if (!json_path.empty()) std::ofstream(json_path) << j.dump(2) << "\n";
  return 0;
}
