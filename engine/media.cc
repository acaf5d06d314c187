// Decoding (OpenCV) and CLIP preprocessing. Everything here takes bytes from outside, so every
// size is checked before it is trusted: encoded bytes before decoding, header dimensions before
// allocating pixels where the format allows, and OpenCV's exceptions become INVALID_ARGUMENT.
#include "engine/media.h"

#include <ATen/ops/empty.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <climits>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <new>
#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>
#include <opencv2/videoio.hpp>
#include <optional>
#include <string_view>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/status.h"

namespace vlc::engine {
namespace {

constexpr char kUndecodableImage[] =
    "could not decode the image: not a PNG, JPEG, WebP or BMP file, or corrupt";
constexpr char kUnsupportedVideo[] =
    "could not decode the video: not an MP4, MOV, AVI, WebM or MKV file";
constexpr char kUnopenableVideo[] =
    "could not decode the video: FFmpeg cannot open it (corrupt or truncated?)";

// A video whose container does not say how many frames it has is counted frame by frame; this
// bounds that pass (about an hour at 25 fps).
constexpr int64_t kMaxCountedFrames = 100000;

// The largest image PreprocessImages builds on the way (after the shortest-edge resize, or a
// configured crop): the decoder's default pixel limit, so a legal but extremely thin image (say
// 1 x 30000) cannot turn into a gigantic one when its short side is scaled up.
constexpr int64_t kMaxPreprocessedPixels = MediaLimits{}.max_pixels;

absl::Status CheckEncodedSize(size_t size, const MediaLimits& limits, const char* what) {
  if (size == 0) return absl::InvalidArgumentError(absl::StrCat(what, " is empty"));
  if (static_cast<uint64_t>(size) > static_cast<uint64_t>(std::max<int64_t>(limits.max_bytes, 0))) {
    return absl::InvalidArgumentError(absl::StrCat(
        what, " is ", size, " bytes, more than the limit of ", limits.max_bytes, " bytes"));
  }
  return absl::OkStatus();
}

absl::Status CheckPixelCount(int64_t width, int64_t height, const MediaLimits& limits,
                             const char* what) {
  // Header fields reach 2^32 each, so compare by division rather than forming the product.
  if (width > 0 && height > 0 && height > limits.max_pixels / width) {
    return absl::InvalidArgumentError(absl::StrCat(what, " is ", width, "x", height,
                                                   " pixels, more than the limit of ",
                                                   limits.max_pixels, " pixels"));
  }
  return absl::OkStatus();
}

// OpenCV reports malformed input by throwing. Its exception text carries a source location;
// `err` alone says what was wrong, which is what the caller of a media API can act on.
template <typename Fn>
absl::Status GuardOpenCv(const char* what, Fn&& fn) {
  try {
    return fn();
  } catch (const cv::Exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": ", e.err));
  } catch (const std::bad_alloc&) {
    return absl::ResourceExhaustedError(absl::StrCat(what, ": out of memory"));
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat(what, ": ", e.what()));
  }
}

uint32_t ReadBe16(std::string_view b, size_t at) {
  return (uint32_t{static_cast<uint8_t>(b[at])} << 8) | static_cast<uint8_t>(b[at + 1]);
}
uint32_t ReadBe32(std::string_view b, size_t at) {
  return (ReadBe16(b, at) << 16) | ReadBe16(b, at + 2);
}
uint32_t ReadLe(std::string_view b, size_t at, int n) {
  uint32_t v = 0;
  for (int i = n - 1; i >= 0; --i) v = (v << 8) | static_cast<uint8_t>(b[at + i]);
  return v;
}

struct Dimensions {
  int64_t width;
  int64_t height;
};

