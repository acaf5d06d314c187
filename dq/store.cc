#include "dq/store.h"

#include <sqlite3.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <limits>
#include <string_view>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status.h"

namespace vlc::dq {
namespace {

// SQLite's header field for "which program owns this file" ("VLDQ"): lets Open() tell its own
// files from other programs' databases without relying on table names alone.
constexpr int32_t kApplicationId = 0x564C4451;

// Migrations()[v] takes the schema from version v to v + 1; version 0 is a file without our
// schema (new or empty). Append a step to change the schema; never edit a released one, since
// files written with it exist.
constexpr int kSchemaVersion = 1;
const char* const kMigrations[kSchemaVersion] = {
    // 0 -> 1: the initial schema.
    R"sql(
CREATE TABLE dq_schema_version (version INTEGER NOT NULL);
INSERT INTO dq_schema_version (version) VALUES (0);

CREATE TABLE pipelines (
  id INTEGER PRIMARY KEY,
  name TEXT NOT NULL UNIQUE CHECK (name <> '')
);

-- seq is the run's position in its pipeline's history (1, 2, ...): the order AVH reads series in.
-- It is assigned by AddRun inside its write transaction, so two writers cannot take the same one.
CREATE TABLE runs (
  id INTEGER PRIMARY KEY,
  pipeline_id INTEGER NOT NULL REFERENCES pipelines (id),
  seq INTEGER NOT NULL CHECK (seq >= 1),
  run_key TEXT NOT NULL CHECK (run_key <> ''),
  row_count INTEGER NOT NULL CHECK (row_count >= 0),
  added_unix_ms INTEGER NOT NULL,
  UNIQUE (pipeline_id, seq),
  UNIQUE (pipeline_id, run_key)
);

-- value NULL: the metric was undefined for the run (NaN in memory; SQLite has no NaN).
-- metric is MetricName()'s stable text, not the enum's number, so reordering the enum is safe.
CREATE TABLE metric_values (
  run_id INTEGER NOT NULL REFERENCES runs (id),
  column_name TEXT NOT NULL CHECK (column_name <> ''),
  metric TEXT NOT NULL,
  value REAL,
  PRIMARY KEY (run_id, column_name, metric)
) WITHOUT ROWID;
-- MetricSeries() reads one (column, metric) across runs.
CREATE INDEX metric_values_by_series ON metric_values (column_name, metric, run_id);

-- program_json is opaque here: the program type owns its format.
CREATE TABLE programs (
  pipeline_id INTEGER NOT NULL,
  column_name TEXT NOT NULL CHECK (column_name <> ''),
  learned_at_seq INTEGER NOT NULL,
  program_json TEXT NOT NULL,
  added_unix_ms INTEGER NOT NULL,
  PRIMARY KEY (pipeline_id, column_name, learned_at_seq),
  FOREIGN KEY (pipeline_id, learned_at_seq) REFERENCES runs (pipeline_id, seq)
) WITHOUT ROWID;
)sql",
};

int64_t NowUnixMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// What the caller can do about each kind of SQLite failure; the code follows from the same kind.
absl::Status SqliteStatus(int rc, const std::string& path, std::string_view doing,
                          const char* sqlite_message, int busy_timeout_ms) {
  std::string msg =
      absl::StrCat("dq store '", path, "': ", std::string(doing), ": ",
                   sqlite_message ? sqlite_message : "unknown error", " (SQLite code ", rc, ")");
  switch (rc & 0xff) {
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
      return absl::UnavailableError(absl::StrCat(
          msg, "; another connection held the write lock longer than the busy timeout (",
          busy_timeout_ms, " ms): retry, or raise StoreOptions::busy_timeout_ms"));
    case SQLITE_CANTOPEN:
      return absl::FailedPreconditionError(absl::StrCat(
          msg,
          "; check that the directory exists and that this user may create files in it "
          "(the store also creates '",
          path, "-wal' and '", path, "-shm' beside it)"));
    case SQLITE_READONLY:
    case SQLITE_PERM:
    case SQLITE_AUTH:
      return absl::PermissionDeniedError(
          absl::StrCat(msg, "; the store needs write access to the file and to its directory"));
    case SQLITE_NOTADB:
      return absl::FailedPreconditionError(absl::StrCat(
          msg, "; the file is not a vlcache dq store: pass the path of a store or of a new file"));
    case SQLITE_CORRUPT:
      return absl::DataLossError(
          absl::StrCat(msg, "; the file is damaged: restore it from a backup"));
    case SQLITE_FULL:
      return absl::ResourceExhaustedError(absl::StrCat(msg, "; the disk is full"));
    case SQLITE_IOERR:
      return absl::UnavailableError(
          absl::StrCat(msg, "; the operating system reported an I/O error on the file"));
    case SQLITE_CONSTRAINT:
      return absl::InvalidArgumentError(msg);
    default:
      return absl::InternalError(msg);
  }
}

// Owns a connection; sqlite3_close_v2 defers the close until every statement is finalized, so
// the order in which owners die does not matter.
struct DbCloser {
  void operator()(sqlite3* db) const { sqlite3_close_v2(db); }
};
using DbHandle = std::unique_ptr<sqlite3, DbCloser>;

// Owns a prepared statement. Statements are prepared once per Store and reused (sqlite3_prepare
// parses and plans the SQL; a run adds hundreds of metric rows through one statement).
class Statement {
 public:
  Statement() = default;
  Statement(const Statement&) = delete;
  Statement& operator=(const Statement&) = delete;
  Statement(Statement&& other) noexcept : stmt_(std::exchange(other.stmt_, nullptr)) {}
  Statement& operator=(Statement&& other) noexcept {
    if (this != &other) {
      sqlite3_finalize(stmt_);
      stmt_ = std::exchange(other.stmt_, nullptr);
    }
    return *this;
  }
  ~Statement() { sqlite3_finalize(stmt_); }

