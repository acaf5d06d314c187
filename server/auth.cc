#include "server/auth.h"

namespace vlc::server {

absl::StatusOr<std::string> AuthorizeBearer(const grpc::ServerContext& context,
                                            const std::vector<std::string>& tokens) {
  if (tokens.empty()) return std::string();
  const auto& md = context.client_metadata();
  auto it = md.find("authorization");
  if (it == md.end()) {
    return absl::UnauthenticatedError("missing authorization metadata: send 'Bearer <token>'");
  }
  const std::string value(it->second.data(), it->second.size());
  for (const auto& t : tokens) {
    if (value == "Bearer " + t) return t;
  }
  return absl::UnauthenticatedError("the bearer token is not valid");
}

}  // namespace vlc::server
