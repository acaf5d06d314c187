#include "server/http_gateway.h"

#include <sys/socket.h>

#include <cstring>
#include <thread>

#include <httplib.h>

#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "server/config.h"
#include "server/oip_service.h"
#include "spdlog/spdlog.h"

namespace vlc::server {

using inference::ModelInferRequest;
using inference::ModelInferResponse;
using nlohmann::json;

namespace {

absl::Status BadField(const std::string& where, const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat(where, ": ", what));
}

// Text answers may end inside a UTF-8 sequence (a token is a piece of one); the JSON carries a
// replacement character rather than failing.
std::string Dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

bool IsMedia(const std::string& tensor) { return tensor == "image" || tensor == "video"; }

// A media element given as JSON text: base64, or a data: URL holding base64.
absl::StatusOr<std::string> DecodeMedia(const std::string& tensor, const std::string& text) {
  size_t start = 0;
  if (text.rfind("data:", 0) == 0) {
    const size_t comma = text.find(',');
    const std::string marker = ";base64";
    if (comma == std::string::npos || comma < marker.size() ||
        text.compare(comma - marker.size(), marker.size(), marker) != 0) {
      return BadField(absl::StrCat("input tensor \"", tensor, "\""),
                      "a data: URL must hold base64 (data:<type>;base64,<data>)");
    }
    start = comma + 1;
  }
  std::string out;
  if (!absl::Base64Unescape(absl::string_view(text.data() + start, text.size() - start), &out)) {
    return BadField(absl::StrCat("input tensor \"", tensor, "\""),
                    "in JSON, media elements are base64 (or a data: URL); this is not base64");
  }
  return out;
}

template <typename T>
void AppendLe(T v, std::string* raw) {
  char bytes[sizeof(T)];
  std::memcpy(bytes, &v, sizeof(T));  // x86-64 and aarch64 are little-endian, as the wire is
  raw->append(bytes, sizeof(T));
}

// Appends one JSON element of `tensor` (of `datatype`) to its raw contents, in the binary
// tensor format: BYTES as a 4-byte little-endian length and the bytes, BOOL as one byte, numbers
// little-endian.
absl::Status AppendElement(const std::string& tensor, const std::string& datatype, const json& v,
                           std::string* raw) {
  const std::string where = absl::StrCat("input tensor \"", tensor, "\"");
  if (datatype == "BYTES") {
    if (!v.is_string()) return BadField(where, "a BYTES element is a JSON string");
    std::string bytes = v.get<std::string>();
    if (IsMedia(tensor)) {
      auto decoded = DecodeMedia(tensor, bytes);
      if (!decoded.ok()) return decoded.status();
      bytes = *std::move(decoded);
    }
    AppendLe(static_cast<uint32_t>(bytes.size()), raw);
    raw->append(bytes);
    return absl::OkStatus();
  }
  if (datatype == "BOOL") {
    if (!v.is_boolean()) return BadField(where, "a BOOL element is true or false");
    raw->push_back(v.get<bool>() ? 1 : 0);
    return absl::OkStatus();
  }
  if (datatype == "FP32" || datatype == "FP64") {
    if (!v.is_number()) return BadField(where, absl::StrCat("a ", datatype, " element is a number"));
    if (datatype == "FP32") {
      AppendLe(v.get<float>(), raw);
    } else {
      AppendLe(v.get<double>(), raw);
    }
    return absl::OkStatus();
  }
  struct IntType {
    const char* name;
    int bytes;
    bool is_signed;
  };
  static constexpr IntType kInts[] = {{"INT8", 1, true},   {"INT16", 2, true},  {"INT32", 4, true},
                                      {"INT64", 8, true},  {"UINT8", 1, false}, {"UINT16", 2, false},
                                      {"UINT32", 4, false}, {"UINT64", 8, false}};
  for (const auto& t : kInts) {
    if (datatype != t.name) continue;
    if (!v.is_number_integer()) {
      return BadField(where, absl::StrCat("a ", datatype, " element is an integer"));
    }
    if (!t.is_signed && v.is_number_integer() && !v.is_number_unsigned() && v.get<int64_t>() < 0) {
      return BadField(where, absl::StrCat("a ", datatype, " element is not negative"));
    }
    const uint64_t bits = v.is_number_unsigned() ? v.get<uint64_t>()
                                                 : static_cast<uint64_t>(v.get<int64_t>());
    for (int i = 0; i < t.bytes; ++i) raw->push_back(static_cast<char>((bits >> (8 * i)) & 0xff));
    return absl::OkStatus();
  }
  return BadField(where, absl::StrCat("datatype ", datatype,
                                      " cannot be given as JSON; send it as binary tensor data"));
}

// Appends every element of `data` (nested arrays are flattened, row-major) and returns the count.
absl::StatusOr<int64_t> AppendData(const std::string& tensor, const std::string& datatype,
                                   const json& data, std::string* raw) {
  if (!data.is_array()) {
    if (absl::Status s = AppendElement(tensor, datatype, data, raw); !s.ok()) return s;
    return 1;
  }
  int64_t n = 0;
  for (const auto& e : data) {
    auto k = AppendData(tensor, datatype, e, raw);
    if (!k.ok()) return k.status();
    n += *k;
  }
  return n;
}

absl::StatusOr<json> ParseObject(std::string_view text, const char* what) {
  json j = json::parse(text.begin(), text.end(), nullptr, false);
  if (j.is_discarded()) return absl::InvalidArgumentError(absl::StrCat(what, " is not valid JSON"));
  if (!j.is_object()) return absl::InvalidArgumentError(absl::StrCat(what, " is not a JSON object"));
  return j;
}

json ParametersJson(const google::protobuf::Map<std::string, inference::InferParameter>& params) {
  json out = json::object();
  for (const auto& [key, p] : params) {
    switch (p.parameter_choice_case()) {
      case inference::InferParameter::kBoolParam:
        out[key] = p.bool_param();
        break;
      case inference::InferParameter::kInt64Param:
        out[key] = p.int64_param();
        break;
      case inference::InferParameter::kUint64Param:
        out[key] = p.uint64_param();
        break;
      case inference::InferParameter::kDoubleParam:
        out[key] = p.double_param();
        break;
      case inference::InferParameter::kStringParam:
        out[key] = p.string_param();
        break;
      default:
        break;
    }
  }
  return out;
}

// text_output of a response: its one element, from the raw contents or the typed ones.
std::string TextOutput(const ModelInferResponse& r) {
  if (r.raw_output_contents_size() > 0) {
    const std::string& raw = r.raw_output_contents(0);
    return raw.size() >= 4 ? raw.substr(4) : std::string();
  }
  if (r.outputs_size() > 0 && r.outputs(0).contents().bytes_contents_size() > 0) {
    return r.outputs(0).contents().bytes_contents(0);
  }
  return {};
}

}  // namespace

