#include "engine/safetensors.h"

#include <ATen/ATen.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>

#include "absl/strings/str_cat.h"
#include "common/status.h"

namespace vlc::engine {
namespace {

// Releases the pages wholly inside [p, p + n) from the resident set (they are re-read from the
// file if touched again).
void ReleasePages(const void* p, uint64_t n) {
  const uintptr_t page = static_cast<uintptr_t>(::sysconf(_SC_PAGESIZE));
  const uintptr_t first = (reinterpret_cast<uintptr_t>(p) + page - 1) / page * page;
  const uintptr_t last = (reinterpret_cast<uintptr_t>(p) + n) / page * page;
  if (last > first) ::madvise(reinterpret_cast<void*>(first), last - first, MADV_DONTNEED);
}

// The format stores little-endian bytes and the reader copies them verbatim.
static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "safetensors I/O assumes little-endian");

// Real headers are a few hundred kilobytes even for 100B-parameter checkpoints; a larger length
// prefix means the file is not safetensors, and refusing it avoids parsing gigabytes as JSON.
constexpr uint64_t kMaxHeaderBytes = 100ull * 1024 * 1024;

struct DtypeInfo {
  const char* name;
  at::ScalarType scalar_type;
  uint64_t element_size;
};

constexpr DtypeInfo kDtypes[] = {
    {"F64", at::kDouble, 8},    {"F32", at::kFloat, 4}, {"F16", at::kHalf, 2},
    {"BF16", at::kBFloat16, 2}, {"I64", at::kLong, 8},  {"I32", at::kInt, 4},
    {"I16", at::kShort, 2},     {"I8", at::kChar, 1},   {"U8", at::kByte, 1},
    {"BOOL", at::kBool, 1},
};

const DtypeInfo* FindDtype(const std::string& name) {
  for (const DtypeInfo& d : kDtypes) {
    if (name == d.name) return &d;
  }
  return nullptr;
}

const DtypeInfo* FindDtype(at::ScalarType type) {
  for (const DtypeInfo& d : kDtypes) {
    if (type == d.scalar_type) return &d;
  }
  return nullptr;
}

std::string ShapeString(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) absl::StrAppend(&s, i ? ", " : "", shape[i]);
  return s + "]";
}

// Validates one entry of the header; `data_size` is the length of the data section actually
// present in the file, so a truncated file fails here rather than when a tensor is read.
absl::StatusOr<SafetensorInfo> ParseTensorEntry(const std::string& path, const std::string& name,
                                                const nlohmann::ordered_json& entry,
                                                uint64_t data_size) {
  const std::string where = absl::StrCat(path, ": tensor '", name, "': ");
  if (!entry.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(where, "header entry is not a JSON object"));
  }
  SafetensorInfo info;
  info.name = name;

  auto dtype_it = entry.find("dtype");
  if (dtype_it == entry.end() || !dtype_it->is_string()) {
    return absl::InvalidArgumentError(absl::StrCat(where, "missing or non-string 'dtype'"));
  }
  info.dtype = dtype_it->get<std::string>();
  const DtypeInfo* dtype = FindDtype(info.dtype);
  if (dtype == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, "unsupported dtype '", info.dtype,
                     "' (expected one of F64, F32, F16, BF16, I64, I32, I16, I8, U8, BOOL)"));
  }

  auto shape_it = entry.find("shape");
  if (shape_it == entry.end() || !shape_it->is_array()) {
    return absl::InvalidArgumentError(absl::StrCat(where, "missing or non-array 'shape'"));
  }
  uint64_t numel = 1;
  bool numel_overflow = false;
  for (const auto& dim : *shape_it) {
    if (!dim.is_number_integer() || dim.get<int64_t>() < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, "shape ", shape_it->dump(), " has a negative or non-integer size"));
    }
    info.shape.push_back(dim.get<int64_t>());
    numel_overflow |= __builtin_mul_overflow(numel, dim.get<uint64_t>(), &numel);
  }
  uint64_t nbytes = 0;
  numel_overflow |= __builtin_mul_overflow(numel, dtype->element_size, &nbytes);

  auto offsets_it = entry.find("data_offsets");
  if (offsets_it == entry.end() || !offsets_it->is_array() || offsets_it->size() != 2 ||
      !(*offsets_it)[0].is_number_unsigned() || !(*offsets_it)[1].is_number_unsigned()) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, "'data_offsets' must be a pair of non-negative integers [begin, end]"));
  }
  info.begin = (*offsets_it)[0].get<uint64_t>();
  info.end = (*offsets_it)[1].get<uint64_t>();
  const std::string offsets = absl::StrCat("data_offsets [", info.begin, ", ", info.end, "]");
  if (info.begin > info.end) {
    return absl::InvalidArgumentError(absl::StrCat(where, offsets, " has begin > end"));
  }
  if (info.end > data_size) {
    return absl::InvalidArgumentError(absl::StrCat(where, offsets, " exceed the data section (",
                                                   data_size,
                                                   " bytes); the file is truncated or corrupt"));
  }
  if (numel_overflow || info.end - info.begin != nbytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        where, offsets, " span ", info.end - info.begin, " bytes but dtype ", info.dtype,
        " and shape ", ShapeString(info.shape), " need ",
        numel_overflow ? std::string("more than 2^64") : absl::StrCat(nbytes), " bytes"));
  }
  return info;
}

