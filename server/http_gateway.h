// The Open Inference Protocol's HTTP/REST binding (KServe v2), with Triton's binary tensor data
// and generate extensions, in front of the gRPC service (--http-listen). The load generators and
// clients that speak only HTTP (AIPerf's template endpoint, curl, tritonclient.http) reach the
// service through it.
//
// Every request is translated into the gRPC protocol's message and sent over an in-process
// channel to the same server, so auth (the Authorization header becomes the call's
// `authorization` metadata), the drain, validation, admission, limits and metrics are those of
// inference.GRPCInferenceService: one path, with nothing of its own to drift. Calls are counted
// under the gRPC method they become (ModelInfer, ModelStreamInfer).
//
// Routes ({m}: the model's name; /versions/{v} may follow it):
//   GET  /v2/health/live, /v2/health/ready     200, or 503 while loading or draining
//   GET  /v2                                   server metadata
//   GET  /v2/models/{m}, /v2/models/{m}/ready  model metadata (the tensor contract), readiness
//   POST /v2/models/{m}/infer                  a KServe v2 inference request: JSON, or JSON then
//                                              binary tensor data (Inference-Header-Content-Length)
//   POST /v2/models/{m}/generate               Triton's generate extension: {"text_input": ...,
//                                              "image": ..., "parameters": {"max_tokens": ...}}
//   POST /v2/models/{m}/generate_stream        the same, answered as server-sent events, one per
//                                              delta, the last with the usage
// In JSON, the media tensors (image, video) hold base64 text, optionally as a data: URL; in
// binary tensor data they hold the encoded bytes. Errors answer with the HTTP status of the gRPC
// code (INVALID_ARGUMENT 400, UNAUTHENTICATED 401, NOT_FOUND 404, RESOURCE_EXHAUSTED 429,
// UNAVAILABLE 503, ...) and {"error": "message"}; an error after a stream has begun is one event
// {"error": "CODE: message"}. A client that closes a stream cancels its generation.
#pragma once

#include <grpcpp/grpcpp.h>

#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "absl/status/statusor.h"
#include "inference/v2/grpc_predict_v2.grpc.pb.h"

namespace vlc::server {

// The HTTP status that answers a failed call with `code`.
int HttpStatusOf(grpc::StatusCode code);

// A KServe v2 REST inference request for `model` (`version` may be empty): `body` is the JSON
// request, or with `header_length` the JSON's first `header_length` bytes followed by the binary
// data of the inputs whose parameters give binary_data_size. Every input comes back as
// raw_input_contents. `*binary_output` tells whether the answer's text_output goes as binary data
// (requested by binary_data_output or an output's binary_data). INVALID_ARGUMENT names the tensor
// or field and what was expected.
absl::StatusOr<inference::ModelInferRequest> InferRequestFromHttp(
    std::string_view body, std::optional<size_t> header_length, const std::string& model,
    const std::string& version, bool* binary_output);

// The answer to /infer: JSON, or with `binary_output` the JSON then text_output's bytes, and
// `*header_length` the JSON's length (the Inference-Header-Content-Length), else 0.
std::string InferResponseToHttp(const inference::ModelInferResponse& r, bool binary_output,
                                size_t* header_length);

// A generate request (Triton's generate extension) as the gRPC protocol's: each key of the JSON
// object is an input tensor ("parameters" holds the sampling parameters, "stream" and
// "exclude_input_in_output" among them). `streaming`: the request came to generate_stream, where
// stream defaults to true; on generate, stream true is refused.
absl::StatusOr<inference::ModelInferRequest> GenerateRequestFromHttp(std::string_view body,
                                                                     const std::string& model,
                                                                     const std::string& version,
                                                                     bool streaming);

// One generate answer (or one event of generate_stream): model_name, model_version, id,
// text_output, and the response's parameters (the usage, on the last) under "parameters".
nlohmann::json GenerateResponseJson(const inference::ModelInferResponse& r);

class HttpGateway {
 public:
  struct Options {
    std::string listen;       // "host:port"; port 0 picks a free one
    int threads = 64;         // connections served at once
    size_t max_body_bytes = 64 << 20;
  };
  // Listens on options.listen and serves until destroyed; `channel` reaches the gRPC server
  // (its in-process channel). UNAVAILABLE when the address cannot be bound.
  static absl::StatusOr<std::unique_ptr<HttpGateway>> Start(const Options& options,
                                                            std::shared_ptr<grpc::Channel> channel);
  ~HttpGateway();
  HttpGateway(const HttpGateway&) = delete;
  HttpGateway& operator=(const HttpGateway&) = delete;

  int port() const;
  // Closes the listener and waits for the connections being served (idempotent).
  void Stop();

 private:
  struct Impl;
  explicit HttpGateway(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace vlc::server
