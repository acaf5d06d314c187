// A session snapshot from the shared store, read as a replica that continues the session does.
#include "engine/session_snapshot.h"
#include "fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  (void)vlc::engine::DecodeSnapshot(
      std::string_view(reinterpret_cast<const char*>(data), size), "");
  return 0;
}
