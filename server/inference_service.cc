#include "server/inference_service.h"

#include <random>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "spdlog/spdlog.h"

namespace vlc::server {
namespace {

using Clock = std::chrono::steady_clock;
namespace pb = vlcache::v1;

std::string NewRequestId() {
  static thread_local std::mt19937_64 rng(std::random_device{}());
  return absl::StrFormat("%016x", rng());
}

std::string CodeName(const grpc::Status& s) {
  return absl::StatusCodeToString(static_cast<absl::StatusCode>(s.error_code()));
}

void FillUsage(const engine::GenerateResponse& u, double queue_seconds, pb::Usage* out) {
  out->set_prompt_tokens(u.prompt_tokens);
  out->set_visual_tokens(u.visual_tokens);
  out->set_generated_tokens(u.generated_tokens);
  out->set_ttft_seconds(u.ttft_ms / 1e3);
  out->set_decode_seconds_per_token(u.decode_ms_per_token / 1e3);
  out->set_total_seconds(u.total_ms / 1e3);
  out->set_queue_seconds(queue_seconds);
  out->set_kv_bytes_kept(u.kv_bytes);
  out->set_kv_bytes_full(u.kv_bytes_full);
  for (int64_t k : u.layer_budgets) out->add_layer_budgets(k);
  out->set_finish_reason(u.finish_reason);
  out->set_kv_policy(u.kv_policy);
}

}  // namespace

grpc::Status ToGrpc(const absl::Status& s) {
  if (s.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(s.code()), std::string(s.message()));
}

absl::StatusOr<engine::GenerateRequest> ToEngineRequest(const pb::GenerateRequest& req,
                                                        const ServerConfig& config) {
  const auto& opts = config.pipeline;
  engine::GenerateRequest out;
  if (req.prompt().empty()) return absl::InvalidArgumentError("prompt is empty");
  const auto& media = req.media();
  if (media.images_size() > 0 && !media.video().empty()) {
    return absl::InvalidArgumentError("media: send either images or one video, not both");
  }
  for (int i = 0; i < media.images_size(); ++i) {
    if (static_cast<int64_t>(media.images(i).size()) > opts.limits.max_bytes) {
      return absl::InvalidArgumentError(absl::StrCat("media.images[", i, "] is ",
                                                     media.images(i).size(),
                                                     " bytes, more than the limit of ",
                                                     opts.limits.max_bytes));
    }
    out.media.images.push_back(media.images(i));
  }
  if (static_cast<int64_t>(media.video().size()) > opts.limits.max_bytes) {
    return absl::InvalidArgumentError(absl::StrCat("media.video is ", media.video().size(),
                                                   " bytes, more than the limit of ",
                                                   opts.limits.max_bytes));
  }
  if (media.video_frames() < 0 || media.video_frames() > opts.limits.max_frames) {
    return absl::InvalidArgumentError(absl::StrCat("media.video_frames must be in [0, ",
                                                   opts.limits.max_frames, "], got ",
                                                   media.video_frames()));
  }
  out.media.video = media.video();
  out.media.video_frames = media.video_frames();
  out.prompt = req.prompt();
  const auto& s = req.sampling();
  out.sampling.max_new_tokens =
      s.has_max_new_tokens() ? s.max_new_tokens() : config.default_max_new_tokens;
  if (out.sampling.max_new_tokens > opts.max_new_tokens_limit) {
    return absl::InvalidArgumentError(
        absl::StrCat("sampling.max_new_tokens ", out.sampling.max_new_tokens,
                     " exceeds the server's limit of ", opts.max_new_tokens_limit));
  }
  if (s.has_temperature()) out.sampling.temperature = s.temperature();
  if (s.has_top_p()) out.sampling.top_p = s.top_p();
  if (s.has_top_k()) out.sampling.top_k = s.top_k();
  if (s.has_seed()) out.sampling.seed = s.seed();
  out.sampling.stop.assign(s.stop().begin(), s.stop().end());
  if (absl::Status st = out.sampling.Validate(); !st.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("sampling: ", st.message()));
  }
  kvcache::PolicyConfig policy = opts.cache_policy;
  if (!req.cache().policy().empty()) policy.name = req.cache().policy();
  if (req.cache().has_budget()) policy.budget = req.cache().budget();
  if (absl::Status st = policy.Validate(); !st.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("cache: ", st.message()));
  }
  out.cache_policy = policy;
  return out;
}

InferenceService::InferenceService(const ServerConfig& config, const engine::Pipeline* pipeline,
                                   EngineLoop* loop, Metrics* metrics,
                                   std::vector<std::string> tokens)
    : config_(config), pipeline_(pipeline), loop_(loop), metrics_(metrics),
      tokens_(std::move(tokens)) {}

