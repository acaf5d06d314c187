// The real server process end to end: a tiny random checkpoint is written, vlcache-server is
// started on free ports, and the C++ stub, the CLI and the Python client talk to it as users
// would. One server per test process (ctest runs each case as its own process).
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/wait.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <future>
#include <memory>
#include <nlohmann/json.hpp>
#include <numeric>
#include <opencv2/core.hpp>
#include <opencv2/videoio.hpp>
#include <string>
#include <thread>
#include <vector>

#include "common/fs.h"
#include "tests/server/server_fixture.h"
#include "vlcache/v1/inference.grpc.pb.h"

namespace vlc::server {
namespace {

using nlohmann::json;

constexpr char kPrompt[] = "what color is the triangle?";

std::string ShellQuote(const std::string& s) {
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

// Runs a shell command; returns its stdout and sets `*exit_code` (-1 when it did not exit).
std::string RunCommand(const std::string& command, int* exit_code) {
  std::string out;
  FILE* p = ::popen(command.c_str(), "r");
  if (p == nullptr) {
    *exit_code = -1;
    return out;
  }
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof(buf), p)) > 0) out.append(buf, n);
  const int status = ::pclose(p);
  *exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return out;
}

pb::GenerateRequest ImageRequest(int seed, int max_new_tokens) {
  pb::GenerateRequest r;
  r.mutable_media()->add_images(Png(40, 30, seed));
  r.set_prompt(kPrompt);
  r.mutable_sampling()->set_max_new_tokens(max_new_tokens);
  r.mutable_sampling()->set_temperature(0);  // greedy: results are reproducible
  return r;
}

class ServerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    ClearVlcEnvironment();
    dir_ = new std::string(MakeTempDir("vlcache-server-it-"));
    ASSERT_FALSE(dir_->empty());
    const absl::Status made = MakeTinyModel(*dir_ + "/model");
    ASSERT_TRUE(made.ok()) << made;
    server_ = new ServerProcess();
    ASSERT_TRUE(server_->Start(*dir_ + "/model"));
    channel_ = &server_->channel();
    stub_ = server_->stub();
    target_ = &server_->target();
  }

  static void TearDownTestSuite() {
    stub_ = nullptr;
    channel_ = nullptr;
    target_ = nullptr;
    delete server_;  // stops it: SIGTERM, and a clean exit is required
    server_ = nullptr;
    if (dir_ != nullptr && !dir_->empty()) RemoveTree(*dir_);
    delete dir_;
  }

  void SetUp() override { ASSERT_NE(stub_, nullptr) << "the server did not start"; }

  static StreamResult Generate(const pb::GenerateRequest& request,
                               std::chrono::milliseconds deadline = std::chrono::minutes(5)) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + deadline);
    auto reader = stub_->Generate(&ctx, request);
    return ReadStream(reader.get());
  }

  static pb::ModelInfo ModelInfo() {
    grpc::ClientContext ctx;
    pb::ModelInfo info;
    const grpc::Status s = stub_->GetModelInfo(&ctx, pb::GetModelInfoRequest(), &info);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return info;
  }

  static std::string* dir_;
  static ServerProcess* server_;
  // Views into server_, named as the tests use them.
  static const std::string* target_;
  static const std::shared_ptr<grpc::Channel>* channel_;
  static pb::Inference::Stub* stub_;
};
std::string* ServerTest::dir_ = nullptr;
ServerProcess* ServerTest::server_ = nullptr;
const std::string* ServerTest::target_ = nullptr;
const std::shared_ptr<grpc::Channel>* ServerTest::channel_ = nullptr;
pb::Inference::Stub* ServerTest::stub_ = nullptr;