absl::Status ParseMetadata(const std::string& path, const nlohmann::ordered_json& j,
                           std::map<std::string, std::string>* metadata) {
  if (!j.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": __metadata__ is not a JSON object"));
  }
  for (const auto& [key, value] : j.items()) {
    if (!value.is_string()) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": __metadata__ value for '", key, "' is not a string"));
    }
    (*metadata)[key] = value.get<std::string>();
  }
  return absl::OkStatus();
}

// Tensors whose byte ranges intersect would alias each other's weights; real writers never
// produce them, so they indicate a corrupt or malicious file.
absl::Status CheckNoOverlap(const std::string& path, const std::vector<SafetensorInfo>& tensors) {
  std::vector<const SafetensorInfo*> by_begin;
  for (const SafetensorInfo& t : tensors) {
    if (t.end > t.begin) by_begin.push_back(&t);
  }
  std::sort(by_begin.begin(), by_begin.end(),
            [](const SafetensorInfo* a, const SafetensorInfo* b) { return a->begin < b->begin; });
  for (size_t i = 1; i < by_begin.size(); ++i) {
    const SafetensorInfo& prev = *by_begin[i - 1];
    const SafetensorInfo& cur = *by_begin[i];
    if (cur.begin < prev.end) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": tensor '", cur.name, "' (data_offsets [", cur.begin, ", ", cur.end,
                       "]) overlaps tensor '", prev.name, "' (data_offsets [", prev.begin, ", ",
                       prev.end, "])"));
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<SafetensorsFile>> SafetensorsFile::Open(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    int err = errno;
    if (err == ENOENT) return absl::NotFoundError(absl::StrCat(path, ": no such file"));
    return absl::InvalidArgumentError(absl::StrCat(path, ": cannot open: ", std::strerror(err)));
  }
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    int err = errno;
    ::close(fd);
    return absl::InvalidArgumentError(absl::StrCat(path, ": cannot stat: ", std::strerror(err)));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    return absl::InvalidArgumentError(absl::StrCat(path, ": not a regular file"));
  }
  const uint64_t file_size = static_cast<uint64_t>(st.st_size);
  if (file_size < 8) {
    ::close(fd);
    return absl::InvalidArgumentError(absl::StrCat(
        path, ": file is ", file_size, " bytes, too short for the 8-byte header length prefix"));
  }
  void* map = ::mmap(nullptr, file_size, PROT_READ, MAP_PRIVATE, fd, 0);
  int map_err = errno;
  // The mapping keeps the pages reachable; the descriptor is no longer needed.
  ::close(fd);
  if (map == MAP_FAILED) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": mmap failed: ", std::strerror(map_err)));
  }

  // Owned from here on, so every error path below unmaps through the destructor.
  std::unique_ptr<SafetensorsFile> file(new SafetensorsFile());
  file->path_ = path;
  file->map_ = map;
  file->map_size_ = file_size;

  const auto* bytes = static_cast<const unsigned char*>(map);
  uint64_t header_len = 0;
  std::memcpy(&header_len, bytes, sizeof(header_len));
  if (header_len > file_size - 8) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": header length ", header_len, " exceeds the ", file_size - 8,
                     " bytes after the length prefix; the file is truncated or not safetensors"));
  }
  if (header_len >= kMaxHeaderBytes) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": header length ", header_len,
                                                   " is implausibly large (limit ", kMaxHeaderBytes,
                                                   " bytes)"));
  }
  file->data_offset_ = 8 + header_len;
  const uint64_t data_size = file_size - file->data_offset_;

  // Ordered so that tensors() lists entries as the file does.
  nlohmann::ordered_json header;
  try {
    header = nlohmann::ordered_json::parse(bytes + 8, bytes + 8 + header_len);
  } catch (const nlohmann::json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": header is not valid JSON: ", e.what()));
  }
  if (!header.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": header is not a JSON object"));
  }

  for (const auto& [name, entry] : header.items()) {
    if (name == "__metadata__") {
      VLC_RETURN_IF_ERROR(ParseMetadata(path, entry, &file->metadata_));
      continue;
    }
    VLC_ASSIGN_OR_RETURN(SafetensorInfo info, ParseTensorEntry(path, name, entry, data_size));
    file->index_[name] = file->tensors_.size();
    file->tensors_.push_back(std::move(info));
  }
  VLC_RETURN_IF_ERROR(CheckNoOverlap(path, file->tensors_));
  return file;
}