  sqlite3_stmt* get() const { return stmt_; }
  sqlite3_stmt** out() { return &stmt_; }

 private:
  sqlite3_stmt* stmt_ = nullptr;
};

// The connection with the file's path, so that every error names the file.
class Connection {
 public:
  absl::Status Open(const std::string& path, const StoreOptions& options) {
    path_ = path;
    busy_timeout_ms_ = options.busy_timeout_ms;
    sqlite3* raw = nullptr;
    int rc =
        sqlite3_open_v2(path.c_str(), &raw, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, nullptr);
    db_.reset(raw);  // also on failure: the handle holds the error message and must be closed
    if (rc != SQLITE_OK) return Fail(rc, "cannot open the file");
    sqlite3_extended_result_codes(db_.get(), 1);
    sqlite3_busy_timeout(db_.get(), options.busy_timeout_ms);
    return absl::OkStatus();
  }

  sqlite3* db() const { return db_.get(); }
  const std::string& path() const { return path_; }

  absl::Status Fail(int rc, std::string_view doing) const {
    return SqliteStatus(rc, path_, doing, sqlite3_errmsg(db_.get()), busy_timeout_ms_);
  }
  absl::Status Error(absl::StatusCode code, std::string_view message) const {
    return absl::Status(code, absl::StrCat("dq store '", path_, "': ", std::string(message)));
  }

  absl::Status Prepare(const char* sql, Statement* stmt) const {
    int rc =
        sqlite3_prepare_v3(db_.get(), sql, -1, SQLITE_PREPARE_PERSISTENT, stmt->out(), nullptr);
    if (rc != SQLITE_OK) return Fail(rc, absl::StrCat("preparing `", sql, "`"));
    return absl::OkStatus();
  }

  // For schema changes and pragmas only: the hot paths use prepared statements.
  absl::Status Exec(const std::string& sql, std::string_view doing) const {
    int rc = sqlite3_exec(db_.get(), sql.c_str(), nullptr, nullptr, nullptr);
    if (rc != SQLITE_OK) return Fail(rc, doing);
    return absl::OkStatus();
  }

 private:
  std::string path_;
  int busy_timeout_ms_ = 0;
  DbHandle db_;
};

// One use of a prepared statement: binds parameters in order, steps, reads columns, and resets
// the statement when it goes out of scope, so the next use starts clean and a reader does not
// keep a read transaction (and the WAL) pinned. `doing` names the step in error messages and
// must outlive the Query (a literal, as a rule).
class Query {
 public:
  Query(const Connection& conn, const Statement& stmt, std::string_view doing)
      : conn_(conn), stmt_(stmt.get()), doing_(doing) {}
  Query(const Query&) = delete;
  Query& operator=(const Query&) = delete;
  ~Query() {
    sqlite3_reset(stmt_);
    sqlite3_clear_bindings(stmt_);
  }

