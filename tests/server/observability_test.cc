// Observability of the real server process: a real Prometheus (Debian's /usr/bin/prometheus)
// scrapes its /metrics listener and answers PromQL about it, and the KV-cache gauge shows that a
// cancelled or timed-out stream gives its pages back to the pool. Each case starts its own server
// (ctest runs each case as its own process).
#include <arpa/inet.h>
#include <fcntl.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <functional>
#include <future>
#include <limits>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "clients/cpp/vlcache_client.h"
#include "common/fs.h"
#include "tests/server/server_fixture.h"
#include "vlcache/v1/inference.grpc.pb.h"

namespace vlc::server {
namespace {

using nlohmann::json;
using std::chrono::milliseconds;
using std::chrono::seconds;
using std::chrono::steady_clock;

constexpr char kPrompt[] = "what color is the triangle?";
// The greedy answer for this image meets no EOS within thousands of tokens (see
// integration_test.cc), so a long request is still decoding when it is cancelled.
constexpr int kLongImageSeed = 5;

pb::GenerateRequest ImageRequest(int seed, int max_new_tokens) {
  pb::GenerateRequest r;
  r.mutable_media()->add_images(Png(40, 30, seed));
  r.set_prompt(kPrompt);
  r.mutable_sampling()->set_max_new_tokens(max_new_tokens);
  r.mutable_sampling()->set_temperature(0);
  return r;
}

std::string Describe(const grpc::Status& s) {
  return std::to_string(s.error_code()) + ": " + s.error_message();
}

// The value of the sample of metric `name` whose labels include all of `labels`; NaN when the
// page has none. The exposition format writes labels as name="value" pairs in any order.
double Sample(const std::string& text, const std::string& name,
              const std::map<std::string, std::string>& labels) {
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(name + "{", 0) != 0) continue;
    const size_t close = line.find('}');
    if (close == std::string::npos) continue;
    const std::string label_text = line.substr(name.size(), close - name.size() + 1);
    const bool all = std::all_of(labels.begin(), labels.end(), [&](const auto& kv) {
      const std::string pair = kv.first + "=\"" + kv.second + "\"";
      return label_text.find("{" + pair) != std::string::npos ||
             label_text.find("," + pair) != std::string::npos;
    });
    if (all) return std::strtod(line.c_str() + close + 1, nullptr);
  }
  return std::numeric_limits<double>::quiet_NaN();
}

// A port nothing listens on now: bind 127.0.0.1:0, read what the kernel chose, close. Another
// process could take it before Prometheus binds it; on a test machine that is unlikely enough.
int FreePort() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return -1;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  socklen_t len = sizeof(addr);
  int port = -1;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0 &&
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0) {
    port = ntohs(addr.sin_port);
  }
  ::close(fd);
  return port;
}

std::string UrlEncode(const std::string& s) {
  static const char kHex[] = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : s) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
      out += static_cast<char>(c);
    } else {
      out += '%';
      out += kHex[c >> 4];
      out += kHex[c & 15];
    }
  }
  return out;
}

// A Prometheus server scraping one target every second, its data and log in `dir`. Stopped
// (SIGTERM, waited for) by the destructor, whatever the test's outcome.
class PrometheusProcess {
 public:
  static constexpr char kJob[] = "vlcache";

  PrometheusProcess() = default;
  PrometheusProcess(const PrometheusProcess&) = delete;
  PrometheusProcess& operator=(const PrometheusProcess&) = delete;
  ~PrometheusProcess() { Stop(); }

