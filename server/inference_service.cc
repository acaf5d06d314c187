#include "server/inference_service.h"

#include <algorithm>

#include <random>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/status.h"
#include "server/auth.h"
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

namespace {

// The engine request with the server's defaults for unset fields, not yet checked.
engine::GenerateRequest Convert(const pb::GenerateRequest& req, const ServerConfig& config) {
  const auto& opts = config.pipeline;
  engine::GenerateRequest out;
  const auto& media = req.media();
  out.media.images.assign(media.images().begin(), media.images().end());
  out.media.video = media.video();
  out.media.video_frames = media.video_frames();
  out.prompt = req.prompt();
  const auto& s = req.sampling();
  out.sampling.max_new_tokens =
      s.has_max_new_tokens() ? s.max_new_tokens() : config.default_max_new_tokens;
  if (s.has_temperature()) out.sampling.temperature = s.temperature();
  if (s.has_top_p()) out.sampling.top_p = s.top_p();
  if (s.has_top_k()) out.sampling.top_k = s.top_k();
  if (s.has_seed()) out.sampling.seed = s.seed();
  out.sampling.stop.assign(s.stop().begin(), s.stop().end());
  kvcache::PolicyConfig policy = opts.cache_policy;
  if (!req.cache().policy().empty()) policy.name = req.cache().policy();
  if (req.cache().has_budget()) policy.budget = req.cache().budget();
  out.cache_policy = policy;
  return out;
}

absl::Status CheckSessionIdSyntax(const std::string& id) {
  const bool ok = !id.empty() && id.size() <= 128 &&
                  std::all_of(id.begin(), id.end(), [](char c) {
                    return absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '.' ||
                           c == '_' || c == '-';
                  });
  if (ok) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(
      "session_id '", id.substr(0, 140), "' is not 1 to 128 of A-Z a-z 0-9 . _ -"));
}

absl::StatusOr<std::string> SessionIdOfCall(const grpc::ServerContext& context,
                                            const std::string& body) {
  const auto& md = context.client_metadata();
  const auto it = md.find(kSessionIdMetadata);
  if (it == md.end()) return body;
  const std::string header(it->second.data(), it->second.size());
  if (body.empty()) return header;
  if (header != body) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the ", kSessionIdMetadata, " metadata ('", header.substr(0, 140),
        "') and the request's session_id ('", body.substr(0, 140),
        "') name different sessions; a proxy routes on the metadata, so they must agree"));
  }
  return body;
}

}  // namespace

absl::StatusOr<engine::GenerateRequest> ToEngineRequest(const pb::GenerateRequest& req,
                                                        const ServerConfig& config) {
  engine::GenerateRequest out = Convert(req, config);
  VLC_RETURN_IF_ERROR(engine::ValidateRequest(out, config.pipeline.request_limits()));
  return out;
}

absl::StatusOr<std::shared_ptr<Job>> NewCreateSessionJob(const pb::CreateSessionRequest& request,
                                                         const ServerConfig& config) {
  // The same conversion and checks as Generate, on the media, the prefix and the cache.
  pb::GenerateRequest as_generate;
  *as_generate.mutable_media() = request.media();
  as_generate.set_prompt(request.prompt_prefix());
  *as_generate.mutable_cache() = request.cache();
  engine::GenerateRequest req = Convert(as_generate, config);
  req.session_opening = true;  // its prompt is the optional prefix text
  VLC_RETURN_IF_ERROR(engine::ValidateRequest(req, config.pipeline.request_limits()));
  if (!request.session_id().empty()) VLC_RETURN_IF_ERROR(CheckSessionIdSyntax(request.session_id()));
  auto job = std::make_shared<Job>();
  job->kind = Job::Kind::kCreateSession;
  job->session_id = request.session_id();
  job->request = std::move(req);
  return job;
}

