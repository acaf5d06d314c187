// The text side of a LLaVA prompt: a SentencePiece `tokenizer.model`, the chat template, and the
// image placeholder that expands to one id per visual token.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/chat_template.h"  // the template rules and placeholders

namespace vlc::engine {

class SentencePieceModel;  // tokenizer.cc: our reader of the SentencePiece model format


class Tokenizer {
 public:
  // `path`: a tokenizer.model file, or a model directory holding one. `image_token_id` is the
  // config's image_token_index (an id past the SentencePiece vocabulary, as in LLaVA).
  static absl::StatusOr<std::unique_ptr<Tokenizer>> Load(const std::string& path,
                                                         int image_token_id);
  ~Tokenizer();

  int bos_id() const;
  int eos_id() const;
  int image_token_id() const { return image_token_id_; }
  int vocab_size() const;  // SentencePiece pieces (the image token lies outside)

  // Plain text to ids (no template, no placeholder handling).
  std::vector<int> Encode(const std::string& text, bool add_bos) const;
  // Ids to text; BOS, EOS, the image token and ids outside the vocabulary are skipped.
  std::string Decode(const std::vector<int>& ids) const;

  // Applies `chat_template` (must contain `{prompt}` and, when visual_tokens > 0, exactly one
  // `<image>`) and returns the prompt ids, starting with BOS, where `<image>` became
  // `visual_tokens` copies of image_token_id. A prompt that itself contains `<image>` is an
  // INVALID_ARGUMENT.
  absl::StatusOr<std::vector<int>> EncodePrompt(const std::string& prompt, int visual_tokens,
                                                const std::string& chat_template =
                                                    kDefaultChatTemplate) const;

 private:
  Tokenizer() = default;
  std::unique_ptr<SentencePieceModel> sp_;
  int image_token_id_ = -1;
};

// Turns a growing list of generated ids into text deltas that never split a UTF-8 character or a
// byte-fallback sequence: each call returns only the text that became final.
class StreamingDetokenizer {
 public:
  explicit StreamingDetokenizer(const Tokenizer* tok) : tok_(tok) {}
  std::string Push(int id);
  // Whatever is still held back (e.g. an incomplete UTF-8 sequence at the end).
  std::string Flush();
  const std::string& text() const { return emitted_; }

 private:
  const Tokenizer* tok_;
  std::vector<int> ids_;
  std::string emitted_;
};

}  // namespace vlc::engine
