#include "engine/scheduler.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <sched.h>
#if defined(__GLIBC__)
#include <malloc.h>
#endif

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

namespace {

// A session neither held here nor in the store: the lookup's NOT_FOUND, saying so.
absl::Status NotInStore(const absl::Status& lookup) {
  return absl::NotFoundError(absl::StrCat(
      lookup.message(),
      "; the session store has no snapshot of it either (a session moves only when the replica "
      "holding it stops cleanly: it is lost with one that does not)"));
}

}  // namespace

void Scheduler::MoveSessions() {
  if (options_.session_store == nullptr) return;
  {
    std::lock_guard<std::mutex> lock(mu_);
    moving_ = true;
  }
  cv_.notify_all();
}

bool Scheduler::SaveSession(const std::string& id) {
  SessionStore* store = options_.session_store;
  auto it = sessions_.all().find(id);
  if (store == nullptr || it == sessions_.all().end() || it->second.busy) return false;
  const Session& s = it->second;
  const auto t0 = clock_->Now();
  SessionSnapshot snap;
  snap.model = options_.model_fingerprint;
  snap.session_id = id;
  snap.owner_digest = s.owner.empty() ? "" : Sha256Hex(s.owner);
  snap.policy = s.policy;
  snap.next_pos = s.next_pos;
  snap.last_token = s.last_token;
  snap.turns = s.turns;
  snap.visual_tokens = s.visual_tokens;
  snap.has_prefix = s.has_prefix;
  snap.history = s.history;
  const int layers = pipeline_->model().config().text.num_hidden_layers;
  for (int l = 0; l < layers; ++l) {
    auto kv = pipeline_->cache()->Read(s.seq, l);
    if (!kv.ok()) {
      if (metrics_) {
        metrics_->LogEvent(absl::StrCat("event=session_save_failed session=", id, " error=\"",
                                        kv.status().ToString(), "\""));
      }
      return false;
    }
    snap.layers.emplace_back(kv->first.cpu(), kv->second.cpu());
  }
  const std::string bytes = EncodeSnapshot(snap);
  if (absl::Status st = store->Put(id, bytes); !st.ok()) {
    if (metrics_) {
      metrics_->LogEvent(absl::StrCat("event=session_save_failed session=", id, " error=\"",
                                      st.ToString(), "\""));
    }
    return false;
  }
  if (metrics_) {
    metrics_->CountSessionMove("saved");
    metrics_->LogEvent(absl::StrFormat(
        "event=session_saved session=%s bytes=%d kv_bytes=%d turns=%d ms=%.1f", id, bytes.size(),
        snap.KvBytes(), snap.turns, SecondsBetween(t0, clock_->Now()) * 1e3));
  }
  Evict(id, SessionEnd::kMoved);
  return true;
}