absl::Status InferenceService::Authorize(grpc::ServerContext* context) const {
  if (tokens_.empty()) return absl::OkStatus();
  const auto& md = context->client_metadata();
  auto it = md.find("authorization");
  if (it == md.end()) {
    return absl::UnauthenticatedError("missing authorization metadata: send 'Bearer <token>'");
  }
  const std::string value(it->second.data(), it->second.size());
  for (const auto& t : tokens_) {
    if (value == "Bearer " + t) return absl::OkStatus();
  }
  return absl::UnauthenticatedError("the bearer token is not valid");
}

void InferenceService::Record(const std::string& method, const grpc::Status& status) {
  if (metrics_) metrics_->CountRequest(method, CodeName(status));
}

grpc::Status InferenceService::Generate(grpc::ServerContext* context,
                                        const pb::GenerateRequest* request,
                                        grpc::ServerWriter<pb::GenerateResponse>* writer) {
  const std::string id = NewRequestId();
  auto finish = [&](const grpc::Status& st, const engine::GenerateResponse* usage) {
    Record("Generate", st);
    if (usage) {
      spdlog::info(
          "event=request method=Generate request_id={} code={} prompt_tokens={} "
          "visual_tokens={} generated_tokens={} kv_policy={} kv_bytes_kept={} kv_bytes_full={} "
          "ttft_ms={:.1f} total_ms={:.1f}",
          id, CodeName(st), usage->prompt_tokens, usage->visual_tokens, usage->generated_tokens,
          usage->kv_policy, usage->kv_bytes, usage->kv_bytes_full, usage->ttft_ms,
          usage->total_ms);
    } else {
      spdlog::info("event=request method=Generate request_id={} code={} message=\"{}\"", id,
                   CodeName(st), st.error_message());
    }
    return st;
  };
  if (absl::Status st = Authorize(context); !st.ok()) return finish(ToGrpc(st), nullptr);
  auto req = ToEngineRequest(*request, config_);
  if (!req.ok()) return finish(ToGrpc(req.status()), nullptr);

  auto job = std::make_shared<Job>();
  job->request_id = id;
  job->request = std::move(*req);
  const auto wall_deadline = context->deadline();
  if (wall_deadline != std::chrono::system_clock::time_point::max()) {
    job->deadline = Clock::now() + (wall_deadline - std::chrono::system_clock::now());
  }
  if (absl::Status st = loop_->Submit(job); !st.ok()) return finish(ToGrpc(st), nullptr);

  StreamEvent e;
  while (true) {
    if (!job->channel->Pop(&e, std::chrono::milliseconds(50))) {
      // The engine checks this flag between decode steps and frees the sequence's pages.
      if (context->IsCancelled()) job->cancelled = true;
      continue;
    }
    if (!e.final) {
      pb::GenerateResponse r;
      r.set_text(e.text);
      for (int t : e.token_ids) r.add_token_ids(t);
      if (!writer->Write(r)) job->cancelled = true;
      continue;
    }
    break;
  }
  if (!e.status.ok()) {
    if (std::chrono::system_clock::now() >= wall_deadline) {
      return finish(grpc::Status(grpc::StatusCode::DEADLINE_EXCEEDED, "the deadline passed"),
                    nullptr);
    }
    return finish(ToGrpc(e.status), nullptr);
  }
  pb::GenerateResponse last;
  last.set_text(e.text);
  for (int t : e.token_ids) last.add_token_ids(t);
  FillUsage(e.usage, e.queue_seconds, last.mutable_usage());
  writer->Write(last);
  return finish(grpc::Status::OK, &e.usage);
}

grpc::Status InferenceService::GetModelInfo(grpc::ServerContext* context,
                                            const pb::GetModelInfoRequest*,
                                            pb::ModelInfo* out) {
  if (absl::Status st = Authorize(context); !st.ok()) {
    Record("GetModelInfo", ToGrpc(st));
    return ToGrpc(st);
  }
  const auto& c = pipeline_->model().config();
  const auto& o = pipeline_->options();
  out->set_model_dir(config_.model_dir);
  out->set_text_model_type(c.text.model_type);
  out->set_vocab_size(c.text.vocab_size);
  out->set_hidden_size(c.text.hidden_size);
  out->set_num_layers(c.text.num_hidden_layers);
  out->set_num_attention_heads(c.text.num_attention_heads);
  out->set_num_key_value_heads(c.text.num_key_value_heads);
  out->set_image_size(c.vision.image_size);
  out->set_visual_tokens_per_image(c.visual_tokens_per_image());
  out->set_max_prompt_tokens(o.max_prompt_tokens);
  out->set_max_new_tokens(o.max_new_tokens_limit);
  for (const auto& n : kvcache::PolicyNames()) out->add_kv_policies(n);
  out->set_default_kv_policy(o.cache_policy.name);
  out->set_default_kv_budget(o.cache_policy.budget);
  out->set_kv_cache_bytes(pipeline_->pool().capacity_bytes());
  out->set_kv_page_tokens(o.kv_page_tokens);
  Record("GetModelInfo", grpc::Status::OK);
  return grpc::Status::OK;
}

}  // namespace vlc::server
