// vlcache-cli: a command-line client of the vlcache gRPC server, e.g.
//   vlcache-cli generate --image cat.png --prompt "What is in the picture?"
//   vlcache-cli session create --video clip.mp4        (prints the session id)
//   vlcache-cli session ask --id ID --prompt "And then?"
//   vlcache-cli info
// Streamed text goes to stdout as it arrives; --json prints one JSON object instead. A failed call
// prints "error: <CODE>: <message>" to stderr and exits 2.
#include <grpcpp/grpcpp.h>

#include <CLI/CLI.hpp>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <iterator>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "clients/cpp/vlcache_client.h"

namespace {

namespace pb = vlc::client::pb;
using nlohmann::json;

constexpr int kExitFailure = 2;

// Where and how to connect; every subcommand takes these.
struct ConnectionFlags {
  std::string target = "127.0.0.1:50051";
  std::string token;
  std::string tls_ca;
  double deadline_seconds = 0;
  bool json = false;
};

struct MediaFlags {
  std::vector<std::string> images;
  std::string video;
  int frames = 0;
};

// Sampling flags keep their CLI::Option so that an unset flag stays unset in the request and the
// server's default applies (proto3 `optional`).
struct SamplingFlags {
  int max_new_tokens = 0;
  float temperature = 0;
  float top_p = 0;
  int top_k = 0;
  uint64_t seed = 0;
  std::vector<std::string> stop;
  CLI::Option* max_new_tokens_opt = nullptr;
  CLI::Option* temperature_opt = nullptr;
  CLI::Option* top_p_opt = nullptr;
  CLI::Option* top_k_opt = nullptr;
  CLI::Option* seed_opt = nullptr;
};

struct CacheFlags {
  std::string policy;
  double budget = 0;
  CLI::Option* budget_opt = nullptr;
};

void AddConnectionFlags(CLI::App* app, ConnectionFlags* f) {
  app->add_option("--target", f->target, "Server address HOST:PORT")->capture_default_str();
  // The environment variable keeps the token out of `ps` output.
  app->add_option("--token", f->token, "Bearer token (default: $VLC_AUTH_TOKEN)")
      ->envname("VLC_AUTH_TOKEN");
  app->add_option("--tls-ca", f->tls_ca, "PEM file of the CA to trust; connects with TLS")
      ->check(CLI::ExistingFile);
  app->add_option("--deadline-seconds", f->deadline_seconds, "Deadline of the call; 0 = none")
      ->check(CLI::NonNegativeNumber);
  app->add_flag("--json", f->json, "Print one JSON object instead of plain text");
}

void AddMediaFlags(CLI::App* app, MediaFlags* f) {
  auto* img = app->add_option("--image", f->images,
                              "Image file (PNG, JPEG, WebP, BMP); repeatable, in prompt order");
  auto* vid = app->add_option("--video", f->video, "Video file (MP4, AVI, WebM)");
  img->excludes(vid);
  app->add_option("--frames", f->frames, "Frames sampled from the video; 0 = the server's default")
      ->check(CLI::NonNegativeNumber);
}

void AddSamplingFlags(CLI::App* app, SamplingFlags* f) {
  f->max_new_tokens_opt =
      app->add_option("--max-new-tokens", f->max_new_tokens, "Most tokens to generate");
  f->temperature_opt =
      app->add_option("--temperature", f->temperature, "Sampling temperature; 0 = greedy");
  f->top_p_opt = app->add_option("--top-p", f->top_p, "Nucleus sampling mass in (0, 1]");
  f->top_k_opt = app->add_option("--top-k", f->top_k, "Sample among the k most likely; 0 = all");
  f->seed_opt = app->add_option("--seed", f->seed, "Random seed for sampling");
  app->add_option("--stop", f->stop, "Stop before this text; repeatable");
}

void AddCacheFlags(CLI::App* app, CacheFlags* f) {
  app->add_option("--kv-policy", f->policy,
                  "KV cache policy (full, vlcache, snapkv, pyramidkv, h2o, streamingllm, "
                  "random); default: the server's");
  f->budget_opt = app->add_option("--kv-budget", f->budget,
                                  "Fraction of the prompt's KV cache kept, in (0, 1]");
}

[[noreturn]] void Fail(const std::string& message) {
  std::cerr << "error: " << message << std::endl;
  std::exit(kExitFailure);
}

// gRPC's code numbers are abseil's, as the server relies on too (server/inference_service.h).
std::string CodeName(grpc::StatusCode code) {
  return absl::StatusCodeToString(static_cast<absl::StatusCode>(code));
}

void CheckStatus(const grpc::Status& status) {
  if (!status.ok())
    Fail(CodeName(status.error_code()) + ": " + status.error_message());
}

std::string ReadFileOrDie(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) Fail("cannot read " + path + ": " + std::strerror(errno));
  std::string data((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  if (f.bad()) Fail("cannot read " + path + ": " + std::strerror(errno));
  return data;
}

std::unique_ptr<vlc::client::Client> Connect(const ConnectionFlags& f) {
  vlc::client::ConnectOptions options;
  options.target = f.target;
  options.token = f.token;
  if (!f.tls_ca.empty()) options.tls_ca_pem = ReadFileOrDie(f.tls_ca);
  auto client = vlc::client::Client::Connect(options);
  if (!client.ok()) Fail(std::string(client.status().message()));
  return std::move(client).value();
}

vlc::client::CallOptions CallOptionsOf(const ConnectionFlags& f) {
  vlc::client::CallOptions options;
  options.deadline = std::chrono::microseconds(static_cast<int64_t>(f.deadline_seconds * 1e6));
  return options;
}

void FillMedia(const MediaFlags& f, pb::Media* media) {
  for (const auto& path : f.images) media->add_images(ReadFileOrDie(path));
  if (!f.video.empty()) media->set_video(ReadFileOrDie(f.video));
  media->set_video_frames(f.frames);
}

void FillSampling(const SamplingFlags& f, pb::SamplingParams* s) {
  if (f.max_new_tokens_opt->count()) s->set_max_new_tokens(f.max_new_tokens);
  if (f.temperature_opt->count()) s->set_temperature(f.temperature);
  if (f.top_p_opt->count()) s->set_top_p(f.top_p);
  if (f.top_k_opt->count()) s->set_top_k(f.top_k);
  if (f.seed_opt->count()) s->set_seed(f.seed);
  for (const auto& stop : f.stop) s->add_stop(stop);
}

void FillCache(const CacheFlags& f, pb::CacheParams* c) {
  c->set_policy(f.policy);
  if (f.budget_opt->count()) c->set_budget(f.budget);
}

json UsageJson(const std::string& text, const pb::Usage& u) {
  return json{
      {"text", text},
      {"prompt_tokens", u.prompt_tokens()},
      {"visual_tokens", u.visual_tokens()},
      {"generated_tokens", u.generated_tokens()},
      {"ttft_seconds", u.ttft_seconds()},
      {"decode_seconds_per_token", u.decode_seconds_per_token()},
      {"total_seconds", u.total_seconds()},
      {"queue_seconds", u.queue_seconds()},
      {"kv_bytes_kept", u.kv_bytes_kept()},
      {"kv_bytes_full", u.kv_bytes_full()},
      {"layer_budgets", std::vector<int64_t>(u.layer_budgets().begin(), u.layer_budgets().end())},
      {"finish_reason", u.finish_reason()},
      {"kv_policy", u.kv_policy()}};
}

json SessionJson(const pb::SessionInfo& s) {
  return json{
      {"session_id", s.session_id()},
      {"kv_policy", s.kv_policy()},
      {"kv_bytes_kept", s.kv_bytes_kept()},
      {"kv_bytes_full", s.kv_bytes_full()},
      {"layer_budgets", std::vector<int64_t>(s.layer_budgets().begin(), s.layer_budgets().end())},
      {"logical_length", s.logical_length()},
      {"idle_seconds", s.idle_seconds()},
      {"turns", s.turns()},
      {"visual_tokens", s.visual_tokens()}};
}

json ModelJson(const pb::ModelInfo& m) {
  return json{
      {"model_dir", m.model_dir()},
      {"text_model_type", m.text_model_type()},
      {"vocab_size", m.vocab_size()},
      {"hidden_size", m.hidden_size()},
      {"num_layers", m.num_layers()},
      {"num_attention_heads", m.num_attention_heads()},
      {"num_key_value_heads", m.num_key_value_heads()},
      {"image_size", m.image_size()},
      {"visual_tokens_per_image", m.visual_tokens_per_image()},
      {"max_prompt_tokens", m.max_prompt_tokens()},
      {"max_new_tokens", m.max_new_tokens()},
      {"kv_policies", std::vector<std::string>(m.kv_policies().begin(), m.kv_policies().end())},
      {"default_kv_policy", m.default_kv_policy()},
      {"default_kv_budget", m.default_kv_budget()},
      {"kv_cache_bytes", m.kv_cache_bytes()},
      {"kv_page_tokens", m.kv_page_tokens()}};
}

// A model's text may hold bytes that are not UTF-8 (a random model emits byte tokens freely);
// they print as U+FFFD instead of aborting the dump.
std::string Dump(const json& j, int indent) {
  return j.dump(indent, ' ', false, json::error_handler_t::replace);
}

// Prints a Generate or SessionGenerate stream: deltas to stdout as they arrive (unless --json),
// then a newline, or the JSON summary of the whole answer.
template <typename Call>
int PrintStream(Call call, bool as_json) {
  vlc::client::Answer answer;
  const grpc::Status status = call([&](const pb::GenerateResponse& response) {
    answer.Add(response);
    if (!as_json && !response.text().empty()) {
      std::fwrite(response.text().data(), 1, response.text().size(), stdout);
      std::fflush(stdout);
    }
  });
  if (!as_json && (status.ok() || !answer.text.empty())) {
    // Ends the partial line even when the stream failed, so the error starts on its own line.
    std::fputc('\n', stdout);
    std::fflush(stdout);
  }
  CheckStatus(status);
  if (as_json) std::cout << Dump(UsageJson(answer.text, answer.usage), -1) << std::endl;
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"vlcache-cli: a client of the vlcache inference server"};
  app.require_subcommand(1);
  ConnectionFlags conn;
  MediaFlags media;
  // One set per subcommand: the option pointers they keep must belong to the parsed subcommand.
  SamplingFlags generate_sampling, ask_sampling;
  CacheFlags generate_cache, create_cache;
  std::string prompt, session_id;

  auto* generate = app.add_subcommand("generate", "Answer a prompt about images or a video");
  AddConnectionFlags(generate, &conn);
  AddMediaFlags(generate, &media);
  generate->add_option("--prompt", prompt, "The question or instruction")->required();
  AddSamplingFlags(generate, &generate_sampling);
  AddCacheFlags(generate, &generate_cache);

  auto* session = app.add_subcommand("session", "Sessions: media encoded once, many turns");
  session->require_subcommand(1);
  auto* create = session->add_subcommand("create", "Encode media and a prefix; prints the id");
  AddConnectionFlags(create, &conn);
  AddMediaFlags(create, &media);
  create->add_option("--prompt-prefix", prompt, "Text placed after the media, before the turns");
  AddCacheFlags(create, &create_cache);
  auto* ask = session->add_subcommand("ask", "One turn on a session; streams the answer");
  AddConnectionFlags(ask, &conn);
  ask->add_option("--id", session_id, "Session id")->required();
  ask->add_option("--prompt", prompt, "The question or instruction")->required();
  AddSamplingFlags(ask, &ask_sampling);
  auto* get = session->add_subcommand("get", "Print a session's state as JSON");
  AddConnectionFlags(get, &conn);
  get->add_option("--id", session_id, "Session id")->required();
  auto* del = session->add_subcommand("delete", "Delete a session and free its cache");
  AddConnectionFlags(del, &conn);
  del->add_option("--id", session_id, "Session id")->required();

  auto* info = app.add_subcommand("info", "Print the served model's description as JSON");
  AddConnectionFlags(info, &conn);

  CLI11_PARSE(app, argc, argv);

  auto client = Connect(conn);
  const vlc::client::CallOptions call = CallOptionsOf(conn);

  if (*generate) {
    pb::GenerateRequest req;
    FillMedia(media, req.mutable_media());
    req.set_prompt(prompt);
    FillSampling(generate_sampling, req.mutable_sampling());
    FillCache(generate_cache, req.mutable_cache());
    return PrintStream([&](const auto& on) { return client->Generate(req, call, on); }, conn.json);
  }
  if (*create) {
    pb::CreateSessionRequest req;
    FillMedia(media, req.mutable_media());
    req.set_prompt_prefix(prompt);
    FillCache(create_cache, req.mutable_cache());
    pb::SessionInfo reply;
    CheckStatus(client->CreateSession(req, call, &reply));
    if (conn.json) {
      std::cout << Dump(SessionJson(reply), -1) << std::endl;
    } else {
      std::cout << reply.session_id() << std::endl;
    }
    return 0;
  }
  if (*ask) {
    pb::SessionGenerateRequest req;
    req.set_session_id(session_id);
    req.set_prompt(prompt);
    FillSampling(ask_sampling, req.mutable_sampling());
    return PrintStream([&](const auto& on) { return client->SessionGenerate(req, call, on); },
                       conn.json);
  }
  if (*get) {
    pb::GetSessionRequest req;
    req.set_session_id(session_id);
    pb::SessionInfo reply;
    CheckStatus(client->GetSession(req, call, &reply));
    std::cout << Dump(SessionJson(reply), conn.json ? -1 : 2) << std::endl;
    return 0;
  }
  if (*del) {
    pb::DeleteSessionRequest req;
    req.set_session_id(session_id);
    CheckStatus(client->DeleteSession(req, call));
    return 0;
  }
  pb::ModelInfo reply;
  CheckStatus(client->GetModelInfo(call, &reply));
  std::cout << Dump(ModelJson(reply), conn.json ? -1 : 2) << std::endl;
  return 0;
}
