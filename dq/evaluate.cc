#include "dq/evaluate.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <limits>
#include <map>
#include <optional>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "dq/issues.h"

namespace vlc::dq {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

double Div(std::size_t a, std::size_t b) {
  return b ? static_cast<double>(a) / static_cast<double>(b) : 0.0;
}

// One realistic issue applied to one test run: the broken columns it touches (the columns not
// listed are unchanged).
struct RealisticCase {
  std::string issue;
  std::vector<std::pair<std::size_t, Column>> touched;  // column index -> broken column
};

// The run's span stays with each broken column: these issues break values, not the period.
Column WithSpanOf(const Column& run, Column c) { return std::move(c).WithSpan(run.span()); }

Column WithName(const std::string& name, const Column& values) {
  return WithSpanOf(values, values.is_numeric() ? Column::Numeric(name, values.numeric())
                                                : Column::Categorical(name, values.strings()));
}

Column AllNull(const Column& c) {
  return WithSpanOf(c, c.is_numeric()
                           ? Column::Numeric(c.name(), Column::NumericValues(c.size()))
                           : Column::Categorical(c.name(), Column::StringValues(c.size())));
}

std::vector<RealisticCase> RealisticCases(const std::vector<const Column*>& cols) {
  std::vector<RealisticCase> out;
  const std::size_t n = cols.empty() ? 0 : cols.front()->size();
  for (std::size_t i = 0; i < cols.size(); ++i) {
    const Column& c = *cols[i];
    if (c.is_numeric()) {
      Column::NumericValues v = c.numeric();
      for (auto& x : v) {
        if (x) *x *= 1000.0;
      }
      out.push_back({"units_x1000", {{i, WithSpanOf(c, Column::Numeric(c.name(), std::move(v)))}}});
    } else {
      Column::StringValues v = c.strings();
      bool changed = false;
      for (auto& s : v) {
        if (!s) continue;
        for (char& ch : *s) {
          const char lower = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
          changed |= lower != ch;
          ch = lower;
        }
      }
      // Codes already in lower case make no issue; counting them would charge every method a
      // miss for a run that is in fact clean.
      if (changed) {
        out.push_back({"codes_lowercased",
                       {{i, WithSpanOf(c, Column::Categorical(c.name(), std::move(v)))}}});
      }
    }
    out.push_back({"column_all_null", {{i, AllNull(c)}}});
  }
  std::vector<std::size_t> head, twice;
  const std::size_t keep = std::max<std::size_t>(
      1, static_cast<std::size_t>(std::llround(0.1 * static_cast<double>(n))));
  for (std::size_t r = 0; r < std::min(keep, n); ++r) head.push_back(r);
  for (std::size_t r = 0; r < n; ++r) {
    twice.push_back(r);
    twice.push_back(r);
  }
  RealisticCase partial{"partial_load_10pct", {}}, duplicated{"rows_duplicated", {}};
  for (std::size_t i = 0; i < cols.size(); ++i) {
    partial.touched.emplace_back(i, cols[i]->Select(head));
    duplicated.touched.emplace_back(i, cols[i]->Select(twice));
  }
  out.push_back(std::move(partial));
  out.push_back(std::move(duplicated));
  for (std::size_t a = 0; a < cols.size(); ++a) {
    for (std::size_t b = a + 1; b < cols.size(); ++b) {
      if (cols[a]->type() != cols[b]->type()) continue;
      out.push_back(
          {"columns_swapped",
           {{a, WithName(cols[a]->name(), *cols[b])}, {b, WithName(cols[b]->name(), *cols[a])}}});
    }
  }
  return out;
}

uint64_t MixSeed(uint64_t seed, uint64_t run, uint64_t column) {
  SplitMix64 g(seed ^ (run * 0x9E3779B97F4A7C15ULL) ^ (column * 0xC2B2AE3D27D4EB4FULL));
  return g.Next();
}

void Count(bool injected, bool flagged, EvalCounts* c) {
  if (injected) {
    ++(flagged ? c->tp : c->fn);
  } else {
    ++(flagged ? c->fp : c->tn);
  }
}

nlohmann::json CountsJson(const EvalCounts& c) {
  return {{"tp", c.tp},
          {"fn", c.fn},
          {"fp", c.fp},
          {"tn", c.tn},
          {"injected_cases", c.tp + c.fn},
          {"clean_cases", c.fp + c.tn}};
}

}  // namespace

