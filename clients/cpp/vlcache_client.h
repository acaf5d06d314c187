// The project's C++ client of the vlcache Inference service (proto/vlcache/v1/inference.proto),
// on gRPC's callback API: a streamed generation or a session call is started, runs on gRPC's own
// threads and reports through handlers, so one thread can keep many calls in flight (the load
// generator does); each call also has a blocking form (the command-line client uses it).
//
// Every call carries the bearer token given at Connect and its own deadline. Handlers of one call
// run one at a time, in order; handlers of different calls may run at once.
#pragma once

#include <grpcpp/grpcpp.h>

#include <chrono>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "vlcache/v1/inference.grpc.pb.h"

namespace vlc::client {

namespace pb = vlcache::v1;

// The metadata that names a call's session, for proxies that route on it. The client sets it on
// every session call, and CreateSession sends a random session id of the client's choosing
// (unless the request names one), so that the creation and the later calls hash alike.
inline constexpr char kSessionIdMetadata[] = "x-session-id";
// A random session id (32 hex digits).
std::string NewSessionId();

struct ConnectOptions {
  std::string target = "127.0.0.1:50051";  // HOST:PORT
  std::string token;                         // bearer token; empty: none
  std::string tls_ca_pem;                    // PEM of the CA to trust; empty: plaintext
};

struct CallOptions {
  std::chrono::microseconds deadline{0};  // from the call's start; 0: none
};

// What the client keeps of each call it started until gRPC is done with it: calls are freed on
// the caller's threads (at the next start, or when the client goes), never on gRPC's, and the
// client does not go before every call has ended.
struct TrackedCall {
  virtual ~TrackedCall() = default;
  bool finished = false;  // set under the registry's mutex, as gRPC's last use of the call
};

class CallRegistry {
 public:
  ~CallRegistry();  // waits for every call to end, then frees them
  void Add(std::shared_ptr<TrackedCall> call);
  void Finished(TrackedCall* call);

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  int in_flight_ = 0;
  std::vector<std::shared_ptr<TrackedCall>> held_;
};

// One streamed generation (Generate or SessionGenerate) in flight.
class StreamCall : public grpc::ClientReadReactor<pb::GenerateResponse>, public TrackedCall {
 public:
  using ResponseHandler = std::function<void(const pb::GenerateResponse&)>;
  using DoneHandler = std::function<void(const grpc::Status&)>;

  // Asks the server to stop (the call then ends CANCELLED); safe at any time, also after the end.
  void Cancel() { context_.TryCancel(); }
  // Blocks until the call ended; returns its status.
  grpc::Status Wait();
  bool done() const;

 private:
  friend class Client;
  StreamCall(ResponseHandler on_response, DoneHandler on_done, CallRegistry* registry);
  void OnReadDone(bool ok) override;
  void OnDone(const grpc::Status& status) override;

  grpc::ClientContext context_;
  std::unique_ptr<google::protobuf::Message> request_;  // outlives the call, as gRPC requires
  pb::GenerateResponse response_;
  ResponseHandler on_response_;
  DoneHandler on_done_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool done_ = false;
  grpc::Status status_;
  CallRegistry* registry_;
};

class Client {
 public:
  // The channel is created lazily by gRPC: an unreachable server shows in the first call's status.
  static absl::StatusOr<std::unique_ptr<Client>> Connect(const ConnectOptions& options);

  // Streamed calls: `on_response` gets every message (text deltas, then one with the usage), then
  // `on_done` the status, both on gRPC's threads.
  std::shared_ptr<StreamCall> StartGenerate(const pb::GenerateRequest& request,
                                            const CallOptions& options,
                                            StreamCall::ResponseHandler on_response,
                                            StreamCall::DoneHandler on_done = nullptr);
  std::shared_ptr<StreamCall> StartSessionGenerate(const pb::SessionGenerateRequest& request,
                                                   const CallOptions& options,
                                                   StreamCall::ResponseHandler on_response,
                                                   StreamCall::DoneHandler on_done = nullptr);

  // Unary calls; `done` runs on a gRPC thread with the status and the reply.
  void StartCreateSession(const pb::CreateSessionRequest& request, const CallOptions& options,
                          std::function<void(grpc::Status, pb::SessionInfo)> done);
  void StartDeleteSession(const pb::DeleteSessionRequest& request, const CallOptions& options,
                          std::function<void(grpc::Status)> done);

  // The blocking forms.
  grpc::Status Generate(const pb::GenerateRequest& request, const CallOptions& options,
                        const StreamCall::ResponseHandler& on_response);
  grpc::Status SessionGenerate(const pb::SessionGenerateRequest& request,
                               const CallOptions& options,
                               const StreamCall::ResponseHandler& on_response);
  grpc::Status CreateSession(const pb::CreateSessionRequest& request, const CallOptions& options,
                             pb::SessionInfo* reply);
  grpc::Status GetSession(const pb::GetSessionRequest& request, const CallOptions& options,
                          pb::SessionInfo* reply);
  grpc::Status DeleteSession(const pb::DeleteSessionRequest& request, const CallOptions& options);
  grpc::Status GetModelInfo(const CallOptions& options, pb::ModelInfo* reply);

  const std::shared_ptr<grpc::Channel>& channel() const { return channel_; }

 private:
  Client() = default;
  void Prepare(const CallOptions& options, grpc::ClientContext* context,
               const std::string& session_id = "") const;
  std::shared_ptr<StreamCall> Start(std::unique_ptr<google::protobuf::Message> request,
                                    bool session, const CallOptions& options,
                                    StreamCall::ResponseHandler on_response, StreamCall::DoneHandler on_done);
  std::string token_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<pb::Inference::Stub> stub_;
  CallRegistry calls_;  // declared last: goes first, before the channel
};

// The text and the final usage of a streamed answer, gathered from its messages.
struct Answer {
  std::string text;
  pb::Usage usage;
  bool has_usage = false;
  void Add(const pb::GenerateResponse& r) {
    text += r.text();
    if (r.has_usage()) {
      usage = r.usage();
      has_usage = true;
    }
  }
};

}  // namespace vlc::client
