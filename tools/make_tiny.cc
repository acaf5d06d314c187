#include "tools/make_tiny.h"

#include <ATen/core/Tensor.h>
#include <c10/core/ScalarType.h>

#include <algorithm>
#include <cctype>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <nlohmann/json.hpp>
#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "engine/safetensors.h"
#include "common/status.h"
#include "engine/tokenizer.h"
#include "tools/random_weights.h"

namespace vlc::tools {
namespace {

namespace fs = std::filesystem;
using engine::LlavaConfig;
using NamedTensors = std::vector<std::pair<std::string, at::Tensor>>;

// Hand-written sentences; TrainingCorpus() adds generated question/answer lines to them so the
// tokenizer learns the words the tests and examples prompt with.
constexpr const char* kSentences[] = {
    "USER: what is shown in the image? ASSISTANT: a red triangle next to a blue circle.",
    "USER: describe the picture. ASSISTANT: there are two squares and one star on a white "
    "background.",
    "USER: how many shapes can you see? ASSISTANT: I can see 4 shapes in this image.",
    "USER: is the circle bigger than the square? ASSISTANT: yes, the circle is bigger.",
    "USER: what is in the video? ASSISTANT: a green ball rolls from the left to the right.",
    "The quick brown fox jumps over the lazy dog.",
    "A picture is worth a thousand words, and a video is worth many pictures.",
    "The model looks at the image and answers the question in a short sentence.",
    "Colours, shapes and numbers are easy to describe: the sky is blue and the grass is green.",
    "Please answer the question about the image with one word.",
    "The cat sat on the mat while the dog slept near the door.",
    "In the morning the sun rises in the east, and in the evening it sets in the west.",
    "Count the objects from left to right and tell me the total.",
    "This is a simple test of the tokenizer with plain English text.",
    "Numbers such as 0, 1, 2, 3, 4, 5, 6, 7, 8 and 9 are split into single digits.",
    "The year 2024 had 366 days, and the meeting started at 10:30.",
    "What do you see? I see a small yellow house with a black roof.",
    "Where is the triangle? The triangle is at the top of the image.",
    "Why is the sky blue? Because air scatters blue light more than red light.",
    "She asked a question, and he gave a clear and honest answer.",
};

constexpr const char* kShapes[] = {"triangle", "square", "circle", "star", "hexagon", "rectangle"};
constexpr const char* kColours[] = {"red",    "green",  "blue",  "yellow",
                                    "purple", "orange", "black", "white"};
constexpr const char* kPlaces[] = {"top", "bottom", "left", "right", "centre"};

std::vector<std::string> TrainingCorpus() {
  std::vector<std::string> lines(std::begin(kSentences), std::end(kSentences));
  const int num_shapes = static_cast<int>(std::size(kShapes));
  const int num_colours = static_cast<int>(std::size(kColours));
  const int num_places = static_cast<int>(std::size(kPlaces));
  for (int s = 0; s < num_shapes; ++s) {
    for (int k = 0; k < 3; ++k) {
      const std::string shape = kShapes[s];
      const std::string colour = kColours[(s * 3 + k) % num_colours];
      const std::string place = kPlaces[(s + k) % num_places];
      const int count = (s * 7 + k * 3) % 10;
      lines.push_back(
          absl::StrCat("what color is the ", shape, "? the ", shape, " is ", colour, "."));
      lines.push_back(absl::StrCat("how many ", shape, "s are there? there are ", count, " ", shape,
                                   "s in the picture."));
      lines.push_back(absl::StrCat("USER: where is the ", colour, " ", shape,
                                   "? ASSISTANT: it is at the ", place, " of the image."));
    }
  }
  return lines;
}

// ---- The tokenizer.
//
// LibTorch loads protobuf 3.21 into this process, and Debian's libsentencepiece_train exports the
// protobuf 3.14 it carries, so SentencePiece's trainer cannot run here (engine/tokenizer.cc, which
// reads the models for the same reason, explains the clash). The tiny tokenizer is therefore
// trained by the plain BPE below, with Llama's settings, and written as a SentencePiece
// ModelProto that the engine, libsentencepiece and Hugging Face all load.

constexpr int kTokenizerVocabSize = 512;         // 3 specials + 256 bytes + characters + merges
constexpr size_t kMaxPieceChars = 16;            // SentencePiece's max_sentencepiece_length
constexpr char kSpaceSymbol[] = "\xe2\x96\x81";  // U+2581, SentencePiece's visible space

// ModelProto.SentencePiece.Type.
constexpr int kPieceNormal = 1;
constexpr int kPieceUnknown = 2;
constexpr int kPieceControl = 3;
constexpr int kPieceByte = 6;

struct Piece {
  std::string text;
  float score = 0;
  int type = kPieceNormal;
};

// UTF-8 characters of `s` (the corpus is valid UTF-8).
std::vector<std::string> SplitChars(const std::string& s) {
  std::vector<std::string> chars;
  for (size_t i = 0; i < s.size();) {
    const auto lead = static_cast<unsigned char>(s[i]);
    const size_t len = lead < 0x80 ? 1 : lead < 0xE0 ? 2 : lead < 0xF0 ? 3 : 4;
    chars.push_back(s.substr(i, len));
    i += len;
  }
  return chars;
}

// The shapes SentencePiece allows with Llama's flags: whitespace only as a prefix (or alone), no
// more than 16 characters, digits on their own (split_digits) and no mixing of letters with
// digits or punctuation (split_by_unicode_script, split_by_number).
bool IsValidPiece(const std::vector<std::string>& chars) {
  if (chars.size() > kMaxPieceChars) return false;
  size_t i = 0;
  while (i < chars.size() && chars[i] == kSpaceSymbol) ++i;
  if (i == chars.size()) return true;
  const auto is_letter = [](const std::string& c) {
    return c.size() > 1 || std::isalpha(static_cast<unsigned char>(c[0])) != 0;
  };
  if (!is_letter(chars[i])) return i + 1 == chars.size();
  for (; i < chars.size(); ++i) {
    if (!is_letter(chars[i]) || chars[i] == kSpaceSymbol) return false;
  }
  return true;
}

// Byte-pair encoding over the corpus' words (a run of spaces and the text up to the next space,
// spaces written as U+2581 and a dummy one in front of each line, as SentencePiece normalizes
// them). Each round merges the most frequent valid adjacent pair (ties: the smaller string), until
// the vocabulary is full or no pair occurs twice. Pieces are scored in the order SentencePiece's
// BPE trainer uses, characters first, then merges from first to last, so encoding replays the
// merges in the order they were learned.
std::vector<Piece> TrainBpePieces(const std::vector<std::string>& lines,
                                  int vocab_size = kTokenizerVocabSize) {
  std::map<std::string, int64_t> word_counts;
  std::map<std::string, int64_t> char_counts;
  for (const std::string& line : lines) {
    std::string word;
    bool in_word_body = false;
    for (const std::string& c :
         SplitChars(kSpaceSymbol + absl::StrReplaceAll(line, {{" ", kSpaceSymbol}}))) {
      ++char_counts[c];
      if (c == kSpaceSymbol && in_word_body) {
        ++word_counts[word];
        word.clear();
        in_word_body = false;
      }
      if (c != kSpaceSymbol) in_word_body = true;
      word += c;
    }
    if (!word.empty()) ++word_counts[word];
  }

  std::vector<Piece> pieces = {
      {"<unk>", 0, kPieceUnknown}, {"<s>", 0, kPieceControl}, {"</s>", 0, kPieceControl}};
  for (int b = 0; b < 256; ++b) {
    char name[8];
    std::snprintf(name, sizeof(name), "<0x%02X>", b);
    pieces.push_back({name, 0, kPieceByte});
  }
  std::vector<std::pair<std::string, int64_t>> chars(char_counts.begin(), char_counts.end());
  std::stable_sort(chars.begin(), chars.end(),
                   [](const auto& a, const auto& b) { return a.second > b.second; });
  float score = 0;
  std::set<std::string> known;
  for (const auto& [c, count] : chars) {
    pieces.push_back({c, score, kPieceNormal});
    score -= 1;
    known.insert(c);
  }

  struct Word {
    std::vector<std::string> symbols;
    int64_t count;
  };
  std::vector<Word> words;
  for (const auto& [text, count] : word_counts) words.push_back({SplitChars(text), count});

  while (static_cast<int>(pieces.size()) < vocab_size) {
    std::map<std::pair<std::string, std::string>, int64_t> pair_counts;
    for (const Word& w : words) {
      for (size_t i = 0; i + 1 < w.symbols.size(); ++i) {
        pair_counts[{w.symbols[i], w.symbols[i + 1]}] += w.count;
      }
    }
    const std::pair<std::string, std::string>* best = nullptr;
    int64_t best_count = 1;  // a pair seen once is not worth a piece
    std::string best_text;
    for (const auto& [pair, count] : pair_counts) {
      std::string text = pair.first + pair.second;
      if (count < best_count || (count == best_count && best != nullptr && text >= best_text)) {
        continue;
      }
      if (!IsValidPiece(SplitChars(text))) continue;
      best = &pair;
      best_count = count;
      best_text = std::move(text);
    }
    if (best == nullptr) break;
    const auto [left, right] = *best;
    if (known.insert(best_text).second) {
      pieces.push_back({best_text, score, kPieceNormal});
      score -= 1;
    }
    for (Word& w : words) {
      std::vector<std::string> merged;
      for (size_t i = 0; i < w.symbols.size(); ++i) {
        if (i + 1 < w.symbols.size() && w.symbols[i] == left && w.symbols[i + 1] == right) {
          merged.push_back(best_text);
          ++i;
        } else {
          merged.push_back(w.symbols[i]);
        }
      }
      w.symbols = std::move(merged);
    }
  }
  return pieces;
}

// A protobuf wire-format writer for the ModelProto fields written here.
class WireWriter {
 public:
  void Int(uint32_t field, int64_t value) {  // int32/int64/enum/bool: negative as 10 bytes
    Tag(field, 0);
    Varint(static_cast<uint64_t>(value));
  }
  void Float(uint32_t field, float value) {
    Tag(field, 5);
    uint32_t bits = 0;
    std::memcpy(&bits, &value, sizeof(bits));
    for (int i = 0; i < 4; ++i) out_.push_back(static_cast<char>((bits >> (8 * i)) & 0xFF));
  }
  void Bytes(uint32_t field, const std::string& value) {
    Tag(field, 2);
    Varint(value.size());
    out_ += value;
  }
  const std::string& str() const { return out_; }

