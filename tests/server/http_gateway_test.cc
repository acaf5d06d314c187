// The HTTP/REST binding's translation (server/http_gateway.h): KServe v2 JSON and binary tensor
// data, and Triton's generate extension, into the gRPC protocol's request, checked through the
// protocol's own decoding (FromInferRequest) so that both sides agree on every byte.
#include "server/http_gateway.h"

#include <gtest/gtest.h>

#include <cstring>
#include <string>

#include "server/oip_service.h"

namespace vlc::server {
namespace {

using inference::ModelInferRequest;
using nlohmann::json;

std::string LengthPrefixed(const std::string& s) {
  std::string out(4, '\0');
  const uint32_t n = static_cast<uint32_t>(s.size());
  std::memcpy(out.data(), &n, 4);
  return out + s;
}

vlcache::v1::GenerateRequest Decode(const ModelInferRequest& r, bool* stream = nullptr,
                                    bool* exclude = nullptr) {
  bool s = false, e = false;
  auto out = FromInferRequest(r, &s, &e);
  EXPECT_TRUE(out.ok()) << out.status();
  if (stream) *stream = s;
  if (exclude) *exclude = e;
  return out.ok() ? *out : vlcache::v1::GenerateRequest();
}

TEST(HttpGatewayTest, InferJsonBecomesRawContentsTheProtocolDecodes) {
  bool binary_output = true;
  const std::string body = R"({
    "id": "r1",
    "inputs": [
      {"name": "text_input", "datatype": "BYTES", "shape": [1], "data": ["what color?"]},
      {"name": "image", "datatype": "BYTES", "shape": [1, 2], "data": [["aGVsbG8=", "data:image/png;base64,d29ybGQ="]]},
      {"name": "exclude_input_in_output", "datatype": "BOOL", "shape": [1], "data": [true]},
      {"name": "video_frames", "datatype": "INT32", "shape": [1], "data": [6]},
      {"name": "kv_budget", "datatype": "FP32", "shape": [1], "data": [0.25]}
    ]})";
  auto r = InferRequestFromHttp(body, std::nullopt, "demo", "", &binary_output);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_FALSE(binary_output);
  EXPECT_EQ(r->id(), "r1");
  EXPECT_EQ(r->model_name(), "demo");
  ASSERT_EQ(r->raw_input_contents_size(), 5);
  EXPECT_EQ(r->raw_input_contents(1), LengthPrefixed("hello") + LengthPrefixed("world"));
  bool exclude = false;
  const auto g = Decode(*r, nullptr, &exclude);
  EXPECT_EQ(g.prompt(), "what color?");
  ASSERT_EQ(g.media().images_size(), 2);
  EXPECT_EQ(g.media().images(0), "hello");
  EXPECT_EQ(g.media().images(1), "world");
  EXPECT_TRUE(exclude);
  EXPECT_EQ(g.media().video_frames(), 6);
  EXPECT_FLOAT_EQ(g.cache().budget(), 0.25f);
}

TEST(HttpGatewayTest, BinaryTensorDataIsSlicedByEachInputsSize) {
  const std::string picture("\x89PNG\0\x01\x02", 7);
  const std::string header =
      R"({"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1], "parameters": {"binary_data_size": 11}},
                     {"name": "text_input", "datatype": "BYTES", "shape": [1], "data": ["hi"]},
                     {"name": "stream", "datatype": "BOOL", "shape": [1], "parameters": {"binary_data_size": 1}}],
          "outputs": [{"name": "text_output", "parameters": {"binary_data": true}}]})";
  const std::string body = header + LengthPrefixed(picture) + std::string(1, '\0');
  bool binary_output = false;
  auto r = InferRequestFromHttp(body, header.size(), "demo", "1", &binary_output);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_TRUE(binary_output);
  EXPECT_EQ(r->model_version(), "1");
  bool stream = true;
  const auto g = Decode(*r, &stream);
  ASSERT_EQ(g.media().images_size(), 1);
  EXPECT_EQ(g.media().images(0), picture);
  EXPECT_EQ(g.prompt(), "hi");
  EXPECT_FALSE(stream);

  // The request-level switch asks for binary output too.
  auto r2 = InferRequestFromHttp(
      R"({"parameters": {"binary_data_output": true}, "inputs": [{"name": "text_input", "datatype": "BYTES", "shape": [1], "data": ["x"]}]})",
      std::nullopt, "demo", "", &binary_output);
  ASSERT_TRUE(r2.ok());
  EXPECT_TRUE(binary_output);
}

