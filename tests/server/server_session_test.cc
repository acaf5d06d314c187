// Sessions against the real server process: a conversation keeps its compressed KV cache across
// turns, is reproducible, is guarded by its creator's token, and leaves when deleted, idle too
// long or pushed out by newer sessions, with an error that says which. Each case starts its own
// server, with the flags it tests.
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <string>
#include <thread>
#include <vector>

#include "common/fs.h"
#include "engine/pipeline.h"
#include "server/config.h"
#include "engine/scheduler.h"
#include "server/inference_service.h"
#include "tests/server/server_fixture.h"
#include "vlcache/v1/inference.grpc.pb.h"

namespace vlc::server {
namespace {

constexpr double kBudget = 0.5;
const char* const kTurns[] = {"what is in the picture?", "and what color is it?",
                              "say it once more, shorter."};

// Sets a deadline and, when `token` is not empty, the bearer token.
void Prepare(grpc::ClientContext* ctx, const std::string& token) {
  ctx->set_deadline(std::chrono::system_clock::now() + std::chrono::minutes(2));
  if (!token.empty()) ctx->AddMetadata("authorization", "Bearer " + token);
}

pb::CreateSessionRequest SessionRequest(int image_seed) {
  pb::CreateSessionRequest r;
  r.mutable_media()->add_images(Png(40, 30, image_seed));
  r.set_prompt_prefix("You look at the image and answer briefly.");
  r.mutable_cache()->set_policy("vlcache");
  r.mutable_cache()->set_budget(kBudget);
  return r;
}

grpc::Status CreateSession(pb::Inference::Stub* stub, const pb::CreateSessionRequest& request,
                           pb::SessionInfo* info, const std::string& token = "") {
  grpc::ClientContext ctx;
  Prepare(&ctx, token);
  return stub->CreateSession(&ctx, request, info);
}

// A turn, greedy with a fixed seed so that it is reproducible.
pb::SessionGenerateRequest TurnRequest(const std::string& id, const std::string& prompt,
                                       int max_new_tokens = 8) {
  pb::SessionGenerateRequest r;
  r.set_session_id(id);
  r.set_prompt(prompt);
  r.mutable_sampling()->set_max_new_tokens(max_new_tokens);
  r.mutable_sampling()->set_temperature(0);
  r.mutable_sampling()->set_seed(17);
  return r;
}

StreamResult Turn(pb::Inference::Stub* stub, const std::string& id, const std::string& prompt,
                  const std::string& token = "", int max_new_tokens = 8) {
  const pb::SessionGenerateRequest r = TurnRequest(id, prompt, max_new_tokens);
  grpc::ClientContext ctx;
  Prepare(&ctx, token);
  auto reader = stub->SessionGenerate(&ctx, r);
  return ReadStream(reader.get());
}

grpc::Status GetSession(pb::Inference::Stub* stub, const std::string& id, pb::SessionInfo* info,
                        const std::string& token = "") {
  pb::GetSessionRequest r;
  r.set_session_id(id);
  grpc::ClientContext ctx;
  Prepare(&ctx, token);
  return stub->GetSession(&ctx, r, info);
}

grpc::Status DeleteSession(pb::Inference::Stub* stub, const std::string& id,
                           const std::string& token = "") {
  pb::DeleteSessionRequest r;
  r.set_session_id(id);
  pb::DeleteSessionResponse response;
  grpc::ClientContext ctx;
  Prepare(&ctx, token);
  return stub->DeleteSession(&ctx, r, &response);
}

bool IsSessionId(const std::string& id) {
  return id.size() == 32 && std::all_of(id.begin(), id.end(), [](char c) {
           return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
         });
}

std::string Describe(const grpc::Status& s) {
  return std::to_string(s.error_code()) + ": " + s.error_message();
}

// Every call on `id` is NOT_FOUND, with a message that contains `why`.
void ExpectGone(pb::Inference::Stub* stub, const std::string& id, const std::string& why,
                const std::string& token = "") {
  const StreamResult turn = Turn(stub, id, "are you there?", token);
  EXPECT_EQ(turn.status.error_code(), grpc::StatusCode::NOT_FOUND) << Describe(turn.status);
  EXPECT_NE(turn.status.error_message().find(why), std::string::npos) << Describe(turn.status);
  EXPECT_TRUE(turn.token_ids.empty()) << "tokens before the error";
  pb::SessionInfo info;
  const grpc::Status get = GetSession(stub, id, &info, token);
  EXPECT_EQ(get.error_code(), grpc::StatusCode::NOT_FOUND) << Describe(get);
  EXPECT_NE(get.error_message().find(why), std::string::npos) << Describe(get);
  const grpc::Status del = DeleteSession(stub, id, token);
  EXPECT_EQ(del.error_code(), grpc::StatusCode::NOT_FOUND) << Describe(del);
}

class SessionServerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { MakeSuiteModelDir("vlcache-session-it-", &dir_); }
  static void TearDownTestSuite() { RemoveSuiteDir(&dir_); }

