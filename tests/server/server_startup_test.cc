// Start-up, shutdown and transport of the real server process: its ports open before the model is
// loaded, health says NOT_SERVING and the API UNAVAILABLE until the model is ready, then SERVING;
// a model that fails to load ends the process with an error; SIGTERM drains (the calls in flight
// finish, new ones are refused) and the process exits 0; with a certificate it serves over TLS
// only. The load is held back by a named pipe standing in for config.json: the server blocks
// reading it until the test writes the file's contents.
#include <fcntl.h>
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <future>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "clients/cpp/vlcache_client.h"
#include "common/fs.h"
#include "tests/server/server_fixture.h"

namespace vlc::server {
namespace {

// grpc.health.v1.Health/Check for `service` through the generic stub: the request is
// HealthCheckRequest{service}, field 1 as a length-delimited string (no bytes for ""), and the
// reply HealthCheckResponse{status}, field 1 as a varint, so 0x08 then the status (1 SERVING,
// 2 NOT_SERVING). Returns that status, or -1 when the call failed.
int HealthStatus(const std::shared_ptr<grpc::Channel>& channel, const std::string& service = "") {
  grpc::GenericStub generic(channel);
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  const std::string bytes =
      service.empty() ? "" : std::string("\x0a") + static_cast<char>(service.size()) + service;
  grpc::Slice body(bytes);
  grpc::ByteBuffer request(&body, 1), response;
  std::promise<grpc::Status> done;
  generic.UnaryCall(&ctx, "/grpc.health.v1.Health/Check", grpc::StubOptions(), &request,
                    &response, [&done](grpc::Status s) { done.set_value(s); });
  if (!done.get_future().get().ok()) return -1;
  grpc::Slice reply;
  if (!response.DumpToSingleSlice(&reply).ok() || reply.size() != 2 || reply.begin()[0] != 0x08) {
    return -1;
  }
  return reply.begin()[1];
}

class ServerStartupTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ClearVlcEnvironment();
    dir_ = MakeTempDir("vlcache-startup-");
    ASSERT_FALSE(dir_.empty());
    const absl::Status made = MakeTinyModel(dir_ + "/model");
    ASSERT_TRUE(made.ok()) << made;
  }
  void TearDown() override {
    if (!dir_.empty()) RemoveTree(dir_);
  }
  std::string dir_;
};

TEST_F(ServerStartupTest, NotServingWhileTheModelLoadsThenServing) {
  const std::string model = dir_ + "/model";
  const std::string config = Slurp(model + "/config.json");
  ASSERT_FALSE(config.empty());
  ASSERT_EQ(::unlink((model + "/config.json").c_str()), 0);
  ASSERT_EQ(::mkfifo((model + "/config.json").c_str(), 0600), 0);

  ServerProcess server;
  ASSERT_TRUE(server.StartLoading(model));
  // The server now waits on the pipe: loading, not ready.
  EXPECT_EQ(HealthStatus(server.channel()), 2) << "expected NOT_SERVING while loading";
  EXPECT_EQ(HealthStatus(server.channel(), "liveness"), 1) << "alive while loading";
  {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    pb::ModelInfo info;
    const grpc::Status s = server.stub()->GetModelInfo(&ctx, pb::GetModelInfoRequest(), &info);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAVAILABLE);
    EXPECT_NE(s.error_message().find("still loading"), std::string::npos) << s.error_message();
  }

  // Let the load go on: the pipe delivers config.json's contents.
  const int fd = ::open((model + "/config.json").c_str(), O_WRONLY);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::write(fd, config.data(), config.size()), static_cast<ssize_t>(config.size()));
  ::close(fd);
  ASSERT_TRUE(server.WaitListening());
  EXPECT_EQ(HealthStatus(server.channel()), 1) << "expected SERVING once loaded";
  grpc::ClientContext ctx;
  pb::ModelInfo info;
  const grpc::Status s = server.stub()->GetModelInfo(&ctx, pb::GetModelInfoRequest(), &info);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_GT(info.num_layers(), 0);
}

