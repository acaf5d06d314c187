#include "dq/avh.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/status.h"
#include "dq/issues.h"

namespace vlc::dq {
namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr double kInf = std::numeric_limits<double>::infinity();

// Metric values of one run, indexed by the metric's enum value; NaN where not computed.
using MetricRow = std::vector<double>;

absl::StatusOr<MetricRow> MetricsOf(const Column& current, const Column* previous) {
  VLC_ASSIGN_OR_RETURN(const std::vector<MetricValue> values, ComputeMetrics(current, previous));
  MetricRow row(kMetricCount, kNaN);
  for (const MetricValue& v : values) row[static_cast<int>(v.metric)] = v.value;
  return row;
}

std::string Num(double v) {
  if (std::isnan(v)) return "undefined";
  return absl::StrFormat("%.6g", v);
}

absl::Status CheckOptions(const AvhOptions& options) {
  if (!(options.delta >= 0.0 && options.delta <= 1.0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("the FPR budget delta must lie in [0, 1], got ", options.delta));
  }
  if (options.k_grid.empty()) {
    return absl::InvalidArgumentError("the k grid is empty: give at least one k, e.g. KGrid()");
  }
  for (double k : options.k_grid) {
    if (!std::isfinite(k) || k < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("k grid value ", k, " is not a finite k >= 0"));
    }
  }
  if (!(options.normality_alpha >= 0.0 && options.normality_alpha < 1.0)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "normality_alpha must lie in [0, 1) (0: no normality check), got ", options.normality_alpha));
  }
  if (options.issue_runs < 1) {
    return absl::InvalidArgumentError("issue_runs must be at least 1 (1: the latest run's issues)");
  }
  return absl::OkStatus();
}

struct LearnCandidate {
  Constraint constraint;
  std::vector<std::size_t> covers;
  int group = 0;  // one constraint per metric and transform
};

// Coverage of a set of chosen candidates.
std::size_t CountCovered(const std::vector<CoverageCandidate>& candidates,
                         const std::vector<std::size_t>& chosen, std::size_t num_issues) {
  std::vector<char> hit(num_issues, 0);
  std::size_t count = 0;
  for (std::size_t i : chosen) {
    for (std::size_t j : candidates[i].covers) {
      if (j < num_issues && !hit[j]) {
        hit[j] = 1;
        ++count;
      }
    }
  }
  return count;
}

// One candidate per group: the one covering most (ties: the cheaper, then the earlier). For
// nested groups it covers what all of the group's chosen ones cover together.
std::vector<std::size_t> OnePerGroup(const std::vector<CoverageCandidate>& candidates,
                                     const std::vector<std::size_t>& chosen,
                                     std::size_t num_issues) {
  std::map<int, std::size_t> best;
  for (std::size_t i : chosen) {
    auto it = best.find(candidates[i].group);
    if (it == best.end()) {
      best.emplace(candidates[i].group, i);
      continue;
    }
    // `covers` is normalised (distinct, in range) by the caller, so its size is its coverage.
    const std::size_t a = candidates[i].covers.size();
    const std::size_t b = candidates[it->second].covers.size();
    if (a > b || (a == b && candidates[i].fpr < candidates[it->second].fpr)) it->second = i;
  }
  std::vector<std::size_t> out;
  for (const auto& [group, i] : best) out.push_back(i);
  std::sort(out.begin(), out.end());
  return out;
}

CoverageSelection Finish(const std::vector<CoverageCandidate>& candidates,
                         const std::vector<std::size_t>& chosen, std::size_t num_issues) {
  CoverageSelection s;
  s.chosen = OnePerGroup(candidates, chosen, num_issues);
  s.covered = CountCovered(candidates, s.chosen, num_issues);
  for (std::size_t i : s.chosen) s.fpr += candidates[i].fpr;
  return s;
}

std::string TransformPhrase(const Transform& t) {
  switch (t.kind) {
    case Transform::Kind::kIdentity:
      return "";
    case Transform::Kind::kDiff:
      return absl::StrCat(" (change against ", t.lag, " run", t.lag == 1 ? "" : "s", " before)");
    case Transform::Kind::kLog:
      return " (log)";
    case Transform::Kind::kLogDiff:
      return absl::StrCat(" (log-ratio against ", t.lag, " run", t.lag == 1 ? "" : "s", " before)");
  }
  return "";
}

