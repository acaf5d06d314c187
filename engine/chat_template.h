// The one owner of prompt rules. A chat template such as "USER: <image>\n{prompt} ASSISTANT:" has
// a head (up to {prompt}, with the media's <image>), the user's text, and a tail where the model
// answers. One-shot requests use the whole template; a session's opening is the head with its
// media and an optional prefix text; its first turn continues that text, and every later turn
// follows the previous answer with the turn prefix ("USER: "), the user's text and the tail.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace vlc::engine {

class Tokenizer;

inline constexpr char kDefaultChatTemplate[] = "USER: <image>\n{prompt} ASSISTANT:";
inline constexpr char kPromptPlaceholder[] = "{prompt}";
inline constexpr char kImagePlaceholder[] = "<image>";

class ChatTemplate {
 public:
  // INVALID_ARGUMENT quoting the template unless it holds {prompt} exactly once and <image> at
  // most once, before {prompt}. `turn_prefix` starts every later turn of a session; empty: the
  // template's text before <image> (before {prompt} when there is no <image>).
  static absl::StatusOr<ChatTemplate> Parse(const std::string& text,
                                            const std::string& turn_prefix = "");
  // The default template; never fails.
  ChatTemplate();

  const std::string& text() const { return text_; }
  const std::string& tail() const { return tail_; }
  const std::string& turn_prefix() const { return turn_prefix_; }
  // The template of a session's opening: the head and {prompt} (the prefix text), no tail.
  std::string SessionOpening() const { return head_ + kPromptPlaceholder; }

  // The ids a session turn feeds. `last_token` is the previous answer's last sampled token, which
  // was never fed (< 0 for the first turn); the first turn continues the opening's prefix text
  // (after a space when there was one). Without prefix text, the first turn's ids are those a
  // one-shot prompt with the same media (`opening_visual_tokens` of them) and text has after
  // the opening's.
  std::vector<int> TurnIds(const Tokenizer& tokenizer, const std::string& prompt, int last_token,
                           bool opening_had_prefix, int opening_visual_tokens) const;

 private:
  struct Unparsed {};
  explicit ChatTemplate(Unparsed) {}
  std::string text_, head_, tail_, turn_prefix_;
};

}  // namespace vlc::engine
