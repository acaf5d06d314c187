#include "dq/pipeline_service.h"

#include <algorithm>
#include <set>

#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "dq/metrics.h"

namespace vlc::dq {
namespace {

nlohmann::json ColumnToJson(const Column& c) {
  nlohmann::json values = nlohmann::json::array();
  if (c.is_numeric()) {
    for (const auto& v : c.numeric()) values.push_back(v ? nlohmann::json(*v) : nlohmann::json());
  } else {
    for (const auto& v : c.strings()) values.push_back(v ? nlohmann::json(*v) : nlohmann::json());
  }
  nlohmann::json j = {{"type", ColumnTypeName(c.type())}, {"values", values}};
  if (c.span()) j["span"] = *c.span();  // absent: the run gave none
  return j;
}

absl::StatusOr<Column> ColumnFromJson(const std::string& name, const nlohmann::json& j) {
  if (!j.is_object() || !j.contains("type") || !j.contains("values") || !j["values"].is_array()) {
    return absl::DataLossError(absl::StrCat("stored window of column '", name, "' is malformed"));
  }
  VLC_ASSIGN_OR_RETURN(ColumnType type, ParseColumnType(j["type"].get<std::string>()));
  std::optional<double> span;
  if (j.contains("span")) {
    if (!j["span"].is_number()) {
      return absl::DataLossError(absl::StrCat("stored span of column '", name, "' is malformed"));
    }
    span = j["span"].get<double>();
  }
  if (type == ColumnType::kNumeric) {
    Column::NumericValues v;
    for (const auto& x : j["values"]) {
      v.push_back(x.is_number() ? std::optional<double>(x.get<double>()) : std::nullopt);
    }
    return Column::Numeric(name, std::move(v)).WithSpan(span);
  }
  Column::StringValues v;
  for (const auto& x : j["values"]) {
    v.push_back(x.is_string() ? std::optional<std::string>(x.get<std::string>()) : std::nullopt);
  }
  return Column::Categorical(name, std::move(v)).WithSpan(span);
}

nlohmann::json StateToJson(const ColumnState& s, size_t history, double delta,
                           RelearnMode relearn) {
  nlohmann::json window = nlohmann::json::array();
  for (size_t i = 0; i < s.window.size(); ++i) {
    window.push_back({{"run_key", s.run_keys[i]}, {"column", ColumnToJson(s.window[i])}});
  }
  return {{"format", kColumnStateFormat},
          {"history", history},
          {"delta", delta},
          {"relearn", RelearnModeName(relearn)},
          {"window", window},
          {"avh", s.program ? ToJson(*s.program) : nlohmann::json()},
          {"note", s.note}};
}

// Everything AppendAndLearn can refuse is refused here, before the first write: a run recorded
// and its column states not (or half a batch recorded) would leave the history inconsistent.
absl::Status CheckRunKeys(Store& store, const std::string& pipeline,
                          const std::vector<std::pair<std::string, Table>>& runs) {
  if (runs.empty()) return absl::InvalidArgumentError("no runs to add");
  std::set<std::string> recorded;
  absl::StatusOr<std::vector<RunInfo>> existing = store.Runs(pipeline);
  if (existing.ok()) {
    for (const RunInfo& r : *existing) recorded.insert(r.run_key);
  } else if (!absl::IsNotFound(existing.status())) {
    return existing.status();
  }
  std::set<std::string> batch;
  for (const auto& [key, table] : runs) {
    if (key.empty()) return absl::InvalidArgumentError("a run key is empty");
    if (recorded.count(key)) {
      return absl::AlreadyExistsError(absl::StrCat("recording run '", key, "': pipeline '",
                                                   pipeline, "' has a run '", key,
                                                   "' already; run keys are unique"));
    }
    if (!batch.insert(key).second) {
      return absl::AlreadyExistsError(
          absl::StrCat("two runs are named '", key, "'; run keys are unique"));
    }
    VLC_RETURN_IF_ERROR(CheckSpan(table.span(), absl::StrCat("run '", key, "'")));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<RelearnMode> ParseRelearnMode(std::string_view name) {
  if (name == "every") return RelearnMode::kEvery;
  if (name == "never") return RelearnMode::kNever;
  return absl::InvalidArgumentError(absl::StrCat("relearn mode '", std::string(name),
                                                 "' is neither 'every' nor 'never'"));
}

const char* RelearnModeName(RelearnMode mode) {
  return mode == RelearnMode::kNever ? "never" : "every";
}

absl::StatusOr<PipelineState> LoadPipelineState(Store& store, const std::string& pipeline) {
  PipelineState state;
  absl::StatusOr<std::vector<std::string>> names = store.Columns(pipeline);
  if (absl::IsNotFound(names.status())) return state;  // a new pipeline
  if (!names.ok()) return names.status();
  for (const std::string& name : *names) {
    absl::StatusOr<StoredProgram> stored = store.GetProgram(pipeline, name);
    if (absl::IsNotFound(stored.status())) continue;
    if (!stored.ok()) return stored.status();
    const nlohmann::json& j = stored->program;
    if (!j.is_object() || j.value("format", "") != kColumnStateFormat) {
      return absl::FailedPreconditionError(
          absl::StrCat("the stored program of column '", name,
                       "' was not written by vlcache-dq learn (format ", kColumnStateFormat, ")"));
    }
    ColumnState cs;
    for (const auto& w : j["window"]) {
      VLC_ASSIGN_OR_RETURN(Column c, ColumnFromJson(name, w["column"]));
      cs.run_keys.push_back(w.value("run_key", ""));
      cs.window.push_back(std::move(c));
    }
    if (!j["avh"].is_null()) {
      VLC_ASSIGN_OR_RETURN(ColumnProgram p, ColumnProgramFromJson(j["avh"]));
      cs.program = std::move(p);
    }
    cs.note = j.value("note", "");
    state.history = j.value("history", size_t{30});
    state.delta = j.value("delta", 0.01);
    // Records written before the setting existed were re-learned on every append.
    VLC_ASSIGN_OR_RETURN(state.relearn, ParseRelearnMode(j.value("relearn", "every")));
    state.learned_at_seq = std::max(state.learned_at_seq, stored->learned_at_seq);
    state.columns[name] = std::move(cs);
  }
  return state;
}

absl::StatusOr<AppendResult> AppendAndLearn(Store& store, const std::string& pipeline,
                                            const std::vector<std::pair<std::string, Table>>& runs,
                                            const LearnSettings& settings) {
  VLC_RETURN_IF_ERROR(CheckRunKeys(store, pipeline, runs));
  VLC_ASSIGN_OR_RETURN(PipelineState state, LoadPipelineState(store, pipeline));
  const size_t history = settings.history.value_or(state.history.value_or(30));
  const double delta = settings.delta.value_or(state.delta.value_or(0.01));
  const RelearnMode relearn =
      settings.relearn.value_or(state.relearn.value_or(RelearnMode::kEvery));
  AvhOptions options;
  options.delta = delta;
  if (history < options.min_history_runs) {
    return absl::InvalidArgumentError(absl::StrCat("--history ", history,
                                                   " is too short: AVH needs at least ",
                                                   options.min_history_runs, " runs"));
  }
  AppendResult result;
  std::string& summary = result.summary;
  int64_t last_seq = 0;
  for (const auto& [key, table] : runs) {
    RunMetrics metrics;
    for (const Column& c : table.columns()) {
      ColumnState& cs = state.columns[c.name()];
      // A type change starts the column's history afresh: metrics of the old type say nothing
      // about the new one.
      if (!cs.window.empty() && cs.window.back().type() != c.type()) {
        cs = ColumnState();
        summary += absl::StrCat("column '", c.name(), "' changed type in run ", key,
                                ": its history starts again\n");
      }
      const Column* prev = cs.window.empty() ? nullptr : &cs.window.back();
      VLC_ASSIGN_OR_RETURN(metrics[c.name()], ComputeMetrics(c, prev));
    }
    for (auto& [name, cs] : state.columns) {
      // A column missing from a run has a gap in its history; AVH needs consecutive runs.
      if (!table.Find(name) && !cs.window.empty()) {
        cs = ColumnState();
        summary += absl::StrCat("column '", name, "' is missing from run ", key,
                                ": its history starts again\n");
      }
    }
    absl::StatusOr<int64_t> seq =
        store.AddRun(pipeline, key, static_cast<int64_t>(table.num_rows()), metrics);
    if (!seq.ok()) {
      return absl::Status(seq.status().code(),
                          absl::StrCat("recording run '", key, "': ", seq.status().message()));
    }
    last_seq = *seq;
    for (const Column& c : table.columns()) {
      ColumnState& cs = state.columns[c.name()];
      cs.window.push_back(c);
      cs.run_keys.push_back(key);
      while (cs.window.size() > history) {
        cs.window.erase(cs.window.begin());
        cs.run_keys.erase(cs.run_keys.begin());
      }
    }
    result.runs.push_back({key, *seq, static_cast<int64_t>(table.num_rows())});
    summary += absl::StrCat("recorded run ", key, " (", table.num_rows(), " rows) as run #", *seq,
                            " of pipeline '", pipeline, "'\n");
  }
  const Table& latest = runs.back().second;
  for (auto& [name, cs] : state.columns) {
    ColumnLearnResult out;
    out.column = name;
    out.history_runs = cs.window.size();
    if (!cs.window.empty()) out.type = cs.window.back().type();
    if (relearn == RelearnMode::kNever && cs.program) {
      // Learned once already: the program stays, the window has moved on.
      const ColumnProgram& p = *cs.program;
      summary += absl::StrCat("column ", name, ": program kept (relearn never), ",
                              p.constraints.size(), " constraints learned from ", p.history_runs,
                              " runs\n");
      out.learned = true;
      out.kept = true;
      out.constraints = p.constraints.size();
      out.expected_fpr = p.ExpectedFpr();
      out.issues_covered = p.issues_covered;
      out.issues_total = p.issues_total;
      result.columns.push_back(std::move(out));
      VLC_RETURN_IF_ERROR(
          store.PutProgram(pipeline, name, last_seq, StateToJson(cs, history, delta, relearn)));
      continue;
    }
    cs.program.reset();
    cs.note.clear();
    if (cs.window.size() < options.min_history_runs) {
      cs.note = absl::StrCat("needs ", options.min_history_runs, " runs of history, has ",
                             cs.window.size());
      summary += absl::StrCat("column ", name, ": no program yet (", cs.note, ")\n");
    } else {
      std::vector<Column> others;
      for (const Column& c : latest.columns()) {
        if (c.name() != name) others.push_back(c);
      }
      absl::StatusOr<ColumnProgram> p = LearnColumnProgram(cs.window, others, options);
      if (!p.ok()) {
        cs.note = std::string(p.status().message());
        summary += absl::StrCat("column ", name, ": not learned: ", cs.note, "\n");
      } else {
        summary += absl::StrCat(
            "column ", name, ": ", p->constraints.size(), " constraints learned from ",
            cs.window.size(), " runs, expected FPR ", p->ExpectedFpr(), " <= delta ", delta,
            ", covering ", p->issues_covered, " of ", p->issues_total, " synthetic issues\n");
        out.learned = true;
        out.constraints = p->constraints.size();
        out.expected_fpr = p->ExpectedFpr();
        out.issues_covered = p->issues_covered;
        out.issues_total = p->issues_total;
        cs.program = std::move(*p);
      }
    }
    out.note = cs.note;
    result.columns.push_back(std::move(out));
    VLC_RETURN_IF_ERROR(
        store.PutProgram(pipeline, name, last_seq, StateToJson(cs, history, delta, relearn)));
  }
  return result;
}

absl::StatusOr<RunValidation> ValidateAgainstHistory(Store& store, const std::string& pipeline,
                                                     const Table& run) {
  VLC_RETURN_IF_ERROR(CheckSpan(run.span(), "the run"));
  VLC_ASSIGN_OR_RETURN(PipelineState state, LoadPipelineState(store, pipeline));
  RunValidation out;
  out.known_columns = state.columns.size();
  for (const auto& [name, cs] : state.columns) {
    if (!cs.program) {
      out.not_checked.push_back(absl::StrCat(name, ": no program (", cs.note, ")"));
      continue;
    }
    ++out.checked;
    const Column* col = run.Find(name);
    if (!col) {
      ColumnReport missing;
      missing.column = name;
      missing.passed = false;
      missing.problem = absl::StrCat("column '", name, "' is missing from the run");
      out.report.columns.push_back(std::move(missing));
      out.report.passed = false;
      continue;
    }
    VLC_ASSIGN_OR_RETURN(ColumnReport r, ValidateColumn(*cs.program, cs.window, *col));
    out.report.passed = out.report.passed && r.passed;
    out.report.columns.push_back(std::move(r));
  }
  for (const Column& c : run.columns()) {
    if (!state.columns.count(c.name())) {
      out.not_checked.push_back(absl::StrCat(c.name(), ": not in the pipeline's history"));
    }
  }
  return out;
}

}  // namespace vlc::dq
