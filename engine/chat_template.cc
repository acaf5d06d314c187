#include "engine/chat_template.h"

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
                                       int last_token, bool opening_had_prefix) const {
  std::vector<int> ids;
  if (last_token >= 0) {
    ids.push_back(last_token);
    auto more = tokenizer.Encode(turn_prefix_ + prompt + tail_, /*add_bos=*/false);
    ids.insert(ids.end(), more.begin(), more.end());
  } else {
    ids = tokenizer.Encode((opening_had_prefix ? " " : "") + prompt + tail_, /*add_bos=*/false);
  }
  return ids;
}

}  // namespace vlc::engine
