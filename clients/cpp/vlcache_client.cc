#include "clients/cpp/vlcache_client.h"

#include <utility>

namespace vlc::client {

StreamCall::StreamCall(ResponseHandler on_response, DoneHandler on_done)
    : on_response_(std::move(on_response)), on_done_(std::move(on_done)) {}

void StreamCall::OnReadDone(bool ok) {
  if (!ok) return;  // the stream ended: OnDone follows
  if (on_response_) on_response_(response_);
  StartRead(&response_);
}

void StreamCall::OnDone(const grpc::Status& status) {
  if (on_done_) on_done_(status);
  // The last thing this call does: a holder may drop it as soon as Wait returns.
  std::shared_ptr<StreamCall> keep;
  {
    std::lock_guard<std::mutex> lock(mu_);
    status_ = status;
    done_ = true;
    keep = std::move(self_);
    cv_.notify_all();
  }
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

void Client::Prepare(const CallOptions& options, grpc::ClientContext* context) const {
  if (!token_.empty()) context->AddMetadata("authorization", "Bearer " + token_);
  if (options.deadline.count() > 0) {
    context->set_deadline(std::chrono::system_clock::now() + options.deadline);
  }
}

std::shared_ptr<StreamCall> Client::Start(std::unique_ptr<google::protobuf::Message> request,
                                          bool session, const CallOptions& options,
                                          StreamCall::ResponseHandler on_response,
                                          StreamCall::DoneHandler on_done) {
  std::shared_ptr<StreamCall> call(new StreamCall(std::move(on_response), std::move(on_done)));
  call->self_ = call;
  call->request_ = std::move(request);
  Prepare(options, &call->context_);
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

// What a unary callback call needs to outlive it.
template <typename Request, typename Reply>
struct Unary {
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
  auto call = std::make_shared<Unary<pb::CreateSessionRequest, pb::SessionInfo>>();
  call->request = request;
  Prepare(options, &call->context);
  stub_->async()->CreateSession(&call->context, &call->request, &call->reply,
                                [call, done = std::move(done)](grpc::Status s) {
                                  done(std::move(s), std::move(call->reply));
                                });
}

void Client::StartDeleteSession(const pb::DeleteSessionRequest& request, const CallOptions& options,
                                std::function<void(grpc::Status)> done) {
  auto call = std::make_shared<Unary<pb::DeleteSessionRequest, pb::DeleteSessionResponse>>();
  call->request = request;
  Prepare(options, &call->context);
  stub_->async()->DeleteSession(&call->context, &call->request, &call->reply,
                                [call, done = std::move(done)](grpc::Status s) { done(std::move(s)); });
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
    auto call = std::make_shared<Unary<pb::GetSessionRequest, pb::SessionInfo>>();
    call->request = request;
    Prepare(options, &call->context);
    stub_->async()->GetSession(&call->context, &call->request, &call->reply,
                               [call, reply, finish](grpc::Status s) {
                                 *reply = std::move(call->reply);
                                 finish(std::move(s));
                               });
  });
}

grpc::Status Client::DeleteSession(const pb::DeleteSessionRequest& request,
                                   const CallOptions& options) {
  return Blocking([&](auto finish) { StartDeleteSession(request, options, finish); });
}

grpc::Status Client::GetModelInfo(const CallOptions& options, pb::ModelInfo* reply) {
  return Blocking([&](auto finish) {
    auto call = std::make_shared<Unary<pb::GetModelInfoRequest, pb::ModelInfo>>();
    Prepare(options, &call->context);
    stub_->async()->GetModelInfo(&call->context, &call->request, &call->reply,
                                 [call, reply, finish](grpc::Status s) {
                                   *reply = std::move(call->reply);
                                   finish(std::move(s));
                                 });
  });
}

}  // namespace vlc::client
