#include "engine/weights.h"

#include <ATen/ATen.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "engine/safetensors.h"
#include "common/status.h"

namespace vlc::engine {
namespace {

constexpr char kSingleFile[] = "model.safetensors";
constexpr char kIndexFile[] = "model.safetensors.index.json";

std::string JoinPath(const std::string& dir, const std::string& name) {
  return (std::filesystem::path(dir) / name).string();
}

// Canonical name -> the HF key it came from, so a clash can name both keys.
using Origins = std::map<std::string, std::string>;

// How tensors come out of the files: copied and converted to a dtype, or mapped in place.
struct ReadMode {
  at::ScalarType dtype = at::kFloat;
  bool mapped = false;
};

absl::Status AddWeight(const std::shared_ptr<const SafetensorsFile>& shared,
                       const std::string& hf_key, const ReadMode& mode, Origins* origins,
                       WeightMap* weights) {
  const SafetensorsFile& file = *shared;
  const std::string canonical = CanonicalWeightName(hf_key);
  if (canonical.empty()) return absl::OkStatus();
  auto [it, inserted] = origins->emplace(canonical, hf_key);
  if (!inserted) {
    // Both key layouts in one checkpoint: loading either silently could pick stale weights.
    return absl::InvalidArgumentError(absl::StrCat(file.path(), ": tensors '", it->second,
                                                   "' and '", hf_key, "' both map to the weight '",
                                                   canonical, "'"));
  }
  // Load() and View() turn LibTorch's exceptions into a Status naming the file and the tensor.
  VLC_ASSIGN_OR_RETURN(at::Tensor tensor, mode.mapped ? SafetensorsFile::View(shared, hf_key)
                                                      : file.Load(hf_key, mode.dtype));
  weights->emplace(canonical, std::move(tensor));
  return absl::OkStatus();
}

absl::StatusOr<WeightMap> LoadSingleFile(const std::string& path, const ReadMode& mode) {
  VLC_ASSIGN_OR_RETURN(std::unique_ptr<SafetensorsFile> opened, SafetensorsFile::Open(path));
  const std::shared_ptr<const SafetensorsFile> file(std::move(opened));
  WeightMap weights;
  Origins origins;
  for (const SafetensorInfo& info : file->tensors()) {
    VLC_RETURN_IF_ERROR(AddWeight(file, info.name, mode, &origins, &weights));
  }
  return weights;
}

absl::StatusOr<WeightMap> LoadSharded(const std::string& dir, const std::string& index_path,
                                      const ReadMode& mode) {
  nlohmann::json index;
  {
    std::ifstream in(index_path, std::ios::binary);
    if (!in) return absl::InvalidArgumentError(absl::StrCat(index_path, ": cannot open"));
    try {
      index = nlohmann::json::parse(in);
    } catch (const nlohmann::json::exception& e) {
      return absl::InvalidArgumentError(absl::StrCat(index_path, ": not valid JSON: ", e.what()));
    }
  }
  if (!index.is_object() || !index.contains("weight_map") || !index["weight_map"].is_object()) {
    return absl::InvalidArgumentError(
        absl::StrCat(index_path, ": missing the \"weight_map\" object"));
  }

  // Group keys by shard so every shard is mapped once, however many keys it holds.
  std::map<std::string, std::vector<std::string>> keys_by_shard;
  for (const auto& [key, shard] : index["weight_map"].items()) {
    if (!shard.is_string()) {
      return absl::InvalidArgumentError(absl::StrCat(index_path, ": weight_map entry for '", key,
                                                     "' is not a file name: ", shard.dump()));
    }
    keys_by_shard[shard.get<std::string>()].push_back(key);
  }

  WeightMap weights;
  Origins origins;
  for (const auto& [shard, keys] : keys_by_shard) {
    const std::string shard_path = JoinPath(dir, shard);
    absl::StatusOr<std::unique_ptr<SafetensorsFile>> opened = SafetensorsFile::Open(shard_path);
    if (absl::IsNotFound(opened.status())) {
      return absl::NotFoundError(absl::StrCat(index_path, ": lists shard '", shard, "' (for '",
                                              keys.front(), "'), but ", shard_path,
                                              " does not exist"));
    }
    if (!opened.ok()) return opened.status();
    const std::shared_ptr<const SafetensorsFile> file(std::move(*opened));
    for (const std::string& key : keys) {
      // Checked even for keys the engine skips: a shard that disagrees with its index means the
      // download is incomplete or mixed from two revisions.
      if (file->Find(key) == nullptr) {
        return absl::InvalidArgumentError(absl::StrCat(index_path, ": maps '", key, "' to ",
                                                       shard_path, ", which has no such tensor"));
      }
      VLC_RETURN_IF_ERROR(AddWeight(file, key, mode, &origins, &weights));
    }
  }
  return weights;
}

}  // namespace

std::string CanonicalWeightName(const std::string& hf_key) {
  // Old layout (transformers < 4.52) first, then the layout newer versions save. Transformers 5
  // flattened CLIPVisionModel, so the checkpoints it saves have no `vision_model.` level; those
  // prefixes come after the longer ones, which they would otherwise shadow.
  static const std::pair<const char*, const char*> kPrefixes[] = {
      {"vision_tower.vision_model.", "vision."}, {"model.vision_tower.vision_model.", "vision."},
      {"vision_tower.", "vision."},              {"model.vision_tower.", "vision."},
      {"multi_modal_projector.", "projector."},  {"model.multi_modal_projector.", "projector."},
      {"language_model.model.", "lm."},          {"model.language_model.", "lm."},
  };
  for (const auto& [hf_prefix, prefix] : kPrefixes) {
    if (absl::StartsWith(hf_key, hf_prefix)) {
      // The first, longest match decides: a bare "vision_tower.vision_model." is no weight.
      if (hf_key.size() == std::strlen(hf_prefix)) return "";
      return prefix + hf_key.substr(std::strlen(hf_prefix));
    }
  }
  if (hf_key == "language_model.lm_head.weight" || hf_key == "lm_head.weight") {
    return "lm_head.weight";
  }
  return "";
}

namespace {

absl::StatusOr<WeightMap> ReadCheckpoint(const std::string& dir, const ReadMode& mode) {
  const std::string index_path = JoinPath(dir, kIndexFile);
  std::error_code ec;
  if (std::filesystem::exists(index_path, ec)) return LoadSharded(dir, index_path, mode);
  const std::string single_path = JoinPath(dir, kSingleFile);
  if (!std::filesystem::exists(single_path, ec)) {
    return absl::NotFoundError(absl::StrCat(dir, ": neither ", kSingleFile, " nor ", kIndexFile,
                                            " exists (looked for ", single_path, ")"));
  }
  return LoadSingleFile(single_path, mode);
}

}  // namespace

absl::StatusOr<WeightMap> LoadCheckpointWeights(const std::string& dir, at::ScalarType dtype) {
  return ReadCheckpoint(dir, ReadMode{dtype, false});
}

absl::StatusOr<WeightMap> MapCheckpointWeights(const std::string& dir) {
  return ReadCheckpoint(dir, ReadMode{at::kFloat, true});
}

}  // namespace vlc::engine