Scheduler::Admission Scheduler::RestoreSession(Job& job, const absl::Status& lookup,
                                               absl::Status* why) {
  SessionStore* store = options_.session_store;
  const std::string& id = job.session_id;
  if (store == nullptr || lookup.code() != absl::StatusCode::kNotFound) {
    *why = lookup;
    return Admission::kAnswered;
  }
  const auto t0 = clock_->Now();
  auto bytes = store->Take(id);
  if (!bytes.ok()) {
    *why = bytes.status().code() == absl::StatusCode::kNotFound ? NotInStore(lookup)
                                                                : bytes.status();
    return Admission::kAnswered;
  }
  auto reject = [&](const absl::Status& s) {
    store->Reject(id, *bytes, std::string(s.message()));
    if (metrics_) {
      metrics_->CountSessionMove("rejected");
      metrics_->LogEvent(absl::StrCat("event=session_restore_rejected session=", id,
                                      " error=\"", s.ToString(), "\""));
    }
    *why = absl::Status(s.code(), absl::StrCat("session ", id, ": ", s.message()));
    return Admission::kAnswered;
  };
  auto snap = DecodeSnapshot(*bytes, options_.model_fingerprint);
  if (!snap.ok()) return reject(snap.status());
  if (snap->session_id != id) {
    return reject(absl::FailedPreconditionError(absl::StrCat(
        "the snapshot stored under this id is of session ", snap->session_id)));
  }
  const auto& pool = pipeline_->pool().options();
  const int layers = pipeline_->model().config().text.num_hidden_layers;
  if (static_cast<int>(snap->layers.size()) != layers ||
      snap->layers[0].first.size(0) != pool.kv_heads ||
      snap->layers[0].first.size(2) != pool.head_dim) {
    return reject(absl::FailedPreconditionError(
        "the snapshot's cache geometry (layers, KV heads, head size) is not this model's"));
  }
  auto put_back = [&] { (void)store->Put(id, *bytes); };
  if (snap->owner_digest != (job.owner.empty() ? "" : Sha256Hex(job.owner))) {
    put_back();  // it stays for its owner
    *why = absl::PermissionDeniedError(absl::StrCat("session ", id, " belongs to another caller"));
    return Admission::kAnswered;
  }
  while (sessions_.Full()) {
    const std::string lru = sessions_.LeastRecentlyUsedIdle();
    if (lru.empty()) {
      put_back();
      *why = absl::ResourceExhaustedError(absl::StrCat(
          "all ", sessions_.size(), " sessions are busy; retry later"));
      return Admission::kAnswered;
    }
    Evict(lru, SessionEnd::kMaxSessions);
  }
  int64_t pages = 0;
  for (const auto& [k, v] : snap->layers) pages += (k.size(1) + pool.page_tokens - 1) / pool.page_tokens;
  const int64_t need = pages + generator_->PagesToFinish();
  if (need > pipeline_->pool().free_pages() && !EvictFor(need)) {
    put_back();
    return Admission::kWait;
  }
  std::vector<std::pair<at::Tensor, at::Tensor>> kv;
  for (auto& [k, v] : snap->layers) {
    kv.emplace_back(k.to(pool.device, pool.dtype), v.to(pool.device, pool.dtype));
  }
  auto seq = generator_->Restore(kv);
  if (!seq.ok()) {
    put_back();
    *why = seq.status();
    return Admission::kAnswered;
  }
  Session s;
  s.seq = *seq;
  s.owner = job.owner;
  s.policy = snap->policy;
  s.next_pos = snap->next_pos;
  s.last_token = snap->last_token;
  s.turns = snap->turns;
  s.visual_tokens = snap->visual_tokens;
  s.has_prefix = snap->has_prefix;
  s.history = std::move(snap->history);
  if (auto inserted = sessions_.Insert(std::move(s), id); !inserted.ok()) {
    generator_->Close(*seq);
    put_back();
    *why = inserted.status();
    return Admission::kAnswered;
  }
  if (metrics_) {
    metrics_->CountSessionMove("restored");
    metrics_->LogEvent(absl::StrFormat(
        "event=session_restored session=%s bytes=%d turns=%d ms=%.1f", id, bytes->size(),
        snap->turns, SecondsBetween(t0, clock_->Now()) * 1e3));
  }
  return Admission::kStarted;
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
  if (!s.ok() && options_.session_store != nullptr &&
      s.status().code() == absl::StatusCode::kNotFound) {
    // Not held here: it may wait in the session store. A read brings it back; a deletion drops
    // the snapshot.
    if (job->kind == Job::Kind::kDeleteSession) {
      auto taken = options_.session_store->Take(job->session_id);
      if (!taken.ok() && taken.status().code() == absl::StatusCode::kNotFound) {
        s = NotInStore(s.status());
      }
      if (taken.ok()) {
        if (metrics_) {
          metrics_->CountSessionLookup(true);
          metrics_->CountSessionMove("dropped");
          metrics_->LogEvent(absl::StrCat("event=session_dropped session=", job->session_id,
                                          " (deleted while in the session store)"));
        }
        job->channel->Push(std::move(e));
        return;
      }
    } else {
      absl::Status why;
      const Admission restored = RestoreSession(*job, s.status(), &why);
      if (restored == Admission::kStarted) {
        s = sessions_.Find(job->session_id, job->owner);
      } else {
        s = restored == Admission::kWait
                ? absl::ResourceExhaustedError(
                      "the session is in the session store and the KV pool has no room for it "
                      "now; retry")
                : why;
      }
    }
  }
  if (metrics_) metrics_->CountSessionLookup(s.ok());
  if (!s.ok()) {
    e.status = s.status();
  } else if (job->kind == Job::Kind::kGetSession) {
    e.session = View(job->session_id, **s);
  } else if ((*s)->busy) {
    // Deleted mid-turn (a client that gave up on a turn and deletes its session, say): the turn
    // is cancelled and the session goes as it ends; the deletion is answered now.
    (*s)->delete_when_idle = true;
    for (auto& a : active_) {
      if (a->id >= 0 && a->job->kind == Job::Kind::kSessionGenerate &&
          a->job->session_id == job->session_id) {
        generator_->Cancel(a->id, absl::CancelledError("the session was deleted during this turn"));
      }
    }
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
  if (!found.ok() && options_.session_store != nullptr &&
      found.status().code() == absl::StatusCode::kNotFound) {
    // Not held here: continue it from the session store, where a replica that stopped left it.
    absl::Status why;
    const Admission restored = RestoreSession(*job, found.status(), &why);
    if (restored == Admission::kWait) return restored;
    if (restored == Admission::kAnswered) {
      if (metrics_) metrics_->CountSessionLookup(false);
      Fail(*job, why);
      return restored;
    }
    found = sessions_.Find(job->session_id, job->owner);
  }
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
      pipeline_->tokenizer(), job->request.prompt, session.last_token, session.has_prefix,
      session.visual_tokens);
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
  if (moving_) SaveSession(id);  // opened during the drain: it goes on elsewhere
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
  if (s.delete_when_idle) {
    Evict(job.session_id, SessionEnd::kDeleted);
    return;
  }
  // During the drain the session leaves as soon as its turn ends, before its caller hears the
  // end, so that the next turn finds it in the store.
  if (moving_) SaveSession(job.session_id);
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

void TrimHeap() {
#if defined(__GLIBC__)
  ::malloc_trim(0);
#endif
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
               (freed && !waiting.empty()) || (moving_ && !moved_idle_);
      };
      if (sessions_.empty() && waiting.empty() && !trim_pending_) {
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
    if (moving_ && !moved_idle_) {
      moved_idle_ = true;
      std::vector<std::string> idle;
      for (const auto& [id, session] : sessions_.all()) {
        if (!session.busy) idle.push_back(id);
      }
      for (const auto& id : idle) SaveSession(id);
    }
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
    MaybeTrimHeap(!waiting.empty());
  }
  Shutdown(waiting);
}

