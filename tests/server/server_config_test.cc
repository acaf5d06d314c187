// The server's configuration: defaults, the precedence flag > environment > YAML file > default,
// error messages that name the option and its source, --help and --check-config.
#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>
#include <string>
#include <vector>

#include "common/fs.h"
#include "server/config.h"

extern char** environ;

namespace vlc::server {
namespace {

// gmock's HasSubstr would need libgmock, which these suites do not link.
::testing::AssertionResult Mentions(absl::string_view text, absl::string_view part) {
  if (text.find(part) != absl::string_view::npos) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << "\"" << part << "\" not in: " << text;
}

class ConfigTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ClearVlcEnvironment();
    dir_ = MakeTempDir("vlc_config_test_");
    ASSERT_FALSE(dir_.empty());
  }
  void TearDown() override {
    ClearVlcEnvironment();
    RemoveTree(dir_);
  }

  // The runner's own VLC_* variables must not leak into the cases.
  static void ClearVlcEnvironment() {
    std::vector<std::string> names;
    for (char** e = environ; *e; ++e) {
      std::string entry(*e);
      if (entry.rfind("VLC_", 0) == 0) names.push_back(entry.substr(0, entry.find('=')));
    }
    for (const auto& n : names) unsetenv(n.c_str());
  }

  static absl::StatusOr<ServerConfig> Load(std::vector<std::string> args,
                                           std::string* help = nullptr, bool* exit = nullptr) {
    args.insert(args.begin(), "vlcache-server");
    std::vector<const char*> argv;
    for (const auto& a : args) argv.push_back(a.c_str());
    std::string help_text;
    bool exit_now = false;
    auto cfg = LoadConfig(static_cast<int>(argv.size()), argv.data(), help ? help : &help_text,
                          exit ? exit : &exit_now);
    return cfg;
  }

  std::string WriteYaml(const std::string& text) {
    const std::string path = dir_ + "/server.yaml";
    std::ofstream(path) << text;
    return path;
  }

  std::string dir_;
};

TEST_F(ConfigTest, NoArgumentsGiveTheDocumentedDefaults) {
  auto cfg = Load({});
  ASSERT_TRUE(cfg.ok()) << cfg.status();
  const ServerConfig d;
  EXPECT_EQ(cfg->model_dir, "models/demo");
  EXPECT_EQ(cfg->listen, "0.0.0.0:50051");
  EXPECT_EQ(cfg->metrics_listen, "0.0.0.0:9464");
  EXPECT_EQ(cfg->threads, 0);
  EXPECT_EQ(cfg->pipeline.device, "cpu");
  EXPECT_EQ(cfg->pipeline.dtype, "auto");
  EXPECT_EQ(cfg->max_queue, 64);
  EXPECT_EQ(cfg->max_running, 16);
  EXPECT_EQ(cfg->max_sessions, 256);
  EXPECT_EQ(cfg->session_ttl_seconds, 600);
  EXPECT_EQ(cfg->heap_trim_idle_seconds, 5);
  EXPECT_EQ(cfg->default_max_new_tokens, 128);
  EXPECT_EQ(cfg->pipeline.kv_cache_bytes, d.pipeline.kv_cache_bytes);
  EXPECT_EQ(cfg->pipeline.kv_page_tokens, d.pipeline.kv_page_tokens);
  EXPECT_EQ(cfg->pipeline.cache_policy.name, d.pipeline.cache_policy.name);
  EXPECT_EQ(cfg->pipeline.cache_policy.budget, d.pipeline.cache_policy.budget);
  EXPECT_EQ(cfg->pipeline.max_new_tokens_limit, d.pipeline.max_new_tokens_limit);
  EXPECT_EQ(cfg->pipeline.chat_template, d.pipeline.chat_template);
  EXPECT_EQ(cfg->pipeline.limits.max_bytes, d.pipeline.limits.max_bytes);
  EXPECT_TRUE(cfg->auth_token.empty());
  EXPECT_TRUE(cfg->tls_cert_file.empty());
  EXPECT_EQ(cfg->log_format, "text");
  EXPECT_EQ(cfg->log_level, "info");
  EXPECT_TRUE(cfg->dq_db.empty());
  EXPECT_EQ(cfg->dq_watch_window_seconds, 3600);  // one hour
  EXPECT_EQ(cfg->dq_watch_max_rows, 10000);
  // The server compresses by default, unlike the library.
  EXPECT_EQ(cfg->pipeline.cache_policy.name, "vlcache-guard");
  EXPECT_DOUBLE_EQ(cfg->pipeline.cache_policy.budget, 0.1);
  EXPECT_EQ(cfg->pipeline.cache_policy.min_prompt_tokens, 32);
  EXPECT_EQ(engine::PipelineOptions().cache_policy.name, "full");
}

