// The session table's memory of gone sessions: why each went, for the last `remembered_gone`.
#include "engine/session_table.h"

#include <gtest/gtest.h>

#include <string>

namespace vlc::engine {
namespace {

class GoneSessionsTest : public ::testing::Test {
 protected:
  std::string Add(const std::string& id) {
    Session s;
    s.owner = "alice";
    auto inserted = table_.Insert(std::move(s), id);
    EXPECT_TRUE(inserted.ok()) << inserted.status();
    return *inserted;
  }
  absl::Status Find(const std::string& id) { return table_.Find(id, "alice").status(); }

  ManualClock clock_;
  SessionTable table_{SessionTableOptions{/*max_sessions=*/8, /*ttl_seconds=*/60,
                                          /*remembered_gone=*/3},
                      &clock_, nullptr};
};

TEST_F(GoneSessionsTest, EachGoneSessionSaysWhyItWent) {
  Add("a");
  Add("b");
  Add("c");
  clock_.Advance(std::chrono::seconds(75));
  table_.Remove("a", SessionEnd::kTtl);
  table_.Remove("b", SessionEnd::kFailed, "the model step failed");
  table_.Remove("c", SessionEnd::kKvPages);
  EXPECT_EQ(Find("a").code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(Find("a").message(), "session a expired after 75 s idle");
  EXPECT_EQ(Find("b").message(), "session b ended when its turn failed: the model step failed");
  EXPECT_NE(Find("c").message().find("was evicted (kv_pages)"), std::string::npos) << Find("c");
  EXPECT_NE(Find("never").message().find("unknown session id 'never'"), std::string::npos);
}

TEST_F(GoneSessionsTest, OnlyTheLastOnesAreRememberedAndTheNewestReasonWins) {
  for (const char* id : {"a", "b", "c", "d"}) {
    Add(id);
    table_.Remove(id, SessionEnd::kDeleted);
  }
  // The ring holds three: "a" was overwritten by "d".
  EXPECT_NE(Find("a").message().find("unknown session id"), std::string::npos) << Find("a");
  EXPECT_EQ(Find("b").message(), "session b was deleted");
  EXPECT_EQ(Find("d").message(), "session d was deleted");
  // An id given again lives again; when it goes a second time, the second reason is the answer.
  Add("b");
  EXPECT_TRUE(Find("b").ok());
  table_.Remove("b", SessionEnd::kMaxSessions);
  EXPECT_NE(Find("b").message().find("was evicted (max_sessions)"), std::string::npos)
      << Find("b");
}

TEST_F(GoneSessionsTest, ALongReasonIsCutAtACharacterBoundary) {
  Add("a");
  // 200 two-byte characters: the cut must not split one.
  std::string detail;
  for (int i = 0; i < 200; ++i) detail += "\xC3\xA9";  // é
  table_.Remove("a", SessionEnd::kFailed, detail);
  const std::string message(Find("a").message());
  const std::string prefix = "session a ended when its turn failed: ";
  ASSERT_EQ(message.rfind(prefix, 0), 0u) << message;
  const std::string kept = message.substr(prefix.size());
  EXPECT_GT(kept.size(), 100u);
  EXPECT_LT(kept.size(), detail.size());
  EXPECT_EQ(kept.size() % 2, 0u);
  EXPECT_EQ(kept, detail.substr(0, kept.size()));
}

// The scheduler empties the table by passing its own first key, which the removal frees (a
// use after free that AddressSanitizer found, when the id was taken by reference).
TEST_F(GoneSessionsTest, RemovingByTheTablesOwnKeyRemembersTheRightId) {
  Add("first-session");
  Add("second-session");
  while (!table_.empty()) table_.Remove(table_.all().begin()->first, SessionEnd::kDeleted);
  EXPECT_EQ(Find("first-session").message(), "session first-session was deleted");
  EXPECT_EQ(Find("second-session").message(), "session second-session was deleted");
}

TEST(GoneSessions, NoneRememberedWhenTheLimitIsZero) {
  ManualClock clock;
  SessionTable table(SessionTableOptions{8, 60, 0}, &clock, nullptr);
  Session s;
  s.owner = "alice";
  ASSERT_TRUE(table.Insert(std::move(s), "a").ok());
  table.Remove("a", SessionEnd::kDeleted);
  EXPECT_NE(table.Find("a", "alice").status().message().find("unknown session id"),
            std::string::npos);
}

}  // namespace
}  // namespace vlc::engine
