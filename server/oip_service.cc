#include "server/oip_service.h"

#include <cstring>
#include <limits>
#include <map>
#include <set>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace vlc::server {

namespace pb = vlcache::v1;
using inference::InferParameter;
using inference::ModelInferRequest;
using inference::ModelInferResponse;

namespace {

constexpr const char* kVersion = kOipModelVersion;

std::string InputNames() {
  std::vector<std::string> names;
  for (const auto& in : OipInputs()) names.push_back(in.name);
  return absl::StrJoin(names, ", ");
}

absl::Status Bad(const std::string& tensor, const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat("input tensor \"", tensor, "\": ", what));
}

// One input tensor with its data: raw bytes (from raw_input_contents) or the typed contents.
struct Input {
  const ModelInferRequest::InferInputTensor* meta = nullptr;
  const std::string* raw = nullptr;

  // The product of the dimensions, saturated at INT64_MAX (the shape is the client's: it may
  // overflow, and then it can match no data).
  int64_t Elements() const {
    int64_t n = 1;
    for (int64_t d : meta->shape()) {
      if (__builtin_mul_overflow(n, d, &n)) return std::numeric_limits<int64_t>::max();
    }
    return n;
  }

  absl::Status Expect(const char* datatype) const {
    if (meta->datatype() != datatype) {
      return Bad(meta->name(),
                 absl::StrCat("datatype is ", meta->datatype(), ", expected ", datatype));
    }
    for (int64_t d : meta->shape()) {
      if (d < 0) return Bad(meta->name(), "the shape has a negative dimension");
    }
    return absl::OkStatus();
  }

  absl::Status ExpectOne(const char* datatype) const {
    if (absl::Status s = Expect(datatype); !s.ok()) return s;
    if (Elements() != 1) {
      return Bad(meta->name(), absl::StrCat("expected one element (shape [1]), got ",
                                            Elements()));
    }
    return absl::OkStatus();
  }

  absl::StatusOr<std::vector<std::string>> Bytes() const {
    if (absl::Status s = Expect("BYTES"); !s.ok()) return s;
    std::vector<std::string> out;
    if (raw) {
      // Each element: a 4-byte little-endian length, then that many bytes.
      size_t at = 0;
      while (at < raw->size()) {
        if (raw->size() - at < 4) return Bad(meta->name(), "raw contents end inside a length");
        uint32_t len = 0;
        for (int i = 3; i >= 0; --i) len = (len << 8) | static_cast<uint8_t>((*raw)[at + i]);
        at += 4;
        if (raw->size() - at < len) return Bad(meta->name(), "raw contents end inside an element");
        out.emplace_back(raw->substr(at, len));
        at += len;
      }
    } else {
      out.assign(meta->contents().bytes_contents().begin(), meta->contents().bytes_contents().end());
    }
    if (static_cast<int64_t>(out.size()) != Elements()) {
      return Bad(meta->name(), absl::StrCat("the shape says ", Elements(), " elements, the data has ",
                                            out.size()));
    }
    return out;
  }

  absl::StatusOr<std::string> OneString() const {
    if (absl::Status s = ExpectOne("BYTES"); !s.ok()) return s;
    auto v = Bytes();
    if (!v.ok()) return v.status();
    return (*v)[0];
  }

  absl::StatusOr<bool> Bool() const {
    if (absl::Status s = ExpectOne("BOOL"); !s.ok()) return s;
    if (raw) {
      if (raw->size() != 1) return Bad(meta->name(), "raw contents of a BOOL are one byte");
      return (*raw)[0] != 0;
    }
    if (meta->contents().bool_contents_size() != 1) return Bad(meta->name(), "no bool_contents");
    return meta->contents().bool_contents(0);
  }

