// SentencePiece models are read and run here, not through libsentencepiece: Debian's
// libsentencepiece carries its own protobuf 3.14 and exports its symbols, which collide with the
// protobuf 3.21 that LibTorch (and gRPC) load into the same process; a binary linking both
// crashes during static initialization or fails protobuf's version check. The model file is a
// small protobuf read field by field below, and the BPE encoder, normalizer and decoder follow
// SentencePiece's own (bpe_model.cc, normalizer.cc, sentencepiece_processor.cc) step by step, so
// ids and text match the library for BPE models with the identity normalization: Llama, Mistral
// and Vicuna, i.e. every LLaVA text model. Other model kinds are rejected at load time.
#include "engine/tokenizer.h"

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <queue>
#include <sstream>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/status.h"

namespace vlc::engine {
namespace {

// U+2581, SentencePiece's visible space.
constexpr std::string_view kSpaceSymbol = "\xe2\x96\x81";
// U+FFFD, which SentencePiece decodes malformed UTF-8 (and incomplete byte-fallback runs) to.
constexpr std::string_view kReplacementChar = "\xef\xbf\xbd";

// ModelProto.SentencePiece.Type.
enum PieceType : int {
  kNormal = 1,
  kUnknown = 2,
  kControl = 3,
  kUserDefined = 4,
  kUnused = 5,
  kByte = 6,
};

// TrainerSpec.ModelType.
constexpr int kModelTypeUnigram = 1;
constexpr int kModelTypeBpe = 2;

// Bytes of the UTF-8 character starting with `lead`, by SentencePiece's table (a stray
// continuation byte counts as one).
size_t OneCharLen(char lead) {
  return "\1\1\1\1\1\1\1\1\1\1\1\1\2\2\3\4"[(static_cast<unsigned char>(lead)) >> 4];
}

bool IsTrailByte(char c) { return (static_cast<unsigned char>(c) & 0xC0) == 0x80; }

// SentencePiece's IsValidDecodeUTF8: whether `s` starts with a well-formed character (not
// overlong, not a surrogate, at most U+10FFFF), and its length (1 when malformed).
bool DecodeUtf8Prefix(std::string_view s, size_t* len) {
  const auto b = [&s](size_t i) { return static_cast<uint32_t>(static_cast<unsigned char>(s[i])); };
  const auto valid = [](uint32_t cp) { return cp < 0xD800 || (cp >= 0xE000 && cp <= 0x10FFFF); };
  *len = 1;
  if (b(0) < 0x80) return true;
  if (s.size() >= 2 && (b(0) & 0xE0) == 0xC0) {
    const uint32_t cp = ((b(0) & 0x1F) << 6) | (b(1) & 0x3F);
    if (IsTrailByte(s[1]) && cp >= 0x80 && valid(cp)) {
      *len = 2;
      return true;
    }
  } else if (s.size() >= 3 && (b(0) & 0xF0) == 0xE0) {
    const uint32_t cp = ((b(0) & 0x0F) << 12) | ((b(1) & 0x3F) << 6) | (b(2) & 0x3F);
    if (IsTrailByte(s[1]) && IsTrailByte(s[2]) && cp >= 0x800 && valid(cp)) {
      *len = 3;
      return true;
    }
  } else if (s.size() >= 4 && (b(0) & 0xF8) == 0xF0) {
    const uint32_t cp =
        ((b(0) & 0x07) << 18) | ((b(1) & 0x3F) << 12) | ((b(2) & 0x3F) << 6) | (b(3) & 0x3F);
    if (IsTrailByte(s[1]) && IsTrailByte(s[2]) && IsTrailByte(s[3]) && cp >= 0x10000 && valid(cp)) {
      *len = 4;
      return true;
    }
  }
  return false;
}

// std::string_view helpers (Debian's Abseil has its own string_view type, not an alias).
bool ConsumePrefix(std::string_view* s, std::string_view prefix) {
  if (s->substr(0, prefix.size()) != prefix) return false;
  s->remove_prefix(prefix.size());
  return true;
}

bool EndsWith(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

// "<0x41>" -> 0x41; -1 for anything else.
int PieceToByte(std::string_view piece) {
  if (piece.size() != 6 || piece.substr(0, 3) != "<0x" || piece[5] != '>') return -1;
  int value = 0;
  for (char c : piece.substr(3, 2)) {
    value *= 16;
    if (c >= '0' && c <= '9') {
      value += c - '0';
    } else if (c >= 'A' && c <= 'F') {
      value += c - 'A' + 10;
    } else {
      return -1;
    }
  }
  return value;
}

// A protobuf wire-format reader: just what a SentencePiece ModelProto needs.
class WireReader {
 public:
  explicit WireReader(std::string_view data) : data_(data) {}

  bool done() const { return pos_ >= data_.size(); }

  bool ReadTag(uint32_t* field, uint32_t* wire_type) {
    uint64_t tag = 0;
    if (!ReadVarint(&tag) || (tag >> 3) == 0 || (tag >> 3) > 0x1FFFFFFF) return false;
    *field = static_cast<uint32_t>(tag >> 3);
    *wire_type = static_cast<uint32_t>(tag & 7);
    return true;
  }

  bool ReadVarint(uint64_t* value) {
    *value = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      if (pos_ >= data_.size()) return false;
      const auto byte = static_cast<unsigned char>(data_[pos_++]);
      *value |= static_cast<uint64_t>(byte & 0x7F) << shift;
      if ((byte & 0x80) == 0) return true;
    }
    return false;
  }

  bool ReadBytes(std::string_view* value) {
    uint64_t size = 0;
    if (!ReadVarint(&size) || size > data_.size() - pos_) return false;
    *value = data_.substr(pos_, size);
    pos_ += size;
    return true;
  }

  bool ReadFloat(float* value) {
    if (data_.size() - pos_ < 4) return false;
    uint32_t bits = 0;
    for (int i = 3; i >= 0; --i) bits = (bits << 8) | static_cast<unsigned char>(data_[pos_ + i]);
    std::memcpy(value, &bits, sizeof(bits));
    pos_ += 4;
    return true;
  }

  // Skips a field this reader does not use.
  bool Skip(uint32_t wire_type) {
    uint64_t ignored = 0;
    std::string_view ignored_bytes;
    switch (wire_type) {
      case 0:
        return ReadVarint(&ignored);
      case 1:
        return Advance(8);
      case 2:
        return ReadBytes(&ignored_bytes);
      case 5:
        return Advance(4);
      default:  // groups (3, 4) never appear in a ModelProto
        return false;
    }
  }

 private:
  bool Advance(size_t n) {
    if (data_.size() - pos_ < n) return false;
    pos_ += n;
    return true;
  }

  std::string_view data_;
  size_t pos_ = 0;
};

// NormalizerSpec fields, with protobuf's defaults.
struct NormalizerOptions {
  bool add_dummy_prefix = true;
  bool remove_extra_whitespaces = true;
  bool escape_whitespaces = true;
  bool has_rule = false;  // a precompiled normalization rule (NFKC and the like)
};

absl::StatusOr<NormalizerOptions> ReadNormalizerSpec(std::string_view data) {
  NormalizerOptions options;
  WireReader reader(data);
  while (!reader.done()) {
    uint32_t field = 0;
    uint32_t wire_type = 0;
    if (!reader.ReadTag(&field, &wire_type)) {
      return absl::InvalidArgumentError("malformed normalizer_spec");
    }
    uint64_t value = 0;
    std::string_view bytes;
    bool ok = true;
    if (wire_type == 0) {
      ok = reader.ReadVarint(&value);
      if (field == 3) options.add_dummy_prefix = value != 0;
      if (field == 4) options.remove_extra_whitespaces = value != 0;
      if (field == 5) options.escape_whitespaces = value != 0;
    } else if (wire_type == 2) {
      ok = reader.ReadBytes(&bytes);
      if (field == 2 && !bytes.empty()) options.has_rule = true;
    } else {
      ok = reader.Skip(wire_type);
    }
    if (!ok) return absl::InvalidArgumentError("malformed normalizer_spec");
  }
  return options;
}

// A SentencePiece BPE model and the library's encoding and decoding, see the file comment.
class SentencePieceModelImpl {
 public:
  SentencePieceModelImpl() = default;
  // The lookup tables point into `pieces_`.
  SentencePieceModelImpl(const SentencePieceModelImpl&) = delete;
  SentencePieceModelImpl& operator=(const SentencePieceModelImpl&) = delete;