  void SetUp() override { ASSERT_NE(dir_, nullptr); }

  ::testing::AssertionResult Start(const std::vector<std::string>& flags = {}) {
    return server_.Start(*dir_ + "/model", flags);
  }
  pb::Inference::Stub* stub() const { return server_.stub(); }

  int Layers() {
    grpc::ClientContext ctx;
    Prepare(&ctx, "");
    pb::ModelInfo info;
    const grpc::Status s = stub()->GetModelInfo(&ctx, pb::GetModelInfoRequest(), &info);
    EXPECT_TRUE(s.ok()) << Describe(s);
    return info.num_layers();
  }

  static std::string* dir_;
  ServerProcess server_;
};
std::string* SessionServerTest::dir_ = nullptr;

TEST_F(SessionServerTest, ThreeTurnsGrowTheCacheWithoutEvictionAndRepeatExactly) {
  ASSERT_TRUE(Start());
  const int layers = Layers();
  ASSERT_GT(layers, 0);

  // The same conversation on two sessions: greedy, the same seed, the same answers.
  std::vector<std::vector<StreamResult>> answers(2);
  std::vector<pb::SessionInfo> created(2);
  for (int run = 0; run < 2; ++run) {
    SCOPED_TRACE("session " + std::to_string(run));
    pb::SessionInfo& info = created[run];
    const grpc::Status made = CreateSession(stub(), SessionRequest(3), &info);
    ASSERT_TRUE(made.ok()) << Describe(made);
    EXPECT_TRUE(IsSessionId(info.session_id())) << info.session_id();
    EXPECT_EQ(info.visual_tokens(), kVisualTokensPerImage);
    EXPECT_EQ(info.turns(), 0);
    EXPECT_EQ(info.kv_policy(), "vlcache");
    EXPECT_GT(info.logical_length(), info.visual_tokens()) << "the prefix is in the prompt too";
    // The prompt is compressed once, at creation: the budget in every layer taken together.
    ASSERT_EQ(info.layer_budgets_size(), layers);
    const int64_t per_layer = std::max<int64_t>(1, std::llround(kBudget * info.logical_length()));
    EXPECT_EQ(std::accumulate(info.layer_budgets().begin(), info.layer_budgets().end(),
                              int64_t{0}),
              per_layer * layers);
    EXPECT_GT(info.kv_bytes_kept(), 0);
    EXPECT_LT(info.kv_bytes_kept(), info.kv_bytes_full());
    EXPECT_GE(info.idle_seconds(), 0);

    pb::SessionInfo before = info;
    for (int turn = 1; turn <= 3; ++turn) {
      SCOPED_TRACE("turn " + std::to_string(turn));
      const StreamResult r = Turn(stub(), info.session_id(), kTurns[turn - 1]);
      ASSERT_TRUE(r.status.ok()) << Describe(r.status);
      EXPECT_EQ(r.usage_messages, 1) << "usage belongs to the final message only";
      EXPECT_GE(r.usage.generated_tokens(), 1);
      EXPECT_EQ(static_cast<int>(r.token_ids.size()), r.usage.generated_tokens());
      EXPECT_GT(r.usage.prompt_tokens(), 0);
      EXPECT_EQ(r.usage.kv_policy(), "vlcache");
      answers[run].push_back(r);

      pb::SessionInfo after;
      const grpc::Status got = GetSession(stub(), info.session_id(), &after);
      ASSERT_TRUE(got.ok()) << Describe(got);
      EXPECT_EQ(after.session_id(), info.session_id());
      EXPECT_EQ(after.turns(), turn);
      EXPECT_EQ(after.visual_tokens(), kVisualTokensPerImage);
      EXPECT_EQ(after.kv_policy(), "vlcache");
      EXPECT_GE(after.idle_seconds(), 0);
      // The turn's text and its answer were appended, except the answer's last token: it was
      // sampled but is fed only as the head of the next turn.
      const int64_t growth = after.logical_length() - before.logical_length();
      EXPECT_EQ(growth, r.usage.prompt_tokens() + r.usage.generated_tokens() - 1);
      // No eviction after the one-shot compression: every layer grew by exactly that much.
      ASSERT_EQ(after.layer_budgets_size(), layers);
      for (int l = 0; l < layers; ++l) {
        EXPECT_EQ(after.layer_budgets(l), before.layer_budgets(l) + growth) << "layer " << l;
      }
      EXPECT_GT(after.kv_bytes_kept(), before.kv_bytes_kept());
      EXPECT_LT(after.kv_bytes_kept(), after.kv_bytes_full());
      before = after;
    }
  }
  EXPECT_NE(created[0].session_id(), created[1].session_id());
  for (int l = 0; l < layers; ++l) {
    EXPECT_EQ(created[0].layer_budgets(l), created[1].layer_budgets(l)) << "layer " << l;
  }
  for (int turn = 0; turn < 3; ++turn) {
    EXPECT_EQ(answers[0][turn].text, answers[1][turn].text) << "turn " << turn + 1;
    EXPECT_EQ(answers[0][turn].token_ids, answers[1][turn].token_ids) << "turn " << turn + 1;
    EXPECT_EQ(answers[0][turn].usage.prompt_tokens(), answers[1][turn].usage.prompt_tokens());
  }
}

// The engine the server runs, in this process: the same Scheduler on a Pipeline loaded here, fed
// the jobs the service would build from the same requests. Returns the final event of `job`.
StreamEvent RunInProcess(engine::Scheduler* loop, std::shared_ptr<Job> job, std::string* text) {
  EXPECT_TRUE(loop->Submit(job).ok());
  StreamEvent e;
  while (true) {
    if (!job->channel->Pop(&e, std::chrono::milliseconds(100))) continue;
    if (e.final) break;
    *text += e.text;
  }
  *text += e.text;
  return e;
}

TEST_F(SessionServerTest, ThreeTurnsMatchTheInProcessEngine) {
  ASSERT_TRUE(Start());
  const pb::CreateSessionRequest create = SessionRequest(5);
  pb::SessionInfo remote_info;
  const grpc::Status made = CreateSession(stub(), create, &remote_info);
  ASSERT_TRUE(made.ok()) << Describe(made);
  std::vector<StreamResult> remote;
  for (const char* prompt : kTurns) {
    remote.push_back(Turn(stub(), remote_info.session_id(), prompt));
    ASSERT_TRUE(remote.back().status.ok()) << Describe(remote.back().status);
  }

  // The same configuration as the server started without flags.
  const std::string model = *dir_ + "/model";
  std::vector<std::string> args = {"vlcache-server", "--model", model};
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  std::string help;
  bool exit_now = false;
  auto config = LoadConfig(static_cast<int>(argv.size()), argv.data(), &help, &exit_now);
  ASSERT_TRUE(config.ok()) << config.status();
  auto pipeline = engine::Pipeline::Load(model, config->pipeline);
  ASSERT_TRUE(pipeline.ok()) << pipeline.status();
  engine::SchedulerOptions so;
  so.max_queue = config->max_queue;
  so.max_running = config->max_running;
  so.max_sessions = config->max_sessions;
  so.session_ttl_seconds = config->session_ttl_seconds;
  so.prefill_chunk_tokens = config->pipeline.prefill_chunk_tokens;
  engine::Scheduler loop(pipeline->get(), so);
  loop.Start();
  auto job = NewCreateSessionJob(create, *config);
  ASSERT_TRUE(job.ok()) << job.status();
  std::string ignored;
  const StreamEvent local_info = RunInProcess(&loop, *job, &ignored);
  ASSERT_TRUE(local_info.status.ok()) << local_info.status;
  EXPECT_EQ(local_info.session.logical_length, remote_info.logical_length());
  EXPECT_EQ(local_info.session.kv_bytes_kept, remote_info.kv_bytes_kept());
  EXPECT_EQ(local_info.session.layer_budgets,
            std::vector<int64_t>(remote_info.layer_budgets().begin(),
                                 remote_info.layer_budgets().end()));
  for (int turn = 0; turn < 3; ++turn) {
    SCOPED_TRACE("turn " + std::to_string(turn + 1));
    auto t = NewSessionTurnJob(TurnRequest(local_info.session.id, kTurns[turn]), *config);
    ASSERT_TRUE(t.ok()) << t.status();
    std::string text;
    const StreamEvent local = RunInProcess(&loop, *t, &text);
    ASSERT_TRUE(local.status.ok()) << local.status;
    EXPECT_EQ(text, remote[turn].text);
    EXPECT_EQ(local.usage.token_ids, remote[turn].token_ids);
    EXPECT_EQ(local.usage.prompt_tokens, remote[turn].usage.prompt_tokens());
    EXPECT_EQ(local.usage.kv_bytes, remote[turn].usage.kv_bytes_kept());
  }
  loop.Stop();
}

// A turn its caller cancels mid-stream is answered CANCELLED, and the session goes on: it keeps
// the turn's prompt and the tokens generated before the cancel (as a chat keeps the part of an
// answer that was stopped), and the next turn is served on it.
TEST_F(SessionServerTest, ACancelledTurnKeepsTheSession) {
  ASSERT_TRUE(Start());
  pb::SessionInfo info;
  const grpc::Status made = CreateSession(stub(), SessionRequest(5), &info);
  ASSERT_TRUE(made.ok()) << Describe(made);
  const StreamResult first = Turn(stub(), info.session_id(), kTurns[0]);
  ASSERT_TRUE(first.status.ok()) << Describe(first.status);
  pb::SessionInfo before;
  ASSERT_TRUE(GetSession(stub(), info.session_id(), &before).ok());

  // A long turn, cancelled as soon as its first tokens arrive.
  grpc::ClientContext ctx;
  Prepare(&ctx, "");
  auto reader = stub()->SessionGenerate(&ctx, TurnRequest(info.session_id(), kTurns[1], 3000));
  pb::GenerateResponse response;
  ASSERT_TRUE(reader->Read(&response)) << "no first message";
  ctx.TryCancel();
  int64_t received = response.token_ids_size();
  while (reader->Read(&response)) received += response.token_ids_size();
  const grpc::Status cancelled = reader->Finish();
  EXPECT_EQ(cancelled.error_code(), grpc::StatusCode::CANCELLED) << Describe(cancelled);
  EXPECT_GT(received, 0);
  EXPECT_LT(received, 3000);

  // The caller sees CANCELLED at once; the server notices between two decode steps, so wait (a
  // bounded poll) until it has closed the turn.
  pb::SessionInfo after;
  grpc::Status got;
  for (int i = 0; i < 200; ++i) {
    got = GetSession(stub(), info.session_id(), &after);
    if (!got.ok() || after.turns() > before.turns()) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(25));
  }
  ASSERT_TRUE(got.ok()) << "the session should survive a cancelled turn: " << Describe(got);
  EXPECT_GT(after.logical_length(), before.logical_length());
  EXPECT_EQ(after.turns(), before.turns() + 1);
  const StreamResult next = Turn(stub(), info.session_id(), kTurns[2]);
  ASSERT_TRUE(next.status.ok()) << Describe(next.status);
  EXPECT_FALSE(next.token_ids.empty());
}

