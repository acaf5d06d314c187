// vlcache-loadtest: offers the vlcache server a bounded load and reports what it sustained.
//
//   vlcache-loadtest --target 127.0.0.1:50051 --workload image --rate 2 --num-requests 100 \
//       --concurrency 8 --json result.json
//
// Arrivals: --rate R requests per second with gamma-distributed gaps (--burstiness 1 is Poisson,
// smaller is burstier), at most --concurrency requests in flight; --rate 0 keeps --concurrency in
// flight (a closed loop). The run ends after --num-requests requests or --duration seconds,
// whichever comes first, and then waits for the requests in flight. Each request is timed from
// its send: time to the first token, the gaps between tokens, end to end; the summary uses the
// key names of the common LLM serving benchmark's result files (request_throughput,
// mean_ttft_ms, p99_itl_ms, ...). All calls go through the project's C++ client (clients/cpp).
#include <ctime>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>
#include <opencv2/core.hpp>
#include <opencv2/videoio.hpp>

#include "absl/status/status.h"
#include "clients/cpp/vlcache_client.h"
#include "common/fs.h"
#include "loadtest/stats.h"
#include "tools/make_tiny.h"

namespace {

using namespace vlc;
using Clock = std::chrono::steady_clock;
namespace pb = client::pb;

double Seconds(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

// An encoded video of `frames` random frames (MJPEG in AVI), written through a private file.
std::string RandomVideo(int frames, int seed) {
  const std::string dir = MakeTempDir("vlcache-loadtest-");
  const std::string path = dir + "/clip.avi";
  {
    cv::VideoWriter vw(path, cv::VideoWriter::fourcc('M', 'J', 'P', 'G'), 10, cv::Size(64, 48));
    cv::RNG rng(seed);
    for (int i = 0; i < frames; ++i) {
      cv::Mat f(48, 64, CV_8UC3);
      rng.fill(f, cv::RNG::UNIFORM, 0, 256);
      vw.write(f);
    }
  }
  std::ifstream in(path, std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  RemoveTree(dir);
  return bytes;
}

struct Options {
  std::string target = "127.0.0.1:50051";
  std::string token;
  std::string workload = "image";
  double rate = 0;
  double burstiness = 1;
  int concurrency = 4;
  int num_requests = 0;
  double duration = 0;
  int max_new_tokens = 32;
  std::string kv_policy;
  double kv_budget = 0;
  int frames = 8;
  int images = 4;  // distinct pictures the image workload cycles through
  uint64_t seed = 1;
  double request_timeout = 300;
  std::string json_path, records_path;
};

class Run {
 public:
  explicit Run(const Options& o) : o_(o), rng_(o.seed) {}

  int Go() {
    client::ConnectOptions co;
    co.target = o_.target;
    co.token = o_.token;
    auto c = client::Client::Connect(co);
    if (!c.ok()) {
      std::cerr << "error: " << c.status().message() << "\n";
      return 2;
    }
    client_ = std::move(c).value();
    if (!MakeRequests()) return 2;
    const double cpu0 = static_cast<double>(std::clock()) / CLOCKS_PER_SEC;
    start_ = Clock::now();
    Issue();
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] { return in_flight_ == 0; });
    }
    const double duration = Seconds(start_, Clock::now());
    // Every call has also left gRPC's hands before the client (and its channel) goes.
    for (auto& call : calls_) call->Wait();
    calls_.clear();
    const double cpu = static_cast<double>(std::clock()) / CLOCKS_PER_SEC - cpu0;
    nlohmann::json summary = loadtest::Summarize(records_, duration);
    summary["workload"] = o_.workload;
    summary["request_rate"] = o_.rate > 0 ? nlohmann::json(o_.rate) : nlohmann::json("inf");
    summary["burstiness"] = o_.burstiness;
    summary["max_concurrency"] = o_.concurrency;
    summary["num_prompts"] = static_cast<int>(records_.size());
    summary["client_cpu_seconds_per_request"] = records_.empty() ? 0 : cpu / records_.size();
    Print(summary);
    if (!o_.json_path.empty()) std::ofstream(o_.json_path) << summary.dump(2) << "\n";
    if (!o_.records_path.empty()) {
      std::ofstream out(o_.records_path);
      for (const auto& r : records_) out << r.ToJson().dump() << "\n";
    }
    return 0;
  }