double EvalCounts::Precision() const { return tp + fp ? Div(tp, tp + fp) : 1.0; }
double EvalCounts::Recall() const { return Div(tp, tp + fn); }
double EvalCounts::Fpr() const { return Div(fp, fp + tn); }
double EvalCounts::F1() const {
  const double p = Precision(), r = Recall();
  return p + r > 0 ? 2 * p * r / (p + r) : 0.0;
}
double EvalCounts::BalancedPrecision() const {
  const double r = Recall(), f = Fpr();
  return r + f > 0 ? r / (r + f) : 1.0;
}

double MatchThreshold(std::vector<double> clean_scores, double target_fpr) {
  const std::size_t n = clean_scores.size();
  // The small slack keeps target = k / n from flooring to k - 1.
  const std::size_t allowed = static_cast<std::size_t>(
      std::floor(std::max(0.0, target_fpr) * static_cast<double>(n) + 1e-9));
  if (allowed >= n) return -kInf;
  std::sort(clean_scores.begin(), clean_scores.end());
  return clean_scores[n - allowed - 1];
}

std::string DescribeBaseline(BaselineKind kind, const BaselineOptions& o) {
  switch (kind) {
    case BaselineKind::kBatchNormal:
      return absl::StrCat("single-run metrics within mean +- ", o.deviation_factor,
                          " sd of the history");
    case BaselineKind::kOnlineNormal:
      return absl::StrCat("single-run metrics within running mean +- ", o.deviation_factor,
                          " sd, first ", o.ignore_start_fraction * 100, "% of the history ignored");
    case BaselineKind::kRelativeRateOfChange:
      return absl::StrCat("count and mean (strings: mean length) x_t/x_{t-1} in [",
                          o.max_rate_decrease, ", ", o.max_rate_increase, "]");
    case BaselineKind::kAbsoluteChange:
      return absl::StrCat("count and mean (strings: mean length) |x_t - x_{t-1}| <= ",
                          o.absolute_change_factor, " x the history's largest change");
    case BaselineKind::kTfdvDrift:
      return absl::StrCat("categorical L_inf > ", o.linf_threshold, ", numeric JS divergence > ",
                          o.js_threshold, " vs the previous run");
    case BaselineKind::kTwoSampleTest:
      return absl::StrCat("KS (numeric) / chi-square (categorical) p < ", o.alpha,
                          " vs the previous run");
  }
  return "";
}