TEST_F(ServerStartupTest, StopsWhileLoadingWithoutWaitingForTheModel) {
  const std::string model = dir_ + "/model";
  ASSERT_EQ(::unlink((model + "/config.json").c_str()), 0);
  ASSERT_EQ(::mkfifo((model + "/config.json").c_str(), 0600), 0);
  ServerProcess server;
  ASSERT_TRUE(server.StartLoading(model));
  EXPECT_EQ(HealthStatus(server.channel()), 2);
  // The load never finishes (nobody writes the pipe); SIGTERM must still end the process
  // cleanly, which Stop checks (exit 0 within the grace period).
  server.Stop();
}

// SIGTERM with one long answer streaming and two more queued behind it (--max-running 1): health
// turns NOT_SERVING at once, a new call is refused UNAVAILABLE saying the server drains, the three
// acknowledged answers all finish with every token, and the process exits 0.
TEST_F(ServerStartupTest, SigtermDrainsTheCallsInFlightAndRefusesNewOnes) {
  ServerProcess server;
  ASSERT_TRUE(server.Start(dir_ + "/model", {"--max-running", "1", "--drain-timeout", "120"}));
  client::ConnectOptions co;
  co.target = server.target();
  auto c = client::Client::Connect(co);
  ASSERT_TRUE(c.ok()) << c.status();
  struct Stream {
    std::mutex mu;
    client::Answer answer;
    int tokens = 0;
  };
  std::vector<std::unique_ptr<Stream>> streams;
  std::vector<std::shared_ptr<client::StreamCall>> calls;
  for (int i = 0; i < 3; ++i) {
    streams.push_back(std::make_unique<Stream>());
    pb::GenerateRequest r;
    // This image and question meet no EOS within thousands of tokens (integration_test.cc).
    r.mutable_media()->add_images(Png(40, 30, 5));
    r.set_prompt("what color is the triangle?");
    r.mutable_sampling()->set_max_new_tokens(1500);
    Stream* s = streams.back().get();
    calls.push_back((*c)->StartGenerate(r, {}, [s](const pb::GenerateResponse& m) {
      std::lock_guard<std::mutex> lock(s->mu);
      s->answer.Add(m);
      s->tokens += m.token_ids_size();
    }));
  }
  auto tokens = [&](int i) {
    std::lock_guard<std::mutex> lock(streams[i]->mu);
    return streams[i]->tokens;
  };
  for (int i = 0; i < 2000 && tokens(0) == 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  ASSERT_GT(tokens(0), 0) << "the first answer never started";
  int before = 0;
  for (int i = 0; i < 3; ++i) before += tokens(i);
  server.Signal(SIGTERM);

  int health = -1;
  for (int i = 0; i < 500 && (health = HealthStatus(server.channel())) != 2; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  EXPECT_EQ(health, 2) << "expected NOT_SERVING while draining";
  EXPECT_EQ(HealthStatus(server.channel(), "liveness"), 1) << "alive while draining";
  pb::GenerateRequest late;
  late.set_prompt("hello");
  const grpc::Status refused = (*c)->Generate(late, {}, nullptr);
  EXPECT_EQ(refused.error_code(), grpc::StatusCode::UNAVAILABLE) << refused.error_message();
  EXPECT_NE(refused.error_message().find("draining"), std::string::npos)
      << refused.error_message();

  int after = 0;
  for (int i = 0; i < 3; ++i) {
    const grpc::Status st = calls[i]->Wait();
    ASSERT_TRUE(st.ok()) << "answer " << i << ": " << st.error_message();
    std::lock_guard<std::mutex> lock(streams[i]->mu);
    ASSERT_TRUE(streams[i]->answer.has_usage) << i;
    EXPECT_EQ(streams[i]->tokens, streams[i]->answer.usage.generated_tokens()) << i;
    EXPECT_GT(streams[i]->tokens, 0) << i;
    after += streams[i]->tokens;
  }
  EXPECT_GT(after, before) << "the answers went on after SIGTERM";
  const int status = server.WaitExit(std::chrono::seconds(60));
  ASSERT_NE(status, -1) << "the server did not exit after draining";
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "wait status " << status;
}

TEST_F(ServerStartupTest, AModelThatFailsToLoadEndsTheProcessWithAnError) {
  WriteFile(dir_ + "/model/config.json", "{\"model_type\": \"llava\", \"text_config\": 7}");
  ServerProcess server;
  ASSERT_TRUE(server.StartLoading(dir_ + "/model"));
  EXPECT_FALSE(server.WaitListening());
  EXPECT_EQ(server.exit_code(), 2);
}

TEST_F(ServerStartupTest, ServesOverTlsWithTheGivenCertificate) {
  // A self-signed certificate for 127.0.0.1, made with Debian's openssl as an operator would.
  const std::string cert = dir_ + "/cert.pem", key = dir_ + "/key.pem";
  const std::string cmd = "openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=vlcache "
                          "-addext subjectAltName=IP:127.0.0.1 -keyout " + key + " -out " + cert +
                          " >/dev/null 2>&1";
  ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
  ServerProcess server;
  ASSERT_TRUE(server.Start(dir_ + "/model", {"--tls-cert", cert, "--tls-key", key}));

  grpc::SslCredentialsOptions ssl;
  ssl.pem_root_certs = Slurp(cert);
  auto secure = grpc::CreateChannel(server.target(), grpc::SslCredentials(ssl));
  auto stub = pb::Inference::NewStub(secure);
  {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(20));
    pb::ModelInfo info;
    const grpc::Status s = stub->GetModelInfo(&ctx, pb::GetModelInfoRequest(), &info);
    ASSERT_TRUE(s.ok()) << s.error_code() << ": " << s.error_message();
    EXPECT_GT(info.num_layers(), 0);
  }
  // A plaintext client gets no service from the TLS port.
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  pb::ModelInfo info;
  const grpc::Status plain = server.stub()->GetModelInfo(&ctx, pb::GetModelInfoRequest(), &info);
  EXPECT_FALSE(plain.ok());
}

TEST_F(ServerStartupTest, ARotatedCertificateIsServedWithoutARestart) {
  const std::string cert = dir_ + "/rot-cert.pem", key = dir_ + "/rot-key.pem";
  auto make = [&](const std::string& name) {
    const std::string cmd = "openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=" +
                            name + " -addext subjectAltName=IP:127.0.0.1 -keyout " + key +
                            ".new -out " + cert + ".new >/dev/null 2>&1 && mv " + key + ".new " +
                            key + " && mv " + cert + ".new " + cert;
    ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
  };
  make("first");
  const std::string first = Slurp(cert);
  ServerProcess server;
  ASSERT_TRUE(server.Start(dir_ + "/model",
                           {"--tls-cert", cert, "--tls-key", key, "--tls-reload-seconds", "1"}));
  // A client that trusts exactly one certificate: whether a new connection succeeds says which
  // one the server presents.
  auto works_with = [&](const std::string& trusted) {
    grpc::SslCredentialsOptions ssl;
    ssl.pem_root_certs = trusted;
    grpc::ChannelArguments args;
    args.SetInt("grpc.use_local_subchannel_pool", 1);  // a fresh connection each time
    auto stub = pb::Inference::NewStub(
        grpc::CreateCustomChannel(server.target(), grpc::SslCredentials(ssl), args));
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
    pb::ModelInfo info;
    return stub->GetModelInfo(&ctx, pb::GetModelInfoRequest(), &info).ok();
  };
  ASSERT_TRUE(works_with(first));
  make("second");
  const std::string second = Slurp(cert);
  ASSERT_NE(first, second);
  // Bounded polling: the watcher reads the files again within a second or two.
  bool rotated = false;
  for (int i = 0; i < 100 && !rotated; ++i) {
    rotated = works_with(second);
    if (!rotated) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_TRUE(rotated) << "the new certificate was not served within 10 s";
  EXPECT_FALSE(works_with(first)) << "new connections still get the old certificate";
}

}  // namespace
}  // namespace vlc::server
