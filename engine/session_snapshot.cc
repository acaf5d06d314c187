#include "engine/session_snapshot.h"

#include <openssl/evp.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <ATen/ATen.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace vlc::engine {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

constexpr char kMagic[8] = {'V', 'L', 'C', 'S', 'N', 'A', 'P', '\0'};
constexpr uint32_t kVersion = 1;

void PutU32(uint32_t v, std::string* out) {
  for (int i = 0; i < 4; ++i) out->push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

uint32_t GetU32(std::string_view b, size_t at) {
  uint32_t v = 0;
  for (int i = 3; i >= 0; --i) v = (v << 8) | static_cast<uint8_t>(b[at + i]);
  return v;
}

uint32_t Crc32(std::string_view b) {
  uLong crc = crc32(0L, Z_NULL, 0);
  // zlib takes lengths as uInt: feed large buffers in pieces.
  for (size_t at = 0; at < b.size(); at += 1u << 30) {
    const size_t n = std::min<size_t>(b.size() - at, 1u << 30);
    crc = crc32(crc, reinterpret_cast<const Bytef*>(b.data() + at), static_cast<uInt>(n));
  }
  return static_cast<uint32_t>(crc);
}

absl::Status Unreadable(const std::string& why) {
  return absl::FailedPreconditionError(absl::StrCat("the session's snapshot cannot be read: ", why));
}

const char* DtypeName(at::ScalarType t) {
  switch (t) {
    case at::kFloat: return "float32";
    case at::kHalf: return "float16";
    case at::kBFloat16: return "bfloat16";
    default: return nullptr;
  }
}

absl::StatusOr<at::ScalarType> DtypeOf(const std::string& name) {
  if (name == "float32") return at::kFloat;
  if (name == "float16") return at::kHalf;
  if (name == "bfloat16") return at::kBFloat16;
  return Unreadable(absl::StrCat("unknown dtype \"", name, "\""));
}

// A hasher over several pieces of input.
class Sha256 {
 public:
  Sha256() : ctx_(EVP_MD_CTX_new()) { EVP_DigestInit_ex(ctx_, EVP_sha256(), nullptr); }
  ~Sha256() { EVP_MD_CTX_free(ctx_); }
  void Add(std::string_view b) { EVP_DigestUpdate(ctx_, b.data(), b.size()); }
  std::string Hex() {
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int n = 0;
    EVP_DigestFinal_ex(ctx_, md, &n);
    std::string out;
    for (unsigned int i = 0; i < n; ++i) absl::StrAppendFormat(&out, "%02x", md[i]);
    return out;
  }

 private:
  EVP_MD_CTX* ctx_;
};

std::string TensorBytes(const at::Tensor& t) {
  const at::Tensor c = t.contiguous();
  return std::string(static_cast<const char*>(c.data_ptr()), c.numel() * c.element_size());
}

absl::Status WriteAll(const std::string& path, const std::string& bytes) {
  FILE* f = std::fopen(path.c_str(), "wb");
  if (!f) return absl::UnavailableError(absl::StrCat("cannot write ", path, ": ", std::strerror(errno)));
  const bool ok = std::fwrite(bytes.data(), 1, bytes.size(), f) == bytes.size() &&
                  std::fflush(f) == 0 && ::fsync(::fileno(f)) == 0;
  const int err = errno;
  std::fclose(f);
  if (!ok) {
    std::remove(path.c_str());
    return absl::UnavailableError(absl::StrCat("cannot write ", path, ": ", std::strerror(err)));
  }
  return absl::OkStatus();
}

std::string UniqueSuffix() {
  static std::atomic<uint64_t> counter{0};
  static const uint64_t process = std::random_device{}();
  return absl::StrFormat("%d.%x.%d", ::getpid(), process, counter++);
}

}  // namespace

int64_t SessionSnapshot::KvBytes() const {
  int64_t n = 0;
  for (const auto& [k, v] : layers) n += k.numel() * k.element_size() + v.numel() * v.element_size();
  return n;
}

std::string Sha256Hex(std::string_view text) {
  Sha256 h;
  h.Add(text);
  return h.Hex();
}

