// The AVH history store: what goes in comes back (in order, NaN included, after reopening), a run
// is all or nothing even when its writer is killed with SIGKILL, and files that are not stores
// are refused with errors that name them.
#include "dq/store.h"

#include <fcntl.h>
#include <signal.h>
#include <sqlite3.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <fstream>
#include <limits>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "common/fs.h"
#include "gtest/gtest.h"

namespace vlc::dq {
namespace {

// gmock is not linked into the dq tests, so substring checks are spelled out.
template <typename Text>
::testing::AssertionResult HasText(const Text& text, const std::string& needle) {
  std::string haystack(text.data(), text.size());
  if (haystack.find(needle) != std::string::npos) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure()
         << "'" << haystack << "' does not contain '" << needle << "'";
}

using Strings = std::vector<std::string>;
using Doubles = std::vector<double>;

class DqStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = MakeTempDir("dq_store_test_");
    ASSERT_FALSE(dir_.empty());
  }
  void TearDown() override { RemoveTree(dir_); }

  std::string PathOf(const std::string& name) const { return dir_ + "/" + name; }

  std::string dir_;
};

// Values that differ by run, column and metric, so a value read from the wrong row shows.
RunMetrics MakeMetrics(int64_t run, int columns, const std::vector<Metric>& metrics) {
  RunMetrics out;
  for (int c = 0; c < columns; ++c) {
    std::string name = "col" + std::to_string(c);
    for (Metric m : metrics) {
      out[name].push_back(MetricValue{m, run * 1000.0 + c + static_cast<int>(m) / 64.0});
    }
  }
  return out;
}

void ExpectSameMetrics(const RunMetrics& got, const RunMetrics& want) {
  ASSERT_EQ(got.size(), want.size());
  for (const auto& [column, values] : want) {
    auto it = got.find(column);
    ASSERT_NE(it, got.end()) << column;
    ASSERT_EQ(it->second.size(), values.size()) << column;
    for (size_t i = 0; i < values.size(); ++i) {
      EXPECT_EQ(it->second[i].metric, values[i].metric) << column << " #" << i;
      if (std::isnan(values[i].value)) {
        EXPECT_TRUE(std::isnan(it->second[i].value)) << column << " #" << i;
      } else {
        EXPECT_EQ(it->second[i].value, values[i].value) << column << " #" << i;
      }
    }
  }
}

std::vector<double> Values(const std::vector<MetricPoint>& points) {
  std::vector<double> out;
  for (const auto& p : points) out.push_back(p.value);
  return out;
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void WriteFile(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary);
  out << bytes;
}

// Runs SQL on the file with the raw C API: for setting up files the store must refuse.
void RawExec(const std::string& path, const std::string& sql) {
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
  char* err = nullptr;
  int rc = sqlite3_exec(db, sql.c_str(), nullptr, nullptr, &err);
  std::string message = err ? err : "";
  sqlite3_free(err);
  sqlite3_close(db);
  ASSERT_EQ(rc, SQLITE_OK) << message;
}