SafetensorsFile::~SafetensorsFile() {
  if (map_ != nullptr) ::munmap(map_, map_size_);
}

const SafetensorInfo* SafetensorsFile::Find(const std::string& name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &tensors_[it->second];
}

absl::StatusOr<at::Tensor> SafetensorsFile::Load(const std::string& name,
                                                 at::ScalarType dtype) const {
  const SafetensorInfo* info = Find(name);
  if (info == nullptr) {
    return absl::NotFoundError(absl::StrCat(path_, ": no tensor named '", name, "'"));
  }
  // Open() accepted only known dtypes.
  const DtypeInfo* source = FindDtype(info->dtype);
  at::Tensor out;
  VLC_RETURN_IF_ERROR(CatchAll(absl::StrCat(path_, ": loading '", name, "'").c_str(), [&] {
    // A copy rather than from_blob: the data section has no alignment guarantee, and the
    // tensor must outlive the mapping.
    at::Tensor raw = at::empty(info->shape, at::TensorOptions().dtype(source->scalar_type));
    const uint64_t nbytes = info->end - info->begin;
    if (nbytes > 0) {
      const unsigned char* src = static_cast<const unsigned char*>(map_) + data_offset_ + info->begin;
      std::memcpy(raw.data_ptr(), src, nbytes);
      // The mapped pages are counted in this process's resident memory until released: let the
      // ones wholly inside this tensor go, so that loading holds one copy of the weights, not two.
      ReleasePages(src, nbytes);
    }
    out = raw.to(dtype);
  }));
  return out;
}

