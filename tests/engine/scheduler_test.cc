// The serving core in this process, on a tiny checkpoint, with a clock the tests move: sessions
// expire by TTL and leave least recently used first, admission waits for KV pages, deadlines and
// cancellation end requests cleanly, media are prepared once per request however long it waits,
// and session turns follow the configured chat template.
#include "engine/scheduler.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <mutex>
#include <thread>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "common/fs.h"
#include "engine/pipeline.h"
#include "engine/session_snapshot.h"
#include "tools/make_tiny.h"

namespace vlc::engine {
namespace {

using std::chrono::seconds;

// Records what the scheduler reports.
class RecordingSink : public MetricsSink {
 public:
  void CountSessionMove(const std::string& result) override {
    std::lock_guard<std::mutex> lock(mu);
    moves.push_back(result);
  }
  std::vector<std::string> moves;
  void SetBatchSize(int64_t n) override { max_batch = std::max<int64_t>(max_batch, n); }
  void CountEviction(const std::string& reason) override {
    std::lock_guard<std::mutex> lock(mu);
    evictions.push_back(reason);
  }
  std::atomic<int64_t> max_batch{0};
  std::mutex mu;
  std::vector<std::string> evictions;
};

std::string Png(int seed) { return tools::RandomPng(40, 30, seed); }

struct PoolFit;

class SchedulerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    char tmpl[] = "/tmp/vlcache-scheduler-XXXXXX";
    dir_ = new std::string(mkdtemp(tmpl));
    tools::TinyOptions opts;
    opts.seed = 5;
    ASSERT_TRUE(tools::MakeTinyCheckpoint(*dir_ + "/model", opts).ok());
  }
  static void TearDownTestSuite() {
    RemoveTree(*dir_);
    delete dir_;
  }

  // Loads the tiny model with `options` and starts a scheduler on it with the test's clock.
  void StartEngine(PipelineOptions options = {}, SchedulerOptions so = {}) {
    auto p = Pipeline::Load(*dir_ + "/model", options);
    ASSERT_TRUE(p.ok()) << p.status();
    pipeline_ = std::move(*p);
    so.clock = &clock_;
    so.metrics = &sink_;
    scheduler_ = std::make_unique<Scheduler>(pipeline_.get(), so);
    scheduler_->Start();
  }
  void TearDown() override {
    if (scheduler_) scheduler_->Stop();
  }

  static GenerateRequest ImageRequest(int seed, int max_new) {
    GenerateRequest r;
    r.media.images = {Png(seed)};
    r.prompt = "what color is the triangle?";
    r.sampling.max_new_tokens = max_new;
    r.sampling.ignore_eos = true;
    return r;
  }

  std::shared_ptr<Job> Submit(Job::Kind kind, GenerateRequest request = {},
                              const std::string& session = "") {
    auto job = std::make_shared<Job>();
    job->kind = kind;
    job->request = std::move(request);
    job->session_id = session;
    EXPECT_TRUE(scheduler_->Submit(job).ok());
    return job;
  }

  // The job's final event (bounded wait: a minute of real time).
  static StreamEvent Final(const std::shared_ptr<Job>& job, std::string* text = nullptr) {
    StreamEvent e;
    for (int i = 0; i < 600; ++i) {
      if (!job->channel->Pop(&e, std::chrono::milliseconds(100))) continue;
      if (text) *text += e.text;
      if (e.final) return e;
    }
    ADD_FAILURE() << "no final event within a minute";
    e.status = absl::DeadlineExceededError("test timed out");
    return e;
  }

  // Waits for the job's first streamed event (true) or its end (false).
  static bool FirstDelta(const std::shared_ptr<Job>& job, StreamEvent* e) {
    for (int i = 0; i < 600; ++i) {
      if (job->channel->Pop(e, std::chrono::milliseconds(100))) return !e->final;
    }
    return false;
  }

  std::string CreateSession(int seed, const std::string& prefix = "") {
    GenerateRequest r;
    r.media.images = {Png(seed)};
    r.prompt = prefix;
    r.session_opening = true;
    const StreamEvent e = Final(Submit(Job::Kind::kCreateSession, r));
    EXPECT_TRUE(e.status.ok()) << e.status;
    return e.session.id;
  }

