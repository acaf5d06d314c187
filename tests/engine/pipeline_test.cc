// End to end on a tiny random checkpoint written in the Hugging Face layout: media and prompt in,
// text out, through the same Pipeline the CLI uses; and the CLI binaries themselves.
#include "common/fs.h"
#include "engine/pipeline.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/wait.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/videoio.hpp>

#include <nlohmann/json.hpp>

#include "kvcache/cuda_ops.h"
#include "tools/make_tiny.h"

namespace vlc::engine {
namespace {

namespace fs = std::filesystem;

class PipelineTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    char tmpl[] = "/tmp/vlcache-pipeline-XXXXXX";
    dir_ = new std::string(mkdtemp(tmpl));
    tools::TinyOptions opts;
    opts.seed = 3;
    ASSERT_TRUE(tools::MakeTinyCheckpoint(*dir_ + "/model", opts).ok());
    auto p = Pipeline::Load(*dir_ + "/model");
    ASSERT_TRUE(p.ok()) << p.status();
    pipeline_ = p->release();
  }
  static void TearDownTestSuite() {
    delete pipeline_;
    RemoveTree(*dir_);
    delete dir_;
  }

  static std::string Png(int w, int h, int seed) { return tools::RandomPng(w, h, seed); }

  static std::string VideoFile(int frames) {
    const std::string path = *dir_ + "/clip.avi";
    cv::VideoWriter vw(path, cv::VideoWriter::fourcc('M', 'J', 'P', 'G'), 10, cv::Size(48, 40));
    for (int i = 0; i < frames; ++i) vw.write(cv::Mat(40, 48, CV_8UC3, cv::Scalar(10 * i, 50, 90)));
    vw.release();
    return path;
  }

  static std::string Slurp(const std::string& path) {
    std::ifstream f(path, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(f), {});
  }

  static GenerateRequest ImageRequest(int seed, int max_new = 8) {
    GenerateRequest r;
    r.media.images = {Png(40, 30, seed)};
    r.prompt = "what color is the triangle?";
    r.sampling.max_new_tokens = max_new;
    r.sampling.ignore_eos = true;
    return r;
  }

  static std::string* dir_;
  static Pipeline* pipeline_;
};
std::string* PipelineTest::dir_ = nullptr;
Pipeline* PipelineTest::pipeline_ = nullptr;

TEST_F(PipelineTest, AnswersAnImageAndCountsItsTokens) {
  std::string streamed;
  auto r = pipeline_->Generate(ImageRequest(1), [&](const std::string& d) { streamed += d; });
  ASSERT_TRUE(r.ok()) << r.status();
  const int per_image = pipeline_->model().config().visual_tokens_per_image();
  EXPECT_EQ(r->visual_tokens, per_image);
  EXPECT_GT(r->prompt_tokens, per_image);
  EXPECT_EQ(r->generated_tokens, 8);
  EXPECT_EQ(r->finish_reason, "length");
  EXPECT_EQ(streamed, r->text);  // streamed deltas add up to the final text
  EXPECT_EQ(r->text, pipeline_->tokenizer().Decode(r->token_ids));
  EXPECT_GT(r->ttft_ms, 0);
  EXPECT_GT(r->kv_bytes, 0);
  // The image as decoded, not as the vision tower saw it (cropped square).
  EXPECT_EQ(r->media_width, 40);
  EXPECT_EQ(r->media_height, 30);
  EXPECT_EQ(r->media_frames, 1);
}

TEST_F(PipelineTest, VideoFramesBecomeVisualTokensInTimeOrder) {
  GenerateRequest r;
  r.media.video = Slurp(VideoFile(20));
  r.media.video_frames = 4;
  r.prompt = "in frame 2, what color is the circle?";
  r.sampling.max_new_tokens = 4;
  auto out = pipeline_->Generate(r);
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(out->visual_tokens, 4 * pipeline_->model().config().visual_tokens_per_image());
  EXPECT_EQ(out->media_frames, 4);
  EXPECT_EQ(out->media_width, 48);
  EXPECT_EQ(out->media_height, 40);
}

TEST_F(PipelineTest, BatchEqualsSingles) {
  auto a = pipeline_->Generate(ImageRequest(1));
  auto b = pipeline_->Generate(ImageRequest(2));
  auto both = pipeline_->GenerateBatch({ImageRequest(1), ImageRequest(2)});
  ASSERT_TRUE(a.ok() && b.ok() && both.ok());
  EXPECT_EQ((*both)[0].token_ids, a->token_ids);
  EXPECT_EQ((*both)[1].token_ids, b->token_ids);
}