TEST_F(ServerTest, ReportsServingHealthAndDescribesTheModel) {
  // grpc.health.v1.Health/Check through the generic stub: the request (service "") serializes to
  // no bytes, and HealthCheckResponse{status: SERVING} to field 1 = 1, i.e. 0x08 0x01.
  grpc::GenericStub generic(*channel_);
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  grpc::Slice empty("");
  grpc::ByteBuffer request(&empty, 1), response;
  std::promise<grpc::Status> done;
  generic.UnaryCall(&ctx, "/grpc.health.v1.Health/Check", grpc::StubOptions(), &request, &response,
                    [&done](grpc::Status s) { done.set_value(s); });
  const grpc::Status health = done.get_future().get();
  ASSERT_TRUE(health.ok()) << health.error_code() << ": " << health.error_message();
  grpc::Slice reply;
  ASSERT_TRUE(response.DumpToSingleSlice(&reply).ok());
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(reply.begin()), reply.size()),
            std::string("\x08\x01", 2));

  const pb::ModelInfo info = ModelInfo();
  EXPECT_EQ(info.text_model_type(), "llama");
  EXPECT_EQ(info.num_layers(), 2);
  EXPECT_EQ(info.num_attention_heads(), 4);
  EXPECT_EQ(info.num_key_value_heads(), 2);
  EXPECT_EQ(info.image_size(), 32);
  EXPECT_EQ(info.visual_tokens_per_image(), kVisualTokensPerImage);
  EXPECT_GT(info.vocab_size(), 0);
  EXPECT_GT(info.max_new_tokens(), 0);
  EXPECT_GT(info.max_prompt_tokens(), 0);
  EXPECT_GT(info.kv_cache_bytes(), 0);
  EXPECT_GT(info.kv_page_tokens(), 0);
  EXPECT_NE(std::find(info.kv_policies().begin(), info.kv_policies().end(), "vlcache"),
            info.kv_policies().end());
  EXPECT_NE(
      std::find(info.kv_policies().begin(), info.kv_policies().end(), info.default_kv_policy()),
      info.kv_policies().end());
}

TEST_F(ServerTest, StreamsImageAnswerWithUsage) {
  const int max_new = 12;
  const StreamResult r = Generate(ImageRequest(1, max_new));
  ASSERT_TRUE(r.status.ok()) << r.status.error_message();
  EXPECT_FALSE(r.text.empty());
  EXPECT_GT(r.messages, 1) << "the answer arrived in one message, not streamed";
  EXPECT_EQ(r.usage_messages, 1) << "usage belongs to the final message only";
  const pb::Usage& u = r.usage;
  EXPECT_EQ(u.visual_tokens(), kVisualTokensPerImage);
  EXPECT_GT(u.prompt_tokens(), u.visual_tokens());
  EXPECT_GE(u.generated_tokens(), 1);
  EXPECT_LE(u.generated_tokens(), max_new);
  if (u.finish_reason() == "length") {
    EXPECT_EQ(u.generated_tokens(), max_new);
  }
  EXPECT_TRUE(u.finish_reason() == "length" || u.finish_reason() == "eos") << u.finish_reason();
  EXPECT_EQ(static_cast<int>(r.token_ids.size()), u.generated_tokens());
  EXPECT_GT(u.ttft_seconds(), 0);
  EXPECT_GE(u.total_seconds(), u.ttft_seconds());
  EXPECT_GE(u.decode_seconds_per_token(), 0);
  EXPECT_GE(u.queue_seconds(), 0);
  EXPECT_GT(u.kv_bytes_kept(), 0);
  EXPECT_GT(u.kv_bytes_full(), 0);
  EXPECT_FALSE(u.kv_policy().empty());

  // The deltas are the answer: the same greedy request streams the same text again.
  const StreamResult again = Generate(ImageRequest(1, max_new));
  ASSERT_TRUE(again.status.ok()) << again.status.error_message();
  EXPECT_EQ(again.text, r.text);
  EXPECT_EQ(again.token_ids, r.token_ids);
}

TEST_F(ServerTest, VideoCountsVisualTokensPerFrame) {
  const std::string path = *dir_ + "/clip.avi";
  {
    cv::VideoWriter vw(path, cv::VideoWriter::fourcc('M', 'J', 'P', 'G'), 10, cv::Size(48, 40));
    ASSERT_TRUE(vw.isOpened());
    for (int i = 0; i < 12; ++i) vw.write(cv::Mat(40, 48, CV_8UC3, cv::Scalar(20 * i, 50, 90)));
  }
  for (int frames : {2, 4}) {
    pb::GenerateRequest req;
    req.mutable_media()->set_video(Slurp(path));
    req.mutable_media()->set_video_frames(frames);
    req.set_prompt("what happens in the video?");
    req.mutable_sampling()->set_max_new_tokens(4);
    req.mutable_sampling()->set_temperature(0);
    const StreamResult r = Generate(req);
    ASSERT_TRUE(r.status.ok()) << r.status.error_message();
    EXPECT_EQ(r.usage.visual_tokens(), frames * kVisualTokensPerImage) << frames << " frames";
    EXPECT_GT(r.usage.prompt_tokens(), r.usage.visual_tokens());
    EXPECT_GE(r.usage.generated_tokens(), 1);
  }
}

