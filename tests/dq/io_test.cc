// Reading runs: CSV (RFC 4180) and JSON records, with errors that name the line or record, and
// the two real data sets split into their runs.
#include "dq/io.h"

#include <algorithm>
#include <optional>
#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace vlc::dq {
namespace {

std::string Message(const absl::Status& s) { return std::string(s.message()); }

// The error message of a parse that must fail with INVALID_ARGUMENT.
std::string CsvError(const std::string& text, const ReadOptions& options = {}) {
  absl::StatusOr<Table> t = ParseCsv(text, "in.csv", options);
  EXPECT_FALSE(t.ok()) << "parsed:\n" << text;
  EXPECT_EQ(t.status().code(), absl::StatusCode::kInvalidArgument) << t.status();
  return Message(t.status());
}

std::string JsonError(const std::string& text, const ReadOptions& options = {}) {
  absl::StatusOr<Table> t = ParseJsonRecords(text, "in.json", options);
  EXPECT_FALSE(t.ok()) << "parsed:\n" << text;
  EXPECT_EQ(t.status().code(), absl::StatusCode::kInvalidArgument) << t.status();
  return Message(t.status());
}

// ---- CSV.

TEST(DqCsv, InfersNumericAndCategoricalColumnsWithNulls) {
  absl::StatusOr<Table> t = ParseCsv(
      "city,temp,code\n"
      "Seattle,12.5,A1\n"
      "New York,,B2\n"
      "Boston,-3e1,\n",
      "in.csv");
  ASSERT_TRUE(t.ok()) << t.status();
  ASSERT_EQ(t->ColumnNames(), (std::vector<std::string>{"city", "temp", "code"}));
  EXPECT_EQ(t->num_rows(), 3u);
  const Column& temp = *t->Find("temp");
  ASSERT_EQ(temp.type(), ColumnType::kNumeric);
  EXPECT_EQ(temp.numeric()[0], 12.5);
  EXPECT_FALSE(temp.numeric()[1].has_value());
  EXPECT_EQ(temp.numeric()[2], -30.0);
  const Column& code = *t->Find("code");
  ASSERT_EQ(code.type(), ColumnType::kCategorical);
  EXPECT_FALSE(code.strings()[2].has_value());
  EXPECT_EQ(t->Find("city")->strings()[1], "New York");
}

TEST(DqCsv, NumbersMustBeFiniteAndWrittenInFull) {
  absl::StatusOr<Table> t = ParseCsv(
      "a,b,c,d,e\n"
      " 7 ,+3,.5,inf,12kg\n"
      "1e3,-0,5.,nan,3\n",
      "in.csv");
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->Find("a")->type(), ColumnType::kNumeric);  // blanks around a number are fine
  EXPECT_EQ(t->Find("a")->numeric()[0], 7.0);
  EXPECT_EQ(t->Find("b")->numeric()[0], 3.0);
  EXPECT_EQ(t->Find("c")->numeric()[0], 0.5);
  EXPECT_EQ(t->Find("d")->type(), ColumnType::kCategorical);  // inf and nan are not finite
  EXPECT_EQ(t->Find("e")->type(), ColumnType::kCategorical);
  EXPECT_EQ(t->Find("e")->strings()[0], "12kg");
}

TEST(DqCsv, AColumnWithoutValuesIsNumeric) {
  absl::StatusOr<Table> t = ParseCsv("a,b\n1,\n2,\n", "in.csv");
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->Find("b")->type(), ColumnType::kNumeric);
  EXPECT_EQ(t->Find("b")->null_count(), 2u);
}