// JPEG keeps its size in the first start-of-frame segment, after any number of APPn/DQT/...
// segments; walk the segment lengths to reach it.
std::optional<Dimensions> PeekJpegSize(std::string_view b) {
  size_t pos = 2;  // after SOI
  while (pos + 4 <= b.size()) {
    if (static_cast<uint8_t>(b[pos]) != 0xFF) return std::nullopt;
    const uint8_t marker = static_cast<uint8_t>(b[pos + 1]);
    if (marker == 0xFF) {  // fill byte
      ++pos;
      continue;
    }
    // Markers without a length field: TEM, RSTn, SOI, EOI.
    if (marker == 0x01 || (marker >= 0xD0 && marker <= 0xD9)) {
      pos += 2;
      continue;
    }
    const size_t length = ReadBe16(b, pos + 2);
    // SOF0..SOF15, except DHT (C4), JPG (C8) and DAC (CC) which share the range.
    if (marker >= 0xC0 && marker <= 0xCF && marker != 0xC4 && marker != 0xC8 && marker != 0xCC) {
      if (pos + 9 > b.size()) return std::nullopt;
      return Dimensions{ReadBe16(b, pos + 7), ReadBe16(b, pos + 5)};
    }
    if (marker == 0xDA || length < 2) return std::nullopt;  // entropy-coded data: give up
    pos += 2 + length;
  }
  return std::nullopt;
}