  Query& Bind(int64_t value) { return Check(sqlite3_bind_int64(stmt_, ++index_, value)); }
  Query& Bind(const std::string& value) {
    return Check(sqlite3_bind_text(stmt_, ++index_, value.data(), static_cast<int>(value.size()),
                                   SQLITE_TRANSIENT));
  }
  // NaN becomes NULL: SQLite has no NaN, and NULL says "undefined" in SQL too.
  Query& BindReal(double value) {
    return Check(std::isnan(value) ? sqlite3_bind_null(stmt_, ++index_)
                                   : sqlite3_bind_double(stmt_, ++index_, value));
  }

  // True with a row to read, false when done.
  absl::StatusOr<bool> Step() {
    if (bind_rc_ != SQLITE_OK) return conn_.Fail(bind_rc_, doing_);
    int rc = sqlite3_step(stmt_);
    if (rc == SQLITE_ROW) return true;
    if (rc == SQLITE_DONE) return false;
    last_rc_ = rc;
    return conn_.Fail(rc, doing_);
  }
  // Runs a statement that returns no rows.
  absl::Status Run() {
    VLC_ASSIGN_OR_RETURN(bool row, Step());
    (void)row;
    return absl::OkStatus();
  }
  // The extended code of the last failed step (to tell a constraint apart from an I/O error).
  int last_rc() const { return last_rc_; }

  int64_t Int(int col) const { return sqlite3_column_int64(stmt_, col); }
  std::string Text(int col) const {
    const auto* text = reinterpret_cast<const char*>(sqlite3_column_text(stmt_, col));
    return text ? std::string(text, sqlite3_column_bytes(stmt_, col)) : std::string();
  }
  double Real(int col) const {
    return sqlite3_column_type(stmt_, col) == SQLITE_NULL ? std::numeric_limits<double>::quiet_NaN()
                                                          : sqlite3_column_double(stmt_, col);
  }

 private:
  Query& Check(int rc) {
    if (rc != SQLITE_OK && bind_rc_ == SQLITE_OK) bind_rc_ = rc;
    return *this;
  }

  const Connection& conn_;
  sqlite3_stmt* stmt_;
  std::string_view doing_;
  int index_ = 0;
  int bind_rc_ = SQLITE_OK;
  int last_rc_ = SQLITE_OK;
};

// A write transaction that rolls back unless committed. BEGIN IMMEDIATE takes the write lock at
// the start: a deferred transaction that reads first and then writes can fail with SQLITE_BUSY
// at the upgrade without the busy timeout helping (SQLite cannot wait there without deadlock).
class Transaction {
 public:
  Transaction(const Connection& conn, const Statement& begin, const Statement& commit,
              const Statement& rollback)
      : conn_(conn), begin_(begin), commit_(commit), rollback_(rollback) {}
  Transaction(const Transaction&) = delete;
  Transaction& operator=(const Transaction&) = delete;
  ~Transaction() {
    // Some errors (disk full, I/O) already rolled the transaction back; ROLLBACK would fail then.
    if (open_ && !sqlite3_get_autocommit(conn_.db())) {
      Query rollback(conn_, rollback_, "rolling back");
      (void)rollback.Run();
    }
  }

  absl::Status Begin() {
    VLC_RETURN_IF_ERROR(Query(conn_, begin_, "starting a write transaction").Run());
    open_ = true;
    return absl::OkStatus();
  }
  absl::Status Commit() {
    VLC_RETURN_IF_ERROR(Query(conn_, commit_, "committing").Run());
    open_ = false;
    return absl::OkStatus();
  }

 private:
  const Connection& conn_;
  const Statement& begin_;
  const Statement& commit_;
  const Statement& rollback_;
  bool open_ = false;
};

}  // namespace

struct Store::Impl {
  Connection conn;
  Statement begin, commit, rollback;
  Statement insert_pipeline, find_pipeline, list_pipelines;
  Statement find_run_by_key, find_run_by_seq, next_seq, insert_run, list_runs;
  Statement insert_metric, list_columns, run_values, series;
  Statement put_program, get_program;

  absl::Status OpenFile(const std::string& path, const StoreOptions& options);
  absl::StatusOr<int32_t> CheckOwnership();
  absl::Status Migrate(int32_t application_id);
  absl::Status PrepareAll();

  absl::StatusOr<int64_t> PragmaInt(const std::string& pragma);
  // The pipeline's id, or nullopt when there is none.
  absl::StatusOr<std::optional<int64_t>> FindPipeline(const std::string& name);
  // The pipeline's id; NOT_FOUND naming the pipelines that exist.
  absl::StatusOr<int64_t> RequirePipeline(const std::string& name);
  // The run's row id; NOT_FOUND when the pipeline has no run `seq`.
  absl::StatusOr<int64_t> RequireRun(const std::string& pipeline, int64_t pipeline_id, int64_t seq);
  absl::StatusOr<std::vector<std::string>> Pipelines();
};

