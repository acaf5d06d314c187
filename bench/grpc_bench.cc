// What the gRPC service costs over the in-process engine, on the same request: time to first
// token and decode time per token through a real server process on loopback, as ratios to the
// same request run by the engine in this process. Both sides run one after the other, never at
// once, so they do not compete for the cores.
//
//   build/bin/vlcache-bench-grpc [--model DIR] --max-new-tokens 32 --repeats 7 --json out.json
//
// Without --model it writes a random checkpoint whose language model has the --text-* sizes: the
// overhead is a few fixed costs per request and per streamed message, so it is only meaningful
// against per-token work of a realistic size, not the millisecond steps of the tiny default.
#include <grpcpp/grpcpp.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <iostream>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>
#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>

#include "bench/bench_util.h"
#include "bench/server_process.h"
#include "common/fs.h"
#include "engine/pipeline.h"
#include "tools/make_tiny.h"
#include "vlcache/v1/inference.grpc.pb.h"

namespace {

using namespace vlc;
using bench::Clock;
using bench::Median;

std::string TestImage(int seed) {
  cv::Mat img(240, 320, CV_8UC3);
  cv::RNG rng(seed);
  rng.fill(img, cv::RNG::UNIFORM, 0, 256);
  std::vector<uchar> buf;
  cv::imencode(".png", img, buf);
  return std::string(buf.begin(), buf.end());
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"gRPC overhead: TTFT and decode time per token through the server vs in-process"};
  std::string model, json_path;
  int max_new = 32, repeats = 7;
  app.add_option("--model", model, "Model directory; default: a tiny random checkpoint");
  app.add_option("--max-new-tokens", max_new)->capture_default_str();
  app.add_option("--repeats", repeats)->capture_default_str();
  app.add_option("--json", json_path);
  tools::TinyOptions tiny;
  tiny.text_hidden_size = 1024;
  tiny.text_intermediate_size = 2816;
  tiny.text_layers = 8;
  app.add_option("--text-hidden", tiny.text_hidden_size, "without --model: LM hidden size")
      ->capture_default_str();
  app.add_option("--text-intermediate", tiny.text_intermediate_size,
                 "without --model: LM MLP size")
      ->capture_default_str();
  app.add_option("--text-layers", tiny.text_layers, "without --model: LM layers")
      ->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  std::string tmp;
  if (model.empty()) {
    tmp = MakeTempDir("vlcache-bench-grpc-");
    model = tmp + "/model";
    if (auto st = tools::MakeTinyCheckpoint(model, tiny); !st.ok()) {
      std::cerr << st << "\n";
      return 1;
    }
  }
  std::string bin_dir = argv[0];
  bin_dir = bin_dir.substr(0, bin_dir.rfind('/'));
  const std::string image = TestImage(3);
  const std::string prompt = "what color is the triangle?";

  auto pipeline = engine::Pipeline::Load(model);
  if (!pipeline.ok()) {
    std::cerr << pipeline.status() << "\n";
    return 1;
  }
  bench::BenchServer server;
  if (!server.Start(bin_dir, model)) {
    std::cerr << "could not start vlcache-server\n";
    return 1;
  }
  const std::string target = server.target();
  auto stub = vlcache::v1::Inference::NewStub(
      grpc::CreateChannel(target, grpc::InsecureChannelCredentials()));

  std::vector<double> ttft_ratio, decode_ratio, local_ttft, remote_ttft, local_tok, remote_tok;
  for (int r = -1; r < repeats; ++r) {  // repeat -1 warms both sides up
    engine::GenerateRequest req;
    req.media.images = {image};
    req.prompt = prompt;
    req.sampling.max_new_tokens = max_new;  // the same request the server gets (EOS ends both)
    auto local = (*pipeline)->Generate(req);
    if (!local.ok()) {
      std::cerr << local.status() << "\n";
      return 1;
    }
    vlcache::v1::GenerateRequest g;
    g.mutable_media()->add_images(image);
    g.set_prompt(prompt);
    g.mutable_sampling()->set_max_new_tokens(max_new);
    grpc::ClientContext ctx;
    const auto t0 = Clock::now();
    auto reader = stub->Generate(&ctx, g);
    vlcache::v1::GenerateResponse msg;
    double first = -1, last = 0;
    int tokens = 0;
    while (reader->Read(&msg)) {
      const double t = bench::Seconds(t0) * 1e3;
      if (msg.token_ids_size() > 0 && first < 0) first = t;
      if (msg.token_ids_size() > 0) last = t;
      tokens += msg.token_ids_size();
    }
    if (auto st = reader->Finish(); !st.ok()) {
      std::cerr << "gRPC: " << st.error_message() << "\n";
      return 1;
    }
    if (r < 0) continue;
    // Greedy: both sides generate the same tokens; per-token times are over the same count.
    const double remote_per_token = tokens > 1 ? (last - first) / (tokens - 1) : 0;
    local_ttft.push_back(local->ttft_ms);
    remote_ttft.push_back(first);
    local_tok.push_back(local->decode_ms_per_token);
    remote_tok.push_back(remote_per_token);
    ttft_ratio.push_back(first / local->ttft_ms);
    if (local->decode_ms_per_token > 0 && remote_per_token > 0) {
      decode_ratio.push_back(remote_per_token / local->decode_ms_per_token);
    }
  }
  server.Stop();
  if (!tmp.empty()) RemoveTree(tmp);
  std::printf("TTFT          in-process %8.2f ms   gRPC %8.2f ms   ratio %.3f\n",
              Median(local_ttft), Median(remote_ttft), Median(ttft_ratio));
  std::printf("decode/token  in-process %8.3f ms   gRPC %8.3f ms   ratio %.3f\n",
              Median(local_tok), Median(remote_tok), Median(decode_ratio));
  nlohmann::json j = {{"model", model},
                      {"max_new_tokens", max_new},
                      {"ttft_ms_in_process", Median(local_ttft)},
                      {"ttft_ms_grpc", Median(remote_ttft)},
                      {"ttft_ratio", Median(ttft_ratio)},
                      {"decode_ms_per_token_in_process", Median(local_tok)},
                      {"decode_ms_per_token_grpc", Median(remote_tok)},
                      {"decode_ratio", Median(decode_ratio)},
                      {"ttft_ratios", ttft_ratio},
                      {"decode_ratios", decode_ratio}};
  if (!json_path.empty()) std::ofstream(json_path) << j.dump(2) << "\n";
  return 0;
}