// The dimensions an image header declares, read without decoding, so that a small file that
// claims a huge canvas (a decompression bomb) is refused before its pixels are allocated. Formats
// or headers this does not understand return nullopt; the decoded size is checked again anyway.
std::optional<Dimensions> PeekImageSize(std::string_view b) {
  if (b.size() >= 24 && b.substr(0, 8) == std::string_view("\x89PNG\r\n\x1a\n", 8) &&
      b.substr(12, 4) == "IHDR") {
    return Dimensions{ReadBe32(b, 16), ReadBe32(b, 20)};
  }
  if (b.size() >= 4 && static_cast<uint8_t>(b[0]) == 0xFF && static_cast<uint8_t>(b[1]) == 0xD8) {
    return PeekJpegSize(b);
  }
  if (b.size() >= 26 && b.substr(0, 2) == "BM") {
    const uint32_t header_size = ReadLe(b, 14, 4);
    if (header_size == 12) return Dimensions{ReadLe(b, 18, 2), ReadLe(b, 20, 2)};
    // Height is signed: negative means rows stored top-down.
    const int64_t height = static_cast<int32_t>(ReadLe(b, 22, 4));
    return Dimensions{static_cast<int32_t>(ReadLe(b, 18, 4)), height < 0 ? -height : height};
  }
  if (b.size() >= 30 && b.substr(0, 4) == "RIFF" && b.substr(8, 4) == "WEBP") {
    const std::string_view chunk = b.substr(12, 4);
    if (chunk == "VP8 " && b.substr(23, 3) == "\x9d\x01\x2a") {
      // Lossy: 14-bit sizes after the 3-byte frame tag and the start code.
      return Dimensions{ReadLe(b, 26, 2) & 0x3FFF, ReadLe(b, 28, 2) & 0x3FFF};
    }
    if (chunk == "VP8L") {  // lossless: 14-bit (size - 1) fields after a signature byte
      const uint32_t bits = ReadLe(b, 21, 4);
      return Dimensions{(bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1};
    }
    if (chunk == "VP8X") {  // extended: 24-bit (canvas size - 1) fields
      return Dimensions{ReadLe(b, 24, 3) + 1, ReadLe(b, 27, 3) + 1};
    }
  }
  return std::nullopt;
}

// OpenCV decodes to BGR (or grey/BGRA from video backends that do not convert); the model wants
// RGB in one contiguous HWC buffer.
absl::StatusOr<RgbImage> MatToRgb(const cv::Mat& m) {
  if (m.depth() != CV_8U) {
    return absl::InvalidArgumentError(
        absl::StrCat("unsupported pixel depth ", m.depth(), " (only 8-bit is supported)"));
  }
  cv::Mat rgb;
  switch (m.channels()) {
    case 1:
      cv::cvtColor(m, rgb, cv::COLOR_GRAY2RGB);
      break;
    case 3:
      cv::cvtColor(m, rgb, cv::COLOR_BGR2RGB);
      break;
    case 4:
      cv::cvtColor(m, rgb, cv::COLOR_BGRA2RGB);
      break;
    default:
      return absl::InvalidArgumentError(absl::StrCat("unsupported channel count ", m.channels()));
  }
  RgbImage out;
  out.width = rgb.cols;
  out.height = rgb.rows;
  out.data.resize(static_cast<size_t>(rgb.cols) * rgb.rows * 3);
  const size_t row_bytes = static_cast<size_t>(rgb.cols) * 3;
  for (int y = 0; y < rgb.rows; ++y) {
    std::memcpy(&out.data[y * row_bytes], rgb.ptr<uint8_t>(y), row_bytes);
  }
  return out;
}

// FFmpeg opens whatever it recognises, including playlists and concat scripts that name other
// files or URLs; only self-contained container formats, recognised by their magic bytes, are
// handed to it. (MP4/MOV external data references stay off: FFmpeg's mov demuxer ignores them
// unless enable_drefs is set.)
bool LooksLikeSupportedContainer(std::string_view b) {
  if (b.size() < 12) return false;
  const std::string_view box = b.substr(4, 4);  // ISO BMFF / QuickTime: size, then box type
  if (box == "ftyp" || box == "moov" || box == "mdat" || box == "free" || box == "wide" ||
      box == "skip") {
    return true;
  }
  if (b.substr(0, 4) == "RIFF" && b.substr(8, 4) == "AVI ") return true;
  return b.substr(0, 4) == "\x1A\x45\xDF\xA3";  // EBML: Matroska and WebM
}

// A private temporary file holding the encoded video, removed when this goes out of scope,
// whatever happened in between. OpenCV 4.6 cannot read a video from memory.
class TempVideoFile {
 public:
  TempVideoFile() = default;
  TempVideoFile(const TempVideoFile&) = delete;
  TempVideoFile& operator=(const TempVideoFile&) = delete;
  ~TempVideoFile() {
    if (!path_.empty()) unlink(path_.c_str());
  }

  const std::string& path() const { return path_; }

  absl::Status Write(std::string_view bytes) {
    const char* tmpdir = std::getenv("TMPDIR");
    std::string name = absl::StrCat(tmpdir != nullptr && *tmpdir != '\0' ? tmpdir : "/tmp",
                                    "/vlcache-video-XXXXXX");
    // mkostemp creates the file with mode 0600 and O_EXCL, so no other user can read or swap
    // it; O_CLOEXEC keeps it out of child processes.
    const int fd = mkostemp(name.data(), O_CLOEXEC);
    if (fd < 0) {
      return absl::InternalError(
          absl::StrCat("could not create a temporary file ", name, ": ", std::strerror(errno)));
    }
    path_ = name;  // from here on the destructor removes it, also on the error paths below
    size_t done = 0;
    while (done < bytes.size()) {
      const ssize_t n = write(fd, bytes.data() + done, bytes.size() - done);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        const int err = errno;
        close(fd);
        return absl::InternalError(
            absl::StrCat("could not write the temporary file ", path_, ": ", std::strerror(err)));
      }
      done += static_cast<size_t>(n);
    }
    if (close(fd) != 0) {
      return absl::InternalError(
          absl::StrCat("could not write the temporary file ", path_, ": ", std::strerror(errno)));
    }
    return absl::OkStatus();
  }

 private:
  std::string path_;
};

