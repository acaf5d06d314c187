// What an application backend does with the C++ client (clients/cpp/vlcache_client.h): stream an
// answer about a picture, then hold a conversation about it in a session. Copy it and build it
// against the `vlc_client` target (or the project's generated stubs and gRPC):
//
//   vlcache-backend-example 127.0.0.1:50051 models/demo/example.png
//
// Every call takes a deadline; a failed call returns a grpc::Status whose code and message say
// what went wrong (docs/API.md, "Errors"). The token, when the server wants one, comes from
// VLC_AUTH_TOKEN.
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <iterator>
#include <string>

#include "clients/cpp/vlcache_client.h"

namespace client = vlc::client;
namespace pb = vlc::client::pb;

int Fail(const char* what, const grpc::Status& s) {
  std::cerr << what << " failed: " << s.error_code() << " " << s.error_message() << "\n";
  return 1;
}

int main(int argc, char** argv) {
  if (argc != 3) {
    std::cerr << "usage: " << argv[0] << " HOST:PORT IMAGE\n";
    return 2;
  }
  std::ifstream file(argv[2], std::ios::binary);
  const std::string image((std::istreambuf_iterator<char>(file)), std::istreambuf_iterator<char>());
  if (image.empty()) {
    std::cerr << "cannot read " << argv[2] << "\n";
    return 2;
  }

  client::ConnectOptions connect;
  connect.target = argv[1];
  if (const char* token = std::getenv("VLC_AUTH_TOKEN")) connect.token = token;
  auto c = client::Client::Connect(connect);
  if (!c.ok()) {
    std::cerr << c.status().message() << "\n";
    return 2;
  }
  client::Client& vlcache = **c;
  client::CallOptions call;
  call.deadline = std::chrono::seconds(60);

  // 1. One question, the answer printed as it streams in; the last message holds the usage.
  pb::GenerateRequest request;
  request.mutable_media()->add_images(image);
  request.set_prompt("what color is the triangle?");
  request.mutable_sampling()->set_max_new_tokens(16);
  client::Answer answer;
  grpc::Status s = vlcache.Generate(request, call, [&](const pb::GenerateResponse& r) {
    std::cout << r.text() << std::flush;
    answer.Add(r);
  });
  if (!s.ok()) return Fail("Generate", s);
  std::cout << "\n(" << answer.usage.generated_tokens() << " tokens, first after "
            << answer.usage.ttft_seconds() << " s)\n";

  // 2. A session: the picture is encoded and its cache compressed once, then asked twice.
  pb::CreateSessionRequest open;
  open.mutable_media()->add_images(image);
  open.mutable_cache()->set_policy("full");
  pb::SessionInfo session;
  s = vlcache.CreateSession(open, call, &session);
  if (!s.ok()) return Fail("CreateSession", s);
  for (const char* question : {"what is at row 1 column 4?", "what color is the triangle?"}) {
    pb::SessionGenerateRequest turn;
    turn.set_session_id(session.session_id());
    turn.set_prompt(question);
    turn.mutable_sampling()->set_max_new_tokens(16);
    client::Answer reply;
    s = vlcache.SessionGenerate(turn, call, [&](const pb::GenerateResponse& r) { reply.Add(r); });
    if (!s.ok()) return Fail("SessionGenerate", s);
    std::cout << question << " " << reply.text << "\n";
  }
  pb::DeleteSessionRequest done;
  done.set_session_id(session.session_id());
  s = vlcache.DeleteSession(done, call);
  if (!s.ok()) return Fail("DeleteSession", s);
  return 0;
}