TEST(DqCsv, QuotedFieldsHoldCommasQuotesAndNewlines) {
  absl::StatusOr<Table> t = ParseCsv(
      "\"id\",\"note\"\r\n"
      "1,\"a, b\"\r\n"
      "2,\"say \"\"hi\"\"\"\r\n"
      "3,\"two\nlines\"\r\n"
      "4,\"\"\r\n"
      "5,\"crlf\r\ninside\"",  // no line break after the last record
      "in.csv");
  ASSERT_TRUE(t.ok()) << t.status();
  ASSERT_EQ(t->num_rows(), 5u);
  const auto& note = t->Find("note")->strings();
  EXPECT_EQ(note[0], "a, b");
  EXPECT_EQ(note[1], "say \"hi\"");
  EXPECT_EQ(note[2], "two\nlines");
  EXPECT_FALSE(note[3].has_value());  // "" is empty, hence null
  EXPECT_EQ(note[4], "crlf\r\ninside");
  EXPECT_EQ(t->Find("id")->type(), ColumnType::kNumeric);
}

TEST(DqCsv, SkipsAByteOrderMarkAndAcceptsATrailingComma) {
  absl::StatusOr<Table> t = ParseCsv("\xEF\xBB\xBFx,y\n1,\n", "in.csv");
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->ColumnNames(), (std::vector<std::string>{"x", "y"}));
  EXPECT_FALSE(t->Find("y")->numeric()[0].has_value());
}

TEST(DqCsv, ASingleColumnBlankLineIsANull) {
  absl::StatusOr<Table> t = ParseCsv("x\n1\n\n3\n", "in.csv");
  ASSERT_TRUE(t.ok()) << t.status();
  ASSERT_EQ(t->num_rows(), 3u);
  EXPECT_FALSE(t->Find("x")->numeric()[1].has_value());
}

TEST(DqCsv, WrongFieldCountNamesThePhysicalLine) {
  // The quoted newline in record 1 puts record 2 on line 4.
  EXPECT_EQ(CsvError("a,b\n1,\"x\ny\"\n2,z,extra\n"),
            "in.csv:4: expected 2 fields as in the header, found 3 (a comma inside a value must "
            "be quoted: \"a,b\")");
  EXPECT_EQ(CsvError("a,b\n1,2\n3\n"), "in.csv:3: expected 2 fields as in the header, found 1");
  EXPECT_EQ(CsvError("a,b\n1,2\n\n3,4\n"),
            "in.csv:3: expected 2 fields as in the header, found 1 (a blank line)");
}

TEST(DqCsv, UnterminatedQuoteNamesTheLineItOpensOn) {
  EXPECT_EQ(CsvError("a,b\n1,2\n3,\"abc\n4,5\n"),
            "in.csv:3: the quoted field 2 (column 'b') starts on this line but its closing quote "
            "is missing (the file ends inside it)");
}

TEST(DqCsv, StrayQuotesAreErrors) {
  EXPECT_EQ(CsvError("a,b\n1,ab\"c\n"),
            "in.csv:2: a quote inside the unquoted field 2 (column 'b'): quote the whole field "
            "and double the quotes inside it (\"a \"\"b\"\" c\")");
  EXPECT_EQ(CsvError("a,b\n\"x\"y,1\n"),
            "in.csv:2: unexpected character 'y' after the closing quote of field 1 (column 'a'): "
            "a closing quote must be followed by a comma or the end of the line (write a quote "
            "inside a quoted field as \"\")");
}

TEST(DqCsv, HeaderProblems) {
  EXPECT_EQ(CsvError(""), "in.csv: the file is empty; expected a header row of column names");
  EXPECT_EQ(CsvError("a,,c\n1,2,3\n"),
            "in.csv:1: column 2 of the header has no name: every column needs one");
  EXPECT_EQ(CsvError("a,b,a\n"),
            "in.csv:1: column name 'a' appears twice in the header (columns 1 and 3)");
}

TEST(DqCsv, TypeOverrides) {
  ReadOptions options;
  options.column_types["zip"] = ColumnType::kCategorical;
  absl::StatusOr<Table> t = ParseCsv("zip,n\n01234,1\n98101,2\n", "in.csv", options);
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->Find("zip")->type(), ColumnType::kCategorical);
  EXPECT_EQ(t->Find("zip")->strings()[0], "01234");  // leading zero kept

  ReadOptions numeric;
  numeric.column_types["n"] = ColumnType::kNumeric;
  EXPECT_EQ(CsvError("n\n1\n2\nthree\n", numeric),
            "in.csv:4: column 'n' is declared numeric but holds 'three', which is not a finite "
            "number");

  ReadOptions typo;
  typo.column_types["nn"] = ColumnType::kNumeric;
  EXPECT_EQ(CsvError("n,m\n1,2\n", typo),
            "in.csv: a type override names column 'nn', which the data does not have (columns: "
            "n, m)");
}