absl::StatusOr<std::string> ModelFingerprint(const std::string& model_dir) {
  Sha256 h;
  auto add_file = [&](const fs::path& p) -> absl::Status {
    std::ifstream f(p, std::ios::binary);
    if (!f) return absl::NotFoundError(absl::StrCat("cannot read ", p.string()));
    std::stringstream ss;
    ss << f.rdbuf();
    h.Add(p.filename().string());
    h.Add(ss.str());
    return absl::OkStatus();
  };
  if (absl::Status s = add_file(fs::path(model_dir) / "config.json"); !s.ok()) return s;
  for (const char* name : {"tokenizer.model", "tokenizer.json"}) {
    if (fs::exists(fs::path(model_dir) / name)) {
      if (absl::Status s = add_file(fs::path(model_dir) / name); !s.ok()) return s;
    }
  }
  std::vector<fs::path> weights;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(model_dir, ec)) {
    if (e.path().extension() == ".safetensors") weights.push_back(e.path());
  }
  if (ec) return absl::NotFoundError(absl::StrCat("cannot list ", model_dir, ": ", ec.message()));
  std::sort(weights.begin(), weights.end());
  for (const auto& p : weights) {
    std::ifstream f(p, std::ios::binary);
    if (!f) return absl::NotFoundError(absl::StrCat("cannot read ", p.string()));
    const uint64_t size = fs::file_size(p, ec);
    h.Add(p.filename().string());
    h.Add(std::to_string(size));
    uint64_t header_len = 0;
    char len_bytes[8] = {};
    f.read(len_bytes, 8);
    for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | static_cast<uint8_t>(len_bytes[i]);
    header_len = std::min<uint64_t>(header_len, size > 8 ? size - 8 : 0);
    std::string header(std::min<uint64_t>(header_len, 64 << 20), '\0');
    f.read(header.data(), static_cast<std::streamsize>(header.size()));
    h.Add(header);
    const uint64_t data_start = 8 + header_len;
    const uint64_t data_size = size > data_start ? size - data_start : 0;
    std::string sample(4096, '\0');
    for (int i = 0; i < 16 && data_size > 0; ++i) {
      const uint64_t at = data_start + data_size * i / 16;
      f.clear();
      f.seekg(static_cast<std::streamoff>(at));
      f.read(sample.data(), static_cast<std::streamsize>(sample.size()));
      h.Add(std::string_view(sample.data(), static_cast<size_t>(f.gcount())));
    }
  }
  return h.Hex();
}

std::string EncodeSnapshot(const SessionSnapshot& s) {
  json header = {{"model", s.model},
                 {"session_id", s.session_id},
                 {"owner_sha256", s.owner_digest},
                 {"policy", s.policy},
                 {"next_pos", s.next_pos},
                 {"last_token", s.last_token},
                 {"turns", s.turns},
                 {"visual_tokens", s.visual_tokens},
                 {"has_prefix", s.has_prefix},
                 {"history", s.history}};
  json lengths = json::array();
  at::ScalarType dtype = at::kFloat;
  int64_t kv_heads = 0, head_dim = 0;
  for (const auto& [k, v] : s.layers) {
    lengths.push_back(k.size(1));
    dtype = k.scalar_type();
    kv_heads = k.size(0);
    head_dim = k.size(2);
  }
  header["layers"] = lengths;
  header["kv_heads"] = kv_heads;
  header["head_dim"] = head_dim;
  header["dtype"] = DtypeName(dtype) ? DtypeName(dtype) : "float32";
  const std::string h = header.dump();
  std::string out(kMagic, sizeof(kMagic));
  PutU32(kVersion, &out);
  PutU32(static_cast<uint32_t>(h.size()), &out);
  out += h;
  for (const auto& [k, v] : s.layers) {
    out += TensorBytes(k.cpu());
    out += TensorBytes(v.cpu());
  }
  PutU32(Crc32(out), &out);
  return out;
}