absl::Status OpenVideo(const std::string& path, const MediaLimits& limits, cv::VideoCapture& cap) {
  if (!cap.open(path, cv::CAP_FFMPEG) || !cap.isOpened()) {
    return absl::InvalidArgumentError(kUnopenableVideo);
  }
  // Refuse oversized frames before decoding any of them, when the stream declares its size.
  const double width = cap.get(cv::CAP_PROP_FRAME_WIDTH);
  const double height = cap.get(cv::CAP_PROP_FRAME_HEIGHT);
  if (width > 0 && height > 0 && width < 1e9 && height < 1e9) {
    VLC_RETURN_IF_ERROR(CheckPixelCount(static_cast<int64_t>(width), static_cast<int64_t>(height),
                                        limits, "video frame"));
  }
  return absl::OkStatus();
}

// numpy.linspace(0, n - 1, count).astype(int) without repeats (a video shorter than `count`
// yields each of its frames once). numpy computes i * step and pins the last value to the stop.
std::vector<int64_t> SampleIndices(int64_t n, int count) {
  if (count == 1) return {0};
  std::vector<int64_t> indices;
  const double step = static_cast<double>(n - 1) / (count - 1);
  for (int i = 0; i < count - 1; ++i) indices.push_back(static_cast<int64_t>(i * step));
  indices.push_back(n - 1);
  indices.erase(std::unique(indices.begin(), indices.end()), indices.end());
  return indices;
}

// Reads the frames at ascending `indices` in one forward pass: grab() decodes and discards,
// retrieve() converts only the chosen frames. Seeking is avoided: FFmpeg seeks to keyframes and
// OpenCV's frame-accurate emulation is slow and inexact across containers. A stream that ends
// early (its container overstated the count) leaves `frames` with what was read.
absl::Status ReadFramesInOrder(cv::VideoCapture& cap, const std::vector<int64_t>& indices,
                               const MediaLimits& limits, std::vector<RgbImage>* frames) {
  int64_t position = 0;  // index of the frame the next grab() decodes
  for (const int64_t target : indices) {
    for (; position < target; ++position) {
      if (!cap.grab()) return absl::OkStatus();
    }
    if (!cap.grab()) return absl::OkStatus();
    ++position;
    cv::Mat frame;
    if (!cap.retrieve(frame) || frame.empty()) return absl::OkStatus();
    VLC_RETURN_IF_ERROR(CheckPixelCount(frame.cols, frame.rows, limits, "video frame"));
    VLC_ASSIGN_OR_RETURN(RgbImage rgb, MatToRgb(frame));
    frames->push_back(std::move(rgb));
  }
  return absl::OkStatus();
}

// Frames in a stream whose container has no usable count: decode (without converting) to the
// end. The caller reopens the file for the sampling pass, so no frame is held in memory here.
absl::StatusOr<int64_t> CountFrames(cv::VideoCapture& cap) {
  int64_t n = 0;
  while (cap.grab()) {
    if (++n > kMaxCountedFrames) {
      return absl::InvalidArgumentError(
          absl::StrCat("could not decode the video: it has more than ", kMaxCountedFrames,
                       " frames and its container does not say how many"));
    }
  }
  return n;
}

int64_t FloorDiv2(int64_t v) { return v >= 0 ? v / 2 : -((-v + 1) / 2); }

absl::Status ValidateConfig(const PreprocessorConfig& cfg) {
  if (cfg.do_resize && cfg.shortest_edge < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("preprocessor shortest_edge must be positive, got ", cfg.shortest_edge));
  }
  if (cfg.do_center_crop) {
    if (cfg.crop_height < 1 || cfg.crop_width < 1) {
      return absl::InvalidArgumentError(absl::StrCat(
          "preprocessor crop size must be positive, got ", cfg.crop_height, "x", cfg.crop_width));
    }
    if (int64_t{cfg.crop_height} * cfg.crop_width > kMaxPreprocessedPixels) {
      return absl::InvalidArgumentError(absl::StrCat("preprocessor crop size ", cfg.crop_height,
                                                     "x", cfg.crop_width, " is too large"));
    }
  }
  if (cfg.do_rescale && !std::isfinite(cfg.rescale_factor)) {
    return absl::InvalidArgumentError("preprocessor rescale_factor must be finite");
  }
  if (cfg.do_normalize) {
    for (int c = 0; c < 3; ++c) {
      if (!std::isfinite(cfg.image_mean[c]) || !std::isfinite(cfg.image_std[c]) ||
          cfg.image_std[c] == 0.0) {
        return absl::InvalidArgumentError(
            "preprocessor image_mean must be finite and image_std finite and non-zero");
      }
    }
  }
  return absl::OkStatus();
}