// Sessions a proxy can route: the client may name the session it creates, the x-session-id
// metadata names a call's session (alone, or agreeing with the body), and a call whose metadata
// and body disagree is refused before anything runs.
TEST_F(SessionServerTest, ClientChosenIdsAndTheSessionIdMetadata) {
  ASSERT_TRUE(Start());
  pb::CreateSessionRequest named = SessionRequest(5);
  named.set_session_id("conversation-42");
  pb::SessionInfo info;
  grpc::Status st = CreateSession(stub(), named, &info);
  ASSERT_TRUE(st.ok()) << Describe(st);
  EXPECT_EQ(info.session_id(), "conversation-42");
  st = CreateSession(stub(), named, &info);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::ALREADY_EXISTS) << Describe(st);
  named.set_session_id("not a valid id!");
  st = CreateSession(stub(), named, &info);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << Describe(st);
  EXPECT_NE(st.error_message().find("A-Z a-z 0-9"), std::string::npos) << Describe(st);

  // The metadata alone names the session to create, and the session of a later call.
  {
    grpc::ClientContext ctx;
    Prepare(&ctx, "");
    ctx.AddMetadata("x-session-id", "from-metadata");
    st = stub()->CreateSession(&ctx, SessionRequest(6), &info);
    ASSERT_TRUE(st.ok()) << Describe(st);
    EXPECT_EQ(info.session_id(), "from-metadata");
  }
  {
    grpc::ClientContext ctx;
    Prepare(&ctx, "");
    ctx.AddMetadata("x-session-id", "conversation-42");
    pb::SessionInfo got;
    st = stub()->GetSession(&ctx, pb::GetSessionRequest(), &got);
    ASSERT_TRUE(st.ok()) << Describe(st);
    EXPECT_EQ(got.session_id(), "conversation-42");
  }
  // Metadata and body that disagree: refused, and the session is untouched.
  {
    grpc::ClientContext ctx;
    Prepare(&ctx, "");
    ctx.AddMetadata("x-session-id", "from-metadata");
    pb::SessionGenerateRequest turn;
    turn.set_session_id("conversation-42");
    turn.set_prompt(kTurns[0]);
    auto reader = stub()->SessionGenerate(&ctx, turn);
    const StreamResult r = ReadStream(reader.get());
    EXPECT_EQ(r.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << Describe(r.status);
    EXPECT_NE(r.status.error_message().find("x-session-id"), std::string::npos);
  }
  {
    grpc::ClientContext ctx;
    Prepare(&ctx, "");
    ctx.AddMetadata("x-session-id", "from-metadata");
    pb::DeleteSessionRequest del;
    del.set_session_id("conversation-42");
    pb::DeleteSessionResponse none;
    st = stub()->DeleteSession(&ctx, del, &none);
    EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << Describe(st);
  }
  pb::SessionInfo still;
  ASSERT_TRUE(GetSession(stub(), "conversation-42", &still).ok());
  EXPECT_EQ(still.turns(), 0);
  // A deleted id can be given again.
  pb::DeleteSessionRequest del;
  del.set_session_id("conversation-42");
  {
    grpc::ClientContext ctx;
    Prepare(&ctx, "");
    pb::DeleteSessionResponse none;
    ASSERT_TRUE(stub()->DeleteSession(&ctx, del, &none).ok());
  }
  named.set_session_id("conversation-42");
  st = CreateSession(stub(), named, &info);
  EXPECT_TRUE(st.ok()) << Describe(st);
}

