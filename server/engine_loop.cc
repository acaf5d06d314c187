#include "server/engine_loop.h"

#include <ATen/ATen.h>

#include <optional>
#include <random>

#include "absl/strings/str_format.h"
#include "absl/strings/match.h"

#include "absl/strings/str_cat.h"
#include "spdlog/spdlog.h"

namespace vlc::server {
namespace {

using Clock = std::chrono::steady_clock;

double SecondsSince(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

// 128 random bits: session ids must not be guessable.
std::string NewSessionId() {
  static std::random_device rd;
  std::uniform_int_distribution<uint64_t> d;
  return absl::StrFormat("%016x%016x", d(rd), d(rd));
}

// The chat template split at {prompt}: a session's prompt is the head (with the media and the
// prefix); every turn ends with the tail, where the model answers.
std::pair<std::string, std::string> SplitTemplate(const std::string& t) {
  const size_t pos = t.find("{prompt}");
  if (pos == std::string::npos) return {t, ""};
  return {t.substr(0, pos + 8), t.substr(pos + 8)};
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
  std::string session_id;        // a session turn
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

SessionView EngineLoop::View(const std::string& id, const Session& s) const {
  SessionView v;
  v.id = id;
  v.policy = s.policy;
  auto* cache = pipeline_->cache();
  v.kv_bytes_kept = cache->Bytes(s.seq);
  const int layers = pipeline_->model().config().text.num_hidden_layers;
  v.kv_bytes_full = s.next_pos * layers * cache->BytesPerTokenPerLayer();
  for (int l = 0; l < layers; ++l) v.layer_budgets.push_back(cache->Length(s.seq, l));
  v.logical_length = s.next_pos;
  v.idle_seconds = s.busy ? 0 : SecondsSince(s.last_used);
  v.turns = s.turns;
  v.visual_tokens = s.visual_tokens;
  return v;
}

void EngineLoop::Evict(const std::string& id, const std::string& reason) {
  auto it = sessions_.find(id);
  if (it == sessions_.end()) return;
  generator_->Close(it->second.seq);
  const double idle = SecondsSince(it->second.last_used);
  sessions_.erase(it);
  std::string why;
  if (reason == "ttl") {
    why = absl::StrFormat("session %s expired after %.0f s idle", id, idle);
  } else if (reason == "deleted") {
    why = absl::StrCat("session ", id, " was deleted");
  } else {
    why = absl::StrCat("session ", id, " was evicted (", reason,
                       "): the server needed its room; create a new session");
  }
  gone_[id] = why;
  gone_order_.push_back(id);
  while (gone_order_.size() > 10000) {  // remember recent ones only
    gone_.erase(gone_order_.front());
    gone_order_.pop_front();
  }
  if (reason != "deleted") {
    spdlog::info("event=session_evicted session={} reason={} idle_s={:.1f}", id, reason, idle);
    if (metrics_) metrics_->CountEviction(reason);
  }
  if (metrics_) metrics_->SetSessionsActive(static_cast<int64_t>(sessions_.size()));
}

bool EngineLoop::EvictFor(int64_t pages) {
  while (pipeline_->pool().free_pages() < pages) {
    const std::string* lru = nullptr;
    Clock::time_point oldest = Clock::time_point::max();
    for (const auto& [id, s] : sessions_) {
      if (!s.busy && s.last_used < oldest) {
        oldest = s.last_used;
        lru = &id;
      }
    }
    if (!lru) return false;
    Evict(std::string(*lru), "kv_pages");
  }
  return true;
}

void EngineLoop::ExpireIdle() {
  if (options_.session_ttl_seconds <= 0) return;
  std::vector<std::string> expired;
  for (const auto& [id, s] : sessions_) {
    if (!s.busy && SecondsSince(s.last_used) > options_.session_ttl_seconds) expired.push_back(id);
  }
  for (const auto& id : expired) Evict(id, "ttl");
}

absl::StatusOr<EngineLoop::Session*> EngineLoop::FindSession(const Job& job) {
  auto it = sessions_.find(job.session_id);
  if (it == sessions_.end()) {
    auto gone = gone_.find(job.session_id);
    if (gone != gone_.end()) return absl::NotFoundError(gone->second);
    return absl::NotFoundError(absl::StrCat("unknown session id '", job.session_id,
                                            "': it was never created here, or it was deleted"));
  }
  if (it->second.owner != job.owner) {
    return absl::PermissionDeniedError(
        absl::StrCat("session ", job.session_id, " belongs to another caller"));
  }
  return &it->second;
}

bool EngineLoop::HandleSessionJob(const std::shared_ptr<Job>& job) {
  StreamEvent e;
  e.final = true;
  if (job->kind == Job::Kind::kGetSession || job->kind == Job::Kind::kDeleteSession) {
    auto s = FindSession(*job);
    if (!s.ok()) {
      e.status = s.status();
    } else if (job->kind == Job::Kind::kGetSession) {
      e.session = View(job->session_id, **s);
    } else if ((*s)->busy) {
      e.status = absl::FailedPreconditionError("a turn is running on this session; wait for it");
    } else {
      Evict(job->session_id, "deleted");
    }
    job->channel->Push(std::move(e));
    return true;
  }
  // kCreateSession: prefill and compress the media and prefix once.
  auto prompt = pipeline_->Prepare(job->request);
  if (!prompt.ok()) {
    Fail(*job, prompt.status());
    return true;
  }
  auto* cache = pipeline_->cache();
  const int64_t need = cache->PagesNeeded(-1, static_cast<int64_t>(prompt->ids.size()) + 1);
  if (need > pipeline_->pool().num_pages()) {
    Fail(*job, absl::ResourceExhaustedError(absl::StrCat(
                   "the session's prompt needs ", need, " KV pages but the whole pool has ",
                   pipeline_->pool().num_pages())));
    return true;
  }
  while (static_cast<int>(sessions_.size()) >= options_.max_sessions) {
    const std::string* lru = nullptr;
    Clock::time_point oldest = Clock::time_point::max();
    for (const auto& [id, s] : sessions_) {
      if (!s.busy && s.last_used < oldest) {
        oldest = s.last_used;
        lru = &id;
      }
    }
    if (!lru) {
      Fail(*job, absl::ResourceExhaustedError(absl::StrCat(
                     "all ", sessions_.size(), " sessions are busy; retry later")));
      return true;
    }
    Evict(std::string(*lru), "max_sessions");
  }
  if (need > pipeline_->pool().free_pages() && !EvictFor(need)) return false;
  engine::SequenceSpec spec = pipeline_->SpecFor(job->request, *prompt);
  engine::SequenceResult info;
  auto seq = generator_->Open(std::move(spec), &info);
  if (!seq.ok()) {
    Fail(*job, seq.status());
    return true;
  }
  Session s;
  s.seq = *seq;
  s.owner = job->owner;
  s.policy = job->request.cache_policy.value_or(pipeline_->options().cache_policy).name;
  s.next_pos = info.next_pos;
  s.visual_tokens = prompt->visual_tokens;
  s.has_prefix = !job->request.prompt.empty();
  s.last_used = Clock::now();
  std::string id = NewSessionId();
  while (sessions_.count(id)) id = NewSessionId();
  auto& slot = sessions_.emplace(id, std::move(s)).first->second;
  spdlog::info("event=session_created session={} prompt_tokens={} kv_policy={} kv_bytes={}", id,
               prompt->ids.size(), slot.policy, cache->Bytes(slot.seq));
  if (metrics_) metrics_->SetSessionsActive(static_cast<int64_t>(sessions_.size()));
  e.session = View(id, slot);
  e.queue_seconds = SecondsSince(job->enqueued);
  job->channel->Push(std::move(e));
  return true;
}

void EngineLoop::Admit(std::vector<std::shared_ptr<Job>>& waiting) {
  auto* cache = pipeline_->cache();
  // Reads and deletions need no decoding: answer them now, even while the batch is full.
  for (auto it = waiting.begin(); it != waiting.end();) {
    if ((*it)->kind == Job::Kind::kGetSession || (*it)->kind == Job::Kind::kDeleteSession) {
      HandleSessionJob(*it);
      it = waiting.erase(it);
    } else {
      ++it;
    }
  }
  while (!waiting.empty() && static_cast<int>(active_.size()) < options_.max_running) {
    std::shared_ptr<Job> job = waiting.front();
    if (job->cancelled || Clock::now() > job->deadline) {
      waiting.erase(waiting.begin());
      Fail(*job, job->cancelled ? absl::CancelledError("cancelled while queued")
                                : absl::DeadlineExceededError("deadline passed while queued"));
      continue;
    }
    if (job->kind != Job::Kind::kGenerate && job->kind != Job::Kind::kSessionGenerate) {
      if (!HandleSessionJob(job)) break;  // waits for pages
      waiting.erase(waiting.begin());
      continue;
    }
    Session* session = nullptr;
    absl::StatusOr<engine::PreparedPrompt> prompt;
    std::vector<int> turn_ids;
    if (job->kind == Job::Kind::kSessionGenerate) {
      auto found = FindSession(*job);
      absl::Status st = found.status();
      if (st.ok() && (*found)->busy) {
        st = absl::FailedPreconditionError("a turn is already running on this session");
      }
      if (st.ok() && absl::StrContains(job->request.prompt, engine::kImagePlaceholder)) {
        st = absl::InvalidArgumentError("the prompt must not contain <image>");
      }
      if (!st.ok()) {
        waiting.erase(waiting.begin());
        Fail(*job, st);
        continue;
      }
      session = *found;
      // The turn's text follows the previous answer (its last token was sampled, never fed).
      const auto tail = SplitTemplate(pipeline_->options().chat_template).second;
      const auto& tok = pipeline_->tokenizer();
      if (session->last_token >= 0) {
        turn_ids.push_back(session->last_token);
        auto more = tok.Encode("USER: " + job->request.prompt + tail, /*add_bos=*/false);
        turn_ids.insert(turn_ids.end(), more.begin(), more.end());
      } else {
        turn_ids = tok.Encode((session->has_prefix ? " " : "") + job->request.prompt + tail,
                              /*add_bos=*/false);
      }
      engine::PreparedPrompt p;
      p.ids = turn_ids;
      prompt = std::move(p);
    } else {
      prompt = pipeline_->Prepare(job->request);
    }
    if (!prompt.ok()) {
      waiting.erase(waiting.begin());
      Fail(*job, prompt.status());
      continue;
    }
    // Admission: the pool must hold the whole prompt (and the first generated token).
    const int64_t need = cache->PagesNeeded(session ? session->seq : -1,
                                            static_cast<int64_t>(prompt->ids.size()) + 1);
    if (need > pipeline_->pool().num_pages()) {
      waiting.erase(waiting.begin());
      Fail(*job, absl::ResourceExhaustedError(absl::StrCat(
                     "the prompt needs ", need, " KV pages but the whole pool has ",
                     pipeline_->pool().num_pages(), "; send less media or raise --kv-cache-bytes")));
      continue;
    }
    if (need > pipeline_->pool().free_pages()) {
      if (session) session->busy = true;  // not a candidate for eviction
      const bool room = EvictFor(need);
      if (session) session->busy = false;
      if (!room) break;  // wait for running sequences to finish
    }
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
      // Cancellation is not a stop: the loop ends the sequence with CANCELLED or
      // DEADLINE_EXCEEDED before the next decode step, so it is counted and answered as such.
      return more;
    };
    if (metrics_) metrics_->ObserveQueueTime(SecondsSince(job->enqueued));
    active_.push_back(std::move(a));
    const auto t0 = Clock::now();
    absl::StatusOr<engine::SeqId> id;
    if (session) {
      raw->session_id = job->session_id;
      raw->policy = session->policy;
      session->busy = true;
      id = generator_->Resume(session->seq, session->next_pos, turn_ids, std::move(spec));
      if (!id.ok()) session->busy = false;
    } else {
      id = generator_->Add(std::move(spec));
    }
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
      // Wake at least once a second while sessions exist, so idle ones expire on time.
      auto ready = [&] { return stop_ || !queue_.empty() || !active_.empty() ||
                                (!waiting.empty() && generator_->HasRunning()); };
      if (sessions_.empty()) {
        cv_.wait(lock, ready);
      } else {
        cv_.wait_for(lock, std::chrono::seconds(1), ready);
      }
      if (stop_) break;
      while (!queue_.empty()) {
        waiting.push_back(std::move(queue_.front()));
        queue_.pop_front();
      }
      queue_depth_ = 0;
    }
    ExpireIdle();
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
      // Idle sessions give way to running requests: least recently used first, before the
      // generator has to stop a running one for want of pages.
      EvictFor(generator_->PagesForNextStep());
      absl::Status st = generator_->Step();
      if (!st.ok()) spdlog::warn("event=decode_step_failed error=\"{}\"", st.ToString());
    }
    for (auto& [id, res] : generator_->TakeFinished()) {
      auto it = std::find_if(active_.begin(), active_.end(),
                             [id = id](const auto& a) { return a->id == id; });
      if (it == active_.end()) continue;
      Active& a = **it;
      if (!a.session_id.empty()) {
        auto sit = sessions_.find(a.session_id);
        if (sit != sessions_.end()) {
          if (res.finish == engine::FinishReason::kError &&
              !pipeline_->cache()->HasSequence(id)) {
            // The generator dropped the sequence's cache: the session cannot go on. (A turn
            // that was cancelled or ran past its deadline keeps it, and the session goes on
            // with the tokens of that turn so far.)
            sessions_.erase(sit);
            gone_[a.session_id] = absl::StrCat("session ", a.session_id,
                                               " ended when its turn failed: ", res.error.message());
            gone_order_.push_back(a.session_id);
            if (metrics_) metrics_->SetSessionsActive(static_cast<int64_t>(sessions_.size()));
          } else {
            Session& ss = sit->second;
            ss.next_pos = res.next_pos;
            if (!res.tokens.empty()) ss.last_token = res.tokens.back();
            ss.turns += 1;
            ss.busy = false;
            ss.last_used = Clock::now();
          }
        }
      }
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
  for (auto& [id, sess] : sessions_) generator_->Close(sess.seq);
  sessions_.clear();
  for (auto& j : waiting) Fail(*j, absl::UnavailableError("the server is shutting down"));
  std::lock_guard<std::mutex> lock(mu_);
  for (auto& j : queue_) Fail(*j, absl::UnavailableError("the server is shutting down"));
  queue_.clear();
}

}  // namespace vlc::server