absl::StatusOr<int64_t> Store::Impl::PragmaInt(const std::string& pragma) {
  Statement stmt;
  VLC_RETURN_IF_ERROR(conn.Prepare(("PRAGMA " + pragma).c_str(), &stmt));
  const std::string doing = "reading PRAGMA " + pragma;  // outlives q, which keeps a view of it
  Query q(conn, stmt, doing);
  VLC_ASSIGN_OR_RETURN(bool row, q.Step());
  if (!row) return conn.Error(absl::StatusCode::kInternal, "PRAGMA " + pragma + " returned no row");
  return q.Int(0);
}

absl::Status Store::Impl::OpenFile(const std::string& path, const StoreOptions& options) {
  VLC_RETURN_IF_ERROR(conn.Open(path, options));
  // SQLite opens a file it may not write read-only without saying so; every AddRun would fail.
  if (sqlite3_db_readonly(conn.db(), "main") == 1) {
    return conn.Error(absl::StatusCode::kPermissionDenied,
                      "the file is read-only for this user; the store needs write access to it "
                      "and to its directory (it creates -wal and -shm files beside it)");
  }
  // Before anything writes: a foreign file must be left exactly as it was.
  VLC_ASSIGN_OR_RETURN(int32_t application_id, CheckOwnership());

  // Pragmas that change the journal cannot run inside a transaction, so they come before Migrate.
  {
    Statement stmt;
    VLC_RETURN_IF_ERROR(conn.Prepare("PRAGMA journal_mode = WAL", &stmt));
    Query q(conn, stmt, "switching to WAL journal mode");
    VLC_ASSIGN_OR_RETURN(bool row, q.Step());
    std::string mode = row ? q.Text(0) : std::string();
    if (mode != "wal") {
      return conn.Error(absl::StatusCode::kFailedPrecondition,
                        absl::StrCat("SQLite could not switch the file to WAL journal mode (it "
                                     "stays '",
                                     mode,
                                     "'); the store needs a file on a local "
                                     "file system, which WAL's shared-memory index requires"));
    }
  }
  // FULL, not NORMAL: see the header. A committed run must survive power loss, not only kill -9.
  VLC_RETURN_IF_ERROR(conn.Exec("PRAGMA synchronous = FULL", "setting synchronous = FULL"));
  VLC_RETURN_IF_ERROR(conn.Exec("PRAGMA foreign_keys = ON", "enabling foreign keys"));
  // A build of SQLite without foreign-key support ignores the pragma silently.
  VLC_ASSIGN_OR_RETURN(int64_t fk, PragmaInt("foreign_keys"));
  if (fk != 1) {
    return conn.Error(absl::StatusCode::kFailedPrecondition,
                      "this SQLite library does not enforce foreign keys; link one built "
                      "without SQLITE_OMIT_FOREIGN_KEY");
  }
  VLC_RETURN_IF_ERROR(Migrate(application_id));
  return PrepareAll();
}

absl::StatusOr<int32_t> Store::Impl::CheckOwnership() {
  // The first read of the file: a file that is not SQLite at all fails here with SQLITE_NOTADB.
  VLC_ASSIGN_OR_RETURN(int64_t application_id, PragmaInt("application_id"));
  if (application_id == kApplicationId) return static_cast<int32_t>(application_id);
  if (application_id != 0) {
    return conn.Error(absl::StatusCode::kFailedPrecondition,
                      absl::StrCat("the file is an SQLite database of another program "
                                   "(application_id ",
                                   application_id,
                                   "), not a vlcache dq "
                                   "store: pass the path of a store or of a new file"));
  }
  // No application id: a new or empty file (version 0) or another program's database.
  Statement stmt;
  VLC_RETURN_IF_ERROR(conn.Prepare(
      "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' "
      "ORDER BY name LIMIT 5",
      &stmt));
  Query q(conn, stmt, "listing the file's tables");
  std::vector<std::string> tables;
  while (true) {
    VLC_ASSIGN_OR_RETURN(bool row, q.Step());
    if (!row) break;
    tables.push_back(q.Text(0));
  }
  if (!tables.empty()) {
    return conn.Error(absl::StatusCode::kFailedPrecondition,
                      absl::StrCat("the file is an SQLite database of another program (tables ",
                                   absl::StrJoin(tables, ", "),
                                   "), not a vlcache dq store: "
                                   "pass the path of a store or of a new file"));
  }
  return 0;
}

