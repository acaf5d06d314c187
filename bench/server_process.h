// A vlcache-server process for the benchmarks that measure through gRPC: started next to the
// benchmark's binary on a free loopback port, ready once it prints its "listening" line, stopped
// with SIGTERM.
#pragma once

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <string>
#include <vector>

namespace vlc::bench {

class BenchServer {
 public:
  BenchServer() = default;
  BenchServer(const BenchServer&) = delete;
  BenchServer& operator=(const BenchServer&) = delete;
  ~BenchServer() { Stop(); }

  // Starts `bin_dir`/vlcache-server on `model` with `extra_args`; false when it exits or prints
  // something unexpected before serving.
  bool Start(const std::string& bin_dir, const std::string& model,
             const std::vector<std::string>& extra_args = {}) {
    std::vector<std::string> args = {bin_dir + "/vlcache-server", "--model", model, "--listen",
                                     "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0",
                                     "--log-level", "warn"};
    args.insert(args.end(), extra_args.begin(), extra_args.end());
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    int out[2];
    if (pipe(out) != 0) return false;
    pid_ = fork();
    if (pid_ == 0) {
      dup2(out[1], 1);
      close(out[0]);
      execv(argv[0], argv.data());
      _exit(127);
    }
    close(out[1]);
    // "loading grpc=H:P metrics=H:P" once the ports are open, "listening ..." once serving.
    std::string line;
    bool serving = false;
    char c;
    while (!serving && read(out[0], &c, 1) == 1) {
      if (c != '\n') {
        line += c;
        continue;
      }
      if (line.rfind("listening ", 0) == 0) {
        serving = true;
        target_ = Field(line, "grpc=");
        metrics_target_ = Field(line, "metrics=");
      }
      line.clear();
    }
    close(out[0]);
    return serving && !target_.empty();
  }

  void Stop() {
    if (pid_ > 0) {
      kill(pid_, SIGTERM);
      waitpid(pid_, nullptr, 0);
    }
    pid_ = -1;
  }

  const std::string& target() const { return target_; }
  const std::string& metrics_target() const { return metrics_target_; }

 private:
  static std::string Field(const std::string& line, const std::string& key) {
    const auto at = line.find(key);
    if (at == std::string::npos) return "";
    const auto end = line.find(' ', at);
    return line.substr(at + key.size(),
                       end == std::string::npos ? std::string::npos : end - at - key.size());
  }

  pid_t pid_ = -1;
  std::string target_, metrics_target_;
};

}  // namespace vlc::bench
