// The project's C++ client library (clients/cpp) against the real server process on loopback:
// its blocking and callback forms give what the raw stub gives, many calls run at once from one
// thread, and cancellation, deadlines and the bearer token behave as a user of the service
// expects.
#include "clients/cpp/vlcache_client.h"

#include <atomic>
#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include "tests/server/server_fixture.h"

namespace vlc::server {
namespace {

using client::Answer;
using client::CallOptions;
using client::Client;
using client::ConnectOptions;

pb::GenerateRequest ImageRequest(int seed, int max_new) {
  pb::GenerateRequest r;
  r.mutable_media()->add_images(Png(40, 30, seed));
  r.set_prompt("what color is the triangle?");
  r.mutable_sampling()->set_max_new_tokens(max_new);
  r.mutable_sampling()->set_temperature(0);
  return r;
}

class CppClientTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { MakeSuiteModelDir("vlcache-cpp-client-", &dir_); }
  static void TearDownTestSuite() { RemoveSuiteDir(&dir_); }

  ::testing::AssertionResult Start(std::vector<std::string> args = {}) {
    return server_.Start(*dir_ + "/model", args);
  }
  std::unique_ptr<Client> Connect(const std::string& token = "") {
    ConnectOptions o;
    o.target = server_.target();
    o.token = token;
    auto c = Client::Connect(o);
    EXPECT_TRUE(c.ok()) << c.status();
    return c.ok() ? std::move(c).value() : nullptr;
  }

  static std::string* dir_;
  ServerProcess server_;
};
std::string* CppClientTest::dir_ = nullptr;

CallOptions Deadline(std::chrono::milliseconds ms) {
  CallOptions o;
  o.deadline = ms;
  return o;
}

TEST_F(CppClientTest, BlockingGenerateGivesWhatTheStubGives) {
  ASSERT_TRUE(Start());
  auto c = Connect();
  const pb::GenerateRequest req = ImageRequest(1, 8);
  Answer answer;
  std::vector<int> ids;
  const grpc::Status st =
      c->Generate(req, Deadline(std::chrono::minutes(2)), [&](const pb::GenerateResponse& r) {
        answer.Add(r);
        ids.insert(ids.end(), r.token_ids().begin(), r.token_ids().end());
      });
  ASSERT_TRUE(st.ok()) << st.error_message();
  grpc::ClientContext ctx;
  auto reader = server_.stub()->Generate(&ctx, req);
  const StreamResult raw = ReadStream(reader.get());
  ASSERT_TRUE(raw.status.ok()) << raw.status.error_message();
  EXPECT_EQ(answer.text, raw.text);
  EXPECT_EQ(ids, raw.token_ids);
  ASSERT_TRUE(answer.has_usage);
  EXPECT_EQ(answer.usage.generated_tokens(), 8);
  EXPECT_EQ(answer.usage.visual_tokens(), kVisualTokensPerImage);
}

TEST_F(CppClientTest, ManyStreamsFromOneThreadEachGiveTheirOwnAnswer) {
  ASSERT_TRUE(Start());
  auto c = Connect();
  constexpr int kCalls = 6;
  std::vector<Answer> alone(kCalls), together(kCalls);
  for (int i = 0; i < kCalls; ++i) {
    ASSERT_TRUE(c->Generate(ImageRequest(i, 6), {}, [&, i](const pb::GenerateResponse& r) {
                   alone[i].Add(r);
                 }).ok());
  }
  std::vector<std::shared_ptr<client::StreamCall>> calls;
  std::atomic<int> done{0};
  for (int i = 0; i < kCalls; ++i) {
    calls.push_back(c->StartGenerate(
        ImageRequest(i, 6), Deadline(std::chrono::minutes(2)),
        [&, i](const pb::GenerateResponse& r) { together[i].Add(r); },
        [&](const grpc::Status&) { ++done; }));
  }
  for (int i = 0; i < kCalls; ++i) {
    const grpc::Status st = calls[i]->Wait();
    ASSERT_TRUE(st.ok()) << "call " << i << ": " << st.error_message();
    EXPECT_EQ(together[i].text, alone[i].text) << "call " << i;
    EXPECT_EQ(together[i].usage.generated_tokens(), 6);
  }
  EXPECT_EQ(done.load(), kCalls);
}

TEST_F(CppClientTest, CancelAndDeadlineEndCallsAndTheNextOneIsServed) {
  ASSERT_TRUE(Start());
  auto c = Connect();
  std::atomic<int> messages{0};
  auto call = c->StartGenerate(ImageRequest(1, 4000), {},
                               [&](const pb::GenerateResponse&) { ++messages; });
  for (int i = 0; i < 6000 && messages.load() == 0 && !call->done(); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));  // bounded: a minute at most
  }
  ASSERT_GT(messages.load(), 0) << "no token arrived";
  call->Cancel();
  EXPECT_EQ(call->Wait().error_code(), grpc::StatusCode::CANCELLED);

  const grpc::Status late =
      c->Generate(ImageRequest(2, 4000), Deadline(std::chrono::milliseconds(300)),
                  [](const pb::GenerateResponse&) {});
  EXPECT_EQ(late.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED) << late.error_message();

  Answer answer;
  EXPECT_TRUE(c->Generate(ImageRequest(3, 3), {}, [&](const pb::GenerateResponse& r) {
                 answer.Add(r);
               }).ok());
  EXPECT_EQ(answer.usage.generated_tokens(), 3);
}