TEST_F(SessionServerTest, DeletedAndUnknownSessionsAreNotFound) {
  ASSERT_TRUE(Start());
  ExpectGone(stub(), "0123456789abcdef0123456789abcdef", "unknown");

  pb::SessionInfo info;
  const grpc::Status made = CreateSession(stub(), SessionRequest(4), &info);
  ASSERT_TRUE(made.ok()) << Describe(made);
  const StreamResult first = Turn(stub(), info.session_id(), kTurns[0]);
  ASSERT_TRUE(first.status.ok()) << Describe(first.status);
  const grpc::Status deleted = DeleteSession(stub(), info.session_id());
  ASSERT_TRUE(deleted.ok()) << Describe(deleted);
  ExpectGone(stub(), info.session_id(), "deleted");

  // The server goes on serving sessions.
  pb::SessionInfo other;
  const grpc::Status again = CreateSession(stub(), SessionRequest(4), &other);
  ASSERT_TRUE(again.ok()) << Describe(again);
  EXPECT_NE(other.session_id(), info.session_id());
  const StreamResult r = Turn(stub(), other.session_id(), kTurns[0]);
  ASSERT_TRUE(r.status.ok()) << Describe(r.status);
  EXPECT_EQ(r.token_ids, first.token_ids) << "the same first turn on the same media";
}