int HttpStatusOf(grpc::StatusCode code) {
  switch (code) {
    case grpc::StatusCode::OK:
      return 200;
    case grpc::StatusCode::INVALID_ARGUMENT:
    case grpc::StatusCode::FAILED_PRECONDITION:
    case grpc::StatusCode::OUT_OF_RANGE:
      return 400;
    case grpc::StatusCode::UNAUTHENTICATED:
      return 401;
    case grpc::StatusCode::PERMISSION_DENIED:
      return 403;
    case grpc::StatusCode::NOT_FOUND:
      return 404;
    case grpc::StatusCode::ALREADY_EXISTS:
    case grpc::StatusCode::ABORTED:
      return 409;
    case grpc::StatusCode::RESOURCE_EXHAUSTED:
      return 429;
    case grpc::StatusCode::CANCELLED:
      return 499;  // the client went away (nginx's code for it)
    case grpc::StatusCode::UNIMPLEMENTED:
      return 501;
    case grpc::StatusCode::UNAVAILABLE:
      return 503;
    case grpc::StatusCode::DEADLINE_EXCEEDED:
      return 504;
    default:
      return 500;
  }
}

absl::StatusOr<ModelInferRequest> InferRequestFromHttp(std::string_view body,
                                                      std::optional<size_t> header_length,
                                                      const std::string& model,
                                                      const std::string& version,
                                                      bool* binary_output) {
  *binary_output = false;
  std::string_view header = body, binary;
  if (header_length) {
    if (*header_length > body.size()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "Inference-Header-Content-Length is ", *header_length, " but the body has only ",
          body.size(), " bytes"));
    }
    header = body.substr(0, *header_length);
    binary = body.substr(*header_length);
  }
  auto j = ParseObject(header, "the request body");
  if (!j.ok()) return j.status();
  ModelInferRequest out;
  out.set_model_name(model);
  out.set_model_version(version);
  try {
    if (j->contains("id")) out.set_id(j->at("id").get<std::string>());
    if (j->contains("parameters")) {
      const json& p = j->at("parameters");
      if (!p.is_object()) return BadField("parameters", "must be a JSON object");
      if (p.contains("binary_data_output")) *binary_output = p.at("binary_data_output").get<bool>();
    }
  } catch (const json::exception& e) {
    return BadField("the request body", absl::StrCat("a field has the wrong type: ", e.what()));
  }
  if (!j->contains("inputs") || !j->at("inputs").is_array()) {
    return BadField("inputs", "missing; a request lists its input tensors in \"inputs\"");
  }
  size_t binary_at = 0;
  for (const json& in : j->at("inputs")) {
    if (!in.is_object() || !in.contains("name") || !in.at("name").is_string()) {
      return BadField("inputs", "each input is an object with a string \"name\"");
    }
    const std::string name = in.at("name").get<std::string>();
    const std::string where = absl::StrCat("input tensor \"", name, "\"");
    if (!in.contains("datatype") || !in.at("datatype").is_string()) {
      return BadField(where, "needs a string \"datatype\"");
    }
    if (!in.contains("shape") || !in.at("shape").is_array()) {
      return BadField(where, "needs a \"shape\" (an array of dimensions)");
    }
    auto* t = out.add_inputs();
    t->set_name(name);
    t->set_datatype(in.at("datatype").get<std::string>());
    int64_t elements = 1;
    for (const json& d : in.at("shape")) {
      if (!d.is_number_integer() || d.get<int64_t>() < 0) {
        return BadField(where, "shape dimensions are integers, 0 or more");
      }
      t->add_shape(d.get<int64_t>());
      if (__builtin_mul_overflow(elements, d.get<int64_t>(), &elements)) {
        return BadField(where, "the shape's element count overflows");
      }
    }
    std::string* raw = out.add_raw_input_contents();
    std::optional<size_t> binary_size;
    if (in.contains("parameters")) {
      const json& p = in.at("parameters");
      if (!p.is_object()) return BadField(where, "parameters must be a JSON object");
      if (p.contains("binary_data_size")) {
        if (!p.at("binary_data_size").is_number_unsigned()) {
          return BadField(where, "binary_data_size is a byte count");
        }
        binary_size = p.at("binary_data_size").get<size_t>();
      }
    }
    if (binary_size) {
      if (in.contains("data")) return BadField(where, "has both data and binary_data_size");
      if (binary.size() - binary_at < *binary_size) {
        return BadField(where, absl::StrCat("binary_data_size is ", *binary_size, " but only ",
                                            binary.size() - binary_at,
                                            " bytes of binary data are left"));
      }
      raw->assign(binary.substr(binary_at, *binary_size));
      binary_at += *binary_size;
      continue;
    }
    if (!in.contains("data")) return BadField(where, "needs \"data\" (or binary_data_size)");
    auto n = AppendData(name, t->datatype(), in.at("data"), raw);
    if (!n.ok()) return n.status();
    if (*n != elements) {
      return BadField(where, absl::StrCat("the shape says ", elements, " elements, data has ", *n));
    }
  }
  if (binary_at != binary.size()) {
    return absl::InvalidArgumentError(absl::StrCat(
        binary.size() - binary_at, " bytes of binary data follow the inputs' binary_data_size"));
  }
  if (j->contains("outputs")) {
    if (!j->at("outputs").is_array()) return BadField("outputs", "must be an array");
    for (const json& o : j->at("outputs")) {
      if (!o.is_object() || !o.contains("name") || !o.at("name").is_string()) {
        return BadField("outputs", "each output is an object with a string \"name\"");
      }
      out.add_outputs()->set_name(o.at("name").get<std::string>());
      if (o.contains("parameters") && o.at("parameters").is_object() &&
          o.at("parameters").contains("binary_data")) {
        const json& b = o.at("parameters").at("binary_data");
        if (!b.is_boolean()) return BadField("outputs", "binary_data is true or false");
        *binary_output = b.get<bool>();
      }
    }
  }
  return out;
}

