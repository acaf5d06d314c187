// vlcache-eval: accuracy against KV-cache budget for every cache policy, on the synthetic VQA
// task (tools/vqa/vqa.h), through the serving engine's own pipeline: each item's frames go in as
// PNG files with its question, greedy generation with the policy's compressed cache answers, and
// the answer counts when it equals the expected text exactly.
//
//   build/bin/vlcache-eval --model models/demo --split test --n 200 \
//       --policies full,vlcache,vlcache-guard,snapkv,pyramidkv,h2o,streamingllm,random \
//       --budgets 0.01,0.05,0.1,0.2,0.4 --frames 1 --json out.json --plot out.png
//
// For every policy and budget it reports accuracy (also by question kind), the mean share of the
// prompt's KV bytes kept (the pool's pages are one token each here, so bytes are exact), the
// same share rounded to whole pages of --report-page-tokens (16, the server's default page: what
// a server would hold), the prefill overhead (time to first token over the full cache's, median per item) and the decode
// time per token; the JSON also lists the items each configuration answered right
// (`correct_items`), the others with what was expected and what came out (`wrong`), and the
// share of items answered right but not ended there (`answer_then_more`: "2 3 2" for "2").
// A policy may carry settings after slashes, for ablations: `vlcache/uniform` shares the budget
// evenly among layers (VL-Cache's scoring without its sparsity-proportional budgets), and
// `vlcache-guard/sinks=0/guard=0/floor=1` changes what vlcache-guard always keeps.
// `--renderer second` draws the same scenes with tools/vqa/second_renderer.h instead of the
// pictures the demo model was trained on, and `--dense-frames` puts 3 to 6 objects in each clip
// frame: the robustness checks.
// `--sparsity` also prints each layer's attention sparsity over the post-vision queries
// (docs/METHODS.md, VL-Cache step 1), the quantity VL-Cache's budgets follow.
#include <ATen/ATen.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <map>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>
#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/status.h"
#include "engine/pipeline.h"
#include "tools/vqa/second_renderer.h"
#include "tools/vqa/vqa.h"
#include "common/process_env.h"