void Scheduler::MaybeTrimHeap(bool jobs_waiting) {
  if (options_.heap_trim_idle_seconds <= 0) return;
  const auto now = clock_->Now();
  if (jobs_waiting || generator_->HasRunning() || queue_depth() > 0) {
    trim_pending_ = true;
    last_work_ = now;
    return;
  }
  if (!trim_pending_ || SecondsBetween(last_work_, now) < options_.heap_trim_idle_seconds) return;
  trim_pending_ = false;
  if (options_.heap_trim) {
    options_.heap_trim();
  } else {
    TrimHeap();
  }
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
  if (options_.session_store != nullptr) {
    // Whatever the drain did not hand over yet (a stop without MoveSessions, or sessions opened
    // late) is saved now; a session whose turn was cancelled just above is not (its turn is
    // half-fed) and ends here.
    std::vector<std::string> idle;
    for (const auto& [id, session] : sessions_.all()) {
      if (!session.busy) idle.push_back(id);
    }
    for (const auto& id : idle) SaveSession(id);
  }
  for (const auto& [id, s] : sessions_.all()) generator_->Close(s.seq);
  while (!sessions_.empty()) sessions_.Remove(sessions_.all().begin()->first, SessionEnd::kDeleted);
  for (auto& j : waiting) {
    Fail(*j, down);
    Answered();
  }
  waiting.clear();
}

}  // namespace vlc::engine
