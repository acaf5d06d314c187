#include "common/fs.h"
#include "engine/safetensors.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <memory>
#include <stdlib.h>
#include <unistd.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>

namespace vlc::engine {
namespace {

class TempDirTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = (std::filesystem::temp_directory_path() / "vlc_safetensors_XXXXXX");
    ASSERT_NE(mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
    at::manual_seed(0);
  }
  void TearDown() override { RemoveTree(dir_); }

  std::string PathOf(const std::string& name) const { return dir_ + "/" + name; }

  // Writes a file byte by byte: the length prefix, `header` verbatim and `data_bytes` zero bytes,
  // so tests can build headers no well-behaved writer would produce.
  std::string WriteRaw(const std::string& name, const std::string& header, size_t data_bytes) {
    const std::string path = PathOf(name);
    std::ofstream out(path, std::ios::binary);
    const uint64_t len = header.size();
    out.write(reinterpret_cast<const char*>(&len), sizeof(len));
    out << header;
    out << std::string(data_bytes, '\0');
    return path;
  }

  std::string dir_;
};

class SafetensorsRoundTrip : public TempDirTest {};
class SafetensorsWriter : public TempDirTest {};
class SafetensorsReader : public TempDirTest {};

// The message of a corrupt-file error must let a user find the culprit without a debugger.
void ExpectInvalid(const std::string& path, const std::string& tensor_name = "") {
  auto file = SafetensorsFile::Open(path);
  ASSERT_FALSE(file.ok()) << "opened a corrupt file: " << path;
  EXPECT_EQ(file.status().code(), absl::StatusCode::kInvalidArgument) << file.status();
  const std::string msg(file.status().message());
  EXPECT_NE(msg.find(path), std::string::npos) << msg;
  if (!tensor_name.empty()) {
    EXPECT_NE(msg.find("'" + tensor_name + "'"), std::string::npos) << msg;
  }
}

TEST_F(SafetensorsRoundTrip, RoundTripsF32Exactly) {
  at::Tensor a = at::randn({3, 5});
  at::Tensor scalar = at::scalar_tensor(2.5);
  at::Tensor empty = at::empty({0, 4});
  at::Tensor c = at::randn({2, 3, 4});
  const std::string path = PathOf("f32.safetensors");
  ASSERT_TRUE(
      WriteSafetensors(path, {{"a", a}, {"scalar", scalar}, {"empty", empty}, {"c", c}}).ok());

  auto file = SafetensorsFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status();
  const auto& infos = (*file)->tensors();
  ASSERT_EQ(infos.size(), 4u);
  // Entries keep the order given to the writer and are laid out back to back.
  EXPECT_EQ(infos[0].name, "a");
  EXPECT_EQ(infos[1].name, "scalar");
  EXPECT_EQ(infos[2].name, "empty");
  EXPECT_EQ(infos[3].name, "c");
  EXPECT_EQ(infos[0].dtype, "F32");
  EXPECT_EQ(infos[0].shape, (std::vector<int64_t>{3, 5}));
  EXPECT_TRUE(infos[1].shape.empty());
  EXPECT_EQ(infos[0].begin, 0u);
  EXPECT_EQ(infos[0].end, 60u);
  EXPECT_EQ(infos[1].begin, 60u);
  EXPECT_EQ(infos[2].begin, infos[2].end);
  EXPECT_EQ(infos[3].begin, 64u);
  EXPECT_EQ(infos[3].end, 64u + 96u);

  for (const auto& [name, expected] : std::vector<std::pair<std::string, at::Tensor>>{
           {"a", a}, {"scalar", scalar}, {"empty", empty}, {"c", c}}) {
    auto loaded = (*file)->Load(name);
    ASSERT_TRUE(loaded.ok()) << loaded.status();
    EXPECT_EQ(loaded->scalar_type(), at::kFloat);
    EXPECT_EQ(loaded->sizes(), expected.sizes()) << name;
    EXPECT_TRUE(at::equal(*loaded, expected)) << name;
  }
}

TEST_F(SafetensorsRoundTrip, RoundTripsF16AsTheTorchConversion) {
  at::Tensor t = at::randn({4, 7}) * 3;
  const std::string path = PathOf("f16.safetensors");
  ASSERT_TRUE(WriteSafetensors(path, {{"w", t}}, at::kHalf).ok());
  auto file = SafetensorsFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ((*file)->Find("w")->dtype, "F16");
  EXPECT_EQ((*file)->Find("w")->end, 4u * 7u * 2u);

  auto as_float = (*file)->Load("w", at::kFloat);
  ASSERT_TRUE(as_float.ok()) << as_float.status();
  EXPECT_TRUE(at::equal(*as_float, t.to(at::kHalf).to(at::kFloat)));
  EXPECT_TRUE(at::allclose(*as_float, t, /*rtol=*/1e-3, /*atol=*/1e-3));

  auto as_half = (*file)->Load("w", at::kHalf);
  ASSERT_TRUE(as_half.ok()) << as_half.status();
  EXPECT_EQ(as_half->scalar_type(), at::kHalf);
  EXPECT_TRUE(at::equal(*as_half, t.to(at::kHalf)));
}

TEST_F(SafetensorsRoundTrip, RoundTripsBF16AsTheTorchConversion) {
  at::Tensor t = at::randn({5, 3}) * 100;
  const std::string path = PathOf("bf16.safetensors");
  ASSERT_TRUE(WriteSafetensors(path, {{"w", t}}, at::kBFloat16).ok());
  auto file = SafetensorsFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ((*file)->Find("w")->dtype, "BF16");

  auto as_float = (*file)->Load("w");
  ASSERT_TRUE(as_float.ok()) << as_float.status();
  EXPECT_TRUE(at::equal(*as_float, t.to(at::kBFloat16).to(at::kFloat)));
  EXPECT_TRUE(at::allclose(*as_float, t, /*rtol=*/1e-2, /*atol=*/1e-2));
  // bfloat16 really lost precision, so the exact check above is not vacuous.
  EXPECT_FALSE(at::equal(*as_float, t));

  auto as_bf16 = (*file)->Load("w", at::kBFloat16);
  ASSERT_TRUE(as_bf16.ok());
  EXPECT_EQ(as_bf16->scalar_type(), at::kBFloat16);
}

TEST_F(SafetensorsRoundTrip, ViewsReadTheMappingInPlaceAndKeepTheFileMapped) {
  at::Tensor a = at::randn({300, 257});  // larger than a page, so pages are released on drop
  at::Tensor b = at::randn({7});
  const std::string path = PathOf("view.safetensors");
  ASSERT_TRUE(WriteSafetensors(path, {{"a", a}, {"b", b}}, at::kBFloat16).ok());
  at::Tensor va, vb;
  {
    auto opened = SafetensorsFile::Open(path);
    ASSERT_TRUE(opened.ok()) << opened.status();
    const std::shared_ptr<const SafetensorsFile> file(std::move(*opened));
    auto view_a = SafetensorsFile::View(file, "a");
    auto view_b = SafetensorsFile::View(file, "b");
    ASSERT_TRUE(view_a.ok() && view_b.ok()) << view_a.status();
    va = *view_a;
    vb = *view_b;
    EXPECT_EQ(SafetensorsFile::View(file, "c").status().code(), absl::StatusCode::kNotFound);
  }
  // The file object is gone from here; the views keep it mapped.
  EXPECT_EQ(va.scalar_type(), at::kBFloat16);  // stored dtype, no conversion
  EXPECT_TRUE(at::equal(va, a.to(at::kBFloat16)));
  EXPECT_TRUE(at::equal(vb, b.to(at::kBFloat16)));
  // Dropping a view releases its pages; they are read again from the file if touched (here
  // through the other view's copy, taken after).
  at::Tensor copy = va.clone();
  va.reset();
  EXPECT_TRUE(at::equal(copy, a.to(at::kBFloat16)));
  EXPECT_TRUE(at::equal(vb, b.to(at::kBFloat16)));
}

TEST_F(SafetensorsRoundTrip, WritesNonContiguousTensorsInLogicalOrder) {
  at::Tensor t = at::arange(12, at::kFloat).reshape({3, 4}).t();
  ASSERT_FALSE(t.is_contiguous());
  const std::string path = PathOf("transposed.safetensors");
  ASSERT_TRUE(WriteSafetensors(path, {{"t", t}}).ok());
  auto file = SafetensorsFile::Open(path);
  ASSERT_TRUE(file.ok());
  auto loaded = (*file)->Load("t");
  ASSERT_TRUE(loaded.ok());
  EXPECT_TRUE(at::equal(*loaded, t));
}

TEST_F(SafetensorsRoundTrip, RoundTripsMetadata) {
  const std::string path = PathOf("meta.safetensors");
  const std::map<std::string, std::string> metadata = {{"format", "pt"}, {"note", "tiny model"}};
  ASSERT_TRUE(WriteSafetensors(path, {{"x", at::ones({2})}}, at::kFloat, metadata).ok());
  auto file = SafetensorsFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ((*file)->metadata(), metadata);
  // __metadata__ is not a tensor.
  EXPECT_EQ((*file)->tensors().size(), 1u);
  EXPECT_EQ((*file)->Find("__metadata__"), nullptr);
}

TEST_F(SafetensorsWriter, PadsTheHeaderToAMultipleOfEight) {
  const std::string path = PathOf("pad.safetensors");
  ASSERT_TRUE(WriteSafetensors(path, {{"abc", at::ones({3})}}).ok());
  std::ifstream in(path, std::ios::binary);
  uint64_t header_len = 0;
  in.read(reinterpret_cast<char*>(&header_len), sizeof(header_len));
  EXPECT_EQ(header_len % 8, 0u);
  EXPECT_EQ(std::filesystem::file_size(path), 8 + header_len + 3 * sizeof(float));
  // Written through a temporary that is renamed away.
  EXPECT_FALSE(std::filesystem::exists(path + ".tmp"));
}

TEST_F(SafetensorsWriter, RejectsDuplicateNames) {
  const std::string path = PathOf("dup.safetensors");
  absl::Status s = WriteSafetensors(path, {{"x", at::ones({1})}, {"x", at::zeros({1})}});
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_NE(s.message().find("'x'"), std::string::npos) << s;
  EXPECT_FALSE(std::filesystem::exists(path));
}

TEST_F(SafetensorsWriter, RejectsUnsupportedDtypes) {
  absl::Status s = WriteSafetensors(PathOf("f64.safetensors"), {{"x", at::ones({1})}}, at::kDouble);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  s = WriteSafetensors(PathOf("i64.safetensors"), {{"x", at::ones({1})}}, at::kLong);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
}

TEST_F(SafetensorsReader, LoadsIntegerAndBoolSourcesConverted) {
  // I64 [2] = {7, -3} then BOOL [2] = {1, 0}: 18 bytes of data.
  const std::string header = R"({"ids":{"dtype":"I64","shape":[2],"data_offsets":[0,16]},)"
                             R"("mask":{"dtype":"BOOL","shape":[2],"data_offsets":[16,18]}})";
  const std::string path = PathOf("ints.safetensors");
  {
    std::ofstream out(path, std::ios::binary);
    const uint64_t len = header.size();
    const int64_t ids[2] = {7, -3};
    const uint8_t mask[2] = {1, 0};
    out.write(reinterpret_cast<const char*>(&len), sizeof(len));
    out << header;
    out.write(reinterpret_cast<const char*>(ids), sizeof(ids));
    out.write(reinterpret_cast<const char*>(mask), sizeof(mask));
  }
  auto file = SafetensorsFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status();
  auto ids = (*file)->Load("ids", at::kLong);
  ASSERT_TRUE(ids.ok()) << ids.status();
  EXPECT_EQ(ids->scalar_type(), at::kLong);
  EXPECT_EQ((*ids)[0].item<int64_t>(), 7);
  EXPECT_EQ((*ids)[1].item<int64_t>(), -3);
  auto ids_float = (*file)->Load("ids");
  ASSERT_TRUE(ids_float.ok());
  EXPECT_FLOAT_EQ((*ids_float)[1].item<float>(), -3.0f);
  auto mask = (*file)->Load("mask");
  ASSERT_TRUE(mask.ok());
  EXPECT_FLOAT_EQ((*mask)[0].item<float>(), 1.0f);
  EXPECT_FLOAT_EQ((*mask)[1].item<float>(), 0.0f);
}

TEST_F(SafetensorsReader, LoadsTensorsAtUnalignedOffsets) {
  // One U8 byte pushes the F32 tensor to data offset 1, and the header length (odd) shifts the
  // whole data section off alignment too.
  const std::string header = R"({"pad":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},)"
                             R"("x":{"dtype":"F32","shape":[2],"data_offsets":[1,9]}} )";
  const std::string path = PathOf("unaligned.safetensors");
  {
    std::ofstream out(path, std::ios::binary);
    const uint64_t len = header.size();
    const float x[2] = {1.5f, -2.25f};
    out.write(reinterpret_cast<const char*>(&len), sizeof(len));
    out << header;
    out.put(static_cast<char>(42));
    out.write(reinterpret_cast<const char*>(x), sizeof(x));
  }
  auto file = SafetensorsFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status();
  auto x = (*file)->Load("x");
  ASSERT_TRUE(x.ok()) << x.status();
  EXPECT_FLOAT_EQ((*x)[0].item<float>(), 1.5f);
  EXPECT_FLOAT_EQ((*x)[1].item<float>(), -2.25f);
  auto pad = (*file)->Load("pad");
  ASSERT_TRUE(pad.ok());
  EXPECT_FLOAT_EQ(pad->item<float>(), 42.0f);
}

TEST_F(SafetensorsReader, LoadOfAnAbsentTensorIsNotFound) {
  const std::string path = PathOf("one.safetensors");
  ASSERT_TRUE(WriteSafetensors(path, {{"x", at::ones({1})}}).ok());
  auto file = SafetensorsFile::Open(path);
  ASSERT_TRUE(file.ok());
  EXPECT_EQ((*file)->Find("y"), nullptr);
  auto y = (*file)->Load("y");
  EXPECT_EQ(y.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(y.status().message().find("'y'"), std::string::npos);
}

TEST_F(SafetensorsReader, MissingFileIsNotFound) {
  const std::string path = PathOf("absent.safetensors");
  auto file = SafetensorsFile::Open(path);
  EXPECT_EQ(file.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(file.status().message().find(path), std::string::npos);
}

TEST_F(SafetensorsReader, RejectsFileTooShortForTheLengthPrefix) {
  const std::string path = PathOf("short.safetensors");
  std::ofstream(path, std::ios::binary) << "abcd";
  ExpectInvalid(path);
  std::ofstream(PathOf("empty.safetensors"), std::ios::binary).flush();
  ExpectInvalid(PathOf("empty.safetensors"));
}

TEST_F(SafetensorsReader, RejectsHeaderLengthBeyondTheFile) {
  const std::string path = PathOf("long_header.safetensors");
  {
    std::ofstream out(path, std::ios::binary);
    const uint64_t len = 1000;
    out.write(reinterpret_cast<const char*>(&len), sizeof(len));
    out << "{}";
  }
  ExpectInvalid(path);
}

TEST_F(SafetensorsReader, RejectsImplausiblyLargeHeaderLength) {
  // The file really is long enough for the claimed header (sparse, so cheap), so only the size
  // limit can reject it, before any attempt to parse 101 MiB as JSON.
  const std::string path = PathOf("huge_header.safetensors");
  const uint64_t len = uint64_t{101} << 20;
  {
    std::ofstream out(path, std::ios::binary);
    out.write(reinterpret_cast<const char*>(&len), sizeof(len));
  }
  std::filesystem::resize_file(path, 8 + len);
  ExpectInvalid(path);
  auto file = SafetensorsFile::Open(path);
  EXPECT_NE(file.status().message().find("implausibly large"), std::string::npos) << file.status();
}

TEST_F(SafetensorsReader, RejectsBadJson) {
  ExpectInvalid(WriteRaw("bad_json.safetensors", R"({"x": {"dtype": "F32", )", 0));
}

TEST_F(SafetensorsReader, RejectsAHeaderThatIsNotAnObject) {
  ExpectInvalid(WriteRaw("array.safetensors", "[1, 2, 3]", 0));
}

TEST_F(SafetensorsReader, RejectsUnknownDtype) {
  ExpectInvalid(WriteRaw("dtype.safetensors",
                         R"({"w.weight":{"dtype":"F8_E9M9","shape":[2],"data_offsets":[0,2]}})", 2),
                "w.weight");
}

TEST_F(SafetensorsReader, RejectsShapeThatDisagreesWithOffsets) {
  // Two F32s need 8 bytes; the offsets span 6.
  ExpectInvalid(WriteRaw("size.safetensors",
                         R"({"w.weight":{"dtype":"F32","shape":[2],"data_offsets":[0,6]}})", 8),
                "w.weight");
}

TEST_F(SafetensorsReader, RejectsOffsetsBeyondTheDataOfATruncatedFile) {
  const std::string path = PathOf("truncated.safetensors");
  ASSERT_TRUE(
      WriteSafetensors(path, {{"lm.embed", at::ones({4})}, {"lm.norm.weight", at::ones({4})}})
          .ok());
  ASSERT_TRUE(SafetensorsFile::Open(path).ok());
  std::filesystem::resize_file(path, std::filesystem::file_size(path) - 4);
  ExpectInvalid(path, "lm.norm.weight");
  auto file = SafetensorsFile::Open(path);
  EXPECT_NE(file.status().message().find("truncated"), std::string::npos) << file.status();
}

TEST_F(SafetensorsReader, RejectsOverlappingTensors) {
  const std::string path = WriteRaw("overlap.safetensors",
                                    R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                                    R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
                                    12);
  ExpectInvalid(path, "a");
  ExpectInvalid(path, "b");
}

TEST_F(SafetensorsReader, RejectsOverlapRegardlessOfHeaderOrder) {
  // Listed out of file order: the check must sort by offset, not compare neighbours in the header.
  ExpectInvalid(WriteRaw("overlap2.safetensors",
                         R"({"c":{"dtype":"F32","shape":[1],"data_offsets":[12,16]},)"
                         R"("a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                         R"("b":{"dtype":"F32","shape":[4],"data_offsets":[4,20]}})",
                         20),
                "b");
}

TEST_F(SafetensorsReader, AcceptsZeroSizeTensorsInsideAnotherTensorsRange) {
  const std::string path = WriteRaw("zero.safetensors",
                                    R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                                    R"("e1":{"dtype":"F32","shape":[0],"data_offsets":[4,4]},)"
                                    R"("e2":{"dtype":"F16","shape":[3,0],"data_offsets":[4,4]}})",
                                    8);
  auto file = SafetensorsFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status();
  auto e2 = (*file)->Load("e2");
  ASSERT_TRUE(e2.ok()) << e2.status();
  EXPECT_EQ(e2->sizes(), (at::IntArrayRef{3, 0}));
}

TEST_F(SafetensorsReader, RejectsNegativeShape) {
  ExpectInvalid(WriteRaw("negative.safetensors",
                         R"({"w.weight":{"dtype":"F32","shape":[-1,2],"data_offsets":[0,8]}})", 8),
                "w.weight");
}

TEST_F(SafetensorsReader, RejectsBeginAfterEnd) {
  ExpectInvalid(WriteRaw("reversed.safetensors",
                         R"({"w.weight":{"dtype":"U8","shape":[0],"data_offsets":[8,0]}})", 8),
                "w.weight");
}

TEST_F(SafetensorsReader, RejectsMissingFields) {
  ExpectInvalid(WriteRaw("no_offsets.safetensors", R"({"w":{"dtype":"F32","shape":[1]}})", 4), "w");
  ExpectInvalid(
      WriteRaw("no_shape.safetensors", R"({"w":{"dtype":"F32","data_offsets":[0,4]}})", 4), "w");
}

TEST_F(SafetensorsReader, RejectsNonStringMetadata) {
  ExpectInvalid(WriteRaw("meta.safetensors", R"({"__metadata__":{"format":1}})", 0));
}

}  // namespace
}  // namespace vlc::engine
