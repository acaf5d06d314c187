// Status helpers shared by every module: early-return macros over absl::Status / StatusOr, and
// the boundary where LibTorch exceptions become a Status with their message kept.
#pragma once

#include <exception>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define VLC_CONCAT_INNER_(a, b) a##b
#define VLC_CONCAT_(a, b) VLC_CONCAT_INNER_(a, b)

// Returns from the current function when `expr` (an absl::Status) is not OK.
#define VLC_RETURN_IF_ERROR(expr)               \
  do {                                          \
    ::absl::Status vlc_status_ = (expr);        \
    if (!vlc_status_.ok()) return vlc_status_;  \
  } while (0)

// `lhs = value of expr` where expr is an absl::StatusOr<T>; returns its status when not OK.
#define VLC_ASSIGN_OR_RETURN(lhs, expr) \
  VLC_ASSIGN_OR_RETURN_IMPL_(VLC_CONCAT_(vlc_statusor_, __LINE__), lhs, expr)
#define VLC_ASSIGN_OR_RETURN_IMPL_(tmp, lhs, expr) \
  auto tmp = (expr);                               \
  if (!tmp.ok()) return tmp.status();              \
  lhs = std::move(tmp).value()

namespace vlc {

// Runs `fn` and converts any exception (LibTorch throws c10::Error) into an INTERNAL status that
// keeps the message, prefixed with `what` so a log line says which step failed.
template <typename Fn>
absl::Status CatchAll(const char* what, Fn&& fn) {
  try {
    fn();
    return absl::OkStatus();
  } catch (const std::exception& e) {
    std::string msg = e.what();
    // c10::Error appends a long backtrace after the first line; keep the first line.
    auto nl = msg.find('\n');
    if (nl != std::string::npos) msg.resize(nl);
    return absl::InternalError(std::string(what) + ": " + msg);
  } catch (...) {
    return absl::InternalError(std::string(what) + ": unknown exception");
  }
}

}  // namespace vlc
