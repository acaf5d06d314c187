#include "server/config.h"

#include <yaml-cpp/yaml.h>

#include <CLI/CLI.hpp>
#include <cmath>
#include <cstdlib>
#include <functional>
#include <limits>
#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "engine/chat_template.h"
#include "engine/device.h"
#include "kvcache/policy.h"

namespace vlc::server {
namespace {

// Every option goes through one table: CLI11 only recognises flags and collects their raw text,
// and the same parser then reads a flag, an environment variable or a YAML value, so that all
// three sources accept the same syntax and report errors the same way.
template <typename T>
using Field = T& (*)(ServerConfig&);

struct OptionSpec {
  std::string flag;  // "--kv-cache-bytes"
  std::string type;  // shown in --help: INT, BYTES, ...
  std::string help;
  // The value as text, for the default shown in --help (non-const: it goes through the same
  // accessor as `set`).
  std::function<std::string(ServerConfig&)> show;
  // Parses `text` into the config; the error message says what is wrong, not where from.
  std::function<absl::Status(const std::string& text, ServerConfig*)> set;
};

std::string EnvName(const std::string& flag) {
  return "VLC_" + absl::AsciiStrToUpper(absl::StrReplaceAll(flag.substr(2), {{"-", "_"}}));
}

std::string YamlKey(const std::string& flag) {
  return absl::StrReplaceAll(flag.substr(2), {{"-", "_"}});
}

absl::StatusOr<int64_t> ParseInteger(const std::string& text, int64_t min, int64_t max) {
  int64_t v = 0;
  if (!absl::SimpleAtoi(text, &v)) {
    return absl::InvalidArgumentError(absl::StrCat("expected an integer, got \"", text, "\""));
  }
  if (v < min || v > max) {
    return absl::InvalidArgumentError(absl::StrCat("must be in [", min, ", ", max, "], got ", v));
  }
  return v;
}

OptionSpec IntOption(std::string flag, std::string help, Field<int> field, int min) {
  return {std::move(flag), "INT", std::move(help),
          [field](ServerConfig& c) { return std::to_string(field(c)); },
          [field, min](const std::string& text, ServerConfig* c) -> absl::Status {
            auto v = ParseInteger(text, min, std::numeric_limits<int>::max());
            if (!v.ok()) return v.status();
            field(*c) = static_cast<int>(*v);
            return absl::OkStatus();
          }};
}

OptionSpec Int64Option(std::string flag, std::string help, Field<int64_t> field, int64_t min) {
  return {std::move(flag), "INT", std::move(help),
          [field](ServerConfig& c) { return std::to_string(field(c)); },
          [field, min](const std::string& text, ServerConfig* c) -> absl::Status {
            auto v = ParseInteger(text, min, std::numeric_limits<int64_t>::max());
            if (!v.ok()) return v.status();
            field(*c) = *v;
            return absl::OkStatus();
          }};
}

OptionSpec BytesOption(std::string flag, std::string help, Field<int64_t> field) {
  return {std::move(flag), "BYTES", std::move(help),
          [field](ServerConfig& c) { return std::to_string(field(c)); },
          [field](const std::string& text, ServerConfig* c) -> absl::Status {
            auto v = ParseByteSize(text);
            if (!v.ok()) return v.status();
            if (*v <= 0) return absl::InvalidArgumentError("must be positive, got 0");
            field(*c) = *v;
            return absl::OkStatus();
          }};
}

// A real number in (low, high]; `high` may be infinity.
OptionSpec DoubleOption(std::string flag, std::string help, Field<double> field, double low,
                        double high) {
  return {std::move(flag), "FLOAT", std::move(help),
          [field](ServerConfig& c) {
            std::ostringstream out;
            out << field(c);
            return out.str();
          },
          [field, low, high](const std::string& text, ServerConfig* c) -> absl::Status {
            double v = 0;
            if (!absl::SimpleAtod(text, &v) || !std::isfinite(v)) {
              return absl::InvalidArgumentError(
                  absl::StrCat("expected a finite number, got \"", text, "\""));
            }
            if (!(v > low && v <= high)) {
              return absl::InvalidArgumentError(
                  std::isinf(high)
                      ? absl::StrCat("must be > ", low, ", got ", text)
                      : absl::StrCat("must be in (", low, ", ", high, "], got ", text));
            }
            field(*c) = v;
            return absl::OkStatus();
          }};
}

// A duration (ParseDurationSeconds): 0 (or "off") or at least `min_seconds`.
OptionSpec DurationOption(std::string flag, std::string help, Field<double> field,
                          double min_seconds) {
  return {std::move(flag), "DURATION", std::move(help),
          [field](ServerConfig& c) { return FormatDurationSeconds(field(c)); },
          [field, min_seconds](const std::string& text, ServerConfig* c) -> absl::Status {
            auto v = ParseDurationSeconds(text);
            if (!v.ok()) return v.status();
            if (*v != 0 && *v < min_seconds) {
              return absl::InvalidArgumentError(absl::StrCat("must be 0 (off) or at least ",
                                                             FormatDurationSeconds(min_seconds),
                                                             ", got \"", text, "\""));
            }
            field(*c) = *v;
            return absl::OkStatus();
          }};
}

using TextCheck = std::function<absl::Status(const std::string&)>;

OptionSpec StringOption(std::string flag, std::string type, std::string help,
                        Field<std::string> field, TextCheck check = nullptr) {
  return {std::move(flag), std::move(type), std::move(help),
          [field](ServerConfig& c) {
            // The default chat template holds a newline, which would break the help layout.
            return absl::StrReplaceAll(field(c), {{"\n", "\\n"}});
          },
          [field, check](const std::string& text, ServerConfig* c) -> absl::Status {
            if (check) {
              if (absl::Status s = check(text); !s.ok()) return s;
            }
            field(*c) = text;
            return absl::OkStatus();
          }};
}

TextCheck OneOf(std::vector<std::string> allowed) {
  return [allowed = std::move(allowed)](const std::string& text) -> absl::Status {
    for (const auto& a : allowed) {
      if (text == a) return absl::OkStatus();
    }
    return absl::InvalidArgumentError(
        absl::StrCat("must be one of ", absl::StrJoin(allowed, ", "), "; got \"", text, "\""));
  };
}

absl::Status NotEmpty(const std::string& text) {
  return text.empty() ? absl::InvalidArgumentError("must not be empty") : absl::OkStatus();
}

std::vector<OptionSpec> Options() {
  const std::string policies = absl::StrJoin(kvcache::PolicyNames(), ", ");
  std::vector<OptionSpec> o;
  // Serving
  o.push_back(StringOption(
      "--model", "DIR", "Model directory (config.json, weights, tokenizer)",
      +[](ServerConfig& c) -> std::string& { return c.model_dir; }, NotEmpty));
  o.push_back(StringOption(
      "--model-name", "NAME",
      "The model's name in the Open Inference Protocol (default: the model folder's name)",
      +[](ServerConfig& c) -> std::string& { return c.model_name; }, nullptr));
  o.push_back(StringOption(
      "--listen", "HOST:PORT", "gRPC address; port 0 picks a free port",
      +[](ServerConfig& c) -> std::string& { return c.listen; },
      [](const std::string& t) { return ParseHostPort(t).status(); }));
  o.push_back(StringOption(
      "--metrics-listen", "HOST:PORT", "Prometheus /metrics address; empty disables metrics",
      +[](ServerConfig& c) -> std::string& { return c.metrics_listen; },
      [](const std::string& t) {
        return t.empty() ? absl::OkStatus() : ParseHostPort(t).status();
      }));
  o.push_back(StringOption(
      "--http-listen", "HOST:PORT",
      "The Open Inference Protocol's HTTP/REST binding (KServe v2 and Triton's generate "
      "extension); empty (the default) serves gRPC only",
      +[](ServerConfig& c) -> std::string& { return c.http_listen; },
      [](const std::string& t) {
        return t.empty() ? absl::OkStatus() : ParseHostPort(t).status();
      }));
  o.push_back(IntOption(
      "--http-threads",
      "HTTP connections served at once (a streamed answer holds one for its whole length)",
      +[](ServerConfig& c) -> int& { return c.http_threads; }, 1));
  o.push_back(IntOption(
      "--threads", "CPU threads of LibTorch and OpenBLAS; 0 uses the cores available",
      +[](ServerConfig& c) -> int& { return c.threads; }, 0));
  o.push_back(StringOption(
      "--device", "DEVICE",
      "Where the model and the KV cache run: cpu, cuda, or auto (cuda when a GPU is usable)",
      +[](ServerConfig& c) -> std::string& { return c.pipeline.device; },
      OneOf(engine::DeviceNames())));
  o.push_back(StringOption(
      "--dtype", "DTYPE",
      "The model's element type: auto (float32 on cpu, bfloat16 on cuda), float32, bfloat16, "
      "float16 (on cpu: float16 weights, float32 activations)",
      +[](ServerConfig& c) -> std::string& { return c.pipeline.dtype; },
      OneOf(engine::DTypeNames())));
  o.push_back(StringOption(
      "--quantize", "MODE",
      "Decoder weights: none, or int8 (weight-only, per output channel, quantized at load; "
      "cpu only)",
      +[](ServerConfig& c) -> std::string& { return c.pipeline.quantize; },
      OneOf(engine::QuantizeNames())));
  // Limits and scheduling
  o.push_back(IntOption(
      "--max-queue", "Requests waiting for admission before RESOURCE_EXHAUSTED",
      +[](ServerConfig& c) -> int& { return c.max_queue; }, 1));
  o.push_back(IntOption(
      "--max-running", "Sequences decoded together in one batch",
      +[](ServerConfig& c) -> int& { return c.max_running; }, 1));
  o.push_back(IntOption(
      "--max-sessions", "Sessions (conversations with a kept KV cache) at once",
      +[](ServerConfig& c) -> int& { return c.max_sessions; }, 1));
  o.push_back(DoubleOption(
      "--session-ttl-seconds", "Idle sessions expire after this many seconds",
      +[](ServerConfig& c) -> double& { return c.session_ttl_seconds; }, 0,
      std::numeric_limits<double>::infinity()));
  o.push_back(DurationOption(
      "--heap-trim-idle",
      "Once the engine has been idle this long (5s, 1m, ...) after work, the memory freed "
      "meanwhile is returned to the system (a burst would otherwise leave the process at its "
      "peak size); 0 or off: never",
      +[](ServerConfig& c) -> double& { return c.heap_trim_idle_seconds; }, 0.1));
  o.push_back(StringOption(
      "--session-store", "DIR",
      "Directory (a volume the replicas share) where sessions are saved when the server stops "
      "and from which a replica continues a session it does not hold; empty: sessions end with "
      "the process",
      +[](ServerConfig& c) -> std::string& { return c.session_store; }, nullptr));
  o.push_back(DoubleOption(
      "--drain-timeout",
      "Seconds the calls in flight at SIGTERM may take to finish (new ones are refused)",
      +[](ServerConfig& c) -> double& { return c.drain_timeout_seconds; }, 0, 3600));
  // The engine
  o.push_back(BytesOption(
      "--kv-cache-bytes", "KV page pool size, allocated at load (integer or 512M, 2G, ...)",
      +[](ServerConfig& c) -> int64_t& { return c.pipeline.kv_cache_bytes; }));
  o.push_back(IntOption(
      "--kv-page-tokens", "Tokens per KV cache page",
      +[](ServerConfig& c) -> int& { return c.pipeline.kv_page_tokens; }, 1));
  o.push_back(StringOption(
      "--kv-policy", "NAME", "Default KV cache policy (" + policies + ")",
      +[](ServerConfig& c) -> std::string& { return c.pipeline.cache_policy.name; },
      OneOf(kvcache::PolicyNames())));
  o.push_back(DoubleOption(
      "--kv-budget", "Default fraction of the prompt's KV cache kept, in (0, 1]",
      +[](ServerConfig& c) -> double& { return c.pipeline.cache_policy.budget; }, 0, 1));
  o.push_back(IntOption(
      "--kv-compress-min-tokens",
      "Prompts shorter than this are not compressed (0: every prompt is)",
      +[](ServerConfig& c) -> int& { return c.pipeline.cache_policy.min_prompt_tokens; }, 0));
  o.push_back(IntOption(
      "--max-prompt-tokens", "Longest prompt, text and visual tokens together",
      +[](ServerConfig& c) -> int& { return c.pipeline.max_prompt_tokens; }, 1));
  o.push_back(IntOption(
      "--max-new-tokens", "Hard limit on tokens generated per request",
      +[](ServerConfig& c) -> int& { return c.pipeline.max_new_tokens_limit; }, 1));
  o.push_back(IntOption(
      "--default-max-new-tokens",
      "Tokens generated when a request does not say (at most --max-new-tokens)",
      +[](ServerConfig& c) -> int& { return c.default_max_new_tokens; }, 1));
  o.push_back(BytesOption(
      "--max-media-bytes", "Largest encoded image or video (integer or 64M, ...)",
      +[](ServerConfig& c) -> int64_t& { return c.pipeline.limits.max_bytes; }));
  o.push_back(Int64Option(
      "--max-pixels", "Largest decoded image or frame, width * height",
      +[](ServerConfig& c) -> int64_t& { return c.pipeline.limits.max_pixels; }, 1));
  o.push_back(IntOption(
      "--max-frames", "Most frames sampled from one video",
      +[](ServerConfig& c) -> int& { return c.pipeline.limits.max_frames; }, 1));
  o.push_back(IntOption(
      "--video-frames", "Frames sampled from a video when the request does not say",
      +[](ServerConfig& c) -> int& { return c.pipeline.default_video_frames; }, 1));
  o.push_back(StringOption(
      "--chat-template", "TEXT",
      "Prompt template: {prompt} (once) is replaced by the user's text, <image> (at most once, "
      "before {prompt}) by the media's visual tokens",
      +[](ServerConfig& c) -> std::string& { return c.pipeline.chat_template; },
      [](const std::string& text) { return engine::ChatTemplate::Parse(text).status(); }));
  o.push_back(StringOption(
      "--chat-turn-prefix", "TEXT",
      "Text that starts every session turn after the first; empty: the template's text before "
      "<image> (\"USER: \" for the default template)",
      +[](ServerConfig& c) -> std::string& { return c.pipeline.chat_turn_prefix; }));
  o.push_back(Int64Option(
      "--prefill-chunk-tokens",
      "Prompt tokens prefilled per engine step, between the decode steps of running streams "
      "(a long video never freezes them); 0 prefills each prompt whole",
      +[](ServerConfig& c) -> int64_t& { return c.pipeline.prefill_chunk_tokens; }, 0));
  o.push_back(IntOption(
      "--warm-up-requests",
      "Synthetic requests (a picture and a short question) run at load, before the server "
      "reports ready, so the first user's request pays no first-use costs; 0 = none",
      +[](ServerConfig& c) -> int& { return c.pipeline.warm_up_requests; }, 0));
  o.push_back(IntOption(
      "--media-workers",
      "Threads that decode media and run the vision tower, off the engine thread; 0 = half the "
      "cores available (1 to 4)",
      +[](ServerConfig& c) -> int& { return c.media_workers; }, 0));
  // Data quality
  o.push_back(StringOption(
      "--dq-db", "FILE",
      "SQLite file of the data-quality history (created when missing); with it the DataQuality "
      "service is served, without it (the default) it is not",
      +[](ServerConfig& c) -> std::string& { return c.dq_db; }));
  o.push_back(BytesOption(
      "--dq-max-run-bytes",
      "Largest CSV run a DataQuality request may carry (integer or 16M, ...)",
      +[](ServerConfig& c) -> int64_t& { return c.dq_max_run_bytes; }));
  // Shorter windows than a second would spend the server on fsyncs and learning, and windows
  // of a few requests teach AVH little.
  o.push_back(DurationOption(
      "--dq-watch-window",
      "With --dq-db: every window (30s, 15m, 1h, ...) the server validates its own requests' "
      "telemetry as a run of pipeline vlcache.requests and appends it; 0 or off disables",
      +[](ServerConfig& c) -> double& { return c.dq_watch_window_seconds; }, 1));
  o.push_back(IntOption(
      "--dq-watch-max-rows",
      "Requests kept per telemetry window; a busier window keeps a uniform sample of this size",
      +[](ServerConfig& c) -> int& { return c.dq_watch_max_rows; }, 1));
  // Security
  o.push_back(StringOption(
      "--auth-token-file", "FILE",
      "Bearer tokens, one per line; with it (or VLC_AUTH_TOKEN) every call needs one",
      +[](ServerConfig& c) -> std::string& { return c.auth_token_file; }));
  o.push_back(StringOption(
      "--tls-cert", "FILE", "TLS certificate chain (PEM); needs --tls-key",
      +[](ServerConfig& c) -> std::string& { return c.tls_cert_file; }));
  o.push_back(StringOption(
      "--tls-key", "FILE", "TLS private key (PEM); needs --tls-cert",
      +[](ServerConfig& c) -> std::string& { return c.tls_key_file; }));
  o.push_back(IntOption(
      "--tls-reload-seconds",
      "How often the certificate and key files are read again: a rotated certificate (a renewed "
      "Kubernetes secret, say) is served to new connections without a restart",
      +[](ServerConfig& c) -> int& { return c.tls_reload_seconds; }, 1));
  // Logging
  o.push_back(StringOption(
      "--log-format", "FORMAT", "Log lines as text or json",
      +[](ServerConfig& c) -> std::string& { return c.log_format; }, OneOf({"text", "json"})));
  o.push_back(StringOption(
      "--log-level", "LEVEL", "trace, debug, info, warn or error",
      +[](ServerConfig& c) -> std::string& { return c.log_level; },
      OneOf({"trace", "debug", "info", "warn", "error"})));
  return o;
}

absl::Status Invalid(const std::string& where, const absl::Status& what) {
  return absl::InvalidArgumentError(absl::StrCat(where, ": ", what.message()));
}

// A YAML file read into key -> scalar text, every key checked against the option table.
absl::StatusOr<std::map<std::string, std::string>> ReadYaml(const std::string& path,
                                                            const std::vector<OptionSpec>& specs) {
  YAML::Node root;
  try {
    root = YAML::LoadFile(path);
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("config file ", path, ": ", e.what()));
  }
  std::map<std::string, std::string> values;
  if (root.IsNull()) return values;  // an empty file sets nothing
  if (!root.IsMap()) {
    return absl::InvalidArgumentError(
        absl::StrCat("config file ", path, ": expected a mapping of option names to values"));
  }
  for (const auto& entry : root) {
    const std::string key = entry.first.Scalar();
    bool known = false;
    for (const auto& spec : specs) known = known || YamlKey(spec.flag) == key;
    if (!known) {
      return absl::InvalidArgumentError(
          absl::StrCat("config file ", path, ": unknown key \"", key, "\""));
    }
    if (!entry.second.IsScalar()) {
      return absl::InvalidArgumentError(
          absl::StrCat("config file ", path, ", key ", key, ": expected a single value"));
    }
    values[key] = entry.second.Scalar();
  }
  return values;
}

}  // namespace

