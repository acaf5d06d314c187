#include "dq/table.h"

#include <cmath>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace vlc::dq {

const std::string& ColumnTypeName(ColumnType type) {
  static const std::string* const kNames = new std::string[2]{"numeric", "categorical"};
  return kNames[type == ColumnType::kNumeric ? 0 : 1];
}

absl::StatusOr<ColumnType> ParseColumnType(std::string_view name) {
  if (name == "numeric") return ColumnType::kNumeric;
  if (name == "categorical" || name == "string") return ColumnType::kCategorical;
  return absl::InvalidArgumentError(absl::StrCat("unknown column type '", std::string(name),
                                                 "': expected numeric, categorical or string"));
}

Column::Column(std::string name, ColumnType type, std::variant<NumericValues, StringValues> values,
               size_t null_count)
    : name_(std::move(name)), type_(type), values_(std::move(values)), null_count_(null_count) {}

Column Column::Numeric(std::string name, NumericValues values) {
  size_t nulls = 0;
  for (auto& v : values) {
    if (v.has_value() && !std::isfinite(*v)) v.reset();
    if (!v.has_value()) ++nulls;
  }
  return Column(std::move(name), ColumnType::kNumeric, std::move(values), nulls);
}

Column Column::Categorical(std::string name, StringValues values) {
  size_t nulls = 0;
  for (const auto& v : values) nulls += v.has_value() ? 0 : 1;
  return Column(std::move(name), ColumnType::kCategorical, std::move(values), nulls);
}

size_t Column::size() const {
  return std::visit([](const auto& v) { return v.size(); }, values_);
}

bool Column::IsNull(size_t row) const {
  return std::visit([row](const auto& v) { return !v[row].has_value(); }, values_);
}

std::vector<double> Column::NonNullNumbers() const {
  std::vector<double> out;
  if (type_ != ColumnType::kNumeric) return out;
  out.reserve(non_null_count());
  for (const auto& v : numeric()) {
    if (v.has_value()) out.push_back(*v);
  }
  return out;
}

std::vector<std::string_view> Column::NonNullStrings() const {
  std::vector<std::string_view> out;
  if (type_ != ColumnType::kCategorical) return out;
  out.reserve(non_null_count());
  for (const auto& v : strings()) {
    if (v.has_value()) out.push_back(*v);
  }
  return out;
}

Column Column::Select(const std::vector<size_t>& rows) const {
  if (type_ == ColumnType::kNumeric) {
    NumericValues out;
    out.reserve(rows.size());
    for (size_t r : rows) out.push_back(numeric()[r]);
    return Numeric(name_, std::move(out)).WithSpan(span_);
  }
  StringValues out;
  out.reserve(rows.size());
  for (size_t r : rows) out.push_back(strings()[r]);
  return Categorical(name_, std::move(out)).WithSpan(span_);
}

absl::StatusOr<Table> Table::Make(std::vector<Column> columns) {
  for (size_t i = 0; i < columns.size(); ++i) {
    if (columns[i].name().empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("column ", i + 1, " has an empty name: every column needs a name"));
    }
    for (size_t j = 0; j < i; ++j) {
      if (columns[j].name() == columns[i].name()) {
        return absl::InvalidArgumentError(absl::StrCat("column name '", columns[i].name(),
                                                       "' appears twice (columns ", j + 1, " and ",
                                                       i + 1, ")"));
      }
    }
    if (columns[i].size() != columns.front().size()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "columns differ in length: '", columns.front().name(), "' has ", columns.front().size(),
          " rows but '", columns[i].name(), "' has ", columns[i].size()));
    }
  }
  return Table(std::move(columns));
}

std::vector<std::string> Table::ColumnNames() const {
  std::vector<std::string> names;
  names.reserve(columns_.size());
  for (const auto& c : columns_) names.push_back(c.name());
  return names;
}

const Column* Table::Find(std::string_view name) const {
  for (const auto& c : columns_) {
    if (c.name() == name) return &c;
  }
  return nullptr;
}

absl::StatusOr<const Column*> Table::GetColumn(std::string_view name) const {
  if (const Column* c = Find(name)) return c;
  return absl::NotFoundError(absl::StrCat(
      "no column named '", std::string(name),
      "'; the table has: ", columns_.empty() ? "no columns" : absl::StrJoin(ColumnNames(), ", ")));
}

Table Table::SelectRows(const std::vector<size_t>& rows) const {
  std::vector<Column> out;
  out.reserve(columns_.size());
  for (const auto& c : columns_) out.push_back(c.Select(rows));
  return Table(std::move(out));
}

void Table::SetSpan(std::optional<double> span) {
  for (auto& c : columns_) c.set_span(span);
}

absl::Status CheckSpan(const std::optional<double>& span, const std::string& what) {
  if (!span || (std::isfinite(*span) && *span > 0)) return absl::OkStatus();
  return absl::InvalidArgumentError(
      absl::StrCat(what, " has span ", *span,
                   ": a span is the length of the period the run covers (days in a month, say), "
                   "finite and positive; leave it out when the run has none"));
}

std::optional<double> Table::span() const {
  if (columns_.empty()) return std::nullopt;
  return columns_.front().span();
}

}  // namespace vlc::dq