TEST_F(ConfigTest, TheFullCacheIsOneFlagAwayAndTheSizeRuleIsAnOption) {
  auto full = Load({"--kv-policy", "full"});
  ASSERT_TRUE(full.ok()) << full.status();
  EXPECT_EQ(full->pipeline.cache_policy.name, "full");
  EXPECT_EQ(Load({"--kv-compress-min-tokens", "0"})->pipeline.cache_policy.min_prompt_tokens, 0);
  EXPECT_EQ(Load({"--kv-compress-min-tokens", "200"})->pipeline.cache_policy.min_prompt_tokens,
            200);
  auto negative = Load({"--kv-compress-min-tokens", "-1"});
  EXPECT_EQ(negative.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(Mentions(negative.status().message(), "--kv-compress-min-tokens"));
}

// --check-config validates everything but the model and reports each setting with its source;
// the real binary exits 0 on a valid configuration and 2 on an invalid one, naming the option.
TEST_F(ConfigTest, CheckConfigReportsSettingsAndTheirSources) {
  setenv("VLC_MAX_RUNNING", "8", 1);
  const std::string yaml = WriteYaml("kv_cache_bytes: 64M\ndrain_timeout: 45\n");
  std::string report;
  bool exit_now = false;
  auto cfg = Load({"--check-config", "--config", yaml, "--model", "/nowhere", "--max-queue", "7"},
                  &report, &exit_now);
  ASSERT_TRUE(cfg.ok()) << cfg.status();
  EXPECT_TRUE(exit_now);
  EXPECT_TRUE(Mentions(report, "configuration valid"));
  EXPECT_TRUE(Mentions(report, "max_queue: 7  # flag --max-queue"));
  EXPECT_TRUE(Mentions(report, "max_running: 8  # environment variable VLC_MAX_RUNNING"));
  EXPECT_TRUE(Mentions(report, "drain_timeout: 45"));
  EXPECT_TRUE(Mentions(report, "# config file " + yaml + ", key kv_cache_bytes"));
  EXPECT_TRUE(Mentions(report, "session_ttl_seconds: 600  # default"));
  EXPECT_EQ(cfg->drain_timeout_seconds, 45);

  const std::string bin = std::string(VLC_BIN_DIR) + "/vlcache-server";
  EXPECT_EQ(std::system((bin + " --check-config --model /nowhere > /dev/null").c_str()), 0);
  const int bad = std::system((bin + " --check-config --drain-timeout -1 2> /dev/null").c_str());
  EXPECT_TRUE(WIFEXITED(bad) && WEXITSTATUS(bad) == 2);
}

TEST_F(ConfigTest, TheModelNameDefaultsToTheModelFoldersName) {
  auto cfg = Load({"--model", "/srv/models/demo/"});
  ASSERT_TRUE(cfg.ok()) << cfg.status();
  EXPECT_EQ(cfg->model_name, "demo");
  cfg = Load({"--model", "models/llava-1.5-7b-hf", "--model-name", "llava"});
  ASSERT_TRUE(cfg.ok()) << cfg.status();
  EXPECT_EQ(cfg->model_name, "llava");
}

TEST_F(ConfigTest, FlagsSetEveryOption) {
  // Flags and values side by side read better than one per line.
  // clang-format off
  auto cfg = Load({"--model", "/m", "--listen", "127.0.0.1:0", "--metrics-listen", "[::1]:9000",
                   "--threads", "3", "--device", "cuda", "--dtype", "float16",
                   "--max-queue", "5", "--max-running", "4",
                   "--max-sessions", "7", "--session-ttl-seconds", "1.5",
                   "--kv-cache-bytes", "1000", "--kv-page-tokens", "32", "--kv-policy",
                   "vlcache", "--kv-budget", "0.2", "--max-prompt-tokens", "100",
                   "--max-new-tokens", "50", "--default-max-new-tokens", "20",
                   "--max-media-bytes", "2048", "--max-pixels", "999", "--max-frames", "9",
                   "--video-frames", "3", "--chat-template", "Q: {prompt} A:",
                   "--auth-token-file", "/tokens", "--tls-cert", "/c.pem", "--tls-key",
                   "/k.pem", "--log-format", "json", "--log-level=debug"});
  // clang-format on
  ASSERT_TRUE(cfg.ok()) << cfg.status();
  EXPECT_EQ(cfg->model_dir, "/m");
  EXPECT_EQ(cfg->listen, "127.0.0.1:0");
  EXPECT_EQ(cfg->metrics_listen, "[::1]:9000");
  EXPECT_EQ(cfg->threads, 3);
  EXPECT_EQ(cfg->pipeline.num_threads, 3);  // the engine gets the same thread count
  // Only names are checked here; whether a GPU is there is the engine's question at load.
  EXPECT_EQ(cfg->pipeline.device, "cuda");
  EXPECT_EQ(cfg->pipeline.dtype, "float16");
  EXPECT_EQ(cfg->max_queue, 5);
  EXPECT_EQ(cfg->max_running, 4);
  EXPECT_EQ(cfg->max_sessions, 7);
  EXPECT_EQ(cfg->session_ttl_seconds, 1.5);
  EXPECT_EQ(cfg->pipeline.kv_cache_bytes, 1000);
  EXPECT_EQ(cfg->pipeline.kv_page_tokens, 32);
  EXPECT_EQ(cfg->pipeline.cache_policy.name, "vlcache");
  EXPECT_EQ(cfg->pipeline.cache_policy.budget, 0.2);
  EXPECT_EQ(cfg->pipeline.max_prompt_tokens, 100);
  EXPECT_EQ(cfg->pipeline.max_new_tokens_limit, 50);
  EXPECT_EQ(cfg->default_max_new_tokens, 20);
  EXPECT_EQ(cfg->pipeline.limits.max_bytes, 2048);
  EXPECT_EQ(cfg->pipeline.limits.max_pixels, 999);
  EXPECT_EQ(cfg->pipeline.limits.max_frames, 9);
  EXPECT_EQ(cfg->pipeline.default_video_frames, 3);
  EXPECT_EQ(cfg->pipeline.chat_template, "Q: {prompt} A:");
  EXPECT_EQ(cfg->auth_token_file, "/tokens");
  EXPECT_EQ(cfg->tls_cert_file, "/c.pem");
  EXPECT_EQ(cfg->tls_key_file, "/k.pem");
  EXPECT_EQ(cfg->log_format, "json");
  EXPECT_EQ(cfg->log_level, "debug");
}

TEST_F(ConfigTest, ByteSizesTakeBinarySuffixes) {
  auto cfg = Load({"--kv-cache-bytes", "512M", "--max-media-bytes", "2GiB"});
  ASSERT_TRUE(cfg.ok()) << cfg.status();
  EXPECT_EQ(cfg->pipeline.kv_cache_bytes, int64_t{512} << 20);
  EXPECT_EQ(cfg->pipeline.limits.max_bytes, int64_t{2} << 30);
  EXPECT_EQ(*ParseByteSize("64k"), 64 << 10);
  EXPECT_EQ(*ParseByteSize("3T"), int64_t{3} << 40);
  EXPECT_EQ(*ParseByteSize("123"), 123);
  EXPECT_FALSE(ParseByteSize("12X").ok());
  EXPECT_FALSE(ParseByteSize("-1").ok());
  EXPECT_FALSE(ParseByteSize("M").ok());
  EXPECT_FALSE(ParseByteSize("99999999999T").ok());  // overflows int64
}

TEST_F(ConfigTest, DurationsTakeSecondsMinutesOrHoursAndOffIsZero) {
  auto cfg = Load({"--dq-watch-window", "15m", "--dq-watch-max-rows", "50"});
  ASSERT_TRUE(cfg.ok()) << cfg.status();
  EXPECT_EQ(cfg->dq_watch_window_seconds, 900);
  EXPECT_EQ(cfg->dq_watch_max_rows, 50);
  EXPECT_EQ(Load({"--dq-watch-window", "off"})->dq_watch_window_seconds, 0);
  EXPECT_EQ(Load({"--dq-watch-window", "0"})->dq_watch_window_seconds, 0);
  EXPECT_EQ(*ParseDurationSeconds("90"), 90);
  EXPECT_EQ(*ParseDurationSeconds("30s"), 30);
  EXPECT_EQ(*ParseDurationSeconds("1.5m"), 90);
  EXPECT_EQ(*ParseDurationSeconds("2H"), 7200);
  EXPECT_EQ(*ParseDurationSeconds(" 1h "), 3600);
  for (const char* bad : {"", "h", "-1s", "1d", "1h30m", "abc", "1e3", "off5"}) {
    EXPECT_EQ(ParseDurationSeconds(bad).status().code(), absl::StatusCode::kInvalidArgument) << bad;
  }
  EXPECT_EQ(FormatDurationSeconds(3600), "1h");
  EXPECT_EQ(FormatDurationSeconds(90), "90s");
  EXPECT_EQ(FormatDurationSeconds(120), "2m");
  EXPECT_EQ(FormatDurationSeconds(0), "off");
  // Under a second (but not off) is refused, naming the flag.
  auto short_window = Load({"--dq-watch-window", "0.5s"});
  EXPECT_EQ(short_window.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(Mentions(short_window.status().message(), "--dq-watch-window"));
  EXPECT_TRUE(Mentions(short_window.status().message(), "at least 1s"));
  EXPECT_EQ(Load({"--heap-trim-idle", "1m"})->heap_trim_idle_seconds, 60);
  EXPECT_EQ(Load({"--heap-trim-idle", "off"})->heap_trim_idle_seconds, 0);
  EXPECT_TRUE(Mentions(Load({"--heap-trim-idle", "soon"}).status().message(), "--heap-trim-idle"));
}

TEST_F(ConfigTest, EnvironmentSetsOptionsAndAuthToken) {
  setenv("VLC_KV_CACHE_BYTES", "4096", 1);
  setenv("VLC_MODEL", "/env/model", 1);
  setenv("VLC_AUTH_TOKEN", "s3cret", 1);
  auto cfg = Load({});
  ASSERT_TRUE(cfg.ok()) << cfg.status();
  EXPECT_EQ(cfg->pipeline.kv_cache_bytes, 4096);
  EXPECT_EQ(cfg->model_dir, "/env/model");
  EXPECT_EQ(cfg->auth_token, "s3cret");
}

TEST_F(ConfigTest, DeviceAndDtypeComeFromEnvironmentAndAreChecked) {
  setenv("VLC_DEVICE", "auto", 1);
  setenv("VLC_DTYPE", "bfloat16", 1);
  auto cfg = Load({});
  ASSERT_TRUE(cfg.ok()) << cfg.status();
  EXPECT_EQ(cfg->pipeline.device, "auto");
  EXPECT_EQ(cfg->pipeline.dtype, "bfloat16");

  auto bad_device = Load({"--device", "gpu"});
  ASSERT_EQ(bad_device.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(Mentions(bad_device.status().message(), "flag --device"));
  EXPECT_TRUE(Mentions(bad_device.status().message(), "cpu, cuda, auto"));
  setenv("VLC_DTYPE", "fp8", 1);
  auto bad_dtype = Load({});
  ASSERT_EQ(bad_dtype.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(Mentions(bad_dtype.status().message(), "VLC_DTYPE"));
  EXPECT_TRUE(Mentions(bad_dtype.status().message(), "bfloat16"));
}

TEST_F(ConfigTest, QuantizeIsNoneByDefaultAndChecked) {
  auto plain = Load({});
  ASSERT_TRUE(plain.ok()) << plain.status();
  EXPECT_EQ(plain->pipeline.quantize, "none");
  setenv("VLC_QUANTIZE", "int8", 1);
  auto env = Load({});
  ASSERT_TRUE(env.ok()) << env.status();
  EXPECT_EQ(env->pipeline.quantize, "int8");
  auto bad = Load({"--quantize", "int4"});
  ASSERT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(Mentions(bad.status().message(), "none, int8"));
}

TEST_F(ConfigTest, EmptyMetricsListenDisablesMetrics) {
  setenv("VLC_METRICS_LISTEN", "", 1);
  auto cfg = Load({});
  ASSERT_TRUE(cfg.ok()) << cfg.status();
  EXPECT_EQ(cfg->metrics_listen, "");
}

TEST_F(ConfigTest, YamlFileSetsOptions) {
  const std::string path = WriteYaml(
      "model: /yaml/model\n"
      "kv_cache_bytes: 1073741824\n"
      "kv_policy: snapkv\n"
      "kv_budget: 0.25\n"
      "log_format: json\n"
      "chat_template: \"USER: {prompt}\\nASSISTANT:\"\n");
  auto cfg = Load({"--config", path});
  ASSERT_TRUE(cfg.ok()) << cfg.status();
  EXPECT_EQ(cfg->model_dir, "/yaml/model");
  EXPECT_EQ(cfg->pipeline.kv_cache_bytes, 1073741824);
  EXPECT_EQ(cfg->pipeline.cache_policy.name, "snapkv");
  EXPECT_EQ(cfg->pipeline.cache_policy.budget, 0.25);
  EXPECT_EQ(cfg->log_format, "json");
  EXPECT_EQ(cfg->pipeline.chat_template, "USER: {prompt}\nASSISTANT:");
  EXPECT_EQ(cfg->max_queue, 64);  // not in the file: the default
}

TEST_F(ConfigTest, ConfigFileCanComeFromTheEnvironment) {
  setenv("VLC_CONFIG", WriteYaml("max_queue: 9\n").c_str(), 1);
  auto cfg = Load({});
  ASSERT_TRUE(cfg.ok()) << cfg.status();
  EXPECT_EQ(cfg->max_queue, 9);
}

TEST_F(ConfigTest, EnvironmentOverridesYaml) {
  const std::string path = WriteYaml("kv_cache_bytes: 1000\nmax_queue: 3\n");
  setenv("VLC_KV_CACHE_BYTES", "2000", 1);
  auto cfg = Load({"--config", path});
  ASSERT_TRUE(cfg.ok()) << cfg.status();
  EXPECT_EQ(cfg->pipeline.kv_cache_bytes, 2000);
  EXPECT_EQ(cfg->max_queue, 3);
}

TEST_F(ConfigTest, FlagOverridesEnvironmentAndYaml) {
  const std::string path = WriteYaml("kv_cache_bytes: 1000\n");
  setenv("VLC_KV_CACHE_BYTES", "2000", 1);
  auto cfg = Load({"--config", path, "--kv-cache-bytes", "3000"});
  ASSERT_TRUE(cfg.ok()) << cfg.status();
  EXPECT_EQ(cfg->pipeline.kv_cache_bytes, 3000);
}

TEST_F(ConfigTest, FlagOverridesABadEnvironmentValue) {
  setenv("VLC_MAX_QUEUE", "lots", 1);
  auto cfg = Load({"--max-queue", "8"});
  ASSERT_TRUE(cfg.ok()) << cfg.status();
  EXPECT_EQ(cfg->max_queue, 8);
}

TEST_F(ConfigTest, UnknownYamlKeyNamesTheKeyAndTheFile) {
  const std::string path = WriteYaml("max_queue: 3\nkv_cache_bites: 1000\n");
  auto cfg = Load({"--config", path});
  ASSERT_EQ(cfg.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(Mentions(cfg.status().message(), "kv_cache_bites"));
  EXPECT_TRUE(Mentions(cfg.status().message(), path));
}

TEST_F(ConfigTest, AuthTokenIsNeverAFlagNorAYamlKey) {
  EXPECT_EQ(Load({"--auth-token", "x"}).status().code(), absl::StatusCode::kInvalidArgument);
  auto cfg = Load({"--config", WriteYaml("auth_token: x\n")});
  ASSERT_EQ(cfg.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(Mentions(cfg.status().message(), "auth_token"));
}

TEST_F(ConfigTest, MissingOrMalformedYamlFileNamesTheFile) {
  const std::string missing = dir_ + "/absent.yaml";
  auto cfg = Load({"--config", missing});
  ASSERT_EQ(cfg.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(Mentions(cfg.status().message(), missing));

  const std::string list = WriteYaml("- a\n- b\n");
  cfg = Load({"--config", list});
  ASSERT_EQ(cfg.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(Mentions(cfg.status().message(), list));
}

TEST_F(ConfigTest, BadEnvironmentValueNamesTheVariable) {
  setenv("VLC_KV_BUDGET", "1.5", 1);
  auto cfg = Load({});
  ASSERT_EQ(cfg.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(Mentions(cfg.status().message(), "environment variable VLC_KV_BUDGET: "));
}

TEST_F(ConfigTest, BadFlagValueNamesTheFlag) {
  auto cfg = Load({"--max-queue", "0"});
  ASSERT_EQ(cfg.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(Mentions(cfg.status().message(), "flag --max-queue: "));

  cfg = Load({"--threads", "two"});
  ASSERT_EQ(cfg.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(Mentions(cfg.status().message(), "flag --threads: "));
}

TEST_F(ConfigTest, BadYamlValueNamesTheFileAndKey) {
  const std::string path = WriteYaml("kv_policy: nonsense\n");
  auto cfg = Load({"--config", path});
  ASSERT_EQ(cfg.status().code(), absl::StatusCode::kInvalidArgument);
  const std::string msg(cfg.status().message());
  EXPECT_TRUE(Mentions(msg, path));
  EXPECT_TRUE(Mentions(msg, "kv_policy"));
  EXPECT_TRUE(Mentions(msg, "nonsense"));

  cfg = Load({"--config", WriteYaml("max_frames: [1, 2]\n")});
  ASSERT_EQ(cfg.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(Mentions(cfg.status().message(), "max_frames"));
}

TEST_F(ConfigTest, RejectsOutOfRangeAndMalformedValues) {
  const std::vector<std::vector<std::string>> bad = {{"--kv-budget", "0"},
                                                     {"--kv-budget", "nan"},
                                                     {"--session-ttl-seconds", "0"},
                                                     {"--kv-cache-bytes", "0"},
                                                     {"--kv-page-tokens", "-4"},
                                                     {"--max-frames", "0"},
                                                     {"--threads", "-1"},
                                                     {"--log-format", "xml"},
                                                     {"--log-level", "loud"},
                                                     {"--listen", "localhost"},
                                                     {"--listen", ":50051"},
                                                     {"--listen", "host:70000"},
                                                     {"--listen", "::1:80"},
                                                     {"--metrics-listen", "host:port"},
                                                     {"--model", ""},
                                                     {"--dq-watch-window", "soon"},
                                                     {"--dq-watch-max-rows", "0"},
                                                     {"--max-queue", "99999999999"}};
  for (const auto& args : bad) {
    auto cfg = Load(args);
    EXPECT_EQ(cfg.status().code(), absl::StatusCode::kInvalidArgument) << args[0] << " " << args[1];
    EXPECT_TRUE(Mentions(cfg.status().message(), args[0]));
  }
}

TEST_F(ConfigTest, TlsCertificateAndKeyGoTogether) {
  auto cfg = Load({"--tls-cert", "/c.pem"});
  ASSERT_EQ(cfg.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(Mentions(cfg.status().message(), "--tls-key"));
  setenv("VLC_TLS_KEY", "/k.pem", 1);
  EXPECT_TRUE(Load({"--tls-cert", "/c.pem"}).ok());
}

TEST_F(ConfigTest, DefaultTokensMayNotExceedTheHardLimit) {
  setenv("VLC_MAX_NEW_TOKENS", "10", 1);
  auto cfg = Load({});  // the default 128 is above the limit 10
  ASSERT_EQ(cfg.status().code(), absl::StatusCode::kInvalidArgument);
  const std::string msg(cfg.status().message());
  EXPECT_TRUE(Mentions(msg, "--default-max-new-tokens"));
  EXPECT_TRUE(Mentions(msg, "environment variable VLC_MAX_NEW_TOKENS"));
  EXPECT_TRUE(Load({"--default-max-new-tokens", "10"}).ok());
}

TEST_F(ConfigTest, VideoFramesMayNotExceedMaxFrames) {
  auto cfg = Load({"--max-frames", "4", "--video-frames", "5"});
  ASSERT_EQ(cfg.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(Mentions(cfg.status().message(), "--video-frames"));
}

TEST_F(ConfigTest, UnknownFlagOrPositionalIsAnError) {
  EXPECT_EQ(Load({"--no-such-flag", "1"}).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Load({"stray"}).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(ConfigTest, HelpDocumentsEveryOptionAndAsksToExit) {
  std::string help;
  bool exit_now = false;
  auto cfg = Load({"--help"}, &help, &exit_now);
  ASSERT_TRUE(cfg.ok()) << cfg.status();
  EXPECT_TRUE(exit_now);
  for (const char* flag : {"--model",
                           "--listen",
                           "--metrics-listen",
                           "--threads",
                           "--device",
                           "--dtype",
                           "--max-queue",
                           "--max-running",
                           "--max-sessions",
                           "--session-ttl-seconds",
                           "--kv-cache-bytes",
                           "--kv-page-tokens",
                           "--kv-policy",
                           "--kv-budget",
                           "--max-prompt-tokens",
                           "--max-new-tokens",
                           "--default-max-new-tokens",
                           "--max-media-bytes",
                           "--max-pixels",
                           "--max-frames",
                           "--video-frames",
                           "--chat-template",
                           "--auth-token-file",
                           "--tls-cert",
                           "--tls-key",
                           "--log-format",
                           "--log-level",
                           "--dq-db",
                           "--dq-max-run-bytes",
                           "--dq-watch-window",
                           "--dq-watch-max-rows",
                           "--config",
                           "VLC_AUTH_TOKEN"}) {
    EXPECT_TRUE(Mentions(help, flag));
  }
  EXPECT_TRUE(Mentions(help, "0.0.0.0:50051"));  // defaults are shown
  EXPECT_TRUE(Mentions(help, "1073741824"));

  exit_now = true;
  ASSERT_TRUE(Load({}, &help, &exit_now).ok());
  EXPECT_FALSE(exit_now);
}

}  // namespace
}  // namespace vlc::server