TEST_F(PipelineTest, StopStringCutsTheTextAndTheStream) {
  auto free_run = pipeline_->Generate(ImageRequest(1, 12));
  ASSERT_TRUE(free_run.ok());
  const std::string& text = free_run->text;
  ASSERT_GE(text.size(), 4u) << "the random model produced too little text for this test";
  // Stop at a piece of the text the free run produced: the same run must end right before it.
  const std::string stop = text.substr(text.size() / 2, 2);
  const size_t cut = text.find(stop);
  auto req = ImageRequest(1, 12);
  req.sampling.stop = {stop};
  std::string streamed;
  auto r = pipeline_->Generate(req, [&](const std::string& d) { streamed += d; });
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->text, text.substr(0, cut));
  EXPECT_EQ(streamed, r->text);
  EXPECT_EQ(r->finish_reason, "stop");
}

TEST_F(PipelineTest, BadInputIsAClearErrorAndTheNextRequestStillWorks) {
  GenerateRequest garbage = ImageRequest(1);
  garbage.media.images = {"this is not an image"};
  auto r = pipeline_->Generate(garbage);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("image 0"), std::string::npos) << r.status();

  GenerateRequest both = ImageRequest(1);
  both.media.video = "x";
  EXPECT_EQ(pipeline_->Generate(both).status().code(), absl::StatusCode::kInvalidArgument);

  GenerateRequest bad_video;
  bad_video.media.video = "not a video at all";
  bad_video.prompt = "hi";
  EXPECT_EQ(pipeline_->Generate(bad_video).status().code(), absl::StatusCode::kInvalidArgument);

  GenerateRequest injected = ImageRequest(1);
  injected.prompt = "look: <image>";
  EXPECT_EQ(pipeline_->Generate(injected).status().code(), absl::StatusCode::kInvalidArgument);

  GenerateRequest long_prompt = ImageRequest(1);
  long_prompt.prompt = std::string(20000, 'a');
  auto lp = pipeline_->Generate(long_prompt);
  EXPECT_EQ(lp.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(lp.status().message().find("over the limit"), std::string::npos) << lp.status();

  auto ok = pipeline_->Generate(ImageRequest(1));
  EXPECT_TRUE(ok.ok()) << ok.status();
}