TEST_F(ServerTest, VlCachePolicyBudgetsSumToAlphaTimesLayers) {
  const int layers = ModelInfo().num_layers();
  ASSERT_GT(layers, 0);
  pb::GenerateRequest req = ImageRequest(2, 8);
  // Above the server's default --kv-compress-min-tokens (32): a longer question.
  req.set_prompt("in the picture above, look at every cell in turn and then say what color the "
                 "triangle is?");
  req.mutable_cache()->set_policy("vlcache");
  req.mutable_cache()->set_budget(0.1);
  const StreamResult r = Generate(req);
  ASSERT_TRUE(r.status.ok()) << r.status.error_message();
  const pb::Usage& u = r.usage;
  EXPECT_EQ(u.kv_policy(), "vlcache");
  ASSERT_EQ(u.layer_budgets_size(), layers);
  const int64_t per_layer = std::max<int64_t>(1, std::llround(0.1 * u.prompt_tokens()));
  EXPECT_EQ(std::accumulate(u.layer_budgets().begin(), u.layer_budgets().end(), int64_t{0}),
            per_layer * layers);
  // A tenth of the prompt, even in whole pages, is less than the uncompressed cache.
  EXPECT_LT(u.kv_bytes_kept(), u.kv_bytes_full());

  // The full policy keeps every prompt token in every layer.
  req.mutable_cache()->set_policy("full");
  const StreamResult full = Generate(req);
  ASSERT_TRUE(full.status.ok()) << full.status.error_message();
  EXPECT_EQ(full.usage.kv_policy(), "full");
  ASSERT_EQ(full.usage.layer_budgets_size(), layers);
  for (int64_t k : full.usage.layer_budgets()) EXPECT_EQ(k, full.usage.prompt_tokens());
}

// Without a policy of its own a request gets the server's default: vlcache-guard at 10%, for
// prompts of 32 tokens and more; a shorter prompt keeps every token.
TEST_F(ServerTest, TheDefaultPolicyCompressesPromptsOfThirtyTwoTokensAndMore) {
  const int layers = ModelInfo().num_layers();
  pb::GenerateRequest req = ImageRequest(3, 4);
  req.set_prompt("in the picture above, look at every cell in turn and then say what color the "
                 "triangle is?");
  const StreamResult r = Generate(req);
  ASSERT_TRUE(r.status.ok()) << r.status.error_message();
  EXPECT_EQ(r.usage.kv_policy(), "vlcache-guard");
  ASSERT_GE(r.usage.prompt_tokens(), 32);
  ASSERT_EQ(r.usage.layer_budgets_size(), layers);
  for (int64_t k : r.usage.layer_budgets()) {
    // At least the floor of 16, well under the prompt.
    EXPECT_GE(k, 16);
    EXPECT_LT(k, r.usage.prompt_tokens());
  }
  EXPECT_LT(r.usage.kv_bytes_kept(), r.usage.kv_bytes_full());

  req.set_prompt("red?");
  const StreamResult small = Generate(req);
  ASSERT_TRUE(small.status.ok()) << small.status.error_message();
  ASSERT_LT(small.usage.prompt_tokens(), 32);
  for (int64_t k : small.usage.layer_budgets()) EXPECT_EQ(k, small.usage.prompt_tokens());
}

TEST_F(ServerTest, BadInputsAreInvalidArgumentAndServerKeepsServing) {
  const pb::ModelInfo info = ModelInfo();
  ASSERT_GT(info.max_new_tokens(), 0);
  struct Case {
    const char* name;
    pb::GenerateRequest request;
  };
  std::vector<Case> cases;
  {
    pb::GenerateRequest r = ImageRequest(3, 4);
    r.mutable_media()->set_images(0, "this is not an image");
    cases.push_back({"garbage image bytes", r});
  }
  {
    pb::GenerateRequest r = ImageRequest(3, 4);
    r.mutable_media()->set_video("\x1a\x45\xdf\xa3 some video");
    cases.push_back({"images and a video", r});
  }
  {
    pb::GenerateRequest r = ImageRequest(3, 4);
    r.mutable_cache()->set_policy("vlcache");
    r.mutable_cache()->set_budget(1.5);
    cases.push_back({"budget 1.5", r});
  }
  {
    pb::GenerateRequest r = ImageRequest(3, 4);
    r.mutable_cache()->set_policy("no-such-policy");
    cases.push_back({"unknown policy", r});
  }
  {
    pb::GenerateRequest r = ImageRequest(3, 4);
    r.set_prompt("");
    cases.push_back({"empty prompt", r});
  }
  {
    pb::GenerateRequest r = ImageRequest(3, 4);
    r.mutable_sampling()->set_max_new_tokens(info.max_new_tokens() + 1);
    cases.push_back({"max_new_tokens over the server's limit", r});
  }
  for (const Case& c : cases) {
    const StreamResult r = Generate(c.request);
    EXPECT_EQ(r.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT)
        << c.name << ": " << r.status.error_code() << " " << r.status.error_message();
    EXPECT_FALSE(r.status.error_message().empty()) << c.name;
    EXPECT_TRUE(r.text.empty()) << c.name << ": text before the error";
  }
  const StreamResult good = Generate(ImageRequest(3, 4));
  ASSERT_TRUE(good.status.ok()) << good.status.error_message();
  EXPECT_FALSE(good.text.empty());
}