std::string ViolationMessage(const ColumnProgram& program, const Constraint& c, double raw,
                             double value, bool out_of_domain) {
  const std::string head = absl::StrCat("column '", program.column, "': ", MetricName(c.metric));
  const std::string runs = absl::StrCat(program.history_runs, " runs");
  if (std::isnan(raw) && IsRowsPerSpan(c.metric)) {
    return absl::StrCat(head, " is undefined for this run: it gives no span, but all ", runs,
                        " it was learned from did; send the run with its span");
  }
  if (std::isnan(raw)) {
    return absl::StrCat(head, " is undefined for this run (no non-null values to compute it on), ",
                        "but was defined in all ", runs, " it was learned from");
  }
  if (out_of_domain) {
    return absl::StrCat(head, " is ", Num(raw), ", not positive, but was positive in all ", runs,
                        " learned from (checked as ", c.transform.ToString(), ")");
  }
  const std::string shown =
      c.transform.kind == Transform::Kind::kIdentity
          ? Num(value)
          : absl::StrCat(Num(value), TransformPhrase(c.transform), ", raw value ", Num(raw));
  if (c.invariant) {
    return absl::StrCat(head, " is ", shown, ", but was ", Num(c.mean), " in every one of the ",
                        runs, " learned from (invariant)");
  }
  return absl::StrCat(head, " is ", shown, ", outside [", Num(c.lo), ", ", Num(c.hi),
                      "] learned from ", runs, " (", BoundKindName(c.bound), " bound, ",
                      SideName(c.side), ", k=", Num(c.k), ", expected FPR ", Num(c.fpr), ")");
}

// ---- JSON helpers.

nlohmann::json Finite(double v) { return std::isfinite(v) ? nlohmann::json(v) : nlohmann::json(); }

const char* TransformKindName(Transform::Kind kind) {
  switch (kind) {
    case Transform::Kind::kIdentity:
      return "identity";
    case Transform::Kind::kDiff:
      return "diff";
    case Transform::Kind::kLog:
      return "log";
    case Transform::Kind::kLogDiff:
      return "log-diff";
  }
  return "identity";
}

template <typename T>
absl::StatusOr<T> Field(const nlohmann::json& j, const char* name, const std::string& where) {
  if (!j.is_object() || !j.contains(name)) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": missing field '", name, "'"));
  }
  try {
    return j.at(name).get<T>();
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, ": field '", name, "' is malformed: ", e.what()));
  }
}

// lo / hi: null stands for an unchecked side.
absl::StatusOr<double> BoundField(const nlohmann::json& j, const char* name, double if_null,
                                  const std::string& where) {
  if (j.contains(name) && j.at(name).is_null()) return if_null;
  return Field<double>(j, name, where);
}

absl::StatusOr<Constraint> ConstraintFromJson(const nlohmann::json& j, const std::string& where) {
  Constraint c;
  VLC_ASSIGN_OR_RETURN(const std::string metric, Field<std::string>(j, "metric", where));
  VLC_ASSIGN_OR_RETURN(c.metric, MetricFromName(metric));
  VLC_ASSIGN_OR_RETURN(const std::string tkind, Field<std::string>(j, "transform", where));
  VLC_ASSIGN_OR_RETURN(c.transform.lag, Field<int>(j, "lag", where));
  bool known = false;
  for (auto kind : {Transform::Kind::kIdentity, Transform::Kind::kDiff, Transform::Kind::kLog,
                    Transform::Kind::kLogDiff}) {
    if (tkind == TransformKindName(kind)) {
      c.transform.kind = kind;
      known = true;
    }
  }
  if (!known) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, ": unknown transform '", tkind, "' (identity, diff, log or log-diff)"));
  }
  VLC_ASSIGN_OR_RETURN(const std::string bound, Field<std::string>(j, "bound", where));
  known = false;
  for (auto kind :
       {BoundKind::kCantelli, BoundKind::kNormal, BoundKind::kChebyshev, BoundKind::kUnimodal}) {
    if (bound == BoundKindName(kind)) {
      c.bound = kind;
      known = true;
    }
  }
  if (!known)
    return absl::InvalidArgumentError(absl::StrCat(where, ": unknown bound '", bound, "'"));
  VLC_ASSIGN_OR_RETURN(const std::string side, Field<std::string>(j, "side", where));
  known = false;
  for (auto s : {Side::kTwoSided, Side::kUpper, Side::kLower}) {
    if (side == SideName(s)) {
      c.side = s;
      known = true;
    }
  }
  if (!known) return absl::InvalidArgumentError(absl::StrCat(where, ": unknown side '", side, "'"));
  VLC_ASSIGN_OR_RETURN(c.k, Field<double>(j, "k", where));
  VLC_ASSIGN_OR_RETURN(c.mean, Field<double>(j, "mean", where));
  VLC_ASSIGN_OR_RETURN(c.sd, Field<double>(j, "sd", where));
  VLC_ASSIGN_OR_RETURN(c.lo, BoundField(j, "lo", -kInf, where));
  VLC_ASSIGN_OR_RETURN(c.hi, BoundField(j, "hi", kInf, where));
  VLC_ASSIGN_OR_RETURN(c.fpr, Field<double>(j, "fpr", where));
  VLC_ASSIGN_OR_RETURN(c.invariant, Field<bool>(j, "invariant", where));
  VLC_ASSIGN_OR_RETURN(c.covered_issues, Field<std::size_t>(j, "covered_issues", where));
  return c;
}

}  // namespace

