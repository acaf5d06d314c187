// The Prometheus metrics: the real listener on a free port, scraped over a plain socket as
// Prometheus would, and (where promtool is installed) checked by Prometheus's own linter.
#include "server/metrics.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "common/fs.h"

namespace vlc::server {
namespace {

// Sends `request_line` (e.g. "GET /metrics HTTP/1.0") to 127.0.0.1:port; returns the whole
// response, or "" when the connection fails.
std::string HttpExchange(int port, const std::string& request_line) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return "";
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  std::string response;
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0) {
    const std::string request = request_line + "\r\nHost: 127.0.0.1\r\n\r\n";
    if (::send(fd, request.data(), request.size(), 0) == static_cast<ssize_t>(request.size())) {
      char buf[4096];
      ssize_t n;
      while ((n = ::recv(fd, buf, sizeof(buf), 0)) > 0) response.append(buf, n);
    }
  }
  ::close(fd);
  return response;
}

// HTTP/1.0 GET of http://127.0.0.1:port/path; returns the body, or "" unless the answer is 200.
std::string HttpGet(int port, const std::string& path) {
  const std::string response = HttpExchange(port, "GET " + path + " HTTP/1.0");
  const size_t body = response.find("\r\n\r\n");
  if (response.rfind("HTTP/1.1 200 ", 0) != 0 || body == std::string::npos) return "";
  return response.substr(body + 4);
}

// The value of the one sample line named `name` whose labels include every one of `labels`
// (each written as key="value"); NaN when no line or several lines match.
double Sample(const std::string& text, const std::string& name,
              const std::vector<std::string>& labels = {}) {
  std::istringstream in(text);
  std::string line;
  double found = std::nan("");
  int matches = 0;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    const size_t space = line.rfind(' ');
    const std::string series = line.substr(0, space);
    if (series != name && series.rfind(name + "{", 0) != 0) continue;
    bool all = true;
    for (const auto& l : labels) all = all && series.find(l) != std::string::npos;
    if (!all) continue;
    ++matches;
    found = std::stod(line.substr(space + 1));
  }
  return matches == 1 ? found : std::nan("");
}

