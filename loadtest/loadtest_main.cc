// vlcache-loadtest: offers the vlcache server a bounded load and reports what it sustained.
//
//   vlcache-loadtest --target 127.0.0.1:50051 --workload image:3,video:1,session:1 --rate 2 \
//       --num-requests 100 --slo ttft=2000,tpot=200 --json result.json
//
// Arrivals: --rate R per second with gamma-distributed gaps (--burstiness 1 is Poisson, smaller
// is burstier), at most --concurrency in flight (an arrival waits for a slot); --rate 0 keeps
// --concurrency in flight (a closed loop); --rates R1,R2,... runs one bounded run per rate. An
// arrival is one request, or one whole session (create, turns with think time between, delete).
// A run ends after --num-requests arrivals or --duration seconds, whichever comes first, and then
// waits for the work in flight. Each streamed call is timed from its send (time to the first
// token, every gap between tokens, end to end) and its answer is checked when it is known. The
// summary uses the key names of the common LLM serving benchmark's result files. All calls go
// through the project's C++ client (clients/cpp), on gRPC's callback API; one thread of this
// program starts every call and owns every record, gRPC's threads only time the messages.
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <ctime>
#include <deque>
#include <fstream>
#include <functional>
#include <iostream>
#include <map>
#include <mutex>
#include <queue>
#include <random>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "clients/cpp/vlcache_client.h"
#include "loadtest/plot.h"
#include "loadtest/server_histograms.h"
#include "loadtest/stats.h"
#include "loadtest/workload.h"
#include "tools/vqa/vqa.h"

namespace {

using namespace vlc;
using namespace vlc::loadtest;
using Clock = std::chrono::steady_clock;

double Seconds(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

// A call's end in its record: the status code's name and, when not OK, the server's message.
void SetStatus(const grpc::Status& status, RequestRecord* rec) {
  rec->code = absl::StatusCodeToString(static_cast<absl::StatusCode>(status.error_code()));
  rec->error = status.error_message();
}

Clock::duration FromSeconds(double s) {
  return std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(s));
}

// Closures run one at a time on the thread that calls Run, each at its time or after.
class EventLoop {
 public:
  void At(Clock::time_point when, std::function<void()> fn) {
    std::lock_guard<std::mutex> lock(mu_);
    events_.push({when, seq_++, std::move(fn)});
    cv_.notify_one();
  }
  void Post(std::function<void()> fn) { At(Clock::now(), std::move(fn)); }
  void Stop() { stop_ = true; }  // from a closure: Run returns after it

  void Run() {
    std::unique_lock<std::mutex> lock(mu_);
    while (!stop_) {
      if (events_.empty()) {
        cv_.wait(lock);
        continue;
      }
      // A copy: while this waits, At may grow the queue and move its elements.
      const Clock::time_point next = events_.top().when;
      if (next > Clock::now()) {
        cv_.wait_until(lock, next);
        continue;
      }
      auto fn = std::move(const_cast<Event&>(events_.top()).fn);
      events_.pop();
      lock.unlock();
      fn();
      lock.lock();
    }
  }