TEST(DqCsv, UnreadableFilesSayWhy) {
  absl::StatusOr<Table> t = ReadCsvFile("/nonexistent/runs.csv");
  EXPECT_EQ(t.status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(Message(t.status()), "cannot open '/nonexistent/runs.csv': No such file or directory");
  // A directory opens but does not read.
  absl::StatusOr<Table> dir = ReadJsonRecordsFile(VLC_SOURCE_DIR);
  EXPECT_EQ(dir.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Message(dir.status()),
            std::string("cannot read '") + VLC_SOURCE_DIR + "': Is a directory");
}

// ---- JSON.

TEST(DqJson, RecordsBecomeColumnsInFirstAppearanceOrder) {
  absl::StatusOr<Table> t = ParseJsonRecords(
      R"([{"z": 1, "a": "x"},
          {"a": "y", "z": null, "m": 2.5},
          {"z": 3}])",
      "in.json");
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->ColumnNames(), (std::vector<std::string>{"z", "a", "m"}));
  ASSERT_EQ(t->num_rows(), 3u);
  const Column& z = *t->Find("z");
  ASSERT_EQ(z.type(), ColumnType::kNumeric);
  EXPECT_EQ(z.numeric()[0], 1.0);
  EXPECT_FALSE(z.numeric()[1].has_value());  // null
  EXPECT_EQ(z.numeric()[2], 3.0);
  const Column& a = *t->Find("a");
  ASSERT_EQ(a.type(), ColumnType::kCategorical);
  EXPECT_FALSE(a.strings()[2].has_value());  // missing key
  const Column& m = *t->Find("m");
  EXPECT_FALSE(m.numeric()[0].has_value());  // the key appears only in record 1
  EXPECT_EQ(m.numeric()[1], 2.5);
}

TEST(DqJson, MixedNumbersAndStringsAreCategorical) {
  absl::StatusOr<Table> t =
      ParseJsonRecords(R"([{"v": 66}, {"v": "late"}, {"v": 1.5}, {"v": true}])", "in.json");
  ASSERT_TRUE(t.ok()) << t.status();
  const Column& v = *t->Find("v");
  ASSERT_EQ(v.type(), ColumnType::kCategorical);
  EXPECT_EQ(v.strings()[0], "66");
  EXPECT_EQ(v.strings()[1], "late");
  EXPECT_EQ(v.strings()[2], "1.5");
  EXPECT_EQ(v.strings()[3], "true");
}

TEST(DqJson, OverridesParseNumericStrings) {
  ReadOptions options;
  options.column_types["v"] = ColumnType::kNumeric;
  absl::StatusOr<Table> t = ParseJsonRecords(R"([{"v": "12"}, {"v": 3}])", "in.json", options);
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->Find("v")->numeric()[0], 12.0);
  EXPECT_EQ(JsonError(R"([{"v": 1}, {"v": "n/a"}])", options),
            "in.json: record 1 (counting from 0): column 'v' is declared numeric but holds "
            "'n/a', which is not a finite number");
}

TEST(DqJson, BadInputNamesTheRecord) {
  EXPECT_EQ(JsonError(R"({"v": 1})"),
            "in.json: expected a JSON array of records ([{...}, ...]) at the top level, found "
            "object");
  EXPECT_EQ(JsonError(R"([{"v": 1}, 7])"),
            "in.json: record 1 (counting from 0) is number, expected an object");
  EXPECT_EQ(JsonError(R"([{"v": 1}, {"v": 2}, {"v": [1, 2]}])"),
            "in.json: record 2 (counting from 0), key 'v': array values are not supported; "
            "expected a number, a string, a boolean or null");
  const std::string syntax = JsonError(R"([{"v": 1},)");
  EXPECT_EQ(syntax.rfind("in.json: not valid JSON: ", 0), 0u) << syntax;
  EXPECT_NE(syntax.find("line 1"), std::string::npos) << syntax;  // nlohmann says where
}

