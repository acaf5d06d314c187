// The Open Inference Protocol (KServe v2, proto/inference/v2/grpc_predict_v2.proto) beside
// vlcache.v1.Inference: Triton's clients and the load generators built for its vLLM backend call
// the service unchanged. A thin translation: tensors in, our GenerateRequest out, run through
// InferenceService::GenerateFor (one path for auth, the drain, validation, admission, deadlines,
// cancellation and metrics), and the answer back as tensors.
//
// The tensor contract follows Triton's vLLM backend, plus the media:
//   inputs   text_input BYTES [1]            the question (required)
//            stream BOOL [1]                 ModelStreamInfer: deltas as they come (default false)
//            sampling_parameters BYTES [1]   JSON: max_tokens, temperature, top_p, top_k, seed,
//                                            stop (a string or a list)
//            exclude_input_in_output BOOL [1]  without streaming, text_output starts with the
//                                            question unless this is true (default false)
//            image BYTES [n]                 encoded pictures, in prompt order
//            video BYTES [1], video_frames INT32 [1]
//            kv_policy BYTES [1], kv_budget FP32 [1]
//   output   text_output BYTES [1]
//   response parameters: prompt_tokens, visual_tokens, generated_tokens, kv_bytes_kept,
//            kv_bytes_full, ttft_seconds, finish_reason, kv_policy; streaming responses carry
//            triton_final_response (true on the last one).
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "inference/v2/grpc_predict_v2.grpc.pb.h"
#include "server/config.h"
#include "server/drain_gate.h"
#include "server/inference_service.h"

namespace vlc::server {

// One input tensor this model takes, as ModelMetadata describes it (shape -1: any count).
struct OipInputSpec {
  const char* name;
  const char* datatype;
  int64_t shape;
};
// Every input, in ModelMetadata's order; nullptr when `name` is not one of them.
const std::vector<OipInputSpec>& OipInputs();
const OipInputSpec* FindOipInput(const std::string& name);
// The version this server gives its one model.
inline constexpr char kOipModelVersion[] = "1";

// The request as ours, or INVALID_ARGUMENT naming the tensor and what was expected.
absl::StatusOr<vlcache::v1::GenerateRequest> FromInferRequest(const inference::ModelInferRequest& r,
                                                             bool* stream,
                                                             bool* exclude_input);

class OipService final : public inference::GRPCInferenceService::Service {
 public:
  // `inference` runs the generations; `gate` (may be null) tells a draining server apart.
  OipService(const ServerConfig& config, InferenceService* inference, DrainGate* gate);

  grpc::Status ServerLive(grpc::ServerContext* context, const inference::ServerLiveRequest* request,
                          inference::ServerLiveResponse* response) override;
  grpc::Status ServerReady(grpc::ServerContext* context,
                           const inference::ServerReadyRequest* request,
                           inference::ServerReadyResponse* response) override;
  grpc::Status ModelReady(grpc::ServerContext* context, const inference::ModelReadyRequest* request,
                          inference::ModelReadyResponse* response) override;
  grpc::Status ServerMetadata(grpc::ServerContext* context,
                              const inference::ServerMetadataRequest* request,
                              inference::ServerMetadataResponse* response) override;
  grpc::Status ModelMetadata(grpc::ServerContext* context,
                             const inference::ModelMetadataRequest* request,
                             inference::ModelMetadataResponse* response) override;
  grpc::Status ModelInfer(grpc::ServerContext* context, const inference::ModelInferRequest* request,
                          inference::ModelInferResponse* response) override;
  grpc::Status ModelStreamInfer(
      grpc::ServerContext* context,
      grpc::ServerReaderWriter<inference::ModelStreamInferResponse, inference::ModelInferRequest>*
          stream) override;

 private:
  bool Ready() const;
  // OK for this server's model name (and version "" or "1"), else NOT_FOUND naming the one served.
  absl::Status CheckModel(const std::string& name, const std::string& version) const;

  const ServerConfig& config_;
  InferenceService* inference_;
  DrainGate* gate_;
};

}  // namespace vlc::server
