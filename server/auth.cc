#include "server/auth.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include <array>

namespace vlc::server {
namespace {

using Digest = std::array<unsigned char, 32>;

Digest Sha256(const std::string& s) {
  Digest d{};
  unsigned int n = 0;
  EVP_Digest(s.data(), s.size(), d.data(), &n, EVP_sha256(), nullptr);
  return d;
}

}  // namespace

// In constant time: the presented value and each accepted one are hashed, and the digests are
// compared with CRYPTO_memcmp against every token, without stopping at a match, so that neither
// the time taken nor its variation tells how much of a token an attacker has right (or its
// length, or which token matched).
absl::StatusOr<std::string> AuthorizeBearer(const grpc::ServerContext& context,
                                            const std::vector<std::string>& tokens) {
  if (tokens.empty()) return std::string();
  const auto& md = context.client_metadata();
  auto it = md.find("authorization");
  if (it == md.end()) {
    return absl::UnauthenticatedError("missing authorization metadata: send 'Bearer <token>'");
  }
  const Digest presented = Sha256(std::string(it->second.data(), it->second.size()));
  const std::string* match = nullptr;
  for (const auto& t : tokens) {
    const Digest expected = Sha256("Bearer " + t);
    const bool equal = CRYPTO_memcmp(presented.data(), expected.data(), presented.size()) == 0;
    if (equal && match == nullptr) match = &t;
  }
  if (match != nullptr) return *match;
  return absl::UnauthenticatedError("the bearer token is not valid");
}

}  // namespace vlc::server