// ---- Splitting into runs.

absl::StatusOr<Table> DatedTable() {
  return ParseCsv(
      "when,x\n"
      "2001/01/02 06:05,1\n"
      "2001/01/01 23:59,2\n"
      "2001-02-01,3\n"
      "2001/01/02,4\n",
      "in.csv");
}

TEST(DqSplitIntoRuns, DaysAndMonthsInTimeOrderRowsInFileOrder) {
  absl::StatusOr<Table> t = DatedTable();
  ASSERT_TRUE(t.ok()) << t.status();
  absl::StatusOr<std::vector<PipelineRun>> days = SplitIntoRuns(*t, "when", "day");
  ASSERT_TRUE(days.ok()) << days.status();
  ASSERT_EQ(days->size(), 3u);
  EXPECT_EQ((*days)[0].key, "2001-01-01");
  EXPECT_EQ((*days)[1].key, "2001-01-02");
  EXPECT_EQ((*days)[2].key, "2001-02-01");
  const Column& x = *(*days)[1].table.Find("x");
  EXPECT_EQ(x.numeric(), (Column::NumericValues{1.0, 4.0}));
  EXPECT_EQ((*days)[1].table.ColumnNames(), (std::vector<std::string>{"when", "x"}));

  absl::StatusOr<std::vector<PipelineRun>> months = SplitIntoRuns(*t, "when", "month");
  ASSERT_TRUE(months.ok()) << months.status();
  ASSERT_EQ(months->size(), 2u);
  EXPECT_EQ((*months)[0].key, "2001-01");
  EXPECT_EQ((*months)[0].table.num_rows(), 3u);
  EXPECT_EQ((*months)[1].key, "2001-02");
}

TEST(DqSplitIntoRuns, BadKeysNameTheRow) {
  absl::StatusOr<Table> t = ParseCsv("when,x\n2001-01-01,1\n2001-02-30,2\n", "in.csv");
  ASSERT_TRUE(t.ok());
  absl::StatusOr<std::vector<PipelineRun>> r = SplitIntoRuns(*t, "when", "day");
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Message(r.status()),
            "row 2 (counting data rows from 1) of partition column 'when' holds '2001-02-30', "
            "not a date; expected YYYY-MM-DD or YYYY/MM/DD at the start of the value");

  for (const char* bad : {"2001-01-011", "01/02/2001", "2001-01/01", "2001-13-01", "yesterday"}) {
    absl::StatusOr<Table> one = ParseCsv(std::string("when\n") + bad + "\n", "in.csv");
    ASSERT_TRUE(one.ok());
    EXPECT_FALSE(SplitIntoRuns(*one, "when", "month").ok()) << bad;
  }
  absl::StatusOr<Table> leap = ParseCsv("when\n2000-02-29\n2004/02/29 12:00\n", "in.csv");
  ASSERT_TRUE(leap.ok());
  EXPECT_TRUE(SplitIntoRuns(*leap, "when", "day").ok());

  absl::StatusOr<Table> nulls = ParseCsv("when,x\n2001-01-01,1\n,2\n", "in.csv");
  ASSERT_TRUE(nulls.ok());
  EXPECT_EQ(Message(SplitIntoRuns(*nulls, "when", "day").status()),
            "row 2 (counting data rows from 1) of partition column 'when' holds null, not a "
            "date; expected YYYY-MM-DD or YYYY/MM/DD at the start of the value");
}

TEST(DqSplitIntoRuns, BadArguments) {
  absl::StatusOr<Table> t = DatedTable();
  ASSERT_TRUE(t.ok());
  EXPECT_EQ(Message(SplitIntoRuns(*t, "when", "week").status()),
            "unknown run period 'week': expected day or month");
  absl::StatusOr<std::vector<PipelineRun>> missing = SplitIntoRuns(*t, "date", "day");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(Message(missing.status()), "no column named 'date'; the table has: when, x");
  EXPECT_EQ(Message(SplitIntoRuns(*t, "x", "day").status()),
            "partition column 'x' is numeric; expected dates such as 2012-01-31 or 2001/01/13 "
            "06:05");
}

