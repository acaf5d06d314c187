#include "server/data_quality_service.h"

#include <cmath>
#include <optional>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status.h"
#include "dq/io.h"
#include "dq/pipeline_service.h"
#include "server/auth.h"
#include "server/dq_history.h"
#include "server/inference_service.h"
#include "spdlog/spdlog.h"

namespace vlc::server {
namespace {

namespace pb = vlcache::v1;

absl::Status CheckPipelineName(const std::string& pipeline) {
  if (pipeline.empty()) return absl::InvalidArgumentError("pipeline is empty");
  return absl::OkStatus();
}

// The run's CSV as a table: INVALID_ARGUMENT naming `field`, the limit, or the line that does not
// parse (dq/io.h: "<field>:<line>: what is wrong").
absl::StatusOr<dq::Table> ParseRun(const pb::Run& run, const std::string& field,
                                   int64_t max_bytes) {
  if (static_cast<int64_t>(run.csv().size()) > max_bytes) {
    return absl::InvalidArgumentError(
        absl::StrCat(field, ".csv is ", run.csv().size(), " bytes, more than the limit of ",
                     max_bytes, " (--dq-max-run-bytes); split the run or raise the limit"));
  }
  if (run.csv().empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(field, ".csv is empty: send the run as CSV with a header row"));
  }
  const std::string source =
      run.key().empty() ? field + ".csv" : absl::StrCat(field, ".csv (run '", run.key(), "')");
  // proto3's 0 is "not given"; a negative or non-finite span is the caller's mistake.
  std::optional<double> span;
  if (run.span() != 0) span = run.span();
  VLC_RETURN_IF_ERROR(dq::CheckSpan(span, field));
  VLC_ASSIGN_OR_RETURN(dq::Table table, dq::ParseCsv(run.csv(), source));
  table.SetSpan(span);
  return table;
}

void FillRecorded(const dq::RecordedRun& r, pb::RecordedRun* out) {
  out->set_key(r.key);
  out->set_seq(r.seq);
  out->set_rows(r.rows);
}

void FillConstraint(const dq::Constraint& c, pb::Constraint* out) {
  out->set_metric(dq::MetricName(c.metric));
  out->set_transform(c.transform.ToString());
  out->set_bound(dq::BoundKindName(c.bound));
  out->set_side(dq::SideName(c.side));
  out->set_k(c.k);
  out->set_mean(c.mean);
  out->set_sd(c.sd);
  out->set_lo(c.lo);
  out->set_hi(c.hi);
  out->set_fpr(c.fpr);
  out->set_invariant(c.invariant);
}

void FillColumnProgram(const std::string& name, const dq::ColumnState& cs, pb::ColumnProgram* out) {
  out->set_column(name);
  if (!cs.window.empty()) out->set_type(dq::ColumnTypeName(cs.window.back().type()));
  out->set_history_runs(static_cast<int32_t>(cs.window.size()));
  out->set_note(cs.note);
  if (!cs.program) return;
  out->set_type(dq::ColumnTypeName(cs.program->type));
  out->set_history_runs(static_cast<int32_t>(cs.program->history_runs));
  out->set_delta(cs.program->delta);
  out->set_expected_fpr(cs.program->ExpectedFpr());
  for (const dq::Constraint& c : cs.program->constraints) {
    FillConstraint(c, out->add_constraints());
  }
}

std::string CodeName(const absl::Status& s) { return absl::StatusCodeToString(s.code()); }

}  // namespace

DataQualityService::DataQualityService(const ServerConfig& config, LockedStore* store,
                                       Metrics* metrics, std::vector<std::string> tokens,
                                       DrainGate* gate)
    : config_(config), metrics_(metrics), tokens_(std::move(tokens)), store_(store), gate_(gate) {}

absl::Status DataQualityService::Authorize(grpc::ServerContext* context,
                                           DrainGate::Call* call) const {
  if (absl::Status st = call->Admit(); !st.ok()) return st;
  return AuthorizeBearer(*context, tokens_).status();
}

grpc::Status DataQualityService::Done(const char* method, const std::string& pipeline,
                                      const absl::Status& status, const std::string& fields) {
  if (metrics_) metrics_->CountRequest(method, CodeName(status));
  if (status.ok()) {
    spdlog::info("event=request method={} pipeline=\"{}\" code=OK{}", method, pipeline, fields);
  } else {
    spdlog::info("event=request method={} pipeline=\"{}\" code={} message=\"{}\"", method, pipeline,
                 CodeName(status), std::string(status.message()));
  }
  return ToGrpc(status);
}

absl::Status DataQualityService::CheckPipelineKnown(const std::string& pipeline) {
  absl::StatusOr<std::vector<dq::RunInfo>> runs = store_->store.Runs(pipeline);
  if (absl::IsNotFound(runs.status())) {
    return absl::NotFoundError(absl::StrCat("no pipeline '", pipeline,
                                            "': AddRuns creates a pipeline with its first runs; "
                                            "ListPipelines lists the known ones"));
  }
  return runs.status();
}

// ---- AddRuns

