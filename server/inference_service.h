// The gRPC face of the serving core (engine/scheduler.h): conversion between the proto API and
// the engine's types (the checks are engine::ValidateRequest's, answered at once, before any
// work), streaming, deadlines and cancellation, optional bearer-token auth, and one log line per
// request. Nothing below server/ knows gRPC.
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "engine/scheduler.h"
#include "server/config.h"
#include "server/drain_gate.h"
#include "server/metrics.h"
#include "server/telemetry_watch.h"
#include "vlcache/v1/inference.grpc.pb.h"

namespace vlc::server {

// The gRPC metadata that names a call's session, so that a proxy routes on it without reading
// the body (the project's clients set it on every session call, and on CreateSession with the id
// they choose). A call whose metadata and body name different sessions is INVALID_ARGUMENT; a
// call with the metadata alone uses it.
inline constexpr char kSessionIdMetadata[] = "x-session-id";

using engine::Job;
using engine::SessionView;
using engine::StreamEvent;

// gRPC code name of an absl status code (they are the same numbers).
grpc::Status ToGrpc(const absl::Status& s);

// The engine request for an API request, with the server's defaults for unset fields; the
// checks that need no media decoding happen here (INVALID_ARGUMENT naming the field).
absl::StatusOr<engine::GenerateRequest> ToEngineRequest(const vlcache::v1::GenerateRequest& req,
                                                        const ServerConfig& config);

// The scheduler's jobs for session requests, with the same checks and defaults (the caller sets
// owner and request id). The service submits them to its scheduler; so can a caller that runs the
// engine in its own process.
absl::StatusOr<std::shared_ptr<Job>> NewCreateSessionJob(
    const vlcache::v1::CreateSessionRequest& req, const ServerConfig& config);
absl::StatusOr<std::shared_ptr<Job>> NewSessionTurnJob(
    const vlcache::v1::SessionGenerateRequest& req, const ServerConfig& config);

class InferenceService final : public vlcache::v1::Inference::Service {
 public:
  // The service answers UNAVAILABLE until Attach: the server listens (and reports NOT_SERVING on
  // grpc.health.v1) while the model is still loading, so orchestrators can tell "starting" from
  // "down".
  // `watch` (may be null: no --dq-db) receives a telemetry row for every successful Generate and
  // SessionGenerate.
  // `gate` (may be null: never drains) admits calls until the server drains.
  InferenceService(const ServerConfig& config, Metrics* metrics, std::vector<std::string> tokens,
                   TelemetryWatch* watch = nullptr, DrainGate* gate = nullptr);
  // The loaded pipeline and its running scheduler; from now on requests are served.
  void Attach(const engine::Pipeline* pipeline, engine::Scheduler* scheduler);
  bool ready() const { return pipeline_.load() != nullptr; }

  grpc::Status Generate(grpc::ServerContext* context, const vlcache::v1::GenerateRequest* request,
                        grpc::ServerWriter<vlcache::v1::GenerateResponse>* writer) override;
  grpc::Status GetModelInfo(grpc::ServerContext* context,
                            const vlcache::v1::GetModelInfoRequest* request,
                            vlcache::v1::ModelInfo* response) override;
  grpc::Status CreateSession(grpc::ServerContext* context,
                             const vlcache::v1::CreateSessionRequest* request,
                             vlcache::v1::SessionInfo* response) override;
  grpc::Status SessionGenerate(grpc::ServerContext* context,
                               const vlcache::v1::SessionGenerateRequest* request,
                               grpc::ServerWriter<vlcache::v1::GenerateResponse>* writer) override;
  grpc::Status GetSession(grpc::ServerContext* context,
                          const vlcache::v1::GetSessionRequest* request,
                          vlcache::v1::SessionInfo* response) override;
  grpc::Status DeleteSession(grpc::ServerContext* context,
                             const vlcache::v1::DeleteSessionRequest* request,
                             vlcache::v1::DeleteSessionResponse* response) override;

  // Receives each message of a streamed answer (deltas, then the last with the usage); false when
  // the client is gone (the request is then cancelled).
  using WriteFn = std::function<bool(const vlcache::v1::GenerateResponse&)>;
  // One generation for another front end of the service (the Open Inference Protocol), on the
  // same path as Generate: the drain gate and authorization, then `convert` (the front end's
  // request as ours, valid until the call returns; its error is the call's), validation,
  // admission, deadline, cancellation, the metrics (counted under `method`) and the log line.
  // Generate itself runs through it.
  grpc::Status GenerateFor(
      const char* method, grpc::ServerContext* context,
      const std::function<absl::StatusOr<const vlcache::v1::GenerateRequest*>()>& convert,
      const WriteFn& write);
  // UNAVAILABLE while the model loads, UNAUTHENTICATED without a valid token, else OK (not
  // counted in flight: for calls that only read the server's state).
  absl::Status AuthorizeOnly(grpc::ServerContext* context) const;
  const engine::Pipeline* pipeline() const { return pipeline_.load(); }

 private:
  // OK with the caller's identity (its token; "" when auth is off), counting `call` in flight;
  // UNAVAILABLE while the model loads or the server drains; UNAUTHENTICATED.
  absl::StatusOr<std::string> Authorize(grpc::ServerContext* context, DrainGate::Call* call) const;
  // Submits `job` and relays its events: deltas to `write` (when given), the final one returned.
  absl::StatusOr<StreamEvent> RunJob(grpc::ServerContext* context, std::shared_ptr<Job> job,
                                     const WriteFn& write);
  // GetSession / DeleteSession: authorize, then one engine-thread job without media.
  absl::StatusOr<StreamEvent> SessionCall(grpc::ServerContext* context, Job::Kind kind,
                                          const std::string& session_id);
  grpc::Status StreamTurn(const char* method, grpc::ServerContext* context,
                          std::shared_ptr<Job> job, const WriteFn& write);
  void Record(const std::string& method, const grpc::Status& status);
  // OK once attached, else UNAVAILABLE saying the model is still loading.
  absl::Status Ready() const;

  const ServerConfig& config_;
  std::atomic<const engine::Pipeline*> pipeline_{nullptr};
  std::atomic<engine::Scheduler*> scheduler_{nullptr};
  Metrics* metrics_;
  std::vector<std::string> tokens_;
  TelemetryWatch* watch_;
  DrainGate* gate_;
};

}  // namespace vlc::server
