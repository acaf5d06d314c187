// The SentencePiece tokenizer, the chat template with its <image> placeholder, and streaming
// detokenization, checked against the tokenizer vlcache-make-tiny trains.
#include "common/fs.h"
#include "engine/tokenizer.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <fstream>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "engine/chat_template.h"
#include "tools/make_tiny.h"

namespace vlc::engine {
namespace {

namespace fs = std::filesystem;

// Sentences the tiny tokenizer did not all see in training: unseen words go through byte
// fallback or short pieces, so Decode(Encode(s)) == s exercises every path.
const std::vector<std::string>& AsciiSentences() {
  static const std::vector<std::string> kSentences = {
      "what color is the triangle?",
      "The quick brown fox jumps over the lazy dog.",
      "Zebras quietly vex jumping wizards: 42 times, at 3:15 pm!",
      "two  spaces,\ttabs and\nnew lines stay as they are",
      "  leading and trailing spaces  ",
      "symbols like {braces}, [brackets], <angles> & ~tildes~ survive",
  };
  return kSentences;
}

constexpr char kUtf8Text[] = "café naïve Ölfaß — 日本語 😀👍🏽 done";

// Whether `s` is well-formed UTF-8 that ends on a character boundary.
bool IsCompleteUtf8(const std::string& s) {
  size_t i = 0;
  while (i < s.size()) {
    const auto c = static_cast<unsigned char>(s[i]);
    size_t len = 0;
    if (c < 0x80) {
      len = 1;
    } else if ((c & 0xE0) == 0xC0) {
      len = 2;
    } else if ((c & 0xF0) == 0xE0) {
      len = 3;
    } else if ((c & 0xF8) == 0xF0) {
      len = 4;
    } else {
      return false;
    }
    if (i + len > s.size()) return false;
    for (size_t k = 1; k < len; ++k) {
      if ((static_cast<unsigned char>(s[i + k]) & 0xC0) != 0x80) return false;
    }
    i += len;
  }
  return true;
}

class TokenizerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    char tmpl[] = "/tmp/vlc_tokenizer_test_XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = new std::string(tmpl);
    ASSERT_TRUE(tools::MakeTinyCheckpoint(*dir_, tools::TinyOptions{}).ok());
    // The vocabulary size is only known once the model is loaded; LLaVA's image id follows it.
    auto probe = Tokenizer::Load(*dir_, std::numeric_limits<int>::max());
    ASSERT_TRUE(probe.ok()) << probe.status();
    auto tok = Tokenizer::Load(*dir_, (*probe)->vocab_size());
    ASSERT_TRUE(tok.ok()) << tok.status();
    tok_ = tok->release();
  }
  static void TearDownTestSuite() {
    delete tok_;
    tok_ = nullptr;
    if (dir_ != nullptr) RemoveTree(*dir_);
    delete dir_;
    dir_ = nullptr;
  }

  static std::string* dir_;
  static Tokenizer* tok_;
};

std::string* TokenizerTest::dir_ = nullptr;
Tokenizer* TokenizerTest::tok_ = nullptr;

TEST_F(TokenizerTest, HasLlamaSpecialIdsAndImageIdPastTheVocabulary) {
  EXPECT_EQ(tok_->bos_id(), 1);
  EXPECT_EQ(tok_->eos_id(), 2);
  // 3 specials + 256 byte pieces + the corpus' characters and merges, at most the 512 asked for.
  EXPECT_GT(tok_->vocab_size(), 259);
  EXPECT_LE(tok_->vocab_size(), 512);
  EXPECT_EQ(tok_->image_token_id(), tok_->vocab_size());
}

TEST_F(TokenizerTest, LoadsFromTheModelFileItself) {
  auto tok = Tokenizer::Load(*dir_ + "/tokenizer.model", tok_->vocab_size());
  ASSERT_TRUE(tok.ok()) << tok.status();
  EXPECT_EQ((*tok)->Encode("the red circle", true), tok_->Encode("the red circle", true));
}

TEST_F(TokenizerTest, RoundTripsAsciiSentences) {
  for (const std::string& s : AsciiSentences()) {
    const std::vector<int> ids = tok_->Encode(s, /*add_bos=*/false);
    EXPECT_FALSE(ids.empty()) << s;
    EXPECT_EQ(tok_->Decode(ids), s);
  }
}

TEST_F(TokenizerTest, LearnedMultiCharacterPiecesForCorpusWords) {
  const std::string text = "what color is the triangle? the triangle is red.";
  EXPECT_LT(tok_->Encode(text, false).size(), text.size() / 2);
}

