#include "dq/io.h"

#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <optional>
#include <unordered_map>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "common/status.h"
#include "nlohmann/json.hpp"

namespace vlc::dq {
namespace {

// A value as read, before its column's type is known. `number` is set when the value counts as a
// number for type inference: a CSV field that parses, a JSON number.
struct RawCell {
  std::optional<std::string> text;  // nullopt: null
  std::optional<double> number;
};

struct RawColumn {
  std::string name;
  std::vector<RawCell> cells;
};

// A finite number written in full in `s` (C locale: std::from_chars never looks at the locale),
// with optional blanks around it and an optional '+'.
std::optional<double> ParseNumber(std::string_view s) {
  auto blank = [](char c) { return c == ' ' || c == '\t'; };
  while (!s.empty() && blank(s.front())) s.remove_prefix(1);
  while (!s.empty() && blank(s.back())) s.remove_suffix(1);
  // from_chars rejects a leading '+', which people do write; "+-1" must still fail.
  if (s.size() > 1 && s.front() == '+' && s[1] != '-' && s[1] != '+') s.remove_prefix(1);
  if (s.empty()) return std::nullopt;
  double value = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), value);
  if (ec != std::errc() || end != s.data() + s.size() || !std::isfinite(value)) {
    return std::nullopt;
  }
  return value;
}

// Shortens a value quoted in an error message so that one bad multi-kilobyte field does not
// flood a log line.
std::string Excerpt(std::string_view s) {
  constexpr size_t kMax = 60;
  if (s.size() <= kMax) return std::string(s);
  return absl::StrCat(std::string(s.substr(0, kMax)), "...");
}

absl::Status CheckOverridesExist(const ReadOptions& options, const std::vector<RawColumn>& columns,
                                 const std::string& source) {
  for (const auto& [name, type] : options.column_types) {
    bool found = false;
    for (const auto& c : columns) found = found || c.name == name;
    if (!found) {
      std::vector<std::string> names;
      for (const auto& c : columns) names.push_back(c.name);
      return absl::InvalidArgumentError(absl::StrCat(
          source, ": a type override names column '", name, "', which the data does not have",
          " (columns: ", names.empty() ? "none" : absl::StrJoin(names, ", "), ")"));
    }
  }
  return absl::OkStatus();
}

// Gives each raw column its type (the override, else numeric when every non-null value counts as
// a number) and builds the table. `where(row)` says where a row came from, for error messages.
absl::StatusOr<Table> BuildTable(std::vector<RawColumn> raw, const ReadOptions& options,
                                 const std::string& source,
                                 const std::function<std::string(size_t)>& where) {
  VLC_RETURN_IF_ERROR(CheckOverridesExist(options, raw, source));
  std::vector<Column> columns;
  columns.reserve(raw.size());
  for (auto& rc : raw) {
    std::optional<ColumnType> forced;
    if (auto it = options.column_types.find(rc.name); it != options.column_types.end()) {
      forced = it->second;
    }
    bool all_numbers = true;
    for (const auto& cell : rc.cells) all_numbers = all_numbers && (!cell.text || cell.number);
    const ColumnType type =
        forced ? *forced : (all_numbers ? ColumnType::kNumeric : ColumnType::kCategorical);
    if (type == ColumnType::kNumeric) {
      Column::NumericValues values(rc.cells.size());
      for (size_t r = 0; r < rc.cells.size(); ++r) {
        const RawCell& cell = rc.cells[r];
        if (!cell.text) continue;
        std::optional<double> v = cell.number ? cell.number : ParseNumber(*cell.text);
        if (!v) {
          return absl::InvalidArgumentError(
              absl::StrCat(where(r), ": column '", rc.name, "' is declared numeric but holds '",
                           Excerpt(*cell.text), "', which is not a finite number"));
        }
        values[r] = *v;
      }
      columns.push_back(Column::Numeric(std::move(rc.name), std::move(values)));
    } else {
      Column::StringValues values(rc.cells.size());
      for (size_t r = 0; r < rc.cells.size(); ++r) values[r] = std::move(rc.cells[r].text);
      columns.push_back(Column::Categorical(std::move(rc.name), std::move(values)));
    }
  }
  auto table = Table::Make(std::move(columns));
  if (!table.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": ", table.status().message()));
  }
  return table;
}

