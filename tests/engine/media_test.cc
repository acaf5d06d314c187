// Media: decoding images and videos (round trips through OpenCV's encoders, malformed and
// oversized input), Pillow-exact bicubic resizing against a fixture made with Pillow, and CLIP
// preprocessing against hand-computed values and a CLIPImageProcessor reference.
#include "engine/media.h"

#include <ATen/core/Tensor.h>
#include <dirent.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/videoio.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/match.h"

namespace vlc::engine {
namespace {

// gmock is not linked into the engine tests, so substring checks are spelled out.
::testing::AssertionResult MessageHas(const absl::Status& status, const std::string& part) {
  if (absl::StrContains(status.message(), part)) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << "\"" << status.message() << "\" lacks \"" << part << "\"";
}

std::string FixtureDir() {
  const std::string here = __FILE__;  // .../tests/engine/media_test.cc
  return here.substr(0, here.rfind('/')) + "/../fixtures/pil_resize";
}

std::string Encode(const cv::Mat& bgr, const std::string& ext, std::vector<int> params = {}) {
  std::vector<uint8_t> buf;
  EXPECT_TRUE(cv::imencode(ext, bgr, buf, params)) << ext;
  return std::string(buf.begin(), buf.end());
}

std::array<int, 3> PixelAt(const RgbImage& img, int x, int y) {
  const size_t i = (static_cast<size_t>(y) * img.width + x) * 3;
  return {img.data[i], img.data[i + 1], img.data[i + 2]};
}

// A directory of its own for each test, removed with its files afterwards.
class ScopedTempDir {
 public:
  ScopedTempDir() {
    const char* base = std::getenv("TMPDIR");
    std::string tmpl = std::string(base != nullptr && *base != '\0' ? base : "/tmp") +
                       "/vlcache-media-test-XXXXXX";
    EXPECT_NE(mkdtemp(tmpl.data()), nullptr);
    path_ = tmpl;
  }
  ~ScopedTempDir() {
    for (const std::string& name : List()) unlink((path_ + "/" + name).c_str());
    rmdir(path_.c_str());
  }
  const std::string& path() const { return path_; }
  std::vector<std::string> List() const {
    std::vector<std::string> names;
    if (DIR* d = opendir(path_.c_str())) {
      while (dirent* e = readdir(d)) {
        if (std::strcmp(e->d_name, ".") != 0 && std::strcmp(e->d_name, "..") != 0) {
          names.push_back(e->d_name);
        }
      }
      closedir(d);
    }
    return names;
  }
  int CountWithPrefix(const std::string& prefix) const {
    const std::vector<std::string> names = List();
    return static_cast<int>(std::count_if(names.begin(), names.end(), [&](const std::string& n) {
      return absl::StartsWith(n, prefix);
    }));
  }

 private:
  std::string path_;
};

// Points TMPDIR somewhere else for the life of the object.
class ScopedTmpdir {
 public:
  explicit ScopedTmpdir(const std::string& dir) {
    if (const char* old = std::getenv("TMPDIR")) old_ = old, had_ = true;
    setenv("TMPDIR", dir.c_str(), 1);
  }
  ~ScopedTmpdir() {
    if (had_) {
      setenv("TMPDIR", old_.c_str(), 1);
    } else {
      unsetenv("TMPDIR");
    }
  }

