// The server validates its own traffic with AVH ("self-watch"): every finished request leaves one
// row of telemetry, and every window (--dq-watch-window, default 1 h) the rows are one run of the
// pipeline "vlcache.requests" in the --dq-db history, checked and then learned from exactly as a
// user's pipeline is (dq/pipeline_service.h), so `vlcache-dq` and the DataQuality RPCs read it too.
//
// The row (RequestTelemetry; these are the run's columns, in this order):
//   prompt_tokens      numeric      prompt tokens, text and visual
//   visual_tokens      numeric      of them visual
//   generated_tokens   numeric
//   image_width        numeric      the first image or video frame as decoded; 0 without media
//   image_height       numeric
//   frames             numeric      images, or frames sampled from the video; 0 without media
//   ttft_seconds       numeric      arrival to first token (queue time included)
//   seconds_per_token  numeric      decode time per token after the first; null below 2 tokens
//   kv_kept_ratio      numeric      KV bytes kept / bytes the full cache would hold (whole
//                                   pages kept, so a short prompt can exceed 1); null if none
//   output_chars       numeric      characters (UTF-8 code points) of the answer
//   finish_reason      categorical  length, eos, stop
//   method             categorical  Generate, SessionGenerate
//   kv_policy          categorical  the policy the request ran with
// Rows are successful Generate and SessionGenerate calls only. Failures are counted by code in
// vlcache_requests_total already, and most never reach the engine, so their rows would be nulls
// that make every column's metrics follow the error rate. A session turn's media belong to its
// session (CreateSession, which generates nothing and is not a row): its media columns are 0.
//
// Closing a window: a window without rows is skipped (no run: an idle hour says nothing about the
// traffic). Otherwise the rows become a table, which is validated against the pipeline's programs
// once they are learned (a column needs dq::AvhOptions::min_history_runs windows); each violation
// is logged and counted (RecordVerdict in server/dq_history.h), and then the window is appended
// as a run (key: the window's start, UTC ISO-8601 with milliseconds) and the programs re-learned.
// Every window is appended, failing ones included: AVH's history is meant to be the pipeline's
// real history, and a lasting change in traffic (a new client, a new model) should become the new
// normal after enough runs instead of failing every window from then on; one odd window among 30
// barely moves the learned bounds. The partial window open at shutdown is dropped (logged with
// its row count): it is shorter than the others, so its counts and sums are not comparable.
//
// Threads: request handlers call Record, which only appends under a small mutex (the SQLite work
// happens on the watch's own thread, under the store's mutex shared with the DataQuality
// service). A busy window keeps at most `max_rows` rows, a uniform sample of its requests
// (reservoir sampling), so memory and learning time stay bounded; the row count then saturates
// at max_rows and stops following the traffic volume.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "dq/table.h"
#include "server/dq_history.h"
#include "server/metrics.h"

namespace vlc::engine {
struct GenerateResponse;
}

namespace vlc::server {

// The pipeline name of the server's own requests in the --dq-db history.
inline constexpr const char* kRequestsPipeline = "vlcache.requests";

struct RequestTelemetry {
  int64_t prompt_tokens = 0;
  int64_t visual_tokens = 0;
  int64_t generated_tokens = 0;
  int64_t image_width = 0;
  int64_t image_height = 0;
  int64_t frames = 0;
  double ttft_seconds = 0;
  std::optional<double> seconds_per_token;
  std::optional<double> kv_kept_ratio;
  int64_t output_chars = 0;
  std::string finish_reason;
  std::string method;
  std::string kv_policy;
};

// The row of a finished request; `method` is the RPC ("Generate", "SessionGenerate").
RequestTelemetry TelemetryRow(const std::string& method, const engine::GenerateResponse& usage);

// The rows as a table with the columns above, in that order.
absl::StatusOr<dq::Table> TelemetryTable(const std::vector<RequestTelemetry>& rows);

struct TelemetryWatchOptions {
  std::string pipeline = kRequestsPipeline;
  std::chrono::milliseconds window = std::chrono::hours(1);
  std::size_t max_rows = 10000;  // per window; more requests are sampled down to this
};

// What closing one window did.
struct WindowResult {
  std::string run_key;   // "" when the window was skipped
  int64_t requests = 0;  // requests recorded in the window
  std::size_t rows = 0;  // rows of the run (requests, or max_rows of them)
  bool checked = false;  // a learned program validated it
  bool passed = true;    // its verdict (true when not checked)
  int violations = 0;
  int64_t seq = 0;  // the run's number in the pipeline; 0 when skipped
};

class TelemetryWatch {
 public:
  // `store` is shared with the DataQuality service; `metrics` may be null.
  TelemetryWatch(LockedStore* store, Metrics* metrics, TelemetryWatchOptions options);
  ~TelemetryWatch();  // Stop()
  TelemetryWatch(const TelemetryWatch&) = delete;
  TelemetryWatch& operator=(const TelemetryWatch&) = delete;

  // Starts the thread that closes a window every options.window. Without it, windows close only
  // when CloseWindow is called (tests).
  void Start();
  // Stops the thread at once (it finishes a window being closed) and drops the open window with
  // a log line. Idempotent.
  void Stop();

  // Adds a finished request to the open window; cheap, never waits for the store.
  void Record(RequestTelemetry row);

  // Closes the open window now and opens the next: validates, counts, logs and appends it as
  // described above. An error (the store failed) loses that window's rows; the next window
  // starts all the same.
  absl::StatusOr<WindowResult> CloseWindow();

 private:
  void Run();

  LockedStore* store_;
  Metrics* metrics_;
  const TelemetryWatchOptions options_;

  std::mutex mu_;  // guards everything below
  std::condition_variable cv_;
  bool stop_ = false;
  std::vector<RequestTelemetry> rows_;
  int64_t seen_ = 0;  // requests recorded in the open window
  std::chrono::system_clock::time_point window_start_;
  std::chrono::system_clock::time_point last_start_;  // of the last window stored (its key)
  std::mt19937_64 rng_;
  std::thread thread_;
};

}  // namespace vlc::server