namespace {

using namespace vlc;

struct Options {
  std::string model, split = "test";
  std::string policies = "full,vlcache,vlcache-guard,snapkv,pyramidkv,h2o,streamingllm,random";
  std::string budgets = "0.01,0.05,0.1,0.2,0.4", json_path, plot_path;
  int n = 200;
  int64_t start = 0;
  int frames = 1;
  int max_new_tokens = 8;
  int threads = 0;
  bool sparsity = false;
  std::string renderer = "first";  // first: the one the demo model was trained on; second
  bool dense_frames = false;
  int report_page_tokens = 16;     // the kept share is also reported rounded to such pages
  std::string dtype = "auto", quantize = "none";
  std::string save_images;         // a directory: the first items' frames as PNG files
};

struct Row {
  std::string policy;
  double budget = 1;
  int correct = 0, total = 0;
  // Answers that begin with the expected answer (then end or a space): right, but the model did
  // not stop there. Separates losing the answer from losing the end of the answer.
  int prefix_correct = 0;
  std::map<std::string, std::pair<int, int>> by_kind;  // kind -> (correct, total)
  std::vector<double> kv_ratio, page_ratio, ttft_ratio, decode_ms;
  std::vector<double> layer_share;  // mean share of the kept prompt tokens per layer (vlcache)
  std::vector<int64_t> correct_items;  // item indices answered right
  nlohmann::json wrong = nlohmann::json::array();  // the others: question, expected, produced
  double accuracy() const { return total ? static_cast<double>(correct) / total : 0; }
};

double Mean(const std::vector<double>& v) {
  if (v.empty()) return 0;
  double s = 0;
  for (double x : v) s += x;
  return s / static_cast<double>(v.size());
}

double Median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

std::string Trim(const std::string& s) {
  const size_t a = s.find_first_not_of(" \n\t");
  if (a == std::string::npos) return "";
  const size_t b = s.find_last_not_of(" \n\t");
  return s.substr(a, b - a + 1);
}

// Accuracy against budget, one line per policy (full as a horizontal line), on a log budget axis.
void Plot(const std::vector<Row>& rows, const std::vector<double>& budgets, int frames,
          const std::string& path) {
  const int w = 900, h = 560, left = 80, right = 200, top = 50, bottom = 70;
  cv::Mat img(h, w, CV_8UC3, cv::Scalar(255, 255, 255));
  const double bmin = *std::min_element(budgets.begin(), budgets.end());
  const double bmax = *std::max_element(budgets.begin(), budgets.end());
  const double lmin = std::log10(bmin), lmax = std::log10(bmax) + 1e-9;
  auto px = [&](double budget) {
    const double t = lmax > lmin ? (std::log10(budget) - lmin) / (lmax - lmin) : 0.5;
    return left + static_cast<int>(t * (w - left - right));
  };
  auto py = [&](double acc) { return top + static_cast<int>((1 - acc) * (h - top - bottom)); };
  const cv::Scalar black(0, 0, 0), grey(210, 210, 210);
  for (int i = 0; i <= 10; ++i) {
    const double a = i / 10.0;
    cv::line(img, {left, py(a)}, {w - right, py(a)}, grey, 1);
    cv::putText(img, absl::StrCat(i * 10, "%"), {left - 50, py(a) + 5}, cv::FONT_HERSHEY_SIMPLEX,
                0.45, black, 1, cv::LINE_AA);
  }
  for (double b : budgets) {
    cv::line(img, {px(b), top}, {px(b), h - bottom}, grey, 1);
    char label[32];
    std::snprintf(label, sizeof(label), "%g", b);
    cv::putText(img, label, {px(b) - 15, h - bottom + 20}, cv::FONT_HERSHEY_SIMPLEX, 0.45, black, 1,
                cv::LINE_AA);
  }
  cv::rectangle(img, {left, top}, {w - right, h - bottom}, black, 1);
  cv::putText(img, "KV budget (fraction of the prompt's cache kept, log scale)",
              {left + 60, h - 20}, cv::FONT_HERSHEY_SIMPLEX, 0.5, black, 1, cv::LINE_AA);
  cv::putText(img,
              absl::StrCat("exact-match accuracy vs KV budget, ", frames == 1 ? "single images"
                                                                              : absl::StrCat(frames, "-frame clips")),
              {left, 30}, cv::FONT_HERSHEY_SIMPLEX, 0.6, black, 1, cv::LINE_AA);
  const std::vector<cv::Scalar> colours = {{0, 0, 0},     {40, 40, 220},  {200, 120, 0},
                                           {0, 160, 0},   {160, 0, 160},  {0, 140, 220},
                                           {120, 120, 120}, {0, 90, 140}};
  std::vector<std::string> names;
  for (const auto& r : rows) {
    if (std::find(names.begin(), names.end(), r.policy) == names.end()) names.push_back(r.policy);
  }
  for (size_t k = 0; k < names.size(); ++k) {
    const cv::Scalar c = colours[k % colours.size()];
    std::vector<cv::Point> pts;
    for (const auto& r : rows) {
      if (r.policy != names[k]) continue;
      if (r.policy == "full") {
        cv::line(img, {left, py(r.accuracy())}, {w - right, py(r.accuracy())}, c, 2, cv::LINE_AA);
      } else {
        pts.push_back({px(r.budget), py(r.accuracy())});
      }
    }
    for (size_t i = 0; i + 1 < pts.size(); ++i) cv::line(img, pts[i], pts[i + 1], c, 2, cv::LINE_AA);
    for (const auto& p : pts) cv::circle(img, p, 4, c, cv::FILLED, cv::LINE_AA);
    const int ly = top + 20 + static_cast<int>(k) * 24;
    cv::line(img, {w - right + 15, ly - 4}, {w - right + 45, ly - 4}, c, 2, cv::LINE_AA);
    cv::putText(img, names[k], {w - right + 52, ly}, cv::FONT_HERSHEY_SIMPLEX, 0.5, black, 1,
                cv::LINE_AA);
  }
  cv::imwrite(path, img);
}

// "name/setting/..." as a policy: `uniform`, `sinks=N`, `guard=N` (guard_window), `floor=N`
// (min_layer_tokens), `rows=N` (guard_scoring_rows), `queries=N` (max_scoring_queries), `recent=F`
// (recent_fraction).
absl::StatusOr<kvcache::PolicyConfig> ParsePolicy(const std::string& text, double budget) {
  std::vector<std::string> parts = absl::StrSplit(text, '/');
  kvcache::PolicyConfig pc;
  pc.name = parts[0];
  pc.budget = budget;
  for (size_t i = 1; i < parts.size(); ++i) {
    const std::string& part = parts[i];
    if (part == "uniform") {
      pc.sparsity_budgets = false;
      continue;
    }
    const size_t eq = part.find('=');
    const std::string key = part.substr(0, eq);
    const std::string value = eq == std::string::npos ? "" : part.substr(eq + 1);
    int n = 0;
    double x = 0;
    if (key == "recent" && absl::SimpleAtod(value, &x)) {
      pc.recent_fraction = x;
    } else if (!absl::SimpleAtoi(value, &n)) {
      return absl::InvalidArgumentError(absl::StrCat("--policies: '", part, "' in '", text,
                                                     "' is not uniform, sinks=N, guard=N, "
                                                     "floor=N, rows=N, queries=N or recent=F"));
    } else if (key == "sinks") {
      pc.sinks = n;
    } else if (key == "guard") {
      pc.guard_window = n;
    } else if (key == "floor") {
      pc.min_layer_tokens = n;
    } else if (key == "rows") {
      pc.guard_scoring_rows = n;
    } else if (key == "queries") {
      pc.max_scoring_queries = n;
    } else {
      return absl::InvalidArgumentError(
          absl::StrCat("--policies: unknown setting '", key, "' in '", text, "'"));
    }
  }
  VLC_RETURN_IF_ERROR(pc.Validate());
  return pc;
}

// Per-layer sparsity gamma[l] over the post-vision queries, averaged over the items.
absl::StatusOr<std::vector<double>> LayerSparsity(const engine::Pipeline& pipeline,
                                                  const std::vector<engine::GenerateRequest>& reqs) {
  const auto& model = pipeline.model();
  const int layers = model.config().text.num_hidden_layers;
  std::vector<double> gamma(layers, 0.0);
  at::NoGradGuard no_grad;
  for (const auto& req : reqs) {
    VLC_ASSIGN_OR_RETURN(auto prompt, pipeline.Prepare(req));
    int64_t v = 0;
    for (size_t i = 0; i < prompt.ids.size(); ++i) {
      if (prompt.ids[i] == model.config().image_token_index) v = static_cast<int64_t>(i) + 1;
    }
    VLC_ASSIGN_OR_RETURN(auto embeds, model.EmbedPrompt(prompt.ids, prompt.visual));
    auto cache = model.NewContiguousCache();
    VLC_RETURN_IF_ERROR(cache->AddSequence(0));
    kvcache::ObservationSpec spec;
    spec.enabled = true;
    spec.query_begin = v;
    spec.sparsity = true;
    spec.threshold = 0.01;
    std::vector<kvcache::LayerObservation> obs;
    VLC_RETURN_IF_ERROR(model.Prefill(0, embeds, 0, cache.get(), false, &spec, &obs).status());
    for (int l = 0; l < layers; ++l) {
      const double heads = static_cast<double>(obs[l].sparse_counts.size(0));
      gamma[l] += obs[l].sparse_counts.sum().item<double>() /
                  (heads * static_cast<double>(obs[l].causal_entries));
    }
  }
  for (double& g : gamma) g /= static_cast<double>(reqs.size());
  return gamma;
}

absl::Status Run(const Options& o) {
  VLC_ASSIGN_OR_RETURN(vqa::Split split, vqa::ParseSplit(o.split));
  engine::PipelineOptions popts;
  popts.num_threads = o.threads;
  popts.dtype = o.dtype;
  popts.quantize = o.quantize;
  popts.kv_page_tokens = 1;  // pages of one token: the bytes kept are exact, not page-rounded
  popts.kv_cache_bytes = int64_t{256} << 20;
  popts.limits.max_frames = std::max(popts.limits.max_frames, o.frames);
  VLC_ASSIGN_OR_RETURN(auto pipeline, engine::Pipeline::Load(o.model, popts));
  vqa::Options vo;
  vo.image_size = pipeline->model().config().vision.image_size;
  vo.dense_frames = o.dense_frames;
  VLC_RETURN_IF_ERROR(vqa::ValidateSpec(o.frames, vo));
  if (o.renderer != "first" && o.renderer != "second") {
    return absl::InvalidArgumentError(
        absl::StrCat("--renderer: '", o.renderer, "' is not first or second"));
  }

  std::vector<vqa::Item> items;
  std::vector<engine::GenerateRequest> requests;
  for (int i = 0; i < o.n; ++i) {
    items.push_back(vqa::MakeItem(split, o.start + i, o.frames, vo));
    engine::GenerateRequest req;
    const vqa::SecondStyle style = vqa::SecondStyleFor(split, o.start + i);
    const auto& frames = items.back().clip.frames;
    for (size_t f = 0; f < frames.size(); ++f) {
      req.media.images.push_back(
          o.renderer == "first"
              ? vqa::EncodePng(frames[f], vo)
              : vqa::EncodePngSecond(frames[f], vo.grid, style, static_cast<int>(f)));
      if (!o.save_images.empty() && i < 20) {
        const std::string path = absl::StrCat(o.save_images, "/", o.split, "-", o.start + i, "-",
                                              f, ".png");
        std::ofstream(path, std::ios::binary) << req.media.images.back();
      }
    }
    req.prompt = vqa::Prompt(items.back());
    req.sampling.max_new_tokens = o.max_new_tokens;
    req.sampling.temperature = 0;
    requests.push_back(std::move(req));
  }

  std::vector<double> budgets;
  for (absl::string_view b : absl::StrSplit(o.budgets, ',')) {
    double x = 0;
    if (!absl::SimpleAtod(b, &x) || x <= 0 || x > 1) {
      return absl::InvalidArgumentError(absl::StrCat("--budgets: '", b, "' is not in (0, 1]"));
    }
    budgets.push_back(x);
  }
  std::vector<std::pair<std::string, double>> configs = {{"full", 1.0}};
  for (absl::string_view p : absl::StrSplit(o.policies, ',')) {
    if (p == "full") continue;
    for (double b : budgets) {
      VLC_RETURN_IF_ERROR(ParsePolicy(std::string(p), b).status());
      configs.push_back({std::string(p), b});
    }
  }

  // Warm-up (allocator, thread pools, caches) so that the first policy's timings are not the
  // slowest for reasons of its own.
  for (size_t i = 0; i < std::min<size_t>(requests.size(), 5); ++i) {
    VLC_RETURN_IF_ERROR(pipeline->Generate(requests[i]).status());
  }
  std::vector<Row> rows;
  std::vector<double> full_ttft(items.size(), 0);
  const int layers = pipeline->model().config().text.num_hidden_layers;
  std::printf("%-22s %7s %9s %9s %10s %10s %12s\n", "policy", "budget", "accuracy", "kv kept",
              absl::StrCat("pages/", o.report_page_tokens).c_str(), "prefill x", "decode ms/tok");
  for (const auto& [policy, budget] : configs) {
    Row row;
    row.policy = policy;
    row.budget = budget;
    row.layer_share.assign(layers, 0.0);
    for (size_t i = 0; i < items.size(); ++i) {
      engine::GenerateRequest req = requests[i];
      req.cache_policy = *ParsePolicy(policy, budget);
      auto res = pipeline->Generate(req);
      if (!res.ok()) {
        return absl::Status(res.status().code(),
                            absl::StrCat(policy, " at ", budget, ", item ", items[i].index, ": ",
                                         res.status().message()));
      }
      const std::string got = Trim(res->text);
      const std::string& want = items[i].answer;
      const bool ok = got == want;
      row.correct += ok;
      row.prefix_correct += got.compare(0, want.size(), want) == 0 &&
                            (got.size() == want.size() || got[want.size()] == ' ');
      if (ok) {
        row.correct_items.push_back(items[i].index);
      } else {
        row.wrong.push_back({{"index", items[i].index},
                             {"kind", vqa::KindName(items[i].question.kind)},
                             {"question", items[i].question.text},
                             {"expected", want},
                             {"got", got}});
      }
      ++row.total;
      auto& k = row.by_kind[vqa::KindName(items[i].question.kind)];
      k.first += ok;
      ++k.second;
      // The prompt's share of the cache: the kept prompt tokens over every layer's full prompt.
      int64_t kept = 0;
      for (size_t l = 0; l < res->layer_budgets.size(); ++l) {
        kept += res->layer_budgets[l];
        row.layer_share[l] += static_cast<double>(res->layer_budgets[l]) / res->prompt_tokens;
      }
      row.kv_ratio.push_back(static_cast<double>(kept) /
                             (static_cast<double>(res->prompt_tokens) * layers));
      // What a pool of report_page_tokens-token pages would hold: whole pages per layer.
      const int64_t pt = o.report_page_tokens;
      int64_t pages = 0;
      for (int64_t k : res->layer_budgets) pages += (k + pt - 1) / pt;
      row.page_ratio.push_back(static_cast<double>(pages) /
                               (static_cast<double>((res->prompt_tokens + pt - 1) / pt) * layers));
      if (policy == "full") full_ttft[i] = res->ttft_ms;
      if (full_ttft[i] > 0) row.ttft_ratio.push_back(res->ttft_ms / full_ttft[i]);
      if (res->generated_tokens > 1) row.decode_ms.push_back(res->decode_ms_per_token);
    }
    for (double& s : row.layer_share) s /= static_cast<double>(items.size());
    std::printf("%-22s %7.2f %9.3f %9.3f %10.3f %10.3f %12.3f\n", policy.c_str(), budget,
                row.accuracy(), Mean(row.kv_ratio), Mean(row.page_ratio), Median(row.ttft_ratio),
                Mean(row.decode_ms));
    std::fflush(stdout);
    rows.push_back(std::move(row));
  }

  nlohmann::json j = {{"model", o.model},     {"split", o.split}, {"n", o.n},
                      {"start", o.start},     {"frames", o.frames},
                      {"max_new_tokens", o.max_new_tokens}, {"renderer", o.renderer},
                      {"dense_frames", o.dense_frames},
                      {"report_page_tokens", o.report_page_tokens}};
  j["results"] = nlohmann::json::array();
  for (const auto& r : rows) {
    nlohmann::json kinds;
    for (const auto& [kind, ct] : r.by_kind) {
      kinds[kind] = static_cast<double>(ct.first) / std::max(1, ct.second);
    }
    j["results"].push_back({{"policy", r.policy},
                            {"budget", r.budget},
                            {"accuracy", r.accuracy()},
                            {"answer_then_more", static_cast<double>(r.prefix_correct - r.correct) /
                                                     std::max(1, r.total)},
                            {"kv_ratio", Mean(r.kv_ratio)},
                            {"page_ratio", Mean(r.page_ratio)},
                            {"prefill_overhead_ratio", Median(r.ttft_ratio)},
                            {"decode_ms_per_token", Mean(r.decode_ms)},
                            {"accuracy_by_kind", kinds},
                            {"layer_kept_share", r.layer_share},
                            {"correct_items", r.correct_items},
                            {"wrong", r.wrong}});
  }
  if (o.sparsity) {
    const size_t m = std::min<size_t>(requests.size(), 50);
    VLC_ASSIGN_OR_RETURN(auto gamma,
                         LayerSparsity(*pipeline, std::vector<engine::GenerateRequest>(
                                                      requests.begin(), requests.begin() + m)));
    std::printf("layer sparsity (post-vision queries, threshold 0.01, %zu items):", m);
    for (double g : gamma) std::printf(" %.3f", g);
    std::printf("\n");
    j["layer_sparsity"] = gamma;
  }
  if (!o.json_path.empty()) {
    std::ofstream f(o.json_path);
    f << j.dump(2) << "\n";
    if (!f) return absl::InternalError(absl::StrCat("cannot write ", o.json_path));
  }
  if (!o.plot_path.empty()) Plot(rows, budgets, o.frames, o.plot_path);
  return absl::OkStatus();
}

}  // namespace

