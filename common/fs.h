// Small file-system helpers over POSIX calls.
//
// Why not std::filesystem::remove_all: PyTorch's LibTorch 2.x wheels export their own copies of
// some std::filesystem symbols from libtorch.so, and an executable that links LibTorch before
// libstdc++ resolves remove_all there, where it crashes on a non-empty directory (seen on the GPU
// machine, scripts/device-check.sh). These helpers sidestep the clash.
#pragma once

#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>

#include <string>

namespace vlc {

// Removes `path` and everything below it; returns false if anything could not be removed.
inline bool RemoveTree(const std::string& path) {
  auto remove_one = [](const char* p, const struct stat*, int, struct FTW*) -> int {
    return ::remove(p) == 0 ? 0 : -1;
  };
  // FTW_DEPTH: children before their directory; FTW_PHYS: never follow symbolic links.
  return ::nftw(path.c_str(), remove_one, 16, FTW_DEPTH | FTW_PHYS) == 0;
}

// Creates a fresh private directory under $TMPDIR (or /tmp) named `prefix` plus six random
// characters; returns "" on failure.
inline std::string MakeTempDir(const std::string& prefix) {
  const char* base = ::getenv("TMPDIR");
  std::string tmpl = std::string(base && *base ? base : "/tmp") + "/" + prefix + "XXXXXX";
  return ::mkdtemp(tmpl.data()) ? tmpl : std::string();
}

}  // namespace vlc