  ::testing::AssertionResult Start(const std::string& dir, const std::string& scrape_target) {
    log_path_ = dir + "/prometheus.log";
    const std::string config = dir + "/prometheus.yml";
    // scrape_timeout must not exceed scrape_interval, and its default (10 s) does.
    WriteFile(config, std::string("global:\n"
                                  "  scrape_interval: 1s\n"
                                  "  scrape_timeout: 1s\n"
                                  "  evaluation_interval: 1s\n"
                                  "scrape_configs:\n"
                                  "  - job_name: ") +
                          kJob +
                          "\n"
                          "    static_configs:\n"
                          "      - targets: ['" +
                          scrape_target + "']\n");
    const int port = FreePort();
    if (port <= 0) return ::testing::AssertionFailure() << "no free port for Prometheus";
    address_ = "127.0.0.1:" + std::to_string(port);

    std::vector<std::string> args = {"/usr/bin/prometheus", "--config.file=" + config,
                                     "--storage.tsdb.path=" + dir + "/data",
                                     "--web.listen-address=" + address_, "--log.level=info"};
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    const int log_fd = ::open(log_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (log_fd < 0) return ::testing::AssertionFailure() << "cannot create " << log_path_;
    const pid_t parent = ::getpid();
    const pid_t pid = ::fork();
    if (pid < 0) {
      ::close(log_fd);
      return ::testing::AssertionFailure() << "fork failed";
    }
    if (pid == 0) {
      // Only async-signal-safe calls between fork and exec. A crashed test must not leave
      // Prometheus running: it dies with its parent.
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (::getppid() != parent) ::_exit(126);
      ::dup2(log_fd, STDOUT_FILENO);
      ::dup2(log_fd, STDERR_FILENO);
      ::execv(argv[0], argv.data());
      ::_exit(127);
    }
    ::close(log_fd);
    pid_ = pid;
    return ::testing::AssertionSuccess();
  }

  void Stop() {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGTERM);
    int status = 0;
    const auto give_up = steady_clock::now() + seconds(30);
    while (::waitpid(pid_, &status, WNOHANG) == 0) {
      if (steady_clock::now() >= give_up) {
        ::kill(pid_, SIGKILL);
        ::waitpid(pid_, &status, 0);
        break;
      }
      std::this_thread::sleep_for(milliseconds(20));
    }
    pid_ = -1;
  }

  // The instant-query result vector of `promql`; an empty array while Prometheus is not up yet
  // or the query fails.
  json Query(const std::string& promql) const {
    const std::string body = HttpGet(address_, "/api/v1/query?query=" + UrlEncode(promql));
    const json j = json::parse(body, nullptr, /*allow_exceptions=*/false);
    if (!j.is_object() || j.value("status", "") != "success") return json::array();
    const json& result = j["data"]["result"];
    return result.is_array() ? result : json::array();
  }

  // Polls `promql` until `accept` takes its result or `deadline` passes; returns the last result.
  json WaitFor(const std::string& promql, const std::function<bool(const json&)>& accept,
               steady_clock::time_point deadline) const {
    json result = Query(promql);
    while (!accept(result) && steady_clock::now() < deadline) {
      std::this_thread::sleep_for(milliseconds(250));
      result = Query(promql);
    }
    return result;
  }

  // The end of Prometheus's log, for failure messages.
  std::string LogTail() const {
    const std::string log = Slurp(log_path_);
    return log.size() > 4000 ? log.substr(log.size() - 4000) : log;
  }

 private:
  pid_t pid_ = -1;
  std::string address_;
  std::string log_path_;
};

// The value of the only series of a query result, NaN when there is not exactly one.
double OnlyValue(const json& result) {
  if (!result.is_array() || result.size() != 1) return std::numeric_limits<double>::quiet_NaN();
  const json& value = result[0]["value"];  // [unix time, "value as a string"]
  if (!value.is_array() || value.size() != 2 || !value[1].is_string()) {
    return std::numeric_limits<double>::quiet_NaN();
  }
  return std::strtod(value[1].get<std::string>().c_str(), nullptr);
}

class ObservabilityTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ClearVlcEnvironment();
    dir_ = MakeTempDir("vlcache-observability-");
    ASSERT_FALSE(dir_.empty());
    const absl::Status made = MakeTinyModel(dir_ + "/model");
    ASSERT_TRUE(made.ok()) << made;
    ASSERT_TRUE(server_.Start(dir_ + "/model"));
  }

  void TearDown() override {
    server_.Stop();
    if (!dir_.empty()) RemoveTree(dir_);
  }

  StreamResult Generate(const pb::GenerateRequest& request, milliseconds deadline = seconds(300)) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + deadline);
    auto reader = server_.stub()->Generate(&ctx, request);
    return ReadStream(reader.get());
  }

  // vlcache_kv_cache_bytes{state="used"} from a fresh scrape; NaN when the page has none.
  double KvUsedBytes() const {
    return Sample(server_.Metrics(), "vlcache_kv_cache_bytes", {{"state", "used"}});
  }

  // Polls /metrics until the pool has no page in use (10 s at most); returns the last value.
  double WaitForKvUsedZero() const {
    const auto give_up = steady_clock::now() + seconds(10);
    double used = KvUsedBytes();
    while (used != 0 && steady_clock::now() < give_up) {
      std::this_thread::sleep_for(milliseconds(50));
      used = KvUsedBytes();
    }
    return used;
  }

  std::string dir_;
  ServerProcess server_;
};

TEST_F(ObservabilityTest, PrometheusScrapesAndQueriesTheServer) {
  // Traffic first, so that the very first scrape already has something to show: two requests
  // (one compressed with the VL-Cache policy) and a session, which stays open.
  ASSERT_TRUE(Generate(ImageRequest(1, 6)).status.ok());
  pb::GenerateRequest compressed = ImageRequest(2, 6);
  compressed.mutable_cache()->set_policy("vlcache");
  compressed.mutable_cache()->set_budget(0.1);
  const StreamResult r = Generate(compressed);
  ASSERT_TRUE(r.status.ok()) << Describe(r.status);
  ASSERT_EQ(r.usage.kv_policy(), "vlcache");
  {
    pb::CreateSessionRequest request;
    request.mutable_media()->add_images(Png(40, 30, 3));
    request.mutable_cache()->set_policy("vlcache");
    request.mutable_cache()->set_budget(0.5);
    pb::SessionInfo info;
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + seconds(120));
    const grpc::Status s = server_.stub()->CreateSession(&ctx, request, &info);
    ASSERT_TRUE(s.ok()) << Describe(s);
  }

  PrometheusProcess prometheus;
  ASSERT_TRUE(prometheus.Start(dir_, server_.metrics_target()));
  const auto deadline = steady_clock::now() + seconds(60);
  auto one_value = [](const json& r) { return !std::isnan(OnlyValue(r)); };

  // The target is healthy once a scrape has succeeded; everything below comes from that scrape.
  const json up = prometheus.WaitFor(
      std::string("up{job=\"") + PrometheusProcess::kJob + "\"}",
      [](const json& r) { return OnlyValue(r) == 1; }, deadline);
  ASSERT_EQ(OnlyValue(up), 1) << "up: " << up.dump() << "\nPrometheus log:\n"
                              << prometheus.LogTail();

  struct Check {
    std::string promql;
    std::function<bool(double)> holds;
    const char* expectation;
  };
  const std::vector<Check> checks = {
      {"vlcache_requests_total{method=\"Generate\",code=\"OK\"}", [](double v) { return v >= 2; },
       ">= 2"},
      {"vlcache_time_to_first_token_seconds_count", [](double v) { return v >= 2; }, ">= 2"},
      // Parses the buckets as a histogram: "le" labels that Prometheus understands, counts that
      // grow with the bound. The median of a few tiny-model requests is a positive time.
      {"histogram_quantile(0.5, sum by (le) (vlcache_time_to_first_token_seconds_bucket))",
       [](double v) { return std::isfinite(v) && v > 0; }, "finite and > 0"},
      {"vlcache_kv_cache_bytes{state=\"capacity\"}", [](double v) { return v > 0; }, "> 0"},
      {"vlcache_sessions_active", [](double v) { return v == 1; }, "== 1"},
  };
  for (const Check& c : checks) {
    const json result = prometheus.WaitFor(
        c.promql, [&](const json& r) { return one_value(r) && c.holds(OnlyValue(r)); }, deadline);
    EXPECT_TRUE(one_value(result) && c.holds(OnlyValue(result)))
        << c.promql << " should be one series with a value " << c.expectation
        << "; Prometheus answered " << result.dump() << "\nPrometheus log:\n"
        << prometheus.LogTail();
  }
}

