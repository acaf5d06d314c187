// Session snapshots (engine/session_snapshot.h): the format round-trips every field and tensor
// bit for bit, refuses what it cannot trust with the reason, the directory store hands a
// snapshot to one taker only, and the model fingerprint tells checkpoints apart.
#include "engine/session_snapshot.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "common/fs.h"
#include "tools/make_tiny.h"

namespace vlc::engine {
namespace {

namespace fs = std::filesystem;

SessionSnapshot Sample(at::ScalarType dtype = at::kFloat) {
  SessionSnapshot s;
  s.model = std::string(64, 'a');
  s.session_id = "conv-1";
  s.owner_digest = Sha256Hex("token");
  s.policy = "vlcache";
  s.next_pos = 57;
  s.last_token = 42;
  s.turns = 3;
  s.visual_tokens = 16;
  s.has_prefix = true;
  s.history = {1, 5, 9, 2};
  at::manual_seed(3);
  for (int64_t len : {5, 0, 12}) {  // ragged layers, one emptied by compression
    s.layers.emplace_back(at::randn({2, len, 8}).to(dtype), at::randn({2, len, 8}).to(dtype));
  }
  return s;
}

TEST(SessionSnapshotTest, RoundTripsEveryFieldAndTensorExactly) {
  for (at::ScalarType dtype : {at::kFloat, at::kBFloat16}) {
    const SessionSnapshot s = Sample(dtype);
    const std::string bytes = EncodeSnapshot(s);
    auto back = DecodeSnapshot(bytes, s.model);
    ASSERT_TRUE(back.ok()) << back.status();
    EXPECT_EQ(back->session_id, s.session_id);
    EXPECT_EQ(back->owner_digest, s.owner_digest);
    EXPECT_EQ(back->policy, s.policy);
    EXPECT_EQ(back->next_pos, s.next_pos);
    EXPECT_EQ(back->last_token, s.last_token);
    EXPECT_EQ(back->turns, s.turns);
    EXPECT_EQ(back->visual_tokens, s.visual_tokens);
    EXPECT_EQ(back->has_prefix, s.has_prefix);
    EXPECT_EQ(back->history, s.history);
    ASSERT_EQ(back->layers.size(), s.layers.size());
    for (size_t l = 0; l < s.layers.size(); ++l) {
      EXPECT_EQ(back->layers[l].first.scalar_type(), dtype);
      EXPECT_TRUE(at::equal(back->layers[l].first, s.layers[l].first));
      EXPECT_TRUE(at::equal(back->layers[l].second, s.layers[l].second));
    }
    EXPECT_EQ(back->KvBytes(), s.KvBytes());
    // The payload is the kept KV; the rest is a small header and a checksum.
    EXPECT_LT(bytes.size(), static_cast<size_t>(s.KvBytes()) + 1024);
  }
  EXPECT_NE(Sha256Hex("token"), Sha256Hex("token2"));
  EXPECT_EQ(Sha256Hex("").size(), 64u);
}

TEST(SessionSnapshotTest, RefusesWhatItCannotTrustSayingWhy) {
  const SessionSnapshot s = Sample();
  const std::string good = EncodeSnapshot(s);
  struct Case {
    std::string bytes;
    std::string model;
    std::string expected;
  };
  std::string flipped = good;
  flipped[good.size() / 2] ^= 1;
  std::string magic = good;
  magic[0] = 'X';
  std::string version = good;
  version[8] = 2;
  const std::vector<Case> cases = {
      {good.substr(0, 10), s.model, "truncated"},
      {good.substr(0, good.size() - 100), s.model, "checksum does not match"},
      {flipped, s.model, "checksum does not match"},
      {magic, s.model, "not a vlcache session snapshot"},
      {version, s.model, "format version 2"},
      {good, std::string(64, 'b'), "taken of another model"},
  };
  for (const auto& c : cases) {
    auto r = DecodeSnapshot(c.bytes, c.model);
    ASSERT_FALSE(r.ok()) << c.expected;
    EXPECT_EQ(r.status().code(), absl::StatusCode::kFailedPrecondition);
    EXPECT_NE(r.status().message().find(c.expected), std::string::npos) << r.status();
  }
  // Any model when none is asked for.
  EXPECT_TRUE(DecodeSnapshot(good, "").ok());
}

TEST(SessionSnapshotTest, TheDirectoryStoreGivesASnapshotToOneTakerOnly) {
  char tmpl[] = "/tmp/vlcache-store-XXXXXX";
  const std::string dir = std::string(mkdtemp(tmpl)) + "/store";
  auto store = DirectorySessionStore::Open(dir);
  ASSERT_TRUE(store.ok()) << store.status();
  ASSERT_TRUE((*store)->Put("a", "one").ok());
  ASSERT_TRUE((*store)->Put("a", "two").ok());  // replaces
  auto taken = (*store)->Take("a");
  ASSERT_TRUE(taken.ok());
  EXPECT_EQ(*taken, "two");
  EXPECT_EQ((*store)->Take("a").status().code(), absl::StatusCode::kNotFound);
  // Ids that look like the directory's own entries stay files inside it.
  for (const std::string id : {".", "..", "...", "a.b-c_d"}) {
    ASSERT_TRUE((*store)->Put(id, "x" + id).ok()) << id;
    EXPECT_TRUE(fs::is_regular_file(dir + "/" + id + ".vlcsnap")) << id;
  }
  for (const std::string id : {".", "..", "...", "a.b-c_d"}) {
    auto t = (*store)->Take(id);
    ASSERT_TRUE(t.ok()) << id;
    EXPECT_EQ(*t, "x" + id);
  }
  (*store)->Put("gone", "x").IgnoreError();
  (*store)->Delete("gone");
  EXPECT_EQ((*store)->Take("gone").status().code(), absl::StatusCode::kNotFound);
  (*store)->Reject("bad", "bytes", "its checksum does not match");
  int notes = 0;
  for (const auto& e : fs::directory_iterator(dir + "/rejected")) {
    if (e.path().extension() == ".why") {
      std::ifstream f(e.path());
      std::string line;
      std::getline(f, line);
      EXPECT_EQ(line, "its checksum does not match");
      ++notes;
    }
  }
  EXPECT_EQ(notes, 1);
  // Only snapshots are left: no temporary or taken files.
  for (const auto& e : fs::directory_iterator(dir)) {
    EXPECT_TRUE(e.path().filename() == "rejected") << e.path();
  }
  // A store where a file is: refused at start.
  std::ofstream(dir + "/file") << "x";
  EXPECT_EQ(DirectorySessionStore::Open(dir + "/file").status().code(),
            absl::StatusCode::kInvalidArgument);
  RemoveTree(dir);
}

TEST(SessionSnapshotTest, TheModelFingerprintTellsCheckpointsApart) {
  char tmpl[] = "/tmp/vlcache-fingerprint-XXXXXX";
  const std::string dir = mkdtemp(tmpl);
  tools::TinyOptions opts;
  opts.seed = 1;
  ASSERT_TRUE(tools::MakeTinyCheckpoint(dir + "/a", opts).ok());
  ASSERT_TRUE(tools::MakeTinyCheckpoint(dir + "/same", opts).ok());
  opts.seed = 2;
  ASSERT_TRUE(tools::MakeTinyCheckpoint(dir + "/other", opts).ok());
  auto a = ModelFingerprint(dir + "/a");
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(*ModelFingerprint(dir + "/same"), *a) << "the same files, elsewhere";
  EXPECT_NE(*ModelFingerprint(dir + "/other"), *a) << "the same shapes, other weights";
  EXPECT_EQ(ModelFingerprint(dir + "/missing").status().code(), absl::StatusCode::kNotFound);
  RemoveTree(dir);
}

}  // namespace
}  // namespace vlc::engine
