#include "engine/scheduler.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <sched.h>

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "engine/pipeline.h"
#include "engine/token_stream.h"

namespace vlc::engine {
namespace {

int AvailableCores() {
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof(set), &set) == 0) return std::max(1, CPU_COUNT(&set));
  return std::max(1u, std::thread::hardware_concurrency());
}

bool NeedsMedia(const Job& job) {
  return job.kind == Job::Kind::kGenerate || job.kind == Job::Kind::kCreateSession;
}

}  // namespace

const Clock* Clock::Steady() {
  struct SteadyClock final : Clock {
    TimePoint Now() const override { return std::chrono::steady_clock::now(); }
  };
  static const SteadyClock clock;
  return &clock;
}

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

// A job the engine took: its sequence prefilling or decoding.
struct Scheduler::Active {
  std::shared_ptr<Job> job;
  PreparedPrompt prompt;          // a session turn: the turn's ids only
  std::string policy;
  std::unique_ptr<TokenStream> stream;
  SeqId id = -1;
  Clock::TimePoint admitted;
  int64_t start_pos = 0;          // a session turn: the session's length before it
};

Scheduler::Scheduler(const Pipeline* pipeline, SchedulerOptions options)
    : pipeline_(pipeline),
      options_(options),
      clock_(options.clock ? options.clock : Clock::Steady()),
      metrics_(options.metrics),
      sessions_({options.max_sessions, options.session_ttl_seconds},
                options.clock ? options.clock : Clock::Steady(), options.metrics) {
  generator_ = std::make_unique<Generator>(&pipeline_->model(), pipeline_->cache(),
                                           pipeline_->tokenizer().eos_id(),
                                           options_.prefill_chunk_tokens);
  media_ = std::make_unique<MediaWorkers>(
      options_.media_workers > 0 ? options_.media_workers : DefaultMediaWorkers(AvailableCores()));
}

Scheduler::~Scheduler() { Stop(); }

void Scheduler::Start() {
  std::lock_guard<std::mutex> lock(mu_);
  if (started_ || stop_) return;
  started_ = true;
  if (metrics_) {
    metrics_->SetKvCacheShape(pipeline_->options().kv_page_tokens, pipeline_->pool().num_pages());
  }
  thread_ = std::thread([this] { Run(); });
}

void Scheduler::Stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stop_) return;
    stop_ = true;
  }
  media_->Stop();  // jobs not prepared yet come back to the inbox, answered below
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
  std::deque<std::shared_ptr<Job>> left;
  {
    std::lock_guard<std::mutex> lock(mu_);
    left.swap(inbox_);
    swept_ = true;  // from now on Deliver answers a job itself
  }
  Shutdown(left);
}

absl::Status Scheduler::Submit(std::shared_ptr<Job> job) {
  job->enqueued = clock_->Now();
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stop_) return absl::UnavailableError("the server is shutting down");
    if (pending_.load() >= options_.max_queue) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "the request queue is full (", pending_.load(), " waiting); retry later"));
    }
    ++pending_;
  }
  if (!NeedsMedia(*job)) {
    Deliver(std::move(job));
    return absl::OkStatus();
  }
  media_->Post([this, job](bool run) {
    if (run && !job->cancelled && clock_->Now() <= job->deadline) Prepare(*job);
    Deliver(job);  // the engine thread answers a cancelled or unprepared job
  });
  return absl::OkStatus();
}

void Scheduler::Deliver(std::shared_ptr<Job> job) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!swept_) {
      inbox_.push_back(std::move(job));
      job = nullptr;
    }
  }
  if (job) {
    // A job submitted while Stop ran, after its last look at the inbox.
    Fail(*job, absl::UnavailableError("the server is shutting down"));
    Answered();
    return;
  }
  cv_.notify_one();
}