  absl::StatusOr<int64_t> Int() const {
    const std::string& t = meta->datatype();
    if (t != "INT32" && t != "INT64") {
      return Bad(meta->name(), absl::StrCat("datatype is ", t, ", expected INT32 or INT64"));
    }
    if (absl::Status s = ExpectOne(t.c_str()); !s.ok()) return s;
    if (raw) {
      const size_t size = t == "INT32" ? 4 : 8;
      if (raw->size() != size) return Bad(meta->name(), "raw contents have the wrong size");
      if (size == 4) {
        int32_t v;
        std::memcpy(&v, raw->data(), 4);
        return v;
      }
      int64_t v;
      std::memcpy(&v, raw->data(), 8);
      return v;
    }
    if (t == "INT32" && meta->contents().int_contents_size() == 1) {
      return meta->contents().int_contents(0);
    }
    if (t == "INT64" && meta->contents().int64_contents_size() == 1) {
      return meta->contents().int64_contents(0);
    }
    return Bad(meta->name(), "no contents");
  }

  absl::StatusOr<double> Float() const {
    const std::string& t = meta->datatype();
    if (t != "FP32" && t != "FP64") {
      return Bad(meta->name(), absl::StrCat("datatype is ", t, ", expected FP32 or FP64"));
    }
    if (absl::Status s = ExpectOne(t.c_str()); !s.ok()) return s;
    if (raw) {
      if (t == "FP32") {
        if (raw->size() != 4) return Bad(meta->name(), "raw contents have the wrong size");
        float v;
        std::memcpy(&v, raw->data(), 4);
        return v;
      }
      if (raw->size() != 8) return Bad(meta->name(), "raw contents have the wrong size");
      double v;
      std::memcpy(&v, raw->data(), 8);
      return v;
    }
    if (t == "FP32" && meta->contents().fp32_contents_size() == 1) {
      return meta->contents().fp32_contents(0);
    }
    if (t == "FP64" && meta->contents().fp64_contents_size() == 1) {
      return meta->contents().fp64_contents(0);
    }
    return Bad(meta->name(), "no contents");
  }
};

// sampling_parameters: a JSON object of the keys Triton's vLLM backend takes that vlcache has.
absl::Status ParseSampling(const std::string& text, pb::SamplingParams* out) {
  const nlohmann::json j = nlohmann::json::parse(text, nullptr, false);
  if (!j.is_object()) return Bad("sampling_parameters", "not a JSON object");
  try {
    for (const auto& [key, v] : j.items()) {
      if (key == "max_tokens") {
        out->set_max_new_tokens(v.get<int32_t>());
      } else if (key == "temperature") {
        out->set_temperature(v.get<float>());
      } else if (key == "top_p") {
        out->set_top_p(v.get<float>());
      } else if (key == "top_k") {
        out->set_top_k(v.get<int32_t>());
      } else if (key == "seed") {
        out->set_seed(v.get<uint64_t>());
      } else if (key == "stop") {
        if (v.is_string()) {
          out->add_stop(v.get<std::string>());
        } else {
          for (const auto& s : v) out->add_stop(s.get<std::string>());
        }
      } else {
        return Bad("sampling_parameters",
                   absl::StrCat("unknown key \"", key,
                                "\"; the keys are max_tokens, temperature, top_p, top_k, seed, "
                                "stop"));
      }
    }
  } catch (const nlohmann::json::exception& e) {
    return Bad("sampling_parameters", absl::StrCat("a value has the wrong type: ", e.what()));
  }
  return absl::OkStatus();
}

void SetParam(ModelInferResponse* r, const std::string& key, int64_t v) {
  (*r->mutable_parameters())[key].set_int64_param(v);
}
void SetParam(ModelInferResponse* r, const std::string& key, double v) {
  (*r->mutable_parameters())[key].set_double_param(v);
}
void SetParam(ModelInferResponse* r, const std::string& key, const std::string& v) {
  (*r->mutable_parameters())[key].set_string_param(v);
}