AvhOptions PaperAvhOptions() {
  AvhOptions o;
  o.k_grid = KGrid();
  o.normality_alpha = 0;
  o.unimodal = false;
  o.issue_runs = 1;
  o.predictive = false;
  o.all_transforms = false;
  o.rows_per_span = false;
  return o;
}

BoundAndSide BoundAndSideFor(Metric metric) {
  switch (metric) {
    case Metric::kNumKsPValue:
    case Metric::kCatChi2PValue:
    case Metric::kCatPatternChi2PValue:
      return {BoundKind::kCantelli, Side::kLower};
    case Metric::kNumEmd:
    case Metric::kNumJsDiv:
    case Metric::kNumKlDiv:
    case Metric::kNumCohenD:
    case Metric::kCatL1:
    case Metric::kCatLInf:
    case Metric::kCatCosine:
    case Metric::kCatJsDistance:
    case Metric::kCatKlDiv:
    case Metric::kCatPatternL1:
    case Metric::kCatPatternLInf:
    case Metric::kCatPatternCosine:
    case Metric::kCatPatternJsDistance:
    case Metric::kCatPatternKlDiv:
      return {BoundKind::kCantelli, Side::kUpper};
    case Metric::kNumCount:
    case Metric::kNumMean:
    case Metric::kCatCount:
    case Metric::kCatMeanLength:
    case Metric::kCatMeanLetters:
    case Metric::kCatMeanDigits:
    case Metric::kCatMeanPunctuation:
    case Metric::kCatUniqueRatio:
    case Metric::kCatCompleteRatio:
    case Metric::kCatDistinctCount:
    case Metric::kNumRowsPerSpan:
    case Metric::kCatRowsPerSpan:
      return {BoundKind::kNormal, Side::kTwoSided};
    case Metric::kNumMin:
    case Metric::kNumMax:
    case Metric::kNumMedian:
    case Metric::kNumSum:
    case Metric::kNumRange:
    case Metric::kNumUniqueRatio:
    case Metric::kNumCompleteRatio:
      return {BoundKind::kChebyshev, Side::kTwoSided};
  }
  return {BoundKind::kChebyshev, Side::kTwoSided};
}

double ColumnProgram::ExpectedFpr() const {
  double sum = 0.0;
  for (const Constraint& c : constraints) sum += c.fpr;
  return sum;
}

