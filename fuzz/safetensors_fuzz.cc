// The safetensors reader: the header (8-byte length, JSON of names, dtypes, shapes and offsets)
// and every tensor it describes, loaded and converted as a checkpoint's weights are.
#include <ATen/ATen.h>

#include "engine/safetensors.h"
#include "fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  vlc::fuzz::MemFile file(data, size);
  if (!file.ok()) return 0;
  auto st = vlc::engine::SafetensorsFile::Open(file.path());
  if (!st.ok()) return 0;
  for (const auto& t : (*st)->tensors()) {
    if (t.end - t.begin > (1u << 20)) continue;  // the reader checked the bounds; keep runs fast
    auto loaded = (*st)->Load(t.name, at::kFloat);
    (void)loaded;
  }
  return 0;
}