TEST_F(TokenizerTest, RoundTripsUtf8ThroughByteFallback) {
  const std::vector<int> ids = tok_->Encode(kUtf8Text, false);
  EXPECT_EQ(tok_->Decode(ids), kUtf8Text);
  // Byte pieces <0x00>..<0xFF> follow the three specials; characters the corpus lacks use them.
  const bool uses_bytes =
      std::any_of(ids.begin(), ids.end(), [](int id) { return id >= 3 && id < 3 + 256; });
  EXPECT_TRUE(uses_bytes);
}

TEST_F(TokenizerTest, EncodeWithBosPrependsBosOnly) {
  const std::string text = "the blue square";
  std::vector<int> with_bos = tok_->Encode(text, /*add_bos=*/true);
  const std::vector<int> without = tok_->Encode(text, /*add_bos=*/false);
  ASSERT_EQ(with_bos.size(), without.size() + 1);
  EXPECT_EQ(with_bos.front(), tok_->bos_id());
  EXPECT_EQ(std::vector<int>(with_bos.begin() + 1, with_bos.end()), without);
  EXPECT_EQ(tok_->Encode("", true), std::vector<int>{tok_->bos_id()});
  EXPECT_TRUE(tok_->Encode("", false).empty());
}

TEST_F(TokenizerTest, SplitsDigitsIntoSeparatePieces) {
  for (int id : tok_->Encode("2024 and 1234567", false)) {
    const std::string piece = tok_->Decode({id});
    EXPECT_LE(std::count_if(piece.begin(), piece.end(),
                            [](unsigned char c) { return std::isdigit(c) != 0; }),
              1)
        << piece;
  }
}

TEST_F(TokenizerTest, DecodeSkipsSpecialImageAndOutOfRangeIds) {
  const std::string text = "a green star";
  const std::vector<int> ids = tok_->Encode(text, false);
  std::vector<int> noisy = {tok_->bos_id(), tok_->image_token_id(), tok_->image_token_id()};
  noisy.insert(noisy.end(), ids.begin(), ids.end());
  noisy.insert(noisy.end(), {tok_->eos_id(), -1, tok_->vocab_size() + 100});
  EXPECT_EQ(tok_->Decode(noisy), text);
}

TEST_F(TokenizerTest, EncodePromptPutsVisualTokensBetweenBosTextAndPrompt) {
  constexpr int kVisual = 16;
  auto ids = tok_->EncodePrompt("what color is the triangle?", kVisual);
  ASSERT_TRUE(ids.ok()) << ids.status();
  ASSERT_FALSE(ids->empty());
  EXPECT_EQ(ids->front(), tok_->bos_id());

  const int image = tok_->image_token_id();
  EXPECT_EQ(std::count(ids->begin(), ids->end(), image), kVisual);
  const auto first = std::find(ids->begin(), ids->end(), image);
  ASSERT_NE(first, ids->end());
  EXPECT_TRUE(std::all_of(first, first + kVisual, [&](int id) { return id == image; }));
  // Template text before the image ("USER: ") is encoded as ordinary text after BOS.
  EXPECT_EQ(std::vector<int>(ids->begin(), first), tok_->Encode("USER: ", true));
  // The prompt follows the image; decoding gives back the template with the placeholder removed.
  EXPECT_LT(first + kVisual, ids->end());
  EXPECT_EQ(tok_->Decode(*ids), "USER: \nwhat color is the triangle? ASSISTANT:");
}

TEST_F(TokenizerTest, EncodePromptWithImageFirstHasNoStrayTokens) {
  auto ids = tok_->EncodePrompt("describe it", 4, "<image>\n{prompt}");
  ASSERT_TRUE(ids.ok()) << ids.status();
  ASSERT_GE(ids->size(), 6u);
  const int image = tok_->image_token_id();
  EXPECT_EQ(std::vector<int>(ids->begin(), ids->begin() + 5),
            (std::vector<int>{tok_->bos_id(), image, image, image, image}));
  EXPECT_EQ(tok_->Decode(*ids), "\ndescribe it");
}

