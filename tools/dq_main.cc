// vlcache-dq: Auto-Validate-by-History from the command line (ALGORITHMS.md section 2).
//   vlcache-dq learn    --pipeline sales --db dq.sqlite runs/2024-01.csv runs/2024-02.csv ...
//   vlcache-dq validate --pipeline sales --db dq.sqlite runs/2024-08.csv [--json] [--append]
//   vlcache-dq eval     --table weather.csv --partition-by date --partition-format month
//                       --history 24 --delta 0.01 [--json out.json]
// Exit codes: 0 success (validate: the run passed), 1 validate found issues, 2 an error (bad
// option, unreadable file, no learned program): a scheduler can tell "bad data" from "broken job".
//
// What the database holds: every run's metric values (dq/store.h), and per column a state record
// stored as that column's program: the learned AVH program plus the column's values in the last
// --history runs. AVH learns from columns, not from metric series (the synthetic issues are made
// from the latest run's values) and validation compares with the previous run's values, so the
// window of raw values is what lets a later `learn` append runs and re-learn, and `validate` work,
// without the original files.
#include <sys/stat.h>

#include <CLI/CLI.hpp>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "dq/avh.h"
#include "dq/evaluate.h"
#include "dq/io.h"
#include "dq/store.h"

namespace vlc::dq {
namespace {

constexpr int kExitPass = 0;
constexpr int kExitIssues = 1;
constexpr int kExitError = 2;
constexpr const char* kStateFormat = "vlcache-dq-column-state/1";

bool EndsWith(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() &&
         s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

std::string Lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

absl::StatusOr<Table> ReadRunFile(const std::string& path) {
  const std::string lower = Lower(path);
  if (EndsWith(lower, ".csv")) return ReadCsvFile(path);
  if (EndsWith(lower, ".json")) return ReadJsonRecordsFile(path);
  return absl::InvalidArgumentError(absl::StrCat(
      path, ": unknown file type; a run is a .csv file (header row) or a .json array of records"));
}

// The run's name in the history: the file name without directory and extension.
std::string RunKey(const std::string& path) {
  std::string name =
      path.substr(path.find_last_of('/') == std::string::npos ? 0 : path.find_last_of('/') + 1);
  const size_t dot = name.find_last_of('.');
  return dot == std::string::npos || dot == 0 ? name : name.substr(0, dot);
}

bool FileExists(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0;
}

// ---- A column's state: its window of raw values and the program learned from it.

nlohmann::json ColumnToJson(const Column& c) {
  nlohmann::json values = nlohmann::json::array();
  if (c.is_numeric()) {
    for (const auto& v : c.numeric()) values.push_back(v ? nlohmann::json(*v) : nlohmann::json());
  } else {
    for (const auto& v : c.strings()) values.push_back(v ? nlohmann::json(*v) : nlohmann::json());
  }
  return {{"type", ColumnTypeName(c.type())}, {"values", values}};
}

absl::StatusOr<Column> ColumnFromJson(const std::string& name, const nlohmann::json& j) {
  if (!j.is_object() || !j.contains("type") || !j.contains("values") || !j["values"].is_array()) {
    return absl::DataLossError(absl::StrCat("stored window of column '", name, "' is malformed"));
  }
  VLC_ASSIGN_OR_RETURN(ColumnType type, ParseColumnType(j["type"].get<std::string>()));
  if (type == ColumnType::kNumeric) {
    Column::NumericValues v;
    for (const auto& x : j["values"]) {
      v.push_back(x.is_number() ? std::optional<double>(x.get<double>()) : std::nullopt);
    }
    return Column::Numeric(name, std::move(v));
  }
  Column::StringValues v;
  for (const auto& x : j["values"]) {
    v.push_back(x.is_string() ? std::optional<std::string>(x.get<std::string>()) : std::nullopt);
  }
  return Column::Categorical(name, std::move(v));
}

struct ColumnState {
  std::vector<std::string> run_keys;
  std::vector<Column> window;  // oldest first
  std::optional<ColumnProgram> program;
  std::string note;  // why there is no program
};

nlohmann::json StateToJson(const ColumnState& s, size_t history, double delta) {
  nlohmann::json window = nlohmann::json::array();
  for (size_t i = 0; i < s.window.size(); ++i) {
    window.push_back({{"run_key", s.run_keys[i]}, {"column", ColumnToJson(s.window[i])}});
  }
  return {{"format", kStateFormat},
          {"history", history},
          {"delta", delta},
          {"window", window},
          {"avh", s.program ? ToJson(*s.program) : nlohmann::json()},
          {"note", s.note}};
}

struct PipelineState {
  std::map<std::string, ColumnState> columns;
  std::optional<size_t> history;
  std::optional<double> delta;
  int64_t learned_at_seq = 0;
};

absl::StatusOr<PipelineState> LoadState(Store& store, const std::string& pipeline) {
  PipelineState state;
  absl::StatusOr<std::vector<std::string>> names = store.Columns(pipeline);
  if (absl::IsNotFound(names.status())) return state;  // a new pipeline
  if (!names.ok()) return names.status();
  for (const std::string& name : *names) {
    absl::StatusOr<StoredProgram> stored = store.GetProgram(pipeline, name);
    if (absl::IsNotFound(stored.status())) continue;
    if (!stored.ok()) return stored.status();
    const nlohmann::json& j = stored->program;
    if (!j.is_object() || j.value("format", "") != kStateFormat) {
      return absl::FailedPreconditionError(
          absl::StrCat("the stored program of column '", name,
                       "' was not written by vlcache-dq learn (format ", kStateFormat, ")"));
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
    state.learned_at_seq = std::max(state.learned_at_seq, stored->learned_at_seq);
    state.columns[name] = std::move(cs);
  }
  return state;
}

struct LearnSettings {
  std::optional<size_t> history;  // unset: the stored value, else 30
  std::optional<double> delta;    // unset: the stored value, else 0.01
};

// Appends the runs to the pipeline's history (metrics in the store, values in each column's
// window) and re-learns every column whose window is long enough. Returns a summary for people.
absl::StatusOr<std::string> AppendAndLearn(Store& store, const std::string& pipeline,
                                           const std::vector<std::pair<std::string, Table>>& runs,
                                           const LearnSettings& settings) {
  VLC_ASSIGN_OR_RETURN(PipelineState state, LoadState(store, pipeline));
  const size_t history = settings.history.value_or(state.history.value_or(30));
  const double delta = settings.delta.value_or(state.delta.value_or(0.01));
  AvhOptions options;
  options.delta = delta;
  if (history < options.min_history_runs) {
    return absl::InvalidArgumentError(absl::StrCat("--history ", history,
                                                   " is too short: AVH needs at least ",
                                                   options.min_history_runs, " runs"));
  }
  std::string summary;
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
    summary += absl::StrCat("recorded run ", key, " (", table.num_rows(), " rows) as run #", *seq,
                            " of pipeline '", pipeline, "'\n");
  }
  const Table& latest = runs.back().second;
  for (auto& [name, cs] : state.columns) {
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
        cs.program = std::move(*p);
      }
    }
    VLC_RETURN_IF_ERROR(
        store.PutProgram(pipeline, name, last_seq, StateToJson(cs, history, delta)));
  }
  return summary;
}

// ---- Subcommands.

int Fail(const std::string& cmd, const absl::Status& status) {
  std::cerr << "vlcache-dq " << cmd << ": error: " << status.message() << "\n";
  return kExitError;
}

int Learn(const std::string& pipeline, const std::string& db, const std::vector<std::string>& files,
          const LearnSettings& settings) {
  std::vector<std::pair<std::string, Table>> runs;
  for (const std::string& f : files) {
    absl::StatusOr<Table> t = ReadRunFile(f);
    if (!t.ok()) return Fail("learn", t.status());
    for (const auto& r : runs) {
      if (r.first == RunKey(f)) {
        return Fail("learn", absl::InvalidArgumentError(absl::StrCat(
                                 "two runs are named '", RunKey(f),
                                 "' (a run is named by its file name without the extension)")));
      }
    }
    runs.emplace_back(RunKey(f), std::move(*t));
  }
  absl::StatusOr<Store> store = Store::Open(db);
  if (!store.ok()) return Fail("learn", store.status());
  absl::StatusOr<std::string> summary = AppendAndLearn(*store, pipeline, runs, settings);
  if (!summary.ok()) return Fail("learn", summary.status());
  std::cout << *summary;
  return kExitPass;
}

nlohmann::json ReportToJson(const std::string& run, const std::string& pipeline,
                            const TableReport& report, const std::vector<std::string>& unchecked) {
  nlohmann::json columns = nlohmann::json::array();
  for (const ColumnReport& c : report.columns) {
    nlohmann::json violations = nlohmann::json::array();
    for (const Violation& v : c.violations) {
      auto num = [](double x) { return std::isfinite(x) ? nlohmann::json(x) : nlohmann::json(); };
      violations.push_back({{"metric", MetricName(v.metric)},
                            {"transform", v.constraint.transform.ToString()},
                            {"raw_value", num(v.raw_value)},
                            {"value", num(v.value)},
                            {"lo", num(v.constraint.lo)},
                            {"hi", num(v.constraint.hi)},
                            {"invariant", v.constraint.invariant},
                            {"message", v.message}});
    }
    columns.push_back({{"column", c.column},
                       {"passed", c.passed},
                       {"problem", c.problem},
                       {"violations", violations}});
  }
  return {{"run", run},
          {"pipeline", pipeline},
          {"passed", report.passed},
          {"columns", columns},
          {"not_checked", unchecked}};
}

int ValidateRun(const std::string& pipeline, const std::string& db, const std::string& file,
                bool json, bool append) {
  if (!FileExists(db)) {
    return Fail("validate", absl::NotFoundError(absl::StrCat(
                                "no database at ", db, ": run `vlcache-dq learn --pipeline ",
                                pipeline, " --db ", db, " RUN...` on past runs first")));
  }
  absl::StatusOr<Table> table = ReadRunFile(file);
  if (!table.ok()) return Fail("validate", table.status());
  absl::StatusOr<Store> store = Store::Open(db);
  if (!store.ok()) return Fail("validate", store.status());
  absl::StatusOr<PipelineState> state = LoadState(*store, pipeline);
  if (!state.ok()) return Fail("validate", state.status());

  TableReport report;
  std::vector<std::string> unchecked;
  size_t checked = 0;
  for (const auto& [name, cs] : state->columns) {
    if (!cs.program) {
      unchecked.push_back(absl::StrCat(name, ": no program (", cs.note, ")"));
      continue;
    }
    ++checked;
    const Column* col = table->Find(name);
    if (!col) {
      ColumnReport missing;
      missing.column = name;
      missing.passed = false;
      missing.problem = absl::StrCat("column '", name, "' is missing from the run");
      report.columns.push_back(std::move(missing));
      report.passed = false;
      continue;
    }
    absl::StatusOr<ColumnReport> r = ValidateColumn(*cs.program, cs.window, *col);
    if (!r.ok()) return Fail("validate", r.status());
    report.passed = report.passed && r->passed;
    report.columns.push_back(std::move(*r));
  }
  for (const Column& c : table->columns()) {
    if (!state->columns.count(c.name())) {
      unchecked.push_back(absl::StrCat(c.name(), ": not in the pipeline's history"));
    }
  }
  if (checked == 0) {
    return Fail("validate", absl::FailedPreconditionError(absl::StrCat(
                                "pipeline '", pipeline, "' in ", db, " has no learned program yet",
                                state->columns.empty() ? " (no runs recorded)" : "",
                                ": `vlcache-dq learn` needs at least 8 runs of history")));
  }

  if (json) {
    std::cout << ReportToJson(file, pipeline, report, unchecked).dump(2) << "\n";
  } else {
    std::cout << "validating " << file << " against pipeline '" << pipeline << "'\n";
    size_t failed = 0;
    for (const ColumnReport& c : report.columns) {
      if (c.passed) {
        std::cout << "  ok      " << c.column << "\n";
        continue;
      }
      ++failed;
      std::cout << "  FAILED  " << c.column << "\n";
      if (!c.problem.empty()) std::cout << "          " << c.problem << "\n";
      for (const Violation& v : c.violations) {
        std::cout << "          " << MetricName(v.metric) << ": " << v.message << "\n";
      }
    }
    for (const std::string& u : unchecked) std::cout << "  skipped " << u << "\n";
    std::cout << (report.passed ? "PASSED"
                                : absl::StrCat("ISSUES FOUND in ", failed, " of ",
                                               report.columns.size(), " columns"))
              << "\n";
  }
  if (append) {
    absl::StatusOr<std::string> summary =
        AppendAndLearn(*store, pipeline, {{RunKey(file), std::move(*table)}}, {});
    if (!summary.ok()) return Fail("validate --append", summary.status());
    std::cerr << *summary;
  }
  return report.passed ? kExitPass : kExitIssues;
}

int Eval(const std::string& table_path, const std::string& partition_by, const std::string& period,
         const EvalOptions& options, const std::string& json_path) {
  absl::StatusOr<Table> table = ReadRunFile(table_path);
  if (!table.ok()) return Fail("eval", table.status());
  absl::StatusOr<std::vector<PipelineRun>> split = SplitIntoRuns(*table, partition_by, period);
  if (!split.ok()) return Fail("eval", split.status());
  // The partition column is the run's key, not data: validating it would only test the calendar.
  std::vector<Table> runs;
  for (const PipelineRun& r : *split) {
    std::vector<Column> cols;
    for (const Column& c : r.table.columns()) {
      if (c.name() != partition_by) cols.push_back(c);
    }
    absl::StatusOr<Table> t = Table::Make(std::move(cols));
    if (!t.ok()) return Fail("eval", t.status());
    runs.push_back(std::move(*t));
  }
  absl::StatusOr<EvalResult> result = EvaluatePipeline(runs, options);
  if (!result.ok()) return Fail("eval", result.status());
  std::cout << FormatEvalTable(*result);
  if (!json_path.empty()) {
    std::ofstream out(json_path);
    out << ToJson(*result).dump(2) << "\n";
    out.close();
    if (!out) {
      return Fail("eval", absl::PermissionDeniedError(
                              absl::StrCat("cannot write the JSON report to ", json_path)));
    }
  }
  return kExitPass;
}

}  // namespace
}  // namespace vlc::dq