absl::StatusOr<SessionSnapshot> DecodeSnapshot(std::string_view b, const std::string& model) {
  if (b.size() < sizeof(kMagic) + 12) {
    return Unreadable(absl::StrCat("it is truncated (", b.size(), " bytes)"));
  }
  if (std::memcmp(b.data(), kMagic, sizeof(kMagic)) != 0) {
    return Unreadable("it is not a vlcache session snapshot");
  }
  const uint32_t version = GetU32(b, 8);
  if (version != kVersion) {
    return Unreadable(absl::StrCat("it has format version ", version, "; this server reads ",
                                   kVersion));
  }
  const uint32_t stored_crc = GetU32(b, b.size() - 4);
  if (Crc32(b.substr(0, b.size() - 4)) != stored_crc) {
    return Unreadable("its checksum does not match (the file is corrupt or truncated)");
  }
  const uint32_t header_len = GetU32(b, 12);
  if (16 + static_cast<size_t>(header_len) > b.size() - 4) return Unreadable("its header is cut off");
  const json h = json::parse(b.substr(16, header_len), nullptr, false);
  if (!h.is_object()) return Unreadable("its header is not a JSON object");
  SessionSnapshot s;
  std::vector<int64_t> lengths;
  int64_t kv_heads = 0, head_dim = 0;
  std::string dtype_name;
  try {
    s.model = h.at("model").get<std::string>();
    s.session_id = h.at("session_id").get<std::string>();
    s.owner_digest = h.at("owner_sha256").get<std::string>();
    s.policy = h.at("policy").get<std::string>();
    s.next_pos = h.at("next_pos").get<int64_t>();
    s.last_token = h.at("last_token").get<int>();
    s.turns = h.at("turns").get<int>();
    s.visual_tokens = h.at("visual_tokens").get<int>();
    s.has_prefix = h.at("has_prefix").get<bool>();
    s.history = h.at("history").get<std::vector<int>>();
    lengths = h.at("layers").get<std::vector<int64_t>>();
    kv_heads = h.at("kv_heads").get<int64_t>();
    head_dim = h.at("head_dim").get<int64_t>();
    dtype_name = h.at("dtype").get<std::string>();
  } catch (const json::exception& e) {
    return Unreadable(absl::StrCat("its header lacks a field or has one of the wrong type: ",
                                   e.what()));
  }
  if (!model.empty() && s.model != model) {
    return absl::FailedPreconditionError(absl::StrCat(
        "the session's snapshot was taken of another model (fingerprint ", s.model.substr(0, 12),
        "...; this server runs ", model.substr(0, 12), "...): it cannot continue here"));
  }
  auto dtype = DtypeOf(dtype_name);
  if (!dtype.ok()) return dtype.status();
  if (kv_heads <= 0 || head_dim <= 0 || lengths.empty()) {
    return Unreadable("its cache geometry is empty");
  }
  const int64_t element = static_cast<int64_t>(c10::elementSize(*dtype));
  size_t at = 16 + header_len;
  const size_t end = b.size() - 4;
  for (int64_t len : lengths) {
    if (len < 0 || len > (int64_t{1} << 32)) return Unreadable("a layer has an impossible length");
    int64_t product = 0;
    if (__builtin_mul_overflow(kv_heads, len, &product) ||
        __builtin_mul_overflow(product, head_dim, &product) ||
        __builtin_mul_overflow(product, element, &product) ||
        static_cast<uint64_t>(product) > b.size()) {
      return Unreadable("its payload is shorter than its header says");
    }
    const size_t bytes = static_cast<size_t>(product);
    if (end - at < 2 * bytes) return Unreadable("its payload is shorter than its header says");
    at::Tensor k = at::empty({kv_heads, len, head_dim}, at::TensorOptions().dtype(*dtype));
    at::Tensor v = at::empty({kv_heads, len, head_dim}, at::TensorOptions().dtype(*dtype));
    if (bytes > 0) {  // an emptied layer has no storage to copy into
      std::memcpy(k.data_ptr(), b.data() + at, bytes);
      std::memcpy(v.data_ptr(), b.data() + at + bytes, bytes);
    }
    at += 2 * bytes;
    s.layers.emplace_back(std::move(k), std::move(v));
  }
  if (at != end) return Unreadable("its payload is longer than its header says");
  return s;
}

// ---- the directory store

absl::StatusOr<std::unique_ptr<DirectorySessionStore>> DirectorySessionStore::Open(
    const std::string& dir) {
  std::error_code ec;
  fs::create_directories(fs::path(dir) / "rejected", ec);
  if (ec) {
    return absl::InvalidArgumentError(
        absl::StrCat("session store ", dir, ": cannot create it: ", ec.message()));
  }
  const std::string probe = (fs::path(dir) / (".probe." + UniqueSuffix())).string();
  if (absl::Status s = WriteAll(probe, "ok"); !s.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("session store ", dir, ": not writable: ",
                                                   s.message()));
  }
  std::remove(probe.c_str());
  return std::unique_ptr<DirectorySessionStore>(new DirectorySessionStore(dir));
}

// Session ids are [A-Za-z0-9._-]{1,128}: no separator, and the suffix keeps "." and ".." apart
// from the directory's own entries.
std::string DirectorySessionStore::PathOf(const std::string& id) const {
  return (fs::path(dir_) / (id + ".vlcsnap")).string();
}

absl::Status DirectorySessionStore::Put(const std::string& id, const std::string& bytes) {
  const std::string tmp = PathOf(id) + ".tmp." + UniqueSuffix();
  if (absl::Status s = WriteAll(tmp, bytes); !s.ok()) return s;
  if (std::rename(tmp.c_str(), PathOf(id).c_str()) != 0) {
    const int err = errno;
    std::remove(tmp.c_str());
    return absl::UnavailableError(absl::StrCat("cannot store the snapshot of session ", id, ": ",
                                               std::strerror(err)));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> DirectorySessionStore::Take(const std::string& id) {
  const std::string taken = PathOf(id) + ".taken." + UniqueSuffix();
  if (std::rename(PathOf(id).c_str(), taken.c_str()) != 0) {
    if (errno == ENOENT) {
      return absl::NotFoundError(absl::StrCat("no snapshot of session ", id, " in the store"));
    }
    return absl::UnavailableError(absl::StrCat("cannot take the snapshot of session ", id, ": ",
                                               std::strerror(errno)));
  }
  std::ifstream f(taken, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  std::remove(taken.c_str());
  return ss.str();
}

void DirectorySessionStore::Reject(const std::string& id, const std::string& bytes,
                                   const std::string& why) {
  const fs::path base = fs::path(dir_) / "rejected" / (id + ".vlcsnap." + UniqueSuffix());
  (void)WriteAll(base.string(), bytes);
  (void)WriteAll(base.string() + ".why", why + "\n");
}

void DirectorySessionStore::Delete(const std::string& id) { std::remove(PathOf(id).c_str()); }

}  // namespace vlc::engine
