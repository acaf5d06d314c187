// A plain HTTP/1.0 GET over TCP, enough to read a Prometheus /metrics page from a process on the
// same machine or network (no TLS, no redirects, no chunked encoding: HTTP/1.0 answers have none).
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdlib>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"

namespace vlc {

// GET http://host_port/path (host_port: "127.0.0.1:9100", an IPv4 address); the body of a 200
// answer (HTTP/1.1 or HTTP/1.0: Go servers such as Prometheus answer in the request's version).
inline absl::StatusOr<std::string> HttpGetBody(const std::string& host_port,
                                               const std::string& path) {
  const size_t colon = host_port.rfind(':');
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  if (colon == std::string::npos ||
      ::inet_pton(AF_INET, host_port.substr(0, colon).c_str(), &addr.sin_addr) != 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("\"", host_port, "\" is not an IPv4 address and port (HOST:PORT)"));
  }
  addr.sin_port = htons(static_cast<uint16_t>(std::atoi(host_port.c_str() + colon + 1)));
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return absl::InternalError("could not open a socket");
  std::string response;
  const bool connected = ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
  if (connected) {
    const std::string request = "GET " + path + " HTTP/1.0\r\nHost: " + host_port + "\r\n\r\n";
    if (::send(fd, request.data(), request.size(), 0) == static_cast<ssize_t>(request.size())) {
      char buf[4096];
      ssize_t n;
      while ((n = ::recv(fd, buf, sizeof(buf), 0)) > 0) response.append(buf, n);
    }
  }
  ::close(fd);
  if (!connected) {
    return absl::UnavailableError(absl::StrCat("nothing answers at ", host_port));
  }
  const size_t body = response.find("\r\n\r\n");
  const bool ok =
      response.rfind("HTTP/1.1 200 ", 0) == 0 || response.rfind("HTTP/1.0 200 ", 0) == 0;
  if (!ok || body == std::string::npos) {
    return absl::UnavailableError(absl::StrCat("GET http://", host_port, path, " answered \"",
                                               response.substr(0, response.find('\r')), "\""));
  }
  return response.substr(body + 4);
}

}  // namespace vlc