 private:
  struct Event {
    Clock::time_point when;
    uint64_t seq;
    std::function<void()> fn;
    bool operator<(const Event& o) const {  // the earliest on top; equal times in order
      return when != o.when ? when > o.when : seq > o.seq;
    }
  };
  std::mutex mu_;
  std::condition_variable cv_;
  std::priority_queue<Event> events_;
  uint64_t seq_ = 0;
  bool stop_ = false;  // touched by the loop's thread only
};

struct Options {
  std::string target = "127.0.0.1:50051";
  std::string token;
  std::string workload = "image";
  std::string workload_file;
  double rate = 0;
  std::string rates;
  double burstiness = 1;
  int concurrency = 4;
  int num_requests = 0;
  double duration = 0;
  int max_new_tokens = 32;
  double temperature = 0;
  std::string kv_policy;
  double kv_budget = 0;
  int frames = 8;
  int session_frames = 1;
  int turns = 3;
  double think_time = 0;
  int distinct = 16;
  int image_size = 0;
  uint64_t seed = 1;
  double request_timeout = 300;
  int retries = 0;
  // Churn (a soak's traffic): fractions of the streamed calls cancelled by the client or given a
  // deadline that can expire mid-answer (both within churn_delay_ms of their start), of the
  // sessions left without a DeleteSession (they end by TTL or eviction), of the one-shot
  // requests sent broken (an empty prompt, or a KV budget of 2: INVALID_ARGUMENT).
  double cancel_fraction = 0, short_deadline_fraction = 0, abandon_fraction = 0, bad_fraction = 0;
  double churn_delay_ms = 300;
  std::string slo_spec;
  std::string metrics;
  std::string json_path, records_path, plot_path;
  bool no_progress = false;
};

// Messages of one streamed call, timed on gRPC's threads (one at a time, in order).
struct Timing {
  Clock::time_point sent, last;
  double first = -1;
  std::vector<double> itl;
  std::string text;
  vlcache::v1::Usage usage;
};

// One run at one offered rate.
class Run {
 public:
  Run(const Options& o, double rate, client::Client* client, const std::vector<Scenario>& mix,
      const std::vector<std::vector<Task>>& tasks, const Slo& slo)
      : o_(o), rate_(rate), client_(client), mix_(mix), tasks_(tasks), slo_(slo),
        sampler_(mix), rng_(o.seed), next_task_(mix.size(), 0),
        progress_(!o.no_progress && isatty(STDERR_FILENO)) {}

  nlohmann::json Go() {
    const double cpu0 = static_cast<double>(std::clock()) / CLOCKS_PER_SEC;
    start_ = next_arrival_ = Clock::now();
    loop_.Post([this] {
      if (rate_ > 0) {
        Arrive();
      } else {
        for (int i = 0; i < o_.concurrency && !Done(); ++i) Arrive();
      }
      if (progress_) Progress();
    });
    loop_.Run();
    const double duration = Seconds(start_, Clock::now());
    const double cpu = static_cast<double>(std::clock()) / CLOCKS_PER_SEC - cpu0;
    if (progress_) std::fprintf(stderr, "\r\033[K");
    nlohmann::json s = Summarize(records_, duration, slo_);
    s["request_rate"] = rate_ > 0 ? nlohmann::json(rate_) : nlohmann::json("inf");
    s["burstiness"] = o_.burstiness;
    s["max_concurrency"] = o_.concurrency;
    s["num_prompts"] = sent_;
    s["sessions_abandoned"] = abandoned_;
    s["client_cpu_seconds_per_request"] = records_.empty() ? 0 : cpu / records_.size();
    return s;
  }

  const std::vector<RequestRecord>& records() const { return records_; }

 private:
  bool Done() const {
    if (o_.num_requests > 0 && sent_ >= o_.num_requests) return true;
    return o_.duration > 0 && Seconds(start_, Clock::now()) >= o_.duration;
  }

  // An arrival: its work starts now, or when a slot frees; the next is scheduled.
  void Arrive() {
    if (Done()) {
      arrivals_over_ = true;
      MaybeStop();
      return;
    }
    const int unit = sent_++;
    const int s = sampler_.Next(rng_);
    const Task* task = &tasks_[s][next_task_[s]++ % tasks_[s].size()];
    if (in_flight_ < o_.concurrency) {
      StartUnit(unit, task);
    } else {
      backlog_.push_back({unit, task});
    }
    if (o_.num_requests > 0 && sent_ >= o_.num_requests) {
      arrivals_over_ = true;  // the last one: the run ends when the work in flight does
    } else if (rate_ > 0) {
      std::gamma_distribution<double> gap(o_.burstiness, 1.0 / (rate_ * o_.burstiness));
      next_arrival_ += FromSeconds(gap(rng_));
      if (next_arrival_ < start_) next_arrival_ = start_;
      loop_.At(next_arrival_, [this] { Arrive(); });
    }
  }

  void StartUnit(int unit, const Task* task) {
    ++in_flight_;
    if (mix_[task->scenario].kind == Kind::kSession) {
      CreateSession(unit, task);
    } else {
      Stream(unit, task, 0, "", [this](bool) { EndUnit(); });
    }
  }

