#include "server/dq_history.h"

#include "dq/metrics.h"
#include "spdlog/spdlog.h"

namespace vlc::server {

int RecordVerdict(Metrics* metrics, const std::string& pipeline, const std::string& run_key,
                  const dq::TableReport& report) {
  int violations = 0;
  for (const dq::ColumnReport& c : report.columns) {
    if (!c.problem.empty()) {
      ++violations;
      if (metrics) metrics->CountDqViolation(pipeline, c.column, kSchemaViolationMetric);
      spdlog::warn(
          "event=dq_violation pipeline=\"{}\" run=\"{}\" column={} metric={} problem=\"{}\"",
          pipeline, run_key, c.column, kSchemaViolationMetric, c.problem);
    }
    for (const dq::Violation& v : c.violations) {
      ++violations;
      const std::string& metric = dq::MetricName(v.metric);
      if (metrics) metrics->CountDqViolation(pipeline, c.column, metric);
      spdlog::warn(
          "event=dq_violation pipeline=\"{}\" run=\"{}\" column={} metric={} transform={} "
          "value={:g} raw_value={:g} bounds=[{:g},{:g}]",
          pipeline, run_key, c.column, metric, v.constraint.transform.ToString(), v.value,
          v.raw_value, v.constraint.lo, v.constraint.hi);
    }
  }
  // The check is counted last: a scrape that sees it also sees every violation it found.
  if (metrics) metrics->CountDqCheck(pipeline, report.passed);
  return violations;
}

}  // namespace vlc::server