std::string InferResponseToHttp(const ModelInferResponse& r, bool binary_output,
                                size_t* header_length) {
  json j = {{"model_name", r.model_name()}, {"model_version", r.model_version()}};
  if (!r.id().empty()) j["id"] = r.id();
  if (!r.parameters().empty()) j["parameters"] = ParametersJson(r.parameters());
  const std::string text = TextOutput(r);
  json out = {{"name", "text_output"}, {"datatype", "BYTES"}, {"shape", {1}}};
  std::string binary;
  if (binary_output) {
    AppendLe(static_cast<uint32_t>(text.size()), &binary);
    binary += text;
    out["parameters"] = {{"binary_data_size", binary.size()}};
  } else {
    out["data"] = {text};
  }
  j["outputs"] = json::array({out});
  std::string body = Dump(j);
  *header_length = binary_output ? body.size() : 0;
  return body + binary;
}

absl::StatusOr<ModelInferRequest> GenerateRequestFromHttp(std::string_view body,
                                                         const std::string& model,
                                                         const std::string& version,
                                                         bool streaming) {
  auto j = ParseObject(body, "the request body");
  if (!j.ok()) return j.status();
  ModelInferRequest out;
  out.set_model_name(model);
  out.set_model_version(version);
  // Adds `name` holding `value` (a scalar, or an array for a tensor of several elements) typed as
  // the model's input of that name; a name the model does not take goes through as an empty
  // BYTES tensor, for the protocol's own check to refuse with the list of the inputs.
  auto add = [&](const std::string& name, const json& value) -> absl::Status {
    const OipInputSpec* spec = FindOipInput(name);
    auto* t = out.add_inputs();
    t->set_name(name);
    std::string* raw = out.add_raw_input_contents();
    if (spec == nullptr) {
      t->set_datatype("BYTES");
      t->add_shape(0);
      return absl::OkStatus();
    }
    t->set_datatype(spec->datatype);
    auto n = AppendData(name, spec->datatype, value, raw);
    if (!n.ok()) return n.status();
    t->add_shape(*n);
    return absl::OkStatus();
  };
  bool stream_given = false;
  json sampling = json::object();
  for (const auto& [key, value] : j->items()) {
    if (key == "id") {
      if (!value.is_string()) return BadField("id", "must be a string");
      out.set_id(value.get<std::string>());
      continue;
    }
    if (key == "parameters") {
      if (!value.is_object()) return BadField("parameters", "must be a JSON object");
      for (const auto& [pk, pv] : value.items()) {
        if (pk == "stream" || pk == "exclude_input_in_output") {
          if (pk == "stream") stream_given = true;
          if (absl::Status s = add(pk, pv); !s.ok()) return s;
        } else {
          sampling[pk] = pv;
        }
      }
      continue;
    }
    if (key == "stream") stream_given = true;
    if (absl::Status s = add(key, value); !s.ok()) return s;
  }
  if (!sampling.empty()) {
    if (absl::Status s = add("sampling_parameters", Dump(sampling)); !s.ok()) return s;
  }
  // stream as the route implies it, unless the body says otherwise.
  for (int i = 0; i < out.inputs_size(); ++i) {
    if (out.inputs(i).name() != "stream" || out.raw_input_contents(i).size() != 1) continue;
    if (!streaming && out.raw_input_contents(i)[0] != 0) {
      return BadField("stream", "true asks for several responses: POST to generate_stream");
    }
  }
  if (streaming && !stream_given) {
    if (absl::Status s = add("stream", true); !s.ok()) return s;
  }
  return out;
}

