// What the server integration suites share: the real vlcache-server process on free ports, the
// tiny random checkpoint it serves, test images, reading a token stream, and scraping /metrics
// over a plain socket as Prometheus would.
#pragma once

#include <arpa/inet.h>
#include <fcntl.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <fstream>
#include <iterator>
#include <limits>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>

#include "absl/status/status.h"
#include "common/fs.h"
#include "common/http_get.h"
#include "tools/make_tiny.h"
#include "vlcache/v1/inference.grpc.pb.h"

extern char** environ;

namespace vlc::server {

namespace pb = vlcache::v1;

constexpr int kVisualTokensPerImage = 16;  // the tiny model: 32x32 pixels in 8x8 patches

// The server, the CLI and the Python client all read VLC_* variables (a token, a model); a
// developer's own settings must not change what these tests see.
inline void ClearVlcEnvironment() {
  std::vector<std::string> vlc_vars;
  for (char** e = environ; *e != nullptr; ++e) {
    const std::string entry(*e);
    if (entry.rfind("VLC_", 0) == 0) vlc_vars.push_back(entry.substr(0, entry.find('=')));
  }
  for (const auto& name : vlc_vars) ::unsetenv(name.c_str());
}

// The tiny random checkpoint every server suite serves (seed 5: the answers the suites expect).
inline absl::Status MakeTinyModel(const std::string& dir) {
  tools::TinyOptions opts;
  opts.seed = 5;
  return tools::MakeTinyCheckpoint(dir, opts);
}

// A suite's scratch: a fresh temporary directory (its name starting with `prefix`) holding one tiny
// random model in `<dir>/model`, made in SetUpTestSuite and removed in TearDownTestSuite, so every
// test of the suite starts its server on the same model.
inline void MakeSuiteModelDir(const char* prefix, std::string** dir) {
  ClearVlcEnvironment();
  *dir = new std::string(MakeTempDir(prefix));
  ASSERT_FALSE((*dir)->empty()) << "no temporary directory";
  const absl::Status made = MakeTinyModel(**dir + "/model");
  ASSERT_TRUE(made.ok()) << made;
}

inline void RemoveSuiteDir(std::string** dir) {
  if (*dir != nullptr && !(*dir)->empty()) RemoveTree(**dir);
  delete *dir;
  *dir = nullptr;
}

inline std::string Png(int w, int h, int seed) { return tools::RandomPng(w, h, seed); }

inline std::string Slurp(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), {});
}

inline void WriteFile(const std::string& path, const std::string& data) {
  std::ofstream(path, std::ios::binary) << data;
}

// Everything a Generate or SessionGenerate stream delivered.
struct StreamResult {
  grpc::Status status;
  std::string text;  // the deltas, concatenated
  std::vector<int> token_ids;
  int messages = 0;
  int usage_messages = 0;
  pb::Usage usage;
};

inline StreamResult ReadStream(grpc::ClientReaderInterface<pb::GenerateResponse>* reader) {
  StreamResult r;
  pb::GenerateResponse response;
  while (reader->Read(&response)) {
    ++r.messages;
    r.text += response.text();
    r.token_ids.insert(r.token_ids.end(), response.token_ids().begin(),
                       response.token_ids().end());
    if (response.has_usage()) {
      ++r.usage_messages;
      r.usage = response.usage();
    }
  }
  r.status = reader->Finish();
  return r;
}

// The body of a 200 answer to GET http://host_port/path, or "" for anything else.
inline std::string HttpGet(const std::string& host_port, const std::string& path) {
  auto body = HttpGetBody(host_port, path);
  return body.ok() ? *std::move(body) : "";
}

// The sum of the sample lines of metric `name` whose labels include every one of `labels`
// (e.g. "pipeline=\"sales\""; none: any labels); NaN when there is none.
inline double SumSamples(const std::string& text, const std::string& name,
                         const std::vector<std::string>& labels = {}) {
  std::istringstream in(text);
  std::string line;
  double sum = std::numeric_limits<double>::quiet_NaN();
  while (std::getline(in, line)) {
    if (line.rfind(name, 0) != 0) continue;
    const char next = line.size() > name.size() ? line[name.size()] : '\0';
    if (next != ' ' && next != '{') continue;  // a longer name that starts with this one
    bool all = true;
    for (const auto& l : labels) all = all && line.find(l) != std::string::npos;
    if (!all) continue;
    const double v = std::strtod(line.c_str() + line.rfind(' ') + 1, nullptr);
    sum = std::isnan(sum) ? v : sum + v;
  }
  return sum;
}

// The vlcache-server process, started on free ports; stopped (SIGTERM, then a clean exit within
// 30 s is required) by Stop or the destructor.
class ServerProcess {
 public:
  ServerProcess() = default;
  ServerProcess(const ServerProcess&) = delete;
  ServerProcess& operator=(const ServerProcess&) = delete;
  ~ServerProcess() { Stop(); }

  // Starts the server on `model_dir` with `extra_args` and waits (60 s at most) for its
  // "listening grpc=... metrics=..." line.
  ::testing::AssertionResult Start(const std::string& model_dir,
                                   const std::vector<std::string>& extra_args = {}) {
    auto started = StartLoading(model_dir, extra_args);
    if (!started) return started;
    return WaitListening();
  }

