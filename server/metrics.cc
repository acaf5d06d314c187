#include "server/metrics.h"

#include "spdlog/spdlog.h"

#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>
#include <prometheus/text_serializer.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <map>
#include <mutex>
#include <set>
#include <sstream>
#include <thread>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "server/config.h"

namespace vlc::server {
namespace {

using prometheus::Counter;
using prometheus::Family;
using prometheus::Gauge;
using prometheus::Histogram;

// Latencies from a tenth of a millisecond (a decode step of a small model on a GPU) to two
// minutes (a long video prompt queued on a CPU), in a 1-2.5-5 series so that quantile estimates
// stay within a factor 2.5 on either device.
const Histogram::BucketBoundaries& LatencyBuckets() {
  static const Histogram::BucketBoundaries kBuckets = {
      0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
      0.25,   0.5,     1,      2.5,   5,      10,    25,   60,    120};
  return kBuckets;
}

// Data-quality series carry the users' pipeline and column names; past these many distinct values
// new ones are counted under kOtherLabel, so that no client can grow the series without bound.
constexpr size_t kMaxDqPipelines = 32;
constexpr size_t kMaxDqColumnsPerPipeline = 64;
constexpr char kOtherLabel[] = "_other";

// Fractions of the KV cache kept: fine at the low end, where the budgets of interest lie
// (the paper's 1% .. 20%), coarse above.
const Histogram::BucketBoundaries& RatioBuckets() {
  static const Histogram::BucketBoundaries kBuckets = {0.01, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3,
                                                       0.4,  0.5,  0.6,  0.7, 0.8,  0.9, 1};
  return kBuckets;
}

Histogram& AddHistogram(prometheus::Registry& registry, const std::string& name,
                        const std::string& help, const Histogram::BucketBoundaries& buckets) {
  return prometheus::BuildHistogram().Name(name).Help(help).Register(registry).Add({}, buckets);
}

// A listening TCP socket on `listen`, or UNAVAILABLE naming the address and the reason.
absl::StatusOr<int> OpenListener(const std::string& listen) {
  auto address = ParseHostPort(listen);
  if (!address.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("metrics address: ", address.status().message()));
  }
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  addrinfo* found = nullptr;
  const std::string port = std::to_string(address->port);
  if (int rc = ::getaddrinfo(address->host.c_str(), port.c_str(), &hints, &found); rc != 0) {
    return absl::UnavailableError(
        absl::StrCat("cannot serve metrics on ", listen, ": ", ::gai_strerror(rc)));
  }
  std::string error = "no address";
  int fd = -1;
  for (addrinfo* ai = found; ai != nullptr && fd < 0; ai = ai->ai_next) {
    fd = ::socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
    if (fd < 0) {
      error = std::strerror(errno);
      continue;
    }
    // A restarted server may bind again at once, despite connections in TIME_WAIT; two live
    // listeners on one port still fail (SO_REUSEADDR is not SO_REUSEPORT).
    const int one = 1;
    ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (::bind(fd, ai->ai_addr, ai->ai_addrlen) != 0 || ::listen(fd, 16) != 0) {
      error = std::strerror(errno);
      ::close(fd);
      fd = -1;
    }
  }
  ::freeaddrinfo(found);
  if (fd < 0) {
    return absl::UnavailableError(absl::StrCat("cannot serve metrics on ", listen, ": ", error));
  }
  return fd;
}

void SendAll(int fd, const std::string& data) {
  size_t sent = 0;
  while (sent < data.size()) {
    const ssize_t n = ::send(fd, data.data() + sent, data.size() - sent, MSG_NOSIGNAL);
    if (n <= 0) return;  // the scraper went away; nothing to tell it
    sent += static_cast<size_t>(n);
  }
}

std::string HttpResponse(const std::string& status, const std::string& content_type,
                         const std::string& body) {
  return absl::StrCat("HTTP/1.1 ", status, "\r\nContent-Type: ", content_type,
                      "\r\nContent-Length: ", body.size(), "\r\nConnection: close\r\n\r\n", body);
}

}  // namespace