absl::StatusOr<std::string> ReadWholeFile(const std::string& path) {
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (f == nullptr) {
    const int err = errno;
    std::string msg = absl::StrCat("cannot open '", path, "': ", std::strerror(err));
    if (err == ENOENT) return absl::NotFoundError(msg);
    if (err == EACCES) return absl::PermissionDeniedError(msg);
    return absl::InvalidArgumentError(msg);
  }
  std::string data;
  char buf[1 << 16];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof(buf), f)) > 0) data.append(buf, n);
  const bool failed = std::ferror(f) != 0;
  const int err = errno;
  std::fclose(f);
  if (failed) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot read '", path, "': ", std::strerror(err)));
  }
  return data;
}

// RFC 4180 records, one at a time, with the line each starts on.
class CsvReader {
 public:
  CsvReader(std::string_view text, std::string source) : text_(text), source_(std::move(source)) {
    if (text_.substr(0, 3) == "\xEF\xBB\xBF") text_.remove_prefix(3);  // UTF-8 byte-order mark
  }

  // The header's names, once known, make messages name the column of a bad field.
  void set_names(const std::vector<std::string>* names) { names_ = names; }

  // Reads the next record into `fields`; false at the end of the input.
  absl::StatusOr<bool> Next(std::vector<std::string>* fields, int* record_line) {
    fields->clear();
    if (pos_ >= text_.size()) return false;
    *record_line = line_;
    const size_t n = text_.size();
    while (true) {
      std::string field;
      const int field_line = line_;
      if (pos_ < n && text_[pos_] == '"') {
        ++pos_;
        while (true) {
          if (pos_ >= n) {
            return Error(field_line, absl::StrCat("the quoted ", FieldName(fields->size()),
                                                  " starts on this line but its closing quote is "
                                                  "missing (the file ends inside it)"));
          }
          const char c = text_[pos_++];
          if (c == '"') {
            if (pos_ < n && text_[pos_] == '"') {  // "" is one quote character
              field += '"';
              ++pos_;
              continue;
            }
            break;
          }
          if (c == '\n') ++line_;
          field += c;
        }
        if (pos_ < n && text_[pos_] != ',' && text_[pos_] != '\n' && text_[pos_] != '\r') {
          return Error(line_,
                       absl::StrCat("unexpected character '", std::string(1, text_[pos_]),
                                    "' after the closing quote of ", FieldName(fields->size()),
                                    ": a closing quote must be followed by a comma or the "
                                    "end of the line (write a quote inside a quoted field "
                                    "as \"\")"));
        }
      } else {
        while (pos_ < n && text_[pos_] != ',' && text_[pos_] != '\n' && text_[pos_] != '\r') {
          if (text_[pos_] == '"') {
            return Error(line_,
                         absl::StrCat("a quote inside the unquoted ", FieldName(fields->size()),
                                      ": quote the whole field and double the quotes "
                                      "inside it (\"a \"\"b\"\" c\")"));
          }
          field += text_[pos_++];
        }
      }
      fields->push_back(std::move(field));
      if (pos_ >= n) return true;
      if (text_[pos_] == ',') {
        ++pos_;
        continue;
      }
      // End of the record: LF, CRLF or a lone CR.
      if (text_[pos_] == '\r' && pos_ + 1 < n && text_[pos_ + 1] == '\n') ++pos_;
      ++pos_;
      ++line_;
      return true;
    }
  }

  absl::Status Error(int line, const std::string& what) const {
    return absl::InvalidArgumentError(absl::StrCat(source_, ":", line, ": ", what));
  }

 private:
  std::string FieldName(size_t index) const {
    if (names_ != nullptr && index < names_->size()) {
      return absl::StrCat("field ", index + 1, " (column '", (*names_)[index], "')");
    }
    return absl::StrCat("field ", index + 1);
  }

  std::string_view text_;
  std::string source_;
  const std::vector<std::string>* names_ = nullptr;
  size_t pos_ = 0;
  int line_ = 1;
};

bool IsDigit(char c) { return c >= '0' && c <= '9'; }