  StreamEvent Turn(const std::string& session, const std::string& prompt, int max_new = 3) {
    GenerateRequest r;
    r.prompt = prompt;
    r.sampling.max_new_tokens = max_new;
    r.sampling.ignore_eos = true;
    return Final(Submit(Job::Kind::kSessionGenerate, r, session));
  }

  absl::Status GetSession(const std::string& session, SessionView* view = nullptr) {
    const StreamEvent e = Final(Submit(Job::Kind::kGetSession, {}, session));
    if (view) *view = e.session;
    return e.status;
  }

  PoolFit StartWithSmallPool(bool exact);

  static std::string* dir_;
  ManualClock clock_;
  RecordingSink sink_;
  std::unique_ptr<Pipeline> pipeline_;
  std::unique_ptr<Scheduler> scheduler_;
};
std::string* SchedulerTest::dir_ = nullptr;

TEST_F(SchedulerTest, AnIdleSessionExpiresOnlyAfterItsTtl) {
  SchedulerOptions so;
  so.session_ttl_seconds = 10;
  StartEngine({}, so);
  const std::string id = CreateSession(1);
  clock_.Advance(seconds(6));
  SessionView view;
  ASSERT_TRUE(GetSession(id, &view).ok());
  EXPECT_NEAR(view.idle_seconds, 6.0, 1e-6);
  EXPECT_TRUE(Turn(id, "and now?").status.ok());  // a turn makes it recently used again
  clock_.Advance(seconds(9));
  EXPECT_TRUE(GetSession(id).ok());
  clock_.Advance(seconds(2));
  const absl::Status gone = GetSession(id);
  EXPECT_EQ(gone.code(), absl::StatusCode::kNotFound) << gone;
  EXPECT_NE(gone.message().find("expired after 11 s idle"), std::string::npos) << gone;
  std::lock_guard<std::mutex> lock(sink_.mu);
  EXPECT_EQ(sink_.evictions, std::vector<std::string>{"ttl"});
}

TEST_F(SchedulerTest, TheLeastRecentlyUsedIdleSessionMakesRoomForANewOne) {
  SchedulerOptions so;
  so.max_sessions = 2;
  StartEngine({}, so);
  const std::string a = CreateSession(1);
  clock_.Advance(seconds(1));
  const std::string b = CreateSession(2);
  clock_.Advance(seconds(1));
  ASSERT_TRUE(Turn(a, "again").status.ok());  // a is now the most recently used
  clock_.Advance(seconds(1));
  const std::string c = CreateSession(3);
  EXPECT_TRUE(GetSession(a).ok());
  EXPECT_TRUE(GetSession(c).ok());
  const absl::Status gone = GetSession(b);
  EXPECT_EQ(gone.code(), absl::StatusCode::kNotFound) << gone;
  EXPECT_NE(gone.message().find("evicted (max_sessions)"), std::string::npos) << gone;
}

// A page size and pool for the tiny model's image request: one page per layer holds the whole
// request (its prompt and max_new tokens), and the pool holds one such request but not two
// (pool_bytes), or exactly one (exact_bytes). Admission reserves a request's prompt and its
// max_new tokens, which fill exactly one page per layer here.
struct PoolFit {
  int page_tokens = 0;
  int max_new = 3;
  int64_t pool_bytes = 0;
  int64_t exact_bytes = 0;
};
PoolFit OneRequestPool(const Pipeline& p, const GenerateRequest& r) {
  auto prompt = p.Prepare(r);
  EXPECT_TRUE(prompt.ok()) << prompt.status();
  PoolFit fit;
  fit.page_tokens = static_cast<int>(prompt->ids.size()) + fit.max_new;
  const int layers = p.model().config().text.num_hidden_layers;
  const int64_t token_bytes =
      p.pool().capacity_bytes() / p.pool().num_pages() / p.options().kv_page_tokens;
  const int64_t page_bytes = token_bytes * fit.page_tokens;
  fit.pool_bytes = (2 * layers - 1) * page_bytes;
  fit.exact_bytes = layers * page_bytes;
  return fit;
}