TEST_F(DqStoreTest, RunsRoundTripWithSequenceNumbersInInsertionOrder) {
  const std::string path = PathOf("h.db");
  auto store = Store::Open(path);
  ASSERT_TRUE(store.ok()) << store.status();
  EXPECT_EQ(store->path(), path);

  const std::vector<Metric> metrics = {Metric::kNumMin, Metric::kNumMean, Metric::kNumCount};
  // Keys need not sort in time order: the sequence number is the order of AddRun calls.
  const std::vector<std::string> keys = {"2012-03", "2012-01", "2012-02"};
  for (size_t i = 0; i < keys.size(); ++i) {
    auto seq = store->AddRun("sales", keys[i], 100 + i, MakeMetrics(i, 2, metrics));
    ASSERT_TRUE(seq.ok()) << seq.status();
    EXPECT_EQ(*seq, static_cast<int64_t>(i + 1));
  }
  // A second pipeline numbers its runs from 1 on its own.
  auto other = store->AddRun("clicks", "2012-01", 7, MakeMetrics(9, 1, metrics));
  ASSERT_TRUE(other.ok()) << other.status();
  EXPECT_EQ(*other, 1);

  auto pipelines = store->Pipelines();
  ASSERT_TRUE(pipelines.ok()) << pipelines.status();
  EXPECT_EQ(*pipelines, (Strings{"clicks", "sales"}));

  auto runs = store->Runs("sales");
  ASSERT_TRUE(runs.ok()) << runs.status();
  ASSERT_EQ(runs->size(), 3u);
  const int64_t now_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                             std::chrono::system_clock::now().time_since_epoch())
                             .count();
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_EQ((*runs)[i].seq, static_cast<int64_t>(i + 1));
    EXPECT_EQ((*runs)[i].run_key, keys[i]);
    EXPECT_EQ((*runs)[i].row_count, static_cast<int64_t>(100 + i));
    EXPECT_LE((*runs)[i].added_unix_ms, now_ms);
    EXPECT_GT((*runs)[i].added_unix_ms, now_ms - 60'000);
  }

  auto columns = store->Columns("sales");
  ASSERT_TRUE(columns.ok()) << columns.status();
  EXPECT_EQ(*columns, (Strings{"col0", "col1"}));

  for (size_t i = 0; i < 3; ++i) {
    auto values = store->RunValues("sales", i + 1);
    ASSERT_TRUE(values.ok()) << values.status();
    ExpectSameMetrics(*values, MakeMetrics(i, 2, metrics));
  }

  auto series = store->MetricSeries("sales", "col1", Metric::kNumMean);
  ASSERT_TRUE(series.ok()) << series.status();
  ASSERT_EQ(series->size(), 3u);
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_EQ((*series)[i].run_seq, static_cast<int64_t>(i + 1));
    EXPECT_EQ((*series)[i].run_key, keys[i]);
    EXPECT_EQ((*series)[i].value, MakeMetrics(i, 2, metrics)["col1"][1].value);
  }
  // last_n keeps the newest runs, still oldest first.
  auto last2 = store->MetricSeries("sales", "col1", Metric::kNumMean, 2);
  ASSERT_TRUE(last2.ok()) << last2.status();
  ASSERT_EQ(last2->size(), 2u);
  EXPECT_EQ((*last2)[0].run_key, "2012-01");
  EXPECT_EQ((*last2)[1].run_key, "2012-02");
  auto last0 = store->MetricSeries("sales", "col1", Metric::kNumMean, 0);
  ASSERT_TRUE(last0.ok()) << last0.status();
  EXPECT_TRUE(last0->empty());
  auto many = store->MetricSeries("sales", "col1", Metric::kNumMean, 1000);
  ASSERT_TRUE(many.ok()) << many.status();
  EXPECT_EQ(many->size(), 3u);
  // A metric never recorded for the column: an empty series, not an error.
  auto none = store->MetricSeries("sales", "col1", Metric::kNumMax);
  ASSERT_TRUE(none.ok()) << none.status();
  EXPECT_TRUE(none->empty());
}

TEST_F(DqStoreTest, SeriesSkipsRunsThatDidNotRecordTheMetric) {
  auto store = Store::Open(PathOf("h.db"));
  ASSERT_TRUE(store.ok()) << store.status();
  // The first run has no previous run, so no pairwise metric such as EMD.
  ASSERT_TRUE(store->AddRun("p", "a", 1, {{"x", {{Metric::kNumMean, 1.0}}}}).ok());
  ASSERT_TRUE(
      store->AddRun("p", "b", 1, {{"x", {{Metric::kNumMean, 2.0}, {Metric::kNumEmd, 0.5}}}}).ok());
  ASSERT_TRUE(
      store->AddRun("p", "c", 1, {{"x", {{Metric::kNumMean, 3.0}, {Metric::kNumEmd, 0.25}}}}).ok());
  auto emd = store->MetricSeries("p", "x", Metric::kNumEmd);
  ASSERT_TRUE(emd.ok()) << emd.status();
  EXPECT_EQ(Values(*emd), (Doubles{0.5, 0.25}));
  EXPECT_EQ(emd->front().run_seq, 2);
  auto mean = store->MetricSeries("p", "x", Metric::kNumMean);
  ASSERT_TRUE(mean.ok()) << mean.status();
  EXPECT_EQ(Values(*mean), (Doubles{1.0, 2.0, 3.0}));
}

