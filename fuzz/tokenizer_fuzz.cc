// tokenizer.model: SentencePiece's protobuf, read by the project's own wire reader; a tokenizer
// that loads must encode and decode text without fault, the fuzz bytes themselves included.
#include <algorithm>

#include "engine/tokenizer.h"
#include "fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  vlc::fuzz::MemFile file(data, size);
  if (!file.ok()) return 0;
  auto tok = vlc::engine::Tokenizer::Load(file.path(), 100000);
  if (!tok.ok()) return 0;
  const std::string text =
      vlc::fuzz::Bytes(data, std::min<size_t>(size, 256)) + " what color is the triangle?";
  const std::vector<int> ids = (*tok)->Encode(text, true);
  (void)(*tok)->Decode(ids);
  (void)(*tok)->EncodePrompt("what is it?", 4);
  return 0;
}