absl::StatusOr<std::shared_ptr<Job>> NewSessionTurnJob(const pb::SessionGenerateRequest& request,
                                                       const ServerConfig& config) {
  pb::GenerateRequest as_generate;
  as_generate.set_prompt(request.prompt());
  *as_generate.mutable_sampling() = request.sampling();
  VLC_ASSIGN_OR_RETURN(engine::GenerateRequest req, ToEngineRequest(as_generate, config));
  auto job = std::make_shared<Job>();
  job->kind = Job::Kind::kSessionGenerate;
  job->session_id = request.session_id();
  job->request = std::move(req);
  return job;
}

InferenceService::InferenceService(const ServerConfig& config, Metrics* metrics,
                                   std::vector<std::string> tokens, TelemetryWatch* watch,
                                   DrainGate* gate)
    : config_(config), metrics_(metrics), tokens_(std::move(tokens)), watch_(watch), gate_(gate) {}

void InferenceService::Attach(const engine::Pipeline* pipeline, engine::Scheduler* scheduler) {
  scheduler_.store(scheduler);
  pipeline_.store(pipeline);  // last: Ready() tests this one
}

absl::Status InferenceService::Ready() const {
  if (pipeline_.load() != nullptr) return absl::OkStatus();
  return absl::UnavailableError(absl::StrCat(
      "the model (", config_.model_dir,
      ") is still loading; retry when grpc.health.v1.Health reports SERVING"));
}

absl::StatusOr<std::string> InferenceService::Authorize(grpc::ServerContext* context,
                                                        DrainGate::Call* call) const {
  // Every RPC starts here, so this is also where a request that comes too early (loading) or too
  // late (draining) is answered.
  VLC_RETURN_IF_ERROR(Ready());
  VLC_RETURN_IF_ERROR(call->Admit());
  return AuthorizeBearer(*context, tokens_);
}

void InferenceService::Record(const std::string& method, const grpc::Status& status) {
  if (metrics_) metrics_->CountRequest(method, CodeName(status));
}

absl::StatusOr<StreamEvent> InferenceService::RunJob(grpc::ServerContext* context,
                                                     std::shared_ptr<Job> job,
                                                     const WriteFn& write) {
  const auto wall_deadline = context->deadline();
  if (wall_deadline != std::chrono::system_clock::time_point::max()) {
    job->deadline = engine::Clock::Steady()->Now() +
                    std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                        wall_deadline - std::chrono::system_clock::now());
  }
  if (absl::Status st = scheduler_.load()->Submit(job); !st.ok()) return st;
  StreamEvent e;
  bool deadline_hit = false;
  // The engine checks job->cancelled between decode steps and frees the sequence's pages. The
  // client's timer fires at its deadline and ends the call; ours runs later, since the timeout
  // travels as a duration and starts when the call arrives (later still on a loaded machine).
  // So a call that ends, by cancellation or a failed write, within kDeadlineSkew of our
  // deadline ended at the client's deadline, and is answered and counted as DEADLINE_EXCEEDED.
  constexpr auto kDeadlineSkew = std::chrono::seconds(1);
  auto stop = [&] {
    if (job->cancelled) return;
    job->cancelled = true;
    deadline_hit = wall_deadline != std::chrono::system_clock::time_point::max() &&
                   wall_deadline - std::chrono::system_clock::now() < kDeadlineSkew;
  };
  while (true) {
    if (!job->channel->Pop(&e, std::chrono::milliseconds(50))) {
      if (context->IsCancelled()) stop();
      continue;
    }
    if (e.final) break;
    if (write) {
      pb::GenerateResponse r;
      r.set_text(e.text);
      for (int t : e.token_ids) r.add_token_ids(t);
      if (!write(r)) stop();
    }
  }
  if (!e.status.ok() && (deadline_hit || std::chrono::system_clock::now() >= wall_deadline)) {
    return absl::DeadlineExceededError("the deadline passed");
  }
  if (!e.status.ok()) return e.status;
  return e;
}

