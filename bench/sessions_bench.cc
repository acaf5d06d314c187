// How many sessions one server holds at once in a fixed KV-cache pool, per cache policy: the
// memory claim of VL-Cache measured through the real service. For each policy a fresh
// vlcache-server runs with the same --kv-cache-bytes; sessions (each with the same multi-image
// media) are created until the pool has had to evict some (least recently used first), then every
// session is asked for: those still there were held at once.
//
//   build/bin/vlcache-bench-sessions [--model DIR] --kv-cache-bytes 8MiB --images 16
//       --policies full,vlcache --budget 0.1 --json out.json
#include <grpcpp/grpcpp.h>

#include <cstdio>
#include <fstream>
#include <iostream>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>
#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>

#include "absl/strings/str_split.h"
#include "bench/server_process.h"
#include "common/fs.h"
#include "tools/make_tiny.h"
#include "vlcache/v1/inference.grpc.pb.h"

namespace {

using namespace vlc;
namespace pb = vlcache::v1;

std::string TestImage(int seed) {
  cv::Mat img(240, 320, CV_8UC3);
  cv::RNG rng(seed);
  rng.fill(img, cv::RNG::UNIFORM, 0, 256);
  std::vector<uchar> buf;
  cv::imencode(".png", img, buf);
  return std::string(buf.begin(), buf.end());
}

struct PolicyResult {
  std::string policy;
  int created = 0;
  int held = 0;
  int64_t kv_bytes_per_session = 0;  // pages one session holds (the first one created)
  int64_t kv_bytes_full = 0;         // what its uncompressed cache would hold
};

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Sessions held at once in a fixed KV-cache pool, per cache policy"};
  std::string model, json_path, policies = "full,vlcache", pool = "8MiB";
  int images = 16, page_tokens = 16;
  double budget = 0.1;
  app.add_option("--model", model, "Model directory; default: the tiny random checkpoint");
  app.add_option("--kv-cache-bytes", pool, "The server's KV pool")->capture_default_str();
  app.add_option("--kv-page-tokens", page_tokens, "Tokens per page")->capture_default_str();
  app.add_option("--images", images, "Images in each session's media")->capture_default_str();
  app.add_option("--policies", policies, "Comma-separated cache policies")->capture_default_str();
  app.add_option("--budget", budget, "Budget of the compressing policies")->capture_default_str();
  app.add_option("--json", json_path);
  CLI11_PARSE(app, argc, argv);

  std::string tmp;
  if (model.empty()) {
    tmp = MakeTempDir("vlcache-bench-sessions-");
    model = tmp + "/model";
    if (auto st = tools::MakeTinyCheckpoint(model, {}); !st.ok()) {
      std::cerr << st << "\n";
      return 1;
    }
  }
  std::string bin_dir = argv[0];
  bin_dir = bin_dir.substr(0, bin_dir.rfind('/'));
  pb::Media media;
  for (int i = 0; i < images; ++i) media.add_images(TestImage(i));

  std::vector<PolicyResult> results;
  for (const std::string& policy : std::vector<std::string>(absl::StrSplit(policies, ','))) {
    bench::BenchServer server;
    if (!server.Start(bin_dir, model,
                      {"--kv-cache-bytes", pool, "--kv-page-tokens", std::to_string(page_tokens),
                       "--max-sessions", "1000000", "--session-ttl-seconds", "86400",
                       "--max-frames", std::to_string(std::max(images, 1))})) {
      std::cerr << "could not start vlcache-server\n";
      return 1;
    }
    auto stub = pb::Inference::NewStub(
        grpc::CreateChannel(server.target(), grpc::InsecureChannelCredentials()));
    int64_t capacity = 0;
    {
      grpc::ClientContext ctx;
      pb::ModelInfo info;
      if (auto st = stub->GetModelInfo(&ctx, pb::GetModelInfoRequest(), &info); !st.ok()) {
        std::cerr << "GetModelInfo: " << st.error_message() << "\n";
        return 1;
      }
      capacity = info.kv_cache_bytes();
    }
    PolicyResult r;
    r.policy = policy;
    std::vector<std::string> ids;
    // Create until the pool must have evicted: 1.5x what fits by the first session's size.
    int target = 1;
    for (int i = 0; i < target; ++i) {
      pb::CreateSessionRequest req;
      *req.mutable_media() = media;
      req.set_prompt_prefix("describe the pictures.");
      req.mutable_cache()->set_policy(policy);
      if (policy != "full") req.mutable_cache()->set_budget(budget);
      grpc::ClientContext ctx;
      pb::SessionInfo info;
      if (auto st = stub->CreateSession(&ctx, req, &info); !st.ok()) {
        std::cerr << policy << ": CreateSession " << i << ": " << st.error_message() << "\n";
        return 1;
      }
      ids.push_back(info.session_id());
      if (i == 0) {
        r.kv_bytes_per_session = info.kv_bytes_kept();
        r.kv_bytes_full = info.kv_bytes_full();
        target = static_cast<int>(1.5 * static_cast<double>(capacity) /
                                  static_cast<double>(std::max<int64_t>(1, r.kv_bytes_per_session))) +
                 2;
      }
    }
    r.created = static_cast<int>(ids.size());
    for (const auto& id : ids) {
      grpc::ClientContext ctx;
      pb::GetSessionRequest req;
      req.set_session_id(id);
      pb::SessionInfo info;
      if (stub->GetSession(&ctx, req, &info).ok()) ++r.held;
    }
    std::printf("%-12s created %6d  held at once %6d  kv bytes/session %9lld (full-equivalent "
                "%lld)\n",
                policy.c_str(), r.created, r.held, static_cast<long long>(r.kv_bytes_per_session),
                static_cast<long long>(r.kv_bytes_full));
    results.push_back(r);
    server.Stop();
  }
  if (!tmp.empty()) RemoveTree(tmp);

  nlohmann::json j = {{"model", model.rfind(tmp, 0) == 0 && !tmp.empty() ? "tiny" : model},
                      {"kv_cache_bytes", pool},
                      {"kv_page_tokens", page_tokens},
                      {"images", images},
                      {"budget", budget}};
  for (const auto& r : results) {
    j["results"].push_back({{"policy", r.policy},
                            {"created", r.created},
                            {"held", r.held},
                            {"kv_bytes_per_session", r.kv_bytes_per_session},
                            {"kv_bytes_full", r.kv_bytes_full}});
  }
  if (results.size() >= 2 && results[0].held > 0) {
    for (size_t i = 1; i < results.size(); ++i) {
      std::printf("%s holds %.2fx the sessions of %s\n", results[i].policy.c_str(),
                  static_cast<double>(results[i].held) / results[0].held,
                  results[0].policy.c_str());
    }
  }
  if (!json_path.empty()) std::ofstream(json_path) << j.dump(2) << "\n";
  return 0;
}