// Two replicas sharing a session store: a session whose server stops (SIGTERM) continues on the
// other, token for token as if it had stayed; one whose server is killed is gone, and says so.
TEST_F(SessionServerTest, ASessionMovesToAnotherReplicaWhenItsServerStops) {
  const std::string store = *dir_ + "/sessions";
  const std::vector<std::string> flags = {"--session-store", store};
  ServerProcess a, b;
  ASSERT_TRUE(a.Start(*dir_ + "/model", flags));
  ASSERT_TRUE(b.Start(*dir_ + "/model", flags));
  // The reference conversation stays on b; the other starts on a.
  pb::SessionInfo stays, moves;
  ASSERT_TRUE(CreateSession(b.stub(), SessionRequest(6), &stays).ok());
  ASSERT_TRUE(CreateSession(a.stub(), SessionRequest(6), &moves).ok());
  const StreamResult ref1 = Turn(b.stub(), stays.session_id(), kTurns[0]);
  const StreamResult moved1 = Turn(a.stub(), moves.session_id(), kTurns[0]);
  ASSERT_TRUE(ref1.status.ok() && moved1.status.ok()) << Describe(moved1.status);
  EXPECT_EQ(moved1.token_ids, ref1.token_ids);
  a.Stop();  // the drain saves its session to the store
  for (int turn = 1; turn < 3; ++turn) {
    const StreamResult ref = Turn(b.stub(), stays.session_id(), kTurns[turn]);
    const StreamResult moved = Turn(b.stub(), moves.session_id(), kTurns[turn]);
    ASSERT_TRUE(ref.status.ok()) << Describe(ref.status);
    ASSERT_TRUE(moved.status.ok()) << Describe(moved.status);
    EXPECT_EQ(moved.token_ids, ref.token_ids) << "turn " << turn;
    EXPECT_EQ(moved.usage.kv_bytes_kept(), ref.usage.kv_bytes_kept());
  }
  pb::SessionInfo info;
  ASSERT_TRUE(GetSession(b.stub(), moves.session_id(), &info).ok());
  EXPECT_EQ(info.turns(), 3);
  EXPECT_EQ(info.kv_policy(), "vlcache");
  const std::string metrics = b.Metrics();
  EXPECT_EQ(SumSamples(metrics, "vlcache_session_moves_total", {"result=\"restored\""}), 1);

  // A replica that dies without its drain takes its sessions with it; the next one says so.
  b.Signal(SIGKILL);
  b.WaitExit(std::chrono::seconds(30));
  ServerProcess c;
  ASSERT_TRUE(c.Start(*dir_ + "/model", flags));
  ExpectGone(c.stub(), stays.session_id(), "session store has no snapshot");
  c.Stop();
  RemoveTree(store);
}