grpc::Status InferenceService::StreamTurn(const char* method, grpc::ServerContext* context,
                                          std::shared_ptr<Job> job, const WriteFn& write) {
  const std::string id = job->request_id;
  auto e = RunJob(context, job, write);
  grpc::Status st = e.ok() ? grpc::Status::OK : ToGrpc(e.status());
  Record(method, st);
  if (!e.ok()) {
    spdlog::info("event=request method={} request_id={} session={} code={} message=\"{}\"",
                 method, id, job->session_id, CodeName(st), st.error_message());
    return st;
  }
  pb::GenerateResponse last;
  last.set_text(e->text);
  for (int t : e->token_ids) last.add_token_ids(t);
  FillUsage(e->usage, e->queue_seconds, last.mutable_usage());
  write(last);
  const auto& u = e->usage;
  if (watch_) watch_->Record(TelemetryRow(method, u));
  spdlog::info(
      "event=request method={} request_id={} session={} code=OK prompt_tokens={} "
      "visual_tokens={} generated_tokens={} kv_policy={} kv_bytes_kept={} kv_bytes_full={} "
      "ttft_ms={:.1f} total_ms={:.1f}",
      method, id, job->session_id, u.prompt_tokens, u.visual_tokens, u.generated_tokens,
      u.kv_policy, u.kv_bytes, u.kv_bytes_full, u.ttft_ms, u.total_ms);
  return st;
}

grpc::Status InferenceService::Generate(grpc::ServerContext* context,
                                        const pb::GenerateRequest* request,
                                        grpc::ServerWriter<pb::GenerateResponse>* writer) {
  return GenerateFor(
      "Generate", context, [request] { return request; },
      [writer](const pb::GenerateResponse& r) { return writer->Write(r); });
}

grpc::Status InferenceService::GenerateFor(
    const char* method, grpc::ServerContext* context,
    const std::function<absl::StatusOr<const pb::GenerateRequest*>()>& convert,
    const WriteFn& write) {
  auto fail = [&](const absl::Status& s) {
    grpc::Status st = ToGrpc(s);
    Record(method, st);
    spdlog::info("event=request method={} code={} message=\"{}\"", method, CodeName(st),
                 st.error_message());
    return st;
  };
  DrainGate::Call call(gate_);
  auto owner = Authorize(context, &call);
  if (!owner.ok()) return fail(owner.status());
  auto request = convert();
  if (!request.ok()) return fail(request.status());
  auto req = ToEngineRequest(**request, config_);
  if (!req.ok()) return fail(req.status());
  auto job = std::make_shared<Job>();
  job->request_id = NewRequestId();
  job->owner = *owner;
  job->request = std::move(*req);
  return StreamTurn(method, context, job, write);
}

absl::Status InferenceService::AuthorizeOnly(grpc::ServerContext* context) const {
  DrainGate::Call call(nullptr);
  return Authorize(context, &call).status();
}

namespace {

void FillSession(const SessionView& v, pb::SessionInfo* out) {
  out->set_session_id(v.id);
  out->set_kv_policy(v.policy);
  out->set_kv_bytes_kept(v.kv_bytes_kept);
  out->set_kv_bytes_full(v.kv_bytes_full);
  for (int64_t k : v.layer_budgets) out->add_layer_budgets(k);
  out->set_logical_length(v.logical_length);
  out->set_idle_seconds(v.idle_seconds);
  out->set_turns(v.turns);
  out->set_visual_tokens(v.visual_tokens);
}

}  // namespace

grpc::Status InferenceService::CreateSession(grpc::ServerContext* context,
                                             const pb::CreateSessionRequest* request,
                                             pb::SessionInfo* response) {
  auto done = [&](const absl::Status& s) {
    grpc::Status st = ToGrpc(s);
    Record("CreateSession", st);
    spdlog::info("event=request method=CreateSession session={} code={} message=\"{}\"",
                 response->session_id(), CodeName(st), st.error_message());
    return st;
  };
  DrainGate::Call call(gate_);
  auto owner = Authorize(context, &call);
  if (!owner.ok()) return done(owner.status());
  auto id = SessionIdOfCall(*context, request->session_id());
  if (!id.ok()) return done(id.status());
  pb::CreateSessionRequest with_id;
  const pb::CreateSessionRequest* r = request;
  if (*id != request->session_id()) {  // the id came in the metadata only
    with_id = *request;
    with_id.set_session_id(*id);
    r = &with_id;
  }
  auto job = NewCreateSessionJob(*r, config_);
  if (!job.ok()) return done(job.status());
  (*job)->request_id = NewRequestId();
  (*job)->owner = *owner;
  auto e = RunJob(context, *job, {});
  if (!e.ok()) return done(e.status());
  FillSession(e->session, response);
  return done(absl::OkStatus());
}