CoverageSelection SelectBudgetedMaxCoverage(const std::vector<CoverageCandidate>& input,
                                            std::size_t num_issues, double delta) {
  // Distinct, in-range issue indices, so that counting them is counting coverage.
  std::vector<CoverageCandidate> candidates = input;
  for (CoverageCandidate& c : candidates) {
    std::sort(c.covers.begin(), c.covers.end());
    c.covers.erase(std::unique(c.covers.begin(), c.covers.end()), c.covers.end());
    c.covers.erase(std::lower_bound(c.covers.begin(), c.covers.end(), num_issues), c.covers.end());
  }
  // Zero-cost candidates first, all of them: they can only add coverage.
  std::vector<std::size_t> free;
  for (std::size_t i = 0; i < candidates.size(); ++i) {
    if (candidates[i].fpr <= 0.0) free.push_back(i);
  }

  // The modified greedy of Khuller, Moss and Naor: the best ratio of newly covered issues to cost
  // among the candidates that still fit; one that does not fit is passed over, not a stop.
  std::vector<char> hit(num_issues, 0);
  std::vector<char> taken(candidates.size(), 0);
  for (std::size_t i : free) {
    taken[i] = 1;
    for (std::size_t j : candidates[i].covers) {
      if (j < num_issues) hit[j] = 1;
    }
  }
  // What the free ones cover: the singleton below is judged on what it adds to them, so that
  // the guarantee holds on the residual instance (KMN's analysis assumes positive costs).
  const std::vector<char> free_hit = hit;
  std::vector<std::size_t> greedy = free;
  double used = 0.0;
  while (true) {
    std::size_t best = candidates.size();
    std::size_t best_new = 0;
    double best_ratio = -1.0;
    for (std::size_t i = 0; i < candidates.size(); ++i) {
      if (taken[i] || used + candidates[i].fpr > delta) continue;
      std::size_t fresh = 0;
      for (std::size_t j : candidates[i].covers) fresh += !hit[j];
      if (fresh == 0) continue;
      const double ratio = static_cast<double>(fresh) / candidates[i].fpr;
      if (ratio > best_ratio || (ratio == best_ratio && fresh > best_new)) {
        best = i;
        best_new = fresh;
        best_ratio = ratio;
      }
    }
    if (best == candidates.size()) break;
    taken[best] = 1;
    used += candidates[best].fpr;
    greedy.push_back(best);
    for (std::size_t j : candidates[best].covers) {
      if (j < num_issues) hit[j] = 1;
    }
  }
  CoverageSelection from_greedy = Finish(candidates, greedy, num_issues);

  // The best single candidate that fits, added to the free ones (which cost nothing).
  std::size_t single = candidates.size();
  std::size_t single_cov = 0;
  for (std::size_t i = 0; i < candidates.size(); ++i) {
    if (candidates[i].fpr > delta) continue;
    std::size_t cov = 0;
    for (std::size_t j : candidates[i].covers) cov += !free_hit[j];
    if (single == candidates.size() || cov > single_cov ||
        (cov == single_cov && candidates[i].fpr < candidates[single].fpr)) {
      single = i;
      single_cov = cov;
    }
  }
  if (single == candidates.size()) return from_greedy;
  std::vector<std::size_t> with_single = free;
  with_single.push_back(single);
  CoverageSelection from_single = Finish(candidates, with_single, num_issues);
  if (from_single.covered > from_greedy.covered) {
    from_single.single_won = true;
    return from_single;
  }
  return from_greedy;
}