TEST_F(CppClientTest, SessionsThroughTheCallbackFormsAndTheBearerToken) {
  const std::string token_file = *dir_ + "/tokens";
  WriteFile(token_file, "secret-1\n");
  ASSERT_TRUE(Start({"--auth-token-file", token_file}));
  pb::ModelInfo info;
  EXPECT_EQ(Connect()->GetModelInfo({}, &info).error_code(), grpc::StatusCode::UNAUTHENTICATED);
  auto c = Connect("secret-1");
  ASSERT_TRUE(c->GetModelInfo({}, &info).ok());
  EXPECT_EQ(info.visual_tokens_per_image(), kVisualTokensPerImage);

  pb::CreateSessionRequest create;
  create.mutable_media()->add_images(Png(40, 30, 4));
  std::mutex mu;
  std::condition_variable cv;
  bool created = false;
  grpc::Status create_status;
  pb::SessionInfo session;
  c->StartCreateSession(create, {}, [&](grpc::Status s, pb::SessionInfo reply) {
    std::lock_guard<std::mutex> lock(mu);
    create_status = std::move(s);
    session = std::move(reply);
    created = true;
    cv.notify_all();
  });
  {
    std::unique_lock<std::mutex> lock(mu);
    ASSERT_TRUE(cv.wait_for(lock, std::chrono::minutes(1), [&] { return created; }));
  }
  ASSERT_TRUE(create_status.ok()) << create_status.error_message();
  pb::SessionGenerateRequest turn;
  turn.set_session_id(session.session_id());
  turn.set_prompt("and its shape?");
  turn.mutable_sampling()->set_max_new_tokens(4);
  Answer answer;
  ASSERT_TRUE(c->StartSessionGenerate(turn, {}, [&](const pb::GenerateResponse& r) {
                 answer.Add(r);
               })->Wait().ok());
  EXPECT_LE(answer.usage.generated_tokens(), 4);
  pb::SessionInfo after;
  pb::GetSessionRequest get;
  get.set_session_id(session.session_id());
  ASSERT_TRUE(c->GetSession(get, {}, &after).ok());
  EXPECT_EQ(after.turns(), 1);
  pb::DeleteSessionRequest del;
  del.set_session_id(session.session_id());
  ASSERT_TRUE(c->DeleteSession(del, {}).ok());
  EXPECT_EQ(c->GetSession(get, {}, &after).error_code(), grpc::StatusCode::NOT_FOUND);
}

}  // namespace
}  // namespace vlc::server

namespace vlc::server {
namespace {

// The example program of docs/API.md, as a backend developer would run it, against the demo
// model: it streams the README's answer, holds a two-turn session and deletes it.
TEST(CppClientExample, RunsAgainstTheDemoModel) {
  const std::string demo = std::string(VLC_SOURCE_DIR) + "/models/demo";
  ServerProcess server;
  ASSERT_TRUE(server.Start(demo));
  const std::string command = std::string(VLC_BIN_DIR) + "/vlcache-backend-example " +
                              server.target() + " " + demo + "/example.png 2>&1";
  FILE* p = ::popen(command.c_str(), "r");
  ASSERT_NE(p, nullptr);
  std::string out;
  char buf[256];
  while (size_t n = std::fread(buf, 1, sizeof buf, p)) out.append(buf, n);
  const int status = ::pclose(p);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << out;
  EXPECT_EQ(out.rfind("red\n(", 0), 0u) << out;
  EXPECT_NE(out.find("what is at row 1 column 4? "), std::string::npos) << out;
  EXPECT_NE(out.find("what color is the triangle? "), std::string::npos) << out;
  const std::string metrics = server.Metrics();
  EXPECT_EQ(SumSamples(metrics, "vlcache_requests_total",
                       {"method=\"DeleteSession\"", "code=\"OK\""}),
            1);
}

}  // namespace
}  // namespace vlc::server
