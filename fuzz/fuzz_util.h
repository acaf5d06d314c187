// Shared by the fuzz targets (fuzz/*_fuzz.cc): each defines LLVMFuzzerTestOneInput, which
// libFuzzer drives in `make fuzz` and fuzz/replay_main.cc drives over the kept inputs in
// `make test`. A target feeds the bytes to one parser of outside input through the same entry
// point the service uses; any answer is fine, a crash, a sanitizer report or a hang is a finding.
#pragma once

#include <sys/mman.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <string>

namespace vlc::fuzz {

// The bytes as a file that path-taking parsers can open: an anonymous in-memory file, reached by
// its /proc/self/fd path while it lives.
class MemFile {
 public:
  MemFile(const uint8_t* data, size_t size) {
    fd_ = ::memfd_create("vlc-fuzz", MFD_CLOEXEC);
    if (fd_ < 0) return;
    size_t done = 0;
    while (done < size) {
      const ssize_t n = ::write(fd_, data + done, size - done);
      if (n <= 0) break;
      done += static_cast<size_t>(n);
    }
  }
  ~MemFile() {
    if (fd_ >= 0) ::close(fd_);
  }
  MemFile(const MemFile&) = delete;
  MemFile& operator=(const MemFile&) = delete;
  bool ok() const { return fd_ >= 0; }
  std::string path() const { return "/proc/self/fd/" + std::to_string(fd_); }

 private:
  int fd_ = -1;
};

inline std::string Bytes(const uint8_t* data, size_t size) {
  return std::string(reinterpret_cast<const char*>(data), size);
}

}  // namespace vlc::fuzz