absl::StatusOr<ColumnProgram> LearnColumnProgram(const std::vector<Column>& history,
                                                 const std::vector<Column>& other_columns,
                                                 const AvhOptions& options) {
  VLC_RETURN_IF_ERROR(CheckOptions(options));
  if (history.size() < std::max<std::size_t>(options.min_history_runs, 2)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "learning a program needs at least ", std::max<std::size_t>(options.min_history_runs, 2),
        " runs of history, got ", history.size(),
        (history.empty() ? "" : absl::StrCat(" for column '", history.back().name(), "'")),
        ": wait for more runs or lower min_history_runs"));
  }
  const Column& latest = history.back();
  const ColumnType type = latest.type();
  for (std::size_t i = 0; i < history.size(); ++i) {
    if (history[i].type() != type) {
      return absl::InvalidArgumentError(absl::StrCat(
          "column '", latest.name(), "' is ", ColumnTypeName(type), " in the latest run but ",
          ColumnTypeName(history[i].type()), " in run ", i, " (0 = oldest): its metrics are not ",
          "comparable across the history; learn from the runs since the type changed"));
    }
  }

  ColumnProgram program;
  program.column = latest.name();
  program.type = type;
  program.history_runs = history.size();
  program.delta = options.delta;

  std::vector<MetricRow> rows;
  rows.reserve(history.size());
  for (std::size_t i = 0; i < history.size(); ++i) {
    VLC_ASSIGN_OR_RETURN(MetricRow row, MetricsOf(history[i], i > 0 ? &history[i - 1] : nullptr));
    rows.push_back(std::move(row));
  }
  // The synthetic issues: the latest run's as the next run (issue_at = history.size()), then,
  // with issue_runs > 1, those of each earlier run t in its own place (issue_at = t).
  std::vector<MetricRow> issue_rows;
  std::vector<std::size_t> issue_at;
  const std::size_t runs_with_issues =
      std::min(options.issue_runs, std::max<std::size_t>(1, history.size() / 2));
  for (std::size_t r = 0; r < runs_with_issues; ++r) {
    const std::size_t t = history.size() - 1 - r;
    const Column& base = history[t];
    const std::vector<SyntheticIssue> issues =
        GenerateIssues(base, other_columns, r == 0 ? options.issue_seed : options.issue_seed + t);
    for (const SyntheticIssue& issue : issues) {
      VLC_ASSIGN_OR_RETURN(MetricRow row,
                           MetricsOf(issue.column, r == 0 ? &latest : &history[t - 1]));
      issue_rows.push_back(std::move(row));
      issue_at.push_back(r == 0 ? history.size() : t);
    }
  }
  program.issues_total = issue_rows.size();

  std::vector<LearnCandidate> learned;
  for (Metric metric : MetricsFor(type)) {
    const int m = static_cast<int>(metric);
    const std::string& name = MetricName(metric);
    if (IsRowsPerSpan(metric) && !options.rows_per_span) continue;
    std::vector<double> series;
    std::size_t undefined_at = history.size();
    for (std::size_t i = IsPairwise(metric) ? 1 : 0; i < history.size(); ++i) {
      if (std::isnan(rows[i][m])) {
        undefined_at = i;
        break;
      }
      series.push_back(rows[i][m]);
    }
    if (undefined_at != history.size()) {
      // A pipeline whose latest run gives no span has no rows_per_span to learn: not worth a note.
      if (IsRowsPerSpan(metric) && !latest.span()) continue;
      program.notes.push_back(absl::StrCat(
          name, " dropped: undefined in run ", undefined_at, " (0 = oldest), ",
          IsRowsPerSpan(metric) ? "which gives no span" : "e.g. a run without non-null values"));
      continue;
    }
    TransformSearchOptions search_options = options.transform;
    search_options.all = options.all_transforms;
    absl::StatusOr<TransformSearchResult> search = FindStationaryTransform(series, search_options);
    if (!search.ok()) {
      program.notes.push_back(
          absl::StrCat(name, " dropped: stationarity test failed: ", search.status().message()));
      continue;
    }
    if (!search->transform) {
      program.notes.push_back(absl::StrCat(
          name, " dropped: not stationary under identity, differencing (lags 1..",
          options.transform.max_diff_lag, ") or their logs (", search->tested, " tests run)"));
      continue;
    }
    for (std::size_t ti = 0; ti < search->all.size(); ++ti) {
      const Transform transform = search->all[ti];
      VLC_ASSIGN_OR_RETURN(const std::vector<double> transformed, transform.Apply(series));

      // Each issue's value as the run after the history before it, transformed; NaN when undefined
      // or outside the transform's domain, which every constraint rejects (as validation does).
      // An earlier run's issue whose history is too short for the transform is not judged: no
      // candidate of this transform covers it.
      std::vector<double> issue_values(issue_rows.size(), kNaN);
      std::vector<char> judged(issue_rows.size(), 1);
      const std::size_t first_run = IsPairwise(metric) ? 1 : 0;
      for (std::size_t j = 0; j < issue_rows.size(); ++j) {
        const double raw = issue_rows[j][m];
        if (std::isnan(raw)) continue;
        const std::size_t before = std::min(series.size(), issue_at[j] - first_run);
        absl::StatusOr<double> v =
            transform.ApplyToNew(absl::MakeConstSpan(series).first(before), raw);
        if (v.ok()) {
          issue_values[j] = *v;
        } else if (issue_at[j] != history.size() && !absl::IsOutOfRange(v.status())) {
          judged[j] = 0;
        }
      }

      BoundAndSide bs = BoundAndSideFor(metric);
      if (options.unimodal && bs.kind != BoundKind::kNormal) bs.kind = BoundKind::kUnimodal;
      VLC_ASSIGN_OR_RETURN(const Moments moments, ComputeMoments(transformed));
      if (bs.kind == BoundKind::kNormal && options.normality_alpha > 0 && !moments.constant) {
        // The Normal tail is the FPR only if the metric is close to normal; a history that is not
        // (a monthly row count with its Februaries) gets the distribution-free bound instead.
        absl::StatusOr<ShapiroWilk> sw = ShapiroWilkTest(transformed);
        if (!sw.ok() || !(sw->p_value >= options.normality_alpha)) {
          bs = {options.unimodal ? BoundKind::kUnimodal : BoundKind::kChebyshev, Side::kTwoSided};
          program.notes.push_back(absl::StrCat(
              name, ": ", options.unimodal ? "unimodal" : "Chebyshev", " bound, not Normal",
              (ti > 0 ? absl::StrCat(" under ", transform.ToString()) : std::string()), ": ",
              sw.ok()
                  ? absl::StrCat("Shapiro-Wilk p = ", sw->p_value, " < ", options.normality_alpha)
                  : std::string(sw.status().message())));
        }
      }
      const std::vector<double> ks =
          moments.constant ? std::vector<double>{options.k_grid.front()} : options.k_grid;
      for (double k : ks) {
        VLC_ASSIGN_OR_RETURN(const QConstraint q,
                             MakeQConstraint(transformed, k, bs.kind, bs.side, options.predictive));
        LearnCandidate cand;
        Constraint& c = cand.constraint;
        c.metric = metric;
        c.transform = transform;
        c.bound = q.kind;
        c.side = q.side;
        c.k = q.k;
        c.mean = q.mean;
        c.sd = q.sd;
        c.lo = q.lo;
        c.hi = q.hi;
        c.fpr = q.fpr;
        c.invariant = q.invariant;
        for (std::size_t j = 0; j < issue_values.size(); ++j) {
          if (judged[j] && !c.Accepts(issue_values[j])) cand.covers.push_back(j);
        }
        c.covered_issues = cand.covers.size();
        cand.group = m * 64 + static_cast<int>(ti);
        learned.push_back(std::move(cand));
      }
      // An invariant stays one under every other transform: one constraint says it.
      if (moments.constant) break;
    }  // transforms
  }

  std::vector<CoverageCandidate> candidates;
  candidates.reserve(learned.size());
  for (const LearnCandidate& l : learned) {
    candidates.push_back({l.group, l.constraint.fpr, l.covers});
  }
  const CoverageSelection selection =
      SelectBudgetedMaxCoverage(candidates, issue_rows.size(), options.delta);
  for (std::size_t i : selection.chosen) program.constraints.push_back(learned[i].constraint);
  program.issues_covered = selection.covered;
  return program;
}