void Scheduler::Prepare(Job& job) {
  const auto t0 = clock_->Now();
  job.prepared = pipeline_->Prepare(job.request);
  if (metrics_ && job.prepared->ok() && (*job.prepared)->media_frames > 0) {
    metrics_->ObserveMediaPrepared(SecondsBetween(t0, clock_->Now()),
                                   (*job.prepared)->media_frames);
  }
}

void Scheduler::Answered() { --pending_; }

void Scheduler::Fail(Job& job, absl::Status status) {
  StreamEvent e;
  e.final = true;
  e.status = std::move(status);
  e.queue_seconds = SecondsBetween(job.enqueued, clock_->Now());
  job.channel->Push(std::move(e));
}

void Scheduler::PublishGauges() {
  running_count_ = static_cast<int64_t>(active_.size());
  if (!metrics_) return;
  const auto& pool = pipeline_->pool();
  const auto& t = pipeline_->model().config().text;
  const int64_t per_token = pipeline_->cache()->BytesPerTokenPerLayer() * t.num_hidden_layers;
  int64_t full = 0;
  for (const auto& a : active_) {
    const int64_t generated = a->stream ? a->stream->generated() : 0;
    full += (a->start_pos + static_cast<int64_t>(a->prompt.ids.size()) + generated) * per_token;
  }
  metrics_->SetKvBytes(pool.used_bytes(), pool.capacity_bytes(), full);
  metrics_->SetBatchSize(static_cast<int64_t>(generator_->LastStepBatch()));
  metrics_->SetQueueDepth(pending_.load());
  metrics_->SetRunning(running_count_);
}

SessionView Scheduler::View(const std::string& id, const Session& s) const {
  SessionView v;
  v.id = id;
  v.policy = s.policy;
  auto* cache = pipeline_->cache();
  v.kv_bytes_kept = cache->Bytes(s.seq);
  const int layers = pipeline_->model().config().text.num_hidden_layers;
  v.kv_bytes_full = s.next_pos * layers * cache->BytesPerTokenPerLayer();
  for (int l = 0; l < layers; ++l) v.layer_budgets.push_back(cache->Length(s.seq, l));
  v.logical_length = s.next_pos;
  v.idle_seconds = s.busy ? 0 : SecondsBetween(s.last_used, clock_->Now());
  v.turns = s.turns;
  v.visual_tokens = s.visual_tokens;
  v.history = s.history;
  return v;
}

void Scheduler::Evict(const std::string& id, SessionEnd why) {
  const SeqId seq = sessions_.Remove(id, why);
  if (seq >= 0) generator_->Close(seq);
}

bool Scheduler::EvictFor(int64_t pages) {
  while (pipeline_->pool().free_pages() < pages) {
    const std::string lru = sessions_.LeastRecentlyUsedIdle();
    if (lru.empty()) return false;
    Evict(lru, SessionEnd::kKvPages);
  }
  return true;
}

void Scheduler::ExpireIdle() {
  for (const auto& id : sessions_.Expired()) Evict(id, SessionEnd::kTtl);
}

void Scheduler::AnswerSessionCall(const std::shared_ptr<Job>& job) {
  StreamEvent e;
  e.final = true;
  auto s = sessions_.Find(job->session_id, job->owner);
  if (metrics_) metrics_->CountSessionLookup(s.ok());
  if (!s.ok()) {
    e.status = s.status();
  } else if (job->kind == Job::Kind::kGetSession) {
    e.session = View(job->session_id, **s);
  } else if ((*s)->busy) {
    e.status = absl::FailedPreconditionError("a turn is running on this session; wait for it");
  } else {
    Evict(job->session_id, SessionEnd::kDeleted);
  }
  job->channel->Push(std::move(e));
}