// Why not prometheus::Exposer: it serves through civetweb, whose threads get a fixed 100 KiB stack,
// and glibc carves static TLS out of that stack; the libraries LibTorch pulls in (OpenBLAS, glog)
// bring more static TLS than that, so civetweb cannot start a thread in this process ("Cannot
// create threads"). The listener below is one std::thread with a normal stack, which is plenty for
// a scrape every few seconds; the text format comes from prometheus-cpp's own serializer.
//
// Every series that has no free label is created up front, so that a scrape shows it (at zero)
// before the first request, and the hot paths touch only prometheus-cpp's atomics. The labelled
// families are looked up per call: Family::Add takes a lock and returns the existing series.
struct Metrics::Impl {
  std::shared_ptr<prometheus::Registry> registry = std::make_shared<prometheus::Registry>();

  Family<Counter>* requests = nullptr;
  Histogram* ttft = nullptr;
  Histogram* inter_token = nullptr;
  Histogram* queue_time = nullptr;
  Histogram* prefill = nullptr;
  Histogram* end_to_end = nullptr;
  Histogram* media_prepare = nullptr;
  Counter* media_pictures = nullptr;
  Counter* prompt_text = nullptr;
  Counter* prompt_visual = nullptr;
  Counter* generated = nullptr;
  Gauge* kv_used = nullptr;
  Gauge* kv_capacity = nullptr;
  Gauge* kv_full = nullptr;
  Gauge* compression = nullptr;
  Histogram* layer_budget = nullptr;
  Gauge* sessions = nullptr;
  Family<Counter>* evictions = nullptr;
  Gauge* batch_size = nullptr;
  Gauge* queue_depth = nullptr;
  Gauge* running = nullptr;
  Gauge* kv_usage = nullptr;
  Family<Gauge>* kv_info = nullptr;
  Family<Counter>* kv_bytes = nullptr;
  Counter* session_hits = nullptr;
  Counter* session_misses = nullptr;
  Family<Counter>* session_moves = nullptr;
  Family<Counter>* dq_checks = nullptr;
  Family<Counter>* dq_violations = nullptr;

  // The pipeline and column labels given out so far (see kMaxDqPipelines).
  std::mutex dq_mu;
  std::map<std::string, std::set<std::string>> dq_labels;

  int listen_fd = -1;
  int port = 0;
  int wake[2] = {-1, -1};  // a pipe: writing to it ends Serve()
  std::thread server;

  ~Impl() {
    if (server.joinable()) {
      const char byte = 0;
      (void)!::write(wake[1], &byte, 1);
      server.join();
    }
    for (int fd : {listen_fd, wake[0], wake[1]}) {
      if (fd >= 0) ::close(fd);
    }
  }