absl::StatusOr<TableProgram> LearnTableProgram(const std::vector<Table>& history,
                                               const AvhOptions& options) {
  if (history.empty()) {
    return absl::InvalidArgumentError("learning a table program needs at least one run");
  }
  const Table& latest = history.back();
  TableProgram program;
  for (const Column& column : latest.columns()) {
    std::vector<Column> runs;
    runs.reserve(history.size());
    std::string skip;
    for (std::size_t i = 0; i < history.size() && skip.empty(); ++i) {
      const Column* c = history[i].Find(column.name());
      if (c == nullptr) {
        skip = absl::StrCat("column '", column.name(), "' skipped: absent from run ", i,
                            " (0 = oldest); it is learned once it has a full history");
      } else if (c->type() != column.type()) {
        skip = absl::StrCat("column '", column.name(), "' skipped: ", ColumnTypeName(c->type()),
                            " in run ", i, " (0 = oldest) but ", ColumnTypeName(column.type()),
                            " in the latest run");
      } else {
        runs.push_back(*c);
      }
    }
    if (!skip.empty()) {
      program.notes.push_back(std::move(skip));
      continue;
    }
    VLC_ASSIGN_OR_RETURN(ColumnProgram cp, LearnColumnProgram(runs, latest.columns(), options));
    program.columns.push_back(std::move(cp));
  }
  // A column that has disappeared is not validated any more; say so once, at learning time.
  std::vector<std::string> gone;
  for (const Table& run : history) {
    for (const Column& c : run.columns()) {
      if (latest.Find(c.name()) == nullptr &&
          std::find(gone.begin(), gone.end(), c.name()) == gone.end()) {
        gone.push_back(c.name());
        program.notes.push_back(
            absl::StrCat("column '", c.name(), "' not learned: absent from the latest run"));
      }
    }
  }
  return program;
}