Scheduler::Admission Scheduler::ReservePages(Job& job, SeqId seq, int64_t tokens) {
  const auto* cache = pipeline_->cache();
  const int64_t prompt_pages = cache->PagesNeeded(seq, tokens + 1);
  if (prompt_pages > pipeline_->pool().num_pages()) {
    Fail(job, absl::ResourceExhaustedError(absl::StrCat(
                  "the prompt needs ", prompt_pages, " KV pages but the whole pool has ",
                  pipeline_->pool().num_pages(),
                  "; send less media or raise --kv-cache-bytes")));
    return Admission::kAnswered;
  }
  // The request is admitted with room for its prompt and all the tokens it may generate, beside
  // what the running sequences may still take, so that an admitted request is never stopped for
  // want of pages: under memory pressure requests wait in the queue instead. A request whose
  // answer could outgrow the whole pool runs with the whole pool.
  const int64_t growth = job.kind == Job::Kind::kCreateSession
                             ? 0
                             : std::max(0, job.request.sampling.max_new_tokens - 1);
  const int64_t need =
      std::min(cache->PagesNeeded(seq, tokens + 1 + growth), pipeline_->pool().num_pages());
  const int64_t reserved = generator_->PagesToFinish();
  if (need + reserved <= pipeline_->pool().free_pages() || EvictFor(need + reserved)) {
    return Admission::kStarted;
  }
  return Admission::kWait;  // running sequences hold the pages: wait for them to finish
}

Scheduler::Active& Scheduler::Activate(const std::shared_ptr<Job>& job, std::string policy) {
  auto a = std::make_unique<Active>();
  a->job = job;
  a->admitted = clock_->Now();
  a->policy = std::move(policy);
  if (metrics_) metrics_->ObserveQueueTime(SecondsBetween(job->enqueued, a->admitted));
  active_.push_back(std::move(a));
  return *active_.back();
}

std::function<bool(int)> Scheduler::AttachStream(Active& a) {
  Job* job = a.job.get();
  a.stream = std::make_unique<TokenStream>(
      &pipeline_->tokenizer(), job->request.sampling.stop, clock_, job->enqueued, metrics_,
      [job](std::string text, std::vector<int> ids) {
        StreamEvent e;
        e.text = std::move(text);
        e.token_ids = std::move(ids);
        job->channel->Push(std::move(e));
      });
  TokenStream* stream = a.stream.get();
  // Cancellation is not a stop: the loop ends the sequence with CANCELLED or DEADLINE_EXCEEDED
  // before the next step, so it is counted and answered as such.
  return [stream](int token) { return stream->Push(token); };
}

Scheduler::Admission Scheduler::StartPrepared(const std::shared_ptr<Job>& job) {
  if (!job->prepared->ok()) {
    Fail(*job, job->prepared->status());
    return Admission::kAnswered;
  }
  const bool opening = job->kind == Job::Kind::kCreateSession;
  if (opening && !job->session_id.empty() && sessions_.Contains(job->session_id)) {
    Fail(*job, absl::AlreadyExistsError(absl::StrCat(
                   "a session with id '", job->session_id, "' exists; choose another id")));
    return Admission::kAnswered;
  }
  PreparedPrompt& prompt = **job->prepared;
  while (opening && sessions_.Full()) {
    const std::string lru = sessions_.LeastRecentlyUsedIdle();
    if (lru.empty()) {
      Fail(*job, absl::ResourceExhaustedError(absl::StrCat(
                     "all ", sessions_.size(), " sessions are busy; retry later")));
      return Admission::kAnswered;
    }
    Evict(lru, SessionEnd::kMaxSessions);
  }
  const Admission pages = ReservePages(*job, -1, static_cast<int64_t>(prompt.ids.size()));
  if (pages != Admission::kStarted) return pages;
  const GenerateRequest& req = job->request;
  Active& a = Activate(job, req.cache_policy.value_or(pipeline_->options().cache_policy).name);
  a.prompt = std::move(prompt);
  job->prepared.reset();
  SequenceSpec spec = pipeline_->SpecFor(req, a.prompt);
  if (opening) {
    spec.prefill_only = true;  // the session is made when its prefill finishes
  } else {
    spec.on_token = AttachStream(a);
  }
  auto id = generator_->Queue(std::move(spec));
  if (!id.ok()) {
    active_.pop_back();
    Fail(*job, id.status());
    return Admission::kAnswered;
  }
  a.id = *id;
  if (metrics_ && !opening) {
    metrics_->CountPromptTokens(
        static_cast<int64_t>(a.prompt.ids.size()) - a.prompt.visual_tokens,
        a.prompt.visual_tokens);
  }
  return Admission::kStarted;
}

