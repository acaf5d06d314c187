// One run of a recurring pipeline: a table held by column. A column is either numeric (finite
// doubles) or categorical (strings); either kind may hold nulls. AVH validates each column on its
// own (docs/METHODS.md, "Auto-Validate-by-History"), so the table is little more than named
// columns of equal length.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

#include "absl/status/statusor.h"

namespace vlc::dq {

enum class ColumnType {
  kNumeric,      // doubles; the metric library's 15 numeric metrics apply
  kCategorical,  // strings; the 21 categorical metrics apply
};

// "numeric" or "categorical". (A std::string, not a string_view: Debian's Abseil has its own
// string_view, which absl::StrCat takes but std::string_view does not convert to.)
const std::string& ColumnTypeName(ColumnType type);
// Accepts "numeric", "categorical" and "string" (an alias of categorical), as a configuration or
// a command line would spell them; INVALID_ARGUMENT otherwise.
absl::StatusOr<ColumnType> ParseColumnType(std::string_view name);

class Column {
 public:
  using NumericValues = std::vector<std::optional<double>>;
  using StringValues = std::vector<std::optional<std::string>>;

  // A numeric value is a finite double: NaN and +-infinity are stored as nulls, as pandas treats
  // NaN, so that every metric (sums, histograms, ranges) works on finite numbers only.
  static Column Numeric(std::string name, NumericValues values);
  static Column Categorical(std::string name, StringValues values);

  const std::string& name() const { return name_; }
  ColumnType type() const { return type_; }
  bool is_numeric() const { return type_ == ColumnType::kNumeric; }

  // Rows, nulls included.
  size_t size() const;
  size_t null_count() const { return null_count_; }
  size_t non_null_count() const { return size() - null_count_; }
  bool IsNull(size_t row) const;

  // The values with their nulls. Calling the accessor of the other type is a programming error
  // (std::bad_variant_access).
  const NumericValues& numeric() const { return std::get<NumericValues>(values_); }
  const StringValues& strings() const { return std::get<StringValues>(values_); }

  // The non-null values in row order: what every metric works on ("nulls dropped after
  // counting"). Empty for a column of the other type.
  std::vector<double> NonNullNumbers() const;
  std::vector<std::string_view> NonNullStrings() const;

  // The rows `rows` (indices into this column, in the order given) as a new column of the same
  // name, type and span. Indices must be < size().
  Column Select(const std::vector<size_t>& rows) const;

  // The length of the period the run covers, in a unit fixed for the pipeline (days for daily or
  // monthly runs): what the rows-per-span metrics divide the row count by, so that a month's rows
  // compare with another month's whatever their numbers of days. Unset when the run does not say;
  // those metrics are then undefined. Callers check it is finite and positive.
  const std::optional<double>& span() const { return span_; }
  void set_span(std::optional<double> span) { span_ = span; }
  // This column with `span`, for building one in an expression: Numeric(...).WithSpan(s).
  Column WithSpan(std::optional<double> span) && {
    span_ = span;
    return std::move(*this);
  }

 private:
  Column(std::string name, ColumnType type, std::variant<NumericValues, StringValues> values,
         size_t null_count);

  std::string name_;
  ColumnType type_;
  std::variant<NumericValues, StringValues> values_;
  size_t null_count_;
  std::optional<double> span_;
};

class Table {
 public:
  // An empty table: no columns, no rows.
  Table() = default;
  // INVALID_ARGUMENT when a name is empty or repeated, or the columns differ in length (the
  // message names the columns involved).
  static absl::StatusOr<Table> Make(std::vector<Column> columns);

  size_t num_rows() const { return columns_.empty() ? 0 : columns_.front().size(); }
  size_t num_columns() const { return columns_.size(); }
  const std::vector<Column>& columns() const { return columns_; }
  std::vector<std::string> ColumnNames() const;

  // nullptr when there is no such column.
  const Column* Find(std::string_view name) const;
  // NOT_FOUND naming the columns that do exist.
  absl::StatusOr<const Column*> GetColumn(std::string_view name) const;

  // The rows `rows` of every column, in the order given (see Column::Select).
  Table SelectRows(const std::vector<size_t>& rows) const;

  // Sets every column's span (see Column::span).
  void SetSpan(std::optional<double> span);
  // The first column's span; unset for a table without columns.
  std::optional<double> span() const;

 private:
  explicit Table(std::vector<Column> columns) : columns_(std::move(columns)) {}

  std::vector<Column> columns_;
};

// OK for no span or a finite positive one; INVALID_ARGUMENT naming `what` (e.g. "run '2012-01'")
// otherwise.
absl::Status CheckSpan(const std::optional<double>& span, const std::string& what);

}  // namespace vlc::dq