json GenerateResponseJson(const ModelInferResponse& r) {
  json j = {{"model_name", r.model_name()}, {"model_version", r.model_version()}};
  if (!r.id().empty()) j["id"] = r.id();
  j["text_output"] = TextOutput(r);
  if (!r.parameters().empty()) j["parameters"] = ParametersJson(r.parameters());
  return j;
}

// ---- the server

namespace {

// httplib's listener with its socket in reach: the library listens with a backlog of 5, too few
// for a load generator that opens its connections at once (the SYNs beyond it wait a second for
// a retry), so Start listens again with the system's maximum.
class Listener : public httplib::Server {
 public:
  int socket() const { return svr_sock_; }
};

void SetError(httplib::Response& res, int status, const std::string& message) {
  res.status = status;
  res.set_content(Dump(json{{"error", message}}), "application/json");
}

void SetError(httplib::Response& res, const grpc::Status& st) {
  SetError(res, HttpStatusOf(st.error_code()), st.error_message());
}

void SetError(httplib::Response& res, const absl::Status& s) {
  SetError(res, HttpStatusOf(static_cast<grpc::StatusCode>(s.code())), std::string(s.message()));
}

// A stream's error_message is "CODE: message"; the code back as gRPC's.
grpc::Status ParseStreamError(const std::string& line) {
  const size_t colon = line.find(": ");
  if (colon != std::string::npos) {
    const std::string name = line.substr(0, colon);
    for (int c = 0; c <= 16; ++c) {
      if (absl::StatusCodeToString(static_cast<absl::StatusCode>(c)) == name) {
        return grpc::Status(static_cast<grpc::StatusCode>(c), line.substr(colon + 2));
      }
    }
  }
  return grpc::Status(grpc::StatusCode::UNKNOWN, line);
}

std::string Event(const json& j) { return absl::StrCat("data: ", Dump(j), "\n\n"); }

// One generate_stream call: its gRPC stream, kept alive by the response's content provider.
struct StreamCall {
  grpc::ClientContext context;
  std::unique_ptr<grpc::ClientReaderWriter<ModelInferRequest, inference::ModelStreamInferResponse>>
      stream;
  bool finished = false;