absl::StatusOr<at::Tensor> SafetensorsFile::View(const std::shared_ptr<const SafetensorsFile>& file,
                                                 const std::string& name) {
  const SafetensorInfo* info = file->Find(name);
  if (info == nullptr) {
    return absl::NotFoundError(absl::StrCat(file->path_, ": no tensor named '", name, "'"));
  }
  const DtypeInfo* source = FindDtype(info->dtype);
  const uint64_t nbytes = info->end - info->begin;
  void* data = static_cast<unsigned char*>(file->map_) + file->data_offset_ + info->begin;
  at::Tensor out;
  VLC_RETURN_IF_ERROR(CatchAll(absl::StrCat(file->path_, ": mapping '", name, "'").c_str(), [&] {
    std::shared_ptr<const SafetensorsFile> keep = file;
    out = at::from_blob(
        data, info->shape,
        [keep, nbytes](void* p) { ReleasePages(p, nbytes); },
        at::TensorOptions().dtype(source->scalar_type));
  }));
  return out;
}

absl::Status WriteSafetensors(const std::string& path,
                              const std::vector<std::pair<std::string, at::Tensor>>& tensors,
                              at::ScalarType dtype,
                              const std::map<std::string, std::string>& metadata) {
  if (dtype != at::kFloat && dtype != at::kHalf && dtype != at::kBFloat16) {
    return absl::InvalidArgumentError(absl::StrCat(
        path, ": cannot write dtype ", c10::toString(dtype), " (F32, F16 or BF16 only)"));
  }
  const char* dtype_name = FindDtype(dtype)->name;

  std::set<std::string> seen;
  for (const auto& [name, tensor] : tensors) {
    if (name == "__metadata__") {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": '__metadata__' is reserved and cannot name a tensor"));
    }
    if (!seen.insert(name).second) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": tensor '", name, "' appears more than once"));
    }
    if (!tensor.defined()) {
      return absl::InvalidArgumentError(absl::StrCat(path, ": tensor '", name, "' is undefined"));
    }
  }

  std::vector<at::Tensor> data;
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  VLC_RETURN_IF_ERROR(CatchAll(absl::StrCat(path, ": converting tensors").c_str(), [&] {
    uint64_t offset = 0;
    data.reserve(tensors.size());
    for (const auto& [name, tensor] : tensors) {
      at::Tensor t = tensor.to(at::kCPU, dtype).contiguous();
      const uint64_t nbytes = t.numel() * t.element_size();
      header[name] = {{"dtype", dtype_name},
                      {"shape", t.sizes().vec()},
                      {"data_offsets", {offset, offset + nbytes}}};
      offset += nbytes;
      data.push_back(std::move(t));
    }
  }));

  std::string header_text = header.dump();
  // Padding keeps the data section 8-byte aligned in the file, as the reference writer does.
  header_text.append((8 - header_text.size() % 8) % 8, ' ');
  const uint64_t header_len = header_text.size();

  // Written beside the target and renamed, so a crash never leaves a half-written checkpoint
  // under the real name.
  const std::string tmp_path = path + ".tmp";
  {
    std::ofstream out(tmp_path, std::ios::binary | std::ios::trunc);
    if (!out) {
      return absl::ErrnoToStatus(errno, absl::StrCat(tmp_path, ": cannot open for writing"));
    }
    out.write(reinterpret_cast<const char*>(&header_len), sizeof(header_len));
    out.write(header_text.data(), static_cast<std::streamsize>(header_text.size()));
    for (const at::Tensor& t : data) {
      out.write(static_cast<const char*>(t.data_ptr()),
                static_cast<std::streamsize>(t.numel() * t.element_size()));
    }
    out.close();
    if (!out) {
      std::remove(tmp_path.c_str());
      return absl::InternalError(absl::StrCat(tmp_path, ": write failed"));
    }
  }
  if (std::rename(tmp_path.c_str(), path.c_str()) != 0) {
    int err = errno;
    std::remove(tmp_path.c_str());
    return absl::ErrnoToStatus(err,
                               absl::StrCat(path, ": cannot rename ", tmp_path, " into place"));
  }
  return absl::OkStatus();
}

}  // namespace vlc::engine