engine::PipelineOptions ServerPipelineDefaults() {
  engine::PipelineOptions o;
  // Measured on the demo model's test split (docs/BENCHMARKS.md, "Compression by default"):
  // vlcache-guard at 10% keeps the full cache's accuracy within 2% on single images and 8-frame
  // clips. Below two pages a layer's prompt frees at most one page.
  o.cache_policy.name = "vlcache-guard";
  o.cache_policy.budget = 0.1;
  o.cache_policy.min_prompt_tokens = 32;
  return o;
}

absl::StatusOr<HostPort> ParseHostPort(const std::string& address) {
  auto bad = [&](const std::string& why) {
    return absl::InvalidArgumentError(
        absl::StrCat("expected host:port, got \"", address, "\" (", why, ")"));
  };
  HostPort hp;
  std::string port;
  if (!address.empty() && address[0] == '[') {
    const size_t close = address.find(']');
    if (close == std::string::npos || close + 1 >= address.size() || address[close + 1] != ':') {
      return bad("an IPv6 host is written [addr]:port");
    }
    hp.host = address.substr(1, close - 1);
    port = address.substr(close + 2);
  } else {
    const size_t colon = address.rfind(':');
    if (colon == std::string::npos) return bad("no port");
    hp.host = address.substr(0, colon);
    port = address.substr(colon + 1);
    if (hp.host.find(':') != std::string::npos) return bad("put an IPv6 host in brackets");
  }
  if (hp.host.empty()) return bad("no host");
  if (port.empty() || port.size() > 5 ||
      port.find_first_not_of("0123456789") != std::string::npos || std::stoi(port) > 65535) {
    return bad("the port must be a number in 0..65535");
  }
  hp.port = std::stoi(port);
  return hp;
}