TEST_F(ObservabilityTest, CancelledAndTimedOutStreamsReturnTheirPages) {
  grpc::ClientContext info_ctx;
  pb::ModelInfo info;
  ASSERT_TRUE(server_.stub()->GetModelInfo(&info_ctx, pb::GetModelInfoRequest(), &info).ok());
  const int max_new = std::min(3000, info.max_new_tokens());
  ASSERT_GT(max_new, 1000);

  // A finished request leaves no page behind; this is the level the others must come back to.
  // Its time also sizes the deadline below.
  const auto warm_start = steady_clock::now();
  const StreamResult warm = Generate(ImageRequest(kLongImageSeed, 200));
  const auto warm_time = steady_clock::now() - warm_start;
  ASSERT_TRUE(warm.status.ok()) << Describe(warm.status);
  ASSERT_EQ(warm.usage.generated_tokens(), 200) << warm.usage.finish_reason();
  EXPECT_EQ(WaitForKvUsedZero(), 0) << "pages still in use after a request finished";

  // Cancelled by the client from another thread once the stream is under way.
  {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + seconds(300));
    std::promise<void> first_message;
    auto reader = server_.stub()->Generate(&ctx, ImageRequest(kLongImageSeed, max_new));
    int messages = 0;
    std::thread read_all([&] {
      pb::GenerateResponse response;
      while (reader->Read(&response)) {
        if (++messages == 1) first_message.set_value();
      }
      if (messages == 0) first_message.set_value();  // ended early: let the test report it
    });
    first_message.get_future().wait();
    // Still decoding, so its pages are in use: the gauge follows the pool, not only its end.
    // The engine publishes its gauges at the end of a loop pass, which can be just after the
    // first token was streamed: poll briefly rather than read once.
    double used_while_running = KvUsedBytes();
    for (int i = 0; i < 100 && !(used_while_running > 0); ++i) {
      std::this_thread::sleep_for(milliseconds(10));
      used_while_running = KvUsedBytes();
    }
    std::thread cancel([&ctx] { ctx.TryCancel(); });
    cancel.join();
    read_all.join();
    const grpc::Status s = reader->Finish();
    EXPECT_EQ(s.error_code(), grpc::StatusCode::CANCELLED) << Describe(s);
    EXPECT_GT(messages, 0) << "cancelled before the first token";
    EXPECT_GT(used_while_running, 0) << "no KV bytes in use while a request was decoding";
    EXPECT_EQ(WaitForKvUsedZero(), 0) << "a cancelled request kept its KV pages";
  }

  // Ended by a deadline that lands inside the long stream: after the first token (the time of
  // 200 tokens), long before the last: the stream asks for 15 times as many, so the deadline
  // holds even when the load on a shared machine changes between the two requests.
  {
    const auto deadline =
        std::max(milliseconds(50), std::chrono::duration_cast<milliseconds>(warm_time));
    const StreamResult r = Generate(ImageRequest(kLongImageSeed, max_new), deadline);
    EXPECT_EQ(r.status.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED)
        << Describe(r.status) << " after " << r.token_ids.size() << " tokens, deadline "
        << deadline.count() << " ms";
    EXPECT_LT(static_cast<int>(r.token_ids.size()), max_new);
    EXPECT_EQ(WaitForKvUsedZero(), 0) << "a request past its deadline kept its KV pages";
  }

  // The server counts both endings as what they were. It records a call when its handler
  // returns, which can be just after the client saw the status: poll briefly.
  for (const char* code : {"CANCELLED", "DEADLINE_EXCEEDED"}) {
    const auto give_up = steady_clock::now() + seconds(10);
    std::string metrics = server_.Metrics();
    auto count = [&] {
      return Sample(metrics, "vlcache_requests_total", {{"method", "Generate"}, {"code", code}});
    };
    while (!(count() >= 1) && steady_clock::now() < give_up) {
      std::this_thread::sleep_for(milliseconds(50));
      metrics = server_.Metrics();
    }
    std::string counted;  // the request counter's lines, for the failure message
    std::istringstream in(metrics);
    for (std::string line; std::getline(in, line);) {
      if (line.rfind("vlcache_requests_total{", 0) == 0) counted += line + "\n";
    }
    EXPECT_GE(count(), 1) << "no Generate call counted as " << code << "; the server counted:\n"
                          << counted;
  }

  // And the pool is whole again: a normal request runs and gives the same answer as before.
  const StreamResult good = Generate(ImageRequest(kLongImageSeed, 6));
  ASSERT_TRUE(good.status.ok()) << Describe(good.status);
  EXPECT_EQ(good.token_ids, std::vector<int>(warm.token_ids.begin(), warm.token_ids.begin() + 6));
  EXPECT_EQ(WaitForKvUsedZero(), 0);
}

}  // namespace
}  // namespace vlc::server