TEST_F(SessionServerTest, SessionsBelongToTheTokenThatCreatedThem) {
  const std::string tokens = *dir_ + "/tokens";
  WriteFile(tokens, "alpha\nbeta\n");
  ASSERT_TRUE(Start({"--auth-token-file", tokens}));

  pb::SessionInfo info;
  for (const char* token : {"", "gamma"}) {
    const grpc::Status s = CreateSession(stub(), SessionRequest(5), &info, token);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAUTHENTICATED)
        << "token '" << token << "': " << Describe(s);
  }

  const grpc::Status made = CreateSession(stub(), SessionRequest(5), &info, "alpha");
  ASSERT_TRUE(made.ok()) << Describe(made);
  const std::string& id = info.session_id();

  // Another valid token may not see, use or delete it; a call without a token is turned away
  // before the session is looked up.
  const StreamResult stolen = Turn(stub(), id, kTurns[0], "beta");
  EXPECT_EQ(stolen.status.error_code(), grpc::StatusCode::PERMISSION_DENIED)
      << Describe(stolen.status);
  EXPECT_TRUE(stolen.token_ids.empty());
  pb::SessionInfo seen;
  const grpc::Status peek = GetSession(stub(), id, &seen, "beta");
  EXPECT_EQ(peek.error_code(), grpc::StatusCode::PERMISSION_DENIED) << Describe(peek);
  const grpc::Status drop = DeleteSession(stub(), id, "beta");
  EXPECT_EQ(drop.error_code(), grpc::StatusCode::PERMISSION_DENIED) << Describe(drop);
  const StreamResult anonymous = Turn(stub(), id, kTurns[0], "");
  EXPECT_EQ(anonymous.status.error_code(), grpc::StatusCode::UNAUTHENTICATED)
      << Describe(anonymous.status);

  // The refused calls changed nothing: the owner's session is intact.
  const StreamResult mine = Turn(stub(), id, kTurns[0], "alpha");
  ASSERT_TRUE(mine.status.ok()) << Describe(mine.status);
  const grpc::Status got = GetSession(stub(), id, &seen, "alpha");
  ASSERT_TRUE(got.ok()) << Describe(got);
  EXPECT_EQ(seen.turns(), 1);
  const grpc::Status deleted = DeleteSession(stub(), id, "alpha");
  EXPECT_TRUE(deleted.ok()) << Describe(deleted);
}