  // Reads a serialized ModelProto; the error says what is wrong with it.
  absl::Status Load(std::string_view serialized);

  int size() const { return static_cast<int>(pieces_.size()); }
  int bos_id() const { return ControlId(bos_piece_); }
  int eos_id() const { return ControlId(eos_piece_); }
  const std::string& IdToPiece(int id) const { return pieces_[id].text; }
  std::vector<int> Encode(std::string_view text) const;
  // Every id must lie in [0, size()).
  std::string Decode(const std::vector<int>& ids) const;

 private:
  struct Piece {
    std::string text;
    float score = 0;
    int type = kNormal;
  };

  absl::Status ReadModel(std::string_view data);
  absl::Status ReadTrainerSpec(std::string_view data);
  absl::Status Index();

  int ControlId(const std::string& piece) const;
  // SentencePiece's PieceToId: reserved pieces first, then normal ones, else unk.
  int PieceToId(std::string_view piece) const;
  // Length of the longest user-defined piece `text` starts with, or 0.
  size_t MatchUserDefined(std::string_view text) const;
  std::string Normalize(std::string_view input) const;
  // bpe::Model::Encode: (piece, id) pairs covering `normalized`.
  std::vector<std::pair<std::string_view, int>> EncodeBpe(std::string_view normalized) const;