 private:
  // The workload's distinct requests, made once; the run cycles through them.
  bool MakeRequests() {
    if (o_.workload != "image" && o_.workload != "video") {
      std::cerr << "error: --workload must be image or video, got \"" << o_.workload << "\"\n";
      return false;
    }
    const int distinct = o_.workload == "image" ? std::max(1, o_.images) : 1;
    for (int i = 0; i < distinct; ++i) {
      pb::GenerateRequest r;
      if (o_.workload == "image") {
        r.mutable_media()->add_images(tools::RandomPng(96, 72, static_cast<int>(o_.seed) + i));
        r.set_prompt("what color is the triangle?");
      } else {
        r.mutable_media()->set_video(RandomVideo(o_.frames, static_cast<int>(o_.seed) + i));
        r.mutable_media()->set_video_frames(o_.frames);
        r.set_prompt("what happens in the video?");
      }
      r.mutable_sampling()->set_max_new_tokens(o_.max_new_tokens);
      r.mutable_sampling()->set_temperature(0);
      if (!o_.kv_policy.empty()) r.mutable_cache()->set_policy(o_.kv_policy);
      if (o_.kv_budget > 0) r.mutable_cache()->set_budget(o_.kv_budget);
      requests_.push_back(std::move(r));
    }
    return true;
  }

  bool Done(int sent) const {
    if (o_.num_requests > 0 && sent >= o_.num_requests) return true;
    return o_.duration > 0 && Seconds(start_, Clock::now()) >= o_.duration;
  }

  void Issue() {
    std::gamma_distribution<double> gap(o_.burstiness, 1.0 / (o_.rate * o_.burstiness));
    auto next = Clock::now();
    for (int sent = 0; !Done(sent); ++sent) {
      if (o_.rate > 0) {
        std::this_thread::sleep_until(next);
        next += std::chrono::duration_cast<Clock::duration>(
            std::chrono::duration<double>(gap(rng_)));
      }
      {
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait(lock, [&] { return in_flight_ < o_.concurrency; });
        ++in_flight_;
        records_.emplace_back();
      }
      Send(sent);
    }
  }

  void Send(int index) {
    auto timing = std::make_shared<Timing>();
    timing->index = index;
    timing->sent = Clock::now();
    client::CallOptions co;
    co.deadline = std::chrono::microseconds(static_cast<int64_t>(o_.request_timeout * 1e6));
    calls_.push_back(client_->StartGenerate(
        requests_[index % requests_.size()], co,
        [timing](const pb::GenerateResponse& r) {
          const auto now = Clock::now();
          const int tokens = r.token_ids_size();
          if (tokens > 0 || !r.text().empty()) {
            if (timing->first < 0) {
              timing->first = Seconds(timing->sent, now);
            } else if (tokens > 0) {
              // A message can carry several tokens (text held back for a stop string or a
              // split character): its gap is shared among them.
              const double gap = Seconds(timing->last, now) / tokens;
              for (int i = 0; i < tokens; ++i) timing->itl.push_back(gap);
            }
            timing->last = now;
          }
          if (r.has_usage()) timing->usage = r.usage();
        },
        [this, timing](const grpc::Status& status) { Finish(*timing, status); }));
  }

  struct Timing {
    int index = 0;
    Clock::time_point sent, last;
    double first = -1;
    std::vector<double> itl;
    pb::Usage usage;
  };

  void Finish(const Timing& t, const grpc::Status& status) {
    loadtest::RequestRecord r;
    r.workload = o_.workload;
    r.code = absl::StatusCodeToString(static_cast<absl::StatusCode>(status.error_code()));
    r.error = status.error_message();
    r.start_s = Seconds(start_, t.sent);
    r.ttft_s = t.first;
    r.e2e_s = Seconds(t.sent, Clock::now());
    r.itl_s = t.itl;
    r.prompt_tokens = t.usage.prompt_tokens();
    r.output_tokens = t.usage.generated_tokens();
    r.kv_bytes_kept = t.usage.kv_bytes_kept();
    r.kv_bytes_full = t.usage.kv_bytes_full();
    r.server_ttft_s = t.usage.ttft_seconds();
    std::lock_guard<std::mutex> lock(mu_);
    records_[t.index] = std::move(r);
    --in_flight_;
    cv_.notify_all();
  }