absl::Status DataQualityService::DoAddRuns(const pb::AddRunsRequest& request,
                                           pb::AddRunsResponse* response) {
  VLC_RETURN_IF_ERROR(CheckPipelineName(request.pipeline()));
  if (request.runs_size() == 0) {
    return absl::InvalidArgumentError("runs is empty: send one or more");
  }
  std::vector<std::pair<std::string, dq::Table>> runs;
  for (int i = 0; i < request.runs_size(); ++i) {
    const std::string field = absl::StrCat("runs[", i, "]");
    if (request.runs(i).key().empty()) {
      return absl::InvalidArgumentError(absl::StrCat(field, ".key is empty: name the run"));
    }
    VLC_ASSIGN_OR_RETURN(dq::Table table,
                         ParseRun(request.runs(i), field, config_.dq_max_run_bytes));
    runs.emplace_back(request.runs(i).key(), std::move(table));
  }
  dq::LearnSettings settings;
  switch (request.relearn()) {
    case pb::RELEARN_UNSPECIFIED:
      break;
    case pb::RELEARN_EVERY:
      settings.relearn = dq::RelearnMode::kEvery;
      break;
    case pb::RELEARN_NEVER:
      settings.relearn = dq::RelearnMode::kNever;
      break;
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("relearn ", request.relearn(),
                       " is not a known mode: RELEARN_EVERY (1) or RELEARN_NEVER (2)"));
  }
  std::lock_guard<std::mutex> lock(store_->mu);
  VLC_ASSIGN_OR_RETURN(dq::AppendResult result,
                       dq::AppendAndLearn(store_->store, request.pipeline(), runs, settings));
  for (const dq::RecordedRun& r : result.runs) FillRecorded(r, response->add_runs());
  for (const dq::ColumnLearnResult& c : result.columns) {
    pb::ColumnSummary* out = response->add_columns();
    out->set_column(c.column);
    out->set_type(dq::ColumnTypeName(c.type));
    out->set_history_runs(static_cast<int32_t>(c.history_runs));
    out->set_learned(c.learned);
    out->set_constraints(static_cast<int32_t>(c.constraints));
    out->set_expected_fpr(c.expected_fpr);
    out->set_issues_covered(static_cast<int32_t>(c.issues_covered));
    out->set_issues_total(static_cast<int32_t>(c.issues_total));
    out->set_note(c.note);
    out->set_kept(c.kept);
  }
  return absl::OkStatus();
}

grpc::Status DataQualityService::AddRuns(grpc::ServerContext* context,
                                         const pb::AddRunsRequest* request,
                                         pb::AddRunsResponse* response) {
  DrainGate::Call call(gate_);
  absl::Status st = Authorize(context, &call);
  if (st.ok()) st = DoAddRuns(*request, response);
  int learned = 0;
  for (const auto& c : response->columns()) learned += c.learned() ? 1 : 0;
  return Done("AddRuns", request->pipeline(), st,
              absl::StrCat(" runs=", response->runs_size(), " last_seq=",
                           response->runs_size() ? response->runs().rbegin()->seq() : 0,
                           " columns=", response->columns_size(), " learned=", learned));
}

// ---- Validate

absl::Status DataQualityService::DoValidate(const pb::ValidateRequest& request,
                                            pb::ValidateResponse* response) {
  VLC_RETURN_IF_ERROR(CheckPipelineName(request.pipeline()));
  if (request.append() && request.run().key().empty()) {
    return absl::InvalidArgumentError("run.key is empty: append needs the run's name");
  }
  VLC_ASSIGN_OR_RETURN(dq::Table table, ParseRun(request.run(), "run", config_.dq_max_run_bytes));
  std::lock_guard<std::mutex> lock(store_->mu);
  VLC_RETURN_IF_ERROR(CheckPipelineKnown(request.pipeline()));
  if (request.append()) {
    // Refused before the check, not after it: a caller told ALREADY_EXISTS knows nothing happened.
    VLC_ASSIGN_OR_RETURN(std::vector<dq::RunInfo> recorded, store_->store.Runs(request.pipeline()));
    for (const dq::RunInfo& r : recorded) {
      if (r.run_key == request.run().key()) {
        return absl::AlreadyExistsError(absl::StrCat("pipeline '", request.pipeline(),
                                                     "' has a run '", r.run_key, "' already (run #",
                                                     r.seq, "); run keys are unique"));
      }
    }
  }
  VLC_ASSIGN_OR_RETURN(dq::RunValidation v,
                       dq::ValidateAgainstHistory(store_->store, request.pipeline(), table));
  if (v.checked == 0) {
    return absl::FailedPreconditionError(absl::StrCat(
        "pipeline '", request.pipeline(), "' has no learned program yet: a column needs ",
        dq::AvhOptions().min_history_runs, " runs of history (AddRuns); ",
        absl::StrJoin(v.not_checked, "; ")));
  }
  // Counted and logged as the server's own telemetry windows are, under the caller's pipeline.
  RecordVerdict(metrics_, request.pipeline(), request.run().key(), v.report);
  response->set_passed(v.report.passed);
  for (const dq::ColumnReport& c : v.report.columns) {
    pb::ColumnVerdict* out = response->add_columns();
    out->set_column(c.column);
    out->set_passed(c.passed);
    out->set_problem(c.problem);
    for (const dq::Violation& x : c.violations) {
      pb::Violation* pv = out->add_violations();
      pv->set_metric(dq::MetricName(x.metric));
      pv->set_transform(x.constraint.transform.ToString());
      pv->set_raw_value(x.raw_value);
      pv->set_value(x.value);
      pv->set_lo(x.constraint.lo);
      pv->set_hi(x.constraint.hi);
      pv->set_invariant(x.constraint.invariant);
      pv->set_message(x.message);
    }
  }
  for (const std::string& n : v.not_checked) response->add_not_checked(n);
  if (request.append()) {
    VLC_ASSIGN_OR_RETURN(dq::AppendResult appended,
                         dq::AppendAndLearn(store_->store, request.pipeline(),
                                            {{request.run().key(), std::move(table)}}, {}));
    FillRecorded(appended.runs.front(), response->mutable_appended());
  }
  return absl::OkStatus();
}

