// Optional bearer-token auth shared by the server's services: with no tokens configured every
// caller is let in; otherwise the `authorization` metadata must be "Bearer <one of the tokens>".
#pragma once

#include <grpcpp/grpcpp.h>

#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace vlc::server {

// The caller's identity (its token; "" when auth is off), or UNAUTHENTICATED saying what to send.
absl::StatusOr<std::string> AuthorizeBearer(const grpc::ServerContext& context,
                                            const std::vector<std::string>& tokens);

}  // namespace vlc::server