absl::StatusOr<EvalResult> EvaluatePipeline(const std::vector<Table>& runs,
                                            const EvalOptions& options) {
  const std::size_t n_hist = options.history_runs;
  if (n_hist < options.avh.min_history_runs) {
    return absl::InvalidArgumentError(absl::StrCat("a history of ", n_hist,
                                                   " runs is too short: AVH needs at least ",
                                                   options.avh.min_history_runs));
  }
  if (runs.size() <= n_hist) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the pipeline has ", runs.size(), " runs: nothing is left to validate after a ", n_hist,
        "-run history (use a smaller --history)"));
  }
  EvalResult result;
  result.runs = runs.size();
  result.history_runs = n_hist;
  result.test_runs = runs.size() - n_hist;
  result.delta = options.delta;
  result.columns = runs[n_hist - 1].ColumnNames();
  const std::size_t n_cols = result.columns.size();

  // ---- Learning, once, from the first N runs.
  const std::vector<Table> history(runs.begin(), runs.begin() + static_cast<long>(n_hist));
  AvhOptions avh_options = options.avh;
  avh_options.delta = options.delta;
  VLC_ASSIGN_OR_RETURN(TableProgram avh, LearnTableProgram(history, avh_options));
  for (const std::string& note : avh.notes) result.notes.push_back("avh: " + note);
  for (const ColumnProgram& p : avh.columns) {
    std::string line = absl::StrCat(p.column, ": ", p.constraints.size(),
                                    " constraints, expected FPR ", p.ExpectedFpr(), ", covers ",
                                    p.issues_covered, "/", p.issues_total, " synthetic issues:");
    for (const Constraint& c : p.constraints) {
      absl::StrAppend(&line, " ", MetricName(c.metric), "[", c.transform.ToString(),
                      c.invariant ? ", invariant" : absl::StrCat(", k=", c.k), "]");
    }
    result.avh_programs.push_back(std::move(line));
  }
  std::vector<const ColumnProgram*> programs(n_cols, nullptr);
  auto point_at = [&](const TableProgram& table) {
    for (std::size_t c = 0; c < n_cols; ++c) {
      programs[c] = nullptr;
      for (const ColumnProgram& p : table.columns) {
        if (p.column == result.columns[c]) programs[c] = &p;
      }
    }
  };
  point_at(avh);
  const std::size_t window =
      options.relearn_window > 0 ? options.relearn_window : options.history_runs;
  if (options.relearn_every_run && window < options.avh.min_history_runs) {
    return absl::InvalidArgumentError(absl::StrCat("a re-learning window of ", window,
                                                   " runs is too short: AVH needs at least ",
                                                   options.avh.min_history_runs));
  }
  TableProgram relearned;

  const std::vector<BaselineKind>& kinds = AllBaselines();
  // baselines[k][c]: the validator of baseline k for column c, when it could be learned.
  std::vector<std::vector<std::optional<BaselineValidator>>> baselines(
      kinds.size(), std::vector<std::optional<BaselineValidator>>(n_cols));
  for (std::size_t c = 0; c < n_cols; ++c) {
    std::vector<Column> column_history;
    for (const Table& t : history) {
      if (const Column* col = t.Find(result.columns[c])) column_history.push_back(*col);
    }
    for (std::size_t k = 0; k < kinds.size(); ++k) {
      absl::StatusOr<BaselineValidator> v =
          BaselineValidator::Learn(kinds[k], column_history, options.baselines);
      if (v.ok()) {
        baselines[k][c] = std::move(*v);
      } else {
        result.notes.push_back(absl::StrCat(BaselineName(kinds[k]), ": column '", result.columns[c],
                                            "' not learned: ", v.status().message()));
      }
    }
  }

  const std::size_t n_methods = 1 + kinds.size();
  result.methods.resize(n_methods);
  result.methods[0].name = "avh";
  result.methods[0].threshold = absl::StrCat("AVH program, delta = ", options.delta);
  for (std::size_t k = 0; k < kinds.size(); ++k) {
    result.methods[k + 1].name = BaselineName(kinds[k]);
    result.methods[k + 1].threshold = DescribeBaseline(kinds[k], options.baselines);
  }
  std::vector<std::vector<double>> clean_scores(n_methods), injected_scores(n_methods);
  // realistic[m][issue] = {cases, detected}
  std::vector<std::map<std::string, std::pair<std::size_t, std::size_t>>> realistic(n_methods);

  // ---- Every test run, validated clean, with each synthetic issue, and with each realistic one.
  for (std::size_t t = n_hist; t < runs.size(); ++t) {
    const Table& run = runs[t];
    if (options.relearn_every_run) {
      const std::size_t begin = t - std::min(window, t);
      absl::StatusOr<TableProgram> next = LearnTableProgram(
          std::vector<Table>(runs.begin() + static_cast<long>(begin),
                             runs.begin() + static_cast<long>(t)),
          avh_options);
      if (next.ok()) {
        relearned = std::move(*next);
        point_at(relearned);
      } else {
        result.notes.push_back(absl::StrCat("avh: re-learning before test run ", t,
                                            " failed, the last program kept: ",
                                            next.status().message()));
      }
    }
    std::vector<const Column*> cur(n_cols, nullptr), prev(n_cols, nullptr);
    std::vector<std::vector<Column>> tails(n_cols);
    bool complete = true;
    for (std::size_t c = 0; c < n_cols; ++c) {
      cur[c] = run.Find(result.columns[c]);
      prev[c] = runs[t - 1].Find(result.columns[c]);
      if (!cur[c] || !prev[c]) complete = false;
      if (programs[c]) {
        const std::size_t need = HistoryTailNeeded(*programs[c]);
        for (std::size_t i = t - std::min(need, t); i < t; ++i) {
          if (const Column* col = runs[i].Find(result.columns[c])) tails[c].push_back(*col);
        }
      }
    }
    if (!complete) {
      result.notes.push_back(
          absl::StrCat("test run ", t, " lacks a column its history has: skipped"));
      continue;
    }
    // Score of method m on column c when it reads `candidate` as run t.
    auto score = [&](std::size_t m, std::size_t c, const Column& candidate) -> double {
      if (m == 0) {
        if (!programs[c]) return 0.0;
        absl::StatusOr<ColumnReport> r = ValidateColumn(*programs[c], tails[c], candidate);
        if (!r.ok()) {
          ++result.methods[m].errors;
          return kInf;
        }
        return r->passed ? 0.0 : kInf;
      }
      const std::optional<BaselineValidator>& v = baselines[m - 1][c];
      if (!v) return 0.0;
      absl::StatusOr<BaselineVerdict> verdict = v->Check(*prev[c], candidate);
      if (!verdict.ok()) {
        ++result.methods[m].errors;
        return kInf;
      }
      return verdict->score;
    };

    std::vector<bool> run_flagged(n_methods, false);
    std::vector<Column> others;
    for (const Column* col : cur) others.push_back(*col);
    for (std::size_t c = 0; c < n_cols; ++c) {
      for (std::size_t m = 0; m < n_methods; ++m) {
        const double s = score(m, c, *cur[c]);
        clean_scores[m].push_back(s);
        Count(false, s > 1.0, &result.methods[m].counts);
        if (s > 1.0) run_flagged[m] = true;
      }
      for (const SyntheticIssue& issue :
           GenerateIssues(*cur[c], others, MixSeed(options.issue_seed, t, c))) {
        for (std::size_t m = 0; m < n_methods; ++m) {
          const double s = score(m, c, issue.column);
          injected_scores[m].push_back(s);
          Count(true, s > 1.0, &result.methods[m].counts);
          Count(true, s > 1.0, &result.methods[m].by_issue[issue.spec.name]);
        }
      }
    }
    for (std::size_t m = 0; m < n_methods; ++m) {
      ++result.methods[m].clean_runs;
      if (run_flagged[m]) ++result.methods[m].flagged_clean_runs;
    }
    for (const RealisticCase& rc : RealisticCases(cur)) {
      for (std::size_t m = 0; m < n_methods; ++m) {
        bool detected = false;
        for (const auto& [c, broken] : rc.touched) {
          if (score(m, c, broken) > 1.0) {
            detected = true;
            break;
          }
        }
        auto& cell = realistic[m][rc.issue];
        ++cell.first;
        if (detected) ++cell.second;
      }
    }
  }

  // ---- The baselines again at AVH's measured FPR.
  const double avh_fpr = result.methods[0].counts.Fpr();
  for (std::size_t m = 1; m < n_methods; ++m) {
    MethodResult& mr = result.methods[m];
    mr.has_matched = true;
    mr.matched_threshold = MatchThreshold(clean_scores[m], avh_fpr);
    for (double s : clean_scores[m]) Count(false, s > mr.matched_threshold, &mr.matched);
    for (double s : injected_scores[m]) Count(true, s > mr.matched_threshold, &mr.matched);
  }
  for (std::size_t m = 0; m < n_methods; ++m) {
    for (const auto& [issue, cell] : realistic[m]) {
      result.realistic.push_back({result.methods[m].name, issue, cell.first, cell.second});
    }
  }
  return result;
}

