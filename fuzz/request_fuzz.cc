// Request messages from the wire: a vlcache.v1.GenerateRequest and an Open Inference Protocol
// ModelInferRequest parsed from the bytes, then converted and validated as the services do
// before anything reaches the engine.
#include "fuzz/fuzz_util.h"
#include "server/config.h"
#include "server/inference_service.h"
#include "server/oip_service.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const vlc::server::ServerConfig config;
  vlcache::v1::GenerateRequest ours;
  if (ours.ParseFromArray(data, static_cast<int>(size))) {
    (void)vlc::server::ToEngineRequest(ours, config);
  }
  inference::ModelInferRequest oip;
  if (oip.ParseFromArray(data, static_cast<int>(size))) {
    bool stream = false, exclude = false;
    auto r = vlc::server::FromInferRequest(oip, &stream, &exclude);
    if (r.ok()) (void)vlc::server::ToEngineRequest(*r, config);
  }
  return 0;
}
