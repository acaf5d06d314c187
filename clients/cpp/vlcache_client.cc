#include "clients/cpp/vlcache_client.h"

#include <algorithm>
#include <cstdio>
#include <random>
#include <utility>

namespace vlc::client {

CallRegistry::~CallRegistry() {
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait(lock, [&] { return in_flight_ == 0; });
  held_.clear();
}

void CallRegistry::Add(std::shared_ptr<TrackedCall> call) {
  std::lock_guard<std::mutex> lock(mu_);
  held_.erase(std::remove_if(held_.begin(), held_.end(),
                             [](const auto& c) { return c->finished; }),
              held_.end());
  held_.push_back(std::move(call));
  ++in_flight_;
}

void CallRegistry::Finished(TrackedCall* call) {
  std::lock_guard<std::mutex> lock(mu_);
  call->finished = true;
  --in_flight_;
  cv_.notify_all();
}

StreamCall::StreamCall(ResponseHandler on_response, DoneHandler on_done, CallRegistry* registry)
    : on_response_(std::move(on_response)), on_done_(std::move(on_done)), registry_(registry) {}

void StreamCall::OnReadDone(bool ok) {
  if (!ok) return;  // the stream ended: OnDone follows
  if (on_response_) on_response_(response_);
  StartRead(&response_);
}

void StreamCall::OnDone(const grpc::Status& status) {
  if (on_done_) on_done_(status);
  {
    std::lock_guard<std::mutex> lock(mu_);
    status_ = status;
    done_ = true;
    cv_.notify_all();
  }
  registry_->Finished(this);  // the last use of this call on gRPC's thread
}

grpc::Status StreamCall::Wait() {
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait(lock, [&] { return done_; });
  return status_;
}

bool StreamCall::done() const {
  std::lock_guard<std::mutex> lock(mu_);
  return done_;
}

absl::StatusOr<std::unique_ptr<Client>> Client::Connect(const ConnectOptions& options) {
  if (options.target.empty()) return absl::InvalidArgumentError("the target address is empty");
  std::shared_ptr<grpc::ChannelCredentials> creds;
  if (options.tls_ca_pem.empty()) {
    creds = grpc::InsecureChannelCredentials();
  } else {
    grpc::SslCredentialsOptions ssl;
    ssl.pem_root_certs = options.tls_ca_pem;
    creds = grpc::SslCredentials(ssl);
  }
  // Images and videos can exceed gRPC's 4 MiB default; the server enforces its own limit.
  grpc::ChannelArguments args;
  args.SetMaxSendMessageSize(-1);
  args.SetMaxReceiveMessageSize(-1);
  std::unique_ptr<Client> c(new Client());
  c->token_ = options.token;
  c->channel_ = grpc::CreateCustomChannel(options.target, creds, args);
  c->stub_ = pb::Inference::NewStub(c->channel_);
  return c;
}

std::string NewSessionId() {
  static thread_local std::mt19937_64 rng(std::random_device{}());
  char id[33];
  std::snprintf(id, sizeof id, "%016llx%016llx", static_cast<unsigned long long>(rng()),
                static_cast<unsigned long long>(rng()));
  return id;
}

void Client::Prepare(const CallOptions& options, grpc::ClientContext* context,
                     const std::string& session_id) const {
  if (!token_.empty()) context->AddMetadata("authorization", "Bearer " + token_);
  if (!session_id.empty()) context->AddMetadata(kSessionIdMetadata, session_id);
  if (options.deadline.count() > 0) {
    context->set_deadline(std::chrono::system_clock::now() + options.deadline);
  }
}

std::shared_ptr<StreamCall> Client::Start(std::unique_ptr<google::protobuf::Message> request,
                                          bool session, const CallOptions& options,
                                          StreamCall::ResponseHandler on_response,
                                          StreamCall::DoneHandler on_done) {
  std::shared_ptr<StreamCall> call(
      new StreamCall(std::move(on_response), std::move(on_done), &calls_));
  calls_.Add(call);
  call->request_ = std::move(request);
  Prepare(options, &call->context_,
          session ? static_cast<const pb::SessionGenerateRequest*>(call->request_.get())->session_id()
                  : "");
  if (session) {
    stub_->async()->SessionGenerate(
        &call->context_, static_cast<const pb::SessionGenerateRequest*>(call->request_.get()),
        call.get());
  } else {
    stub_->async()->Generate(&call->context_,
                             static_cast<const pb::GenerateRequest*>(call->request_.get()),
                             call.get());
  }
  call->StartRead(&call->response_);
  call->StartCall();
  return call;
}

std::shared_ptr<StreamCall> Client::StartGenerate(const pb::GenerateRequest& request,
                                                  const CallOptions& options,
                                                  StreamCall::ResponseHandler on_response,
                                                  StreamCall::DoneHandler on_done) {
  return Start(std::make_unique<pb::GenerateRequest>(request), false, options,
               std::move(on_response), std::move(on_done));
}

std::shared_ptr<StreamCall> Client::StartSessionGenerate(const pb::SessionGenerateRequest& request,
                                                         const CallOptions& options,
                                                         StreamCall::ResponseHandler on_response,
                                                         StreamCall::DoneHandler on_done) {
  return Start(std::make_unique<pb::SessionGenerateRequest>(request), true, options,
               std::move(on_response), std::move(on_done));
}

namespace {

// What a unary callback call needs to outlive it (kept by the client's registry).
template <typename Request, typename Reply>
struct Unary : TrackedCall {
  grpc::ClientContext context;
  Request request;
  Reply reply;
};

// Runs a started unary call to its end.
template <typename Start>
grpc::Status Blocking(Start start) {
  std::mutex mu;
  std::condition_variable cv;
  bool done = false;
  grpc::Status result;
  start([&](grpc::Status s) {
    std::lock_guard<std::mutex> lock(mu);
    result = std::move(s);
    done = true;
    cv.notify_all();
  });
  std::unique_lock<std::mutex> lock(mu);
  cv.wait(lock, [&] { return done; });
  return result;
}

}  // namespace

void Client::StartCreateSession(const pb::CreateSessionRequest& request, const CallOptions& options,
                                std::function<void(grpc::Status, pb::SessionInfo)> done) {
  auto held = std::make_shared<Unary<pb::CreateSessionRequest, pb::SessionInfo>>();
  auto* call = held.get();
  calls_.Add(std::move(held));
  call->request = request;
  // The client names the session, so that a proxy routing on the metadata sends its creation
  // and every later call to the same replica.
  if (call->request.session_id().empty()) call->request.set_session_id(NewSessionId());
  Prepare(options, &call->context, call->request.session_id());
  stub_->async()->CreateSession(&call->context, &call->request, &call->reply,
                                [this, call, done = std::move(done)](grpc::Status s) {
                                  done(std::move(s), std::move(call->reply));
                                  calls_.Finished(call);
                                });
}

void Client::StartDeleteSession(const pb::DeleteSessionRequest& request, const CallOptions& options,
                                std::function<void(grpc::Status)> done) {
  auto held = std::make_shared<Unary<pb::DeleteSessionRequest, pb::DeleteSessionResponse>>();
  auto* call = held.get();
  calls_.Add(std::move(held));
  call->request = request;
  Prepare(options, &call->context, request.session_id());
  stub_->async()->DeleteSession(&call->context, &call->request, &call->reply,
                                [this, call, done = std::move(done)](grpc::Status s) {
                                  done(std::move(s));
                                  calls_.Finished(call);
                                });
}

grpc::Status Client::Generate(const pb::GenerateRequest& request, const CallOptions& options,
                              const StreamCall::ResponseHandler& on_response) {
  return StartGenerate(request, options, on_response)->Wait();
}

grpc::Status Client::SessionGenerate(const pb::SessionGenerateRequest& request,
                                     const CallOptions& options,
                                     const StreamCall::ResponseHandler& on_response) {
  return StartSessionGenerate(request, options, on_response)->Wait();
}

grpc::Status Client::CreateSession(const pb::CreateSessionRequest& request,
                                   const CallOptions& options, pb::SessionInfo* reply) {
  return Blocking([&](auto finish) {
    StartCreateSession(request, options, [reply, finish](grpc::Status s, pb::SessionInfo info) {
      *reply = std::move(info);
      finish(std::move(s));
    });
  });
}

grpc::Status Client::GetSession(const pb::GetSessionRequest& request, const CallOptions& options,
                                pb::SessionInfo* reply) {
  return Blocking([&](auto finish) {
    auto held = std::make_shared<Unary<pb::GetSessionRequest, pb::SessionInfo>>();
    auto* call = held.get();
    calls_.Add(std::move(held));
    call->request = request;
    Prepare(options, &call->context, request.session_id());
    stub_->async()->GetSession(&call->context, &call->request, &call->reply,
                               [this, call, reply, finish](grpc::Status s) {
                                 *reply = std::move(call->reply);
                                 finish(std::move(s));
                                 calls_.Finished(call);
                               });
  });
}

grpc::Status Client::DeleteSession(const pb::DeleteSessionRequest& request,
                                   const CallOptions& options) {
  return Blocking([&](auto finish) { StartDeleteSession(request, options, finish); });
}

grpc::Status Client::GetModelInfo(const CallOptions& options, pb::ModelInfo* reply) {
  return Blocking([&](auto finish) {
    auto held = std::make_shared<Unary<pb::GetModelInfoRequest, pb::ModelInfo>>();
    auto* call = held.get();
    calls_.Add(std::move(held));
    Prepare(options, &call->context);
    stub_->async()->GetModelInfo(&call->context, &call->request, &call->reply,
                                 [this, call, reply, finish](grpc::Status s) {
                                   *reply = std::move(call->reply);
                                   finish(std::move(s));
                                   calls_.Finished(call);
                                 });
  });
}

}  // namespace vlc::client