int DaysInMonth(int year, int month) {
  static constexpr int kDays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  const bool leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
  return month == 2 && leap ? 29 : kDays[month - 1];
}

// "YYYY-MM-DD" or "YYYY/MM/DD" at the start of `s`, followed by the end or a non-digit.
bool ParseLeadingDate(std::string_view s, int* year, int* month, int* day) {
  if (s.size() < 10) return false;
  const char sep = s[4];
  if ((sep != '-' && sep != '/') || s[7] != sep) return false;
  for (int i : {0, 1, 2, 3, 5, 6, 8, 9}) {
    if (!IsDigit(s[i])) return false;
  }
  if (s.size() > 10 && IsDigit(s[10])) return false;
  auto num = [&](int from, int len) {
    int v = 0;
    for (int i = from; i < from + len; ++i) v = v * 10 + (s[i] - '0');
    return v;
  };
  *year = num(0, 4);
  *month = num(5, 2);
  *day = num(8, 2);
  return *month >= 1 && *month <= 12 && *day >= 1 && *day <= DaysInMonth(*year, *month);
}

}  // namespace

absl::StatusOr<Table> ParseCsv(std::string_view text, std::string_view source_name,
                               const ReadOptions& options) {
  const std::string source(source_name);
  CsvReader reader(text, source);
  std::vector<std::string> fields;
  int line = 0;
  VLC_ASSIGN_OR_RETURN(bool has_header, reader.Next(&fields, &line));
  if (!has_header) {
    return absl::InvalidArgumentError(
        absl::StrCat(source, ": the file is empty; expected a header row of column names"));
  }
  std::vector<std::string> names = fields;
  for (size_t i = 0; i < names.size(); ++i) {
    if (names[i].empty()) {
      return reader.Error(line, absl::StrCat("column ", i + 1,
                                             " of the header has no name: every column needs one"));
    }
    for (size_t j = 0; j < i; ++j) {
      if (names[j] == names[i]) {
        return reader.Error(
            line, absl::StrCat("column name '", names[i], "' appears twice in the header (columns ",
                               j + 1, " and ", i + 1, ")"));
      }
    }
  }
  reader.set_names(&names);

  std::vector<RawColumn> raw(names.size());
  for (size_t i = 0; i < names.size(); ++i) raw[i].name = names[i];
  std::vector<int> record_lines;  // the line each data row starts on
  while (true) {
    VLC_ASSIGN_OR_RETURN(bool more, reader.Next(&fields, &line));
    if (!more) break;
    if (fields.size() != names.size()) {
      const bool blank = fields.size() == 1 && fields[0].empty();
      return reader.Error(
          line,
          absl::StrCat("expected ", names.size(), " fields as in the header, found ", fields.size(),
                       blank ? " (a blank line)"
                       : fields.size() > names.size()
                           ? " (a comma inside a value must be quoted: \"a,b\")"
                           : ""));
    }
    for (size_t i = 0; i < fields.size(); ++i) {
      RawCell cell;
      if (!fields[i].empty()) {
        cell.number = ParseNumber(fields[i]);
        cell.text = std::move(fields[i]);
      }
      raw[i].cells.push_back(std::move(cell));
    }
    record_lines.push_back(line);
  }
  return BuildTable(std::move(raw), options, source,
                    [&](size_t row) { return absl::StrCat(source, ":", record_lines[row]); });
}

absl::StatusOr<Table> ReadCsvFile(const std::string& path, const ReadOptions& options) {
  VLC_ASSIGN_OR_RETURN(std::string text, ReadWholeFile(path));
  return ParseCsv(text, path, options);
}

