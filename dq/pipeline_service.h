// A recurring pipeline's AVH history kept in a Store (dq/store.h), as both the vlcache-dq command
// line and the server's DataQuality service keep it: appending runs and re-learning each column's
// program, validating a new run, and reading the learned programs back.
//
// What the store holds per pipeline: every run's metric values, and per column a state record
// stored as that column's program: the learned AVH program plus the column's values in the last
// `history` runs. AVH learns from columns, not from metric series (the synthetic issues are made
// from the latest run's values) and validation compares with the previous run's values, so the
// window of raw values is what lets a later call append runs and re-learn, and validate, without
// the original files.
//
// Plain C++ over the Store: the functions take the Store by reference and inherit its threading
// rule (one thread at a time per Store).
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "dq/avh.h"
#include "dq/store.h"
#include "dq/table.h"

namespace vlc::dq {

// The format tag of a column's state record in the store.
inline constexpr const char* kColumnStateFormat = "vlcache-dq-column-state/1";

struct ColumnState {
  std::vector<std::string> run_keys;
  std::vector<Column> window;  // oldest first
  std::optional<ColumnProgram> program;
  std::string note;  // why there is no program
};

// When a column's program is learned again. kEvery: whenever runs are appended, from the latest
// `history` runs (a sliding window, as the method's authors evaluate it). kNever: once, when the
// column first has enough history; later runs only move the window that validation compares
// with (the previous run's values, the transforms' past values).
enum class RelearnMode { kEvery, kNever };

// "every" / "never"; INVALID_ARGUMENT for anything else.
absl::StatusOr<RelearnMode> ParseRelearnMode(std::string_view name);
const char* RelearnModeName(RelearnMode mode);

struct PipelineState {
  std::map<std::string, ColumnState> columns;
  std::optional<std::size_t> history;
  std::optional<double> delta;
  std::optional<RelearnMode> relearn;
  int64_t learned_at_seq = 0;  // the latest run any column's state was stored at
};

// The pipeline's stored state; empty (no columns) for a pipeline the store does not know.
// FAILED_PRECONDITION when a column's record was not written by this module.
absl::StatusOr<PipelineState> LoadPipelineState(Store& store, const std::string& pipeline);

struct LearnSettings {
  std::optional<std::size_t> history;  // runs learned from; unset: the stored value, else 30
  std::optional<double> delta;         // FPR budget; unset: the stored value, else 0.01
  std::optional<RelearnMode> relearn;  // unset: the stored value, else kEvery
};

struct RecordedRun {
  std::string key;
  int64_t seq = 0;
  int64_t rows = 0;
};

// One column after AppendAndLearn.
struct ColumnLearnResult {
  std::string column;
  ColumnType type = ColumnType::kNumeric;
  std::size_t history_runs = 0;  // runs in its window
  bool learned = false;  // has a program after the call
  bool kept = false;     // ... the one it had before (RelearnMode::kNever)
  std::size_t constraints = 0;
  double expected_fpr = 0.0;
  std::size_t issues_covered = 0;
  std::size_t issues_total = 0;
  std::string note;  // why it has no program
};

struct AppendResult {
  std::vector<RecordedRun> runs;           // in the order given
  std::vector<ColumnLearnResult> columns;  // sorted by name
  std::string summary;                     // lines for people (what vlcache-dq learn prints)
};

// Appends `runs` (key, table; oldest first) to the pipeline's history (created on its first run)
// and re-learns every column whose window is long enough. Checked before anything is written:
// INVALID_ARGUMENT for no runs, an empty key or a --history shorter than AVH needs;
// ALREADY_EXISTS for a key the pipeline has recorded already or one given twice.
absl::StatusOr<AppendResult> AppendAndLearn(Store& store, const std::string& pipeline,
                                            const std::vector<std::pair<std::string, Table>>& runs,
                                            const LearnSettings& settings);

struct RunValidation {
  TableReport report;                    // the columns that have a program
  std::vector<std::string> not_checked;  // "column: why" for the others and for new columns
  std::size_t checked = 0;               // columns with a program; 0: nothing could be checked
  std::size_t known_columns = 0;         // columns in the pipeline's history; 0: it has no runs
};

// Checks `run` against the pipeline's learned programs; the history is not changed. A column of
// the program missing from the run fails with `problem` set.
absl::StatusOr<RunValidation> ValidateAgainstHistory(Store& store, const std::string& pipeline,
                                                     const Table& run);

}  // namespace vlc::dq