namespace vlc::server {
namespace {

// The gauges a router and an autoscaler read follow the requests: with one batch slot, three long
// requests are one running and two waiting, the pool is partly in use; once they are cancelled,
// all three gauges return to zero. The pool's shape is published from the start.
TEST_F(ObservabilityTest, RouterGaugesFollowQueuedRunningAndFinishedRequests) {
  server_.Stop();
  ASSERT_TRUE(server_.Start(dir_ + "/model", {"--max-running", "1"}));
  const std::string first = server_.Metrics();
  EXPECT_EQ(SumSamples(first, "vlcache_kv_cache_info", {"block_size=\"16\""}), 1);
  client::ConnectOptions co;
  co.target = server_.target();
  auto c = client::Client::Connect(co);
  ASSERT_TRUE(c.ok()) << c.status();
  std::vector<std::shared_ptr<client::StreamCall>> calls;
  for (int i = 0; i < 3; ++i) {
    calls.push_back((*c)->StartGenerate(ImageRequest(kLongImageSeed, 3000), {}, nullptr));
  }
  auto gauges = [&](std::string* text) {
    *text = server_.Metrics();
    return std::make_tuple(SumSamples(*text, "vlcache_queue_depth"),
                           SumSamples(*text, "vlcache_requests_running"),
                           SumSamples(*text, "vlcache_kv_cache_usage_ratio"));
  };
  std::string text;
  auto busy = gauges(&text);
  for (int i = 0; i < 500 && busy != std::make_tuple(2.0, 1.0, std::get<2>(busy)); ++i) {
    std::this_thread::sleep_for(milliseconds(10));
    busy = gauges(&text);
  }
  EXPECT_EQ(std::get<0>(busy), 2) << "two requests waiting";
  EXPECT_EQ(std::get<1>(busy), 1) << "one request running";
  EXPECT_GT(std::get<2>(busy), 0);
  EXPECT_LT(std::get<2>(busy), 1);
  for (auto& call : calls) call->Cancel();
  for (auto& call : calls) call->Wait();
  auto idle = gauges(&text);
  for (int i = 0; i < 500 && idle != std::make_tuple(0.0, 0.0, 0.0); ++i) {
    std::this_thread::sleep_for(milliseconds(10));
    idle = gauges(&text);
  }
  EXPECT_EQ(idle, std::make_tuple(0.0, 0.0, 0.0)) << text;
}

}  // namespace
}  // namespace vlc::server