// Serving and measuring: OpenMP workers sleep between parallel regions (common/process_env.h).
VLC_PREFER_SLEEPING_OPENMP_WORKERS();

int main(int argc, char** argv) {
  CLI::App app{"Accuracy against KV-cache budget per policy on the synthetic VQA task"};
  Options o;
  app.add_option("--model", o.model, "Model directory (the demo model)")->required();
  app.add_option("--split", o.split, "train, validation or test")->capture_default_str();
  app.add_option("--n", o.n, "Items")->check(CLI::PositiveNumber)->capture_default_str();
  app.add_option("--start", o.start, "First item index")->capture_default_str();
  app.add_option("--frames", o.frames, "Frames per item (1: single images)")
      ->check(CLI::Range(1, vqa::kMaxFrames))
      ->capture_default_str();
  app.add_option("--policies", o.policies, "Comma-separated cache policies")->capture_default_str();
  app.add_option("--budgets", o.budgets, "Comma-separated budgets in (0, 1]")
      ->capture_default_str();
  app.add_option("--max-new-tokens", o.max_new_tokens)->capture_default_str();
  app.add_option("--threads", o.threads, "CPU threads (LibTorch and OpenBLAS); 0 = cores available")
      ->capture_default_str();
  app.add_option("--dtype", o.dtype, "Model dtype on the CPU: auto (float32), float32, bfloat16")
      ->capture_default_str();
  app.add_option("--quantize", o.quantize,
                 "Decoder weights: none, or int8 (weight-only, quantized at load)")
      ->capture_default_str();
  app.add_option("--json", o.json_path, "Write the results as JSON");
  app.add_option("--plot", o.plot_path, "Write accuracy vs budget as a PNG");
  app.add_flag("--sparsity", o.sparsity, "Also measure each layer's attention sparsity");
  app.add_option("--renderer", o.renderer,
                 "first: the pictures the demo model was trained on; second: an independent "
                 "drawing at 96-512 pixels, with and without antialiasing")
      ->capture_default_str();
  app.add_flag("--dense-frames", o.dense_frames, "Clip frames of 3 to 6 objects instead of 2 to 4");
  app.add_option("--report-page-tokens", o.report_page_tokens,
                 "Also report the kept share rounded to whole pages of this many tokens")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_option("--save-images", o.save_images,
                 "Write the first 20 items' frames as PNG files into this directory");
  CLI11_PARSE(app, argc, argv);
  const absl::Status st = Run(o);
  if (!st.ok()) {
    std::cerr << "vlcache-eval: " << st.message() << "\n";
    return 1;
  }
  return 0;
}
