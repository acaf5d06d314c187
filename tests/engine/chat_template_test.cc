// The prompt rules and the request checks every entry point shares.
#include "engine/chat_template.h"

#include <gtest/gtest.h>

#include "engine/request.h"

namespace vlc::engine {
namespace {

TEST(ChatTemplate, SplitsAroundThePromptAndDerivesTheTurnPrefix) {
  const ChatTemplate def;
  EXPECT_EQ(def.text(), kDefaultChatTemplate);
  EXPECT_EQ(def.turn_prefix(), "USER: ");
  EXPECT_EQ(def.tail(), " ASSISTANT:");
  EXPECT_EQ(def.SessionOpening(), "USER: <image>\n{prompt}");

  auto q = ChatTemplate::Parse("Q: <image>\n{prompt} A:");
  ASSERT_TRUE(q.ok()) << q.status();
  EXPECT_EQ(q->turn_prefix(), "Q: ");
  EXPECT_EQ(q->tail(), " A:");

  auto text_only = ChatTemplate::Parse("<s>[INST] {prompt} [/INST]");
  ASSERT_TRUE(text_only.ok()) << text_only.status();
  EXPECT_EQ(text_only->turn_prefix(), "<s>[INST] ");

  auto system = ChatTemplate::Parse("SYSTEM: be brief.\nUSER: <image>\n{prompt} ASSISTANT:", "USER: ");
  ASSERT_TRUE(system.ok()) << system.status();
  EXPECT_EQ(system->turn_prefix(), "USER: ") << "an explicit prefix keeps the system line out";
}

TEST(ChatTemplate, RejectsTemplatesSessionsCannotUseWithTheReason) {
  for (const auto& [text, why] : std::vector<std::pair<std::string, std::string>>{
           {"USER: <image>", "{prompt} exactly once"},
           {"{prompt} and {prompt}", "{prompt} exactly once"},
           {"<image><image>{prompt}", "<image> more than once"},
           {"{prompt} <image>", "before {prompt}"}}) {
    auto t = ChatTemplate::Parse(text);
    EXPECT_EQ(t.status().code(), absl::StatusCode::kInvalidArgument) << text;
    EXPECT_NE(t.status().message().find(why), std::string::npos) << t.status();
    EXPECT_NE(t.status().message().find(text), std::string::npos) << "quotes the template";
  }
  EXPECT_FALSE(ChatTemplate::Parse("{prompt}", "<image>").ok());
}

TEST(ValidateRequest, NamesTheFieldAndTheLimit) {
  RequestLimits limits;
  limits.media.max_bytes = 100;
  limits.media.max_frames = 2;
  limits.max_new_tokens = 50;
  GenerateRequest ok;
  ok.prompt = "hi";
  ok.sampling.max_new_tokens = 50;
  EXPECT_TRUE(ValidateRequest(ok, limits).ok());

  auto expect = [&](GenerateRequest r, const std::string& words) {
    const absl::Status st = ValidateRequest(r, limits);
    EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << words;
    EXPECT_NE(st.message().find(words), std::string::npos) << st;
  };
  GenerateRequest r = ok;
  r.prompt = "";
  expect(r, "the prompt is empty");
  r.session_opening = true;
  EXPECT_TRUE(ValidateRequest(r, limits).ok()) << "a session's opening needs no prefix text";
  r = ok;
  r.prompt = "look <image> here";
  expect(r, "must not contain <image>");
  r = ok;
  r.media.images = {"a"};
  r.media.video = "v";
  expect(r, "either images or one video");
  r = ok;
  r.media.images = {"a", "b", "c"};
  expect(r, "3 images exceed the limit of 2");
  r = ok;
  r.media.images = {"a", std::string(101, 'x')};
  expect(r, "media.images[1] is 101 bytes, more than the limit of 100");
  r = ok;
  r.media.video = std::string(101, 'x');
  expect(r, "media.video is 101 bytes");
  r = ok;
  r.media.video_frames = 3;
  expect(r, "media.video_frames must be in [0, 2]");
  r = ok;
  r.sampling.max_new_tokens = 51;
  expect(r, "sampling.max_new_tokens 51 exceeds the limit of 50");
  r = ok;
  r.sampling.top_p = 2;
  expect(r, "sampling: ");
  r = ok;
  r.cache_policy = kvcache::PolicyConfig{};
  r.cache_policy->name = "nope";
  expect(r, "cache: ");
}

}  // namespace
}  // namespace vlc::engine