// Restarts the engine on a pool sized by OneRequestPool: for one request and not two, or
// (`exact`) for one request and nothing else.
PoolFit SchedulerTest::StartWithSmallPool(bool exact) {
  StartEngine();
  const PoolFit fit = OneRequestPool(*pipeline_, ImageRequest(1, 1));
  scheduler_->Stop();
  PipelineOptions small;
  small.kv_cache_bytes = exact ? fit.exact_bytes : fit.pool_bytes;
  small.kv_page_tokens = fit.page_tokens;
  StartEngine(small);
  return fit;
}

TEST_F(SchedulerTest, RequestsQueueBehindAFullPoolAndTheirMediaAreEncodedOnce) {
  const PoolFit fit = StartWithSmallPool(/*exact=*/false);
  const int64_t encodes_before = pipeline_->vision_encodes();
  std::vector<std::shared_ptr<Job>> jobs;
  for (int i = 0; i < 4; ++i) jobs.push_back(Submit(Job::Kind::kGenerate, ImageRequest(i, fit.max_new)));
  for (auto& job : jobs) {
    const StreamEvent e = Final(job);
    ASSERT_TRUE(e.status.ok()) << e.status;
    EXPECT_EQ(e.usage.generated_tokens, fit.max_new);
  }
  EXPECT_EQ(sink_.max_batch.load(), 1) << "the pool holds one request at a time";
  EXPECT_EQ(pipeline_->vision_encodes() - encodes_before, 4)
      << "each request's image went through the vision tower exactly once";
  EXPECT_EQ(pipeline_->pool().free_pages(), pipeline_->pool().num_pages());

  // A prompt larger than the whole pool is refused at once, and the engine goes on.
  GenerateRequest two = ImageRequest(9, 1);
  two.media.images.push_back(Png(10));
  two.media.images.push_back(Png(11));
  const StreamEvent big = Final(Submit(Job::Kind::kGenerate, two));
  EXPECT_EQ(big.status.code(), absl::StatusCode::kResourceExhausted) << big.status;
  EXPECT_NE(big.status.message().find("whole pool"), std::string::npos) << big.status;
  EXPECT_TRUE(Final(Submit(Job::Kind::kGenerate, ImageRequest(12, 1))).status.ok());
}

// A pool that holds one request at full length and the prompt of a second, but not both answers:
// admission reserves each request's growth, so the second waits for the first instead of starting
// and being stopped mid-answer when the pages run out; both finish.
TEST_F(SchedulerTest, AdmissionReservesTheAnswerSoNoAdmittedRequestRunsOutOfPages) {
  StartEngine();
  const int max_new = 24, page_tokens = 4;
  auto prompt = pipeline_->Prepare(ImageRequest(1, max_new));
  ASSERT_TRUE(prompt.ok()) << prompt.status();
  const int64_t n = static_cast<int64_t>(prompt->ids.size());
  const int64_t layers = pipeline_->model().config().text.num_hidden_layers;
  const int64_t token_bytes = pipeline_->pool().capacity_bytes() / pipeline_->pool().num_pages() /
                              pipeline_->options().kv_page_tokens;
  auto pages = [&](int64_t tokens) { return (tokens + page_tokens - 1) / page_tokens; };
  scheduler_->Stop();
  PipelineOptions small;
  small.kv_page_tokens = page_tokens;
  small.kv_cache_bytes =
      layers * (pages(n + max_new) + pages(n) + 1) * page_tokens * token_bytes;
  StartEngine(small);
  std::vector<std::shared_ptr<Job>> jobs;
  for (int i = 0; i < 2; ++i) jobs.push_back(Submit(Job::Kind::kGenerate, ImageRequest(1, max_new)));
  for (auto& job : jobs) {
    const StreamEvent e = Final(job);
    EXPECT_TRUE(e.status.ok()) << e.status;
  }
  EXPECT_EQ(sink_.max_batch.load(), 1) << "the second request waited for the first one's pages";
  EXPECT_EQ(pipeline_->pool().free_pages(), pipeline_->pool().num_pages());
}