Scheduler::Admission Scheduler::StartTurn(const std::shared_ptr<Job>& job) {
  auto found = sessions_.Find(job->session_id, job->owner);
  // A turn that waits for pages is looked up again; it is counted once, when it is answered or
  // started.
  absl::Status st = found.status();
  if (st.ok() && (*found)->busy) {
    st = absl::FailedPreconditionError("a turn is already running on this session");
  }
  if (!st.ok()) {
    if (metrics_) metrics_->CountSessionLookup(found.ok());
    Fail(*job, st);
    return Admission::kAnswered;
  }
  Session& session = **found;
  // The turn's text follows the previous answer (its last token was sampled, never fed).
  std::vector<int> ids = pipeline_->chat_template().TurnIds(
      pipeline_->tokenizer(), job->request.prompt, session.last_token, session.has_prefix);
  session.busy = true;  // not a candidate for eviction while its pages are found
  const Admission pages = ReservePages(*job, session.seq, static_cast<int64_t>(ids.size()));
  session.busy = false;
  if (pages == Admission::kAnswered && metrics_) metrics_->CountSessionLookup(true);
  if (pages != Admission::kStarted) return pages;
  if (metrics_) metrics_->CountSessionLookup(true);
  const GenerateRequest& req = job->request;
  Active& a = Activate(job, session.policy);
  a.prompt.ids = ids;
  a.start_pos = session.next_pos;
  SequenceSpec spec;
  spec.sampling = req.sampling;
  spec.on_token = AttachStream(a);
  auto id = generator_->QueueResume(session.seq, session.next_pos, ids, std::move(spec));
  if (!id.ok()) {
    active_.pop_back();
    Fail(*job, id.status());
    return Admission::kAnswered;
  }
  a.id = *id;
  session.busy = true;
  if (metrics_) metrics_->CountPromptTokens(static_cast<int64_t>(ids.size()), 0);
  return Admission::kStarted;
}

Scheduler::Admission Scheduler::AdmitOne(const std::shared_ptr<Job>& job) {
  if (job->cancelled || clock_->Now() > job->deadline) {
    Fail(*job, job->cancelled ? absl::CancelledError("cancelled while queued")
                              : absl::DeadlineExceededError("deadline passed while queued"));
    return Admission::kAnswered;
  }
  if (NeedsMedia(*job) && !job->prepared) {
    // The pool stopped before it prepared this job.
    Fail(*job, absl::UnavailableError("the server is shutting down"));
    return Admission::kAnswered;
  }
  switch (job->kind) {
    case Job::Kind::kGenerate:
    case Job::Kind::kCreateSession: return StartPrepared(job);
    case Job::Kind::kSessionGenerate: return StartTurn(job);
    default: AnswerSessionCall(job); return Admission::kAnswered;
  }
}

void Scheduler::Admit(std::deque<std::shared_ptr<Job>>& waiting) {
  // Reads and deletions need no decoding: answer them now, even while the batch is full.
  for (auto it = waiting.begin(); it != waiting.end();) {
    if ((*it)->kind == Job::Kind::kGetSession || (*it)->kind == Job::Kind::kDeleteSession) {
      AnswerSessionCall(*it);
      Answered();
      it = waiting.erase(it);
    } else {
      ++it;
    }
  }
  while (!waiting.empty() && static_cast<int>(active_.size()) < options_.max_running) {
    if (AdmitOne(waiting.front()) == Admission::kWait) break;  // first come, first served
    waiting.pop_front();
    Answered();
  }
}