  std::vector<Piece> pieces_;
  std::unordered_map<std::string_view, int> normal_ids_;    // NORMAL, USER_DEFINED, UNUSED
  std::unordered_map<std::string_view, int> reserved_ids_;  // UNKNOWN, CONTROL, BYTE
  std::unordered_set<std::string_view> user_defined_;
  size_t max_user_defined_len_ = 0;
  std::array<int, 256> byte_ids_{};
  std::vector<int> id_to_byte_;  // -1 for pieces that are not bytes
  int unk_id_ = -1;

  // TrainerSpec fields, with protobuf's defaults.
  int model_type_ = kModelTypeUnigram;
  bool byte_fallback_ = false;
  bool treat_whitespace_as_suffix_ = false;
  std::string bos_piece_ = "<s>";
  std::string eos_piece_ = "</s>";
  std::string unk_surface_ = " \xE2\x81\x87 ";
  NormalizerOptions normalizer_;
};

absl::Status SentencePieceModelImpl::Load(std::string_view serialized) {
  VLC_RETURN_IF_ERROR(ReadModel(serialized));
  return Index();
}

absl::Status SentencePieceModelImpl::ReadModel(std::string_view data) {
  const auto malformed = [] { return absl::InvalidArgumentError("not a SentencePiece model"); };
  WireReader reader(data);
  while (!reader.done()) {
    uint32_t field = 0;
    uint32_t wire_type = 0;
    if (!reader.ReadTag(&field, &wire_type)) return malformed();
    std::string_view bytes;
    if (!(wire_type == 2 ? reader.ReadBytes(&bytes) : reader.Skip(wire_type))) {
      return malformed();
    }
    if (field == 1 && wire_type == 2) {  // pieces
      Piece piece;
      WireReader r(bytes);
      while (!r.done()) {
        uint32_t f = 0;
        uint32_t w = 0;
        if (!r.ReadTag(&f, &w)) return malformed();
        std::string_view text;
        uint64_t type = 0;
        if (f == 1 && w == 2) {
          if (!r.ReadBytes(&text)) return malformed();
          piece.text = std::string(text);
        } else if (f == 2 && w == 5) {
          if (!r.ReadFloat(&piece.score)) return malformed();
        } else if (f == 3 && w == 0) {
          if (!r.ReadVarint(&type)) return malformed();
          piece.type = static_cast<int>(type);
        } else if (!r.Skip(w)) {
          return malformed();
        }
      }
      pieces_.push_back(std::move(piece));
    } else if (field == 2 && wire_type == 2) {
      if (auto status = ReadTrainerSpec(bytes); !status.ok()) return status;
    } else if (field == 3 && wire_type == 2) {
      auto options = ReadNormalizerSpec(bytes);
      if (!options.ok()) return options.status();
      normalizer_ = *options;
    } else if (field == 5 && wire_type == 2) {
      auto options = ReadNormalizerSpec(bytes);
      if (!options.ok()) return options.status();
      if (options->has_rule) {
        return absl::InvalidArgumentError("denormalization rules are not supported");
      }
    }
  }
  if (model_type_ != kModelTypeBpe) {
    return absl::InvalidArgumentError(absl::StrCat(
        "only BPE SentencePiece models (as Llama and Mistral use) are supported; this one is ",
        model_type_ == kModelTypeUnigram ? "a unigram model"
                                         : absl::StrCat("of type ", model_type_)));
  }
  if (normalizer_.has_rule) {
    return absl::InvalidArgumentError(
        "only the identity normalization (as Llama and Mistral use) is supported; this model "
        "carries a precompiled normalization rule");
  }
  return absl::OkStatus();
}

absl::Status SentencePieceModelImpl::ReadTrainerSpec(std::string_view data) {
  WireReader reader(data);
  while (!reader.done()) {
    uint32_t field = 0;
    uint32_t wire_type = 0;
    if (!reader.ReadTag(&field, &wire_type)) {
      return absl::InvalidArgumentError("malformed trainer_spec");
    }
    uint64_t value = 0;
    std::string_view bytes;
    bool ok = true;
    if (wire_type == 0) {
      ok = reader.ReadVarint(&value);
      switch (field) {
        case 3:
          model_type_ = static_cast<int>(value);
          break;
        case 24:
          treat_whitespace_as_suffix_ = value != 0;
          break;
        case 35:
          byte_fallback_ = value != 0;
          break;
        default:
          break;
      }
    } else if (wire_type == 2) {
      ok = reader.ReadBytes(&bytes);
      switch (field) {
        case 44:
          unk_surface_ = std::string(bytes);
          break;
        case 46:
          bos_piece_ = std::string(bytes);
          break;
        case 47:
          eos_piece_ = std::string(bytes);
          break;
        default:
          break;
      }
    } else {
      ok = reader.Skip(wire_type);
    }
    if (!ok) return absl::InvalidArgumentError("malformed trainer_spec");
  }
  // SentencePiece substitutes the defaults for empty special pieces too.
  if (bos_piece_.empty()) bos_piece_ = "<s>";
  if (eos_piece_.empty()) eos_piece_ = "</s>";
  return absl::OkStatus();
}

// The checks of SentencePiece's ModelInterface::InitializePieces, and the lookup tables.
absl::Status SentencePieceModelImpl::Index() {
  if (pieces_.empty()) return absl::InvalidArgumentError("the model has no pieces");
  id_to_byte_.assign(pieces_.size(), -1);
  std::array<bool, 256> byte_found{};
  for (int id = 0; id < size(); ++id) {
    const Piece& piece = pieces_[id];
    if (piece.text.empty()) return absl::InvalidArgumentError("a piece is empty");
    if (piece.type < kNormal || piece.type > kByte) {
      return absl::InvalidArgumentError(
          absl::StrCat("piece ", id, " has unknown type ", piece.type));
    }
    const bool normal =
        piece.type == kNormal || piece.type == kUserDefined || piece.type == kUnused;
    auto& table = normal ? normal_ids_ : reserved_ids_;
    if (!table.emplace(piece.text, id).second) {
      return absl::InvalidArgumentError(
          absl::StrCat("piece \"", piece.text, "\" is defined twice"));
    }
    if (piece.type == kUserDefined) {
      user_defined_.insert(piece.text);
      max_user_defined_len_ = std::max(max_user_defined_len_, piece.text.size());
    }
    if (piece.type == kUnknown) {
      if (unk_id_ >= 0) return absl::InvalidArgumentError("more than one unknown piece");
      unk_id_ = id;
    }
    if (piece.type == kByte) {
      const int byte = PieceToByte(piece.text);
      if (!byte_fallback_ || byte < 0) {
        return absl::InvalidArgumentError(absl::StrCat("unexpected byte piece ", piece.text));
      }
      byte_found[byte] = true;
      byte_ids_[byte] = id;
      id_to_byte_[id] = byte;
    }
  }
  if (unk_id_ < 0) return absl::InvalidArgumentError("the model has no unknown piece");
  if (byte_fallback_ &&
      std::find(byte_found.begin(), byte_found.end(), false) != byte_found.end()) {
    return absl::InvalidArgumentError("byte_fallback is set but not all 256 byte pieces exist");
  }
  return absl::OkStatus();
}

int SentencePieceModelImpl::ControlId(const std::string& piece) const {
  const int id = PieceToId(piece);
  return pieces_[id].type == kControl ? id : -1;
}

int SentencePieceModelImpl::PieceToId(std::string_view piece) const {
  if (auto it = reserved_ids_.find(piece); it != reserved_ids_.end()) return it->second;
  if (auto it = normal_ids_.find(piece); it != normal_ids_.end()) return it->second;
  return unk_id_;
}

size_t SentencePieceModelImpl::MatchUserDefined(std::string_view text) const {
  for (size_t len = std::min(max_user_defined_len_, text.size()); len > 0; --len) {
    if (user_defined_.count(text.substr(0, len)) > 0) return len;
  }
  return 0;
}

// normalizer::Normalizer::Normalize without a precompiled rule: user-defined pieces pass
// through whole, malformed UTF-8 becomes U+FFFD byte by byte, spaces become U+2581 and the dummy
// prefix is added; extra whitespace is removed when the model asks for it.
std::string SentencePieceModelImpl::Normalize(std::string_view input) const {
  const auto next_unit = [this](std::string_view s) -> std::pair<std::string_view, size_t> {
    if (const size_t n = MatchUserDefined(s); n > 0) return {s.substr(0, n), n};
    size_t len = 0;
    if (!DecodeUtf8Prefix(s, &len)) return {kReplacementChar, 1};
    return {s.substr(0, len), len};
  };
  const std::string_view space = normalizer_.escape_whitespaces ? kSpaceSymbol : " ";

  std::string out;
  if (input.empty()) return out;
  if (normalizer_.remove_extra_whitespaces) {
    while (!input.empty()) {
      const auto [unit, consumed] = next_unit(input);
      if (unit != " ") break;
      input.remove_prefix(consumed);
    }
    if (input.empty()) return out;
  }
  if (!treat_whitespace_as_suffix_ && normalizer_.add_dummy_prefix) out.append(space);

  bool is_prev_space = normalizer_.remove_extra_whitespaces;
  while (!input.empty()) {
    auto [unit, consumed] = next_unit(input);
    while (is_prev_space && ConsumePrefix(&unit, " ")) {
    }
    if (!unit.empty()) {
      for (char c : unit) {
        if (c == ' ') {
          out.append(space);
        } else {
          out.push_back(c);
        }
      }
      is_prev_space = EndsWith(unit, " ");
    }
    input.remove_prefix(consumed);
    if (!normalizer_.remove_extra_whitespaces) is_prev_space = false;
  }
  if (normalizer_.remove_extra_whitespaces) {
    while (EndsWith(out, space)) out.resize(out.size() - space.size());
  }
  if (treat_whitespace_as_suffix_ && normalizer_.add_dummy_prefix) out.append(space);
  return out;
}

// bpe::Model::SampleEncode without dropout: start from characters (user-defined pieces frozen
// whole) and repeatedly merge the adjacent pair whose concatenation is the highest-scoring piece,
// the leftmost first on ties; pieces marked UNUSED are split back into the pairs they came from.
std::vector<std::pair<std::string_view, int>> SentencePieceModelImpl::EncodeBpe(
    std::string_view normalized) const {
  struct Symbol {
    int prev;
    int next;
    bool freeze;
    std::string_view piece;
  };
  struct Pair {
    int left;
    int right;
    float score;
    size_t size;
  };
  const auto worse = [](const Pair& a, const Pair& b) {
    return a.score < b.score || (a.score == b.score && a.left > b.left);
  };
  std::priority_queue<Pair, std::vector<Pair>, decltype(worse)> agenda(worse);
  std::vector<Symbol> symbols;
  std::unordered_map<std::string_view, std::pair<std::string_view, std::string_view>> rev_merge;

  const auto maybe_add_pair = [&](int left, int right) {
    if (left == -1 || right == -1 || symbols[left].freeze || symbols[right].freeze) return;
    const std::string_view piece(symbols[left].piece.data(),
                                 symbols[left].piece.size() + symbols[right].piece.size());
    const auto it = normal_ids_.find(piece);
    if (it == normal_ids_.end()) return;
    agenda.push(Pair{left, right, pieces_[it->second].score, piece.size()});
    if (pieces_[it->second].type == kUnused) {
      rev_merge[piece] = {symbols[left].piece, symbols[right].piece};
    }
  };

  std::string_view rest = normalized;
  while (!rest.empty()) {
    const size_t user_len = MatchUserDefined(rest);
    const size_t len = user_len > 0 ? user_len : std::min(rest.size(), OneCharLen(rest[0]));
    const int index = static_cast<int>(symbols.size());
    symbols.push_back(
        Symbol{index - 1, rest.size() == len ? -1 : index + 1, user_len > 0, rest.substr(0, len)});
    rest.remove_prefix(len);
  }
  if (symbols.empty()) return {};
  for (size_t i = 1; i < symbols.size(); ++i) maybe_add_pair(static_cast<int>(i) - 1, i);

  while (!agenda.empty()) {
    const Pair top = agenda.top();
    agenda.pop();
    Symbol& left = symbols[top.left];
    Symbol& right = symbols[top.right];
    // A pair whose symbols changed since it was queued is stale.
    if (left.piece.empty() || right.piece.empty() ||
        left.piece.size() + right.piece.size() != top.size) {
      continue;
    }
    left.piece = std::string_view(left.piece.data(), left.piece.size() + right.piece.size());
    left.next = right.next;
    if (right.next >= 0) symbols[right.next].prev = top.left;
    right.piece = std::string_view();
    maybe_add_pair(left.prev, top.left);
    maybe_add_pair(top.left, left.next);
  }

  std::vector<std::pair<std::string_view, int>> out;
  const auto resegment = [&](std::string_view w, const auto& self) -> void {
    const int id = PieceToId(w);
    const auto it = rev_merge.find(w);
    if (pieces_[id].type != kUnused || it == rev_merge.end()) {
      out.emplace_back(w, id);
      return;
    }
    self(it->second.first, self);
    self(it->second.second, self);
  };
  for (int i = 0; i != -1; i = symbols[i].next) resegment(symbols[i].piece, resegment);
  return out;
}

// SentencePieceProcessor::Encode's ids: unknown pieces become their UTF-8 bytes when the model
// has byte pieces, otherwise runs of unknown pieces collapse into one unk.
std::vector<int> SentencePieceModelImpl::Encode(std::string_view text) const {
  std::vector<int> ids;
  bool prev_unknown = false;
  const std::string normalized = Normalize(text);  // the pieces below point into it
  for (const auto& [piece, id] : EncodeBpe(normalized)) {
    const bool unknown = pieces_[id].type == kUnknown;
    if (unknown && byte_fallback_) {
      for (char c : piece) ids.push_back(byte_ids_[static_cast<unsigned char>(c)]);
    } else if (!(unknown && prev_unknown)) {
      ids.push_back(id);
    }
    prev_unknown = unknown;
  }
  return ids;
}

// SentencePieceProcessor::Decode: control pieces vanish, unk shows as unk_surface, U+2581 turns
// back into a space, runs of byte pieces are joined into UTF-8 (U+FFFD for each byte that does not
// form a character), and the dummy prefix, the first piece's leading space, is dropped.
std::string SentencePieceModelImpl::Decode(const std::vector<int>& ids) const {
  std::string text;
  std::string bytes;
  const auto flush_bytes = [&] {
    std::string_view rest(bytes);
    while (!rest.empty()) {
      size_t len = 0;
      if (DecodeUtf8Prefix(rest, &len)) {
        text.append(rest.substr(0, len));
      } else {
        text.append(kReplacementChar);
      }
      rest.remove_prefix(len);
    }
    bytes.clear();
  };

  bool is_bos_ws = true;  // still expecting the dummy prefix
  bool bos_ws_seen = false;
  for (int id : ids) {
    if (id_to_byte_[id] >= 0) {
      bytes.push_back(static_cast<char>(id_to_byte_[id]));
      continue;
    }
    flush_bytes();
    if (bos_ws_seen || !text.empty()) is_bos_ws = false;
    bos_ws_seen = false;
    const Piece& piece = pieces_[id];
    if (piece.type == kControl) continue;
    if (piece.type == kUnknown) {
      text.append(unk_surface_);
      continue;
    }
    std::string_view w = piece.text;
    if (is_bos_ws && (normalizer_.add_dummy_prefix || normalizer_.remove_extra_whitespaces)) {
      bos_ws_seen = ConsumePrefix(&w, kSpaceSymbol);
      // A model that removes extra whitespace drops every leading space, piece by piece.
      if (normalizer_.remove_extra_whitespaces) bos_ws_seen = false;
    }
    for (size_t pos = w.find(kSpaceSymbol); pos != std::string_view::npos;
         pos = w.find(kSpaceSymbol)) {
      text.append(w.substr(0, pos)).push_back(' ');
      w.remove_prefix(pos + kSpaceSymbol.size());
    }
    text.append(w);
  }
  flush_bytes();
  return text;
}

}  // namespace
}  // namespace vlc::engine