// A response with text_output = `text` (raw BYTES, one element) and the usage when given.
void FillResponse(const ServerConfig& config, const ModelInferRequest& request,
                  const std::string& text, const pb::Usage* usage, ModelInferResponse* r) {
  r->set_model_name(config.model_name);
  r->set_model_version(kVersion);
  r->set_id(request.id());
  auto* out = r->add_outputs();
  out->set_name("text_output");
  out->set_datatype("BYTES");
  out->add_shape(1);
  std::string raw(4, '\0');
  const uint32_t len = static_cast<uint32_t>(text.size());
  for (int i = 0; i < 4; ++i) raw[i] = static_cast<char>((len >> (8 * i)) & 0xff);
  raw += text;
  r->add_raw_output_contents(std::move(raw));
  if (usage) {
    SetParam(r, "prompt_tokens", static_cast<int64_t>(usage->prompt_tokens()));
    SetParam(r, "visual_tokens", static_cast<int64_t>(usage->visual_tokens()));
    SetParam(r, "generated_tokens", static_cast<int64_t>(usage->generated_tokens()));
    SetParam(r, "kv_bytes_kept", static_cast<int64_t>(usage->kv_bytes_kept()));
    SetParam(r, "kv_bytes_full", static_cast<int64_t>(usage->kv_bytes_full()));
    SetParam(r, "ttft_seconds", usage->ttft_seconds());
    SetParam(r, "finish_reason", usage->finish_reason());
    SetParam(r, "kv_policy", usage->kv_policy());
  }
}

// "CODE: message", as a stream's error_message carries a failed request's status.
std::string StatusLine(const grpc::Status& s) {
  return absl::StrCat(absl::StatusCodeToString(static_cast<absl::StatusCode>(s.error_code())), ": ",
                      s.error_message());
}

}  // namespace

const std::vector<OipInputSpec>& OipInputs() {
  static const std::vector<OipInputSpec> inputs = {
      {"text_input", "BYTES", 1},     {"stream", "BOOL", 1},
      {"sampling_parameters", "BYTES", 1}, {"exclude_input_in_output", "BOOL", 1},
      {"image", "BYTES", -1},         {"video", "BYTES", 1},
      {"video_frames", "INT32", 1},   {"kv_policy", "BYTES", 1},
      {"kv_budget", "FP32", 1},
  };
  return inputs;
}

const OipInputSpec* FindOipInput(const std::string& name) {
  for (const auto& in : OipInputs()) {
    if (name == in.name) return &in;
  }
  return nullptr;
}