  void EndUnit() {
    --in_flight_;
    if (!backlog_.empty()) {
      const auto [unit, task] = backlog_.front();
      backlog_.pop_front();
      StartUnit(unit, task);
    } else if (rate_ <= 0) {
      Arrive();
    }
    MaybeStop();
  }

  void MaybeStop() {
    if (in_flight_ == 0 && backlog_.empty() && (arrivals_over_ || Done())) {
      arrivals_over_ = true;
      loop_.Stop();
    }
  }

  RequestRecord NewRecord(const char* method, int unit, const Task* task, int turn) {
    RequestRecord r;
    r.method = method;
    r.scenario = mix_[task->scenario].name;
    r.unit = unit;
    r.turn = turn;
    r.start_s = Seconds(start_, Clock::now());
    return r;
  }

  client::CallOptions CallOpts() const {
    client::CallOptions co;
    co.deadline = std::chrono::microseconds(static_cast<int64_t>(o_.request_timeout * 1e6));
    return co;
  }

  // A Generate (session_id empty) or the turn `turn` of a session; `then(ok)` runs after.
  // The wait before retry `attempt` (0-based) of a call that ended UNAVAILABLE: 50 ms doubling,
  // at most 2 s, with up to 50% jitter so that retries of one failure spread out.
  Clock::duration Backoff(int attempt) {
    const double base = std::min(2.0, 0.05 * std::pow(2.0, attempt));
    return FromSeconds(base * std::uniform_real_distribution<double>(0.5, 1.0)(rng_));
  }
  // UNAVAILABLE (a replica draining, or none reachable), or a stream a proxy reset because the
  // replica behind it died mid-answer (nginx resets it: INTERNAL "Received RST_STREAM").
  bool Retry(const grpc::Status& status, int attempt) const {
    const bool reset = status.error_code() == grpc::StatusCode::INTERNAL &&
                       status.error_message().find("RST_STREAM") != std::string::npos;
    return (status.error_code() == grpc::StatusCode::UNAVAILABLE || reset) &&
           attempt < o_.retries;
  }