 private:
  void Tag(uint32_t field, uint32_t wire_type) { Varint((field << 3) | wire_type); }
  void Varint(uint64_t v) {
    while (v >= 0x80) {
      out_.push_back(static_cast<char>((v & 0x7F) | 0x80));
      v >>= 7;
    }
    out_.push_back(static_cast<char>(v));
  }
  std::string out_;
};

// The ModelProto: pieces, a TrainerSpec with Llama's flags (BPE, byte fallback, split digits,
// unk/bos/eos = 0/1/2, no pad) and the identity NormalizerSpec without extra-whitespace removal.
std::string SerializeModel(const std::vector<Piece>& pieces) {
  WireWriter model;
  for (const Piece& p : pieces) {
    WireWriter piece;
    piece.Bytes(1, p.text);
    piece.Float(2, p.score);
    if (p.type != kPieceNormal) piece.Int(3, p.type);
    model.Bytes(1, piece.str());
  }
  WireWriter trainer;
  trainer.Int(3, 2);                                    // model_type: BPE
  trainer.Int(4, static_cast<int64_t>(pieces.size()));  // vocab_size
  trainer.Float(10, 1.0f);                              // character_coverage
  trainer.Int(25, 1);                                   // split_digits
  trainer.Int(26, 1);                                   // allow_whitespace_only_pieces
  trainer.Int(33, 0);                                   // hard_vocab_limit
  trainer.Int(35, 1);                                   // byte_fallback
  trainer.Int(40, 0);                                   // unk_id
  trainer.Int(41, 1);                                   // bos_id
  trainer.Int(42, 2);                                   // eos_id
  trainer.Int(43, -1);                                  // pad_id
  model.Bytes(2, trainer.str());
  WireWriter normalizer;
  normalizer.Bytes(1, "identity");
  normalizer.Int(3, 1);  // add_dummy_prefix
  normalizer.Int(4, 0);  // remove_extra_whitespaces
  normalizer.Int(5, 1);  // escape_whitespaces
  model.Bytes(3, normalizer.str());
  return model.str();
}

absl::Status WriteFile(const fs::path& path, const std::string& contents) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << contents;
  out.close();
  if (!out) return absl::InternalError(absl::StrCat("cannot write ", path.string()));
  return absl::OkStatus();
}

at::ScalarType DtypeFromName(const std::string& name) {
  if (name == "F16") return at::kHalf;
  if (name == "BF16") return at::kBFloat16;
  return at::kFloat;
}

absl::Status ValidateOptions(const TinyOptions& opts) {
  if (opts.text_model_type != "llama" && opts.text_model_type != "mistral") {
    return absl::InvalidArgumentError(absl::StrCat(
        "text_model_type must be llama or mistral, got \"", opts.text_model_type, "\""));
  }
  if (opts.dtype != "F32" && opts.dtype != "F16" && opts.dtype != "BF16") {
    return absl::InvalidArgumentError(
        absl::StrCat("dtype must be F32, F16 or BF16, got \"", opts.dtype, "\""));
  }
  if (opts.vision_feature_select_strategy != "default" &&
      opts.vision_feature_select_strategy != "full") {
    return absl::InvalidArgumentError(
        absl::StrCat("vision_feature_select_strategy must be default or full, got \"",
                     opts.vision_feature_select_strategy, "\""));
  }
  if (opts.text_hidden_size < 8 || opts.text_hidden_size % 8 != 0 ||
      opts.text_intermediate_size < 1 || opts.text_layers < 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "text sizes must be positive with hidden a multiple of 8 (4 heads, even head_dim); got "
        "hidden ", opts.text_hidden_size, ", intermediate ", opts.text_intermediate_size,
        ", layers ", opts.text_layers));
  }
  if (opts.text_heads < 1 || opts.text_kv_heads < 1 || opts.text_heads % opts.text_kv_heads != 0 ||
      opts.text_hidden_size % opts.text_heads != 0 ||
      (opts.text_hidden_size / opts.text_heads) % 2 != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "text heads must divide the hidden size into an even head_dim, and KV heads the heads; "
        "got hidden ", opts.text_hidden_size, ", heads ", opts.text_heads, ", KV heads ",
        opts.text_kv_heads));
  }
  if (opts.num_shards < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("num_shards must be at least 1, got ", opts.num_shards));
  }
  if (opts.vision_hidden_size < 1 || opts.vision_intermediate_size < 1 || opts.vision_layers < 1 ||
      opts.vision_heads < 1 || opts.vision_hidden_size % opts.vision_heads != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "vision sizes must be positive with the heads dividing the hidden size; got hidden ",
        opts.vision_hidden_size, ", intermediate ", opts.vision_intermediate_size, ", layers ",
        opts.vision_layers, ", heads ", opts.vision_heads));
  }
  if (opts.patch_size < 1 || opts.image_size < opts.patch_size ||
      opts.image_size % opts.patch_size != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("image_size must be a positive multiple of patch_size; got image_size ",
                     opts.image_size, ", patch_size ", opts.patch_size));
  }
  if (opts.text_vocab_size < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("text_vocab_size must be 0 (the tokenizer's) or positive, got ",
                     opts.text_vocab_size));
  }
  return absl::OkStatus();
}