namespace vlc::engine {

// The name the header forward-declares; the implementation lives in the anonymous namespace.
class SentencePieceModel : public SentencePieceModelImpl {};
namespace {

size_t CountOccurrences(std::string_view haystack, std::string_view needle) {
  size_t count = 0;
  for (size_t pos = haystack.find(needle); pos != std::string_view::npos;
       pos = haystack.find(needle, pos + needle.size())) {
    ++count;
  }
  return count;
}

// Length of `text` without a trailing UTF-8 sequence whose continuation bytes have not arrived.
size_t CompleteUtf8Prefix(const std::string& text) {
  const size_t n = text.size();
  // A sequence is at most 4 bytes, so its lead byte is among the last 4.
  for (size_t back = 1; back <= std::min<size_t>(4, n); ++back) {
    if (IsTrailByte(text[n - back])) continue;
    return back < OneCharLen(text[n - back]) ? n - back : n;
  }
  return n;
}

// Length of the part of a partial decode that later ids cannot change: drops an incomplete
// UTF-8 tail and the U+FFFD characters decoding writes for byte pieces that do not yet form a
// whole character (the next byte piece may complete them).
size_t StablePrefixLength(const std::string& text) {
  size_t len = CompleteUtf8Prefix(text);
  while (len >= kReplacementChar.size() &&
         std::string_view(text).substr(len - kReplacementChar.size(), kReplacementChar.size()) ==
             kReplacementChar) {
    len -= kReplacementChar.size();
  }
  return len;
}

}  // namespace

Tokenizer::~Tokenizer() = default;

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::Load(const std::string& path,
                                                           int image_token_id) {
  namespace fs = std::filesystem;
  std::error_code ec;
  std::string model_path = path;
  if (fs::is_directory(path, ec)) {
    model_path = (fs::path(path) / "tokenizer.model").string();
    if (!fs::is_regular_file(model_path, ec)) {
      return absl::NotFoundError(absl::StrCat("no tokenizer.model in ", path));
    }
  } else if (!fs::is_regular_file(path, ec)) {
    return absl::NotFoundError(absl::StrCat("tokenizer not found: ", path));
  }

  std::ifstream in(model_path, std::ios::binary);
  std::ostringstream contents;
  contents << in.rdbuf();
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read ", model_path));
  auto sp = std::make_unique<SentencePieceModel>();
  if (const absl::Status status = sp->Load(contents.str()); !status.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot load SentencePiece model ", model_path, ": ", status.message()));
  }
  // LLaVA's image token is appended after the SentencePiece vocabulary; an id inside it would
  // make a real text piece indistinguishable from a visual token.
  if (image_token_id < sp->size()) {
    return absl::InvalidArgumentError(absl::StrCat("image_token_id ", image_token_id,
                                                   " lies inside the tokenizer vocabulary of ",
                                                   sp->size(), " pieces (", model_path, ")"));
  }

  std::unique_ptr<Tokenizer> tok(new Tokenizer());
  tok->sp_ = std::move(sp);
  tok->image_token_id_ = image_token_id;
  return tok;
}

int Tokenizer::bos_id() const { return sp_->bos_id(); }
int Tokenizer::eos_id() const { return sp_->eos_id(); }
int Tokenizer::vocab_size() const { return sp_->size(); }

std::vector<int> Tokenizer::Encode(const std::string& text, bool add_bos) const {
  std::vector<int> ids;
  if (add_bos) ids.push_back(bos_id());
  const std::vector<int> pieces = sp_->Encode(text);
  ids.insert(ids.end(), pieces.begin(), pieces.end());
  return ids;
}

std::string Tokenizer::Decode(const std::vector<int>& ids) const {
  std::vector<int> kept;
  kept.reserve(ids.size());
  for (int id : ids) {
    if (id < 0 || id >= vocab_size() || id == bos_id() || id == eos_id() || id == image_token_id_) {
      continue;
    }
    kept.push_back(id);
  }
  return sp_->Decode(kept);
}

absl::StatusOr<std::vector<int>> Tokenizer::EncodePrompt(const std::string& prompt,
                                                         int visual_tokens,
                                                         const std::string& chat_template) const {
  if (absl::StrContains(prompt, kImagePlaceholder)) {
    return absl::InvalidArgumentError(
        "the prompt must not contain <image>; media is passed separately");
  }
  if (visual_tokens < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("visual_tokens must not be negative, got ", visual_tokens));
  }
  const size_t prompt_slots = CountOccurrences(chat_template, kPromptPlaceholder);
  if (prompt_slots != 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("the chat template must contain {prompt} exactly once, found ", prompt_slots,
                     ": \"", chat_template, "\""));
  }
  const size_t image_slots = CountOccurrences(chat_template, kImagePlaceholder);
  if (image_slots > 1 || (visual_tokens > 0 && image_slots != 1)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the chat template must contain <image> exactly once when media is given, found ",
        image_slots, ": \"", chat_template, "\""));
  }

  // Split the template before substituting the prompt, so the user's text can never take part in
  // forming a placeholder.
  std::string before = chat_template;
  std::string after;
  if (image_slots == 1) {
    const size_t pos = chat_template.find(kImagePlaceholder);
    before = chat_template.substr(0, pos);
    after = chat_template.substr(pos + std::strlen(kImagePlaceholder));
    if (visual_tokens == 0) {
      // Text-only request: drop the placeholder together with the line break that follows it, so
      // the prompt reads as if the template had been written without media.
      if (absl::StartsWith(after, "\n")) after.erase(0, 1);
      before += after;
      after.clear();
    }
  }
  const auto substitute = [&prompt](std::string* part) {
    const size_t pos = part->find(kPromptPlaceholder);
    if (pos != std::string::npos) part->replace(pos, std::strlen(kPromptPlaceholder), prompt);
  };
  substitute(&before);
  substitute(&after);

  std::vector<int> ids = Encode(before, /*add_bos=*/true);
  if (visual_tokens == 0) return ids;
  ids.insert(ids.end(), visual_tokens, image_token_id_);

  // Text after the image continues the sentence, so it should not start with the "▁" dummy
  // prefix SentencePiece puts before every encoded string (Hugging Face's Llama tokenizer with
  // legacy=false behaves alike). The rule kept here is the simple, deterministic part of that:
  // when the dummy prefix comes out as a piece of its own, as before "\n", it is dropped; when
  // BPE merged it into the first word ("▁word") the piece is kept as SentencePiece chose it.
  std::vector<int> tail = Encode(after, /*add_bos=*/false);
  if (!tail.empty() && sp_->IdToPiece(tail.front()) == kSpaceSymbol) tail.erase(tail.begin());
  ids.insert(ids.end(), tail.begin(), tail.end());
  return ids;
}

std::string StreamingDetokenizer::Push(int id) {
  ids_.push_back(id);
  const std::string text = tok_->Decode(ids_);
  const size_t stable = StablePrefixLength(text);
  // Decoding more ids only appends to the text, except at the held-back tail; the guard keeps a
  // surprise from ever un-emitting text.
  if (stable <= emitted_.size() || text.compare(0, emitted_.size(), emitted_) != 0) return "";
  std::string delta = text.substr(emitted_.size(), stable - emitted_.size());
  emitted_.append(delta);
  return delta;
}

std::string StreamingDetokenizer::Flush() {
  const std::string text = tok_->Decode(ids_);
  if (text.size() <= emitted_.size() || text.compare(0, emitted_.size(), emitted_) != 0) {
    return "";
  }
  std::string rest = text.substr(emitted_.size());
  emitted_ = text;
  return rest;
}

}  // namespace vlc::engine