absl::Status Store::Impl::Migrate(int32_t application_id) {
  Statement begin_stmt, commit_stmt, rollback_stmt;
  VLC_RETURN_IF_ERROR(conn.Prepare("BEGIN IMMEDIATE", &begin_stmt));
  VLC_RETURN_IF_ERROR(conn.Prepare("COMMIT", &commit_stmt));
  VLC_RETURN_IF_ERROR(conn.Prepare("ROLLBACK", &rollback_stmt));
  // Two processes may open a new file at once: the version is read again under the write lock,
  // so only the first one creates the schema.
  Transaction txn(conn, begin_stmt, commit_stmt, rollback_stmt);
  VLC_RETURN_IF_ERROR(txn.Begin());

  int64_t version = 0;
  {
    Statement has_table;
    VLC_RETURN_IF_ERROR(conn.Prepare(
        "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'dq_schema_version'",
        &has_table));
    Query q(conn, has_table, "looking for the schema version table");
    VLC_ASSIGN_OR_RETURN(bool row, q.Step());
    (void)row;
    if (q.Int(0) == 1) {
      Statement read;
      VLC_RETURN_IF_ERROR(conn.Prepare("SELECT version FROM dq_schema_version", &read));
      Query v(conn, read, "reading the schema version");
      VLC_ASSIGN_OR_RETURN(bool has_row, v.Step());
      if (!has_row) {
        return conn.Error(absl::StatusCode::kDataLoss,
                          "the schema version table is empty; the file is damaged: restore it "
                          "from a backup");
      }
      version = v.Int(0);
    } else if (application_id == kApplicationId) {
      return conn.Error(absl::StatusCode::kDataLoss,
                        "the file is marked as a vlcache dq store but has no schema version "
                        "table; the file is damaged: restore it from a backup");
    }
  }
  if (version > kSchemaVersion) {
    return conn.Error(absl::StatusCode::kFailedPrecondition,
                      absl::StrCat("schema version ", version,
                                   " was written by a newer vlcache "
                                   "(this build knows up to ",
                                   kSchemaVersion, "); open it with that version"));
  }
  if (version < 0) {
    return conn.Error(absl::StatusCode::kDataLoss,
                      absl::StrCat("invalid schema version ", version, "; the file is damaged"));
  }
  if (version == kSchemaVersion) return txn.Commit();

  for (int64_t v = version; v < kSchemaVersion; ++v) {
    VLC_RETURN_IF_ERROR(conn.Exec(
        kMigrations[v], absl::StrCat("migrating the schema from version ", v, " to ", v + 1)));
  }
  VLC_RETURN_IF_ERROR(
      conn.Exec(absl::StrCat("UPDATE dq_schema_version SET version = ", kSchemaVersion,
                             ";"
                             "PRAGMA application_id = ",
                             kApplicationId, ";"),
                "recording the schema version"));
  return txn.Commit();
}

absl::Status Store::Impl::PrepareAll() {
  const std::pair<Statement*, const char*> statements[] = {
      {&begin, "BEGIN IMMEDIATE"},
      {&commit, "COMMIT"},
      {&rollback, "ROLLBACK"},
      {&insert_pipeline, "INSERT INTO pipelines (name) VALUES (?) ON CONFLICT (name) DO NOTHING"},
      {&find_pipeline, "SELECT id FROM pipelines WHERE name = ?"},
      {&list_pipelines, "SELECT name FROM pipelines ORDER BY name"},
      {&find_run_by_key, "SELECT seq FROM runs WHERE pipeline_id = ? AND run_key = ?"},
      {&find_run_by_seq, "SELECT id FROM runs WHERE pipeline_id = ? AND seq = ?"},
      {&next_seq, "SELECT coalesce(max(seq), 0) + 1 FROM runs WHERE pipeline_id = ?"},
      {&insert_run,
       "INSERT INTO runs (pipeline_id, seq, run_key, row_count, added_unix_ms) "
       "VALUES (?, ?, ?, ?, ?)"},
      {&list_runs,
       "SELECT seq, run_key, row_count, added_unix_ms FROM runs WHERE pipeline_id = ? "
       "ORDER BY seq"},
      {&insert_metric,
       "INSERT INTO metric_values (run_id, column_name, metric, value) VALUES (?, ?, ?, ?)"},
      {&list_columns,
       "SELECT DISTINCT m.column_name FROM runs r JOIN metric_values m ON m.run_id = r.id "
       "WHERE r.pipeline_id = ? ORDER BY m.column_name"},
      {&run_values,
       "SELECT column_name, metric, value FROM metric_values WHERE run_id = ? "
       "ORDER BY column_name"},
      // Newest first so that LIMIT keeps the last n; the caller reverses. LIMIT -1: no limit.
      {&series,
       "SELECT r.seq, r.run_key, m.value FROM metric_values m JOIN runs r ON r.id = m.run_id "
       "WHERE r.pipeline_id = ? AND m.column_name = ? AND m.metric = ? "
       "ORDER BY r.seq DESC LIMIT ?"},
      {&put_program,
       "INSERT INTO programs (pipeline_id, column_name, learned_at_seq, program_json, "
       "added_unix_ms) VALUES (?, ?, ?, ?, ?) "
       "ON CONFLICT (pipeline_id, column_name, learned_at_seq) DO UPDATE SET "
       "program_json = excluded.program_json, added_unix_ms = excluded.added_unix_ms"},
      {&get_program,
       "SELECT learned_at_seq, program_json FROM programs WHERE pipeline_id = ? AND "
       "column_name = ? ORDER BY learned_at_seq DESC LIMIT 1"},
  };
  for (const auto& [stmt, sql] : statements) VLC_RETURN_IF_ERROR(conn.Prepare(sql, stmt));
  return absl::OkStatus();
}