// ---- The real data sets, read in place.

std::string DataPath(const char* file) {
  return std::string(VLC_SOURCE_DIR) + "/tests/data/avh/" + file;
}

TEST(DqRealData, WeatherIsFortyEightMonthlyRuns) {
  absl::StatusOr<Table> t = ReadCsvFile(DataPath("weather.csv"));
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->num_rows(), 2922u);  // 1461 days, two cities
  EXPECT_EQ(t->ColumnNames(),
            (std::vector<std::string>{"location", "date", "precipitation", "temp_max", "temp_min",
                                      "wind", "weather"}));
  for (const char* name : {"precipitation", "temp_max", "temp_min", "wind"}) {
    EXPECT_EQ(t->Find(name)->type(), ColumnType::kNumeric) << name;
    EXPECT_EQ(t->Find(name)->null_count(), 0u) << name;
  }
  for (const char* name : {"location", "date", "weather"}) {
    EXPECT_EQ(t->Find(name)->type(), ColumnType::kCategorical) << name;
  }
  absl::StatusOr<std::vector<PipelineRun>> runs = SplitIntoRuns(*t, "date", "month");
  ASSERT_TRUE(runs.ok()) << runs.status();
  ASSERT_EQ(runs->size(), 48u);
  EXPECT_EQ(runs->front().key, "2012-01");
  EXPECT_EQ(runs->back().key, "2015-12");
  EXPECT_EQ((*runs)[0].table.num_rows(), 62u);  // January, two cities
  EXPECT_EQ((*runs)[1].table.num_rows(), 58u);  // February 2012 had 29 days
  size_t total = 0;
  for (size_t i = 0; i < runs->size(); ++i) {
    total += (*runs)[i].table.num_rows();
    if (i > 0) EXPECT_LT((*runs)[i - 1].key, (*runs)[i].key);
  }
  EXPECT_EQ(total, 2922u);
}

TEST(DqRealData, FlightsAreNinetyDailyRuns) {
  absl::StatusOr<Table> t = ReadJsonRecordsFile(DataPath("flights-20k.json"));
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->num_rows(), 20000u);
  EXPECT_EQ(t->ColumnNames(),
            (std::vector<std::string>{"date", "delay", "distance", "origin", "destination"}));
  EXPECT_EQ(t->Find("delay")->type(), ColumnType::kNumeric);
  EXPECT_EQ(t->Find("distance")->type(), ColumnType::kNumeric);
  EXPECT_EQ(t->Find("origin")->type(), ColumnType::kCategorical);
  EXPECT_EQ(t->Find("destination")->type(), ColumnType::kCategorical);
  EXPECT_EQ(t->Find("delay")->numeric()[0], 66.0);  // the first record
  absl::StatusOr<std::vector<PipelineRun>> runs = SplitIntoRuns(*t, "date", "day");
  ASSERT_TRUE(runs.ok()) << runs.status();
  ASSERT_EQ(runs->size(), 90u);  // January to March 2001
  EXPECT_EQ(runs->front().key, "2001-01-01");
  EXPECT_EQ(runs->back().key, "2001-03-31");
  EXPECT_EQ(runs->front().table.num_rows(), 222u);
  EXPECT_EQ(runs->back().table.num_rows(), 202u);
  size_t total = 0, smallest = 20000, largest = 0;
  for (const PipelineRun& r : *runs) {
    total += r.table.num_rows();
    smallest = std::min(smallest, r.table.num_rows());
    largest = std::max(largest, r.table.num_rows());
  }
  EXPECT_EQ(total, 20000u);
  EXPECT_EQ(smallest, 186u);
  EXPECT_EQ(largest, 256u);
}

}  // namespace
}  // namespace vlc::dq