// The shared random weights (tools/random_weights.h) under the Hugging Face keys of the layout
// asked for.
NamedTensors BuildWeights(const LlavaConfig& cfg, const TinyOptions& opts) {
  NamedTensors tensors =
      RandomLlavaWeights(cfg, opts.seed, opts.init_std, DtypeFromName(opts.dtype));
  for (auto& [name, tensor] : tensors) name = HfWeightName(name, opts.new_key_layout);
  return tensors;
}

// model.safetensors, or num_shards contiguous slices of the key list plus the index transformers
// reads (total_size counts the tensor bytes as stored).
absl::Status WriteWeights(const fs::path& out_dir, const NamedTensors& tensors,
                          const TinyOptions& opts) {
  // Weight files from an earlier run with another shard count would be read alongside (or
  // instead of) the new ones; the directory must hold exactly one checkpoint.
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(out_dir, ec)) {
    const std::string file = entry.path().filename().string();
    const bool shard = file.rfind("model-", 0) == 0 && file.find("-of-") != std::string::npos &&
                       entry.path().extension() == ".safetensors";
    if (shard || file == "model.safetensors" || file == "model.safetensors.index.json") {
      fs::remove(entry.path(), ec);
      if (ec) return absl::InternalError(absl::StrCat("cannot remove ", entry.path().string()));
    }
  }
  if (ec) return absl::InternalError(absl::StrCat("cannot list ", out_dir.string()));

  const at::ScalarType dtype = DtypeFromName(opts.dtype);
  const std::map<std::string, std::string> metadata = {{"format", "pt"}};
  if (opts.num_shards == 1) {
    return engine::WriteSafetensors((out_dir / "model.safetensors").string(), tensors, dtype,
                                    metadata);
  }
  const size_t n = static_cast<size_t>(opts.num_shards);
  const int64_t element_size = static_cast<int64_t>(c10::elementSize(dtype));
  nlohmann::json weight_map = nlohmann::json::object();
  int64_t total_size = 0;
  size_t begin = 0;
  for (size_t shard = 0; shard < n; ++shard) {
    // Spread the remainder over the first shards so every shard gets at least one tensor.
    const size_t end = begin + tensors.size() / n + (shard < tensors.size() % n ? 1 : 0);
    char name[64];
    std::snprintf(name, sizeof(name), "model-%05zu-of-%05zu.safetensors", shard + 1, n);
    const NamedTensors part(tensors.begin() + begin, tensors.begin() + end);
    VLC_RETURN_IF_ERROR(engine::WriteSafetensors((out_dir / name).string(), part, dtype, metadata));
    for (const auto& [key, tensor] : part) {
      weight_map[key] = name;
      total_size += tensor.numel() * element_size;
    }
    begin = end;
  }
  const nlohmann::json index = {{"metadata", {{"total_size", total_size}}},
                                {"weight_map", weight_map}};
  return WriteFile(out_dir / "model.safetensors.index.json", index.dump(2) + "\n");
}

}  // namespace