absl::StatusOr<int64_t> ParseByteSize(const std::string& text) {
  const std::string t(absl::StripAsciiWhitespace(text));
  const size_t digits = t.find_first_not_of("0123456789");
  if (digits == 0 || t.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("expected a byte size such as 1073741824, 512M or 2G, got \"", text, "\""));
  }
  int shift = 0;
  if (digits != std::string::npos) {
    std::string suffix = absl::AsciiStrToUpper(t.substr(digits));
    static const std::map<std::string, int> kShifts = {
        {"B", 0},    {"K", 10},  {"KB", 10},  {"KI", 10}, {"KIB", 10}, {"M", 20},
        {"MB", 20},  {"MI", 20}, {"MIB", 20}, {"G", 30},  {"GB", 30},  {"GI", 30},
        {"GIB", 30}, {"T", 40},  {"TB", 40},  {"TI", 40}, {"TIB", 40}};
    auto it = kShifts.find(suffix);
    if (it == kShifts.end()) {
      return absl::InvalidArgumentError(absl::StrCat("unknown size suffix \"", t.substr(digits),
                                                     "\" in \"", text, "\" (use K, M, G or T)"));
    }
    shift = it->second;
  }
  uint64_t n = 0;
  if (!absl::SimpleAtoi(t.substr(0, digits), &n) ||
      n > (static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) >> shift)) {
    return absl::InvalidArgumentError(absl::StrCat("byte size \"", text, "\" is too large"));
  }
  return static_cast<int64_t>(n << shift);
}