  // Ends the call: cancels it when it has not ended, reads what is left and collects the status.
  void Close(bool cancel) {
    if (finished) return;
    finished = true;
    if (cancel) context.TryCancel();
    inference::ModelStreamInferResponse ignored;
    while (stream->Read(&ignored)) {
    }
    stream->Finish().ok();
  }
  ~StreamCall() { Close(true); }
};

}  // namespace

struct HttpGateway::Impl {
  Options options;
  std::shared_ptr<grpc::Channel> channel;
  std::unique_ptr<inference::GRPCInferenceService::Stub> stub;
  Listener server;
  int port = 0;
  std::thread thread;
  bool stopped = false;

  // A gRPC call's context with the HTTP request's credentials.
  static void Prepare(const httplib::Request& req, grpc::ClientContext* context) {
    if (req.has_header("Authorization")) {
      context->AddMetadata("authorization", req.get_header_value("Authorization"));
    }
  }

  static std::string Version(const httplib::Request& req) {
    return req.matches.size() > 2 ? std::string(req.matches[2]) : std::string();
  }

  // One unary call of the gRPC protocol with the HTTP request's credentials; false (with the
  // error answered) when it failed.
  template <typename Request, typename Response, typename Method>
  bool Call(const httplib::Request& http, httplib::Response& res, Method method,
            const Request& request, Response* response) {
    grpc::ClientContext context;
    Prepare(http, &context);
    const grpc::Status st = (stub.get()->*method)(&context, request, response);
    if (!st.ok()) SetError(res, st);
    return st.ok();
  }

  // A model route's request: the name and version from the path.
  template <typename Request>
  static Request ForModel(const httplib::Request& http) {
    Request r;
    r.set_name(http.matches[1]);
    r.set_version(Version(http));
    return r;
  }

  static void SetState(httplib::Response& res, const char* key, bool ok) {
    res.status = ok ? 200 : 503;
    res.set_content(Dump(json{{key, ok}}), "application/json");
  }

  void Health(const httplib::Request& req, httplib::Response& res, bool ready_check) {
    using Stub = inference::GRPCInferenceService::Stub;
    if (ready_check) {
      inference::ServerReadyResponse r;
      if (Call(req, res, &Stub::ServerReady, inference::ServerReadyRequest(), &r)) {
        SetState(res, "ready", r.ready());
      }
    } else {
      inference::ServerLiveResponse r;
      if (Call(req, res, &Stub::ServerLive, inference::ServerLiveRequest(), &r)) {
        SetState(res, "live", r.live());
      }
    }
  }

  void ServerMetadata(const httplib::Request& req, httplib::Response& res) {
    inference::ServerMetadataResponse r;
    if (!Call(req, res, &inference::GRPCInferenceService::Stub::ServerMetadata,
              inference::ServerMetadataRequest(), &r)) {
      return;
    }
    json j = {{"name", r.name()}, {"version", r.version()}, {"extensions", json::array()}};
    for (const auto& e : r.extensions()) j["extensions"].push_back(e);
    for (const char* e : {"binary_tensor_data", "generate"}) j["extensions"].push_back(e);
    res.set_content(Dump(j), "application/json");
  }