TEST_F(DqStoreTest, DuplicateRunKeyIsAlreadyExistsAndChangesNothing) {
  auto store = Store::Open(PathOf("h.db"));
  ASSERT_TRUE(store.ok()) << store.status();
  ASSERT_TRUE(store->AddRun("p", "2012-01", 5, {{"x", {{Metric::kNumMean, 1.0}}}}).ok());
  auto dup = store->AddRun("p", "2012-01", 6, {{"x", {{Metric::kNumMean, 9.0}}}});
  EXPECT_EQ(dup.status().code(), absl::StatusCode::kAlreadyExists);
  EXPECT_TRUE(HasText(dup.status().message(), "2012-01"));
  EXPECT_TRUE(HasText(dup.status().message(), "'p'"));

  auto runs = store->Runs("p");
  ASSERT_TRUE(runs.ok()) << runs.status();
  ASSERT_EQ(runs->size(), 1u);
  EXPECT_EQ((*runs)[0].row_count, 5);
  auto series = store->MetricSeries("p", "x", Metric::kNumMean);
  ASSERT_TRUE(series.ok()) << series.status();
  EXPECT_EQ(Values(*series), (Doubles{1.0}));
  // The same key in another pipeline is a different run.
  auto other = store->AddRun("q", "2012-01", 5, {});
  EXPECT_TRUE(other.ok()) << other.status();
}