TEST(Metrics, ScrapeShowsEveryFamilyWithTheRecordedValues) {
  auto metrics = Metrics::Start("127.0.0.1:0");
  ASSERT_TRUE(metrics.ok()) << metrics.status();
  Metrics& m = **metrics;
  ASSERT_GT(m.port(), 0);

  m.CountRequest("Generate", "OK");
  m.CountRequest("Generate", "OK");
  m.CountRequest("Generate", "INVALID_ARGUMENT");
  m.ObserveTtft(0.2);
  m.ObserveTtft(3.0);
  m.ObserveInterToken(0.02);
  m.ObserveQueueTime(0.001);
  m.ObservePrefill(0.5);
  m.ObserveEndToEnd(4.0);
  m.CountPromptTokens(10, 576);
  m.CountPromptTokens(5, 0);
  m.CountGeneratedTokens(32);
  m.SetKvBytes(1000, 4000, 9000);
  m.ObserveCompression(0.1, {0.05, 0.1, 0.3});
  m.SetSessionsActive(3);
  m.CountEviction("ttl");
  m.CountEviction("capacity");
  m.CountEviction("ttl");
  m.SetBatchSize(4);
  m.SetQueueDepth(2);
  m.CountDqCheck("vlcache.requests", false);
  m.CountDqCheck("vlcache.requests", true);
  m.CountDqCheck("sales", true);
  m.CountDqViolation("vlcache.requests", "prompt_tokens", "num_mean");
  m.CountDqViolation("vlcache.requests", "prompt_tokens", "num_mean");
  m.CountDqViolation("vlcache.requests", "kv_policy", "schema");

  const std::string text = HttpGet(m.port(), "/metrics");
  ASSERT_FALSE(text.empty());

  EXPECT_EQ(Sample(text, "vlcache_requests_total", {"method=\"Generate\"", "code=\"OK\""}), 2);
  EXPECT_EQ(Sample(text, "vlcache_requests_total", {"code=\"INVALID_ARGUMENT\""}), 1);

  EXPECT_EQ(Sample(text, "vlcache_time_to_first_token_seconds_count"), 2);
  EXPECT_DOUBLE_EQ(Sample(text, "vlcache_time_to_first_token_seconds_sum"), 3.2);
  EXPECT_EQ(Sample(text, "vlcache_time_to_first_token_seconds_bucket", {"le=\"0.25\""}), 1);
  EXPECT_EQ(Sample(text, "vlcache_time_to_first_token_seconds_bucket", {"le=\"+Inf\""}), 2);
  EXPECT_EQ(Sample(text, "vlcache_inter_token_latency_seconds_count"), 1);
  EXPECT_EQ(Sample(text, "vlcache_queue_time_seconds_bucket", {"le=\"0.001\""}), 1);
  EXPECT_EQ(Sample(text, "vlcache_prefill_seconds_count"), 1);
  EXPECT_EQ(Sample(text, "vlcache_request_duration_seconds_sum"), 4.0);

  EXPECT_EQ(Sample(text, "vlcache_prompt_tokens_total", {"modality=\"text\""}), 15);
  EXPECT_EQ(Sample(text, "vlcache_prompt_tokens_total", {"modality=\"visual\""}), 576);
  EXPECT_EQ(Sample(text, "vlcache_generated_tokens_total"), 32);

  EXPECT_EQ(Sample(text, "vlcache_kv_cache_bytes", {"state=\"used\""}), 1000);
  EXPECT_EQ(Sample(text, "vlcache_kv_cache_bytes", {"state=\"capacity\""}), 4000);
  EXPECT_EQ(Sample(text, "vlcache_kv_cache_bytes", {"state=\"full_equivalent\""}), 9000);
  EXPECT_EQ(Sample(text, "vlcache_kv_compression_ratio"), 0.1);
  EXPECT_EQ(Sample(text, "vlcache_kv_layer_budget_ratio_count"), 3);
  EXPECT_EQ(Sample(text, "vlcache_kv_layer_budget_ratio_bucket", {"le=\"0.1\""}), 2);

  EXPECT_EQ(Sample(text, "vlcache_sessions_active"), 3);
  EXPECT_EQ(Sample(text, "vlcache_session_evictions_total", {"reason=\"ttl\""}), 2);
  EXPECT_EQ(Sample(text, "vlcache_session_evictions_total", {"reason=\"capacity\""}), 1);
  EXPECT_EQ(Sample(text, "vlcache_batch_size"), 4);
  EXPECT_EQ(Sample(text, "vlcache_queue_depth"), 2);

  EXPECT_EQ(Sample(text, "vlcache_dq_checks_total",
                   {"pipeline=\"vlcache.requests\"", "verdict=\"fail\""}),
            1);
  EXPECT_EQ(Sample(text, "vlcache_dq_checks_total", {"pipeline=\"sales\"", "verdict=\"pass\""}), 1);
  EXPECT_EQ(
      Sample(text, "vlcache_dq_violations_total",
             {"pipeline=\"vlcache.requests\"", "column=\"prompt_tokens\"", "metric=\"num_mean\""}),
      2);
  EXPECT_EQ(Sample(text, "vlcache_dq_violations_total", {"metric=\"schema\""}), 1);

  // Every family carries its help and type lines.
  for (const char* family : {"vlcache_requests_total", "vlcache_time_to_first_token_seconds",
                             "vlcache_kv_cache_bytes", "vlcache_kv_layer_budget_ratio",
                             "vlcache_dq_checks_total", "vlcache_dq_violations_total"}) {
    EXPECT_NE(text.find(std::string("# HELP ") + family + " "), std::string::npos) << family;
    EXPECT_NE(text.find(std::string("# TYPE ") + family + " "), std::string::npos) << family;
  }
}