TEST_F(SessionServerTest, IdleSessionsExpireAfterTheTtl) {
  ASSERT_TRUE(Start({"--session-ttl-seconds", "1"}));
  pb::SessionInfo info;
  const grpc::Status made = CreateSession(stub(), SessionRequest(6), &info);
  ASSERT_TRUE(made.ok()) << Describe(made);
  const StreamResult first = Turn(stub(), info.session_id(), kTurns[0]);
  ASSERT_TRUE(first.status.ok()) << "used at once, it has not expired: " << Describe(first.status);

  std::this_thread::sleep_for(std::chrono::milliseconds(2500));
  ExpectGone(stub(), info.session_id(), "expired");

  const std::string metrics = server_.Metrics();
  ASSERT_FALSE(metrics.empty());
  EXPECT_NE(metrics.find("vlcache_session_evictions_total{reason=\""), std::string::npos)
      << metrics;
  EXPECT_EQ(SumSamples(metrics, "vlcache_session_evictions_total"), 1) << metrics;
  EXPECT_EQ(SumSamples(metrics, "vlcache_sessions_active"), 0) << metrics;
}

TEST_F(SessionServerTest, MaxSessionsEvictsTheLeastRecentlyUsed) {
  ASSERT_TRUE(Start({"--max-sessions", "2"}));
  pb::SessionInfo a, b, c;
  ASSERT_TRUE(CreateSession(stub(), SessionRequest(7), &a).ok());
  ASSERT_TRUE(CreateSession(stub(), SessionRequest(8), &b).ok());
  // A turn on the older session makes the newer one the least recently used.
  const StreamResult used = Turn(stub(), a.session_id(), kTurns[0]);
  ASSERT_TRUE(used.status.ok()) << Describe(used.status);
  const grpc::Status third = CreateSession(stub(), SessionRequest(9), &c);
  ASSERT_TRUE(third.ok()) << "a full table evicts, it does not refuse: " << Describe(third);

  ExpectGone(stub(), b.session_id(), "evicted");
  for (const pb::SessionInfo* kept : {&a, &c}) {
    const StreamResult r = Turn(stub(), kept->session_id(), kTurns[1]);
    EXPECT_TRUE(r.status.ok()) << kept->session_id() << ": " << Describe(r.status);
  }

  const std::string metrics = server_.Metrics();
  ASSERT_FALSE(metrics.empty());
  EXPECT_NE(metrics.find("vlcache_session_evictions_total{reason=\""), std::string::npos)
      << metrics;
  EXPECT_EQ(SumSamples(metrics, "vlcache_session_evictions_total"), 1) << metrics;
  EXPECT_EQ(SumSamples(metrics, "vlcache_sessions_active"), 2) << metrics;
}

}  // namespace
}  // namespace vlc::server
