#include "server/telemetry_watch.h"

#include <time.h>

#include <algorithm>
#include <cstdio>
#include <utility>

#include "common/status.h"
#include "dq/pipeline_service.h"
#include "engine/pipeline.h"
#include "spdlog/spdlog.h"

namespace vlc::server {
namespace {

using SystemClock = std::chrono::system_clock;

// "2026-11-03T08:00:00.123Z": sorts as text in time order.
std::string IsoUtc(SystemClock::time_point t) {
  const auto ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(t.time_since_epoch()).count();
  const time_t seconds = static_cast<time_t>(ms / 1000);
  tm utc{};
  gmtime_r(&seconds, &utc);
  char buf[40];
  std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", utc.tm_year + 1900,
                utc.tm_mon + 1, utc.tm_mday, utc.tm_hour, utc.tm_min, utc.tm_sec,
                static_cast<int>(ms % 1000));
  return buf;
}

// Code points of UTF-8 text: what a reader calls the answer's length (bytes would count a CJK
// answer three times).
int64_t Utf8Chars(const std::string& text) {
  int64_t n = 0;
  for (unsigned char c : text) n += (c & 0xC0) != 0x80 ? 1 : 0;
  return n;
}

template <typename T, typename F>
dq::Column NumericColumn(const char* name, const std::vector<T>& rows, F value) {
  dq::Column::NumericValues v;
  v.reserve(rows.size());
  for (const T& r : rows) v.push_back(value(r));
  return dq::Column::Numeric(name, std::move(v));
}

template <typename T, typename F>
dq::Column CategoricalColumn(const char* name, const std::vector<T>& rows, F value) {
  dq::Column::StringValues v;
  v.reserve(rows.size());
  for (const T& r : rows) v.push_back(value(r));
  return dq::Column::Categorical(name, std::move(v));
}

}  // namespace

RequestTelemetry TelemetryRow(const std::string& method, const engine::GenerateResponse& usage) {
  RequestTelemetry r;
  r.prompt_tokens = usage.prompt_tokens;
  r.visual_tokens = usage.visual_tokens;
  r.generated_tokens = usage.generated_tokens;
  r.image_width = usage.media_width;
  r.image_height = usage.media_height;
  r.frames = usage.media_frames;
  r.ttft_seconds = usage.ttft_ms / 1e3;
  // With fewer than two tokens there is no decode step to time; a 0 would drag the mean down.
  if (usage.generated_tokens >= 2) r.seconds_per_token = usage.decode_ms_per_token / 1e3;
  if (usage.kv_bytes_full > 0) {
    r.kv_kept_ratio =
        static_cast<double>(usage.kv_bytes) / static_cast<double>(usage.kv_bytes_full);
  }
  r.output_chars = Utf8Chars(usage.text);
  r.finish_reason = usage.finish_reason;
  r.method = method;
  r.kv_policy = usage.kv_policy;
  return r;
}

absl::StatusOr<dq::Table> TelemetryTable(const std::vector<RequestTelemetry>& rows) {
  using R = RequestTelemetry;
  auto num = [](auto member) {
    return [member](const R& r) -> std::optional<double> { return static_cast<double>(r.*member); };
  };
  auto opt = [](std::optional<double> R::*member) {
    return [member](const R& r) { return r.*member; };
  };
  auto str = [](std::string R::*member) {
    return [member](const R& r) -> std::optional<std::string> { return r.*member; };
  };
  std::vector<dq::Column> columns;
  columns.push_back(NumericColumn("prompt_tokens", rows, num(&R::prompt_tokens)));
  columns.push_back(NumericColumn("visual_tokens", rows, num(&R::visual_tokens)));
  columns.push_back(NumericColumn("generated_tokens", rows, num(&R::generated_tokens)));
  columns.push_back(NumericColumn("image_width", rows, num(&R::image_width)));
  columns.push_back(NumericColumn("image_height", rows, num(&R::image_height)));
  columns.push_back(NumericColumn("frames", rows, num(&R::frames)));
  columns.push_back(NumericColumn("ttft_seconds", rows, num(&R::ttft_seconds)));
  columns.push_back(NumericColumn("seconds_per_token", rows, opt(&R::seconds_per_token)));
  columns.push_back(NumericColumn("kv_kept_ratio", rows, opt(&R::kv_kept_ratio)));
  columns.push_back(NumericColumn("output_chars", rows, num(&R::output_chars)));
  columns.push_back(CategoricalColumn("finish_reason", rows, str(&R::finish_reason)));
  columns.push_back(CategoricalColumn("method", rows, str(&R::method)));
  columns.push_back(CategoricalColumn("kv_policy", rows, str(&R::kv_policy)));
  return dq::Table::Make(std::move(columns));
}

TelemetryWatch::TelemetryWatch(LockedStore* store, Metrics* metrics, TelemetryWatchOptions options)
    : store_(store),
      metrics_(metrics),
      options_(std::move(options)),
      window_start_(SystemClock::now()),
      rng_(std::random_device{}()) {}

TelemetryWatch::~TelemetryWatch() { Stop(); }