TEST_F(PipelineTest, CachePolicyCompressesAndReportsWhatItKept) {
  auto req = ImageRequest(4, 6);
  req.cache_policy = kvcache::PolicyConfig{};
  req.cache_policy->name = "vlcache";
  req.cache_policy->budget = 0.5;
  auto r = pipeline_->Generate(req);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->kv_policy, "vlcache");
  const int layers = pipeline_->model().config().text.num_hidden_layers;
  ASSERT_EQ(r->layer_budgets.size(), static_cast<size_t>(layers));
  int64_t kept = 0;
  for (int64_t k : r->layer_budgets) kept += k;
  EXPECT_EQ(kept, std::llround(0.5 * r->prompt_tokens) * layers);
  EXPECT_GT(r->kv_bytes_full, 0);

  auto full = pipeline_->Generate(ImageRequest(4, 6));
  ASSERT_TRUE(full.ok());
  EXPECT_EQ(full->kv_policy, "full");
  for (int64_t k : full->layer_budgets) EXPECT_EQ(k, full->prompt_tokens);

  req.cache_policy->name = "lru";
  auto bad = pipeline_->Generate(req);
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(bad.status().message().find("vlcache"), std::string::npos) << bad.status();
  req.cache_policy->name = "vlcache";
  req.cache_policy->budget = 0;
  EXPECT_EQ(pipeline_->Generate(req).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(PipelineTest, TextOnlyPromptHasNoVisualTokens) {
  GenerateRequest r;
  r.prompt = "count to three";
  r.sampling.max_new_tokens = 3;
  auto out = pipeline_->Generate(r);
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(out->visual_tokens, 0);
  EXPECT_EQ(out->media_width, 0);
  EXPECT_EQ(out->media_height, 0);
  EXPECT_EQ(out->media_frames, 0);
}

// The warm-up at load runs the stages of a request with a picture and leaves nothing behind: no
// pages held, no request counted; it runs where the request limits would refuse a picture, and a
// negative count is refused.
TEST_F(PipelineTest, WarmUpAtLoadRunsAndLeavesNoTrace) {
  EXPECT_EQ(pipeline_->warm_ups(), 1) << "one warm-up by default";
  EXPECT_GT(pipeline_->warm_up_ms(), 0);

  PipelineOptions o;
  o.warm_up_requests = 2;
  o.max_prompt_tokens = 8;  // fewer than one picture's visual tokens: requests with one fail
  o.cache_policy.name = "vlcache";
  auto p = Pipeline::Load(*dir_ + "/model", o);
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ((*p)->warm_ups(), 2);
  EXPECT_EQ((*p)->vision_encodes(), 0) << "the warm-up is not a request";
  EXPECT_EQ((*p)->pool().free_pages(), (*p)->pool().num_pages());
  EXPECT_EQ((*p)->Generate(ImageRequest(1)).status().code(), absl::StatusCode::kInvalidArgument);

  // A pool too small for the warm-up's prompt: it runs on a cache of its own.
  PipelineOptions tiny;
  tiny.kv_page_tokens = 1;
  auto probe = Pipeline::Load(*dir_ + "/model", PipelineOptions{});
  ASSERT_TRUE(probe.ok()) << probe.status();
  tiny.kv_cache_bytes = (*probe)->pool().bytes_per_page() / (*probe)->options().kv_page_tokens *
                        (*probe)->model().config().text.num_hidden_layers * 4;
  auto small = Pipeline::Load(*dir_ + "/model", tiny);
  ASSERT_TRUE(small.ok()) << small.status();
  EXPECT_EQ((*small)->warm_ups(), 1);
  EXPECT_EQ((*small)->pool().free_pages(), (*small)->pool().num_pages());

  PipelineOptions none;
  none.warm_up_requests = 0;
  auto cold = Pipeline::Load(*dir_ + "/model", none);
  ASSERT_TRUE(cold.ok()) << cold.status();
  EXPECT_EQ((*cold)->warm_ups(), 0);
  none.warm_up_requests = -1;
  auto bad = Pipeline::Load(*dir_ + "/model", none);
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(bad.status().message().find("warm_up_requests"), std::string::npos) << bad.status();
}

TEST_F(PipelineTest, DeviceAndDtypeAreCheckedBeforeTheModelLoads) {
  PipelineOptions o;
  o.device = "cuda";
  auto cuda = Pipeline::Load(*dir_ + "/model", o);
  if (at::hasCUDA() && kvcache::CudaKernelsBuilt()) {
    ASSERT_TRUE(cuda.ok()) << cuda.status();
    EXPECT_TRUE((*cuda)->target().device.is_cuda());
    EXPECT_TRUE((*cuda)->pool().storage().is_cuda());
  } else {
    ASSERT_EQ(cuda.status().code(), absl::StatusCode::kFailedPrecondition) << cuda.status();
    EXPECT_NE(cuda.status().message().find("--device cuda: "), std::string::npos)
        << cuda.status();
  }
  o.device = "cpu";
  o.dtype = "fp16";
  EXPECT_EQ(Pipeline::Load(*dir_ + "/model", o).status().code(),
            absl::StatusCode::kInvalidArgument);
  // float16 on the CPU: float16 matrices under float32 activations and a float32 pool; with int8
  // weights as well it is refused before loading.
  o.dtype = "float16";
  o.quantize = "int8";
  EXPECT_EQ(Pipeline::Load(*dir_ + "/model", o).status().code(),
            absl::StatusCode::kInvalidArgument);
  o.quantize = "none";
  auto half = Pipeline::Load(*dir_ + "/model", o);
  ASSERT_TRUE(half.ok()) << half.status();
  EXPECT_EQ((*half)->target().dtype, at::kFloat);
  EXPECT_EQ((*half)->pool().storage().scalar_type(), at::kFloat);
  auto half_out = (*half)->Generate(ImageRequest(4, 3));
  ASSERT_TRUE(half_out.ok()) << half_out.status();
  EXPECT_EQ(half_out->generated_tokens, 3);
  // bfloat16 on the CPU: the model computes in bfloat16, its KV pool stays float32.
  o.dtype = "bfloat16";
  auto bf16 = Pipeline::Load(*dir_ + "/model", o);
  ASSERT_TRUE(bf16.ok()) << bf16.status();
  EXPECT_EQ((*bf16)->target().dtype, at::kBFloat16);
  EXPECT_EQ((*bf16)->pool().storage().scalar_type(), at::kFloat);
  auto out = (*bf16)->Generate(ImageRequest(4, 3));
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(out->generated_tokens, 3);
  EXPECT_EQ(pipeline_->target().dtype, at::kFloat);  // the default
}

// ---- The command-line tools, run as a user would.

struct ShellRun {
  int code;
  std::string out;
};

ShellRun Sh(const std::string& cmd) {
  ShellRun r{-1, ""};
  FILE* f = popen((cmd + " 2>&1").c_str(), "r");
  if (!f) return r;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof(buf), f)) > 0) r.out.append(buf, n);
  const int st = pclose(f);
  r.code = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  return r;
}

