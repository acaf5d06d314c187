// config.json and preprocessor_config.json: the model's and the image processor's settings.
#include <nlohmann/json.hpp>

#include "engine/config.h"
#include "fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const nlohmann::json j = nlohmann::json::parse(data, data + size, nullptr, false);
  if (j.is_discarded()) return 0;
  (void)vlc::engine::LlavaConfig::FromJson(j);
  (void)vlc::engine::PreprocessorConfig::FromJson(j);
  return 0;
}