  void Print(const nlohmann::json& s) const {
    std::printf("workload %s: %d completed, %d failed", o_.workload.c_str(),
                s["completed"].get<int>(), s["failed"].get<int>());
    for (const auto& [code, n] : s["failed_by_code"].items()) {
      std::printf(" (%s: %d)", code.c_str(), n.get<int>());
    }
    std::printf(" in %.2f s\n", s["duration"].get<double>());
    std::printf("requests/s %.3f, output tokens/s %.2f\n", s["request_throughput"].get<double>(),
                s["output_throughput"].get<double>());
    for (const char* m : {"ttft", "tpot", "itl", "e2el"}) {
      const std::string k(m);
      std::printf("%-5s ms: mean %.1f  median %.1f  p90 %.1f  p99 %.1f\n", m,
                  s["mean_" + k + "_ms"].get<double>(), s["median_" + k + "_ms"].get<double>(),
                  s["p90_" + k + "_ms"].get<double>(), s["p99_" + k + "_ms"].get<double>());
    }
    std::printf("client CPU %.4f s per request\n",
                s["client_cpu_seconds_per_request"].get<double>());
  }

  const Options& o_;
  std::mt19937_64 rng_;
  std::unique_ptr<client::Client> client_;
  std::vector<pb::GenerateRequest> requests_;
  std::vector<std::shared_ptr<client::StreamCall>> calls_;  // touched by the sending thread only
  Clock::time_point start_;
  std::mutex mu_;
  std::condition_variable cv_;
  int in_flight_ = 0;
  std::vector<loadtest::RequestRecord> records_;
};

}  // namespace

int main(int argc, char** argv) {
  Options o;
  CLI::App app{"vlcache-loadtest: a bounded gRPC load on the vlcache server, and what it sustained"};
  app.add_option("--target", o.target, "Server address HOST:PORT")->capture_default_str();
  app.add_option("--token", o.token, "Bearer token (default: $VLC_AUTH_TOKEN)")
      ->envname("VLC_AUTH_TOKEN");
  app.add_option("--workload", o.workload, "image (picture + question) or video (F frames)")
      ->capture_default_str();
  app.add_option("--rate", o.rate, "Requests per second; 0 = keep --concurrency in flight")
      ->check(CLI::NonNegativeNumber)->capture_default_str();
  app.add_option("--burstiness", o.burstiness, "Gamma shape of the gaps; 1 = Poisson")
      ->check(CLI::PositiveNumber)->capture_default_str();
  app.add_option("--concurrency", o.concurrency, "Most requests in flight")
      ->check(CLI::PositiveNumber)->capture_default_str();
  app.add_option("--num-requests", o.num_requests, "Requests to send; 0 = until --duration")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--duration", o.duration, "Seconds to send for; 0 = until --num-requests")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--max-new-tokens", o.max_new_tokens, "Tokens asked per request")
      ->check(CLI::PositiveNumber)->capture_default_str();
  app.add_option("--kv-policy", o.kv_policy, "KV cache policy; default: the server's");
  app.add_option("--kv-budget", o.kv_budget, "Fraction of the KV cache kept, in (0, 1]");
  app.add_option("--frames", o.frames, "Frames of the video workload")
      ->check(CLI::PositiveNumber)->capture_default_str();
  app.add_option("--seed", o.seed, "Seed of the arrivals and the pictures")->capture_default_str();
  app.add_option("--request-timeout", o.request_timeout, "Deadline of each request, seconds")
      ->check(CLI::PositiveNumber)->capture_default_str();
  app.add_option("--json", o.json_path, "Write the summary here");
  app.add_option("--records", o.records_path, "Write one JSON line per request here");
  CLI11_PARSE(app, argc, argv);
  if (o.num_requests == 0 && o.duration == 0) {
    std::cerr << "error: give --num-requests or --duration (the run must end by itself)\n";
    return 2;
  }
  return Run(o).Go();
}