absl::StatusOr<pb::GenerateRequest> FromInferRequest(const ModelInferRequest& r, bool* stream,
                                                     bool* exclude_input) {
  *stream = false;
  *exclude_input = false;
  if (r.raw_input_contents_size() > 0 && r.raw_input_contents_size() != r.inputs_size()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "raw_input_contents has ", r.raw_input_contents_size(), " entries for ", r.inputs_size(),
        " inputs: give one per input, or none"));
  }
  std::map<std::string, Input> inputs;
  for (int i = 0; i < r.inputs_size(); ++i) {
    const auto& in = r.inputs(i);
    if (FindOipInput(in.name()) == nullptr) {
      return Bad(in.name(), absl::StrCat("unknown; this model takes ", InputNames()));
    }
    Input t;
    t.meta = &in;
    t.raw = r.raw_input_contents_size() > 0 ? &r.raw_input_contents(i) : nullptr;
    if (!inputs.emplace(in.name(), t).second) return Bad(in.name(), "given twice");
  }
  pb::GenerateRequest out;
  auto text = inputs.find("text_input");
  if (text == inputs.end()) return Bad("text_input", "missing; it holds the question");
  auto prompt = text->second.OneString();
  if (!prompt.ok()) return prompt.status();
  out.set_prompt(*prompt);
  if (auto it = inputs.find("stream"); it != inputs.end()) {
    auto v = it->second.Bool();
    if (!v.ok()) return v.status();
    *stream = *v;
  }
  if (auto it = inputs.find("exclude_input_in_output"); it != inputs.end()) {
    auto v = it->second.Bool();
    if (!v.ok()) return v.status();
    *exclude_input = *v;
  }
  if (auto it = inputs.find("sampling_parameters"); it != inputs.end()) {
    auto v = it->second.OneString();
    if (!v.ok()) return v.status();
    if (absl::Status s = ParseSampling(*v, out.mutable_sampling()); !s.ok()) return s;
  }
  if (auto it = inputs.find("image"); it != inputs.end()) {
    auto v = it->second.Bytes();
    if (!v.ok()) return v.status();
    for (auto& image : *v) out.mutable_media()->add_images(std::move(image));
  }
  if (auto it = inputs.find("video"); it != inputs.end()) {
    auto v = it->second.OneString();
    if (!v.ok()) return v.status();
    out.mutable_media()->set_video(*v);
  }
  if (auto it = inputs.find("video_frames"); it != inputs.end()) {
    auto v = it->second.Int();
    if (!v.ok()) return v.status();
    out.mutable_media()->set_video_frames(static_cast<int32_t>(*v));
  }
  if (auto it = inputs.find("kv_policy"); it != inputs.end()) {
    auto v = it->second.OneString();
    if (!v.ok()) return v.status();
    out.mutable_cache()->set_policy(*v);
  }
  if (auto it = inputs.find("kv_budget"); it != inputs.end()) {
    auto v = it->second.Float();
    if (!v.ok()) return v.status();
    out.mutable_cache()->set_budget(*v);
  }
  for (const auto& o : r.outputs()) {
    if (o.name() != "text_output") {
      return absl::InvalidArgumentError(
          absl::StrCat("requested output \"", o.name(), "\" does not exist; the output is text_output"));
    }
  }
  return out;
}

OipService::OipService(const ServerConfig& config, InferenceService* inference, DrainGate* gate)
    : config_(config), inference_(inference), gate_(gate) {}

bool OipService::Ready() const {
  return inference_->ready() && !(gate_ && gate_->draining());
}

absl::Status OipService::CheckModel(const std::string& name, const std::string& version) const {
  if (name != config_.model_name) {
    return absl::NotFoundError(absl::StrCat("no model \"", name, "\"; this server serves \"",
                                            config_.model_name, "\""));
  }
  if (!version.empty() && version != kVersion) {
    return absl::NotFoundError(absl::StrCat("model \"", name, "\" has no version \"", version,
                                            "\"; its version is ", kVersion));
  }
  return absl::OkStatus();
}

grpc::Status OipService::ServerLive(grpc::ServerContext*, const inference::ServerLiveRequest*,
                                    inference::ServerLiveResponse* response) {
  response->set_live(true);
  return grpc::Status::OK;
}

grpc::Status OipService::ServerReady(grpc::ServerContext*, const inference::ServerReadyRequest*,
                                     inference::ServerReadyResponse* response) {
  response->set_ready(Ready());
  return grpc::Status::OK;
}

grpc::Status OipService::ModelReady(grpc::ServerContext*,
                                    const inference::ModelReadyRequest* request,
                                    inference::ModelReadyResponse* response) {
  if (absl::Status s = CheckModel(request->name(), request->version()); !s.ok()) {
    return ToGrpc(s);
  }
  response->set_ready(Ready());
  return grpc::Status::OK;
}

grpc::Status OipService::ServerMetadata(grpc::ServerContext* context,
                                        const inference::ServerMetadataRequest*,
                                        inference::ServerMetadataResponse* response) {
  if (absl::Status s = inference_->AuthorizeOnly(context); !s.ok()) return ToGrpc(s);
  response->set_name("vlcache");
  response->set_version(kVersion);
  response->add_extensions("model_stream_infer");
  return grpc::Status::OK;
}