  void Stream(int unit, const Task* task, int turn, const std::string& session_id,
              std::function<void(bool)> then, int attempt = 0) {
    auto timing = std::make_shared<Timing>();
    const int key = next_call_++;
    auto on_response = [timing](const vlcache::v1::GenerateResponse& r) {
      const auto now = Clock::now();
      const int tokens = r.token_ids_size();
      if (tokens > 0 || !r.text().empty()) {
        if (timing->first < 0) {
          timing->first = Seconds(timing->sent, now);
        } else if (tokens > 0) {
          // A message can carry several tokens (text held back for a stop string or a split
          // character): its gap is shared among them.
          const double gap = Seconds(timing->last, now) / tokens;
          for (int i = 0; i < tokens; ++i) timing->itl.push_back(gap);
        }
        timing->last = now;
      }
      timing->text += r.text();
      if (r.has_usage()) timing->usage = r.usage();
    };
    RequestRecord rec = NewRecord(session_id.empty() ? "Generate" : "SessionGenerate", unit,
                                  task, turn);
    rec.expected = task->turns[turn].answer;
    rec.retries = attempt;
    // Churn: at most one kind per call, drawn once (a retry keeps it).
    client::CallOptions options = CallOpts();
    const pb::GenerateRequest* request = &task->request;
    pb::GenerateRequest broken;
    std::uniform_real_distribution<double> unit_draw(0.0, 1.0);
    const double draw = unit_draw(rng_);
    const auto churn_delay = FromSeconds(unit_draw(rng_) * o_.churn_delay_ms / 1e3);
    if (draw < o_.cancel_fraction) {
      rec.churn = "cancel";
    } else if (draw < o_.cancel_fraction + o_.short_deadline_fraction) {
      rec.churn = "deadline";
      options.deadline = std::chrono::duration_cast<std::chrono::microseconds>(churn_delay) +
                         std::chrono::microseconds(1);
    } else if (session_id.empty() &&
               draw < o_.cancel_fraction + o_.short_deadline_fraction + o_.bad_fraction) {
      rec.churn = "bad";
      broken = task->request;
      if (unit_draw(rng_) < 0.5) {
        broken.set_prompt("");
      } else {
        broken.mutable_cache()->set_policy("vlcache");
        broken.mutable_cache()->set_budget(2.0f);
      }
      request = &broken;
    }
    const bool cancel = rec.churn == "cancel";
    auto on_done = [this, key, timing, rec = std::move(rec), then = std::move(then), unit, task,
                    turn, session_id, attempt](const grpc::Status& status) mutable {
      const auto end = Clock::now();
      loop_.Post([this, key, timing, end, status, rec = std::move(rec), then = std::move(then),
                  unit, task, turn, session_id, attempt]() mutable {
        calls_.erase(key);
        if (Retry(status, attempt)) {
          loop_.At(Clock::now() + Backoff(attempt),
                   [this, unit, task, turn, session_id, then = std::move(then), attempt]() mutable {
                     Stream(unit, task, turn, session_id, std::move(then), attempt + 1);
                   });
          return;
        }
        SetStatus(status, &rec);
        rec.ttft_s = timing->first;
        rec.e2e_s = Seconds(timing->sent, end);
        rec.itl_s = std::move(timing->itl);
        rec.text = std::move(timing->text);
        const auto& u = timing->usage;
        rec.prompt_tokens = u.prompt_tokens();
        rec.output_tokens = u.generated_tokens();
        rec.kv_bytes_kept = u.kv_bytes_kept();
        rec.kv_bytes_full = u.kv_bytes_full();
        rec.server_ttft_s = u.ttft_seconds();
        rec.server_queue_s = u.queue_seconds();
        Add(std::move(rec));
        then(status.ok());
      });
    };
    timing->sent = Clock::now();
    if (session_id.empty()) {
      calls_[key] = client_->StartGenerate(*request, options, on_response, on_done);
    } else {
      vlcache::v1::SessionGenerateRequest req;
      req.set_session_id(session_id);
      req.set_prompt(task->turns[turn].prompt);
      *req.mutable_sampling() = task->sampling;
      calls_[key] = client_->StartSessionGenerate(req, options, on_response, on_done);
    }
    if (cancel) {
      loop_.At(Clock::now() + churn_delay, [this, key] {
        auto it = calls_.find(key);
        if (it != calls_.end()) it->second->Cancel();
      });
    }
  }

  void CreateSession(int unit, const Task* task, int attempt = 0) {
    const auto sent = Clock::now();
    RequestRecord rec = NewRecord("CreateSession", unit, task, 0);
    rec.retries = attempt;
    client_->StartCreateSession(
        task->create, CallOpts(),
        [this, unit, task, sent, attempt, rec = std::move(rec)](
            grpc::Status status, vlcache::v1::SessionInfo info) mutable {
          const auto end = Clock::now();
          loop_.Post([this, unit, task, sent, end, status, attempt, id = info.session_id(),
                      rec = std::move(rec)]() mutable {
            if (Retry(status, attempt)) {
              loop_.At(Clock::now() + Backoff(attempt),
                       [this, unit, task, attempt] { CreateSession(unit, task, attempt + 1); });
              return;
            }
            SetStatus(status, &rec);
            rec.e2e_s = Seconds(sent, end);
            Add(std::move(rec));
            if (status.ok()) {
              Turn(unit, task, 0, id);
            } else {
              EndUnit();
            }
          });
        });
  }

  void Turn(int unit, const Task* task, int turn, const std::string& id) {
    Stream(unit, task, turn, id, [this, unit, task, turn, id](bool ok) {
      const double think = mix_[task->scenario].think_s;
      if (ok && turn + 1 < static_cast<int>(task->turns.size())) {
        loop_.At(Clock::now() + FromSeconds(think),
                 [this, unit, task, turn, id] { Turn(unit, task, turn + 1, id); });
      } else if (std::uniform_real_distribution<double>(0.0, 1.0)(rng_) < o_.abandon_fraction) {
        ++abandoned_;  // left to the server's TTL and eviction
        EndUnit();
      } else {
        DeleteSession(unit, task, id);
      }
    });
  }