nlohmann::json ToJson(const EvalResult& r) {
  nlohmann::json methods = nlohmann::json::array();
  for (const MethodResult& m : r.methods) {
    nlohmann::json counts = CountsJson(m.counts);
    counts["clean_runs"] = m.clean_runs;
    counts["flagged_clean_runs"] = m.flagged_clean_runs;
    counts["errors"] = m.errors;
    nlohmann::json j = {{"name", m.name},
                        {"threshold", m.threshold},
                        {"precision", m.counts.Precision()},
                        {"recall", m.counts.Recall()},
                        {"fpr", m.counts.Fpr()},
                        {"f1", m.counts.F1()},
                        {"balanced_precision", m.counts.BalancedPrecision()},
                        {"run_fpr", Div(m.flagged_clean_runs, m.clean_runs)},
                        {"counts", counts}};
    nlohmann::json by_issue = nlohmann::json::object();
    for (const auto& [name, c] : m.by_issue) {
      by_issue[name] = {{"recall", c.Recall()}, {"detected", c.tp}, {"cases", c.tp + c.fn}};
    }
    j["recall_by_issue"] = std::move(by_issue);
    if (m.has_matched) {
      // JSON has no infinity: an unreachable threshold is written as null.
      nlohmann::json t = std::isfinite(m.matched_threshold) ? nlohmann::json(m.matched_threshold)
                                                            : nlohmann::json(nullptr);
      j["matched_fpr"] = {{"score_threshold", t},         {"precision", m.matched.Precision()},
                          {"recall", m.matched.Recall()}, {"fpr", m.matched.Fpr()},
                          {"f1", m.matched.F1()},         {"counts", CountsJson(m.matched)}};
    }
    methods.push_back(std::move(j));
  }
  nlohmann::json realistic = nlohmann::json::array();
  for (const RealisticResult& x : r.realistic) {
    realistic.push_back({{"method", x.method},
                         {"issue", x.issue},
                         {"cases", x.cases},
                         {"detected", x.detected},
                         {"recall", x.Recall()}});
  }
  return {{"runs", r.runs},           {"history_runs", r.history_runs},
          {"test_runs", r.test_runs}, {"columns", r.columns},
          {"delta", r.delta},         {"methods", methods},
          {"realistic", realistic},   {"avh_programs", r.avh_programs},
          {"notes", r.notes}};
}