TEST_F(ServerTest, ConcurrentStreamsMatchRequestsRunAlone) {
  // Different images and lengths, so that sequences join and leave the batch at different steps.
  constexpr int kStreams = 8;
  std::vector<pb::GenerateRequest> requests;
  for (int i = 0; i < kStreams; ++i) requests.push_back(ImageRequest(10 + i, 24 + 4 * i));
  std::vector<StreamResult> alone;
  for (const auto& req : requests) {
    alone.push_back(Generate(req));
    ASSERT_TRUE(alone.back().status.ok()) << alone.back().status.error_message();
  }
  std::vector<StreamResult> together(kStreams);
  std::vector<std::thread> threads;
  for (int i = 0; i < kStreams; ++i) {
    threads.emplace_back([&, i] { together[i] = Generate(requests[i]); });
  }
  for (auto& t : threads) t.join();
  for (int i = 0; i < kStreams; ++i) {
    ASSERT_TRUE(together[i].status.ok()) << i << ": " << together[i].status.error_message();
    EXPECT_FALSE(together[i].text.empty()) << i;
    EXPECT_EQ(together[i].text, alone[i].text) << "stream " << i << " changed when batched";
    EXPECT_EQ(together[i].token_ids, alone[i].token_ids) << i;
    EXPECT_EQ(together[i].usage.generated_tokens(), alone[i].usage.generated_tokens()) << i;
    EXPECT_EQ(together[i].usage.prompt_tokens(), alone[i].usage.prompt_tokens()) << i;
  }
}

TEST_F(ServerTest, DeadlineEndsStreamAndServerKeepsServing) {
  // This image's greedy answer meets no EOS within 4000 tokens. The deadline is sized from the
  // time of 200 tokens on this machine (the stream asks for 20 times as many, a margin that
  // survives load changing between the two requests), so that it lands inside the stream: after the
  // first token, long before the last (later tokens attend to more and come no faster).
  const int max_new = std::min(4000, ModelInfo().max_new_tokens());
  ASSERT_GT(max_new, 1000);
  const auto warm_start = std::chrono::steady_clock::now();
  const StreamResult warm = Generate(ImageRequest(5, 200));
  const auto warm_time = std::chrono::steady_clock::now() - warm_start;
  ASSERT_TRUE(warm.status.ok()) << warm.status.error_message();
  ASSERT_EQ(warm.usage.generated_tokens(), 200) << warm.usage.finish_reason();
  const auto deadline =
      std::max(std::chrono::milliseconds(50),
               std::chrono::duration_cast<std::chrono::milliseconds>(warm_time));

  const auto start = std::chrono::steady_clock::now();
  const StreamResult r = Generate(ImageRequest(5, max_new), deadline);
  const auto elapsed = std::chrono::steady_clock::now() - start;
  EXPECT_EQ(r.status.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED)
      << r.status.error_message() << " after " << r.token_ids.size() << " tokens, finish_reason "
      << r.usage.finish_reason() << ", deadline " << deadline.count() << " ms";
  EXPECT_GT(r.token_ids.size(), 0u) << "the deadline expired before the first token";
  EXPECT_LT(static_cast<int>(r.token_ids.size()), max_new);
  EXPECT_LT(elapsed, deadline + std::chrono::seconds(2)) << "the stream outlived its deadline";

  const StreamResult good = Generate(ImageRequest(5, 6));
  ASSERT_TRUE(good.status.ok()) << good.status.error_message();
  EXPECT_EQ(good.token_ids, std::vector<int>(warm.token_ids.begin(), warm.token_ids.begin() + 6));
}

