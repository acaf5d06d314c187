// vlcache-dq: Auto-Validate-by-History from the command line (docs/METHODS.md).
//   vlcache-dq learn    --pipeline sales --db dq.sqlite runs/2024-01.csv runs/2024-02.csv ...
//   vlcache-dq validate --pipeline sales --db dq.sqlite runs/2024-08.csv [--json] [--append]
//   vlcache-dq eval     --table weather.csv --partition-by date --partition-format month
//                       --history 24 --delta 0.01 [--json out.json]
// Exit codes: 0 success (validate: the run passed), 1 validate found issues, 2 an error (bad
// option, unreadable file, no learned program): a scheduler can tell "bad data" from "broken job".
//
// What the database holds, and how runs are appended and validated: dq/pipeline_service.h (the
// server's DataQuality service keeps its pipelines the same way).
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
#include "dq/pipeline_service.h"
#include "dq/store.h"

namespace vlc::dq {
namespace {

constexpr int kExitPass = 0;
constexpr int kExitIssues = 1;
constexpr int kExitError = 2;

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

// ---- Subcommands.

int Fail(const std::string& cmd, const absl::Status& status) {
  std::cerr << "vlcache-dq " << cmd << ": error: " << status.message() << "\n";
  return kExitError;
}

int Learn(const std::string& pipeline, const std::string& db, const std::vector<std::string>& files,
          const LearnSettings& settings, std::optional<double> span) {
  std::vector<std::pair<std::string, Table>> runs;
  for (const std::string& f : files) {
    absl::StatusOr<Table> t = ReadRunFile(f);
    if (!t.ok()) return Fail("learn", t.status());
    t->SetSpan(span);
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
  absl::StatusOr<AppendResult> learned = AppendAndLearn(*store, pipeline, runs, settings);
  if (!learned.ok()) return Fail("learn", learned.status());
  std::cout << learned->summary;
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
                bool json, bool append, std::optional<double> span) {
  if (!FileExists(db)) {
    return Fail("validate", absl::NotFoundError(absl::StrCat(
                                "no database at ", db, ": run `vlcache-dq learn --pipeline ",
                                pipeline, " --db ", db, " RUN...` on past runs first")));
  }
  absl::StatusOr<Table> table = ReadRunFile(file);
  if (!table.ok()) return Fail("validate", table.status());
  table->SetSpan(span);
  absl::StatusOr<Store> store = Store::Open(db);
  if (!store.ok()) return Fail("validate", store.status());
  absl::StatusOr<RunValidation> checked = ValidateAgainstHistory(*store, pipeline, *table);
  if (!checked.ok()) return Fail("validate", checked.status());
  const TableReport& report = checked->report;
  const std::vector<std::string>& unchecked = checked->not_checked;
  if (checked->checked == 0) {
    return Fail("validate", absl::FailedPreconditionError(absl::StrCat(
                                "pipeline '", pipeline, "' in ", db, " has no learned program yet",
                                checked->known_columns == 0 ? " (no runs recorded)" : "",
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
    absl::StatusOr<AppendResult> learned =
        AppendAndLearn(*store, pipeline, {{RunKey(file), std::move(*table)}}, {});
    if (!learned.ok()) return Fail("validate --append", learned.status());
    std::cerr << learned->summary;
  }
  return report.passed ? kExitPass : kExitIssues;
}

int Eval(const std::string& table_path, const std::string& partition_by, const std::string& period,
         bool run_span, const EvalOptions& options, const std::string& json_path) {
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
    if (!run_span) t->SetSpan(std::nullopt);
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
  std::string learn_relearn;
  auto* learn_relearn_opt = learn->add_option(
      "--relearn", learn_relearn,
      "every: re-learn each column's program from its latest --history runs whenever runs are "
      "added; never: learn it once, when the column first has enough history, and keep it while "
      "later runs move the window validation compares with. Default every, or the value stored by "
      "an earlier learn");
  learn_relearn_opt->check(CLI::IsMember({"every", "never"}));
  std::optional<double> learn_span, validate_span;
  const char* kSpanHelp =
      "The period each run covers, in a unit fixed for the pipeline (days, say: 31 for a "
      "January): AVH then also watches rows per unit of span (rows per day), which a month's row "
      "count hides in its calendar swing. Give it for every run or none";
  learn->add_option("--span", learn_span, kSpanHelp)->check(CLI::PositiveNumber);
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
  validate->add_option("--span", validate_span, kSpanHelp)->check(CLI::PositiveNumber);
  validate->add_flag("--json", json, "Print the report as JSON");
  validate->add_flag("--append", append,
                     "After checking, add the run to the history and re-learn (by default the "
                     "validated run is not added)");

  std::string table_path, partition_by, period = "day", json_path;
  EvalOptions eval_options;
  auto* eval = app.add_subcommand(
      "eval", "Evaluate AVH and the baselines on one table split into runs (docs/METHODS.md)");
  eval->add_option("--table", table_path, "The whole table: .csv or .json")->required();
  eval->add_option("--partition-by", partition_by,
                   "Date column (YYYY-MM-DD or YYYY/MM/DD...) that splits the table into runs")
      ->required();
  eval->add_option("--partition-format", period, "Run period")
      ->check(CLI::IsMember({"day", "month"}))
      ->capture_default_str();
  std::string run_span = "days";
  eval->add_option("--run-span", run_span,
                   "Each run's span: the days of its period (days), so that AVH and the baselines "
                   "also watch rows per day, or none (the paper's metrics only)")
      ->check(CLI::IsMember({"days", "none"}))
      ->capture_default_str();
  eval->add_option("--history", eval_options.history_runs,
                   "Learn from the first N runs; validate every later run")
      ->check(CLI::Range(size_t{8}, size_t{100000}))
      ->capture_default_str();
  eval->add_option("--delta", eval_options.delta, "AVH's FPR budget per column")
      ->check(CLI::Range(1e-9, 1.0))
      ->capture_default_str();
  std::string relearn = "never";
  eval->add_option("--relearn", relearn,
                   "AVH learns once from the first --history runs (never) or again before every "
                   "test run from the runs just before it (every)")
      ->check(CLI::IsMember({"never", "every"}))
      ->capture_default_str();
  eval->add_option("--relearn-window", eval_options.relearn_window,
                   "Runs each re-learning reads with --relearn every (0: --history)")
      ->capture_default_str();
  std::string k_grid = "wide";
  eval->add_option("--k-grid", k_grid,
                   "AVH's constraint widths k: paper (1 to 10 by 0.5), wide (then 11 to 99) or a "
                   "list such as 1,2,5,20")
      ->capture_default_str();
  eval->add_option("--normality-alpha", eval_options.avh.normality_alpha,
                   "Counts, means, lengths and categorical ratios keep the Normal bound only where "
                   "the Shapiro-Wilk test does not reject normality of their history at this level, "
                   "Chebyshev's elsewhere; 0 keeps the Normal bound as the paper assigns it")
      ->check(CLI::Range(0.0, 0.999))
      ->capture_default_str();
  std::string bounds = "unimodal", normal_fpr = "predictive", transforms = "all";
  eval->add_option("--bounds", bounds,
                   "Metrics without the Normal bound: unimodal (Vysochanskij-Petunin, assuming one "
                   "mode) or paper (Chebyshev's and Cantelli's, any distribution)")
      ->check(CLI::IsMember({"unimodal", "paper"}))
      ->capture_default_str();
  eval->add_option("--normal-fpr", normal_fpr,
                   "The Normal bound's FPR against the history's estimated mean and sd "
                   "(predictive: Student's t) or as if they were the true ones (paper)")
      ->check(CLI::IsMember({"predictive", "paper"}))
      ->capture_default_str();
  eval->add_option("--transforms", transforms,
                   "Candidates under every stationary transform of a metric (all) or the first "
                   "(paper)")
      ->check(CLI::IsMember({"all", "paper"}))
      ->capture_default_str();
  eval->add_option("--issue-runs", eval_options.avh.issue_runs,
                   "Runs whose synthetic issues AVH's coverage counts: 1 is the latest run's (the "
                   "paper's), n adds those injected into each of the n - 1 runs before it, in its "
                   "place (at most half the history)")
      ->check(CLI::PositiveNumber)
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
    if (learn_relearn_opt->count() > 0) settings.relearn = *ParseRelearnMode(learn_relearn);
    return Learn(pipeline, db, learn_files, settings, learn_span);
  }
  if (validate->parsed()) {
    return ValidateRun(pipeline, db, validate_file, json, append, validate_span);
  }
  auto grid = ParseKGrid(k_grid);
  if (!grid.ok()) {
    std::cerr << "vlcache-dq: --k-grid: " << grid.status().message() << "\n";
    return 2;
  }
  eval_options.avh.k_grid = *grid;
  eval_options.relearn_every_run = relearn == "every";
  eval_options.avh.unimodal = bounds == "unimodal";
  eval_options.avh.predictive = normal_fpr == "predictive";
  eval_options.avh.all_transforms = transforms == "all";
  return Eval(table_path, partition_by, period, run_span == "days", eval_options, json_path);
}