grpc::Status OipService::ModelMetadata(grpc::ServerContext* context,
                                       const inference::ModelMetadataRequest* request,
                                       inference::ModelMetadataResponse* response) {
  if (absl::Status s = inference_->AuthorizeOnly(context); !s.ok()) return ToGrpc(s);
  if (absl::Status s = CheckModel(request->name(), request->version()); !s.ok()) {
    return ToGrpc(s);
  }
  response->set_name(config_.model_name);
  response->add_versions(kVersion);
  response->set_platform("vlcache");
  for (const auto& spec : OipInputs()) {
    auto* t = response->add_inputs();
    t->set_name(spec.name);
    t->set_datatype(spec.datatype);
    t->add_shape(spec.shape);
  }
  auto* out = response->add_outputs();
  out->set_name("text_output");
  out->set_datatype("BYTES");
  out->add_shape(1);
  return grpc::Status::OK;
}

grpc::Status OipService::ModelInfer(grpc::ServerContext* context, const ModelInferRequest* request,
                                    ModelInferResponse* response) {
  bool stream = false, exclude = false;
  std::string text;
  pb::Usage usage;
  pb::GenerateRequest ours;
  auto convert = [&]() -> absl::StatusOr<const pb::GenerateRequest*> {
    if (absl::Status s = CheckModel(request->model_name(), request->model_version()); !s.ok()) {
      return s;
    }
    auto r = FromInferRequest(*request, &stream, &exclude);
    if (!r.ok()) return r.status();
    if (stream) return Bad("stream", "true asks for several responses: use ModelStreamInfer");
    ours = *std::move(r);
    return &ours;
  };
  auto write = [&](const pb::GenerateResponse& r) {
    text += r.text();
    if (r.has_usage()) usage = r.usage();
    return true;
  };
  const grpc::Status st = inference_->GenerateFor("ModelInfer", context, convert, write);
  if (!st.ok()) return st;
  // Like Triton's vLLM backend, the whole text starts with the question unless asked not to.
  FillResponse(config_, *request, exclude ? text : ours.prompt() + text, &usage, response);
  return st;
}

grpc::Status OipService::ModelStreamInfer(
    grpc::ServerContext* context,
    grpc::ServerReaderWriter<inference::ModelStreamInferResponse, ModelInferRequest>* stream) {
  // The requests of one stream run one after the other; each is answered by one response (or,
  // with stream = true, one per delta), the last flagged triton_final_response. A failed request
  // is answered by an error_message and the stream goes on.
  ModelInferRequest request;
  bool open = true;
  while (open && stream->Read(&request)) {
    bool streaming = false, exclude = false;
    std::string text;
    pb::GenerateRequest ours;
    auto convert = [&]() -> absl::StatusOr<const pb::GenerateRequest*> {
      if (absl::Status s = CheckModel(request.model_name(), request.model_version()); !s.ok()) {
        return s;
      }
      auto r = FromInferRequest(request, &streaming, &exclude);
      if (!r.ok()) return r.status();
      ours = *std::move(r);
      return &ours;
    };
    auto write = [&](const pb::GenerateResponse& r) {
      const bool last = r.has_usage();
      if (!streaming) {
        text += r.text();
        if (!last) return true;
      }
      inference::ModelStreamInferResponse out;
      auto* infer = out.mutable_infer_response();
      const std::string body = streaming ? r.text() : (exclude ? text : ours.prompt() + text);
      FillResponse(config_, request, body, last ? &r.usage() : nullptr, infer);
      (*infer->mutable_parameters())["triton_final_response"].set_bool_param(last);
      open = stream->Write(out);
      return open;
    };
    const grpc::Status st = inference_->GenerateFor("ModelStreamInfer", context, convert, write);
    if (!st.ok() && open) {
      inference::ModelStreamInferResponse out;
      out.set_error_message(StatusLine(st));
      out.mutable_infer_response()->set_id(request.id());
      out.mutable_infer_response()->set_model_name(request.model_name());
      open = stream->Write(out);
    }
  }
  return grpc::Status::OK;
}

}  // namespace vlc::server