  void ModelMetadata(const httplib::Request& req, httplib::Response& res) {
    inference::ModelMetadataResponse r;
    if (!Call(req, res, &inference::GRPCInferenceService::Stub::ModelMetadata,
              ForModel<inference::ModelMetadataRequest>(req), &r)) {
      return;
    }
    auto tensors = [](const auto& list) {
      json out = json::array();
      for (const auto& t : list) {
        out.push_back({{"name", t.name()},
                       {"datatype", t.datatype()},
                       {"shape", std::vector<int64_t>(t.shape().begin(), t.shape().end())}});
      }
      return out;
    };
    json j = {{"name", r.name()},
              {"versions", std::vector<std::string>(r.versions().begin(), r.versions().end())},
              {"platform", r.platform()},
              {"inputs", tensors(r.inputs())},
              {"outputs", tensors(r.outputs())}};
    res.set_content(Dump(j), "application/json");
  }

  void ModelReady(const httplib::Request& req, httplib::Response& res) {
    inference::ModelReadyResponse r;
    if (Call(req, res, &inference::GRPCInferenceService::Stub::ModelReady,
             ForModel<inference::ModelReadyRequest>(req), &r)) {
      SetState(res, "ready", r.ready());
    }
  }

  void Infer(const httplib::Request& req, httplib::Response& res) {
    std::optional<size_t> header_length;
    if (req.has_header("Inference-Header-Content-Length")) {
      size_t n = 0;
      if (!absl::SimpleAtoi(req.get_header_value("Inference-Header-Content-Length"), &n)) {
        return SetError(res, 400, "Inference-Header-Content-Length is not a byte count");
      }
      header_length = n;
    }
    bool binary_output = false;
    auto request =
        InferRequestFromHttp(req.body, header_length, req.matches[1], Version(req), &binary_output);
    if (!request.ok()) return SetError(res, request.status());
    ModelInferResponse r;
    if (!Call(req, res, &inference::GRPCInferenceService::Stub::ModelInfer, *request, &r)) return;
    size_t json_length = 0;
    std::string body = InferResponseToHttp(r, binary_output, &json_length);
    if (binary_output) {
      res.set_header("Inference-Header-Content-Length", std::to_string(json_length));
      res.set_content(body, "application/octet-stream");
    } else {
      res.set_content(body, "application/json");
    }
  }

  void Generate(const httplib::Request& req, httplib::Response& res) {
    auto request = GenerateRequestFromHttp(req.body, req.matches[1], Version(req), false);
    if (!request.ok()) return SetError(res, request.status());
    ModelInferResponse r;
    if (!Call(req, res, &inference::GRPCInferenceService::Stub::ModelInfer, *request, &r)) return;
    res.set_content(Dump(GenerateResponseJson(r)), "application/json");
  }

  // Answers with server-sent events. The first response is read before the HTTP status goes out,
  // so that a request refused at once (bad input, no admission) gets its HTTP error code.
  void GenerateStream(const httplib::Request& req, httplib::Response& res) {
    auto request = GenerateRequestFromHttp(req.body, req.matches[1], Version(req), true);
    if (!request.ok()) return SetError(res, request.status());
    auto call = std::make_shared<StreamCall>();
    Prepare(req, &call->context);
    call->stream = stub->ModelStreamInfer(&call->context);
    call->stream->Write(*request);
    call->stream->WritesDone();
    auto first = std::make_shared<inference::ModelStreamInferResponse>();
    if (!call->stream->Read(first.get())) {
      call->finished = true;
      const grpc::Status st = call->stream->Finish();
      return SetError(res, st.ok() ? grpc::Status(grpc::StatusCode::INTERNAL, "no response")
                                   : st);
    }
    if (!first->error_message().empty()) {
      call->Close(false);
      return SetError(res, ParseStreamError(first->error_message()));
    }
    res.set_header("Cache-Control", "no-cache");
    res.set_chunked_content_provider(
        "text/event-stream",
        [call, first](size_t, httplib::DataSink& sink) {
          inference::ModelStreamInferResponse r = *first;
          while (true) {
            json event = r.error_message().empty()
                             ? GenerateResponseJson(r.infer_response())
                             : json{{"error", r.error_message()}};
            const std::string data = Event(event);
            if (!sink.write(data.data(), data.size())) {
              call->Close(true);  // the client left: cancel the generation
              return false;
            }
            if (!r.error_message().empty()) break;
            const auto& params = r.infer_response().parameters();
            auto final_flag = params.find("triton_final_response");
            if (final_flag != params.end() && final_flag->second.bool_param()) break;
            if (!call->stream->Read(&r)) break;
          }
          call->Close(false);
          sink.done();
          return true;
        },
        [call](bool) { call->Close(true); });
  }