TEST(HttpGatewayTest, BadInferBodiesNameWhatIsWrong) {
  struct Case {
    std::string body;
    std::optional<size_t> header;
    std::string expected;
  };
  const std::string one = R"({"name": "text_input", "datatype": "BYTES", "shape": [1])";
  const std::optional<size_t> json_end = SIZE_MAX;  // the header is the JSON, binary data follows
  const std::vector<Case> cases = {
      {"[1, 2]", std::nullopt, "not a JSON object"},
      {"{nope", std::nullopt, "not valid JSON"},
      {"{}", std::nullopt, "\"inputs\""},
      {R"({"inputs": [{"datatype": "BYTES", "shape": [1], "data": ["x"]}]})", std::nullopt,
       "string \"name\""},
      {R"({"inputs": [{"name": "text_input", "shape": [1], "data": ["x"]}]})", std::nullopt,
       "input tensor \"text_input\": needs a string \"datatype\""},
      {R"({"inputs": [{"name": "text_input", "datatype": "BYTES", "shape": [-1], "data": ["x"]}]})",
       std::nullopt, "shape dimensions are integers, 0 or more"},
      {R"({"inputs": [)" + one + R"(}]})", std::nullopt, "needs \"data\""},
      {R"({"inputs": [)" + one + R"(, "data": ["a", "b"]}]})", std::nullopt,
       "the shape says 1 elements, data has 2"},
      {R"({"inputs": [{"name": "kv_budget", "datatype": "FP16", "shape": [1], "data": [0.5]}]})",
       std::nullopt, "datatype FP16 cannot be given as JSON"},
      {R"({"inputs": [{"name": "video_frames", "datatype": "INT32", "shape": [1], "data": [1.5]}]})",
       std::nullopt, "a INT32 element is an integer"},
      {R"({"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1], "data": ["@@@"]}]})",
       std::nullopt, "this is not base64"},
      {R"({"inputs": [)" + one + R"(, "data": ["x"], "parameters": {"binary_data_size": 1}}]})" "x",
       json_end, "has both data and binary_data_size"},
      {R"({"inputs": [)" + one + R"(, "parameters": {"binary_data_size": 9}}]})" "abc",
       json_end, "binary_data_size is 9 but only 3 bytes"},
      {R"({"inputs": []})", std::optional<size_t>(400), "Inference-Header-Content-Length is 400"},
  };
  for (const auto& c : cases) {
    bool binary_output = false;
    std::optional<size_t> header = c.header;
    if (header == json_end) header = c.body.rfind('}') + 1;
    auto r = InferRequestFromHttp(c.body, header, "demo", "", &binary_output);
    ASSERT_FALSE(r.ok()) << c.body;
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << c.body;
    EXPECT_NE(r.status().message().find(c.expected), std::string::npos)
        << c.body << " -> " << r.status().message();
  }
}

TEST(HttpGatewayTest, InferResponseAsJsonOrBinaryData) {
  inference::ModelInferResponse r;
  r.set_model_name("demo");
  r.set_model_version("1");
  r.set_id("q");
  r.add_raw_output_contents(LengthPrefixed("red \xe2\x96"));  // ends inside a UTF-8 sequence
  (*r.mutable_parameters())["generated_tokens"].set_int64_param(3);
  (*r.mutable_parameters())["finish_reason"].set_string_param("length");
  size_t header = 99;
  const std::string as_json = InferResponseToHttp(r, false, &header);
  EXPECT_EQ(header, 0u);
  const json j = json::parse(as_json);
  EXPECT_EQ(j["id"], "q");
  EXPECT_EQ(j["parameters"]["generated_tokens"], 3);
  EXPECT_EQ(j["parameters"]["finish_reason"], "length");
  EXPECT_EQ(j["outputs"][0]["data"][0], "red \xef\xbf\xbd");  // the broken tail replaced
  const std::string as_binary = InferResponseToHttp(r, true, &header);
  ASSERT_LT(header, as_binary.size());
  const json h = json::parse(as_binary.substr(0, header));
  EXPECT_EQ(h["outputs"][0]["parameters"]["binary_data_size"], 4 + 6);
  EXPECT_FALSE(h["outputs"][0].contains("data"));
  EXPECT_EQ(as_binary.substr(header), LengthPrefixed("red \xe2\x96"));
}