  void DeleteSession(int unit, const Task* task, const std::string& id) {
    const auto sent = Clock::now();
    RequestRecord rec = NewRecord("DeleteSession", unit, task, 0);
    vlcache::v1::DeleteSessionRequest req;
    req.set_session_id(id);
    client_->StartDeleteSession(
        req, CallOpts(), [this, sent, rec = std::move(rec)](grpc::Status status) mutable {
          const auto end = Clock::now();
          loop_.Post([this, sent, end, status, rec = std::move(rec)]() mutable {
            SetStatus(status, &rec);
            rec.e2e_s = Seconds(sent, end);
            Add(std::move(rec));
            EndUnit();
          });
        });
  }

  void Add(RequestRecord r) {
    if (r.streamed()) {
      ++(r.code == "OK" ? done_ : failed_);
      if (r.code == "OK" && r.ttft_s >= 0) recent_ttft_.push_back(r.ttft_s);
      done_times_.push_back(Clock::now());
    }
    records_.push_back(std::move(r));
  }

  // The live line on a terminal: sent, done, failed, the rate of the last 5 s, p50 TTFT.
  void Progress() {
    if (arrivals_over_ && in_flight_ == 0) return;
    const auto now = Clock::now();
    while (!done_times_.empty() && Seconds(done_times_.front(), now) > 5) done_times_.pop_front();
    if (recent_ttft_.size() > 200) {
      recent_ttft_.erase(recent_ttft_.begin(), recent_ttft_.end() - 200);
    }
    const double window = std::min(5.0, std::max(Seconds(start_, now), 1e-3));
    std::fprintf(stderr, "\r\033[K%.0fs  sent %d  done %d  failed %d  in flight %d  %.2f req/s"
                 "  p50 TTFT %.0f ms", Seconds(start_, now), sent_, done_, failed_, in_flight_,
                 done_times_.size() / window, Percentile(recent_ttft_, 50) * 1e3);
    std::fflush(stderr);
    loop_.At(now + std::chrono::milliseconds(500), [this] { Progress(); });
  }