struct Size {
  int width;
  int height;
};

// transformers' get_resize_output_image_size(size=shortest_edge, default_to_square=False): the
// short side becomes `shortest_edge`, the long side int(shortest_edge * long / short), truncated.
absl::StatusOr<Size> ShortestEdgeSize(int width, int height, int shortest_edge) {
  const int64_t short_side = std::min(width, height);
  const int64_t long_side = std::max(width, height);
  const auto new_long = static_cast<int64_t>(
      static_cast<double>(int64_t{shortest_edge} * long_side) / static_cast<double>(short_side));
  if (new_long > kMaxPreprocessedPixels / shortest_edge) {
    return absl::InvalidArgumentError(
        absl::StrCat("image is ", width, "x", height, "; resizing its shortest edge to ",
                     shortest_edge, " would make it ", new_long, " pixels long, too large"));
  }
  if (width <= height) return Size{shortest_edge, static_cast<int>(new_long)};
  return Size{static_cast<int>(new_long), shortest_edge};
}

}  // namespace

absl::StatusOr<RgbImage> DecodeImage(const std::string& bytes, const MediaLimits& limits) {
  VLC_RETURN_IF_ERROR(CheckEncodedSize(bytes.size(), limits, "image"));
  if (bytes.size() > static_cast<size_t>(INT_MAX)) {  // a cv::Mat row holds at most INT_MAX bytes
    return absl::InvalidArgumentError(absl::StrCat("image is ", bytes.size(), " bytes, too large"));
  }
  if (const std::optional<Dimensions> declared = PeekImageSize(bytes)) {
    VLC_RETURN_IF_ERROR(CheckPixelCount(declared->width, declared->height, limits, "image"));
  }
  RgbImage image;
  VLC_RETURN_IF_ERROR(GuardOpenCv("could not decode the image", [&]() -> absl::Status {
    // imdecode only reads the buffer; the Mat header wraps it without a copy.
    const cv::Mat encoded(1, static_cast<int>(bytes.size()), CV_8UC1,
                          const_cast<char*>(bytes.data()));
    // IMREAD_COLOR: grey becomes three channels, alpha is dropped, 16-bit becomes 8-bit, and
    // JPEG EXIF orientation is applied (as transformers' load_image does with exif_transpose).
    const cv::Mat bgr = cv::imdecode(encoded, cv::IMREAD_COLOR);
    if (bgr.empty()) return absl::InvalidArgumentError(kUndecodableImage);
    VLC_RETURN_IF_ERROR(CheckPixelCount(bgr.cols, bgr.rows, limits, "image"));
    VLC_ASSIGN_OR_RETURN(image, MatToRgb(bgr));
    return absl::OkStatus();
  }));
  return image;
}

absl::StatusOr<std::string> EncodePng(const RgbImage& image) {
  if (image.width <= 0 || image.height <= 0 ||
      image.data.size() != static_cast<size_t>(image.width) * image.height * 3) {
    return absl::InvalidArgumentError(
        absl::StrCat("an RGB image of ", image.width, "x", image.height, " needs ",
                     int64_t{image.width} * image.height * 3, " bytes, got ", image.data.size()));
  }
  std::string out;
  VLC_RETURN_IF_ERROR(GuardOpenCv("could not encode the image", [&]() -> absl::Status {
    const cv::Mat rgb(image.height, image.width, CV_8UC3, const_cast<uint8_t*>(image.data.data()));
    cv::Mat bgr;
    cv::cvtColor(rgb, bgr, cv::COLOR_RGB2BGR);
    std::vector<uint8_t> encoded;
    if (!cv::imencode(".png", bgr, encoded)) return absl::InternalError("PNG encoding failed");
    out.assign(encoded.begin(), encoded.end());
    return absl::OkStatus();
  }));
  return out;
}

