// The --dq-db history as the server shares it, and how the server reports a verdict on it.
//
// Two parts of the server use the data-quality history: the DataQuality service (users'
// pipelines, over gRPC) and the telemetry watch (the server's own requests, pipeline
// "vlcache.requests"). A dq::Store is one SQLite connection that one thread at a time may use, so
// both hold the same LockedStore and take its mutex around every use: their calls run one after
// another, and neither can see the other's half-written run.
//
// Both report a verdict the same way (RecordVerdict), so a dashboard and a log search see users'
// pipelines and the server's own alike.
#pragma once

#include <mutex>
#include <string>
#include <utility>

#include "dq/avh.h"
#include "dq/store.h"
#include "server/metrics.h"

namespace vlc::server {

struct LockedStore {
  explicit LockedStore(dq::Store s) : store(std::move(s)) {}

  std::mutex mu;    // held for every use of `store`
  dq::Store store;  // one SQLite connection: single-threaded
};

// The `metric` label of a column that could not be checked at all (missing from the run, or its
// type changed): there is no AVH metric to name, but it is a violation all the same.
inline constexpr const char* kSchemaViolationMetric = "schema";

// Counts a validated run in vlcache_dq_checks_total{pipeline, verdict="pass"|"fail"} and each
// violated constraint in vlcache_dq_violations_total{pipeline, column, metric}, and logs every
// violation on one warning line:
//   event=dq_violation pipeline="..." run="..." column=... metric=... transform=... value=...
//   raw_value=... bounds=[lo,hi]
// (a column that could not be checked: metric=schema problem="..."). Returns the number of
// violations. `metrics` may be null (no metrics listener); the lines are logged all the same.
// The check is counted after its violations, so that a scrape showing the check shows them too.
int RecordVerdict(Metrics* metrics, const std::string& pipeline, const std::string& run_key,
                  const dq::TableReport& report);

}  // namespace vlc::server