// What a router and an autoscaler read: waiting and running requests, the pool's use as a
// fraction and its shape; and what operators ask for: bytes kept against full per policy,
// session hits and misses.
TEST(Metrics, RouterAndCacheSeries) {
  auto metrics = Metrics::Start("127.0.0.1:0");
  ASSERT_TRUE(metrics.ok()) << metrics.status();
  Metrics& m = **metrics;
  m.SetQueueDepth(3);
  m.SetRunning(2);
  m.SetKvBytes(1024, 4096, 8192);
  m.SetKvCacheShape(16, 256);
  m.CountKvBytes("vlcache", 100, 1000);
  m.CountKvBytes("vlcache", 50, 500);
  m.CountKvBytes("full", 700, 700);
  m.CountSessionLookup(true);
  m.CountSessionLookup(true);
  m.CountSessionLookup(false);
  const std::string text = HttpGet(m.port(), "/metrics");
  EXPECT_EQ(Sample(text, "vlcache_queue_depth"), 3);
  EXPECT_EQ(Sample(text, "vlcache_requests_running"), 2);
  EXPECT_DOUBLE_EQ(Sample(text, "vlcache_kv_cache_usage_ratio"), 0.25);
  EXPECT_EQ(Sample(text, "vlcache_kv_cache_info", {"block_size=\"16\"", "num_blocks=\"256\""}),
            1);
  EXPECT_EQ(Sample(text, "vlcache_kv_request_bytes_total",
                   {"policy=\"vlcache\"", "state=\"kept\""}),
            150);
  EXPECT_EQ(Sample(text, "vlcache_kv_request_bytes_total",
                   {"policy=\"vlcache\"", "state=\"full\""}),
            1500);
  EXPECT_EQ(Sample(text, "vlcache_kv_request_bytes_total", {"policy=\"full\"", "state=\"kept\""}),
            700);
  EXPECT_EQ(Sample(text, "vlcache_session_lookups_total", {"result=\"hit\""}), 2);
  EXPECT_EQ(Sample(text, "vlcache_session_lookups_total", {"result=\"miss\""}), 1);
  // A GPU decode step and a queued video both land inside the buckets, not in +Inf alone.
  m.ObserveInterToken(0.0003);
  m.ObserveTtft(90);
  const std::string after = HttpGet(m.port(), "/metrics");
  EXPECT_EQ(Sample(after, "vlcache_inter_token_latency_seconds_bucket", {"le=\"0.0005\""}), 1);
  EXPECT_EQ(Sample(after, "vlcache_inter_token_latency_seconds_bucket", {"le=\"0.0001\""}), 0);
  EXPECT_EQ(Sample(after, "vlcache_time_to_first_token_seconds_bucket", {"le=\"120\""}), 1);
}

// Pipeline and column names come from clients: past a fixed number of each, new names are
// counted under "_other", so the number of series stays bounded whatever clients send.
TEST(Metrics, DataQualityLabelsAreCapped) {
  auto metrics = Metrics::Start("127.0.0.1:0");
  ASSERT_TRUE(metrics.ok()) << metrics.status();
  Metrics& m = **metrics;
  for (int p = 0; p < 100; ++p) m.CountDqCheck("pipeline" + std::to_string(p), true);
  for (int c = 0; c < 200; ++c) m.CountDqViolation("pipeline0", "col" + std::to_string(c), "num_mean");
  m.CountDqViolation("pipeline99", "col0", "num_mean");
  const std::string text = HttpGet(m.port(), "/metrics");
  int check_series = 0, violation_series = 0;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) {
    check_series += line.rfind("vlcache_dq_checks_total{", 0) == 0;
    violation_series += line.rfind("vlcache_dq_violations_total{", 0) == 0;
  }
  EXPECT_EQ(check_series, 33) << "32 pipelines by name and one _other";
  EXPECT_EQ(violation_series, 66) << "64 columns by name, one _other, one for _other pipelines";
  EXPECT_EQ(Sample(text, "vlcache_dq_checks_total", {"pipeline=\"_other\""}), 68);
  EXPECT_EQ(Sample(text, "vlcache_dq_checks_total", {"pipeline=\"pipeline5\""}), 1);
  EXPECT_EQ(Sample(text, "vlcache_dq_violations_total",
                   {"pipeline=\"pipeline0\"", "column=\"_other\""}),
            136);
  EXPECT_EQ(Sample(text, "vlcache_dq_violations_total",
                   {"pipeline=\"_other\"", "column=\"_other\""}),
            1);
}

TEST(Metrics, UnlabelledSeriesAreExposedBeforeAnyRequest) {
  auto metrics = Metrics::Start("127.0.0.1:0");
  ASSERT_TRUE(metrics.ok()) << metrics.status();
  const std::string text = HttpGet((*metrics)->port(), "/metrics");
  EXPECT_EQ(Sample(text, "vlcache_generated_tokens_total"), 0);
  EXPECT_EQ(Sample(text, "vlcache_prompt_tokens_total", {"modality=\"visual\""}), 0);
  EXPECT_EQ(Sample(text, "vlcache_request_duration_seconds_count"), 0);
  EXPECT_EQ(Sample(text, "vlcache_kv_cache_bytes", {"state=\"capacity\""}), 0);
}