 private:
  std::string old_;
  bool had_ = false;
};

std::string ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// ---------------------------------------------------------------------------------------------
// Images

struct ImageFormat {
  const char* name;
  const char* ext;
  std::vector<int> params;
  int tolerance;  // largest per-channel error the codec may introduce on flat colours
};

class DecodeImageFormat : public ::testing::TestWithParam<ImageFormat> {};

// Left half pure red, right half pure blue, in OpenCV's BGR order.
cv::Mat RedBlueBgr(int width, int height) {
  cv::Mat bgr(height, width, CV_8UC3, cv::Scalar(0, 0, 255));
  bgr(cv::Rect(width / 2, 0, width - width / 2, height)).setTo(cv::Scalar(255, 0, 0));
  return bgr;
}

TEST_P(DecodeImageFormat, RoundTripKeepsSizeAndGivesRgbOrder) {
  const ImageFormat& f = GetParam();
  const std::string bytes = Encode(RedBlueBgr(32, 16), f.ext, f.params);
  auto img = DecodeImage(bytes);
  ASSERT_TRUE(img.ok()) << img.status();
  EXPECT_EQ(img->width, 32);
  EXPECT_EQ(img->height, 16);
  ASSERT_EQ(img->data.size(), 32u * 16 * 3);
  // Sample away from the red/blue edge, where lossy codecs blur.
  const std::array<int, 3> red = PixelAt(*img, 4, 8);
  const std::array<int, 3> blue = PixelAt(*img, 28, 8);
  EXPECT_NEAR(red[0], 255, f.tolerance);
  EXPECT_NEAR(red[1], 0, f.tolerance);
  EXPECT_NEAR(red[2], 0, f.tolerance);
  EXPECT_NEAR(blue[0], 0, f.tolerance);
  EXPECT_NEAR(blue[1], 0, f.tolerance);
  EXPECT_NEAR(blue[2], 255, f.tolerance);
}

TEST_P(DecodeImageFormat, RejectsMorePixelsThanTheLimit) {
  const ImageFormat& f = GetParam();
  const std::string bytes = Encode(RedBlueBgr(40, 30), f.ext, f.params);
  MediaLimits limits;
  limits.max_pixels = 40 * 30 - 1;
  auto img = DecodeImage(bytes, limits);
  ASSERT_EQ(img.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(MessageHas(img.status(), "40x30"));
  EXPECT_TRUE(MessageHas(img.status(), "1199"));
  limits.max_pixels = 40 * 30;
  EXPECT_TRUE(DecodeImage(bytes, limits).ok());
}

// Only the header survives the truncation, so the file cannot be decoded: an error about the
// pixel count shows that the declared size was checked before decoding was attempted.
TEST_P(DecodeImageFormat, DeclaredSizeIsCheckedBeforeDecoding) {
  const ImageFormat& f = GetParam();
  std::string bytes = Encode(RedBlueBgr(40, 30), f.ext, f.params);
  bytes.resize(std::min<size_t>(bytes.size() - 1, 200));
  MediaLimits limits;
  limits.max_pixels = 100;
  auto img = DecodeImage(bytes, limits);
  ASSERT_EQ(img.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(MessageHas(img.status(), "40x30 pixels, more than the limit"));
}

INSTANTIATE_TEST_SUITE_P(
    Media, DecodeImageFormat,
    ::testing::Values(ImageFormat{"png", ".png", {}, 0}, ImageFormat{"bmp", ".bmp", {}, 0},
                      ImageFormat{"jpeg", ".jpg", {cv::IMWRITE_JPEG_QUALITY, 95}, 10},
                      ImageFormat{"webp_lossless", ".webp", {cv::IMWRITE_WEBP_QUALITY, 101}, 0},
                      ImageFormat{"webp_lossy", ".webp", {cv::IMWRITE_WEBP_QUALITY, 90}, 10}),
    [](const ::testing::TestParamInfo<ImageFormat>& p) { return p.param.name; });

TEST(DecodeImage, GreyBecomesThreeEqualChannels) {
  const cv::Mat grey(6, 5, CV_8UC1, cv::Scalar(77));
  auto img = DecodeImage(Encode(grey, ".png"));
  ASSERT_TRUE(img.ok()) << img.status();
  EXPECT_EQ(img->width, 5);
  EXPECT_EQ(img->height, 6);
  EXPECT_EQ(PixelAt(*img, 2, 3), (std::array<int, 3>{77, 77, 77}));
}

TEST(EncodePng, DecodesToTheSamePixelsInRgbOrder) {
  RgbImage in;
  in.width = 7;
  in.height = 5;
  for (int i = 0; i < in.width * in.height * 3; ++i)
    in.data.push_back(static_cast<uint8_t>(37 * i));
  auto png = EncodePng(in);
  ASSERT_TRUE(png.ok()) << png.status();
  EXPECT_EQ(png->compare(1, 3, "PNG"), 0);
  auto out = DecodeImage(*png);
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(out->width, 7);
  EXPECT_EQ(out->height, 5);
  EXPECT_EQ(out->data, in.data);
}

TEST(EncodePng, ADataSizeThatDoesNotMatchIsAnError) {
  RgbImage in;
  in.width = 4;
  in.height = 4;
  in.data.resize(4 * 4 * 3 - 1);
  auto png = EncodePng(in);
  EXPECT_EQ(png.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(png.status().message().find("needs 48 bytes, got 47"), std::string::npos)
      << png.status();
}

TEST(DecodeImage, RgbaDropsAlphaAndKeepsColour) {
  const cv::Mat bgra(4, 4, CV_8UC4, cv::Scalar(0, 0, 255, 128));  // half-transparent red
  auto img = DecodeImage(Encode(bgra, ".png"));
  ASSERT_TRUE(img.ok()) << img.status();
  ASSERT_EQ(img->data.size(), 4u * 4 * 3);
  EXPECT_EQ(PixelAt(*img, 1, 1), (std::array<int, 3>{255, 0, 0}));
}

TEST(DecodeImage, EmptyBytesAreInvalidArgument) {
  auto img = DecodeImage("");
  ASSERT_EQ(img.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(img.status().message(), "image is empty");
}

TEST(DecodeImage, GarbageBytesAreInvalidArgumentNamingTheFormats) {
  auto img = DecodeImage("this is not an image, just some text that is long enough");
  ASSERT_EQ(img.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(img.status().message(),
            "could not decode the image: not a PNG, JPEG, WebP or BMP file, or corrupt");
}

TEST(DecodeImage, TruncatedPngIsInvalidArgument) {
  cv::Mat noise(64, 64, CV_8UC3);
  cv::randu(noise, 0, 256);
  std::string bytes = Encode(noise, ".png");
  bytes.resize(bytes.size() / 2);
  auto img = DecodeImage(bytes);
  ASSERT_EQ(img.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(MessageHas(img.status(), "could not decode the image"));
}

TEST(DecodeImage, MoreBytesThanTheLimitAreRejectedWithBothSizes) {
  const std::string bytes = Encode(RedBlueBgr(32, 32), ".bmp");  // 54 + 32*32*3 bytes
  MediaLimits limits;
  limits.max_bytes = 1000;
  auto img = DecodeImage(bytes, limits);
  ASSERT_EQ(img.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(img.status().message(), "image is " + std::to_string(bytes.size()) +
                                        " bytes, more than the limit of 1000 bytes");
}

// A 45-byte PNG that claims 100000 x 100000 pixels: refused from its header, not decoded.
TEST(DecodeImage, DecompressionBombHeaderIsRefused) {
  std::string png("\x89PNG\r\n\x1a\n", 8);
  png += std::string("\x00\x00\x00\x0dIHDR", 8);
  png += std::string("\x00\x01\x86\xa0\x00\x01\x86\xa0\x08\x02\x00\x00\x00", 13);
  png += std::string(4, '\0') + std::string(12, '\0');  // CRC and a stub IDAT
  auto img = DecodeImage(png);
  ASSERT_EQ(img.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(MessageHas(img.status(), "100000x100000"));
}

// ---------------------------------------------------------------------------------------------
// Videos

constexpr int kVideoFrames = 20;

// Frame i is flat, with red = 30 + 10 i, so a decoded frame tells which source frame it was.
int RedOfFrame(int i) { return 30 + 10 * i; }

void WriteVideo(const std::string& path, const char (&fourcc)[5], int frames, int width = 64,
                int height = 48) {
  cv::VideoWriter writer(path, cv::VideoWriter::fourcc(fourcc[0], fourcc[1], fourcc[2], fourcc[3]),
                         10.0, cv::Size(width, height));
  ASSERT_TRUE(writer.isOpened()) << "OpenCV cannot write " << fourcc << " to " << path;
  for (int i = 0; i < frames; ++i) {
    writer.write(cv::Mat(height, width, CV_8UC3, cv::Scalar(60, 128, RedOfFrame(i))));
  }
  writer.release();
}

// The source frame each decoded frame came from, read from its colour (-1 if it matches none
// within the codecs' error).
std::vector<int> SourceFrames(const std::vector<RgbImage>& frames) {
  std::vector<int> indices;
  for (const RgbImage& f : frames) {
    const std::array<int, 3> p = PixelAt(f, f.width / 2, f.height / 2);
    const int i = static_cast<int>(std::lround((p[0] - 30) / 10.0));
    const bool plausible = std::abs(p[0] - RedOfFrame(i)) <= 10 && std::abs(p[1] - 128) <= 10 &&
                           std::abs(p[2] - 60) <= 10;
    indices.push_back(plausible ? i : -1);
  }
  return indices;
}

class DecodeVideoTest : public ::testing::Test {
 protected:
  std::string MakeVideo(const std::string& name, const char (&fourcc)[5], int frames) {
    const std::string path = dir_.path() + "/" + name;
    WriteVideo(path, fourcc, frames);
    return ReadAll(path);
  }
  ScopedTempDir dir_;
};

// numpy.linspace(0, 19, 8).astype(int) is [0 2 5 8 10 13 16 19].
TEST_F(DecodeVideoTest, AviMjpgSamplesLinspaceIndicesInOrder) {
  const std::string bytes = MakeVideo("clip.avi", "MJPG", kVideoFrames);
  auto frames = DecodeVideo(bytes, 8);
  ASSERT_TRUE(frames.ok()) << frames.status();
  ASSERT_EQ(frames->size(), 8u);
  EXPECT_EQ((*frames)[0].width, 64);
  EXPECT_EQ((*frames)[0].height, 48);
  EXPECT_EQ(SourceFrames(*frames), (std::vector<int>{0, 2, 5, 8, 10, 13, 16, 19}));
}

TEST_F(DecodeVideoTest, Mp4Mp4vSamplesLinspaceIndicesInOrder) {
  const std::string bytes = MakeVideo("clip.mp4", "mp4v", kVideoFrames);
  auto frames = DecodeVideo(bytes, 8);
  ASSERT_TRUE(frames.ok()) << frames.status();
  ASSERT_EQ(frames->size(), 8u);
  EXPECT_EQ(SourceFrames(*frames), (std::vector<int>{0, 2, 5, 8, 10, 13, 16, 19}));
}

TEST_F(DecodeVideoTest, OneFrameIsTheFirst) {
  auto frames = DecodeVideo(MakeVideo("clip.avi", "MJPG", kVideoFrames), 1);
  ASSERT_TRUE(frames.ok()) << frames.status();
  EXPECT_EQ(SourceFrames(*frames), (std::vector<int>{0}));
}

// linspace(0, 4, 8).astype(int) is [0 0 1 1 2 2 3 4]: each frame once.
TEST_F(DecodeVideoTest, ShortVideoYieldsEachFrameOnce) {
  auto frames = DecodeVideo(MakeVideo("short.avi", "MJPG", 5), 8);
  ASSERT_TRUE(frames.ok()) << frames.status();
  EXPECT_EQ(SourceFrames(*frames), (std::vector<int>{0, 1, 2, 3, 4}));
}

// A Matroska file cut short still declares its full duration, hence 20 frames, but only about
// the first 12 can be decoded: the frames sampled before the end come back, in order.
TEST_F(DecodeVideoTest, StreamEndingBeforeItsDeclaredCountYieldsTheFramesBeforeTheEnd) {
  std::string bytes = MakeVideo("clip.mkv", "MJPG", kVideoFrames);
  bytes.resize(bytes.size() * 6 / 10);
  auto frames = DecodeVideo(bytes, 8);
  ASSERT_TRUE(frames.ok()) << frames.status();
  const std::vector<int> all = {0, 2, 5, 8, 10, 13, 16, 19};
  const std::vector<int> got = SourceFrames(*frames);
  ASSERT_GE(got.size(), 1u);
  ASSERT_LT(got.size(), all.size());
  EXPECT_EQ(got, std::vector<int>(all.begin(), all.begin() + got.size()));
}

// Turns the Matroska Duration element (ID 0x4489) into a Void element (ID 0xEC) of the same total
// length, as a muxer writing to a pipe leaves it: OpenCV then reports no usable frame count.
std::string WithoutMatroskaDuration(std::string mkv) {
  const size_t at = mkv.find(std::string("\x44\x89", 2));
  EXPECT_NE(at, std::string::npos);
  if (at == std::string::npos) return mkv;
  const int payload = static_cast<uint8_t>(mkv[at + 2]) & 0x7F;  // 1-byte size: 0x80 | length
  EXPECT_TRUE(static_cast<uint8_t>(mkv[at + 2]) & 0x80);
  mkv[at] = '\xEC';
  mkv[at + 1] = static_cast<char>(0x80 | (payload + 1));
  return mkv;
}

TEST_F(DecodeVideoTest, UnknownFrameCountIsCountedThenSampled) {
  const std::string bytes = WithoutMatroskaDuration(MakeVideo("clip.mkv", "MJPG", kVideoFrames));
  auto frames = DecodeVideo(bytes, 8);
  ASSERT_TRUE(frames.ok()) << frames.status();
  EXPECT_EQ(SourceFrames(*frames), (std::vector<int>{0, 2, 5, 8, 10, 13, 16, 19}));
}

TEST_F(DecodeVideoTest, NumFramesOutsideOneToMaxFramesIsInvalidArgument) {
  const std::string bytes = MakeVideo("clip.avi", "MJPG", 3);
  MediaLimits limits;
  limits.max_frames = 16;
  for (int n : {0, -1, 17}) {
    auto frames = DecodeVideo(bytes, n, limits);
    ASSERT_EQ(frames.status().code(), absl::StatusCode::kInvalidArgument) << n;
    EXPECT_TRUE(MessageHas(frames.status(), "num_frames is " + std::to_string(n)));
    EXPECT_TRUE(MessageHas(frames.status(), "(16)"));
  }
  EXPECT_TRUE(DecodeVideo(bytes, 16, limits).ok());
}

TEST_F(DecodeVideoTest, EmptyAndGarbageBytesAreInvalidArgument) {
  auto empty = DecodeVideo("", 4);
  ASSERT_EQ(empty.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(empty.status().message(), "video is empty");
  auto garbage = DecodeVideo(std::string(5000, 'x'), 4);
  ASSERT_EQ(garbage.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(MessageHas(garbage.status(), "could not decode the video"));
}

// Passes the container check (an AVI signature), then FFmpeg must refuse it.
TEST_F(DecodeVideoTest, CorruptContainerIsInvalidArgument) {
  std::string bytes = "RIFF" + std::string("\x10\x27\x00\x00", 4) + "AVI LIST";
  bytes += std::string(10000, '\x5a');
  auto frames = DecodeVideo(bytes, 4);
  ASSERT_EQ(frames.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(MessageHas(frames.status(), "could not decode the video"));
}

// OpenCV's MP4 writer puts the index (moov) at the end, so the first half holds no usable index.
TEST_F(DecodeVideoTest, TruncatedMp4IsInvalidArgument) {
  std::string bytes = MakeVideo("clip.mp4", "mp4v", kVideoFrames);
  bytes.resize(bytes.size() / 2);
  auto frames = DecodeVideo(bytes, 4);
  ASSERT_EQ(frames.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(MessageHas(frames.status(), "could not decode the video"));
}

// A playlist would make FFmpeg open other files or URLs; it never reaches FFmpeg.
TEST_F(DecodeVideoTest, PlaylistIsRefusedAsUnsupportedContainer) {
  auto frames = DecodeVideo("#EXTM3U\n#EXTINF:10,\nfile:///etc/passwd\n", 4);
  ASSERT_EQ(frames.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(MessageHas(frames.status(), "not an MP4, MOV, AVI, WebM"));
}

TEST_F(DecodeVideoTest, OversizeBytesAndFramesAreInvalidArgument) {
  const std::string bytes = MakeVideo("clip.avi", "MJPG", 3);
  MediaLimits small_bytes;
  small_bytes.max_bytes = 100;
  auto a = DecodeVideo(bytes, 2, small_bytes);
  ASSERT_EQ(a.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(MessageHas(a.status(), "more than the limit of 100 bytes"));

  MediaLimits small_frames;
  small_frames.max_pixels = 64 * 48 - 1;
  auto b = DecodeVideo(bytes, 2, small_frames);
  ASSERT_EQ(b.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(MessageHas(b.status(), "64x48 pixels, more than the limit"));
}

TEST_F(DecodeVideoTest, LeavesNoTemporaryFileBehind) {
  const std::string good = MakeVideo("clip.mp4", "mp4v", kVideoFrames);
  std::string truncated = good.substr(0, good.size() / 2);
  ScopedTempDir tmp;
  ScopedTmpdir redirect(tmp.path());
  ASSERT_TRUE(DecodeVideo(good, 8).ok());
  ASSERT_FALSE(DecodeVideo(truncated, 8).ok());
  MediaLimits small_frames;
  small_frames.max_pixels = 10;
  ASSERT_FALSE(DecodeVideo(good, 8, small_frames).ok());
  EXPECT_EQ(tmp.CountWithPrefix("vlcache-video-"), 0);
  EXPECT_TRUE(tmp.List().empty());
}

// The temporary file goes to $TMPDIR: pointing it at a missing directory makes decoding fail.
TEST_F(DecodeVideoTest, TemporaryFileGoesToTmpdir) {
  const std::string bytes = MakeVideo("clip.avi", "MJPG", 3);
  ScopedTmpdir redirect(dir_.path() + "/does-not-exist");
  auto frames = DecodeVideo(bytes, 2);
  ASSERT_FALSE(frames.ok());
  EXPECT_TRUE(MessageHas(frames.status(), dir_.path() + "/does-not-exist/vlcache-video-"));
}

// ---------------------------------------------------------------------------------------------
// Resizing

RgbImage LoadPng(const std::string& path) {
  auto bytes = ReadFileBytes(path, 1 << 20);
  EXPECT_TRUE(bytes.ok()) << bytes.status();
  if (!bytes.ok()) return {};
  auto img = DecodeImage(*bytes);
  EXPECT_TRUE(img.ok()) << path << ": " << img.status();
  return img.ok() ? *img : RgbImage{};
}

struct FixtureLine {
  std::string kind;
  std::vector<std::string> fields;
};

std::vector<FixtureLine> ReadCases(const std::string& kind) {
  std::ifstream in(FixtureDir() + "/cases.txt");
  EXPECT_TRUE(in.good()) << "missing " << FixtureDir() << "/cases.txt";
  std::vector<FixtureLine> lines;
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    std::istringstream words(line);
    FixtureLine l;
    words >> l.kind;
    for (std::string w; words >> w;) l.fields.push_back(w);
    if (l.kind == kind) lines.push_back(l);
  }
  return lines;
}

TEST(ResizeBicubicPil, MatchesPillowBitForBit) {
  const std::vector<FixtureLine> cases = ReadCases("resize");
  ASSERT_GE(cases.size(), 10u);
  for (const FixtureLine& c : cases) {
    SCOPED_TRACE(c.fields[1]);
    ASSERT_EQ(c.fields.size(), 4u);
    const RgbImage in = LoadPng(FixtureDir() + "/" + c.fields[0]);
    const RgbImage expected = LoadPng(FixtureDir() + "/" + c.fields[1]);
    const int width = std::stoi(c.fields[2]);
    const int height = std::stoi(c.fields[3]);
    ASSERT_EQ(expected.width, width);
    ASSERT_EQ(expected.height, height);
    const RgbImage out = ResizeBicubicPil(in, width, height);
    ASSERT_EQ(out.width, width);
    ASSERT_EQ(out.height, height);
    ASSERT_EQ(out.data.size(), expected.data.size());
    int max_diff = 0;
    size_t differing = 0;
    for (size_t i = 0; i < out.data.size(); ++i) {
      const int d = std::abs(int{out.data[i]} - int{expected.data[i]});
      max_diff = std::max(max_diff, d);
      differing += d != 0;
    }
    EXPECT_EQ(max_diff, 0) << differing << " of " << out.data.size() << " values differ";
  }
}

RgbImage Filled(int width, int height, uint8_t r, uint8_t g, uint8_t b) {
  RgbImage img;
  img.width = width;
  img.height = height;
  for (int i = 0; i < width * height; ++i) img.data.insert(img.data.end(), {r, g, b});
  return img;
}

// The weights of every output pixel sum to one, so a flat image stays flat at any scale.
TEST(ResizeBicubicPil, FlatImageStaysFlatWhenShrinkingAndEnlarging) {
  const RgbImage flat = Filled(23, 17, 200, 7, 131);
  for (auto [w, h] : {std::pair{5, 4}, std::pair{61, 40}, std::pair{23, 3}, std::pair{9, 17}}) {
    const RgbImage out = ResizeBicubicPil(flat, w, h);
    ASSERT_EQ(out.data.size(), static_cast<size_t>(w) * h * 3);
    for (int y = 0; y < h; ++y) {
      for (int x = 0; x < w; ++x) {
        ASSERT_EQ(PixelAt(out, x, y), (std::array<int, 3>{200, 7, 131})) << w << "x" << h;
      }
    }
  }
}

TEST(ResizeBicubicPil, SameSizeReturnsTheImageUnchanged) {
  RgbImage img = Filled(3, 2, 0, 0, 0);
  for (size_t i = 0; i < img.data.size(); ++i) img.data[i] = static_cast<uint8_t>(i * 13);
  const RgbImage out = ResizeBicubicPil(img, 3, 2);
  EXPECT_EQ(out.width, 3);
  EXPECT_EQ(out.height, 2);
  EXPECT_EQ(out.data, img.data);
}

TEST(ResizeBicubicPil, EmptyInputOrTargetGivesEmptyImage) {
  EXPECT_TRUE(ResizeBicubicPil(RgbImage{}, 4, 4).data.empty());
  EXPECT_TRUE(ResizeBicubicPil(Filled(2, 2, 1, 2, 3), 0, 4).data.empty());
}

// ---------------------------------------------------------------------------------------------
// Preprocessing

PreprocessorConfig RawPixels() {
  PreprocessorConfig cfg;
  cfg.do_resize = false;
  cfg.do_center_crop = false;
  cfg.do_rescale = false;
  cfg.do_normalize = false;
  return cfg;
}

TEST(PreprocessImages, MatchesClipImageProcessorReference) {
  const std::vector<FixtureLine> cases = ReadCases("clip");
  ASSERT_EQ(cases.size(), 1u);
  const std::vector<std::string>& f = cases[0].fields;
  ASSERT_EQ(f.size(), 5u);
  PreprocessorConfig cfg;  // CLIP's defaults, at the fixture's smaller size
  cfg.shortest_edge = std::stoi(f[2]);
  cfg.crop_height = std::stoi(f[3]);
  cfg.crop_width = std::stoi(f[4]);
  const RgbImage img = LoadPng(FixtureDir() + "/" + f[0]);

  auto pixels = PreprocessImages({img}, cfg);
  ASSERT_TRUE(pixels.ok()) << pixels.status();
  ASSERT_EQ(pixels->sizes().vec(), (std::vector<int64_t>{1, 3, cfg.crop_height, cfg.crop_width}));
  ASSERT_EQ(pixels->scalar_type(), at::kFloat);

  const std::string raw = ReadAll(FixtureDir() + "/" + f[1]);
  ASSERT_EQ(raw.size(), static_cast<size_t>(pixels->numel()) * sizeof(float));
  std::vector<float> expected(pixels->numel());
  std::memcpy(expected.data(), raw.data(), raw.size());  // little-endian, as this machine
  const float* got = pixels->data_ptr<float>();
  double max_diff = 0;
  for (size_t i = 0; i < expected.size(); ++i) {
    max_diff = std::max(max_diff, std::abs(double{got[i]} - double{expected[i]}));
  }
  EXPECT_LT(max_diff, 1e-5);
  RecordProperty("max_abs_diff", std::to_string(max_diff));
}

// 4x2 RGB image; values/255 are multiples of 0.2, so the expected values are exact decimals.
TEST(PreprocessImages, RescaleAndNormaliseMatchHandComputedValues) {
  RgbImage img;
  img.width = 4;
  img.height = 2;
  img.data = {0,   0,  0, 255, 255, 255, 51,  102, 153, 204, 0,   255,   // row 0
              102, 51, 0, 153, 204, 51,  255, 0,   102, 0,   255, 204};  // row 1
  PreprocessorConfig cfg = RawPixels();
  cfg.do_rescale = true;
  cfg.do_normalize = true;
  cfg.image_mean = {0.5, 0.25, 0.0};
  cfg.image_std = {0.5, 0.25, 1.0};
  // R: (v - 0.5) / 0.5 = 2v - 1; G: (v - 0.25) / 0.25 = 4v - 1; B: v.
  const std::vector<float> expected = {
      -1.0f, 1.0f, -0.6f, 0.6f,  -0.2f, 0.2f, 1.0f,  -1.0f,  // R plane, rows 0 and 1
      -1.0f, 3.0f, 0.6f,  -1.0f, -0.2f, 2.2f, -1.0f, 3.0f,   // G plane
      0.0f,  1.0f, 0.6f,  1.0f,  0.0f,  0.2f, 0.4f,  0.8f,   // B plane
  };
  auto pixels = PreprocessImages({img}, cfg);
  ASSERT_TRUE(pixels.ok()) << pixels.status();
  ASSERT_EQ(pixels->sizes().vec(), (std::vector<int64_t>{1, 3, 2, 4}));
  const float* got = pixels->data_ptr<float>();
  for (size_t i = 0; i < expected.size(); ++i) EXPECT_NEAR(got[i], expected[i], 1e-6) << i;
}

// A 7x5 image whose red is 10 x and green 10 y; a 3-wide, 2-high crop starts at
// left = (7 - 3) // 2 = 2, top = (5 - 2) // 2 = 1.
TEST(PreprocessImages, CentreCropOfOddSizeImageUsesFloorOffsets) {
  RgbImage img = Filled(7, 5, 0, 0, 0);
  for (int y = 0; y < 5; ++y) {
    for (int x = 0; x < 7; ++x) {
      img.data[(y * 7 + x) * 3 + 0] = static_cast<uint8_t>(10 * x);
      img.data[(y * 7 + x) * 3 + 1] = static_cast<uint8_t>(10 * y);
    }
  }
  PreprocessorConfig cfg = RawPixels();
  cfg.do_center_crop = true;
  cfg.crop_height = 2;
  cfg.crop_width = 3;
  auto pixels = PreprocessImages({img}, cfg);
  ASSERT_TRUE(pixels.ok()) << pixels.status();
  ASSERT_EQ(pixels->sizes().vec(), (std::vector<int64_t>{1, 3, 2, 3}));
  auto a = pixels->accessor<float, 4>();
  for (int y = 0; y < 2; ++y) {
    for (int x = 0; x < 3; ++x) {
      EXPECT_EQ(a[0][0][y][x], 10.0f * (x + 2)) << x << "," << y;
      EXPECT_EQ(a[0][1][y][x], 10.0f * (y + 1)) << x << "," << y;
    }
  }
}

// transformers pads a too-small image with zeros, ceil(excess / 2) before it: a 2x1 image in a
// 5-wide, 4-high crop lands at columns 2..3 of row 2.
TEST(PreprocessImages, CropLargerThanImagePadsWithZerosLikeTransformers) {
  RgbImage img = Filled(2, 1, 200, 201, 202);
  img.data[3] = 210;  // second pixel's red
  PreprocessorConfig cfg = RawPixels();
  cfg.do_center_crop = true;
  cfg.crop_height = 4;
  cfg.crop_width = 5;
  auto pixels = PreprocessImages({img}, cfg);
  ASSERT_TRUE(pixels.ok()) << pixels.status();
  auto a = pixels->accessor<float, 4>();
  for (int y = 0; y < 4; ++y) {
    for (int x = 0; x < 5; ++x) {
      float want = 0.0f;
      if (y == 2 && x == 2) want = 200.0f;
      if (y == 2 && x == 3) want = 210.0f;
      EXPECT_EQ(a[0][0][y][x], want) << x << "," << y;
    }
  }
  EXPECT_EQ(a[0][2][2][3], 202.0f);
}

// transformers truncates the long side: int(64 * 127 / 83) = int(97.93) = 97.
TEST(PreprocessImages, ShortestEdgeResizeTruncatesTheLongSide) {
  PreprocessorConfig cfg = RawPixels();
  cfg.do_resize = true;
  cfg.shortest_edge = 64;
  auto landscape = PreprocessImages({Filled(127, 83, 1, 2, 3)}, cfg);
  ASSERT_TRUE(landscape.ok()) << landscape.status();
  EXPECT_EQ(landscape->sizes().vec(), (std::vector<int64_t>{1, 3, 64, 97}));
  auto portrait = PreprocessImages({Filled(83, 127, 1, 2, 3)}, cfg);
  ASSERT_TRUE(portrait.ok()) << portrait.status();
  EXPECT_EQ(portrait->sizes().vec(), (std::vector<int64_t>{1, 3, 97, 64}));
}

TEST(PreprocessImages, BatchKeepsImagesInOrder) {
  PreprocessorConfig cfg = RawPixels();
  cfg.do_resize = true;
  cfg.shortest_edge = 8;
  cfg.do_center_crop = true;
  cfg.crop_height = 8;
  cfg.crop_width = 8;
  auto pixels = PreprocessImages({Filled(10, 20, 11, 0, 0), Filled(30, 12, 22, 0, 0)}, cfg);
  ASSERT_TRUE(pixels.ok()) << pixels.status();
  ASSERT_EQ(pixels->sizes().vec(), (std::vector<int64_t>{2, 3, 8, 8}));
  auto a = pixels->accessor<float, 4>();
  EXPECT_EQ(a[0][0][4][4], 11.0f);
  EXPECT_EQ(a[1][0][4][4], 22.0f);
}

TEST(PreprocessImages, ImagesEndingAtDifferentSizesAreInvalidArgument) {
  PreprocessorConfig cfg = RawPixels();
  auto pixels = PreprocessImages({Filled(4, 4, 0, 0, 0), Filled(4, 5, 0, 0, 0)}, cfg);
  ASSERT_EQ(pixels.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(MessageHas(pixels.status(), "same size"));
}

TEST(PreprocessImages, EmptyListAndMalformedImageAreInvalidArgument) {
  EXPECT_EQ(PreprocessImages({}, PreprocessorConfig{}).status().code(),
            absl::StatusCode::kInvalidArgument);
  RgbImage bad = Filled(4, 4, 0, 0, 0);
  bad.data.pop_back();
  auto pixels = PreprocessImages({bad}, PreprocessorConfig{});
  ASSERT_EQ(pixels.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(MessageHas(pixels.status(), "image 0 is malformed"));
}

// A 1 x 20000 strip is a legal image, but its short side scaled to 224 would be 4.5 M wide.
TEST(PreprocessImages, ExtremeAspectRatioIsRefusedBeforeResizing) {
  auto pixels = PreprocessImages({Filled(1, 20000, 0, 0, 0)}, PreprocessorConfig{});
  ASSERT_EQ(pixels.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(MessageHas(pixels.status(), "too large"));
}

// ---------------------------------------------------------------------------------------------
// Files

TEST(ReadFileBytes, MissingFileIsNotFoundNamingThePath) {
  auto bytes = ReadFileBytes("/nonexistent/vlcache/file.png", 100);
  ASSERT_EQ(bytes.status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(bytes.status().message(), "no such file: /nonexistent/vlcache/file.png");
}

TEST(ReadFileBytes, ReadsWholeFileAndRefusesOneOverTheLimit) {
  ScopedTempDir dir;
  const std::string path = dir.path() + "/data.bin";
  const std::string content("abc\0def\xff", 8);
  std::ofstream(path, std::ios::binary) << content;
  auto exact = ReadFileBytes(path, 8);
  ASSERT_TRUE(exact.ok()) << exact.status();
  EXPECT_EQ(*exact, content);
  auto over = ReadFileBytes(path, 7);
  ASSERT_EQ(over.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(over.status().message(), path + " is 8 bytes, more than the limit of 7 bytes");
}

TEST(ReadFileBytes, DirectoryIsInvalidArgument) {
  ScopedTempDir dir;
  EXPECT_EQ(ReadFileBytes(dir.path(), 100).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace vlc::engine