absl::StatusOr<std::vector<RgbImage>> DecodeVideo(const std::string& bytes, int num_frames,
                                                  const MediaLimits& limits) {
  if (num_frames < 1 || num_frames > limits.max_frames) {
    return absl::InvalidArgumentError(absl::StrCat("num_frames is ", num_frames,
                                                   "; it must be between 1 and max_frames (",
                                                   limits.max_frames, ")"));
  }
  VLC_RETURN_IF_ERROR(CheckEncodedSize(bytes.size(), limits, "video"));
  if (!LooksLikeSupportedContainer(bytes)) return absl::InvalidArgumentError(kUnsupportedVideo);

  // Outlives the capture below (which closes the file first) and removes the file on every path.
  TempVideoFile file;
  VLC_RETURN_IF_ERROR(file.Write(bytes));

  std::vector<RgbImage> frames;
  VLC_RETURN_IF_ERROR(GuardOpenCv("could not decode the video", [&]() -> absl::Status {
    cv::VideoCapture cap;
    VLC_RETURN_IF_ERROR(OpenVideo(file.path(), limits, cap));
    const double reported = cap.get(cv::CAP_PROP_FRAME_COUNT);
    int64_t count = 0;
    if (std::isfinite(reported) && reported >= 1 && reported < 1e12) {
      count = static_cast<int64_t>(reported);
    } else {
      VLC_ASSIGN_OR_RETURN(count, CountFrames(cap));
      if (count == 0) return absl::InvalidArgumentError("could not decode the video: no frames");
      cap.release();
      VLC_RETURN_IF_ERROR(OpenVideo(file.path(), limits, cap));
    }
    return ReadFramesInOrder(cap, SampleIndices(count, num_frames), limits, &frames);
  }));
  if (frames.empty()) {
    return absl::InvalidArgumentError("could not decode the video: no frame could be decoded");
  }
  return frames;
}