TEST(Metrics, CountsFromManyThreadsAddUp) {
  auto metrics = Metrics::Start("127.0.0.1:0");
  ASSERT_TRUE(metrics.ok()) << metrics.status();
  Metrics& m = **metrics;
  constexpr int kThreads = 8, kEach = 1000;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&m, t] {
      for (int i = 0; i < kEach; ++i) {
        m.CountRequest("Generate", t % 2 ? "OK" : "CANCELLED");
        m.CountGeneratedTokens(1);
        m.ObserveInterToken(0.01);
      }
    });
  }
  for (auto& t : threads) t.join();
  const std::string text = HttpGet(m.port(), "/metrics");
  EXPECT_EQ(Sample(text, "vlcache_requests_total", {"code=\"OK\""}), kThreads / 2 * kEach);
  EXPECT_EQ(Sample(text, "vlcache_requests_total", {"code=\"CANCELLED\""}), kThreads / 2 * kEach);
  EXPECT_EQ(Sample(text, "vlcache_generated_tokens_total"), kThreads * kEach);
  EXPECT_EQ(Sample(text, "vlcache_inter_token_latency_seconds_count"), kThreads * kEach);
}

TEST(Metrics, OnlyGetOfMetricsIsServed) {
  auto metrics = Metrics::Start("127.0.0.1:0");
  ASSERT_TRUE(metrics.ok()) << metrics.status();
  const int port = (*metrics)->port();
  EXPECT_EQ(HttpExchange(port, "GET / HTTP/1.0").rfind("HTTP/1.1 404 ", 0), 0u);
  EXPECT_EQ(HttpExchange(port, "POST /metrics HTTP/1.0").rfind("HTTP/1.1 405 ", 0), 0u);
  const std::string head = HttpExchange(port, "HEAD /metrics HTTP/1.0");
  EXPECT_EQ(head.rfind("HTTP/1.1 200 ", 0), 0u) << head;
  EXPECT_EQ(head.find("vlcache_"), std::string::npos) << head;  // headers only
  EXPECT_FALSE(HttpGet(port, "/metrics?name[]=x").empty());     // query strings are ignored
}

TEST(Metrics, APortInUseIsUnavailableAndNamesTheAddress) {
  auto first = Metrics::Start("127.0.0.1:0");
  ASSERT_TRUE(first.ok()) << first.status();
  const std::string address = "127.0.0.1:" + std::to_string((*first)->port());
  auto second = Metrics::Start(address);
  ASSERT_EQ(second.status().code(), absl::StatusCode::kUnavailable) << second.status();
  EXPECT_NE(second.status().message().find(address), absl::string_view::npos) << second.status();
}

TEST(Metrics, AMalformedAddressIsInvalidArgument) {
  EXPECT_EQ(Metrics::Start("no-port").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Metrics::Start("127.0.0.1:99999").status().code(), absl::StatusCode::kInvalidArgument);
}

// Prometheus's own linter (Debian package prometheus): names, units, help, suffixes.
TEST(Metrics, PromtoolFindsNoProblems) {
  // make deps installs it (scripts/install-deps.sh); its absence is a set-up failure.
  ASSERT_EQ(::access("/usr/bin/promtool", X_OK), 0) << "promtool missing: run make deps";
  auto metrics = Metrics::Start("127.0.0.1:0");
  ASSERT_TRUE(metrics.ok()) << metrics.status();
  (*metrics)->CountRequest("Generate", "OK");
  (*metrics)->CountEviction("ttl");
  (*metrics)->ObserveCompression(0.2, {0.2});
  (*metrics)->CountDqCheck("vlcache.requests", false);
  (*metrics)->CountDqViolation("vlcache.requests", "prompt_tokens", "num_mean");
  const std::string text = HttpGet((*metrics)->port(), "/metrics");
  ASSERT_FALSE(text.empty());

  const std::string dir = MakeTempDir("vlc_metrics_test_");
  ASSERT_FALSE(dir.empty());
  const std::string scraped = dir + "/scrape.txt";
  std::ofstream(scraped) << text;
  const std::string command = "/usr/bin/promtool check metrics < " + scraped + " 2>&1";
  FILE* pipe = ::popen(command.c_str(), "r");
  ASSERT_NE(pipe, nullptr);
  std::string output;
  char buf[512];
  while (size_t n = std::fread(buf, 1, sizeof(buf), pipe)) output.append(buf, n);
  const int status = ::pclose(pipe);
  RemoveTree(dir);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << output;
  EXPECT_EQ(output, "") << output;
}

}  // namespace
}  // namespace vlc::server