grpc::Status DataQualityService::Validate(grpc::ServerContext* context,
                                          const pb::ValidateRequest* request,
                                          pb::ValidateResponse* response) {
  DrainGate::Call call(gate_);
  absl::Status st = Authorize(context, &call);
  if (st.ok()) st = DoValidate(*request, response);
  std::vector<std::string> failed;
  for (const auto& c : response->columns()) {
    if (!c.passed()) failed.push_back(c.column());
  }
  return Done("Validate", request->pipeline(), st,
              absl::StrCat(" run=\"", request->run().key(),
                           "\" passed=", response->passed() ? "true" : "false",
                           " columns=", response->columns_size(), " failed_columns=\"",
                           absl::StrJoin(failed, ","),
                           "\" appended=", response->has_appended() ? "true" : "false"));
}

// ---- GetProgram

absl::Status DataQualityService::DoGetProgram(const pb::GetProgramRequest& request,
                                              pb::GetProgramResponse* response) {
  VLC_RETURN_IF_ERROR(CheckPipelineName(request.pipeline()));
  std::lock_guard<std::mutex> lock(store_->mu);
  VLC_RETURN_IF_ERROR(CheckPipelineKnown(request.pipeline()));
  VLC_ASSIGN_OR_RETURN(dq::PipelineState state,
                       dq::LoadPipelineState(store_->store, request.pipeline()));
  response->set_pipeline(request.pipeline());
  response->set_learned_at_seq(state.learned_at_seq);
  response->set_relearn(state.relearn.value_or(dq::RelearnMode::kEvery) == dq::RelearnMode::kNever
                            ? pb::RELEARN_NEVER
                            : pb::RELEARN_EVERY);
  if (!request.column().empty()) {
    auto it = state.columns.find(request.column());
    if (it == state.columns.end()) {
      std::vector<std::string> names;
      for (const auto& [name, cs] : state.columns) names.push_back(name);
      return absl::NotFoundError(absl::StrCat("pipeline '", request.pipeline(), "' has no column '",
                                              request.column(),
                                              "' (columns: ", absl::StrJoin(names, ", "), ")"));
    }
    FillColumnProgram(it->first, it->second, response->add_columns());
    return absl::OkStatus();
  }
  for (const auto& [name, cs] : state.columns) {
    FillColumnProgram(name, cs, response->add_columns());
  }
  return absl::OkStatus();
}

grpc::Status DataQualityService::GetProgram(grpc::ServerContext* context,
                                            const pb::GetProgramRequest* request,
                                            pb::GetProgramResponse* response) {
  DrainGate::Call call(gate_);
  absl::Status st = Authorize(context, &call);
  if (st.ok()) st = DoGetProgram(*request, response);
  return Done(
      "GetProgram", request->pipeline(), st,
      absl::StrCat(" column=\"", request->column(), "\" columns=", response->columns_size()));
}

// ---- ListPipelines

absl::Status DataQualityService::DoListPipelines(pb::ListPipelinesResponse* response) {
  std::lock_guard<std::mutex> lock(store_->mu);
  VLC_ASSIGN_OR_RETURN(std::vector<std::string> names, store_->store.Pipelines());
  for (const std::string& name : names) {
    VLC_ASSIGN_OR_RETURN(std::vector<dq::RunInfo> runs, store_->store.Runs(name));
    pb::PipelineInfo* out = response->add_pipelines();
    out->set_name(name);
    out->set_runs(static_cast<int64_t>(runs.size()));
    if (!runs.empty()) out->set_last_run_key(runs.back().run_key);
  }
  return absl::OkStatus();
}

grpc::Status DataQualityService::ListPipelines(grpc::ServerContext* context,
                                               const pb::ListPipelinesRequest*,
                                               pb::ListPipelinesResponse* response) {
  DrainGate::Call call(gate_);
  absl::Status st = Authorize(context, &call);
  if (st.ok()) st = DoListPipelines(response);
  return Done("ListPipelines", "", st, absl::StrCat(" pipelines=", response->pipelines_size()));
}

}  // namespace vlc::server
