// The AVH history (docs/METHODS.md) persisted in one SQLite file: per pipeline, its runs
// in time order, every metric value of every column of every run, and the programs learned from
// that history. AVH learns a column's program from the last N runs' metric series, so the store's
// main read is MetricSeries(); its main write is AddRun(), one transaction per run.
//
// Durability and atomicity are the point of the store, so they are fixed, not options:
// - A run is added in ONE transaction: after a crash (kill -9, power loss) a run is either
//   present with all its metric values or absent. A half-written run would silently shorten or
//   bias every series it belongs to, and AVH would learn from it.
// - journal_mode=WAL: readers (a dashboard, a second validator) do not block the writer, and a
//   commit appends to the log instead of rewriting pages in place.
// - synchronous=FULL: in WAL mode NORMAL survives a killed process but not power loss or an OS
//   crash (the last commits may roll back, since the WAL is only fsync'ed at checkpoints). A
//   pipeline that was told "run 2012-01 recorded" must not find it gone after a reboot, and a
//   run is written once per period, so the extra fsync per commit costs nothing that matters.
// - foreign_keys=ON, so a metric value or a program cannot point at a run that does not exist.
//
// The file carries SQLite's application_id and a schema version table; Open() creates the schema
// in a new or empty file, migrates an older one, and refuses a file that is not a vlcache dq store
// (a random file, another program's SQLite database) or was written by a newer vlcache.
//
// A Store is one SQLite connection with prepared statements reused across calls: use it from one
// thread at a time. Several Stores (threads or processes) may share a file; writers queue on
// SQLite's lock for up to StoreOptions::busy_timeout_ms, then get UNAVAILABLE.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "dq/metrics.h"
#include "nlohmann/json.hpp"

namespace vlc::dq {

struct StoreOptions {
  // How long a write waits for another connection's write transaction before giving up.
  int busy_timeout_ms = 5000;
};

// One run's metric values: column name -> that column's metrics (as ComputeMetrics returns them).
using RunMetrics = std::map<std::string, std::vector<MetricValue>>;

struct RunInfo {
  int64_t seq = 0;            // 1, 2, 3, ... per pipeline, in the order the runs were added
  std::string run_key;        // the caller's name of the run, unique per pipeline ("2012-01")
  int64_t row_count = 0;      // rows of the run's table
  int64_t added_unix_ms = 0;  // wall-clock time of AddRun, milliseconds since the Unix epoch
};

// One point of a metric's history.
struct MetricPoint {
  int64_t run_seq = 0;
  std::string run_key;
  double value = 0;  // NaN when the metric was undefined for that run (stored as NULL)
};

// A learned program as stored: the JSON is opaque to the store (the program type owns its format).
struct StoredProgram {
  int64_t learned_at_seq = 0;  // the last run of the history it was learned from
  nlohmann::json program;
};

class Store {
 public:
  // Opens `path`, creating the file and the schema when it does not exist. Errors name the file:
  // FAILED_PRECONDITION when the file is not a vlcache dq store or its schema is newer than this
  // build; the SQLite error (cannot open, read-only, ...) otherwise.
  static absl::StatusOr<Store> Open(const std::string& path, StoreOptions options = {});

  // A moved-from Store may only be assigned to or destroyed.
  Store(Store&&) noexcept;
  Store& operator=(Store&&) noexcept;
  ~Store();

  const std::string& path() const;

  // Records a run of `pipeline` (created on its first run) with its metric values, all in one
  // transaction, and returns the run's sequence number (one more than the pipeline's last run).
  // ALREADY_EXISTS when the pipeline already has a run called `run_key`; INVALID_ARGUMENT for an
  // empty pipeline name, run key or column name, a negative row count, or a metric given twice
  // for one column. On any error nothing is written.
  absl::StatusOr<int64_t> AddRun(const std::string& pipeline, const std::string& run_key,
                                 int64_t row_count, const RunMetrics& metrics);

  // Pipeline names, sorted.
  absl::StatusOr<std::vector<std::string>> Pipelines();
  // The pipeline's runs, oldest first. NOT_FOUND for an unknown pipeline (as for every read
  // below that takes a pipeline).
  absl::StatusOr<std::vector<RunInfo>> Runs(const std::string& pipeline);
  // Names of the columns that have metric values in any of the pipeline's runs, sorted.
  absl::StatusOr<std::vector<std::string>> Columns(const std::string& pipeline);
  // Every metric value of run `run_seq`. NOT_FOUND when the pipeline has no such run.
  absl::StatusOr<RunMetrics> RunValues(const std::string& pipeline, int64_t run_seq);

  // The metric's values for the column over the runs that recorded it, oldest first: the last
  // `last_n` of them, or all when `last_n` is empty. A run without a value for this metric (the
  // first run has no pairwise metrics) is skipped rather than reported as NaN, so NaN always means
  // "recorded as undefined". Empty when the column never recorded the metric.
  absl::StatusOr<std::vector<MetricPoint>> MetricSeries(const std::string& pipeline,
                                                        const std::string& column, Metric metric,
                                                        std::optional<size_t> last_n = {});

  // Stores the program learned for the column from the history up to run `run_seq`; storing
  // again for the same run replaces it (a re-learn after a fix). NOT_FOUND when the pipeline has
  // no run `run_seq`; INVALID_ARGUMENT for an empty column name.
  absl::Status PutProgram(const std::string& pipeline, const std::string& column, int64_t run_seq,
                          const nlohmann::json& program);
  // The program learned at the latest run. NOT_FOUND when none was stored for the column.
  absl::StatusOr<StoredProgram> GetProgram(const std::string& pipeline, const std::string& column);

 private:
  struct Impl;
  explicit Store(std::unique_ptr<Impl> impl);

  std::unique_ptr<Impl> impl_;
};

}  // namespace vlc::dq