absl::StatusOr<double> ParseDurationSeconds(const std::string& text) {
  const std::string t = absl::AsciiStrToLower(absl::StripAsciiWhitespace(text));
  if (t == "off") return 0.0;
  auto bad = [&] {
    return absl::InvalidArgumentError(
        absl::StrCat("expected a duration such as 30s, 15m, 1h or 0 (off), got \"", text, "\""));
  };
  if (t.empty()) return bad();
  double unit = 1;
  std::string number = t;
  static const std::map<char, double> kUnits = {{'s', 1}, {'m', 60}, {'h', 3600}};
  if (auto it = kUnits.find(t.back()); it != kUnits.end()) {
    unit = it->second;
    number.pop_back();
  }
  double v = 0;
  if (number.empty() || number.find_first_not_of("0123456789.") != std::string::npos ||
      !absl::SimpleAtod(number, &v) || !std::isfinite(v * unit)) {
    return bad();
  }
  return v * unit;
}

std::string FormatDurationSeconds(double seconds) {
  if (seconds == 0) return "off";
  std::ostringstream out;
  if (std::fmod(seconds, 3600) == 0) {
    out << seconds / 3600 << "h";
  } else if (std::fmod(seconds, 60) == 0) {
    out << seconds / 60 << "m";
  } else {
    out << seconds << "s";
  }
  return out.str();
}

