// vlcache-server: the gRPC inference service, and with --dq-db the DataQuality service.
// Configuration: flags, VLC_* environment variables, an optional YAML file (--help lists every
// option). Once its ports are open it prints
//   loading grpc=HOST:PORT metrics=HOST:PORT
// and once the model is loaded and requests are served
//   listening grpc=HOST:PORT metrics=HOST:PORT
// so that scripts and tests that asked for port 0 learn the ports; SIGTERM or SIGINT stop it.
#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>
#include <grpcpp/security/server_credentials.h>
#include <grpcpp/security/tls_certificate_provider.h>
#include <grpcpp/security/tls_credentials_options.h>
#include <pthread.h>
#include <signal.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <memory>
#include <sstream>
#include <thread>

#include "dq/store.h"
#include "server/config.h"
#include "server/data_quality_service.h"
#include "engine/scheduler.h"
#include "engine/session_snapshot.h"
#include "server/http_gateway.h"
#include "server/inference_service.h"
#include "server/metrics.h"
#include "server/oip_service.h"
#include "server/telemetry_watch.h"
#include "spdlog/sinks/stdout_sinks.h"
#include "spdlog/spdlog.h"
#include "common/process_env.h"

namespace {

std::string Host(const std::string& listen) { return listen.substr(0, listen.rfind(':')); }

std::string ReadFile(const std::string& path, bool* ok) {
  std::ifstream f(path, std::ios::binary);
  *ok = static_cast<bool>(f);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

}  // namespace

// Serving and measuring: OpenMP workers sleep between parallel regions (common/process_env.h).
VLC_PREFER_SLEEPING_OPENMP_WORKERS();

int main(int argc, char** argv) {
  using namespace vlc;
  // Signals are taken by sigwait below, never by the threads gRPC and LibTorch start.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGUSR1);  // a failed model load (see below)
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  std::string help;
  bool exit_now = false;
  auto config_or = server::LoadConfig(argc, argv, &help, &exit_now);
  if (!config_or.ok()) {
    std::cerr << "error: " << config_or.status().message() << "\n";
    return 2;
  }
  if (exit_now) {
    std::cout << help;
    return 0;
  }
  const server::ServerConfig& config = *config_or;
  auto logger = spdlog::stderr_logger_mt("vlcache");
  spdlog::set_default_logger(logger);
  spdlog::set_level(spdlog::level::from_str(config.log_level));
  if (config.log_format == "json") {
    spdlog::set_pattern(R"({"time":"%Y-%m-%dT%H:%M:%S.%e%z","level":"%l","msg":"%v"})");
  }

  std::vector<std::string> tokens;
  if (!config.auth_token.empty()) tokens.push_back(config.auth_token);
  if (!config.auth_token_file.empty()) {
    bool ok = false;
    std::istringstream lines(ReadFile(config.auth_token_file, &ok));
    if (!ok) {
      std::cerr << "error: cannot read --auth-token-file " << config.auth_token_file << "\n";
      return 2;
    }
    for (std::string line; std::getline(lines, line);) {
      if (!line.empty()) tokens.push_back(line);
    }
  }

  std::unique_ptr<server::Metrics> metrics;
  if (!config.metrics_listen.empty()) {
    auto m = server::Metrics::Start(config.metrics_listen);
    if (!m.ok()) {
      std::cerr << "error: metrics: " << m.status().message() << "\n";
      return 2;
    }
    metrics = std::move(*m);
  }

  // With --dq-db, the DataQuality service and the telemetry watch share one store (one SQLite
  // connection under one mutex). Both are declared before the gRPC server, so they outlive every
  // handler that uses them.
  std::unique_ptr<server::LockedStore> dq_store;
  std::unique_ptr<server::TelemetryWatch> watch;
  if (!config.dq_db.empty()) {
    auto store = dq::Store::Open(config.dq_db);
    if (!store.ok()) {
      std::cerr << "error: --dq-db: " << store.status().message() << "\n";
      return 2;
    }
    dq_store = std::make_unique<server::LockedStore>(std::move(*store));
    if (config.dq_watch_window_seconds > 0) {
      server::TelemetryWatchOptions watch_options;
      watch_options.window = std::chrono::milliseconds(
          static_cast<int64_t>(std::llround(config.dq_watch_window_seconds * 1e3)));
      watch_options.max_rows = static_cast<size_t>(config.dq_watch_max_rows);
      watch =
          std::make_unique<server::TelemetryWatch>(dq_store.get(), metrics.get(), watch_options);
      if (metrics) metrics->DeclareDqPipeline(server::kRequestsPipeline);
    }
  }
  // Sessions saved at the drain and continued from here by any replica sharing the directory.
  std::unique_ptr<engine::DirectorySessionStore> session_store;
  if (!config.session_store.empty()) {
    auto store = engine::DirectorySessionStore::Open(config.session_store);
    if (!store.ok()) {
      std::cerr << "error: --session-store: " << store.status().message() << "\n";
      return 2;
    }
    session_store = std::move(*store);
  }
  // Admits calls until SIGTERM starts the drain.
  server::DrainGate gate;
  server::InferenceService service(config, metrics.get(), tokens, watch.get(), &gate);
  // The Open Inference Protocol (KServe v2) beside our API, on the same generation path.
  server::OipService oip(config, &service, &gate);
  // DataQuality needs no model: it answers as soon as the port is open (its health status,
  // "vlcache.v1.DataQuality", is SERVING from then on, while the overall one waits for the model).
  std::unique_ptr<server::DataQualityService> dq_service;
  if (dq_store) {
    dq_service =
        std::make_unique<server::DataQualityService>(config, dq_store.get(), metrics.get(), tokens,
                                                     &gate);
  }
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  std::shared_ptr<grpc::ServerCredentials> creds = grpc::InsecureServerCredentials();
  if (!config.tls_cert_file.empty()) {
    // The files are read now (a missing one is an error at start) and then every
    // --tls-reload-seconds by gRPC's file watcher, so a renewed certificate serves new
    // connections without a restart; connections already open keep the one they began with.
    bool ok_cert = false, ok_key = false;
    ReadFile(config.tls_key_file, &ok_key);
    ReadFile(config.tls_cert_file, &ok_cert);
    if (!ok_cert || !ok_key) {
      std::cerr << "error: cannot read --tls-cert / --tls-key\n";
      return 2;
    }
    auto provider = std::make_shared<grpc::experimental::FileWatcherCertificateProvider>(
        config.tls_key_file, config.tls_cert_file,
        static_cast<unsigned int>(config.tls_reload_seconds));
    grpc::experimental::TlsServerCredentialsOptions tls(provider);
    tls.watch_identity_key_cert_pairs();
    creds = grpc::experimental::TlsServerCredentials(tls);
  }
  int port = 0;
  builder.AddListeningPort(config.listen, creds, &port);
  builder.RegisterService(&service);
  builder.RegisterService(&oip);
  if (dq_service) builder.RegisterService(dq_service.get());
  // Room for two media files, or (with DataQuality) a few runs of the largest size.
  int64_t max_message = config.pipeline.limits.max_bytes * 2;
  if (dq_service) max_message = std::max(max_message, config.dq_max_run_bytes * 4);
  builder.SetMaxReceiveMessageSize(
      static_cast<int>(std::min<int64_t>(max_message + (1 << 20), INT32_MAX)));
  std::unique_ptr<grpc::Server> grpc_server = builder.BuildAndStart();
  if (!grpc_server || port == 0) {
    std::cerr << "error: cannot listen on " << config.listen << "\n";
    return 2;
  }
  // The port is open while the model loads: health says NOT_SERVING and the API UNAVAILABLE, so a
  // readiness probe can tell a starting server from a dead one.
  grpc_server->GetHealthCheckService()->SetServingStatus(false);
  if (dq_service) {
    grpc_server->GetHealthCheckService()->SetServingStatus("vlcache.v1.DataQuality", true);
  }
  // "liveness" says only that the process answers: SERVING while it loads and while it drains,
  // so that a liveness probe never kills a server for doing either.
  grpc_server->GetHealthCheckService()->SetServingStatus(server::kLivenessService, true);
  std::string addresses = "grpc=" + Host(config.listen) + ":" + std::to_string(port);
  if (metrics) {
    addresses += " metrics=" + Host(config.metrics_listen) + ":" + std::to_string(metrics->port());
  }
  // The HTTP/REST binding reaches the services above through an in-process channel: the same
  // auth, drain, admission and metrics as a gRPC call.
  std::unique_ptr<server::HttpGateway> http;
  if (!config.http_listen.empty()) {
    server::HttpGateway::Options http_options;
    http_options.listen = config.http_listen;
    http_options.threads = config.http_threads;
    http_options.max_body_bytes = static_cast<size_t>(max_message + (1 << 20));
    grpc::ChannelArguments channel_args;
    channel_args.SetMaxSendMessageSize(-1);
    channel_args.SetMaxReceiveMessageSize(-1);
    auto g = server::HttpGateway::Start(http_options, grpc_server->InProcessChannel(channel_args));
    if (!g.ok()) {
      std::cerr << "error: --http-listen: " << g.status().message() << "\n";
      grpc_server->Shutdown(std::chrono::system_clock::now());
      return 2;
    }
    http = std::move(*g);
    addresses += " http=" + Host(config.http_listen) + ":" + std::to_string(http->port());
  }
  if (watch) watch->Start();  // windows before the model is loaded are empty, hence skipped
  std::cout << "loading " << addresses << std::endl;
  spdlog::info("event=loading grpc_port={} model={} dq_db=\"{}\"", port, config.model_dir,
               config.dq_db);

  // The model loads on its own thread so that SIGTERM during a long load still stops the server
  // at once; a failed load ends the process through the same sigwait (SIGUSR1).
  std::unique_ptr<engine::Pipeline> pipeline;
  std::unique_ptr<engine::Scheduler> scheduler;
  std::atomic<bool> load_failed{false};
  std::thread loader([&] {
    auto p = engine::Pipeline::Load(config.model_dir, config.pipeline);
    if (!p.ok()) {
      std::cerr << "error: " << p.status().message() << "\n";
      load_failed = true;
      ::kill(::getpid(), SIGUSR1);
      return;
    }
    pipeline = std::move(*p);
    engine::SchedulerOptions so;
    so.max_queue = config.max_queue;
    so.max_running = config.max_running;
    so.max_sessions = config.max_sessions;
    so.session_ttl_seconds = config.session_ttl_seconds;
    so.heap_trim_idle_seconds = config.heap_trim_idle_seconds;
    so.media_workers = config.media_workers;
    so.prefill_chunk_tokens = config.pipeline.prefill_chunk_tokens;
    so.metrics = metrics.get();
    if (session_store) {
      auto fingerprint = engine::ModelFingerprint(config.model_dir);
      if (!fingerprint.ok()) {
        std::cerr << "error: " << fingerprint.status().message() << "\n";
        load_failed = true;
        ::kill(::getpid(), SIGUSR1);
        return;
      }
      so.session_store = session_store.get();
      so.model_fingerprint = *fingerprint;
    }
    scheduler = std::make_unique<engine::Scheduler>(pipeline.get(), so);
    scheduler->Start();
    service.Attach(pipeline.get(), scheduler.get());
    grpc_server->GetHealthCheckService()->SetServingStatus(true);
    std::cout << "listening " << addresses << std::endl;
    spdlog::info("event=serving grpc_port={} model={} target=\"{}\" warm_ups={} warm_up_ms={:.1f}",
                 port, config.model_dir, engine::ComputeTargetName(pipeline->target()),
                 pipeline->warm_ups(), pipeline->warm_up_ms());
  });

  int sig = 0;
  sigwait(&signals, &sig);
  if (load_failed) {
    loader.join();
    grpc_server->Shutdown(std::chrono::system_clock::now());
    return 2;
  }
  spdlog::info("event=stopping signal={}", sig);
  grpc_server->GetHealthCheckService()->SetServingStatus(false);  // every service, then:
  grpc_server->GetHealthCheckService()->SetServingStatus(server::kLivenessService, true);
  gate.StartDraining();
  if (!service.ready()) {
    // Stopped while loading: nothing was acknowledged, so nothing is owed; do not wait for the
    // loader (a large checkpoint can take minutes).
    grpc_server->Shutdown(std::chrono::system_clock::now());
    std::_Exit(0);
  }
  loader.join();
  // With a session store, sessions leave for it now (idle ones at once, the others as their turn
  // ends), so that the replicas taking this one's traffic continue them during the drain.
  scheduler->MoveSessions();
  // The drain: calls already admitted (streaming, queued, or on their way to the engine) run to
  // their end, up to --drain-timeout; new ones were refused from the signal on. A second signal
  // ends the wait.
  const auto drain_deadline =
      std::chrono::steady_clock::now() +
      std::chrono::milliseconds(static_cast<int64_t>(std::llround(config.drain_timeout_seconds * 1e3)));
  spdlog::info("event=draining calls_in_flight={} timeout_s={}", gate.in_flight(),
               config.drain_timeout_seconds);
  bool drained = false;
  while (!(drained = gate.WaitIdle(std::min(drain_deadline, std::chrono::steady_clock::now() +
                                                                std::chrono::milliseconds(100))))) {
    if (std::chrono::steady_clock::now() >= drain_deadline) break;
    const timespec zero{0, 0};
    if (sigtimedwait(&signals, nullptr, &zero) > 0) {
      spdlog::warn("event=drain_interrupted calls_in_flight={}", gate.in_flight());
      break;
    }
  }
  if (!drained) {
    spdlog::warn("event=drain_incomplete calls_in_flight={} (stopped: they end UNAVAILABLE)",
                 gate.in_flight());
  }
  if (session_store) {
    spdlog::info("event=drained sessions_held={} (saved to {} unless busy)",
                 scheduler->num_sessions(), config.session_store);
  } else {
    spdlog::info("event=drained sessions_held={} (their KV caches end with the process)",
                 scheduler->num_sessions());
  }
  scheduler->Stop();  // answers every request still waiting or running
  if (http) http->Stop();  // its calls went through the gate above: none is left running
  grpc_server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(5));
  if (watch) watch->Stop();  // after the handlers: the rows they recorded are counted as dropped
  return 0;
}