  void Route() {
    server.Get("/v2/health/live",
               [this](const httplib::Request& q, httplib::Response& s) { Health(q, s, false); });
    server.Get("/v2/health/ready",
               [this](const httplib::Request& q, httplib::Response& s) { Health(q, s, true); });
    server.Get("/v2", [this](const httplib::Request& q, httplib::Response& s) {
      ServerMetadata(q, s);
    });
    const std::string model = R"(/v2/models/([^/]+)(?:/versions/([^/]+))?)";
    server.Get(model, [this](const httplib::Request& q, httplib::Response& s) {
      ModelMetadata(q, s);
    });
    server.Get(model + "/ready",
               [this](const httplib::Request& q, httplib::Response& s) { ModelReady(q, s); });
    server.Post(model + "/infer",
                [this](const httplib::Request& q, httplib::Response& s) { Infer(q, s); });
    server.Post(model + "/generate",
                [this](const httplib::Request& q, httplib::Response& s) { Generate(q, s); });
    server.Post(model + "/generate_stream",
                [this](const httplib::Request& q, httplib::Response& s) { GenerateStream(q, s); });
    server.set_error_handler([](const httplib::Request& q, httplib::Response& s) {
      if (!s.body.empty()) return;  // a handler's own error
      if (s.status == 404) {
        SetError(s, 404, absl::StrCat("no route ", q.method, " ", q.path,
                                      "; see /v2, /v2/models/<name>, /v2/models/<name>/infer, "
                                      "/generate and /generate_stream"));
      } else if (s.status == 413) {
        SetError(s, 413, "the request body is larger than the server takes");
      } else {
        SetError(s, s.status, "bad request");
      }
    });
    server.set_exception_handler(
        [](const httplib::Request&, httplib::Response& s, std::exception_ptr e) {
          std::string what = "unknown error";
          try {
            std::rethrow_exception(e);
          } catch (const std::exception& ex) {
            what = ex.what();
          } catch (...) {
          }
          SetError(s, 500, absl::StrCat("internal error: ", what));
        });
  }
};

HttpGateway::HttpGateway(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

HttpGateway::~HttpGateway() { Stop(); }

int HttpGateway::port() const { return impl_->port; }

void HttpGateway::Stop() {
  if (impl_->stopped) return;
  impl_->stopped = true;
  impl_->server.stop();
  if (impl_->thread.joinable()) impl_->thread.join();
}

absl::StatusOr<std::unique_ptr<HttpGateway>> HttpGateway::Start(
    const Options& options, std::shared_ptr<grpc::Channel> channel) {
  auto where = ParseHostPort(options.listen);
  if (!where.ok()) return where.status();
  auto impl = std::make_unique<Impl>();
  impl->options = options;
  impl->channel = std::move(channel);
  impl->stub = inference::GRPCInferenceService::NewStub(impl->channel);
  const size_t threads = static_cast<size_t>(std::max(1, options.threads));
  impl->server.new_task_queue = [threads] { return new httplib::ThreadPool(threads); };
  impl->server.set_tcp_nodelay(true);  // every event of a stream goes out when it is written
  impl->server.set_keep_alive_max_count(1000);
  impl->server.set_keep_alive_timeout(30);
  impl->server.set_payload_max_length(options.max_body_bytes);
  impl->Route();
  const std::string host = where->host.empty() ? "0.0.0.0" : where->host;
  bool bound = false;
  if (where->port == 0) {
    impl->port = impl->server.bind_to_any_port(host);
    bound = impl->port > 0;
  } else {
    bound = impl->server.bind_to_port(host, where->port);
    impl->port = where->port;
  }
  if (!bound) {
    return absl::UnavailableError(absl::StrCat("cannot serve HTTP on ", options.listen));
  }
  ::listen(impl->server.socket(), SOMAXCONN);
  Impl* p = impl.get();
  impl->thread = std::thread([p] {
    if (!p->server.listen_after_bind()) spdlog::error("event=http_stopped (the listener failed)");
  });
  return std::unique_ptr<HttpGateway>(new HttpGateway(std::move(impl)));
}

}  // namespace vlc::server