absl::StatusOr<ServerConfig> LoadConfig(int argc, const char* const* argv, std::string* help_text,
                                        bool* exit_now) {
  if (exit_now) *exit_now = false;
  const std::vector<OptionSpec> specs = Options();
  ServerConfig defaults;

  CLI::App app("vlcache-server: vision-language generation with a compressed KV cache, over gRPC",
               "vlcache-server");
  app.footer(
      "Every option can also come from the environment variable VLC_<NAME> (--kv-cache-bytes: "
      "VLC_KV_CACHE_BYTES) or from the YAML file given by --config (key kv_cache_bytes); a flag "
      "wins over the environment, which wins over the file. VLC_AUTH_TOKEN (no flag, so that it "
      "never shows in ps) sets one bearer token.");
  // std::map keeps the strings CLI11 writes into at stable addresses.
  std::map<std::string, std::string> raw;
  for (const auto& spec : specs) {
    app.add_option(spec.flag, raw[spec.flag], spec.help)
        ->type_name(spec.type)
        ->default_str(spec.show(defaults));
  }
  std::string config_file;
  app.add_option("--config", config_file, "YAML file of options (keys as the flags, snake_case)")
      ->type_name("FILE");
  bool check_only = false;
  app.add_flag("--check-config", check_only,
               "Validate the flags, environment and YAML file, print the settings and where each "
               "came from, and exit (0: valid, 2: not); the model is not read");

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp&) {
    if (help_text) *help_text = app.help();
    if (exit_now) *exit_now = true;
    return defaults;
  } catch (const CLI::ParseError& e) {
    return absl::InvalidArgumentError(absl::StrCat("command line: ", e.what()));
  }

  auto getenv_string = [](const std::string& name) -> std::optional<std::string> {
    const char* v = std::getenv(name.c_str());
    return v ? std::optional<std::string>(v) : std::nullopt;
  };

  std::map<std::string, std::string> yaml;
  if (app.count("--config") == 0) config_file = getenv_string("VLC_CONFIG").value_or("");
  if (!config_file.empty()) {
    auto values = ReadYaml(config_file, specs);
    if (!values.ok()) return values.status();
    yaml = *std::move(values);
  }

  ServerConfig cfg;
  std::map<std::string, std::string> source;  // flag -> where its value came from
  for (const auto& spec : specs) {
    std::string where, text;
    if (app.count(spec.flag) > 0) {
      where = "flag " + spec.flag;
      text = raw[spec.flag];
    } else if (auto env = getenv_string(EnvName(spec.flag))) {
      where = "environment variable " + EnvName(spec.flag);
      text = *env;
    } else if (auto it = yaml.find(YamlKey(spec.flag)); it != yaml.end()) {
      where = absl::StrCat("config file ", config_file, ", key ", it->first);
      text = it->second;
    } else {
      source[spec.flag] = "default";
      continue;
    }
    if (absl::Status s = spec.set(text, &cfg); !s.ok()) return Invalid(where, s);
    source[spec.flag] = where;
  }
  if (auto token = getenv_string("VLC_AUTH_TOKEN")) cfg.auth_token = *token;
  if (cfg.model_name.empty()) {
    std::string dir = cfg.model_dir;
    while (dir.size() > 1 && dir.back() == '/') dir.pop_back();
    cfg.model_name = dir.substr(dir.find_last_of('/') + 1);
  }
  cfg.pipeline.num_threads = cfg.threads;

  // Checks across options name each one and where its value came from.
  auto named = [&](const std::string& flag) { return absl::StrCat(flag, " (", source[flag], ")"); };
  if (auto t = engine::ChatTemplate::Parse(cfg.pipeline.chat_template,
                                           cfg.pipeline.chat_turn_prefix);
      !t.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(named("--chat-template"), " with ",
                                                   named("--chat-turn-prefix"), ": ",
                                                   t.status().message()));
  }
  if (cfg.default_max_new_tokens > cfg.pipeline.max_new_tokens_limit) {
    return absl::InvalidArgumentError(absl::StrCat(
        named("--default-max-new-tokens"), " = ", cfg.default_max_new_tokens, " exceeds ",
        named("--max-new-tokens"), " = ", cfg.pipeline.max_new_tokens_limit));
  }
  if (cfg.pipeline.default_video_frames > cfg.pipeline.limits.max_frames) {
    return absl::InvalidArgumentError(
        absl::StrCat(named("--video-frames"), " = ", cfg.pipeline.default_video_frames, " exceeds ",
                     named("--max-frames"), " = ", cfg.pipeline.limits.max_frames));
  }
  if (cfg.tls_cert_file.empty() != cfg.tls_key_file.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--tls-cert and --tls-key go together; only ",
        cfg.tls_cert_file.empty() ? named("--tls-key") : named("--tls-cert"), " is set"));
  }
  if (absl::Status s = cfg.pipeline.cache_policy.Validate(); !s.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat(named("--kv-policy"), ", ", named("--kv-budget"), ": ", s.message()));
  }
  if (check_only) {
    std::string report = "configuration valid\n";
    for (const auto& spec : specs) {
      absl::StrAppend(&report, YamlKey(spec.flag), ": ", spec.show(cfg), "  # ",
                      source[spec.flag], "\n");
    }
    if (!cfg.auth_token.empty()) absl::StrAppend(&report, "# auth token: set (VLC_AUTH_TOKEN)\n");
    if (help_text) *help_text = report;
    if (exit_now) *exit_now = true;
  }
  return cfg;
}

}  // namespace vlc::server