absl::StatusOr<Table> ParseJsonRecords(std::string_view text, std::string_view source_name,
                                       const ReadOptions& options) {
  const std::string source(source_name);
  // ordered_json keeps keys in file order, so columns come out in the order a person wrote them.
  nlohmann::ordered_json doc;
  try {
    doc = nlohmann::ordered_json::parse(text.begin(), text.end());
  } catch (const nlohmann::ordered_json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": not valid JSON: ", e.what()));
  }
  if (!doc.is_array()) {
    return absl::InvalidArgumentError(absl::StrCat(
        source, ": expected a JSON array of records ([{...}, ...]) at the top level, found ",
        doc.type_name()));
  }
  std::vector<RawColumn> raw;
  std::unordered_map<std::string, size_t> index;
  const size_t rows = doc.size();
  for (size_t r = 0; r < rows; ++r) {
    const auto& record = doc[r];
    if (!record.is_object()) {
      return absl::InvalidArgumentError(absl::StrCat(source, ": record ", r,
                                                     " (counting from 0) is ", record.type_name(),
                                                     ", expected an object"));
    }
    for (const auto& [key, value] : record.items()) {
      auto [it, added] = index.emplace(key, raw.size());
      if (added) raw.push_back(RawColumn{key, std::vector<RawCell>(rows)});
      RawCell& cell = raw[it->second].cells[r];
      switch (value.type()) {
        case nlohmann::ordered_json::value_t::null:
          break;
        case nlohmann::ordered_json::value_t::number_integer:
        case nlohmann::ordered_json::value_t::number_unsigned:
        case nlohmann::ordered_json::value_t::number_float:
          cell.number = value.get<double>();
          cell.text = value.dump();
          break;
        case nlohmann::ordered_json::value_t::string:
          cell.text = value.get<std::string>();
          break;
        case nlohmann::ordered_json::value_t::boolean:
          cell.text = value.get<bool>() ? "true" : "false";
          break;
        default:
          return absl::InvalidArgumentError(absl::StrCat(
              source, ": record ", r, " (counting from 0), key '", key, "': ", value.type_name(),
              " values are not supported; expected a number, a string, a boolean or null"));
      }
    }
  }
  return BuildTable(std::move(raw), options, source, [&](size_t row) {
    return absl::StrCat(source, ": record ", row, " (counting from 0)");
  });
}

absl::StatusOr<Table> ReadJsonRecordsFile(const std::string& path, const ReadOptions& options) {
  VLC_ASSIGN_OR_RETURN(std::string text, ReadWholeFile(path));
  return ParseJsonRecords(text, path, options);
}

absl::StatusOr<std::vector<PipelineRun>> SplitIntoRuns(const Table& table,
                                                       std::string_view partition_column,
                                                       std::string_view period) {
  if (period != "day" && period != "month") {
    return absl::InvalidArgumentError(
        absl::StrCat("unknown run period '", std::string(period), "': expected day or month"));
  }
  const std::string partition(partition_column);
  const bool by_day = period == "day";
  VLC_ASSIGN_OR_RETURN(const Column* column, table.GetColumn(partition));
  if (column->type() != ColumnType::kCategorical) {
    return absl::InvalidArgumentError(
        absl::StrCat("partition column '", partition, "' is ", ColumnTypeName(column->type()),
                     "; expected dates such as 2012-01-31 or 2001/01/13 06:05"));
  }
  // std::map: zero-padded "YYYY-MM(-DD)" keys sort in time order.
  struct Period {
    int days = 0;  // the run's span
    std::vector<size_t> rows;
  };
  std::map<std::string, Period> periods;
  const auto& values = column->strings();
  for (size_t r = 0; r < values.size(); ++r) {
    int year = 0, month = 0, day = 0;
    if (!values[r] || !ParseLeadingDate(*values[r], &year, &month, &day)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "row ", r + 1, " (counting data rows from 1) of partition column '", partition,
          "' holds ", values[r] ? absl::StrCat("'", Excerpt(*values[r]), "'") : "null",
          ", not a date; expected YYYY-MM-DD or YYYY/MM/DD at the start of the value"));
    }
    std::string key = by_day ? absl::StrFormat("%04d-%02d-%02d", year, month, day)
                             : absl::StrFormat("%04d-%02d", year, month);
    Period& period = periods[std::move(key)];
    period.days = by_day ? 1 : DaysInMonth(year, month);
    period.rows.push_back(r);
  }
  std::vector<PipelineRun> runs;
  runs.reserve(periods.size());
  for (auto& [key, period] : periods) {
    runs.push_back(PipelineRun{key, table.SelectRows(period.rows)});
    runs.back().table.SetSpan(period.days);
  }
  return runs;
}

}  // namespace vlc::dq
