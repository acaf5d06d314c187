// The gRPC face of dq/ (proto/vlcache/v1/data_quality.proto): Auto-Validate-by-History for the
// users' recurring pipelines, over one SQLite history (dq/store.h) kept the way the vlcache-dq
// command line keeps it (dq/pipeline_service.h), so either can read what the other wrote.
//
// Requests are checked before any work (sizes, names, CSV: INVALID_ARGUMENT naming the field, and
// the line for bad CSV), then answered with gRPC codes: NOT_FOUND for an unknown pipeline or
// column, ALREADY_EXISTS for a run key the pipeline has, FAILED_PRECONDITION for a pipeline
// without a learned program yet. Optional bearer-token auth as for Inference; every call is
// counted in vlcache_requests_total{method} and logged on one line.
//
// Threads: gRPC calls the handlers on many threads, but a Store is one SQLite connection, to be
// used by one thread at a time. CSV parsing runs in parallel; every use of the store (reads,
// appends, learning, validating) holds the LockedStore's mutex (server/dq_history.h), which the
// telemetry watch (server/telemetry_watch.h) holds too, so calls on the store run one after
// another. Learning is the slow part (seconds for a wide table), which bounds this service's
// throughput; it never blocks Inference, which does not touch the store.
//
// A Validate that reaches a verdict is also counted in vlcache_dq_checks_total and
// vlcache_dq_violations_total and its violations logged, under the caller's pipeline name.
//
// The service does not need the model: main.cc registers it with Inference and it answers as
// soon as the ports are open, while the model still loads.
#pragma once

#include <string>
#include <vector>

#include "server/config.h"
#include "server/dq_history.h"
#include "server/drain_gate.h"
#include "server/metrics.h"
#include "vlcache/v1/data_quality.grpc.pb.h"

namespace vlc::server {

class DataQualityService final : public vlcache::v1::DataQuality::Service {
 public:
  // `store` is the opened --dq-db file (not owned; shared with the telemetry watch); `tokens` the
  // accepted bearer tokens (none: no auth); `gate` (may be null) admits calls until the server
  // drains.
  DataQualityService(const ServerConfig& config, LockedStore* store, Metrics* metrics,
                     std::vector<std::string> tokens, DrainGate* gate = nullptr);

  grpc::Status AddRuns(grpc::ServerContext* context, const vlcache::v1::AddRunsRequest* request,
                       vlcache::v1::AddRunsResponse* response) override;
  grpc::Status Validate(grpc::ServerContext* context, const vlcache::v1::ValidateRequest* request,
                        vlcache::v1::ValidateResponse* response) override;
  grpc::Status GetProgram(grpc::ServerContext* context,
                          const vlcache::v1::GetProgramRequest* request,
                          vlcache::v1::GetProgramResponse* response) override;
  grpc::Status ListPipelines(grpc::ServerContext* context,
                             const vlcache::v1::ListPipelinesRequest* request,
                             vlcache::v1::ListPipelinesResponse* response) override;

 private:
  absl::Status Authorize(grpc::ServerContext* context, DrainGate::Call* call) const;
  // Counts and logs the call (one line: method, pipeline, code, `fields`, the error message).
  grpc::Status Done(const char* method, const std::string& pipeline, const absl::Status& status,
                    const std::string& fields = "");
  // OK for a pipeline the store has, else NOT_FOUND (caller holds store_->mu).
  absl::Status CheckPipelineKnown(const std::string& pipeline);

  absl::Status DoAddRuns(const vlcache::v1::AddRunsRequest& request,
                         vlcache::v1::AddRunsResponse* response);
  absl::Status DoValidate(const vlcache::v1::ValidateRequest& request,
                          vlcache::v1::ValidateResponse* response);
  absl::Status DoGetProgram(const vlcache::v1::GetProgramRequest& request,
                            vlcache::v1::GetProgramResponse* response);
  absl::Status DoListPipelines(vlcache::v1::ListPipelinesResponse* response);

  const ServerConfig& config_;
  Metrics* metrics_;
  std::vector<std::string> tokens_;
  LockedStore* store_;
  DrainGate* gate_;
};

}  // namespace vlc::server