TEST(HttpGatewayTest, GenerateKeysBecomeTensorsOfTheModelsTypes) {
  auto r = GenerateRequestFromHttp(
      R"({"text_input": "what is at row 1 column 4?", "image": ["aGVsbG8="], "kv_policy": "vlcache",
          "kv_budget": 1, "video_frames": 4, "id": "g1",
          "parameters": {"max_tokens": 7, "temperature": 0, "stop": ["."],
                         "exclude_input_in_output": true}})",
      "demo", "", /*streaming=*/true);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->id(), "g1");
  bool stream = false, exclude = false;
  const auto g = Decode(*r, &stream, &exclude);
  EXPECT_TRUE(stream) << "generate_stream streams unless told otherwise";
  EXPECT_TRUE(exclude);
  EXPECT_EQ(g.prompt(), "what is at row 1 column 4?");
  ASSERT_EQ(g.media().images_size(), 1);
  EXPECT_EQ(g.media().images(0), "hello");
  EXPECT_EQ(g.media().video_frames(), 4);
  EXPECT_EQ(g.cache().policy(), "vlcache");
  EXPECT_FLOAT_EQ(g.cache().budget(), 1.0f);  // a JSON integer where the input is FP32
  EXPECT_EQ(g.sampling().max_new_tokens(), 7);
  EXPECT_EQ(g.sampling().temperature(), 0.0f);
  ASSERT_EQ(g.sampling().stop_size(), 1);

  // A stream the body turns off is one response.
  auto off = GenerateRequestFromHttp(R"({"text_input": "x", "parameters": {"stream": false}})",
                                     "demo", "", true);
  ASSERT_TRUE(off.ok());
  Decode(*off, &stream);
  EXPECT_FALSE(stream);
}

TEST(HttpGatewayTest, BadGenerateBodies) {
  struct Case {
    const char* body;
    bool streaming;
    const char* expected;
  };
  const Case cases[] = {
      {R"({"text_input": "x", "stream": true})", false, "POST to generate_stream"},
      {R"({"text_input": "x", "parameters": {"stream": true}})", false, "POST to generate_stream"},
      {R"({"text_input": "x", "parameters": 3})", true, "parameters: must be a JSON object"},
      {R"({"text_input": "x", "kv_budget": "half"})", true, "a FP32 element is a number"},
      {R"({"text_input": "x", "stream": "yes"})", true, "a BOOL element is true or false"},
      {R"({"text_input": "x", "id": 5})", true, "id: must be a string"},
      {R"("x")", true, "not a JSON object"},
  };
  for (const auto& c : cases) {
    auto r = GenerateRequestFromHttp(c.body, "demo", "", c.streaming);
    ASSERT_FALSE(r.ok()) << c.body;
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(r.status().message().find(c.expected), std::string::npos)
        << c.body << " -> " << r.status().message();
  }
  // A key the model does not take is refused by the protocol's own check, with the list.
  auto unknown = GenerateRequestFromHttp(R"({"text_input": "x", "prompt": "y"})", "demo", "", true);
  ASSERT_TRUE(unknown.ok());
  bool s = false, e = false;
  auto decoded = FromInferRequest(*unknown, &s, &e);
  ASSERT_FALSE(decoded.ok());
  EXPECT_NE(decoded.status().message().find("input tensor \"prompt\": unknown; this model takes"),
            std::string::npos)
      << decoded.status();
  // Sampling keys it does not know are named the same way.
  auto sampling = GenerateRequestFromHttp(
      R"({"text_input": "x", "parameters": {"beam_width": 2}})", "demo", "", true);
  ASSERT_TRUE(sampling.ok());
  decoded = FromInferRequest(*sampling, &s, &e);
  ASSERT_FALSE(decoded.ok());
  EXPECT_NE(decoded.status().message().find("unknown key \"beam_width\""), std::string::npos);
}

TEST(HttpGatewayTest, StreamEventsCarryTheTextAndTheUsage) {
  inference::ModelInferResponse r;
  r.set_model_name("demo");
  r.set_model_version("1");
  r.add_raw_output_contents(LengthPrefixed(" square"));
  (*r.mutable_parameters())["triton_final_response"].set_bool_param(false);
  const json j = GenerateResponseJson(r);
  EXPECT_EQ(j["text_output"], " square");
  EXPECT_EQ(j["model_name"], "demo");
  EXPECT_EQ(j["parameters"]["triton_final_response"], false);
  EXPECT_FALSE(j.contains("id"));
}

TEST(HttpGatewayTest, StatusCodesMapToHttp) {
  EXPECT_EQ(HttpStatusOf(grpc::StatusCode::INVALID_ARGUMENT), 400);
  EXPECT_EQ(HttpStatusOf(grpc::StatusCode::UNAUTHENTICATED), 401);
  EXPECT_EQ(HttpStatusOf(grpc::StatusCode::PERMISSION_DENIED), 403);
  EXPECT_EQ(HttpStatusOf(grpc::StatusCode::NOT_FOUND), 404);
  EXPECT_EQ(HttpStatusOf(grpc::StatusCode::RESOURCE_EXHAUSTED), 429);
  EXPECT_EQ(HttpStatusOf(grpc::StatusCode::UNAVAILABLE), 503);
  EXPECT_EQ(HttpStatusOf(grpc::StatusCode::DEADLINE_EXCEEDED), 504);
  EXPECT_EQ(HttpStatusOf(grpc::StatusCode::INTERNAL), 500);
}

}  // namespace
}  // namespace vlc::server
