// vlcache-vqa: writes items of the synthetic VQA set (tools/vqa/vqa.h) to a directory, e.g.
//   vlcache-vqa --split train --n 1000 --frames 8 --out data/train-f8
// DIR/items.jsonl holds one JSON object per item (ToJson's fields plus "images", the item's PNG
// files in frame order); DIR/<index>_f<k>.png is frame k of item <index>, k counted from 1 as the
// questions count frames.
#include <CLI/CLI.hpp>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <string>
#include <system_error>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "tools/vqa/vqa.h"

namespace {

using namespace vlc::vqa;

// Exit codes: 2 for a command line that cannot work (as CLI11's own errors), 1 for a failure on
// the way (the output directory cannot be written).
constexpr int kUsageError = 2;
constexpr int kRunError = 1;

absl::Status WriteFile(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  out.close();
  if (!out) return absl::InternalError(absl::StrCat("could not write ", path));
  return absl::OkStatus();
}

absl::Status WriteItems(Split split, int64_t start, int64_t n, int frames, const Options& opts,
                        const std::string& dir) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return absl::InternalError(absl::StrCat("could not create ", dir, ": ", ec.message()));
  const std::string jsonl_path = dir + "/items.jsonl";
  std::ofstream jsonl(jsonl_path, std::ios::trunc);
  if (!jsonl) return absl::InternalError(absl::StrCat("could not write ", jsonl_path));
  for (int64_t index = start; index < start + n; ++index) {
    const Item item = MakeItem(split, index, frames, opts);
    nlohmann::json line = ToJson(item);
    nlohmann::json images = nlohmann::json::array();
    for (int f = 0; f < frames; ++f) {
      const std::string name = absl::StrCat(index, "_f", f + 1, ".png");
      const absl::Status s = WriteFile(dir + "/" + name, EncodePng(item.clip.frames[f], opts));
      if (!s.ok()) return s;
      images.push_back(name);
    }
    line["images"] = std::move(images);
    jsonl << line.dump() << "\n";
  }
  jsonl.close();
  if (!jsonl) return absl::InternalError(absl::StrCat("could not write ", jsonl_path));
  return absl::OkStatus();
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "vlcache-vqa: writes a deterministic synthetic visual question-answering set (grids of "
      "coloured shapes and numbered boxes; single images or clips) as PNG files and items.jsonl."};
  std::string split_name, out_dir;
  int64_t n = 0;
  int64_t start = 0;
  int frames = 1;
  Options opts;
  app.add_option("--split", split_name, "which split: train, validation or test")
      ->required()
      ->check(CLI::IsMember({"train", "validation", "test"}));
  app.add_option("--n", n, "number of items")->required()->check(CLI::PositiveNumber);
  app.add_option("--start", start, "index of the first item")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  app.add_option("--frames", frames,
                 absl::StrCat("frames per item: 1 = single images, 2-", kMaxFrames, " = clips"))
      ->capture_default_str();
  app.add_option("--image-size", opts.image_size, "side of the square images in pixels")
      ->capture_default_str();
  app.add_option("--grid", opts.grid,
                 absl::StrCat("cells per side (", kMinGrid, "-", kMaxGrid, ")"))
      ->capture_default_str();
  app.add_option("--out", out_dir, "output directory (created when missing)")->required();
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // --help is a ParseError too, with exit code 0.
    return app.exit(e) == 0 ? 0 : kUsageError;
  }
  if (const absl::Status s = ValidateSpec(frames, opts); !s.ok()) {
    std::cerr << "vlcache-vqa: " << s.message() << "\nRun with --help for more information.\n";
    return kUsageError;
  }
  if (start > INT64_MAX - n) {
    std::cerr << "vlcache-vqa: --start + --n overflows\n";
    return kUsageError;
  }
  const Split split = *ParseSplit(split_name);  // CLI11 checked the name

  if (const absl::Status s = WriteItems(split, start, n, frames, opts, out_dir); !s.ok()) {
    std::cerr << "vlcache-vqa: " << s.message() << "\n";
    return kRunError;
  }
  std::cout << "wrote vqa items dir=" << out_dir << " split=" << split_name << " start=" << start
            << " n=" << n << " frames=" << frames << " image_size=" << opts.image_size
            << " grid=" << opts.grid << "\n";
  return 0;
}
