// A session snapshot from the store, read as a replica that continues the session does: the bytes
// as they are (mostly stopped by the checksum), and the same bytes with their checksum made right,
// so that the fuzzer reaches the header and the payload behind it.
#include <zlib.h>

#include "engine/session_snapshot.h"
#include "fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string bytes = vlc::fuzz::Bytes(data, size);
  (void)vlc::engine::DecodeSnapshot(bytes, "");
  if (size >= 4) {
    const uint32_t crc = static_cast<uint32_t>(
        crc32(crc32(0L, Z_NULL, 0), data, static_cast<uInt>(size - 4)));
    for (int i = 0; i < 4; ++i) bytes[size - 4 + i] = static_cast<char>((crc >> (8 * i)) & 0xff);
    (void)vlc::engine::DecodeSnapshot(bytes, "");
  }
  return 0;
}