  const Options& o_;
  const double rate_;
  client::Client* client_;
  const std::vector<Scenario>& mix_;
  const std::vector<std::vector<Task>>& tasks_;
  const Slo slo_;
  MixSampler sampler_;
  std::mt19937_64 rng_;
  std::vector<size_t> next_task_;
  const bool progress_;
  EventLoop loop_;
  // Touched by the loop's thread only.
  Clock::time_point start_, next_arrival_;
  int sent_ = 0, in_flight_ = 0, done_ = 0, failed_ = 0, next_call_ = 0, abandoned_ = 0;
  bool arrivals_over_ = false;
  std::deque<std::pair<int, const Task*>> backlog_;
  std::map<int, std::shared_ptr<client::StreamCall>> calls_;
  std::vector<RequestRecord> records_;
  std::deque<Clock::time_point> done_times_;
  std::vector<double> recent_ttft_;
};

void Print(const std::string& workload, const nlohmann::json& s) {
  const auto& rate = s["request_rate"];
  char offered[32] = "closed loop";
  if (rate.is_number()) std::snprintf(offered, sizeof offered, "%g req/s", rate.get<double>());
  std::printf("%s, %s: %d completed, %d failed", workload.c_str(), offered,
              s["completed"].get<int>(), s["failed"].get<int>());
  for (const auto& [code, n] : s["failed_by_code"].items()) {
    std::printf(" (%s: %d)", code.c_str(), n.get<int>());
  }
  std::printf(" in %.2f s\n", s["duration"].get<double>());
  std::printf("requests/s %.3f, output tokens/s %.2f", s["request_throughput"].get<double>(),
              s["output_throughput"].get<double>());
  if (s.contains("request_goodput")) {
    std::printf(", goodput %.3f req/s (%.1f%% within the SLO)", s["request_goodput"].get<double>(),
                100 * s["slo_attainment"].get<double>());
  }
  std::printf("\n");
  for (const char* m : {"ttft", "tpot", "itl", "e2el"}) {
    const std::string k(m);
    std::printf("%-5s ms: mean %.1f  median %.1f  p90 %.1f  p99 %.1f\n", m,
                s["mean_" + k + "_ms"].get<double>(), s["median_" + k + "_ms"].get<double>(),
                s["p90_" + k + "_ms"].get<double>(), s["p99_" + k + "_ms"].get<double>());
  }
  if (s["answers_known"].get<int>() > 0) {
    std::printf("accuracy %.3f (%d of %d answers right)\n", s["accuracy"].get<double>(),
                s["answers_correct"].get<int>(), s["answers_known"].get<int>());
  }
  if (s.contains("server_histograms")) {
    const auto& h = s["server_histograms"];
    auto mean = [&](const char* name) { return h[name]["mean_ms"].get<double>(); };
    std::printf("server ms, mean: queue %.1f, media %.1f, prefill %.1f, first token %.1f, "
                "token gap %.2f, request %.1f\n",
                mean("vlcache_queue_time_seconds"), mean("vlcache_media_prepare_seconds"),
                mean("vlcache_prefill_seconds"), mean("vlcache_time_to_first_token_seconds"),
                mean("vlcache_inter_token_latency_seconds"),
                mean("vlcache_request_duration_seconds"));
  }
  std::printf("KV cache kept %.3f of full; client CPU %.4f s per call\n",
              s["kv_kept_fraction"].get<double>(),
              s["client_cpu_seconds_per_request"].get<double>());
}

int Main(Options& o) {
  if (o.num_requests == 0 && o.duration == 0) {
    std::cerr << "error: give --num-requests or --duration (the run must end by itself)\n";
    return 2;
  }
  std::vector<double> rates;
  if (o.rates.empty()) {
    rates.push_back(o.rate);
  } else {
    for (absl::string_view r : absl::StrSplit(o.rates, ',', absl::SkipWhitespace())) {
      double x = 0;
      if (!absl::SimpleAtod(r, &x) || !(x > 0)) {
        std::cerr << "error: --rates takes positive requests per second, got \"" << r << "\"\n";
        return 2;
      }
      rates.push_back(x);
    }
  }
  Slo slo;
  if (!o.slo_spec.empty()) {
    auto parsed = ParseSlo(o.slo_spec);
    if (!parsed.ok()) {
      std::cerr << "error: " << parsed.status().message() << "\n";
      return 2;
    }
    slo = *parsed;
  }
  Scenario base;
  base.max_new_tokens = o.max_new_tokens;
  base.temperature = o.temperature;
  base.kv_policy = o.kv_policy;
  base.kv_budget = o.kv_budget;
  base.frames = o.frames;
  base.turns = o.turns;
  base.think_s = o.think_time;
  auto mix = o.workload_file.empty()
                 ? ParseMix(o.workload, base, o.frames, o.session_frames)
                 : ReadWorkloadFile(o.workload_file, base);
  if (!mix.ok()) {
    std::cerr << "error: " << mix.status().message() << "\n";
    return 2;
  }
  const std::string workload = o.workload_file.empty() ? o.workload : o.workload_file;

  client::ConnectOptions co;
  co.target = o.target;
  co.token = o.token;
  auto c = client::Client::Connect(co);
  if (!c.ok()) {
    std::cerr << "error: " << c.status().message() << "\n";
    return 2;
  }
  std::unique_ptr<client::Client> client = std::move(c).value();
  MediaOptions mo;
  mo.distinct = o.distinct;
  mo.seed = o.seed;
  mo.image_size = o.image_size;
  if (mo.image_size == 0) {
    client::CallOptions info_opts;
    info_opts.deadline = std::chrono::seconds(30);
    vlcache::v1::ModelInfo info;
    const grpc::Status st = client->GetModelInfo(info_opts, &info);
    if (!st.ok()) {
      std::cerr << "error: the server at " << o.target << " did not answer GetModelInfo: "
                << st.error_message() << "\n";
      return 1;
    }
    // Pictures at the model's own input size, as the VQA set is made for it; a model with a
    // smaller input gets the smallest legible grid (the server scales it down).
    mo.image_size = std::max(info.image_size(), vqa::kMinCellPixels * vqa::Options{}.grid);
  }
  auto tasks = MakeTasks(*mix, mo);
  if (!tasks.ok()) {
    std::cerr << "error: " << tasks.status().message() << "\n";
    return 2;
  }

  std::vector<nlohmann::json> runs;
  std::ofstream records;
  if (!o.records_path.empty()) {
    records.open(o.records_path, std::ios::trunc);
    if (!records) {
      std::cerr << "error: cannot write " << o.records_path << "\n";
      return 1;
    }
  }
  for (double rate : rates) {
    HistogramTotals before;
    if (!o.metrics.empty()) {
      auto t = ScrapeHistograms(o.metrics);
      if (!t.ok()) {
        std::cerr << "error: --metrics: " << t.status().message() << "\n";
        return 1;
      }
      before = *std::move(t);
    }
    Run run(o, rate, client.get(), *mix, *tasks, slo);
    nlohmann::json s = run.Go();
    s["workload"] = workload;
    if (!o.metrics.empty()) {
      // The server observes a request's histograms as it ends, before its last message leaves.
      auto after = ScrapeHistograms(o.metrics);
      if (!after.ok()) {
        std::cerr << "error: --metrics: " << after.status().message() << "\n";
        return 1;
      }
      s["server_histograms"] = HistogramDelta(before, *after);
    }
    Print(workload, s);
    for (const auto& r : run.records()) {
      nlohmann::json line = r.ToJson();
      if (rates.size() > 1) line["request_rate"] = rate;
      records << line.dump() << "\n";
    }
    runs.push_back(std::move(s));
  }
  if (!o.json_path.empty()) {
    nlohmann::json out = runs.size() == 1 && o.rates.empty()
                             ? runs[0]
                             : nlohmann::json{{"workload", workload}, {"runs", runs}};
    std::ofstream f(o.json_path);
    f << out.dump(2) << "\n";
    if (!f) {
      std::cerr << "error: cannot write " << o.json_path << "\n";
      return 1;
    }
  }
  if (!o.plot_path.empty()) {
    std::string title = workload;
    if (!o.kv_policy.empty()) title += ", " + o.kv_policy;
    if (o.kv_budget > 0) title += " at " + std::to_string(o.kv_budget).substr(0, 4);
    const absl::Status st = PlotSweep(runs, "vlcache-loadtest: " + title, o.plot_path);
    if (!st.ok()) {
      std::cerr << "error: " << st.message() << "\n";
      return 1;
    }
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  CLI::App app{"vlcache-loadtest: a bounded gRPC load on the vlcache server, and what it sustained"};
  app.add_option("--target", o.target, "Server address HOST:PORT")->capture_default_str();
  app.add_option("--token", o.token, "Bearer token (default: $VLC_AUTH_TOKEN)")
      ->envname("VLC_AUTH_TOKEN");
  app.add_option("--workload", o.workload,
                 "Mix of image, video and session, weighted: e.g. image:3,video:1,session:1")
      ->capture_default_str();
  app.add_option("--workload-file", o.workload_file,
                 "JSONL scenarios (e.g. the items.jsonl of vlcache-vqa); replaces --workload")
      ->check(CLI::ExistingFile);
  app.add_option("--rate", o.rate, "Arrivals per second; 0 = keep --concurrency in flight")
      ->check(CLI::NonNegativeNumber)->capture_default_str();
  app.add_option("--rates", o.rates, "A sweep: one run per rate, e.g. 0.5,1,2,4")
      ->excludes("--rate");
  app.add_option("--burstiness", o.burstiness, "Gamma shape of the gaps; 1 = Poisson")
      ->check(CLI::PositiveNumber)->capture_default_str();
  app.add_option("--concurrency", o.concurrency, "Most arrivals in flight")
      ->check(CLI::PositiveNumber)->capture_default_str();
  app.add_option("--num-requests", o.num_requests, "Arrivals per run; 0 = until --duration")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--duration", o.duration, "Seconds to send for per run; 0 = until --num-requests")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--max-new-tokens", o.max_new_tokens, "Tokens asked per request or turn")
      ->check(CLI::PositiveNumber)->capture_default_str();
  app.add_option("--temperature", o.temperature, "Sampling temperature; 0 = greedy")
      ->check(CLI::NonNegativeNumber)->capture_default_str();
  app.add_option("--kv-policy", o.kv_policy, "KV cache policy; default: the server's");
  app.add_option("--kv-budget", o.kv_budget, "Fraction of the KV cache kept, in (0, 1]")
      ->check(CLI::Range(0.0, 1.0));
  app.add_option("--frames", o.frames, "Frames of a video request")
      ->check(CLI::Range(1, 16))->capture_default_str();
  app.add_option("--session-frames", o.session_frames, "Pictures a session is created with")
      ->check(CLI::Range(1, 16))->capture_default_str();
  app.add_option("--turns", o.turns, "Questions per session")
      ->check(CLI::PositiveNumber)->capture_default_str();
  app.add_option("--think-time", o.think_time, "Seconds between a session's turns")
      ->check(CLI::NonNegativeNumber)->capture_default_str();
  app.add_option("--distinct", o.distinct, "Distinct generated items per scenario")
      ->check(CLI::PositiveNumber)->capture_default_str();
  app.add_option("--image-size", o.image_size,
                 "Side of generated pictures; 0 = the model's input size (GetModelInfo)")
      ->check(CLI::NonNegativeNumber)->capture_default_str();
  app.add_option("--seed", o.seed, "Seed of the arrivals, the mix and the items")
      ->capture_default_str();
  app.add_option("--request-timeout", o.request_timeout, "Deadline of each call, seconds")
      ->check(CLI::PositiveNumber)->capture_default_str();
  app.add_option("--cancel-fraction", o.cancel_fraction,
                 "Fraction of streamed calls the client cancels, at a random moment within "
                 "--churn-delay-ms of their start")
      ->check(CLI::Range(0.0, 1.0));
  app.add_option("--short-deadline-fraction", o.short_deadline_fraction,
                 "Fraction of streamed calls given a deadline drawn within --churn-delay-ms")
      ->check(CLI::Range(0.0, 1.0));
  app.add_option("--abandon-fraction", o.abandon_fraction,
                 "Fraction of sessions left without DeleteSession (they end by TTL or eviction)")
      ->check(CLI::Range(0.0, 1.0));
  app.add_option("--bad-fraction", o.bad_fraction,
                 "Fraction of one-shot requests sent broken (empty prompt or KV budget 2)")
      ->check(CLI::Range(0.0, 1.0));
  app.add_option("--churn-delay-ms", o.churn_delay_ms,
                 "The window for --cancel-fraction and --short-deadline-fraction")
      ->check(CLI::PositiveNumber)->capture_default_str();
  app.add_option("--retries", o.retries,
                 "Retries of a call that ends UNAVAILABLE (a replica draining or gone) or whose "
                 "stream a proxy reset (its replica died mid-answer), after 50 ms, then doubling "
                 "up to 2 s; a record counts its retries")
      ->check(CLI::NonNegativeNumber)->capture_default_str();
  app.add_option("--slo", o.slo_spec,
                 "Objectives for the goodput, milliseconds: ttft=MS,tpot=MS,e2el=MS (any subset)");
  app.add_option("--metrics", o.metrics,
                 "The server's /metrics address HOST:PORT: report where its time went");
  app.add_option("--json", o.json_path, "Write the summary here (a sweep: {\"runs\": [...]})");
  app.add_option("--records", o.records_path, "Write one JSON line per call here");
  app.add_option("--plot", o.plot_path, "Draw latency and throughput against the offered rate (PNG)");
  app.add_flag("--no-progress", o.no_progress, "No live progress line (off anyway off a terminal)");
  CLI11_PARSE(app, argc, argv);
  return Main(o);
}