TEST_F(TokenizerTest, EncodePromptWithoutMediaDropsPlaceholderAndItsNewline) {
  auto ids = tok_->EncodePrompt("what is this?", 0);
  ASSERT_TRUE(ids.ok()) << ids.status();
  EXPECT_EQ(*ids, tok_->Encode("USER: what is this? ASSISTANT:", true));
  // A template without <image> is fine for a text-only request.
  auto plain = tok_->EncodePrompt("hi", 0, "Q: {prompt} A:");
  ASSERT_TRUE(plain.ok()) << plain.status();
  EXPECT_EQ(*plain, tok_->Encode("Q: hi A:", true));
}

TEST_F(TokenizerTest, EncodePromptRejectsImagePlaceholderInTheUserPrompt) {
  auto ids = tok_->EncodePrompt("look: <image> what is it?", 16);
  EXPECT_EQ(ids.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ids.status().message(),
            "the prompt must not contain <image>; media is passed separately");
}

TEST_F(TokenizerTest, EncodePromptRejectsMalformedTemplates) {
  for (const char* tmpl : {"USER: <image>\n ASSISTANT:", "<image>{prompt}{prompt}"}) {
    auto ids = tok_->EncodePrompt("hi", 16, tmpl);
    EXPECT_EQ(ids.status().code(), absl::StatusCode::kInvalidArgument) << tmpl;
    EXPECT_TRUE(absl::StrContains(ids.status().message(), "{prompt}")) << ids.status();
  }
  for (const char* tmpl : {"USER: {prompt} ASSISTANT:", "<image><image>{prompt}"}) {
    auto ids = tok_->EncodePrompt("hi", 16, tmpl);
    EXPECT_EQ(ids.status().code(), absl::StatusCode::kInvalidArgument) << tmpl;
    EXPECT_TRUE(absl::StrContains(ids.status().message(), "<image>")) << ids.status();
  }
  EXPECT_EQ(tok_->EncodePrompt("hi", -1).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(TokenizerTest, EncodePromptDoesNotLetThePromptFormAPlaceholder) {
  // "{prompt}" inside the user's text is just text, and cannot combine with the template.
  auto ids = tok_->EncodePrompt("ge> {prompt}", 2, "<ima{prompt}<image>");
  ASSERT_TRUE(ids.ok()) << ids.status();
  EXPECT_EQ(std::count(ids->begin(), ids->end(), tok_->image_token_id()), 2);
  EXPECT_EQ(tok_->Decode(*ids), "<image> {prompt}");
}

TEST_F(TokenizerTest, LoadReportsMissingPaths) {
  const std::string missing = *dir_ + "/no/such/tokenizer.model";
  auto tok = Tokenizer::Load(missing, 1000);
  EXPECT_EQ(tok.status().code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(absl::StrContains(tok.status().message(), missing)) << tok.status();

  const std::string empty_dir = *dir_ + "/empty";
  fs::create_directories(empty_dir);
  tok = Tokenizer::Load(empty_dir, 1000);
  EXPECT_EQ(tok.status().code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(absl::StrContains(tok.status().message(), empty_dir)) << tok.status();
}

TEST_F(TokenizerTest, LoadRejectsACorruptModelFile) {
  const std::string bad = *dir_ + "/corrupt.model";
  std::ofstream(bad, std::ios::binary) << "this is not a sentencepiece model \xff\xfe";
  auto tok = Tokenizer::Load(bad, 1000);
  EXPECT_EQ(tok.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(tok.status().message(), bad)) << tok.status();
}

TEST_F(TokenizerTest, LoadRejectsAnImageIdInsideTheVocabulary) {
  for (int id : {0, tok_->eos_id(), tok_->vocab_size() - 1}) {
    auto tok = Tokenizer::Load(*dir_, id);
    EXPECT_EQ(tok.status().code(), absl::StatusCode::kInvalidArgument) << id;
  }
}

// Streams ids[0, n) through a detokenizer and checks each delta is whole UTF-8 and that the
// deltas and the flushed rest concatenate to Decode of the same ids.
void ExpectStreamMatchesDecode(const Tokenizer& tok, const std::vector<int>& ids, size_t n) {
  const std::vector<int> prefix(ids.begin(), ids.begin() + n);
  const std::string expected = tok.Decode(prefix);
  StreamingDetokenizer detok(&tok);
  std::string streamed;
  for (int id : prefix) {
    const std::string delta = detok.Push(id);
    EXPECT_TRUE(IsCompleteUtf8(delta)) << "delta splits a character after " << n << " ids";
    EXPECT_EQ(delta.find("\xef\xbf\xbd"), std::string::npos) << "delta holds U+FFFD";
    streamed += delta;
    EXPECT_EQ(detok.text(), streamed);
    EXPECT_EQ(expected.compare(0, streamed.size(), streamed), 0)
        << "emitted \"" << streamed << "\" is not a prefix of \"" << expected << "\"";
  }
  streamed += detok.Flush();
  EXPECT_EQ(streamed, expected) << "after " << n << " ids";
  EXPECT_EQ(detok.text(), expected);
}

TEST_F(TokenizerTest, StreamingDeltasConcatenateToDecodeForEveryPrefix) {
  std::vector<std::string> texts = AsciiSentences();
  texts.push_back(kUtf8Text);
  for (const std::string& text : texts) {
    const std::vector<int> ids = tok_->Encode(text, /*add_bos=*/true);
    for (size_t n = 0; n <= ids.size(); ++n) ExpectStreamMatchesDecode(*tok_, ids, n);
  }
}

TEST_F(TokenizerTest, StreamingHoldsBackAPartialMultiByteCharacter) {
  const std::vector<int> ids = tok_->Encode("\xf0\x9f\x98\x80", false);  // U+1F600
  // Four byte-fallback pieces, possibly after a lone "▁" piece.
  ASSERT_GE(ids.size(), 4u);
  StreamingDetokenizer detok(tok_);
  std::string streamed;
  for (size_t i = 0; i + 1 < ids.size(); ++i) streamed += detok.Push(ids[i]);
  EXPECT_EQ(streamed, "");
  streamed += detok.Push(ids.back());
  EXPECT_EQ(streamed, tok_->Decode(ids));
  EXPECT_EQ(detok.Flush(), "");
}

TEST_F(TokenizerTest, StreamingFlushReleasesAnUnfinishedByteSequence) {
  const std::vector<int> ids = tok_->Encode("\xf0\x9f\x98\x80", false);
  ASSERT_GE(ids.size(), 4u);
  const std::vector<int> partial(ids.begin(), ids.end() - 1);
  StreamingDetokenizer detok(tok_);
  std::string streamed;
  for (int id : partial) streamed += detok.Push(id);
  streamed += detok.Flush();
  EXPECT_EQ(streamed, tok_->Decode(partial));
}

// A session's opening and its first turn feed the ids a one-shot prompt would: the head's text
// and the turn tokenised apart would split the boundary differently ("\n" then "▁what" where
// the one-shot prompt has "\n" then "what"). Both the tiny tokenizer and the demo model's, two
// templates, prompts with leading spaces and line breaks.
TEST_F(TokenizerTest, ASessionsFirstTurnFeedsTheOneShotPromptsIds) {
  auto demo_probe =
      Tokenizer::Load(std::string(VLC_SOURCE_DIR) + "/models/demo", std::numeric_limits<int>::max());
  ASSERT_TRUE(demo_probe.ok()) << demo_probe.status();
  auto demo = Tokenizer::Load(std::string(VLC_SOURCE_DIR) + "/models/demo",
                              (*demo_probe)->vocab_size());
  ASSERT_TRUE(demo.ok()) << demo.status();
  const ChatTemplate def;
  auto custom = ChatTemplate::Parse("<s>[INST] <image>\n{prompt} [/INST]");
  ASSERT_TRUE(custom.ok()) << custom.status();
  for (const Tokenizer* tok : {static_cast<const Tokenizer*>(tok_), static_cast<const Tokenizer*>(demo->get())}) {
    for (const ChatTemplate* t : {&def, static_cast<const ChatTemplate*>(&*custom)}) {
      for (const std::string prompt : {"what is at row 1 column 4?", "what color is the triangle?",
                                       "hello", "  two spaces first", "\nnew line first"}) {
        // With media: the opening ends at the media's text, which the turn's text continues.
        // (A text-only opening such as "USER: " ends in a lone "▁" piece that has been fed
        // before the turn is known; there the turn follows it as it always did.)
        for (int visual : {16, 1}) {
          auto one_shot = tok->EncodePrompt(prompt, visual, t->text());
          auto opening = tok->EncodePrompt("", visual, t->SessionOpening());
          ASSERT_TRUE(one_shot.ok() && opening.ok());
          std::vector<int> session = *opening;
          const std::vector<int> turn = t->TurnIds(*tok, prompt, -1, false, visual);
          session.insert(session.end(), turn.begin(), turn.end());
          EXPECT_EQ(session, *one_shot) << "\"" << prompt << "\" visual " << visual << " template "
                                       << t->text();
        }
      }
    }
  }
}

}  // namespace
}  // namespace vlc::engine