  // Answers one connection at a time: scrapes are rare and small, and the timeouts keep a stuck
  // client from holding the listener for long.
  void Serve() {
    pollfd fds[2] = {{listen_fd, POLLIN, 0}, {wake[0], POLLIN, 0}};
    while (true) {
      if (::poll(fds, 2, -1) < 0) {
        if (errno == EINTR) continue;
        return;
      }
      if (fds[1].revents != 0) return;
      if ((fds[0].revents & POLLIN) == 0) continue;
      const int client = ::accept4(listen_fd, nullptr, nullptr, SOCK_CLOEXEC);
      if (client < 0) continue;
      timeval timeout{5, 0};
      ::setsockopt(client, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
      ::setsockopt(client, SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof(timeout));
      SendAll(client, Answer(ReadRequestHead(client)));
      ::close(client);
    }
  }

  static std::string ReadRequestHead(int client) {
    std::string head;
    char buf[1024];
    while (head.find("\r\n\r\n") == std::string::npos && head.size() < 8192) {
      const ssize_t n = ::recv(client, buf, sizeof(buf), 0);
      if (n <= 0) break;
      head.append(buf, static_cast<size_t>(n));
    }
    return head;
  }

  std::string Answer(const std::string& head) const {
    std::istringstream first_line(head.substr(0, head.find("\r\n")));
    std::string method, target;
    first_line >> method >> target;
    const std::string path = target.substr(0, target.find('?'));
    if (method != "GET" && method != "HEAD") {
      return HttpResponse("405 Method Not Allowed", "text/plain", "only GET\n");
    }
    if (path != "/metrics") return HttpResponse("404 Not Found", "text/plain", "try /metrics\n");
    std::ostringstream body;
    prometheus::TextSerializer().Serialize(body, registry->Collect());
    std::string response =
        HttpResponse("200 OK", "text/plain; version=0.0.4; charset=utf-8", body.str());
    if (method == "HEAD") response.resize(response.find("\r\n\r\n") + 4);
    return response;
  }

  void Build() {
    auto& r = *registry;
    requests = &prometheus::BuildCounter()
                    .Name("vlcache_requests_total")
                    .Help("gRPC calls finished, by method and status code")
                    .Register(r);
    ttft = &AddHistogram(r, "vlcache_time_to_first_token_seconds",
                         "Time from a request's arrival to its first generated token",
                         LatencyBuckets());
    inter_token =
        &AddHistogram(r, "vlcache_inter_token_latency_seconds",
                      "Time between consecutive generated tokens of one request", LatencyBuckets());
    queue_time =
        &AddHistogram(r, "vlcache_queue_time_seconds",
                      "Time a request waited for admission to the engine", LatencyBuckets());
    prefill = &AddHistogram(r, "vlcache_prefill_seconds",
                            "Compute time of a prompt's prefill (all its chunks), compression "
                            "included",
                            LatencyBuckets());
    media_prepare = &AddHistogram(r, "vlcache_media_prepare_seconds",
                                  "Time a media worker spent decoding, preprocessing and encoding "
                                  "(vision tower) one request's media",
                                  LatencyBuckets());
    media_pictures = &prometheus::BuildCounter()
                          .Name("vlcache_vision_encoded_pictures_total")
                          .Help("Images and video frames that went through the vision tower")
                          .Register(r)
                          .Add({});
    end_to_end = &AddHistogram(r, "vlcache_request_duration_seconds",
                               "Time from a request's arrival to its last token", LatencyBuckets());

    auto& prompt = prometheus::BuildCounter()
                       .Name("vlcache_prompt_tokens_total")
                       .Help("Prompt tokens prefilled, by modality")
                       .Register(r);
    prompt_text = &prompt.Add({{"modality", "text"}});
    prompt_visual = &prompt.Add({{"modality", "visual"}});
    generated = &prometheus::BuildCounter()
                     .Name("vlcache_generated_tokens_total")
                     .Help("Tokens generated")
                     .Register(r)
                     .Add({});

    auto& kv = prometheus::BuildGauge()
                   .Name("vlcache_kv_cache_bytes")
                   .Help(
                       "KV cache bytes: pages in use, the pool's capacity, and what the "
                       "uncompressed cache would hold for the same sequences")
                   .Register(r);
    kv_used = &kv.Add({{"state", "used"}});
    kv_capacity = &kv.Add({{"state", "capacity"}});
    kv_full = &kv.Add({{"state", "full_equivalent"}});
    compression = &prometheus::BuildGauge()
                       .Name("vlcache_kv_compression_ratio")
                       .Help("KV entries kept over the full cache's, of the last compressed prompt")
                       .Register(r)
                       .Add({});
    layer_budget =
        &AddHistogram(r, "vlcache_kv_layer_budget_ratio",
                      "Per-layer fraction of the prompt's KV entries kept", RatioBuckets());

    sessions = &prometheus::BuildGauge()
                    .Name("vlcache_sessions_active")
                    .Help("Sessions holding a KV cache")
                    .Register(r)
                    .Add({});
    evictions = &prometheus::BuildCounter()
                     .Name("vlcache_session_evictions_total")
                     .Help("Sessions evicted, by reason")
                     .Register(r);
    // The reasons (engine/session_table.h) exist from the start, so a rate over them is 0, not
    // empty, until the first eviction.
    for (const char* reason : {"ttl", "kv_pages", "max_sessions"}) evictions->Add({{"reason", reason}});
    batch_size = &prometheus::BuildGauge()
                      .Name("vlcache_batch_size")
                      .Help("Sequences in the last decode step")
                      .Register(r)
                      .Add({});
    queue_depth = &prometheus::BuildGauge()
                       .Name("vlcache_queue_depth")
                       .Help("Requests accepted and waiting for admission (media, a batch slot "
                             "or KV pages)")
                       .Register(r)
                       .Add({});
    running = &prometheus::BuildGauge()
                   .Name("vlcache_requests_running")
                   .Help("Requests admitted to the engine: prefilling or decoding")
                   .Register(r)
                   .Add({});
    kv_usage = &prometheus::BuildGauge()
                    .Name("vlcache_kv_cache_usage_ratio")
                    .Help("Fraction of the KV page pool in use, 0 to 1")
                    .Register(r)
                    .Add({});
    kv_info = &prometheus::BuildGauge()
                   .Name("vlcache_kv_cache_info")
                   .Help("The KV page pool: tokens per page (block_size) and pages (num_blocks)")
                   .Register(r);
    kv_bytes = &prometheus::BuildCounter()
                    .Name("vlcache_kv_request_bytes_total")
                    .Help("KV cache bytes of finished requests by policy: what their pages "
                          "held (kept) and what the uncompressed cache would hold (full)")
                    .Register(r);
    auto& lookups = prometheus::BuildCounter()
                        .Name("vlcache_session_lookups_total")
                        .Help("Calls naming a session, by whether it was there (hit) or not "
                              "(miss: unknown, expired or evicted)")
                        .Register(r);
    session_hits = &lookups.Add({{"result", "hit"}});
    session_misses = &lookups.Add({{"result", "miss"}});
    session_moves = &prometheus::BuildCounter()
                         .Name("vlcache_session_moves_total")
                         .Help("Sessions saved to the session store as the server stopped "
                               "(saved), continued from it (restored), deleted while in it "
                               "(dropped), and snapshots that could not be restored (rejected)")
                         .Register(r);
    for (const char* result : {"saved", "restored", "dropped", "rejected"}) {
      session_moves->Add({{"result", result}});
    }
    // Pipelines and columns are the users' names, so these series appear with their first check.
    dq_checks = &prometheus::BuildCounter()
                     .Name("vlcache_dq_checks_total")
                     .Help(
                         "Data-quality runs validated against their pipeline's history, by "
                         "pipeline and verdict (pass, fail)")
                     .Register(r);
    dq_violations = &prometheus::BuildCounter()
                         .Name("vlcache_dq_violations_total")
                         .Help(
                             "Data-quality constraints violated, by pipeline, column and AVH "
                             "metric (schema: the column could not be checked)")
                         .Register(r);
  }
};

Metrics::Metrics() : impl_(std::make_unique<Impl>()) {}
Metrics::~Metrics() = default;

absl::StatusOr<std::unique_ptr<Metrics>> Metrics::Start(const std::string& listen) {
  auto fd = OpenListener(listen);
  if (!fd.ok()) return fd.status();
  std::unique_ptr<Metrics> m(new Metrics());
  Impl& impl = *m->impl_;
  impl.listen_fd = *fd;
  sockaddr_storage bound{};
  socklen_t len = sizeof(bound);
  if (::getsockname(impl.listen_fd, reinterpret_cast<sockaddr*>(&bound), &len) != 0 ||
      ::pipe2(impl.wake, O_CLOEXEC) != 0) {
    return absl::UnavailableError(
        absl::StrCat("cannot serve metrics on ", listen, ": ", std::strerror(errno)));
  }
  impl.port =
      ntohs(bound.ss_family == AF_INET6 ? reinterpret_cast<const sockaddr_in6*>(&bound)->sin6_port
                                        : reinterpret_cast<const sockaddr_in*>(&bound)->sin_port);
  impl.Build();
  impl.server = std::thread([&impl] { impl.Serve(); });
  return m;
}

int Metrics::port() const { return impl_->port; }

void Metrics::CountRequest(const std::string& method, const std::string& code) {
  impl_->requests->Add({{"method", method}, {"code", code}}).Increment();
}

void Metrics::ObserveTtft(double seconds) { impl_->ttft->Observe(seconds); }
void Metrics::ObserveInterToken(double seconds) { impl_->inter_token->Observe(seconds); }
void Metrics::ObserveQueueTime(double seconds) { impl_->queue_time->Observe(seconds); }
void Metrics::ObservePrefill(double seconds) { impl_->prefill->Observe(seconds); }
void Metrics::ObserveEndToEnd(double seconds) { impl_->end_to_end->Observe(seconds); }
void Metrics::ObserveMediaPrepared(double seconds, int64_t pictures) {
  impl_->media_prepare->Observe(seconds);
  impl_->media_pictures->Increment(static_cast<double>(pictures));
}
void Metrics::LogEvent(const std::string& fields) { spdlog::info("{}", fields); }

void Metrics::CountPromptTokens(int64_t text, int64_t visual) {
  // prometheus-cpp ignores negative increments; counters only grow.
  impl_->prompt_text->Increment(static_cast<double>(text));
  impl_->prompt_visual->Increment(static_cast<double>(visual));
}

void Metrics::CountGeneratedTokens(int64_t n) {
  impl_->generated->Increment(static_cast<double>(n));
}

void Metrics::SetKvBytes(int64_t used, int64_t capacity, int64_t full_equivalent) {
  impl_->kv_usage->Set(capacity > 0 ? static_cast<double>(used) / static_cast<double>(capacity) : 0);
  impl_->kv_used->Set(static_cast<double>(used));
  impl_->kv_capacity->Set(static_cast<double>(capacity));
  impl_->kv_full->Set(static_cast<double>(full_equivalent));
}

void Metrics::ObserveCompression(double kept_over_full, const std::vector<double>& layer_ratios) {
  impl_->compression->Set(kept_over_full);
  for (double r : layer_ratios) impl_->layer_budget->Observe(r);
}

void Metrics::SetSessionsActive(int64_t n) { impl_->sessions->Set(static_cast<double>(n)); }

void Metrics::CountEviction(const std::string& reason) {
  impl_->evictions->Add({{"reason", reason}}).Increment();
}

void Metrics::SetBatchSize(int64_t n) { impl_->batch_size->Set(static_cast<double>(n)); }
void Metrics::SetQueueDepth(int64_t n) { impl_->queue_depth->Set(static_cast<double>(n)); }
void Metrics::SetRunning(int64_t n) { impl_->running->Set(static_cast<double>(n)); }

void Metrics::SetKvCacheShape(int64_t page_tokens, int64_t pages) {
  impl_->kv_info->Add({{"block_size", std::to_string(page_tokens)},
                       {"num_blocks", std::to_string(pages)}})
      .Set(1);
}

void Metrics::CountKvBytes(const std::string& policy, int64_t kept, int64_t full) {
  impl_->kv_bytes->Add({{"policy", policy}, {"state", "kept"}}).Increment(static_cast<double>(kept));
  impl_->kv_bytes->Add({{"policy", policy}, {"state", "full"}}).Increment(static_cast<double>(full));
}

void Metrics::CountSessionMove(const std::string& result) {
  impl_->session_moves->Add({{"result", result}}).Increment();
}

void Metrics::CountSessionLookup(bool hit) {
  (hit ? impl_->session_hits : impl_->session_misses)->Increment();
}

std::pair<std::string, std::string> Metrics::DqLabels(const std::string& pipeline,
                                                      const std::string& column) {
  std::lock_guard<std::mutex> lock(impl_->dq_mu);
  auto& known = impl_->dq_labels;
  auto it = known.find(pipeline);
  if (it == known.end()) {
    if (known.size() >= kMaxDqPipelines) return {kOtherLabel, column.empty() ? "" : kOtherLabel};
    it = known.emplace(pipeline, std::set<std::string>{}).first;
  }
  if (column.empty()) return {pipeline, ""};
  auto& columns = it->second;
  if (columns.count(column) == 0) {
    if (columns.size() >= kMaxDqColumnsPerPipeline) return {pipeline, kOtherLabel};
    columns.insert(column);
  }
  return {pipeline, column};
}

void Metrics::DeclareDqPipeline(const std::string& pipeline) {
  const auto labels = DqLabels(pipeline, "");
  for (const char* verdict : {"pass", "fail"}) {
    impl_->dq_checks->Add({{"pipeline", labels.first}, {"verdict", verdict}});
  }
}

void Metrics::CountDqCheck(const std::string& pipeline, bool passed) {
  const auto labels = DqLabels(pipeline, "");
  impl_->dq_checks->Add({{"pipeline", labels.first}, {"verdict", passed ? "pass" : "fail"}})
      .Increment();
}

void Metrics::CountDqViolation(const std::string& pipeline, const std::string& column,
                               const std::string& metric) {
  const auto labels = DqLabels(pipeline, column);
  impl_->dq_violations
      ->Add({{"pipeline", labels.first}, {"column", labels.second}, {"metric", metric}})
      .Increment();
}

}  // namespace vlc::server