absl::StatusOr<at::Tensor> PreprocessImages(const std::vector<RgbImage>& images,
                                            const PreprocessorConfig& cfg) {
  if (images.empty()) return absl::InvalidArgumentError("no images to preprocess");
  VLC_RETURN_IF_ERROR(ValidateConfig(cfg));

  // First the sizes: every image must end at the same one, and that is known before any pixel
  // work. resized[i] is the size after the (optional) resize.
  std::vector<Size> resized(images.size());
  Size final_size{0, 0};
  for (size_t i = 0; i < images.size(); ++i) {
    const RgbImage& img = images[i];
    if (img.width <= 0 || img.height <= 0 ||
        img.data.size() != static_cast<size_t>(img.width) * img.height * 3) {
      return absl::InvalidArgumentError(absl::StrCat("image ", i, " is malformed: ", img.width, "x",
                                                     img.height, " with ", img.data.size(),
                                                     " bytes of RGB data"));
    }
    resized[i] = Size{img.width, img.height};
    if (cfg.do_resize) {
      VLC_ASSIGN_OR_RETURN(resized[i], ShortestEdgeSize(img.width, img.height, cfg.shortest_edge));
    }
    const Size out = cfg.do_center_crop ? Size{cfg.crop_width, cfg.crop_height} : resized[i];
    if (i == 0) {
      final_size = out;
    } else if (out.width != final_size.width || out.height != final_size.height) {
      return absl::InvalidArgumentError(absl::StrCat(
          "images must all preprocess to the same size: image 0 becomes ", final_size.width, "x",
          final_size.height, ", image ", i, " becomes ", out.width, "x", out.height));
    }
  }

  // Rescale and normalise map each 8-bit value to one float per channel, so a table holds them.
  // The arithmetic is transformers': rescale multiplies in double and stores float32, normalise
  // subtracts and divides in float32.
  std::array<std::array<float, 256>, 3> lut;
  for (int c = 0; c < 3; ++c) {
    const auto mean = static_cast<float>(cfg.image_mean[c]);
    const auto std_dev = static_cast<float>(cfg.image_std[c]);
    for (int v = 0; v < 256; ++v) {
      float x = cfg.do_rescale ? static_cast<float>(v * cfg.rescale_factor) : static_cast<float>(v);
      if (cfg.do_normalize) x = (x - mean) / std_dev;
      lut[c][v] = x;
    }
  }

  const int64_t out_h = final_size.height;
  const int64_t out_w = final_size.width;
  at::Tensor pixels;
  VLC_RETURN_IF_ERROR(CatchAll("allocating pixel values", [&] {
    pixels = at::empty({static_cast<int64_t>(images.size()), 3, out_h, out_w}, at::kFloat);
  }));
  float* out = pixels.data_ptr<float>();
  const int64_t plane = out_h * out_w;

  for (size_t i = 0; i < images.size(); ++i) {
    RgbImage scaled;
    const RgbImage* src = &images[i];
    if (cfg.do_resize) {
      scaled = ResizeBicubicPil(images[i], resized[i].width, resized[i].height);
      src = &scaled;
    }
    // transformers' center_crop: offsets floor((size - crop) / 2); where the crop is larger than
    // the image, the image sits in zero padding (ceil of half the excess before it), which is
    // the same floor offset read outside the image.
    const int64_t top = cfg.do_center_crop ? FloorDiv2(int64_t{src->height} - out_h) : 0;
    const int64_t left = cfg.do_center_crop ? FloorDiv2(int64_t{src->width} - out_w) : 0;
    float* dst = out + static_cast<int64_t>(i) * 3 * plane;
    for (int64_t y = 0; y < out_h; ++y) {
      const int64_t sy = y + top;
      const bool row_inside = sy >= 0 && sy < src->height;
      for (int64_t x = 0; x < out_w; ++x) {
        const int64_t sx = x + left;
        const uint8_t* p = nullptr;
        if (row_inside && sx >= 0 && sx < src->width) {
          p = &src->data[(sy * src->width + sx) * 3];
        }
        for (int c = 0; c < 3; ++c) dst[c * plane + y * out_w + x] = lut[c][p ? p[c] : 0];
      }
    }
  }
  return pixels;
}

absl::StatusOr<std::string> ReadFileBytes(const std::string& path, int64_t max_bytes) {
  struct stat st;
  if (stat(path.c_str(), &st) != 0) {
    if (errno == ENOENT || errno == ENOTDIR) {
      return absl::NotFoundError(absl::StrCat("no such file: ", path));
    }
    return absl::InvalidArgumentError(
        absl::StrCat("cannot read ", path, ": ", std::strerror(errno)));
  }
  if (!S_ISREG(st.st_mode)) {
    return absl::InvalidArgumentError(absl::StrCat("not a regular file: ", path));
  }
  if (st.st_size > max_bytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        path, " is ", st.st_size, " bytes, more than the limit of ", max_bytes, " bytes"));
  }
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (f == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot read ", path, ": ", std::strerror(errno)));
  }
  std::string bytes(static_cast<size_t>(st.st_size), '\0');
  const size_t got = std::fread(bytes.data(), 1, bytes.size(), f);
  // One more byte means the file grew after the size check: refuse rather than read past it.
  char extra;
  const bool grew = got == bytes.size() && std::fread(&extra, 1, 1, f) == 1;
  const bool failed = std::ferror(f) != 0;
  std::fclose(f);
  if (failed) return absl::InvalidArgumentError(absl::StrCat("cannot read ", path));
  if (grew) return absl::InvalidArgumentError(absl::StrCat(path, " changed while being read"));
  bytes.resize(got);
  return bytes;
}

}  // namespace vlc::engine