grpc::Status InferenceService::SessionGenerate(grpc::ServerContext* context,
                                               const pb::SessionGenerateRequest* request,
                                               grpc::ServerWriter<pb::GenerateResponse>* writer) {
  auto fail = [&](const absl::Status& s) {
    grpc::Status st = ToGrpc(s);
    Record("SessionGenerate", st);
    return st;
  };
  DrainGate::Call call(gate_);
  auto owner = Authorize(context, &call);
  if (!owner.ok()) return fail(owner.status());
  auto id = SessionIdOfCall(*context, request->session_id());
  if (!id.ok()) return fail(id.status());
  auto job = NewSessionTurnJob(*request, config_);
  if (!job.ok()) return fail(job.status());
  (*job)->session_id = *id;
  (*job)->request_id = NewRequestId();
  (*job)->owner = *owner;
  return StreamTurn("SessionGenerate", context, *job,
                    [writer](const pb::GenerateResponse& r) { return writer->Write(r); });
}

absl::StatusOr<StreamEvent> InferenceService::SessionCall(grpc::ServerContext* context,
                                                           Job::Kind kind,
                                                           const std::string& session_id) {
  DrainGate::Call call(gate_);
  auto owner = Authorize(context, &call);
  if (!owner.ok()) return owner.status();
  auto id = SessionIdOfCall(*context, session_id);
  if (!id.ok()) return id.status();
  auto job = std::make_shared<Job>();
  job->kind = kind;
  job->owner = *owner;
  job->session_id = *id;
  return RunJob(context, job, {});
}

grpc::Status InferenceService::GetSession(grpc::ServerContext* context,
                                          const pb::GetSessionRequest* request,
                                          pb::SessionInfo* response) {
  auto e = SessionCall(context, Job::Kind::kGetSession, request->session_id());
  grpc::Status st = e.ok() ? grpc::Status::OK : ToGrpc(e.status());
  Record("GetSession", st);
  if (e.ok()) FillSession(e->session, response);
  return st;
}

grpc::Status InferenceService::DeleteSession(grpc::ServerContext* context,
                                             const pb::DeleteSessionRequest* request,
                                             pb::DeleteSessionResponse*) {
  auto e = SessionCall(context, Job::Kind::kDeleteSession, request->session_id());
  grpc::Status st = e.ok() ? grpc::Status::OK : ToGrpc(e.status());
  Record("DeleteSession", st);
  spdlog::info("event=request method=DeleteSession session={} code={}", request->session_id(),
               CodeName(st));
  return st;
}

grpc::Status InferenceService::GetModelInfo(grpc::ServerContext* context,
                                            const pb::GetModelInfoRequest*,
                                            pb::ModelInfo* out) {
  DrainGate::Call call(gate_);
  if (auto owner = Authorize(context, &call); !owner.ok()) {
    Record("GetModelInfo", ToGrpc(owner.status()));
    return ToGrpc(owner.status());
  }
  const engine::Pipeline* pipeline = pipeline_.load();
  const auto& c = pipeline->model().config();
  const auto& o = pipeline->options();
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
  out->set_kv_cache_bytes(pipeline->pool().capacity_bytes());
  out->set_kv_page_tokens(o.kv_page_tokens);
  Record("GetModelInfo", grpc::Status::OK);
  return grpc::Status::OK;
}

}  // namespace vlc::server