engine::LlavaConfig TinyConfig(const TinyOptions& opts, int tokenizer_vocab_size) {
  LlavaConfig cfg;
  auto& v = cfg.vision;
  v.hidden_size = opts.vision_hidden_size;
  v.intermediate_size = opts.vision_intermediate_size;
  v.num_hidden_layers = opts.vision_layers;
  v.num_attention_heads = opts.vision_heads;
  v.num_channels = 3;
  v.image_size = opts.image_size;
  v.patch_size = opts.patch_size;
  v.layer_norm_eps = 1e-5;
  v.hidden_act = "quick_gelu";

  auto& t = cfg.text;
  t.model_type = opts.text_model_type;
  // The image token is the id right after the SentencePiece vocabulary; the embedding table is
  // padded to a multiple of 8, as LLaVA checkpoints pad theirs, unless a size is asked for.
  t.vocab_size = opts.text_vocab_size > 0 ? opts.text_vocab_size
                                          : (tokenizer_vocab_size + 1 + 7) / 8 * 8;
  t.hidden_size = opts.text_hidden_size;
  t.intermediate_size = opts.text_intermediate_size;
  t.num_hidden_layers = opts.text_layers;
  t.num_attention_heads = opts.text_heads;
  t.num_key_value_heads = opts.text_kv_heads;
  t.head_dim = opts.text_hidden_size / opts.text_heads;
  t.max_position_embeddings = 4096;
  t.rope_theta = opts.text_model_type == "mistral" ? 1000000.0 : 10000.0;
  t.rms_norm_eps = 1e-5;
  t.hidden_act = "silu";
  t.sliding_window = 0;
  t.tie_word_embeddings = false;
  t.bos_token_id = 1;
  t.eos_token_id = 2;

  cfg.image_token_index = tokenizer_vocab_size;
  cfg.vision_feature_layer = -2;
  cfg.vision_feature_select_strategy = opts.vision_feature_select_strategy;
  cfg.projector_hidden_act = "gelu";
  cfg.multimodal_projector_bias = true;
  return cfg;
}