TEST_F(SchedulerTest, AnIdleSessionGivesItsPagesToARequestThatNeedsThem) {
  const PoolFit fit = StartWithSmallPool(/*exact=*/true);
  const std::string idle = CreateSession(1);
  const StreamEvent e = Final(Submit(Job::Kind::kGenerate, ImageRequest(2, fit.max_new)));
  ASSERT_TRUE(e.status.ok()) << e.status;
  const absl::Status gone = GetSession(idle);
  EXPECT_EQ(gone.code(), absl::StatusCode::kNotFound);
  EXPECT_NE(gone.message().find("evicted (kv_pages)"), std::string::npos) << gone;
}

TEST_F(SchedulerTest, DeadlinesEndRequestsQueuedOrRunning) {
  StartEngine();
  auto late = std::make_shared<Job>();
  late->request = ImageRequest(1, 4);
  late->deadline = clock_.Now() - seconds(1);
  ASSERT_TRUE(scheduler_->Submit(late).ok());
  const StreamEvent queued = Final(late);
  EXPECT_EQ(queued.status.code(), absl::StatusCode::kDeadlineExceeded) << queued.status;
  EXPECT_NE(queued.status.message().find("while queued"), std::string::npos) << queued.status;

  auto running = std::make_shared<Job>();
  running->request = ImageRequest(2, 4000);
  running->deadline = clock_.Now() + seconds(30);
  ASSERT_TRUE(scheduler_->Submit(running).ok());
  StreamEvent first;
  ASSERT_TRUE(FirstDelta(running, &first)) << first.status;
  clock_.Advance(seconds(31));
  const StreamEvent e = Final(running);
  EXPECT_EQ(e.status.code(), absl::StatusCode::kDeadlineExceeded) << e.status;
  EXPECT_EQ(pipeline_->pool().free_pages(), pipeline_->pool().num_pages());
}

TEST_F(SchedulerTest, ACancelledRequestEndsAndTheNextOneIsServed) {
  StartEngine();
  auto job = Submit(Job::Kind::kGenerate, ImageRequest(1, 4000));
  StreamEvent first;
  ASSERT_TRUE(FirstDelta(job, &first)) << first.status;
  job->cancelled = true;
  const StreamEvent e = Final(job);
  EXPECT_EQ(e.status.code(), absl::StatusCode::kCancelled) << e.status;
  EXPECT_EQ(pipeline_->pool().free_pages(), pipeline_->pool().num_pages());
  const StreamEvent next = Final(Submit(Job::Kind::kGenerate, ImageRequest(2, 3)));
  EXPECT_TRUE(next.status.ok()) << next.status;
  EXPECT_EQ(next.usage.generated_tokens, 3);
}