  // Starts the server and returns once its ports are open ("loading grpc=... metrics=..."),
  // before the model is loaded; target() is then known.
  ::testing::AssertionResult StartLoading(const std::string& model_dir,
                                          const std::vector<std::string>& extra_args = {}) {
    const std::string bin = std::string(VLC_BIN_DIR) + "/vlcache-server";
    std::vector<std::string> args = {bin,           "--model",     model_dir,
                                     "--listen",    "127.0.0.1:0", "--metrics-listen",
                                     "127.0.0.1:0", "--log-level", "warn"};
    args.insert(args.end(), extra_args.begin(), extra_args.end());
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) != 0) return ::testing::AssertionFailure() << "pipe failed";
    const pid_t parent = ::getpid();
    const pid_t pid = ::fork();
    if (pid < 0) return ::testing::AssertionFailure() << "fork failed";
    if (pid == 0) {
      // Only async-signal-safe calls between fork and exec. A crashed test must not leave the
      // server running: it dies with its parent.
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (::getppid() != parent) ::_exit(126);
      ::dup2(fds[1], STDOUT_FILENO);
      ::execv(argv[0], argv.data());
      ::_exit(127);
    }
    ::close(fds[1]);
    pid_ = pid;
    stdout_fd_ = fds[0];
    return ExpectLine("loading");
  }

  // After StartLoading: waits (60 s at most) for the "listening ..." line.
  ::testing::AssertionResult WaitListening() { return ExpectLine("listening"); }

  // Sends `sig` to the server process.
  void Signal(int sig) const {
    if (pid_ > 0) ::kill(pid_, sig);
  }
  // Waits (bounded polling, up to `limit`) for the process to end; its wait status, or -1 when it
  // is still running at the limit.
  int WaitExit(std::chrono::milliseconds limit) {
    if (pid_ <= 0) return -1;
    int status = 0;
    const auto give_up = std::chrono::steady_clock::now() + limit;
    while (::waitpid(pid_, &status, WNOHANG) == 0) {
      if (std::chrono::steady_clock::now() >= give_up) return -1;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    pid_ = -1;
    return status;
  }

  // SIGTERM: the server drains and must exit 0; a hang past the grace period is a failure.
  void Stop() {
    stub_.reset();
    channel_.reset();
    if (pid_ > 0) {
      ::kill(pid_, SIGTERM);
      int status = 0;
      const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(30);
      pid_t done = 0;
      while ((done = ::waitpid(pid_, &status, WNOHANG)) == 0 &&
             std::chrono::steady_clock::now() < give_up) {
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
      }
      if (done == 0) {
        ::kill(pid_, SIGKILL);
        ::waitpid(pid_, &status, 0);
        ADD_FAILURE() << "vlcache-server did not exit within 30 s of SIGTERM";
      } else {
        EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0)
            << "vlcache-server exited with wait status " << status << " after SIGTERM";
      }
      pid_ = -1;
    }
    if (stdout_fd_ >= 0) ::close(stdout_fd_);
    stdout_fd_ = -1;
  }


 private:
  // Reads the next stdout line, which must be "<word> grpc=HOST:PORT metrics=HOST:PORT", and
  // connects to its addresses.
  ::testing::AssertionResult ExpectLine(const std::string& word) {
    std::string line;
    const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    while (line.empty() || line.back() != '\n') {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          give_up - std::chrono::steady_clock::now());
      if (left.count() <= 0) {
        return ::testing::AssertionFailure()
               << "no '" << word << "' line within 60 s; got: " << line;
      }
      pollfd p{stdout_fd_, POLLIN, 0};
      if (::poll(&p, 1, static_cast<int>(left.count())) <= 0) continue;
      char c;
      if (::read(stdout_fd_, &c, 1) != 1) {
        int status = 0;
        ::waitpid(pid_, &status, 0);
        pid_ = -1;
        exit_code_ = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
        return ::testing::AssertionFailure()
               << "vlcache-server closed stdout before its '" << word << "' line (wait status "
               << status << "); got: " << line;
      }
      line += c;
    }
    line.pop_back();  // the '\n'
    const std::string grpc_key = word + " grpc=", metrics_key = " metrics=";
    const size_t m = line.find(metrics_key);
    if (line.rfind(grpc_key, 0) != 0 || m == std::string::npos) {
      return ::testing::AssertionFailure() << "expected a '" << word << "' line, got: " << line;
    }
    const std::string grpc_addr = line.substr(grpc_key.size(), m - grpc_key.size());
    // (Further addresses, " http=...", may follow.)
    const size_t metrics_end = line.find(' ', m + metrics_key.size());
    const std::string metrics_addr = line.substr(
        m + metrics_key.size(),
        metrics_end == std::string::npos ? std::string::npos : metrics_end - m - metrics_key.size());
    for (const std::string& addr : {grpc_addr, metrics_addr}) {
      const size_t colon = addr.rfind(':');
      if (colon == std::string::npos || std::atoi(addr.c_str() + colon + 1) <= 0) {
        return ::testing::AssertionFailure() << "no bound port in: " << line;
      }
    }
    if (target_ != grpc_addr) {
      target_ = grpc_addr;
      metrics_target_ = metrics_addr;
      channel_ = grpc::CreateChannel(target_, grpc::InsecureChannelCredentials());
      stub_ = pb::Inference::NewStub(channel_);
    }
    return ::testing::AssertionSuccess();
  }

 public:
  const std::string& target() const { return target_; }
  // The exit code of a server that ended before its expected line; -1 otherwise.
  int exit_code() const { return exit_code_; }
  // The metrics listener, "127.0.0.1:PORT".
  const std::string& metrics_target() const { return metrics_target_; }
  const std::shared_ptr<grpc::Channel>& channel() const { return channel_; }
  pb::Inference::Stub* stub() const { return stub_.get(); }
  // The /metrics page, "" when it could not be fetched.
  std::string Metrics() const { return HttpGet(metrics_target_, "/metrics"); }

 private:
  pid_t pid_ = -1;
  int stdout_fd_ = -1;
  int exit_code_ = -1;
  std::string target_;
  std::string metrics_target_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<pb::Inference::Stub> stub_;
};

}  // namespace vlc::server