absl::StatusOr<int> WriteBpeTokenizer(const std::vector<std::string>& corpus, int vocab_size,
                                      const std::string& path) {
  if (vocab_size < 260) {
    return absl::InvalidArgumentError(absl::StrCat(
        "vocab_size ", vocab_size, " leaves no room beyond the 3 specials and 256 byte pieces"));
  }
  const std::vector<Piece> pieces = TrainBpePieces(corpus, vocab_size);
  VLC_RETURN_IF_ERROR(WriteFile(path, SerializeModel(pieces)));
  return static_cast<int>(pieces.size());
}

absl::Status MakeTinyCheckpoint(const std::string& out_dir, const TinyOptions& opts) {
  VLC_RETURN_IF_ERROR(ValidateOptions(opts));
  // Everything is built in memory first, so invalid options leave the directory untouched.
  std::vector<Piece> pieces = TrainBpePieces(TrainingCorpus());
  if (opts.text_vocab_size > 0) {
    if (static_cast<size_t>(opts.text_vocab_size) < pieces.size() + 1) {
      return absl::InvalidArgumentError(
          absl::StrCat("text_vocab_size ", opts.text_vocab_size, " is below the tokenizer's ",
                       pieces.size(), " pieces plus the image token"));
    }
    // Unused ids stay decodable: control pieces, which no text ever encodes to.
    for (int id = static_cast<int>(pieces.size()); id < opts.text_vocab_size - 1; ++id) {
      pieces.push_back({absl::StrCat("<unused_", id, ">"), 0.0f, kPieceControl});
    }
  }
  const LlavaConfig cfg = TinyConfig(opts, static_cast<int>(pieces.size()));
  NamedTensors tensors;
  VLC_RETURN_IF_ERROR(
      CatchAll("generating tiny weights", [&] { tensors = BuildWeights(cfg, opts); }));
  if (static_cast<size_t>(opts.num_shards) > tensors.size()) {
    return absl::InvalidArgumentError(absl::StrCat("num_shards ", opts.num_shards, " exceeds the ",
                                                   tensors.size(), " tensors of the checkpoint"));
  }

  const fs::path dir(out_dir);
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) {
    return absl::InternalError(absl::StrCat("cannot create ", out_dir, ": ", ec.message()));
  }
  VLC_RETURN_IF_ERROR(WriteFile(dir / "tokenizer.model", SerializeModel(pieces)));
  // Loading through the engine's tokenizer checks the file just written.
  VLC_ASSIGN_OR_RETURN(auto tokenizer, engine::Tokenizer::Load(out_dir, cfg.image_token_index));
  if (tokenizer->vocab_size() != static_cast<int>(pieces.size())) {
    return absl::InternalError(absl::StrCat("tokenizer.model reads back with ",
                                            tokenizer->vocab_size(), " pieces, not ",
                                            pieces.size()));
  }
  VLC_RETURN_IF_ERROR(WriteWeights(dir, tensors, opts));

  VLC_RETURN_IF_ERROR(WriteFile(dir / "config.json", cfg.ToJson().dump(2) + "\n"));
  engine::PreprocessorConfig preprocessor;
  preprocessor.shortest_edge = cfg.vision.image_size;
  preprocessor.crop_height = cfg.vision.image_size;
  preprocessor.crop_width = cfg.vision.image_size;
  return WriteFile(dir / "preprocessor_config.json", preprocessor.ToJson().dump(2) + "\n");
}

std::string RandomPng(int width, int height, int seed) {
  cv::Mat img(height, width, CV_8UC3);
  cv::RNG rng(seed);  // a local generator: the same seed always draws the same image
  rng.fill(img, cv::RNG::UNIFORM, 0, 256);
  std::vector<uchar> buf;
  cv::imencode(".png", img, buf);
  return std::string(buf.begin(), buf.end());
}

}  // namespace vlc::tools