std::size_t HistoryTailNeeded(const ColumnProgram& program) {
  std::size_t need = 0;
  for (const Constraint& c : program.constraints) {
    const std::size_t lag = static_cast<std::size_t>(std::max(c.transform.lag, 0));
    need = std::max(need, lag + (IsPairwise(c.metric) ? 1 : 0));
  }
  return need;
}

absl::StatusOr<ColumnReport> ValidateColumn(const ColumnProgram& program,
                                            const std::vector<Column>& history_tail,
                                            const Column& new_run) {
  ColumnReport report;
  report.column = program.column;
  if (new_run.type() != program.type) {
    report.passed = false;
    report.problem =
        absl::StrCat("column '", program.column, "' is ", ColumnTypeName(new_run.type()),
                     " in the new run but was ", ColumnTypeName(program.type), " in the ",
                     program.history_runs, " runs the program was learned from");
    return report;
  }
  const std::size_t need = HistoryTailNeeded(program);
  if (history_tail.size() < need) {
    return absl::InvalidArgumentError(
        absl::StrCat("validating column '", program.column, "' needs the last ", need,
                     " runs before the new one (for its differenced and pairwise metrics), got ",
                     history_tail.size()));
  }
  const std::size_t first = history_tail.size() - need;
  for (std::size_t i = first; i < history_tail.size(); ++i) {
    if (history_tail[i].type() != program.type) {
      return absl::InvalidArgumentError(
          absl::StrCat("column '", program.column, "' is ", ColumnTypeName(history_tail[i].type()),
                       " in history run ", i, " of the tail but ", ColumnTypeName(program.type),
                       " in the program"));
    }
  }
  std::vector<MetricRow> tail_rows;
  for (std::size_t i = first; i < history_tail.size(); ++i) {
    VLC_ASSIGN_OR_RETURN(MetricRow row,
                         MetricsOf(history_tail[i], i > first ? &history_tail[i - 1] : nullptr));
    tail_rows.push_back(std::move(row));
  }
  VLC_ASSIGN_OR_RETURN(const MetricRow now,
                       MetricsOf(new_run, need > 0 ? &history_tail.back() : nullptr));

  for (const Constraint& c : program.constraints) {
    const int m = static_cast<int>(c.metric);
    std::vector<double> series;
    for (std::size_t i = IsPairwise(c.metric) ? 1 : 0; i < tail_rows.size(); ++i) {
      series.push_back(tail_rows[i][m]);
    }
    const double raw = now[m];
    double value = kNaN;
    bool out_of_domain = false;
    if (!std::isnan(raw)) {
      absl::StatusOr<double> v = c.transform.ApplyToNew(series, raw);
      if (v.ok()) {
        value = *v;
      } else if (absl::IsOutOfRange(v.status())) {
        out_of_domain = true;
      } else {
        return absl::InvalidArgumentError(absl::StrCat(
            "column '", program.column, "': cannot check ", MetricName(c.metric), " (",
            c.transform.ToString(), ") against the history tail: ", v.status().message()));
      }
    }
    if (c.Accepts(value)) continue;
    Violation violation;
    violation.metric = c.metric;
    violation.constraint = c;
    violation.raw_value = raw;
    violation.value = value;
    violation.message = ViolationMessage(program, c, raw, value, out_of_domain);
    report.violations.push_back(std::move(violation));
  }
  report.passed = report.violations.empty();
  return report;
}

absl::StatusOr<TableReport> Validate(const TableProgram& program,
                                     const std::vector<Table>& history_tail, const Table& new_run) {
  TableReport report;
  for (const ColumnProgram& cp : program.columns) {
    const Column* now = new_run.Find(cp.column);
    if (now == nullptr) {
      ColumnReport missing;
      missing.column = cp.column;
      missing.passed = false;
      missing.problem = absl::StrCat("column '", cp.column,
                                     "' is missing from the new run (it was present in all ",
                                     cp.history_runs, " runs the program was learned from)");
      report.columns.push_back(std::move(missing));
      report.passed = false;
      continue;
    }
    std::vector<Column> tail;
    tail.reserve(history_tail.size());
    for (std::size_t i = 0; i < history_tail.size(); ++i) {
      const Column* c = history_tail[i].Find(cp.column);
      if (c == nullptr) {
        return absl::InvalidArgumentError(
            absl::StrCat("column '", cp.column, "' is missing from history tail run ", i));
      }
      tail.push_back(*c);
    }
    VLC_ASSIGN_OR_RETURN(ColumnReport cr, ValidateColumn(cp, tail, *now));
    report.passed = report.passed && cr.passed;
    report.columns.push_back(std::move(cr));
  }
  return report;
}