void Scheduler::CheckCancellations() {
  const auto now = clock_->Now();
  for (auto& a : active_) {
    if (a->id < 0) continue;
    if (a->job->cancelled) {
      generator_->Cancel(a->id, absl::CancelledError("the caller cancelled the request"));
    } else if (now > a->job->deadline) {
      generator_->Cancel(a->id, absl::DeadlineExceededError("the request's deadline passed"));
    }
  }
}

void Scheduler::FinishOpening(Active& a, const SequenceResult& res) {
  Job& job = *a.job;
  if (res.finish == FinishReason::kError) {
    Fail(job, res.error);
    return;
  }
  Session s;
  s.seq = a.id;
  s.owner = job.owner;
  s.policy = a.policy;
  s.next_pos = res.next_pos;
  s.visual_tokens = a.prompt.visual_tokens;
  s.has_prefix = !job.request.prompt.empty();
  s.history = a.prompt.ids;
  auto inserted = sessions_.Insert(std::move(s), job.session_id);
  if (!inserted.ok()) {
    // Another opening with the same client-chosen id finished first: this one's cache goes.
    generator_->Close(a.id);
    Fail(job, inserted.status());
    return;
  }
  const std::string id = *inserted;
  const Session& slot = sessions_.all().at(id);
  if (metrics_) {
    metrics_->ObservePrefill(res.prefill_ms / 1e3);
    metrics_->CountPromptTokens(
        static_cast<int64_t>(a.prompt.ids.size()) - a.prompt.visual_tokens,
        a.prompt.visual_tokens);
    metrics_->LogEvent(absl::StrFormat(
        "event=session_created session=%s prompt_tokens=%d kv_policy=%s kv_bytes=%d", id,
        a.prompt.ids.size(), slot.policy, pipeline_->cache()->Bytes(slot.seq)));
  }
  StreamEvent e;
  e.final = true;
  e.session = View(id, slot);
  e.queue_seconds = SecondsBetween(job.enqueued, a.admitted);
  job.channel->Push(std::move(e));
}

void Scheduler::FinishTurn(Active& a, const SequenceResult& res) {
  Job& job = *a.job;
  auto found = sessions_.Find(job.session_id, job.owner);
  if (!found.ok()) return;
  Session& s = **found;
  if (res.finish == FinishReason::kError && !pipeline_->cache()->HasSequence(a.id)) {
    // The generator dropped the sequence's cache: the session cannot go on. (A turn that was
    // cancelled or ran past its deadline keeps it, and the session goes on with the tokens of
    // that turn so far.)
    sessions_.Remove(job.session_id, SessionEnd::kFailed, std::string(res.error.message()));
    return;
  }
  if (res.next_pos > s.next_pos) {
    // What the turn fed: its text, then every generated token but the last (sampled, not fed).
    s.history.insert(s.history.end(), a.prompt.ids.begin(), a.prompt.ids.end());
    const int64_t fed_generated = res.next_pos - s.next_pos - static_cast<int64_t>(a.prompt.ids.size());
    for (int64_t i = 0; i < fed_generated && i < static_cast<int64_t>(res.tokens.size()); ++i) {
      s.history.push_back(res.tokens[i]);
    }
    if (!res.tokens.empty()) s.last_token = res.tokens.back();
    s.next_pos = res.next_pos;
  }
  s.turns += 1;
  s.busy = false;
  s.last_used = clock_->Now();
}