// Polls (bounded: 20 s of real time) until `done`.
template <typename F>
bool Eventually(F done) {
  for (int i = 0; i < 2000; ++i) {
    if (done()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return done();
}

TEST_F(SchedulerTest, FreedMemoryIsReturnedOnlyOnceTheEngineHasBeenIdleAWhile) {
  std::atomic<int> trims{0}, trims_while_busy{0};
  SchedulerOptions so;
  so.heap_trim_idle_seconds = 5;
  so.heap_trim = [&] {
    ++trims;
    if (scheduler_->running() > 0 || scheduler_->queue_depth() > 0) ++trims_while_busy;
  };
  StartEngine({}, so);
  // A long answer with the clock far past the idle time while it runs: no trim during work.
  auto job = Submit(Job::Kind::kGenerate, ImageRequest(1, 4000));
  StreamEvent first;
  ASSERT_TRUE(FirstDelta(job, &first)) << first.status;
  clock_.Advance(seconds(60));
  for (int i = 0; i < 20; ++i) ASSERT_TRUE(FirstDelta(job, &first)) << first.status;
  job->cancelled = true;
  EXPECT_EQ(Final(job).status.code(), absl::StatusCode::kCancelled);
  // Idle, but not yet for 5 s of the engine's clock.
  clock_.Advance(seconds(4));
  EXPECT_TRUE(Final(Submit(Job::Kind::kGenerate, ImageRequest(2, 3))).status.ok());
  clock_.Advance(seconds(4));
  // Past the idle time: one trim, then none until more work is done.
  clock_.Advance(seconds(2));
  EXPECT_TRUE(Eventually([&] { return trims.load() >= 1; }));
  EXPECT_TRUE(Final(Submit(Job::Kind::kGenerate, ImageRequest(3, 3))).status.ok());
  clock_.Advance(seconds(6));
  EXPECT_TRUE(Eventually([&] { return trims.load() >= 2; }));
  EXPECT_EQ(trims.load(), 2);
  EXPECT_EQ(trims_while_busy.load(), 0);
}

bool Contains(const std::vector<int>& haystack, const std::vector<int>& needle) {
  return std::search(haystack.begin(), haystack.end(), needle.begin(), needle.end()) !=
         haystack.end();
}

TEST_F(SchedulerTest, SessionTurnsFollowTheConfiguredChatTemplate) {
  PipelineOptions options;
  options.chat_template = "Q: <image>\n{prompt} A:";
  StartEngine(options);
  const std::string id = CreateSession(1, "look");
  ASSERT_TRUE(Turn(id, "first").status.ok());
  ASSERT_TRUE(Turn(id, "second").status.ok());
  SessionView view;
  ASSERT_TRUE(GetSession(id, &view).ok());
  const Tokenizer& tok = pipeline_->tokenizer();
  // The opening's prefix text continues into the first turn; later turns start with the
  // template's own prefix and end with its tail.
  EXPECT_TRUE(Contains(view.history, tok.Encode(" first A:", false)));
  EXPECT_TRUE(Contains(view.history, tok.Encode("Q: second A:", false)));
  EXPECT_FALSE(Contains(view.history, tok.Encode("USER: second", false)));
  EXPECT_FALSE(Contains(view.history, tok.Encode(" ASSISTANT:", false)));
  EXPECT_EQ(static_cast<int64_t>(view.history.size()), view.logical_length);
}

TEST_F(SchedulerTest, DeletingASessionMidTurnCancelsTheTurnAndTheSessionGoes) {
  StartEngine();
  const std::string id = CreateSession(1);
  GenerateRequest r;
  r.prompt = "tell me everything";
  r.sampling.max_new_tokens = 4000;
  r.sampling.ignore_eos = true;
  auto turn = Submit(Job::Kind::kSessionGenerate, r, id);
  StreamEvent first;
  ASSERT_TRUE(FirstDelta(turn, &first)) << "the turn started";
  // Answered at once, not FAILED_PRECONDITION: a client that gave up on a turn may delete.
  EXPECT_TRUE(Final(Submit(Job::Kind::kDeleteSession, {}, id)).status.ok());
  const StreamEvent end = Final(turn);
  EXPECT_EQ(end.status.code(), absl::StatusCode::kCancelled) << end.status;
  EXPECT_NE(end.status.message().find("deleted"), std::string::npos) << end.status;
  const absl::Status gone = GetSession(id);
  EXPECT_EQ(gone.code(), absl::StatusCode::kNotFound) << gone;
  EXPECT_NE(gone.message().find("was deleted"), std::string::npos) << gone;
  EXPECT_EQ(scheduler_->num_sessions(), 0);
}

// ---- sessions that move between schedulers (replicas) through a session store

class SessionMoveTest : public SchedulerTest {
 protected:
  void SetUp() override {
    store_dir_ = *dir_ + "/store-" + ::testing::UnitTest::GetInstance()->current_test_info()->name();
    auto store = DirectorySessionStore::Open(store_dir_);
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = std::move(*store);
    auto fingerprint = ModelFingerprint(*dir_ + "/model");
    ASSERT_TRUE(fingerprint.ok()) << fingerprint.status();
    fingerprint_ = *fingerprint;
  }
  // A replica: a scheduler on a freshly loaded pipeline, sharing the store.
  void StartReplica(const std::string& policy, const std::string& fingerprint = "") {
    if (scheduler_) scheduler_->Stop();
    scheduler_.reset();
    PipelineOptions po;
    po.cache_policy.name = policy;
    po.cache_policy.budget = 0.1;
    SchedulerOptions so;
    so.session_store = store_.get();
    so.model_fingerprint = fingerprint.empty() ? fingerprint_ : fingerprint;
    StartEngine(po, so);
  }
  // The ids a turn generated, in order, and its status.
  absl::Status TurnIds(const std::string& session, const std::string& prompt, int max_new,
                       std::vector<int>* ids, const std::string& owner = "") {
    GenerateRequest r;
    r.prompt = prompt;
    r.sampling.max_new_tokens = max_new;
    r.sampling.ignore_eos = true;
    auto job = std::make_shared<Job>();
    job->kind = Job::Kind::kSessionGenerate;
    job->request = r;
    job->session_id = session;
    job->owner = owner;
    EXPECT_TRUE(scheduler_->Submit(job).ok());
    for (int i = 0; i < 600; ++i) {
      StreamEvent e;
      if (!job->channel->Pop(&e, std::chrono::milliseconds(100))) continue;
      ids->insert(ids->end(), e.token_ids.begin(), e.token_ids.end());
      if (e.final) return e.status;
    }
    return absl::DeadlineExceededError("no final event within a minute");
  }
  // Hands the sessions over and waits (bounded) until the scheduler holds none.
  void MoveAndStop() {
    scheduler_->MoveSessions();
    for (int i = 0; i < 600 && scheduler_->num_sessions() > 0; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    EXPECT_EQ(scheduler_->num_sessions(), 0);
    scheduler_->Stop();
  }
  std::string SnapshotPath(const std::string& id) const {
    return store_dir_ + "/" + id + ".vlcsnap";
  }

  std::string store_dir_;
  std::unique_ptr<DirectorySessionStore> store_;
  std::string fingerprint_;
};

TEST_F(SessionMoveTest, AMovedSessionContinuesTokenForTokenAsIfItHadStayed) {
  for (const std::string policy : {"full", "vlcache"}) {
    SCOPED_TRACE(policy);
    // The conversation on one replica.
    StartReplica(policy);
    const std::string stay = CreateSession(3);
    std::vector<int> first, reference;
    ASSERT_TRUE(TurnIds(stay, "what is it?", 5, &first).ok());
    ASSERT_TRUE(TurnIds(stay, "and then?", 8, &reference).ok());
    // The same conversation, its replica stopping between the turns.
    const std::string moving = CreateSession(3);
    std::vector<int> first_again, moved;
    ASSERT_TRUE(TurnIds(moving, "what is it?", 5, &first_again).ok());
    EXPECT_EQ(first_again, first);
    MoveAndStop();
    EXPECT_TRUE(std::filesystem::exists(SnapshotPath(moving)));
    StartReplica(policy);  // another replica: nothing in memory, the same store
    ASSERT_TRUE(TurnIds(moving, "and then?", 8, &moved).ok());
    EXPECT_EQ(moved, reference) << "a greedy turn after the move equals the turn without it";
    EXPECT_FALSE(std::filesystem::exists(SnapshotPath(moving))) << "a restore takes the snapshot";
    SessionView view;
    ASSERT_TRUE(GetSession(moving, &view).ok());
    EXPECT_EQ(view.turns, 2);
    EXPECT_EQ(view.policy, policy);
  }
  std::lock_guard<std::mutex> lock(sink_.mu);
  EXPECT_EQ(std::count(sink_.moves.begin(), sink_.moves.end(), "restored"), 2);
}

TEST_F(SessionMoveTest, BadSnapshotsAreRefusedWithTheReasonAndSetAside) {
  StartReplica("vlcache");
  const std::string a = CreateSession(1), b = CreateSession(2), c = CreateSession(3);
  const std::string d = CreateSession(4);
  MoveAndStop();
  auto read = [&](const std::string& id) {
    std::ifstream f(SnapshotPath(id), std::ios::binary);
    std::stringstream ss;
    ss << f.rdbuf();
    return ss.str();
  };
  auto write = [&](const std::string& id, const std::string& bytes) {
    std::ofstream(SnapshotPath(id), std::ios::binary) << bytes;
  };
  std::string corrupt = read(a);
  corrupt[corrupt.size() / 2] ^= 0x5a;
  write(a, corrupt);
  const std::string truncated = read(b);
  write(b, truncated.substr(0, truncated.size() / 3));
  StartReplica("vlcache", std::string(64, 'f'));  // another model
  std::vector<int> ids;
  absl::Status s = TurnIds(a, "hi", 2, &ids);
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
  EXPECT_NE(s.message().find("checksum does not match"), std::string::npos) << s;
  s = TurnIds(b, "hi", 2, &ids);
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
  EXPECT_NE(s.message().find("checksum"), std::string::npos) << s;
  s = TurnIds(c, "hi", 2, &ids);
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
  EXPECT_NE(s.message().find("taken of another model"), std::string::npos) << s;
  // Each was set aside with its reason; none is offered again.
  int rejected = 0;
  for (const auto& e : std::filesystem::directory_iterator(store_dir_ + "/rejected")) {
    rejected += e.path().extension() == ".why";
  }
  EXPECT_EQ(rejected, 3);
  s = TurnIds(a, "hi", 2, &ids);
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound) << s;
  // The scheduler goes on serving; the intact snapshot waits for its own model.
  EXPECT_TRUE(Final(Submit(Job::Kind::kGenerate, ImageRequest(5, 2))).status.ok());
  StartReplica("vlcache");
  EXPECT_TRUE(TurnIds(d, "hi", 2, &ids).ok());
}

TEST_F(SessionMoveTest, OwnersMissesAndDeletionsOfStoredSessions) {
  StartReplica("full");
  auto open = std::make_shared<Job>();
  open->kind = Job::Kind::kCreateSession;
  open->request.media.images = {Png(1)};
  open->request.session_opening = true;
  open->owner = "token-of-alice";
  ASSERT_TRUE(scheduler_->Submit(open).ok());
  const StreamEvent opened = Final(open);
  ASSERT_TRUE(opened.status.ok()) << opened.status;
  const std::string alices = opened.session.id;
  const std::string other = CreateSession(2);
  MoveAndStop();
  // The snapshot names its owner by a digest, never by the token itself.
  {
    std::ifstream f(SnapshotPath(alices), std::ios::binary);
    std::stringstream ss;
    ss << f.rdbuf();
    EXPECT_EQ(ss.str().find("token-of-alice"), std::string::npos);
  }
  StartReplica("full");
  std::vector<int> ids;
  absl::Status s = TurnIds(alices, "hi", 2, &ids, "token-of-bob");
  EXPECT_EQ(s.code(), absl::StatusCode::kPermissionDenied) << s;
  EXPECT_TRUE(std::filesystem::exists(SnapshotPath(alices))) << "it stays for its owner";
  EXPECT_TRUE(TurnIds(alices, "hi", 2, &ids, "token-of-alice").ok());
  // Deleting a stored session drops its snapshot.
  EXPECT_TRUE(Final(Submit(Job::Kind::kDeleteSession, {}, other)).status.ok());
  EXPECT_FALSE(std::filesystem::exists(SnapshotPath(other)));
  // A session neither held nor stored: NOT_FOUND that says the store was asked too.
  s = TurnIds(other, "hi", 2, &ids);
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound) << s;
  s = TurnIds("never-made", "hi", 2, &ids);
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound) << s;
  EXPECT_NE(s.message().find("session store has no snapshot"), std::string::npos) << s;
}

TEST_F(SchedulerTest, AStoppedSchedulerAnswersEveryJobUnavailable) {
  StartEngine();
  auto running = Submit(Job::Kind::kGenerate, ImageRequest(1, 4000));
  StreamEvent first;
  ASSERT_TRUE(FirstDelta(running, &first));
  scheduler_->Stop();
  EXPECT_EQ(Final(running).status.code(), absl::StatusCode::kUnavailable);
  auto after = std::make_shared<Job>();
  EXPECT_EQ(scheduler_->Submit(after).code(), absl::StatusCode::kUnavailable);
}

}  // namespace
}  // namespace vlc::engine
