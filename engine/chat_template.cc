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
                                       bool opening_had_media) const {
  std::vector<int> ids;
  if (last_token >= 0) {
    ids.push_back(last_token);
    auto more = tokenizer.Encode(turn_prefix_ + prompt + tail_, /*add_bos=*/false);
    ids.insert(ids.end(), more.begin(), more.end());
  } else if (!opening_had_prefix) {
    // The opening fed the head's text up to {prompt}; a one-shot prompt tokenises that text and
    // the turn together, and SentencePiece splits the boundary differently when they are apart
    // ("\n" + "▁what" against "\n" + "what"). Tokenise them together and feed what follows the
    // opening's own pieces, so the first turn sees the ids a one-shot prompt would. Where the
    // pieces do not line up (a merge across the boundary), the turn is tokenised on its own.
    // The opening's text as EncodePrompt fed it: after the media when there were any; else the
    // whole head, without the placeholder and the line break after it, from BOS.
    const size_t image_at = head_.rfind(kImagePlaceholder);
    const size_t image_len = std::string(kImagePlaceholder).size();
    const bool after_image = image_at != std::string::npos && opening_had_media;
    std::string opening = head_;
    if (after_image) {
      opening = head_.substr(image_at + image_len);
    } else if (image_at != std::string::npos) {
      std::string rest = head_.substr(image_at + image_len);
      if (!rest.empty() && rest.front() == '\n') rest.erase(0, 1);
      opening = head_.substr(0, image_at) + rest;
    }
    auto encode = [&](const std::string& text) {
      return after_image ? tokenizer.EncodeContinuation(text)
                         : tokenizer.Encode(text, /*add_bos=*/true);
    };
    const std::vector<int> lead = encode(opening);
    const std::vector<int> joint = encode(opening + prompt + tail_);
    if (joint.size() > lead.size() && std::equal(lead.begin(), lead.end(), joint.begin())) {
      ids.assign(joint.begin() + static_cast<std::ptrdiff_t>(lead.size()), joint.end());
    } else {
      ids = tokenizer.Encode(prompt + tail_, /*add_bos=*/false);
    }
  } else {
    ids = tokenizer.Encode(" " + prompt + tail_, /*add_bos=*/false);
  }
  return ids;
}

}  // namespace vlc::engine