TEST_F(ServerTest, CliPrintsJsonAndReportsErrors) {
  const std::string image = *dir_ + "/cli.png";
  WriteFile(image, Png(40, 30, 6));
  const StreamResult expected = Generate(ImageRequest(6, 10));
  ASSERT_TRUE(expected.status.ok()) << expected.status.error_message();

  const std::string cli = ShellQuote(std::string(VLC_BIN_DIR) + "/vlcache-cli");
  const std::string err = *dir_ + "/cli.err";
  int code = 0;
  const std::string out =
      RunCommand(cli + " generate --target " + ShellQuote(*target_) + " --image " +
                     ShellQuote(image) + " --prompt " + ShellQuote(kPrompt) +
                     " --max-new-tokens 10 --temperature 0 --json 2>" + ShellQuote(err),
                 &code);
  ASSERT_EQ(code, 0) << Slurp(err);
  const json j = json::parse(out, nullptr, /*allow_exceptions=*/false);
  ASSERT_TRUE(j.is_object()) << out;
  EXPECT_EQ(j.value("text", ""), expected.text);
  EXPECT_EQ(j.value("visual_tokens", 0), kVisualTokensPerImage);
  EXPECT_EQ(j.value("prompt_tokens", 0), expected.usage.prompt_tokens());
  EXPECT_EQ(j.value("generated_tokens", 0), expected.usage.generated_tokens());
  EXPECT_EQ(j.value("finish_reason", ""), expected.usage.finish_reason());
  for (const char* key : {"ttft_seconds", "decode_seconds_per_token", "kv_bytes_kept",
                          "kv_bytes_full", "layer_budgets", "kv_policy"}) {
    EXPECT_TRUE(j.contains(key)) << key;
  }

  // Plain output streams the same text, then a newline.
  const std::string plain =
      RunCommand(cli + " generate --target " + ShellQuote(*target_) + " --image " +
                     ShellQuote(image) + " --prompt " + ShellQuote(kPrompt) +
                     " --max-new-tokens 10 --temperature 0 2>" + ShellQuote(err),
                 &code);
  ASSERT_EQ(code, 0) << Slurp(err);
  EXPECT_EQ(plain, expected.text + "\n");

  const std::string garbage = *dir_ + "/garbage.png";
  WriteFile(garbage, "not an image at all");
  RunCommand(cli + " generate --target " + ShellQuote(*target_) + " --image " +
                 ShellQuote(garbage) + " --prompt hi 2>" + ShellQuote(err),
             &code);
  EXPECT_EQ(code, 2);
  EXPECT_NE(Slurp(err).find("error: INVALID_ARGUMENT: "), std::string::npos) << Slurp(err);

  const std::string info = RunCommand(cli + " info --json --target " + ShellQuote(*target_), &code);
  ASSERT_EQ(code, 0);
  const json ji = json::parse(info, nullptr, false);
  ASSERT_TRUE(ji.is_object()) << info;
  EXPECT_EQ(ji.value("visual_tokens_per_image", 0), kVisualTokensPerImage);
}

TEST_F(ServerTest, PythonClientMatchesCppResult) {
  const std::string image = *dir_ + "/py.png";
  WriteFile(image, Png(40, 30, 7));
  const StreamResult expected = Generate(ImageRequest(7, 10));
  ASSERT_TRUE(expected.status.ok()) << expected.status.error_message();

  const std::string script = *dir_ + "/client.py";
  WriteFile(script,
            "import json, sys\n"
            "from vlcache_client import Client\n"
            "target, image, prompt = sys.argv[1:4]\n"
            "with Client(target) as client:\n"
            "    stream = client.generate(prompt, images=[image], max_new_tokens=10,\n"
            "                             temperature=0)\n"
            "    deltas = list(stream)\n"
            "    u = stream.usage\n"
            "    print(json.dumps({'text': ''.join(deltas), 'visual_tokens': u.visual_tokens,\n"
            "                      'generated_tokens': u.generated_tokens,\n"
            "                      'model_layers': client.model_info().num_layers}))\n");
  const std::string err = *dir_ + "/py.err";
  int code = 0;
  const std::string out =
      RunCommand("VLCACHE_PY_STUBS=" + ShellQuote(VLC_PYTHON_DIR) +
                     " PYTHONPATH=" + ShellQuote(std::string(VLC_SOURCE_DIR) + "/clients/python") +
                     " /usr/bin/python3 " + ShellQuote(script) + " " + ShellQuote(*target_) + " " +
                     ShellQuote(image) + " " + ShellQuote(kPrompt) + " 2>" + ShellQuote(err),
                 &code);
  ASSERT_EQ(code, 0) << Slurp(err);
  const json j = json::parse(out, nullptr, false);
  ASSERT_TRUE(j.is_object()) << out;
  EXPECT_EQ(j.value("text", ""), expected.text);
  EXPECT_EQ(j.value("visual_tokens", 0), kVisualTokensPerImage);
  EXPECT_EQ(j.value("generated_tokens", 0), expected.usage.generated_tokens());
  EXPECT_EQ(j.value("model_layers", 0), 2);
}

}  // namespace
}  // namespace vlc::server