TEST_F(PipelineTest, GenerateCliAnswersForAnImageAndAVideo) {
  const std::string bin = VLC_BIN_DIR;
  const std::string model = *dir_ + "/cli-model";
  ShellRun mk = Sh(bin + "/vlcache-make-tiny --out " + model + " --seed 5");
  ASSERT_EQ(mk.code, 0) << mk.out;
  const std::string img = *dir_ + "/cli.png";
  std::ofstream(img, std::ios::binary) << Png(64, 48, 3);
  ShellRun g = Sh(bin + "/vlcache-generate --model " + model + " --image " + img +
             " --prompt 'what shape is at row 2 column 3?' --max-new-tokens 5 --json");
  ASSERT_EQ(g.code, 0) << g.out;
  auto j = nlohmann::json::parse(g.out.substr(g.out.find('{')));
  for (const char* key : {"text", "prompt_tokens", "visual_tokens", "generated_tokens", "ttft_ms",
                          "decode_ms_per_token"}) {
    EXPECT_TRUE(j.contains(key)) << key;
  }
  EXPECT_EQ(j["visual_tokens"], 16);
  EXPECT_LE(j["generated_tokens"].get<int>(), 5);

  ShellRun v = Sh(bin + "/vlcache-generate --model " + model + " --video " + VideoFile(12) +
             " --frames 3 --prompt 'what happens?' --max-new-tokens 3 --json");
  ASSERT_EQ(v.code, 0) << v.out;
  auto jv = nlohmann::json::parse(v.out.substr(v.out.find('{')));
  EXPECT_EQ(jv["visual_tokens"], 48);

  // The compressed cache from the command line: about a tenth of the prompt's cache kept.
  ShellRun c = Sh(bin + "/vlcache-generate --model " + model + " --video " + VideoFile(12) +
                  " --frames 8 --prompt 'what happens?' --max-new-tokens 2 --json" +
                  " --kv-policy vlcache --kv-budget 0.1 --kv-page-tokens 1");
  ASSERT_EQ(c.code, 0) << c.out;
  auto jc = nlohmann::json::parse(c.out.substr(c.out.find('{')));
  const int prompt = jc["prompt_tokens"];
  int kept = 0;
  for (int k : jc["layer_budgets"]) kept += k;
  EXPECT_EQ(kept, std::lround(0.1 * prompt) * 2);
  // One-token pages: kept bytes are the kept tokens (and the one generated token fed back).
  const double ratio = jc["kv_bytes_kept"].get<double>() / jc["kv_bytes_full"].get<double>();
  EXPECT_NEAR(ratio, (kept + 2.0) / (2.0 * (prompt + 1)), 1e-9);

  ShellRun bad = Sh(bin + "/vlcache-generate --model " + model + " --image /nonexistent.png" +
               " --prompt hi");
  EXPECT_EQ(bad.code, 1);
  EXPECT_NE(bad.out.find("/nonexistent.png"), std::string::npos) << bad.out;

  EXPECT_EQ(j["device"], "cpu float32");
  if (!at::hasCUDA()) {
    ShellRun cuda = Sh(bin + "/vlcache-generate --model " + model + " --image " + img +
                       " --prompt hi --device cuda");
    EXPECT_EQ(cuda.code, 1);
    EXPECT_NE(cuda.out.find("error: --device cuda: "), std::string::npos) << cuda.out;
  }
}

}  // namespace
}  // namespace vlc::engine