absl::StatusOr<std::optional<int64_t>> Store::Impl::FindPipeline(const std::string& name) {
  Query q(conn, find_pipeline, "looking up a pipeline");
  q.Bind(name);
  VLC_ASSIGN_OR_RETURN(bool row, q.Step());
  if (!row) return std::optional<int64_t>();
  return std::optional<int64_t>(q.Int(0));
}

absl::StatusOr<std::vector<std::string>> Store::Impl::Pipelines() {
  Query q(conn, list_pipelines, "listing pipelines");
  std::vector<std::string> names;
  while (true) {
    VLC_ASSIGN_OR_RETURN(bool row, q.Step());
    if (!row) break;
    names.push_back(q.Text(0));
  }
  return names;
}

absl::StatusOr<int64_t> Store::Impl::RequirePipeline(const std::string& name) {
  VLC_ASSIGN_OR_RETURN(std::optional<int64_t> id, FindPipeline(name));
  if (id) return *id;
  VLC_ASSIGN_OR_RETURN(std::vector<std::string> names, Pipelines());
  return conn.Error(absl::StatusCode::kNotFound,
                    absl::StrCat("no pipeline '", name,
                                 "' (known: ", names.empty() ? "none" : absl::StrJoin(names, ", "),
                                 "); AddRun creates a pipeline with its first run"));
}

absl::StatusOr<int64_t> Store::Impl::RequireRun(const std::string& pipeline, int64_t pipeline_id,
                                                int64_t seq) {
  Query q(conn, find_run_by_seq, "looking up a run");
  q.Bind(pipeline_id).Bind(seq);
  VLC_ASSIGN_OR_RETURN(bool row, q.Step());
  if (row) return q.Int(0);
  return conn.Error(
      absl::StatusCode::kNotFound,
      absl::StrCat("pipeline '", pipeline, "' has no run ", seq, " (Runs() lists its runs)"));
}

// ---- Store

