#include "server/engine_loop.h"

#include <ATen/ATen.h>

#include <optional>

#include "absl/strings/str_cat.h"
#include "spdlog/spdlog.h"

namespace vlc::server {
namespace {

using Clock = std::chrono::steady_clock;

double SecondsSince(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

}  // namespace

void EventChannel::Push(StreamEvent e) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    events_.push_back(std::move(e));
  }
  cv_.notify_one();
}

bool EventChannel::Pop(StreamEvent* out, std::chrono::milliseconds timeout) {
  std::unique_lock<std::mutex> lock(mu_);
  if (!cv_.wait_for(lock, timeout, [&] { return !events_.empty(); })) return false;
  *out = std::move(events_.front());
  events_.pop_front();
  return true;
}

// A job on its way through the engine: prepared (media decoded, prompt built), then running.
struct EngineLoop::Active {
  std::shared_ptr<Job> job;
  engine::PreparedPrompt prompt;
  std::string policy;
  std::unique_ptr<engine::TextAssembler> text;
  engine::SeqId id = -1;
  Clock::time_point admitted;
  Clock::time_point last_token;
  double ttft_ms = -1;
  std::vector<int> pending_ids;  // tokens whose text is not out yet
  int64_t generated = 0;
};

EngineLoop::EngineLoop(engine::Pipeline* pipeline, EngineLoopOptions options, Metrics* metrics)
    : pipeline_(pipeline), options_(options), metrics_(metrics) {}

EngineLoop::~EngineLoop() { Stop(); }

void EngineLoop::Start() {
  generator_ = std::make_unique<engine::Generator>(&pipeline_->model(), pipeline_->cache(),
                                                   pipeline_->tokenizer().eos_id());
  thread_ = std::thread([this] { Run(); });
}

void EngineLoop::Stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stop_) return;
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

absl::Status EngineLoop::Submit(std::shared_ptr<Job> job) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stop_) return absl::UnavailableError("the server is shutting down");
    if (static_cast<int>(queue_.size()) >= options_.max_queue) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "the request queue is full (", queue_.size(), " waiting); retry later"));
    }
    queue_.push_back(std::move(job));
    queue_depth_ = static_cast<int64_t>(queue_.size());
  }
  cv_.notify_one();
  return absl::OkStatus();
}

void EngineLoop::Fail(Job& job, absl::Status status) {
  StreamEvent e;
  e.final = true;
  e.status = std::move(status);
  e.queue_seconds = SecondsSince(job.enqueued);
  job.channel->Push(std::move(e));
}

void EngineLoop::PublishGauges() {
  running_count_ = static_cast<int64_t>(active_.size());
  if (!metrics_) return;
  const auto& pool = pipeline_->pool();
  const auto& t = pipeline_->model().config().text;
  const int64_t per_token = pipeline_->cache()->BytesPerTokenPerLayer() * t.num_hidden_layers;
  int64_t full = 0;
  for (const auto& a : active_) {
    full += (static_cast<int64_t>(a->prompt.ids.size()) + a->generated) * per_token;
  }
  metrics_->SetKvBytes(pool.used_bytes(), pool.capacity_bytes(), full);
  metrics_->SetBatchSize(static_cast<int64_t>(active_.size()));
  metrics_->SetQueueDepth(queue_depth_.load());
}

void EngineLoop::Admit(std::vector<std::shared_ptr<Job>>& waiting) {
  auto* cache = pipeline_->cache();
  while (!waiting.empty() && static_cast<int>(active_.size()) < options_.max_running) {
    std::shared_ptr<Job> job = waiting.front();
    if (job->cancelled || Clock::now() > job->deadline) {
      waiting.erase(waiting.begin());
      Fail(*job, job->cancelled ? absl::CancelledError("cancelled while queued")
                                : absl::DeadlineExceededError("deadline passed while queued"));
      continue;
    }
    auto prompt = pipeline_->Prepare(job->request);
    if (!prompt.ok()) {
      waiting.erase(waiting.begin());
      Fail(*job, prompt.status());
      continue;
    }
    // Admission: the pool must hold the whole prompt (and the first generated token).
    const int64_t need = cache->PagesNeeded(-1, static_cast<int64_t>(prompt->ids.size()) + 1);
    if (need > pipeline_->pool().num_pages()) {
      waiting.erase(waiting.begin());
      Fail(*job, absl::ResourceExhaustedError(absl::StrCat(
                     "the prompt needs ", need, " KV pages but the whole pool has ",
                     pipeline_->pool().num_pages(), "; send less media or raise --kv-cache-bytes")));
      continue;
    }
    if (need > pipeline_->pool().free_pages()) break;  // wait for running sequences to finish
    waiting.erase(waiting.begin());
    auto a = std::make_unique<Active>();
    a->job = job;
    a->prompt = std::move(*prompt);
    a->admitted = Clock::now();
    const engine::GenerateRequest& req = job->request;
    a->policy = req.cache_policy.value_or(pipeline_->options().cache_policy).name;
    a->text = std::make_unique<engine::TextAssembler>(&pipeline_->tokenizer(), req.sampling.stop);
    engine::SequenceSpec spec = pipeline_->SpecFor(req, a->prompt);
    Active* raw = a.get();
    spec.on_token = [this, raw](int token) {
      const auto now = Clock::now();
      if (raw->ttft_ms < 0) {
        raw->ttft_ms = std::chrono::duration<double, std::milli>(now - raw->job->enqueued).count();
        if (metrics_) metrics_->ObserveTtft(raw->ttft_ms / 1e3);
      } else if (metrics_) {
        metrics_->ObserveInterToken(std::chrono::duration<double>(now - raw->last_token).count());
      }
      raw->last_token = now;
      ++raw->generated;
      const bool more = raw->text->Push(token);
      raw->pending_ids.push_back(token);
      std::string delta = raw->text->TakeDelta();
      if (!delta.empty()) {
        StreamEvent e;
        e.text = std::move(delta);
        e.token_ids.swap(raw->pending_ids);
        raw->job->channel->Push(std::move(e));
      }
      return more && !raw->job->cancelled.load();
    };
    if (metrics_) metrics_->ObserveQueueTime(SecondsSince(job->enqueued));
    active_.push_back(std::move(a));
    const auto t0 = Clock::now();
    auto id = generator_->Add(std::move(spec));
    if (!id.ok()) {
      active_.pop_back();
      Fail(*job, id.status());
      continue;
    }
    raw->id = *id;
    if (metrics_) {
      metrics_->ObservePrefill(SecondsSince(t0));
      metrics_->CountPromptTokens(
          static_cast<int64_t>(raw->prompt.ids.size()) - raw->prompt.visual_tokens,
          raw->prompt.visual_tokens);
    }
  }
}