void TelemetryWatch::Start() {
  std::lock_guard<std::mutex> lock(mu_);
  if (thread_.joinable() || stop_) return;
  window_start_ = SystemClock::now();
  thread_ = std::thread([this] { Run(); });
  spdlog::info("event=dq_watch_started pipeline=\"{}\" window_seconds={:g} max_rows={}",
               options_.pipeline, options_.window.count() / 1e3, options_.max_rows);
}

void TelemetryWatch::Stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stop_) return;
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();  // waits for a window being closed, if any
  std::lock_guard<std::mutex> lock(mu_);
  spdlog::info(
      "event=dq_window_dropped pipeline=\"{}\" run=\"{}\" requests={} rows={} "
      "reason=\"shutdown: a partial window is not comparable with full ones\"",
      options_.pipeline, IsoUtc(window_start_), seen_, rows_.size());
  rows_.clear();
  seen_ = 0;
}

void TelemetryWatch::Record(RequestTelemetry row) {
  std::lock_guard<std::mutex> lock(mu_);
  ++seen_;
  if (rows_.size() < options_.max_rows) {
    rows_.push_back(std::move(row));
    return;
  }
  // Reservoir sampling (Algorithm R): every request of the window is kept with the same
  // probability max_rows / seen, so the run is a uniform sample of the window's traffic.
  std::uniform_int_distribution<int64_t> pick(0, seen_ - 1);
  const int64_t slot = pick(rng_);
  if (slot < static_cast<int64_t>(rows_.size())) {
    rows_[static_cast<std::size_t>(slot)] = std::move(row);
  }
}

absl::StatusOr<WindowResult> TelemetryWatch::CloseWindow() {
  std::vector<RequestTelemetry> rows;
  WindowResult out;
  SystemClock::time_point start;
  {
    std::lock_guard<std::mutex> lock(mu_);
    rows.swap(rows_);
    out.requests = seen_;
    seen_ = 0;
    // Keys must be unique and in time order: a window that starts within the same millisecond
    // as the last one (CloseWindow called twice at once) or before it (the clock stepped back)
    // takes the millisecond after it.
    start = std::max(window_start_, last_start_ + std::chrono::milliseconds(1));
    if (!rows.empty()) last_start_ = start;
    window_start_ = SystemClock::now();
  }
  out.rows = rows.size();
  if (rows.empty()) return out;  // an idle window: nothing to validate, nothing to learn
  out.run_key = IsoUtc(start);
  const std::string& pipeline = options_.pipeline;
  VLC_ASSIGN_OR_RETURN(dq::Table table, TelemetryTable(rows));
  std::lock_guard<std::mutex> lock(store_->mu);
  VLC_ASSIGN_OR_RETURN(dq::RunValidation v,
                       dq::ValidateAgainstHistory(store_->store, pipeline, table));
  if (v.checked > 0) {
    out.checked = true;
    out.passed = v.report.passed;
    out.violations = RecordVerdict(metrics_, pipeline, out.run_key, v.report);
  }
  // Appended whatever the verdict (see the header): the history is what really happened.
  VLC_ASSIGN_OR_RETURN(
      dq::AppendResult appended,
      dq::AppendAndLearn(store_->store, pipeline, {{out.run_key, std::move(table)}}, {}));
  out.seq = appended.runs.front().seq;
  int learned = 0;
  for (const dq::ColumnLearnResult& c : appended.columns) learned += c.learned ? 1 : 0;
  spdlog::info(
      "event=dq_window pipeline=\"{}\" run=\"{}\" requests={} rows={} verdict={} violations={} "
      "seq={} columns_learned={}",
      pipeline, out.run_key, out.requests, out.rows,
      !out.checked ? "unchecked"
      : out.passed ? "pass"
                   : "fail",
      out.violations, out.seq, learned);
  return out;
}

void TelemetryWatch::Run() {
  using SteadyClock = std::chrono::steady_clock;
  std::unique_lock<std::mutex> lock(mu_);
  auto deadline = SteadyClock::now() + options_.window;
  while (true) {
    if (cv_.wait_until(lock, deadline, [this] { return stop_; })) return;
    lock.unlock();
    absl::StatusOr<WindowResult> closed = CloseWindow();
    if (!closed.ok()) {
      spdlog::error("event=dq_window_failed pipeline=\"{}\" error=\"{}\"", options_.pipeline,
                    std::string(closed.status().message()));
    }
    lock.lock();
    // Windows keep a steady cadence. A check that outlasted the next window's end would leave
    // that window already due: it runs a full window from now instead (one longer window rather
    // than a burst of short, incomparable ones).
    deadline += options_.window;
    const auto now = SteadyClock::now();
    if (deadline < now) {
      spdlog::warn(
          "event=dq_window_late pipeline=\"{}\" window_seconds={:g} "
          "message=\"checking a window took longer than the window; raise --dq-watch-window\"",
          options_.pipeline, options_.window.count() / 1e3);
      deadline = now + options_.window;
    }
  }
}

}  // namespace vlc::server