int Scheduler::FinishSequences() {
  auto finished = generator_->TakeFinished();
  for (auto& [id, res] : finished) {
    auto it = std::find_if(active_.begin(), active_.end(),
                           [id = id](const auto& a) { return a->id == id; });
    if (it == active_.end()) continue;
    Active& a = **it;
    Job& job = *a.job;
    if (job.kind == Job::Kind::kCreateSession) {
      FinishOpening(a, res);
      active_.erase(it);
      continue;
    }
    if (job.kind == Job::Kind::kSessionGenerate) FinishTurn(a, res);
    StreamEvent e;
    e.final = true;
    e.queue_seconds = SecondsBetween(job.enqueued, a.admitted);
    if (res.finish == FinishReason::kError) {
      e.status = res.error;
    } else {
      a.stream->Finish();
      e.text = a.stream->TakeRest();
      e.token_ids = a.stream->TakePendingIds();
      const double total_ms = SecondsBetween(job.enqueued, clock_->Now()) * 1e3;
      e.usage = SummarizeSequence(a.prompt, res, a.stream->text(), a.policy,
                                  a.stream->ttft_ms(), total_ms);
      if (metrics_) {
        metrics_->ObservePrefill(res.prefill_ms / 1e3);
        metrics_->CountGeneratedTokens(e.usage.generated_tokens);
        metrics_->ObserveEndToEnd(total_ms / 1e3);
        metrics_->CountKvBytes(a.policy, e.usage.kv_bytes, e.usage.kv_bytes_full);
        if (a.policy != "full" && !e.usage.layer_budgets.empty() &&
            job.kind == Job::Kind::kGenerate) {
          std::vector<double> ratios;
          for (int64_t k : e.usage.layer_budgets) {
            ratios.push_back(static_cast<double>(k) / std::max(1, e.usage.prompt_tokens));
          }
          metrics_->ObserveCompression(
              static_cast<double>(e.usage.kv_bytes) /
                  std::max<int64_t>(1, e.usage.kv_bytes_full),
              ratios);
        }
      }
    }
    job.channel->Push(std::move(e));
    active_.erase(it);
  }
  return static_cast<int>(finished.size());
}

void Scheduler::Run() {
  at::init_num_threads();  // LibTorch's configured thread count, on this thread too
  std::deque<std::shared_ptr<Job>> waiting;
  bool freed = false;  // sequences finished (or sessions left) since the last admission
  while (true) {
    {
      std::unique_lock<std::mutex> lock(mu_);
      // Sleep only when there is nothing to step and nothing new to admit. Wake at least once a
      // second while sessions or waiting jobs exist, so that idle sessions expire and queued
      // jobs past their deadline are answered on time.
      // Jobs that waited for pages are retried at once when sequences finished.
      auto ready = [&] {
        return stop_ || !inbox_.empty() || generator_->HasRunning() ||
               (freed && !waiting.empty());
      };
      if (sessions_.empty() && waiting.empty()) {
        cv_.wait(lock, ready);
      } else {
        cv_.wait_for(lock, std::chrono::seconds(1), ready);
      }
      if (stop_) break;
      while (!inbox_.empty()) {
        waiting.push_back(std::move(inbox_.front()));
        inbox_.pop_front();
      }
    }
    const size_t sessions_before = sessions_.size();
    ExpireIdle();
    Admit(waiting);
    CheckCancellations();
    if (generator_->HasRunning()) {
      // Idle sessions give way to running requests: least recently used first, before the
      // generator has to stop a running one for want of pages.
      EvictFor(generator_->PagesForNextStep());
      absl::Status st = generator_->Step();
      if (!st.ok() && metrics_) {
        metrics_->LogEvent(absl::StrCat("event=step_failed error=\"", st.ToString(), "\""));
      }
    }
    freed = FinishSequences() > 0 || sessions_.size() < sessions_before;
    PublishGauges();
  }
  Shutdown(waiting);
}

void Scheduler::Shutdown(std::deque<std::shared_ptr<Job>>& waiting) {
  // Nothing acknowledged is left without an answer.
  const absl::Status down = absl::UnavailableError("the server is shutting down");
  for (auto& a : active_) {
    if (a->id >= 0) generator_->Cancel(a->id, down);
    Fail(*a->job, down);
  }
  generator_->TakeFinished();
  active_.clear();
  for (const auto& [id, s] : sessions_.all()) generator_->Close(s.seq);
  while (!sessions_.empty()) sessions_.Remove(sessions_.all().begin()->first, SessionEnd::kDeleted);
  for (auto& j : waiting) {
    Fail(*j, down);
    Answered();
  }
  waiting.clear();
}

}  // namespace vlc::engine
