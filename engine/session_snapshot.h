// A session, serialized so that another replica can continue it: its kept KV cache (what the
// policy left of each layer, as [kv_heads, length, head_dim] keys and values, keys already
// rotated), its logical length, the last sampled token, its token history and its settings. Once
// compressed a session is small (VL-Cache at 10% keeps about a tenth of the full cache), which is
// what makes moving it cheap.
//
// The format (little-endian):
//   "VLCSNAP\0"                       8 bytes
//   version                           u32 (1)
//   header length                     u32
//   header                            JSON: model fingerprint, session fields, cache geometry and
//                                     dtype, each layer's length
//   payload                           for each layer, K then V, contiguous, in the header's dtype
//   CRC-32 of everything above        u32 (zlib's polynomial)
// A snapshot names the model it was taken of (ModelFingerprint); restoring it into another model
// is refused, as is a truncated or corrupt one (FAILED_PRECONDITION saying why).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <ATen/core/Tensor.h>

#include "absl/status/statusor.h"

namespace vlc::engine {

struct SessionSnapshot {
  std::string model;         // ModelFingerprint of the model it was taken of
  std::string session_id;
  std::string owner_digest;  // SHA-256 (hex) of the owner's identity; "" when auth is off
  std::string policy;
  int64_t next_pos = 0;
  int last_token = -1;
  int turns = 0;
  int visual_tokens = 0;
  bool has_prefix = false;
  std::vector<int> history;
  // Per layer: K and V, [kv_heads, length, head_dim], on the CPU.
  std::vector<std::pair<at::Tensor, at::Tensor>> layers;

  int64_t KvBytes() const;
};

// SHA-256 (hex) of `text`: how a snapshot names its owner without holding the token.
std::string Sha256Hex(std::string_view text);

// The identity of the model in `model_dir`, the same on every replica that loads the same files:
// SHA-256 over config.json, the tokenizer, and each safetensors file's size, header (every
// tensor's name, dtype, shape and offsets) and 16 samples of 4 KiB spread over its data, so that
// two checkpoints of one architecture trained apart differ too. Reads well under a megabyte.
absl::StatusOr<std::string> ModelFingerprint(const std::string& model_dir);

std::string EncodeSnapshot(const SessionSnapshot& s);
// The snapshot in `bytes`; FAILED_PRECONDITION naming why it cannot be read (truncated, corrupt,
// another format version) or, when `model` is not empty, why it does not belong here (taken of
// another model).
absl::StatusOr<SessionSnapshot> DecodeSnapshot(std::string_view bytes, const std::string& model);

// Where snapshots wait for the replica that continues them.
class SessionStore {
 public:
  virtual ~SessionStore() = default;
  // Stores (replaces) the snapshot of `id`; durable when it returns OK.
  virtual absl::Status Put(const std::string& id, const std::string& bytes) = 0;
  // Takes the snapshot of `id` out of the store, so that one replica alone continues it;
  // NOT_FOUND when there is none (never stored, or taken already).
  virtual absl::StatusOr<std::string> Take(const std::string& id) = 0;
  // Sets a snapshot that could not be restored aside (kept for inspection, never offered again).
  virtual void Reject(const std::string& id, const std::string& bytes, const std::string& why) = 0;
  // Drops the snapshot of `id`, if any.
  virtual void Delete(const std::string& id) = 0;
};

// A directory (a shared volume between replicas): one file per session, `<id>.vlcsnap`, written
// to a temporary name, flushed and renamed into place; Take renames it to a name unique to the
// taker before reading it, so two replicas never both continue one session. Rejected snapshots go
// to `rejected/` with a note of why.
class DirectorySessionStore final : public SessionStore {
 public:
  // Creates the directory when missing; INVALID_ARGUMENT when it cannot be made or written.
  static absl::StatusOr<std::unique_ptr<DirectorySessionStore>> Open(const std::string& dir);

  absl::Status Put(const std::string& id, const std::string& bytes) override;
  absl::StatusOr<std::string> Take(const std::string& id) override;
  void Reject(const std::string& id, const std::string& bytes, const std::string& why) override;
  void Delete(const std::string& id) override;
  const std::string& dir() const { return dir_; }

 private:
  explicit DirectorySessionStore(std::string dir) : dir_(std::move(dir)) {}
  std::string PathOf(const std::string& id) const;
  std::string dir_;
};

}  // namespace vlc::engine
