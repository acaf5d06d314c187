// A run as a table of named, equal-length columns, numeric or categorical, with nulls.
#include "dq/table.h"

#include <cmath>
#include <optional>
#include <string>

#include "gtest/gtest.h"

namespace vlc::dq {
namespace {

std::string Message(const absl::Status& s) { return std::string(s.message()); }

TEST(DqColumn, CountsNullsAndKeepsRowOrder) {
  const Column c = Column::Numeric("t", {1.5, std::nullopt, -2.0});
  EXPECT_EQ(c.name(), "t");
  EXPECT_TRUE(c.is_numeric());
  EXPECT_EQ(c.size(), 3u);
  EXPECT_EQ(c.null_count(), 1u);
  EXPECT_EQ(c.non_null_count(), 2u);
  EXPECT_TRUE(c.IsNull(1));
  EXPECT_FALSE(c.IsNull(2));
  EXPECT_EQ(c.NonNullNumbers(), (std::vector<double>{1.5, -2.0}));
  EXPECT_TRUE(c.NonNullStrings().empty());  // not a categorical column

  const Column s = Column::Categorical("w", {"rain", std::nullopt, "", "sun"});
  EXPECT_EQ(s.type(), ColumnType::kCategorical);
  EXPECT_EQ(s.null_count(), 1u);  // an empty string is a value here; readers decide nulls
  EXPECT_EQ(s.NonNullStrings(), (std::vector<std::string_view>{"rain", "", "sun"}));
}

TEST(DqColumn, NonFiniteNumbersAreNulls) {
  const Column c = Column::Numeric("t", {std::nan(""), INFINITY, -INFINITY, 0.0});
  EXPECT_EQ(c.null_count(), 3u);
  EXPECT_FALSE(c.numeric()[0].has_value());
  EXPECT_EQ(c.NonNullNumbers(), std::vector<double>{0.0});
}

TEST(DqColumn, SelectTakesRowsInTheOrderGiven) {
  const Column s = Column::Categorical("w", {"a", "b", std::nullopt, "d"});
  const Column picked = s.Select({3, 2, 0, 0});
  EXPECT_EQ(picked.name(), "w");
  ASSERT_EQ(picked.size(), 4u);
  EXPECT_EQ(picked.strings()[0], "d");
  EXPECT_FALSE(picked.strings()[1].has_value());
  EXPECT_EQ(picked.strings()[3], "a");
  EXPECT_EQ(picked.null_count(), 1u);
}

TEST(DqTable, MakeChecksNamesAndLengths) {
  absl::StatusOr<Table> ok = Table::Make(
      {Column::Numeric("a", {1.0, 2.0}), Column::Categorical("b", {"x", std::nullopt})});
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ(ok->num_rows(), 2u);
  EXPECT_EQ(ok->num_columns(), 2u);
  EXPECT_EQ(ok->ColumnNames(), (std::vector<std::string>{"a", "b"}));

  absl::StatusOr<Table> ragged =
      Table::Make({Column::Numeric("a", {1.0, 2.0}), Column::Numeric("b", {1.0})});
  EXPECT_EQ(ragged.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Message(ragged.status()), "columns differ in length: 'a' has 2 rows but 'b' has 1");

  absl::StatusOr<Table> twice =
      Table::Make({Column::Numeric("a", {}), Column::Numeric("c", {}), Column::Numeric("a", {})});
  EXPECT_EQ(Message(twice.status()), "column name 'a' appears twice (columns 1 and 3)");

  absl::StatusOr<Table> unnamed = Table::Make({Column::Numeric("", {})});
  EXPECT_EQ(unnamed.status().code(), absl::StatusCode::kInvalidArgument);

  EXPECT_EQ(Table().num_rows(), 0u);
}

TEST(DqTable, LookUpAndSelectRows) {
  absl::StatusOr<Table> t = Table::Make(
      {Column::Numeric("a", {1.0, 2.0, 3.0}), Column::Categorical("b", {"x", "y", "z"})});
  ASSERT_TRUE(t.ok());
  ASSERT_NE(t->Find("b"), nullptr);
  EXPECT_EQ(t->Find("b")->name(), "b");
  EXPECT_EQ(t->Find("nope"), nullptr);
  absl::StatusOr<const Column*> missing = t->GetColumn("nope");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(Message(missing.status()), "no column named 'nope'; the table has: a, b");

  const Table rows = t->SelectRows({2, 0});
  EXPECT_EQ(rows.num_rows(), 2u);
  EXPECT_EQ(rows.Find("a")->numeric()[0], 3.0);
  EXPECT_EQ(rows.Find("b")->strings()[1], "x");
}

TEST(DqColumnType, NamesParseBack) {
  EXPECT_EQ(ColumnTypeName(ColumnType::kNumeric), "numeric");
  EXPECT_EQ(ColumnTypeName(ColumnType::kCategorical), "categorical");
  EXPECT_EQ(*ParseColumnType("numeric"), ColumnType::kNumeric);
  EXPECT_EQ(*ParseColumnType("categorical"), ColumnType::kCategorical);
  EXPECT_EQ(*ParseColumnType("string"), ColumnType::kCategorical);
  absl::StatusOr<ColumnType> bad = ParseColumnType("float");
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Message(bad.status()),
            "unknown column type 'float': expected numeric, categorical or string");
}

}  // namespace
}  // namespace vlc::dq
