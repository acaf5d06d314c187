// The HTTP binding's bodies: a KServe v2 inference request (JSON, or JSON and binary tensor data
// split where the first two bytes say) and a generate request, translated and then checked by
// the protocol's own decoding, as the gateway hands them to the service.
#include "fuzz/fuzz_util.h"
#include "server/http_gateway.h"
#include "server/oip_service.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 2) return 0;
  const size_t split = (static_cast<size_t>(data[0]) << 8 | data[1]) % size;
  const std::string body = vlc::fuzz::Bytes(data + 2, size - 2);
  bool binary_output = false, stream = false, exclude = false;
  for (std::optional<size_t> header : {std::optional<size_t>(), std::optional<size_t>(split)}) {
    auto r = vlc::server::InferRequestFromHttp(body, header, "demo", "", &binary_output);
    if (r.ok()) (void)vlc::server::FromInferRequest(*r, &stream, &exclude);
  }
  for (bool streaming : {false, true}) {
    auto g = vlc::server::GenerateRequestFromHttp(body, "demo", "", streaming);
    if (g.ok()) (void)vlc::server::FromInferRequest(*g, &stream, &exclude);
  }
  return 0;
}
