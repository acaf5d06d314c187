#include "engine/chat_template.h"

#include <algorithm>
#include <cstddef>

#include "absl/strings/str_cat.h"
#include "engine/tokenizer.h"

namespace vlc::engine {
namespace {

size_t Count(const std::string& s, const std::string& what) {
  size_t n = 0;
  for (size_t pos = s.find(what); pos != std::string::npos; pos = s.find(what, pos + what.size())) {
    ++n;
  }
  return n;
}

}  // namespace

ChatTemplate::ChatTemplate() : ChatTemplate(*Parse(kDefaultChatTemplate)) {}

absl::StatusOr<ChatTemplate> ChatTemplate::Parse(const std::string& text,
                                                 const std::string& turn_prefix) {
  const auto bad = [&](const std::string& why) {
    return absl::InvalidArgumentError(absl::StrCat("chat template \"", text, "\": ", why));
  };
  if (Count(text, kPromptPlaceholder) != 1) return bad("needs {prompt} exactly once");
  const size_t images = Count(text, kImagePlaceholder);
  if (images > 1) return bad("has <image> more than once");
  const size_t prompt_at = text.find(kPromptPlaceholder);
  const size_t image_at = text.find(kImagePlaceholder);
  if (images == 1 && image_at > prompt_at) {
    return bad("<image> must come before {prompt} (a session's media come before its turns)");
  }
  if (Count(turn_prefix, kImagePlaceholder) > 0 || Count(turn_prefix, kPromptPlaceholder) > 0) {
    return bad(absl::StrCat("the turn prefix \"", turn_prefix,
                            "\" must not hold <image> or {prompt}"));
  }
  ChatTemplate t{Unparsed{}};
  t.text_ = text;
  t.head_ = text.substr(0, prompt_at);
  t.tail_ = text.substr(prompt_at + std::string(kPromptPlaceholder).size());
  t.turn_prefix_ = !turn_prefix.empty() ? turn_prefix
                   : images == 1        ? text.substr(0, image_at)
                                        : t.head_;
  return t;
}

std::vector<int> ChatTemplate::TurnIds(const Tokenizer& tokenizer, const std::string& prompt,
                                       int last_token, bool opening_had_prefix,
                                       int opening_visual_tokens) const {
  std::vector<int> ids;
  if (last_token >= 0) {
    ids.push_back(last_token);
    auto more = tokenizer.Encode(turn_prefix_ + prompt + tail_, /*add_bos=*/false);
    ids.insert(ids.end(), more.begin(), more.end());
  } else if (!opening_had_prefix) {
    // The opening fed EncodePrompt("", media, SessionOpening()); a one-shot prompt with the same
    // media and text is EncodePrompt(prompt, media, text()). Feed what the one-shot prompt has
    // after the opening's ids: SentencePiece splits the boundary differently when the head's
    // text and the turn are tokenised apart ("\n" + "▁what" against "\n" + "what"). Where the
    // opening's ids are not a prefix of the one-shot prompt's (a text-only opening ends in a
    // lone "▁" piece), the turn is tokenised on its own.
    auto opening = tokenizer.EncodePrompt("", opening_visual_tokens, SessionOpening());
    auto one_shot = tokenizer.EncodePrompt(prompt, opening_visual_tokens, text_);
    if (opening.ok() && one_shot.ok() && one_shot->size() > opening->size() &&
        std::equal(opening->begin(), opening->end(), one_shot->begin())) {
      ids.assign(one_shot->begin() + static_cast<std::ptrdiff_t>(opening->size()),
                 one_shot->end());
    } else {
      ids = tokenizer.Encode(prompt + tail_, /*add_bos=*/false);
    }
  } else {
    ids = tokenizer.Encode(" " + prompt + tail_, /*add_bos=*/false);
  }
  return ids;
}

}  // namespace vlc::engine