TEST_F(DqStoreTest, FailedRunWritesNothing) {
  auto store = Store::Open(PathOf("h.db"));
  ASSERT_TRUE(store.ok()) << store.status();
  ASSERT_TRUE(store->AddRun("p", "a", 1, {{"x", {{Metric::kNumMean, 1.0}}}}).ok());
  // Column "a" is inserted first, then "b" fails on its repeated metric inside the transaction:
  // the run row, column a's values and the new pipeline "q" must all roll back.
  RunMetrics bad = {{"a", {{Metric::kNumMean, 1.0}, {Metric::kNumMax, 2.0}}},
                    {"b", {{Metric::kNumMin, 1.0}, {Metric::kNumMin, 2.0}}}};
  for (const std::string pipeline : {"p", "q"}) {
    auto failed = store->AddRun(pipeline, "b", 1, bad);
    EXPECT_EQ(failed.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_TRUE(HasText(failed.status().message(), "num_min twice for column 'b'"));
  }
  auto pipelines = store->Pipelines();
  ASSERT_TRUE(pipelines.ok()) << pipelines.status();
  EXPECT_EQ(*pipelines, (Strings{"p"}));
  auto columns = store->Columns("p");
  ASSERT_TRUE(columns.ok()) << columns.status();
  EXPECT_EQ(*columns, (Strings{"x"}));
  // The failed run took no sequence number and its key is still free.
  auto next = store->AddRun("p", "b", 1, {{"x", {{Metric::kNumMean, 2.0}}}});
  ASSERT_TRUE(next.ok()) << next.status();
  EXPECT_EQ(*next, 2);

  EXPECT_EQ(store->AddRun("", "k", 1, {}).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(store->AddRun("p", "", 1, {}).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(store->AddRun("p", "k", -1, {}).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(store->AddRun("p", "k", 1, {{"", {}}}).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(DqStoreTest, NanAndInfinitiesRoundTrip) {
  const std::string path = PathOf("h.db");
  const double nan = std::numeric_limits<double>::quiet_NaN();
  const double inf = std::numeric_limits<double>::infinity();
  RunMetrics metrics = {{"x",
                         {{Metric::kNumEmd, nan},
                          {Metric::kNumKlDiv, inf},
                          {Metric::kNumMin, -inf},
                          {Metric::kNumMean, -0.0},
                          {Metric::kNumSum, 1e-300}}}};
  {
    auto store = Store::Open(path);
    ASSERT_TRUE(store.ok()) << store.status();
    ASSERT_TRUE(store->AddRun("p", "a", 0, metrics).ok());
    ASSERT_TRUE(store->AddRun("p", "b", 0, {{"x", {{Metric::kNumEmd, 0.5}}}}).ok());
  }
  auto store = Store::Open(path);
  ASSERT_TRUE(store.ok()) << store.status();
  auto values = store->RunValues("p", 1);
  ASSERT_TRUE(values.ok()) << values.status();
  ExpectSameMetrics(*values, metrics);
  auto emd = store->MetricSeries("p", "x", Metric::kNumEmd);
  ASSERT_TRUE(emd.ok()) << emd.status();
  ASSERT_EQ(emd->size(), 2u);  // the NaN is a recorded point, not a missing one
  EXPECT_TRUE(std::isnan((*emd)[0].value));
  EXPECT_EQ((*emd)[1].value, 0.5);
}

TEST_F(DqStoreTest, ProgramsKeepTheLatestAndReplaceARelearn) {
  auto store = Store::Open(PathOf("h.db"));
  ASSERT_TRUE(store.ok()) << store.status();
  for (const char* key : {"a", "b", "c"}) ASSERT_TRUE(store->AddRun("p", key, 1, {}).ok());

  auto missing = store->GetProgram("p", "x");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(HasText(missing.status().message(), "'x'"));

  const nlohmann::json v2 = {{"constraints", {{{"metric", "num_mean"}, {"k", 3.5}}}}};
  const nlohmann::json v3 = {{"constraints", nlohmann::json::array()}, {"note", "ünïcode"}};
  ASSERT_TRUE(store->PutProgram("p", "x", 3, v3).ok());
  ASSERT_TRUE(store->PutProgram("p", "x", 2, v2).ok());  // an older one stored later
  auto got = store->GetProgram("p", "x");
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->learned_at_seq, 3);
  EXPECT_EQ(got->program, v3);

  // Learning again at the same run replaces the program.
  const nlohmann::json v3b = {{"constraints", {{{"metric", "num_max"}, {"k", 2.0}}}}};
  ASSERT_TRUE(store->PutProgram("p", "x", 3, v3b).ok());
  got = store->GetProgram("p", "x");
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->program, v3b);

  // Programs are per column.
  EXPECT_EQ(store->GetProgram("p", "y").status().code(), absl::StatusCode::kNotFound);
  // A program must be learned at a run that exists.
  auto no_run = store->PutProgram("p", "x", 4, v2);
  EXPECT_EQ(no_run.code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(HasText(no_run.message(), "no run 4"));
  EXPECT_EQ(store->PutProgram("nope", "x", 1, v2).code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(store->PutProgram("p", "", 1, v2).code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(DqStoreTest, UnknownPipelineIsNotFoundNamingTheKnownOnes) {
  auto store = Store::Open(PathOf("h.db"));
  ASSERT_TRUE(store.ok()) << store.status();
  auto empty = store->Pipelines();
  ASSERT_TRUE(empty.ok()) << empty.status();
  EXPECT_TRUE(empty->empty());
  ASSERT_TRUE(store->AddRun("sales", "a", 1, {}).ok());
  auto runs = store->Runs("sails");
  EXPECT_EQ(runs.status().code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(HasText(runs.status().message(), "'sails'"));
  EXPECT_TRUE(HasText(runs.status().message(), "sales"));
  EXPECT_EQ(store->Columns("sails").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(store->MetricSeries("sails", "x", Metric::kNumMean).status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(store->RunValues("sales", 2).status().code(), absl::StatusCode::kNotFound);
}

TEST_F(DqStoreTest, ReopeningTheFileSeesEverything) {
  const std::string path = PathOf("h.db");
  const std::vector<Metric>& all = MetricsFor(ColumnType::kCategorical);
  {
    auto store = Store::Open(path);
    ASSERT_TRUE(store.ok()) << store.status();
    for (int i = 0; i < 5; ++i) {
      ASSERT_TRUE(store->AddRun("p", "run" + std::to_string(i), i, MakeMetrics(i, 3, all)).ok());
    }
    ASSERT_TRUE(store->PutProgram("p", "col2", 5, {{"k", 1}}).ok());
    // WAL mode: committed transactions sit in the -wal file until a checkpoint.
    EXPECT_EQ(::access((path + "-wal").c_str(), F_OK), 0);
  }
  auto store = Store::Open(path);
  ASSERT_TRUE(store.ok()) << store.status();
  auto runs = store->Runs("p");
  ASSERT_TRUE(runs.ok()) << runs.status();
  ASSERT_EQ(runs->size(), 5u);
  for (int i = 0; i < 5; ++i) {
    EXPECT_EQ((*runs)[i].run_key, "run" + std::to_string(i));
    auto values = store->RunValues("p", i + 1);
    ASSERT_TRUE(values.ok()) << values.status();
    ExpectSameMetrics(*values, MakeMetrics(i, 3, all));
  }
  auto program = store->GetProgram("p", "col2");
  ASSERT_TRUE(program.ok()) << program.status();
  EXPECT_EQ(program->program, nlohmann::json({{"k", 1}}));
  // And the history goes on where it stopped.
  auto seq = store->AddRun("p", "run5", 5, {});
  ASSERT_TRUE(seq.ok()) << seq.status();
  EXPECT_EQ(*seq, 6);
}

TEST_F(DqStoreTest, TwoConnectionsShareOneFile) {
  const std::string path = PathOf("h.db");
  auto a = Store::Open(path);
  ASSERT_TRUE(a.ok()) << a.status();
  auto b = Store::Open(path);
  ASSERT_TRUE(b.ok()) << b.status();
  for (int i = 0; i < 4; ++i) {
    Store& writer = i % 2 ? *b : *a;
    auto seq = writer.AddRun("p", "r" + std::to_string(i), 1, {});
    ASSERT_TRUE(seq.ok()) << seq.status();
    EXPECT_EQ(*seq, i + 1);
  }
  auto runs = a->Runs("p");
  ASSERT_TRUE(runs.ok()) << runs.status();
  EXPECT_EQ(runs->size(), 4u);
  EXPECT_EQ(b->AddRun("p", "r0", 1, {}).status().code(), absl::StatusCode::kAlreadyExists);
}

TEST_F(DqStoreTest, EmptyFileBecomesAStore) {
  const std::string path = PathOf("empty.db");
  WriteFile(path, "");
  auto store = Store::Open(path);
  ASSERT_TRUE(store.ok()) << store.status();
  EXPECT_TRUE(store->AddRun("p", "a", 1, {}).ok());
}

TEST_F(DqStoreTest, RandomFileIsRefusedNamingTheFileAndLeftUntouched) {
  std::mt19937 rng(7);
  std::string bytes(8192, '\0');
  for (char& c : bytes) c = static_cast<char>(rng());
  const std::string random_path = PathOf("random.bin");
  const std::string text_path = PathOf("notes.txt");
  WriteFile(random_path, bytes);
  WriteFile(text_path, "run,value\n2012-01,3\n");
  for (const std::string& path : {random_path, text_path}) {
    const std::string before = ReadFile(path);
    auto store = Store::Open(path);
    ASSERT_FALSE(store.ok()) << path;
    EXPECT_EQ(store.status().code(), absl::StatusCode::kFailedPrecondition) << store.status();
    EXPECT_TRUE(HasText(store.status().message(), path));
    EXPECT_TRUE(HasText(store.status().message(), "not a vlcache dq store"));
    EXPECT_EQ(ReadFile(path), before) << path;
  }
}

TEST_F(DqStoreTest, AnotherProgramsSqliteDatabaseIsRefused) {
  const std::string path = PathOf("other.db");
  RawExec(path, "CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT)");
  auto store = Store::Open(path);
  ASSERT_FALSE(store.ok());
  EXPECT_EQ(store.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(HasText(store.status().message(), path));
  EXPECT_TRUE(HasText(store.status().message(), "customers"));
  EXPECT_TRUE(HasText(store.status().message(), "not a vlcache dq store"));

  const std::string tagged = PathOf("tagged.db");
  RawExec(tagged, "PRAGMA application_id = 12345; CREATE TABLE t (x)");
  auto tagged_store = Store::Open(tagged);
  EXPECT_EQ(tagged_store.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(HasText(tagged_store.status().message(), "12345"));
}

TEST_F(DqStoreTest, NewerSchemaIsRefused) {
  const std::string path = PathOf("h.db");
  ASSERT_TRUE(Store::Open(path).ok());
  RawExec(path, "UPDATE dq_schema_version SET version = 99");
  auto store = Store::Open(path);
  ASSERT_FALSE(store.ok());
  EXPECT_EQ(store.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(HasText(store.status().message(), "schema version 99"));
  EXPECT_TRUE(HasText(store.status().message(), path));
}

TEST_F(DqStoreTest, UnwritablePathIsAClearError) {
  // A directory that does not exist, and a "directory" that is a regular file: both fail even
  // for root, unlike a chmod'ed directory.
  const std::string file = PathOf("plain.txt");
  WriteFile(file, "x");
  for (const std::string& path : {PathOf("no/such/dir/h.db"), file + "/h.db"}) {
    auto store = Store::Open(path);
    ASSERT_FALSE(store.ok()) << path;
    EXPECT_TRUE(HasText(store.status().message(), path));
    EXPECT_TRUE(HasText(store.status().message(), "directory exists"));
  }
  EXPECT_EQ(Store::Open("").status().code(), absl::StatusCode::kInvalidArgument);
}

// ---- Crash safety with a real killed process.

constexpr int kCrashColumns = 20;
constexpr int kRounds = 6;
constexpr int kKillDelaysUs[kRounds] = {0, 150, 400, 700, 1100, 1700};

std::string CrashKey(int round, int64_t i) {
  return "r" + std::to_string(round) + "-" + std::to_string(i);
}

// Writes runs in a loop and reports each sequence number on `fd` only after AddRun returned, so
// every number the parent reads is of a committed run. Never returns.
[[noreturn]] void CrashWriter(const std::string& path, int round, int fd) {
  auto store = Store::Open(path);
  if (!store.ok()) _exit(2);
  const std::vector<Metric>& metrics = MetricsFor(ColumnType::kNumeric);
  for (int64_t i = 0;; ++i) {
    // Hundreds of rows per run, so that the kill often lands inside a transaction.
    auto seq =
        store->AddRun("crash", CrashKey(round, i), i, MakeMetrics(i, kCrashColumns, metrics));
    if (!seq.ok()) _exit(3);
    int64_t value = *seq;
    if (::write(fd, &value, sizeof(value)) != static_cast<ssize_t>(sizeof(value))) _exit(4);
  }
}

TEST_F(DqStoreTest, KilledWriterLosesNoCommittedRunAndLeavesNoPartialRun) {
  const std::string path = PathOf("crash.db");
  const std::vector<Metric>& metrics = MetricsFor(ColumnType::kNumeric);
  std::vector<int64_t> reported;
  // Several rounds on the same file: each reopens a file whose writer was killed.
  for (int round = 0; round < kRounds; ++round) {
    int fds[2];
    ASSERT_EQ(::pipe(fds), 0);
    // The parent holds no connection across fork(): SQLite forbids carrying one into a child.
    pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      ::close(fds[0]);
      CrashWriter(path, round, fds[1]);
    }
    ::close(fds[1]);
    // Let a few runs commit, then kill without warning: no destructor, no close, no checkpoint.
    const int to_read = 5 + round * 3;
    for (int n = 0; n < to_read; ++n) {
      int64_t seq = 0;
      ASSERT_EQ(::read(fds[0], &seq, sizeof(seq)), static_cast<ssize_t>(sizeof(seq)))
          << "the writer stopped before reporting " << to_read << " runs";
      reported.push_back(seq);
    }
    // The parent wakes as soon as a number arrives, when the writer has barely begun its next
    // run; a delay that differs by round moves the kill to other points of that run.
    std::this_thread::sleep_for(std::chrono::microseconds(kKillDelaysUs[round]));
    ASSERT_EQ(::kill(pid, SIGKILL), 0);
    int wstatus = 0;
    ASSERT_EQ(::waitpid(pid, &wstatus, 0), pid);
    ASSERT_TRUE(WIFSIGNALED(wstatus) && WTERMSIG(wstatus) == SIGKILL)
        << "the writer exited on its own with status " << wstatus;
    // Numbers written before the kill are still in the pipe: those runs committed too.
    int64_t seq = 0;
    while (::read(fds[0], &seq, sizeof(seq)) == static_cast<ssize_t>(sizeof(seq))) {
      reported.push_back(seq);
    }
    ::close(fds[0]);

    auto store = Store::Open(path);
    ASSERT_TRUE(store.ok()) << store.status();
    auto runs = store->Runs("crash");
    ASSERT_TRUE(runs.ok()) << runs.status();
    // Every reported run is there...
    for (int64_t s : reported) {
      ASSERT_LE(s, static_cast<int64_t>(runs->size())) << "committed run " << s << " is lost";
    }
    // ...and every run there is complete: its rows are exactly the ones its writer gave.
    for (size_t i = 0; i < runs->size(); ++i) {
      const RunInfo& run = (*runs)[i];
      ASSERT_EQ(run.seq, static_cast<int64_t>(i + 1));
      auto values = store->RunValues("crash", run.seq);
      ASSERT_TRUE(values.ok()) << values.status();
      // The run's index within its round is its row count (see CrashWriter).
      ASSERT_EQ(run.run_key, CrashKey(run.run_key[1] - '0', run.row_count));
      ASSERT_EQ(values->size(), static_cast<size_t>(kCrashColumns)) << run.run_key;
      ExpectSameMetrics(*values, MakeMetrics(run.row_count, kCrashColumns, metrics));
    }
    // The series agree with the runs: no metric row without its run either.
    auto series = store->MetricSeries("crash", "col7", Metric::kNumMedian);
    ASSERT_TRUE(series.ok()) << series.status();
    EXPECT_EQ(series->size(), runs->size());
  }
  EXPECT_GE(reported.size(), static_cast<size_t>(5 * kRounds + 3 * kRounds * (kRounds - 1) / 2));
}

}  // namespace
}  // namespace vlc::dq