int main(int argc, char** argv) {
  using namespace vlc::dq;
  CLI::App app{
      "vlcache-dq: Auto-Validate-by-History data-quality checks for recurring pipelines.\n"
      "Exit codes: 0 ok / run passed, 1 validate found issues, 2 error."};
  app.require_subcommand(1);

  std::string pipeline, db;
  std::vector<std::string> learn_files;
  size_t history = 30;
  double delta = 0.01;
  auto* learn = app.add_subcommand(
      "learn", "Record runs (in time order) in the history and learn each column's program");
  learn->add_option("--pipeline", pipeline, "Pipeline name (one database may hold several)")
      ->required();
  learn->add_option("--db", db, "SQLite history file; created when missing")->required();
  auto* learn_history = learn->add_option(
      "--history", history,
      "Runs of history a program is learned from (the latest ones); default 30, or the value "
      "stored by an earlier learn");
  learn_history->check(CLI::Range(size_t{8}, size_t{100000}));
  auto* learn_delta = learn->add_option(
      "--delta", delta,
      "FPR budget of each column's program; default 0.01, or the value stored by an earlier learn");
  learn_delta->check(CLI::Range(1e-9, 1.0));
  learn
      ->add_option("runs", learn_files,
                   "Run files, oldest first: .csv (header row) or .json (array of records); a "
                   "run is named by its file name without the extension")
      ->required();

  std::string validate_file;
  bool json = false, append = false;
  auto* validate = app.add_subcommand(
      "validate",
      "Check one new run against the learned programs (exit 0 pass, 1 issues, 2 error)");
  validate->add_option("--pipeline", pipeline, "Pipeline name")->required();
  validate->add_option("--db", db, "SQLite history file written by learn")->required();
  validate->add_option("run", validate_file, "The run to check: .csv or .json")->required();
  validate->add_flag("--json", json, "Print the report as JSON");
  validate->add_flag("--append", append,
                     "After checking, add the run to the history and re-learn (by default the "
                     "validated run is not added)");

  std::string table_path, partition_by, period = "day", json_path;
  EvalOptions eval_options;
  auto* eval = app.add_subcommand(
      "eval", "Evaluate AVH and the baselines on one table split into runs (issue 6 protocol)");
  eval->add_option("--table", table_path, "The whole table: .csv or .json")->required();
  eval->add_option("--partition-by", partition_by,
                   "Date column (YYYY-MM-DD or YYYY/MM/DD...) that splits the table into runs")
      ->required();
  eval->add_option("--partition-format", period, "Run period")
      ->check(CLI::IsMember({"day", "month"}))
      ->capture_default_str();
  eval->add_option("--history", eval_options.history_runs,
                   "Learn from the first N runs; validate every later run")
      ->check(CLI::Range(size_t{8}, size_t{100000}))
      ->capture_default_str();
  eval->add_option("--delta", eval_options.delta, "AVH's FPR budget per column")
      ->check(CLI::Range(1e-9, 1.0))
      ->capture_default_str();
  eval->add_option("--json", json_path,
                   "Also write the results (methods, realistic issues, counts) as JSON here");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // Help is exit 0; every other parse error is a usage error, exit 2 like any other error.
    return app.exit(e) == 0 ? 0 : 2;
  }
  if (learn->parsed()) {
    LearnSettings settings;
    if (learn_history->count() > 0) settings.history = history;
    if (learn_delta->count() > 0) settings.delta = delta;
    return Learn(pipeline, db, learn_files, settings);
  }
  if (validate->parsed()) return ValidateRun(pipeline, db, validate_file, json, append);
  return Eval(table_path, partition_by, period, eval_options, json_path);
}
