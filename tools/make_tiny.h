// Writes a random tiny LLaVA checkpoint in the exact Hugging Face layout (config.json,
// model.safetensors or shards with model.safetensors.index.json, preprocessor_config.json, and a
// SentencePiece tokenizer.model trained on a small built-in text). Tests and benchmarks use it
// in place of a downloaded model.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "engine/config.h"

namespace vlc::tools {

struct TinyOptions {
  uint64_t seed = 0;
  std::string text_model_type = "llama";  // "llama" or "mistral"
  bool new_key_layout = false;             // model.language_model.* instead of language_model.model.*
  std::string dtype = "F32";               // F32, F16 or BF16 on disk
  int num_shards = 1;                      // > 1 writes model-0000i-of-0000n.safetensors + index
  std::string vision_feature_select_strategy = "default";
  float init_std = 0.02f;                  // weights ~ N(0, init_std); norms start at 1
  // Language model size (benchmarks that need more work per token than the tiny default);
  // by default 4 query and 2 KV heads, head_dim = text_hidden_size / text_heads.
  int text_hidden_size = 64;
  int text_intermediate_size = 128;
  int text_layers = 2;
  int text_heads = 4;
  int text_kv_heads = 2;
  // Rows of the language model's embedding and LM head. 0 keeps the trained tokenizer's pieces
  // plus the image token, padded to a multiple of 8. A larger size pads the tokenizer with unused
  // control pieces (<unused_N>) to text_vocab_size - 1 pieces, so the image token is the last id:
  // the vocabulary of a real-sized model for benchmarks, with a tokenizer that covers every id.
  int text_vocab_size = 0;
  // Vision tower size (CLIP ViT): hidden, MLP, layers, heads, and the square input's side and
  // patch side in pixels; (image_size / patch_size)^2 patches become visual tokens.
  int vision_hidden_size = 32;
  int vision_intermediate_size = 64;
  int vision_layers = 2;
  int vision_heads = 2;
  int image_size = 32;
  int patch_size = 8;
};

// The config the tiny checkpoint is written with (small enough that a forward pass takes
// milliseconds: 2 vision and 2 text layers, GQA with 4 query and 2 KV heads). The text vocabulary
// is the tokenizer's size plus the image token, as in LLaVA.
engine::LlavaConfig TinyConfig(const TinyOptions& opts, int tokenizer_vocab_size);

// Trains a byte-fallback BPE tokenizer on `corpus` (Llama's settings: split digits, unk/bos/eos =
// 0/1/2) and writes it to `path` as a SentencePiece tokenizer.model. Returns the number of pieces:
// `vocab_size`, or fewer when the corpus runs out of pairs to merge.
absl::StatusOr<int> WriteBpeTokenizer(const std::vector<std::string>& corpus, int vocab_size,
                                      const std::string& path);

absl::Status MakeTinyCheckpoint(const std::string& out_dir, const TinyOptions& opts);

// A PNG of `width` x `height` uniform random pixels, the same bytes for the same seed: a picture
// for tests and benchmarks to send.
std::string RandomPng(int width, int height, int seed);

}  // namespace vlc::tools
