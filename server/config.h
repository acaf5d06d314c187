// The server's configuration: command-line flags, then VLC_* environment variables, then an
// optional YAML file (--config), then defaults, in that order of precedence. `--help` documents
// every option; an invalid value is an error naming the option and where it came from.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/pipeline.h"

namespace vlc::server {

// The engine's options as the server starts them: the library's, except that the KV cache is
// compressed by default (vlcache-guard at 10%, prompts of 32 tokens or more: docs/BENCHMARKS.md).
engine::PipelineOptions ServerPipelineDefaults();

struct ServerConfig {
  // Serving
  std::string model_dir = "models/demo";    // --model, VLC_MODEL, model
  std::string model_name;                   // --model-name; "": the model directory's base name
  std::string listen = "0.0.0.0:50051";     // --listen, VLC_LISTEN, listen (port 0: any free port)
  std::string metrics_listen = "0.0.0.0:9464";  // --metrics-listen ... ("" disables metrics)
  std::string http_listen;                  // --http-listen: the OIP's HTTP/REST binding ("": off)
  int http_threads = 64;                    // --http-threads: HTTP connections served at once
  int threads = 0;                          // --threads: LibTorch threads, 0 = cores available
  // Limits and scheduling
  int max_queue = 64;                       // --max-queue: requests waiting for admission
  int max_running = 16;                     // --max-running: sequences decoded together
  int max_sessions = 256;                   // --max-sessions
  double session_ttl_seconds = 600;         // --session-ttl-seconds: idle sessions expire
  double heap_trim_idle_seconds = 5;       // --heap-trim-idle: freed memory returned
  double drain_timeout_seconds = 30;        // --drain-timeout: calls in flight at SIGTERM finish
  std::string session_store;                // --session-store: directory of session snapshots
  int media_workers = 0;                    // --media-workers: 0 = half the cores (1 to 4)
  // The engine's options: limits, KV cache, default policy (see engine/pipeline.h).
  engine::PipelineOptions pipeline = ServerPipelineDefaults();  // --device, --dtype,
                                            // --kv-cache-bytes, --kv-page-tokens, --kv-policy,
                                            // --kv-budget, --kv-compress-min-tokens,
                                            // --max-prompt-tokens, --max-new-tokens,
                                            // --max-media-bytes, --max-pixels, --max-frames,
                                            // --video-frames, --chat-template,
                                            // --chat-turn-prefix, --prefill-chunk-tokens
  int default_max_new_tokens = 128;         // --default-max-new-tokens
  // Data quality (the DataQuality service, proto/vlcache/v1/data_quality.proto)
  std::string dq_db;                        // --dq-db: SQLite history; "" = service not served
  int64_t dq_max_run_bytes = 16 << 20;      // --dq-max-run-bytes: largest CSV run in a request
  // The telemetry watch (server/telemetry_watch.h), on with --dq-db: every window the requests'
  // telemetry is validated and appended as a run of pipeline "vlcache.requests".
  double dq_watch_window_seconds = 3600;    // --dq-watch-window: 1h, 15m, 30s; 0 or off disables
  int dq_watch_max_rows = 10000;            // --dq-watch-max-rows: rows kept per window (sampled)
  // Security
  std::string auth_token_file;              // --auth-token-file: one bearer token per line
  std::string auth_token;                   // VLC_AUTH_TOKEN only (never a flag: ps shows flags)
  std::string tls_cert_file;                // --tls-cert
  std::string tls_key_file;                 // --tls-key
  int tls_reload_seconds = 60;              // --tls-reload-seconds: how often the files are reread
  // Logging
  std::string log_format = "text";          // --log-format text|json
  std::string log_level = "info";           // --log-level trace|debug|info|warn|error
};

// Parses argv, the environment and the YAML file. Returns the config, or INVALID_ARGUMENT with a
// message naming the option; `--help` output, and with `--check-config` the settings and where
// each came from, go to `help_text` with an OK status and `*exit_now` set.
absl::StatusOr<ServerConfig> LoadConfig(int argc, const char* const* argv, std::string* help_text,
                                        bool* exit_now);

// "host:port" split into its parts (an IPv6 host in brackets, "[::1]:50051", comes back without
// them; port 0..65535); INVALID_ARGUMENT saying what is wrong otherwise. Shared by the config
// checks and the metrics listener.
struct HostPort {
  std::string host;
  int port = 0;
};
absl::StatusOr<HostPort> ParseHostPort(const std::string& address);

// Parses a byte size: a plain integer or one with a binary suffix K, M, G or T (optionally
// followed by "i" and/or "B": 512M, 2GiB, 64KB all count powers of 1024). INVALID_ARGUMENT on
// anything else, negative values and overflow.
absl::StatusOr<int64_t> ParseByteSize(const std::string& text);

// Parses a duration into seconds: a non-negative number with an optional unit s, m or h (plain
// numbers are seconds: 90, 90s, 1.5m, 1h); "off" is 0. INVALID_ARGUMENT on anything else.
absl::StatusOr<double> ParseDurationSeconds(const std::string& text);
// The duration as ParseDurationSeconds reads it back, in the largest whole unit: "1h", "90s",
// "off" for 0.
std::string FormatDurationSeconds(double seconds);

}  // namespace vlc::server