std::string FormatEvalTable(const EvalResult& r) {
  std::string out = absl::StrCat(r.runs, " runs: ", r.history_runs, " of history, ", r.test_runs,
                                 " tested; AVH delta = ", r.delta, "\n");
  char line[512];
  std::snprintf(line, sizeof line, "%-24s %6s %6s %6s %6s %6s %6s %7s %6s %6s | %8s %6s %6s %6s\n",
                "method", "prec", "recall", "fpr", "F1", "bprec", "runFPR", "TP", "FN", "FP",
                "matchT", "recall", "fpr", "F1");
  out += line;
  for (const MethodResult& m : r.methods) {
    std::snprintf(line, sizeof line, "%-24s %6.3f %6.3f %6.3f %6.3f %6.3f %6.3f %7zu %6zu %6zu",
                  m.name.c_str(), m.counts.Precision(), m.counts.Recall(), m.counts.Fpr(),
                  m.counts.F1(), m.counts.BalancedPrecision(),
                  Div(m.flagged_clean_runs, m.clean_runs), m.counts.tp, m.counts.fn, m.counts.fp);
    out += line;
    if (m.has_matched) {
      std::snprintf(line, sizeof line, " | %8.3g %6.3f %6.3f %6.3f\n", m.matched_threshold,
                    m.matched.Recall(), m.matched.Fpr(), m.matched.F1());
    } else {
      std::snprintf(line, sizeof line, " | %8s %6s %6s %6s\n", "-", "-", "-", "-");
    }
    out += line;
  }
  out += "\nrealistic issues: detected / cases\n";
  std::vector<std::string> issues;
  for (const RealisticResult& x : r.realistic) {
    if (std::find(issues.begin(), issues.end(), x.issue) == issues.end()) issues.push_back(x.issue);
  }
  std::snprintf(line, sizeof line, "%-24s", "method");
  out += line;
  for (const std::string& i : issues) {
    std::snprintf(line, sizeof line, " %19s", i.c_str());
    out += line;
  }
  out += "\n";
  for (const MethodResult& m : r.methods) {
    std::snprintf(line, sizeof line, "%-24s", m.name.c_str());
    out += line;
    for (const std::string& i : issues) {
      std::string cell = "-";
      for (const RealisticResult& x : r.realistic) {
        if (x.method == m.name && x.issue == i) cell = absl::StrCat(x.detected, "/", x.cases);
      }
      std::snprintf(line, sizeof line, " %19s", cell.c_str());
      out += line;
    }
    out += "\n";
  }
  out += "\nAVH programs:\n";
  for (const std::string& p : r.avh_programs) out += "  " + p + "\n";
  for (const std::string& n : r.notes) out += "note: " + n + "\n";
  return out;
}

}  // namespace vlc::dq