Store::Store(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Store::Store(Store&&) noexcept = default;
Store& Store::operator=(Store&&) noexcept = default;
Store::~Store() = default;

absl::StatusOr<Store> Store::Open(const std::string& path, StoreOptions options) {
  if (path.empty()) {
    return absl::InvalidArgumentError("dq store: the path is empty; pass the store's file name");
  }
  auto impl = std::make_unique<Impl>();
  VLC_RETURN_IF_ERROR(impl->OpenFile(path, options));
  return Store(std::move(impl));
}

const std::string& Store::path() const { return impl_->conn.path(); }

absl::StatusOr<int64_t> Store::AddRun(const std::string& pipeline, const std::string& run_key,
                                      int64_t row_count, const RunMetrics& metrics) {
  Impl& s = *impl_;
  if (pipeline.empty() || run_key.empty()) {
    return s.conn.Error(absl::StatusCode::kInvalidArgument,
                        absl::StrCat("AddRun needs a pipeline name and a run key (got '", pipeline,
                                     "' and '", run_key, "')"));
  }
  if (row_count < 0) {
    return s.conn.Error(absl::StatusCode::kInvalidArgument,
                        absl::StrCat("run '", run_key, "' of pipeline '", pipeline,
                                     "' has a negative row count (", row_count, ")"));
  }
  for (const auto& [column, values] : metrics) {
    if (column.empty()) {
      return s.conn.Error(absl::StatusCode::kInvalidArgument,
                          absl::StrCat("run '", run_key, "' of pipeline '", pipeline,
                                       "' has metric values for a column with an empty name"));
    }
  }

  // Everything below is one transaction: the run row and all its metric rows, or nothing.
  Transaction txn(s.conn, s.begin, s.commit, s.rollback);
  VLC_RETURN_IF_ERROR(txn.Begin());

  {
    Query q(s.conn, s.insert_pipeline, "adding a pipeline");
    VLC_RETURN_IF_ERROR(q.Bind(pipeline).Run());
  }
  VLC_ASSIGN_OR_RETURN(int64_t pipeline_id, s.RequirePipeline(pipeline));
  {
    Query q(s.conn, s.find_run_by_key, "looking up a run key");
    q.Bind(pipeline_id).Bind(run_key);
    VLC_ASSIGN_OR_RETURN(bool row, q.Step());
    if (row) {
      return s.conn.Error(
          absl::StatusCode::kAlreadyExists,
          absl::StrCat("pipeline '", pipeline, "' already has run '", run_key, "' (run ", q.Int(0),
                       "); a run is recorded once: give "
                       "a re-run its own key"));
    }
  }
  int64_t seq = 0;
  {
    Query q(s.conn, s.next_seq, "numbering the run");
    q.Bind(pipeline_id);
    VLC_ASSIGN_OR_RETURN(bool row, q.Step());
    (void)row;  // an aggregate always returns a row
    seq = q.Int(0);
  }
  {
    Query q(s.conn, s.insert_run, "adding the run");
    q.Bind(pipeline_id).Bind(seq).Bind(run_key).Bind(row_count).Bind(NowUnixMs());
    VLC_RETURN_IF_ERROR(q.Run());
  }
  const int64_t run_id = sqlite3_last_insert_rowid(s.conn.db());
  for (const auto& [column, values] : metrics) {
    for (const MetricValue& mv : values) {
      Query q(s.conn, s.insert_metric, "adding a metric value");
      q.Bind(run_id).Bind(column).Bind(MetricName(mv.metric)).BindReal(mv.value);
      absl::Status status = q.Run();
      if (q.last_rc() == SQLITE_CONSTRAINT_PRIMARYKEY) {
        return s.conn.Error(
            absl::StatusCode::kInvalidArgument,
            absl::StrCat("run '", run_key, "' of pipeline '", pipeline, "' gives metric ",
                         MetricName(mv.metric), " twice for column '", column, "'"));
      }
      VLC_RETURN_IF_ERROR(status);
    }
  }
  VLC_RETURN_IF_ERROR(txn.Commit());
  return seq;
}

absl::StatusOr<std::vector<std::string>> Store::Pipelines() { return impl_->Pipelines(); }

absl::StatusOr<std::vector<RunInfo>> Store::Runs(const std::string& pipeline) {
  Impl& s = *impl_;
  VLC_ASSIGN_OR_RETURN(int64_t pipeline_id, s.RequirePipeline(pipeline));
  Query q(s.conn, s.list_runs, "listing runs");
  q.Bind(pipeline_id);
  std::vector<RunInfo> runs;
  while (true) {
    VLC_ASSIGN_OR_RETURN(bool row, q.Step());
    if (!row) break;
    runs.push_back(RunInfo{q.Int(0), q.Text(1), q.Int(2), q.Int(3)});
  }
  return runs;
}

absl::StatusOr<std::vector<std::string>> Store::Columns(const std::string& pipeline) {
  Impl& s = *impl_;
  VLC_ASSIGN_OR_RETURN(int64_t pipeline_id, s.RequirePipeline(pipeline));
  Query q(s.conn, s.list_columns, "listing columns");
  q.Bind(pipeline_id);
  std::vector<std::string> columns;
  while (true) {
    VLC_ASSIGN_OR_RETURN(bool row, q.Step());
    if (!row) break;
    columns.push_back(q.Text(0));
  }
  return columns;
}

absl::StatusOr<RunMetrics> Store::RunValues(const std::string& pipeline, int64_t run_seq) {
  Impl& s = *impl_;
  VLC_ASSIGN_OR_RETURN(int64_t pipeline_id, s.RequirePipeline(pipeline));
  VLC_ASSIGN_OR_RETURN(int64_t run_id, s.RequireRun(pipeline, pipeline_id, run_seq));
  Query q(s.conn, s.run_values, "reading a run's metric values");
  q.Bind(run_id);
  RunMetrics metrics;
  while (true) {
    VLC_ASSIGN_OR_RETURN(bool row, q.Step());
    if (!row) break;
    std::string name = q.Text(1);
    absl::StatusOr<Metric> metric = MetricFromName(name);
    if (!metric.ok()) {
      return s.conn.Error(
          absl::StatusCode::kFailedPrecondition,
          absl::StrCat("run ", run_seq, " of pipeline '", pipeline, "' holds metric '", name,
                       "', unknown to this build; "
                       "read the store with the vlcache that wrote it"));
    }
    metrics[q.Text(0)].push_back(MetricValue{*metric, q.Real(2)});
  }
  // Enum order, as ComputeMetrics returns them (the table orders by name).
  for (auto& [column, values] : metrics) {
    std::sort(values.begin(), values.end(), [](const MetricValue& a, const MetricValue& b) {
      return static_cast<int>(a.metric) < static_cast<int>(b.metric);
    });
  }
  return metrics;
}

absl::StatusOr<std::vector<MetricPoint>> Store::MetricSeries(const std::string& pipeline,
                                                             const std::string& column,
                                                             Metric metric,
                                                             std::optional<size_t> last_n) {
  Impl& s = *impl_;
  VLC_ASSIGN_OR_RETURN(int64_t pipeline_id, s.RequirePipeline(pipeline));
  constexpr size_t kMaxLimit = static_cast<size_t>(std::numeric_limits<int64_t>::max());
  const int64_t limit = last_n ? static_cast<int64_t>(std::min(*last_n, kMaxLimit)) : -1;
  Query q(s.conn, s.series, "reading a metric series");
  q.Bind(pipeline_id).Bind(column).Bind(MetricName(metric)).Bind(limit);
  std::vector<MetricPoint> points;
  while (true) {
    VLC_ASSIGN_OR_RETURN(bool row, q.Step());
    if (!row) break;
    points.push_back(MetricPoint{q.Int(0), q.Text(1), q.Real(2)});
  }
  std::reverse(points.begin(), points.end());  // read newest first for LIMIT; callers want oldest
  return points;
}

absl::Status Store::PutProgram(const std::string& pipeline, const std::string& column,
                               int64_t run_seq, const nlohmann::json& program) {
  Impl& s = *impl_;
  if (column.empty()) {
    return s.conn.Error(
        absl::StatusCode::kInvalidArgument,
        absl::StrCat("PutProgram for pipeline '", pipeline, "' needs a column name"));
  }
  VLC_ASSIGN_OR_RETURN(int64_t pipeline_id, s.RequirePipeline(pipeline));
  VLC_RETURN_IF_ERROR(s.RequireRun(pipeline, pipeline_id, run_seq).status());
  Query q(s.conn, s.put_program, "storing a program");
  q.Bind(pipeline_id).Bind(column).Bind(run_seq).Bind(program.dump()).Bind(NowUnixMs());
  return q.Run();
}

absl::StatusOr<StoredProgram> Store::GetProgram(const std::string& pipeline,
                                                const std::string& column) {
  Impl& s = *impl_;
  VLC_ASSIGN_OR_RETURN(int64_t pipeline_id, s.RequirePipeline(pipeline));
  Query q(s.conn, s.get_program, "reading a program");
  q.Bind(pipeline_id).Bind(column);
  VLC_ASSIGN_OR_RETURN(bool row, q.Step());
  if (!row) {
    return s.conn.Error(absl::StatusCode::kNotFound,
                        absl::StrCat("no program stored for column '", column, "' of pipeline '",
                                     pipeline, "'; PutProgram stores one"));
  }
  StoredProgram stored;
  stored.learned_at_seq = q.Int(0);
  // Only PutProgram writes this column, from a json's dump(); a parse failure means damage.
  stored.program = nlohmann::json::parse(q.Text(1), nullptr, /*allow_exceptions=*/false);
  if (stored.program.is_discarded()) {
    return s.conn.Error(absl::StatusCode::kDataLoss,
                        absl::StrCat("the program stored for column '", column, "' of pipeline '",
                                     pipeline, "' at run ", stored.learned_at_seq,
                                     " is not valid JSON; store it again with PutProgram"));
  }
  return stored;
}

}  // namespace vlc::dq
