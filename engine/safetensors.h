// Safetensors files (the Hugging Face weight format): a memory-mapped, validated reader and a
// writer. The reader checks the whole header before any tensor is touched: offsets in range,
// byte sizes consistent with dtype and shape, no two tensors overlapping, and answers a corrupt
// or truncated file with a Status that names the file and the tensor.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <ATen/core/Tensor.h>

#include "absl/status/statusor.h"

namespace vlc::engine {

struct SafetensorInfo {
  std::string name;
  std::string dtype;            // as written in the header: "F32", "F16", "BF16", "I64", ...
  std::vector<int64_t> shape;
  uint64_t begin = 0;           // byte offsets into the data section, [begin, end)
  uint64_t end = 0;
};

class SafetensorsFile {
 public:
  // Maps `path` read-only and validates its header.
  static absl::StatusOr<std::unique_ptr<SafetensorsFile>> Open(const std::string& path);
  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const std::string& path() const { return path_; }
  const std::vector<SafetensorInfo>& tensors() const { return tensors_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  // nullptr when absent.
  const SafetensorInfo* Find(const std::string& name) const;

  // Copies tensor `name` out of the mapping, converted to `dtype` (F32/F16/BF16 sources; integer
  // sources convert too). NOT_FOUND when absent.
  absl::StatusOr<at::Tensor> Load(const std::string& name,
                                  at::ScalarType dtype = at::kFloat) const;

  // Tensor `name` in its stored dtype, reading the mapping in place: no copy is made and no page
  // is read until the tensor is. The tensor keeps `file` (this file) mapped while it lives; when
  // it is destroyed, the pages wholly inside it are released from this process's resident
  // memory. For loading: copy what is needed out of it, then let it go. NOT_FOUND when absent.
  static absl::StatusOr<at::Tensor> View(const std::shared_ptr<const SafetensorsFile>& file,
                                         const std::string& name);

 private:
  SafetensorsFile() = default;
  std::string path_;
  void* map_ = nullptr;
  uint64_t map_size_ = 0;
  uint64_t data_offset_ = 0;  // 8 + header length
  std::vector<SafetensorInfo> tensors_;
  std::map<std::string, size_t> index_;
  std::map<std::string, std::string> metadata_;
};

// Writes `tensors` in order, each stored as `dtype` (F32, F16 or BF16), atomically (a temporary
// file renamed into place).
absl::Status WriteSafetensors(const std::string& path,
                              const std::vector<std::pair<std::string, at::Tensor>>& tensors,
                              at::ScalarType dtype = at::kFloat,
                              const std::map<std::string, std::string>& metadata = {});

}  // namespace vlc::engine