nlohmann::json ToJson(const ColumnProgram& program) {
  nlohmann::json constraints = nlohmann::json::array();
  for (const Constraint& c : program.constraints) {
    constraints.push_back({{"metric", MetricName(c.metric)},
                           {"transform", TransformKindName(c.transform.kind)},
                           {"lag", c.transform.lag},
                           {"bound", BoundKindName(c.bound)},
                           {"side", SideName(c.side)},
                           {"k", c.k},
                           {"mean", c.mean},
                           {"sd", c.sd},
                           {"lo", Finite(c.lo)},
                           {"hi", Finite(c.hi)},
                           {"fpr", c.fpr},
                           {"invariant", c.invariant},
                           {"covered_issues", c.covered_issues}});
  }
  return {{"column", program.column},
          {"type", ColumnTypeName(program.type)},
          {"history_runs", program.history_runs},
          {"delta", program.delta},
          {"expected_fpr", program.ExpectedFpr()},
          {"issues_total", program.issues_total},
          {"issues_covered", program.issues_covered},
          {"constraints", std::move(constraints)},
          {"notes", program.notes}};
}

nlohmann::json ToJson(const TableProgram& program) {
  nlohmann::json columns = nlohmann::json::array();
  for (const ColumnProgram& c : program.columns) columns.push_back(ToJson(c));
  return {{"columns", std::move(columns)}, {"notes", program.notes}};
}

absl::StatusOr<ColumnProgram> ColumnProgramFromJson(const nlohmann::json& json) {
  const std::string where = "column program";
  ColumnProgram p;
  VLC_ASSIGN_OR_RETURN(p.column, Field<std::string>(json, "column", where));
  const std::string at = absl::StrCat("column program '", p.column, "'");
  VLC_ASSIGN_OR_RETURN(const std::string type, Field<std::string>(json, "type", at));
  VLC_ASSIGN_OR_RETURN(p.type, ParseColumnType(type));
  VLC_ASSIGN_OR_RETURN(p.history_runs, Field<std::size_t>(json, "history_runs", at));
  VLC_ASSIGN_OR_RETURN(p.delta, Field<double>(json, "delta", at));
  VLC_ASSIGN_OR_RETURN(p.issues_total, Field<std::size_t>(json, "issues_total", at));
  VLC_ASSIGN_OR_RETURN(p.issues_covered, Field<std::size_t>(json, "issues_covered", at));
  VLC_ASSIGN_OR_RETURN(p.notes, Field<std::vector<std::string>>(json, "notes", at));
  if (!json.contains("constraints") || !json.at("constraints").is_array()) {
    return absl::InvalidArgumentError(absl::StrCat(at, ": 'constraints' must be an array"));
  }
  const nlohmann::json& list = json.at("constraints");
  for (std::size_t i = 0; i < list.size(); ++i) {
    VLC_ASSIGN_OR_RETURN(Constraint c,
                         ConstraintFromJson(list[i], absl::StrCat(at, " constraint ", i)));
    if (MetricColumnType(c.metric) != p.type) {
      return absl::InvalidArgumentError(absl::StrCat(at, " constraint ", i, ": metric ",
                                                     MetricName(c.metric), " does not apply to a ",
                                                     ColumnTypeName(p.type), " column"));
    }
    p.constraints.push_back(c);
  }
  return p;
}

absl::StatusOr<TableProgram> TableProgramFromJson(const nlohmann::json& json) {
  TableProgram p;
  if (!json.is_object() || !json.contains("columns") || !json.at("columns").is_array()) {
    return absl::InvalidArgumentError("table program: 'columns' must be an array");
  }
  for (const nlohmann::json& c : json.at("columns")) {
    VLC_ASSIGN_OR_RETURN(ColumnProgram cp, ColumnProgramFromJson(c));
    p.columns.push_back(std::move(cp));
  }
  VLC_ASSIGN_OR_RETURN(p.notes, Field<std::vector<std::string>>(json, "notes", "table program"));
  return p;
}

}  // namespace vlc::dq