void EngineLoop::Run() {
  std::vector<std::shared_ptr<Job>> waiting;
  while (true) {
    {
      std::unique_lock<std::mutex> lock(mu_);
      // Sleep only when there is nothing to decode and nothing new to admit.
      cv_.wait(lock, [&] { return stop_ || !queue_.empty() || !active_.empty() ||
                                  (!waiting.empty() && generator_->HasRunning()); });
      if (stop_) break;
      while (!queue_.empty()) {
        waiting.push_back(std::move(queue_.front()));
        queue_.pop_front();
      }
      queue_depth_ = 0;
    }
    Admit(waiting);
    queue_depth_ = static_cast<int64_t>(waiting.size());
    // Cancellation and deadlines, between decode steps.
    const auto now = Clock::now();
    for (auto& a : active_) {
      if (a->id < 0) continue;
      if (a->job->cancelled) {
        generator_->Cancel(a->id, absl::CancelledError("the caller cancelled the request"));
      } else if (now > a->job->deadline) {
        generator_->Cancel(a->id, absl::DeadlineExceededError("the request's deadline passed"));
      }
    }
    if (generator_->HasRunning()) {
      absl::Status st = generator_->Step();
      if (!st.ok()) spdlog::warn("event=decode_step_failed error=\"{}\"", st.ToString());
    }
    for (auto& [id, res] : generator_->TakeFinished()) {
      auto it = std::find_if(active_.begin(), active_.end(),
                             [id = id](const auto& a) { return a->id == id; });
      if (it == active_.end()) continue;
      Active& a = **it;
      StreamEvent e;
      e.final = true;
      e.queue_seconds = std::chrono::duration<double>(a.admitted - a.job->enqueued).count();
      if (res.finish == engine::FinishReason::kError) {
        e.status = res.error;
      } else {
        a.text->Finish();
        e.text = a.text->TakeDelta();
        e.token_ids.swap(a.pending_ids);
        const double total_ms =
            std::chrono::duration<double, std::milli>(Clock::now() - a.job->enqueued).count();
        e.usage = engine::SummarizeSequence(a.prompt, res, a.text->text(), a.policy,
                                            a.ttft_ms < 0 ? total_ms : a.ttft_ms, total_ms);
        if (metrics_) {
          metrics_->CountGeneratedTokens(e.usage.generated_tokens);
          metrics_->ObserveEndToEnd(total_ms / 1e3);
          if (a.policy != "full" && !e.usage.layer_budgets.empty()) {
            std::vector<double> ratios;
            for (int64_t k : e.usage.layer_budgets) {
              ratios.push_back(static_cast<double>(k) / std::max(1, e.usage.prompt_tokens));
            }
            metrics_->ObserveCompression(
                static_cast<double>(e.usage.kv_bytes) / std::max<int64_t>(1, e.usage.kv_bytes_full),
                ratios);
          }
        }
      }
      a.job->channel->Push(std::move(e));
      active_.erase(it);
    }
    PublishGauges();
  }
  // Shutting down: nothing acknowledged is left without an answer.
  for (auto& a : active_) {
    if (a->id >= 0) generator_->Cancel(a->id, absl::UnavailableError("the server is shutting down"));
    Fail(*a->job, absl::UnavailableError("the server is shutting down"));
  }
  generator_->TakeFinished();
  active_.clear();
  for (auto& j : waiting) Fail(*j, absl::UnavailableError("the server is shutting down"));
  std::lock_guard<std::mutex> lock(mu_);
  for (auto& j : queue_) Fail(*j, absl::UnavailableError("the server is shutting down"));
  queue_.clear();
}

}  // namespace vlc::server
