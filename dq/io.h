// Reading runs: a table from CSV or from a JSON array of records, and one long table split into
// the runs of a recurring pipeline (one per day or month) in time order.
//
// Errors a person can act on: bad input is INVALID_ARGUMENT and names the source (the file path,
// or the name given to the Parse* functions), the line (CSV; the physical line, 1-based, where the
// offending record or field starts) or the record (JSON; its 0-based index in the array), and
// what is wrong. A file that does not exist is NOT_FOUND, one that may not be read
// PERMISSION_DENIED; either message says what the system said.
#pragma once

#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "dq/table.h"

namespace vlc::dq {

struct ReadOptions {
  // Column name -> type, overriding inference (say, ZIP codes that look numeric but are
  // categorical). A name that is not in the data is an error: it is most likely a typo.
  std::map<std::string, ColumnType, std::less<>> column_types;
};

// CSV, RFC 4180: a header row of column names, then records of as many fields. A field may be
// quoted ("..."), and a quoted field may hold commas, newlines and doubled quotes (""). Records
// end with LF or CRLF; the last one may lack it. A leading UTF-8 byte-order mark is skipped.
//
// Nulls: an empty field, quoted ("") or not, is null; there is no other null marker.
// Types: a column is numeric when every non-null value parses in full as a finite number
// (C locale, optional sign, surrounding blanks allowed), else categorical; a column without any
// non-null value is numeric. `options.column_types` overrides this; forcing numeric on a value
// that does not parse is an error naming its line.
absl::StatusOr<Table> ParseCsv(std::string_view text, std::string_view source_name,
                               const ReadOptions& options = {});
absl::StatusOr<Table> ReadCsvFile(const std::string& path, const ReadOptions& options = {});

// JSON: a top-level array of objects (records). Columns appear in the order their keys first
// appear. Numbers are numeric and strings categorical; null and a missing key are null. A
// column holding both numbers and strings is categorical, its numbers written as JSON writes them
// ("66", "1.5"). Booleans are categorical values "true"/"false"; arrays and nested objects are
// errors. `options.column_types` overrides as for CSV (numeric accepts strings that parse).
absl::StatusOr<Table> ParseJsonRecords(std::string_view text, std::string_view source_name,
                                       const ReadOptions& options = {});
absl::StatusOr<Table> ReadJsonRecordsFile(const std::string& path, const ReadOptions& options = {});

// One run: the rows of one period, with every column of the source table (the partition column
// included) in their original order, and the period's length in days as its span (1 for a day, 28
// to 31 for a month; Column::span).
struct PipelineRun {
  std::string key;  // "YYYY-MM-DD" (period "day") or "YYYY-MM" (period "month")
  Table table;
};

// Splits `table` by the date at the start of each value of `partition_column`, which must be
// categorical and hold dates "YYYY-MM-DD" or "YYYY/MM/DD", optionally followed by anything that
// does not start with a digit ("2001/01/13 06:05", "2012-01-01T00:00"). `period` is "day" or
// "month". Runs come back in time order; periods without rows yield no run. A null or unparsable
// date is INVALID_ARGUMENT naming the row (1-based, counting data rows) and its value.
absl::StatusOr<std::vector<PipelineRun>> SplitIntoRuns(const Table& table,
                                                       std::string_view partition_column,
                                                       std::string_view period);

}  // namespace vlc::dq
