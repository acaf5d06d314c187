#include "dq/issues.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <numeric>
#include <optional>
#include <string>
#include <type_traits>
#include <unordered_map>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"

namespace vlc::dq {
namespace {

using NumericValues = Column::NumericValues;
using StringValues = Column::StringValues;

std::string FormatFactor(double v) {
  char buf[32];
  auto res = std::to_chars(buf, buf + sizeof(buf), v);
  return std::string(buf, res.ptr);
}

IssueSpec Spec(IssueKind kind, double p, double factor, std::string name) {
  IssueSpec s;
  s.kind = kind;
  s.p = p;
  s.factor = factor;
  s.name = std::move(name);
  return s;
}

IssueSpec WithP(IssueKind kind, const std::string& stem, double p) {
  return Spec(kind, p, 1.0, absl::StrCat(stem, " p=", FormatFactor(p)));
}

std::vector<IssueSpec> BuildSpecs(ColumnType type) {
  const bool numeric = type == ColumnType::kNumeric;
  std::vector<IssueSpec> specs;
  for (double p : {0.1, 0.5, 1.0})
    specs.push_back(WithP(IssueKind::kSchemaChange, "schema_change", p));
  if (numeric) {
    for (double f : {10.0, 100.0, 1000.0}) {
      for (double p : {0.1, 1.0}) {
        specs.push_back(
            Spec(IssueKind::kUnitChange, p, f,
                 absl::StrCat("unit_change x", FormatFactor(f), " p=", FormatFactor(p))));
      }
    }
  }
  for (double p : {0.1, 0.5, 1.0}) specs.push_back(WithP(IssueKind::kExtraNulls, "extra_nulls", p));
  for (double f : {2.0, 10.0, 0.5, 0.1}) {
    specs.push_back(Spec(IssueKind::kVolume, 0.0, f, absl::StrCat("volume x", FormatFactor(f))));
  }
  for (double p : {0.1, 0.5}) {
    specs.push_back(WithP(IssueKind::kBiasedSampleFirst, "biased_sample first", p));
    specs.push_back(WithP(IssueKind::kBiasedSampleLast, "biased_sample last", p));
  }
  for (double p : {0.1, 0.5, 1.0})
    specs.push_back(WithP(IssueKind::kPerturbation, "perturbation", p));
  for (double p : {0.1, 0.5}) specs.push_back(WithP(IssueKind::kInsertion, "insertion", p));
  for (double p : {0.1, 0.5}) specs.push_back(WithP(IssueKind::kDeletion, "deletion", p));
  if (!numeric) {
    for (double p : {0.1, 0.5, 1.0}) {
      specs.push_back(WithP(IssueKind::kCasingUpper, "casing upper", p));
      specs.push_back(WithP(IssueKind::kCasingLower, "casing lower", p));
    }
    for (double p : {0.1, 0.5, 1.0}) {
      specs.push_back(WithP(IssueKind::kPaddingLeading, "padding leading", p));
      specs.push_back(WithP(IssueKind::kPaddingTrailing, "padding trailing", p));
    }
  }
  return specs;
}

// round(p * n), at least 1 when p > 0 and n > 0: "p = 0.1 of 5 values" still breaks one.
size_t Fraction(double p, size_t n) {
  if (n == 0 || p <= 0) return 0;
  const size_t k = static_cast<size_t>(std::llround(p * static_cast<double>(n)));
  return std::clamp<size_t>(k, 1, n);
}

// k distinct items of `items`, uniformly (partial Fisher-Yates), returned in increasing order so
// that edits walk the column front to back.
std::vector<size_t> Choose(std::vector<size_t> items, size_t k, SplitMix64& rng) {
  k = std::min(k, items.size());
  for (size_t i = 0; i < k; ++i) {
    const size_t j = i + static_cast<size_t>(rng.Below(items.size() - i));
    std::swap(items[i], items[j]);
  }
  items.resize(k);
  std::sort(items.begin(), items.end());
  return items;
}

std::vector<size_t> AllRows(size_t n) {
  std::vector<size_t> rows(n);
  std::iota(rows.begin(), rows.end(), 0);
  return rows;
}

std::vector<size_t> NonNullRows(const Column& c) {
  std::vector<size_t> rows;
  for (size_t i = 0; i < c.size(); ++i) {
    if (!c.IsNull(i)) rows.push_back(i);
  }
  return rows;
}

std::string PrintNumber(double v) {
  char buf[64];
  auto res = std::to_chars(buf, buf + sizeof(buf), v);
  return std::string(buf, res.ptr);
}

std::optional<double> ParseNumber(const std::string& s) {
  double v = 0;
  auto res = std::from_chars(s.data(), s.data() + s.size(), v);
  if (res.ec != std::errc() || res.ptr != s.data() + s.size() || !std::isfinite(v)) {
    return std::nullopt;
  }
  return v;
}

// Rebuilds a column of `like`'s name and type from values of the matching kind.
Column Rebuild(const Column& like, NumericValues values) {
  return Column::Numeric(like.name(), std::move(values)).WithSpan(like.span());
}
Column Rebuild(const Column& like, StringValues values) {
  return Column::Categorical(like.name(), std::move(values)).WithSpan(like.span());
}

// Applies `edit` to the values of the rows `rows` (non-null rows unless the caller says
// otherwise) of a copy of the column's values.
template <typename Edit>
Column EditValues(const Column& c, const std::vector<size_t>& rows, Edit&& edit) {
  if (c.is_numeric()) {
    NumericValues v = c.numeric();
    for (size_t r : rows) edit(v[r]);
    return Rebuild(c, std::move(v));
  }
  StringValues v = c.strings();
  for (size_t r : rows) edit(v[r]);
  return Rebuild(c, std::move(v));
}

Column SchemaChange(const Column& c, const Column& other, const std::vector<size_t>& rows) {
  const size_t m = other.size();
  if (c.is_numeric()) {
    NumericValues v = c.numeric();
    for (size_t r : rows) {
      const size_t o = r % m;
      if (other.IsNull(o)) {
        v[r] = std::nullopt;
      } else if (other.is_numeric()) {
        v[r] = other.numeric()[o];
      } else {
        v[r] = ParseNumber(*other.strings()[o]);
      }
    }
    return Rebuild(c, std::move(v));
  }
  StringValues v = c.strings();
  for (size_t r : rows) {
    const size_t o = r % m;
    if (other.IsNull(o)) {
      v[r] = std::nullopt;
    } else if (other.is_numeric()) {
      v[r] = PrintNumber(*other.numeric()[o]);
    } else {
      v[r] = other.strings()[o];
    }
  }
  return Rebuild(c, std::move(v));
}

void PerturbNumber(std::optional<double>& value, SplitMix64& rng) {
  std::string s = PrintNumber(*value);
  const size_t exp = s.find_first_of("eE");
  const size_t mantissa_end = exp == std::string::npos ? s.size() : exp;
  std::vector<size_t> digits;
  for (size_t i = 0; i < mantissa_end; ++i) {
    if (s[i] >= '0' && s[i] <= '9') digits.push_back(i);
  }
  // The shortest form of a finite double always has a mantissa digit.
  const size_t at = digits[rng.Below(digits.size())];
  const int old_digit = s[at] - '0';
  const int new_digit = (old_digit + 1 + static_cast<int>(rng.Below(9))) % 10;
  s[at] = static_cast<char>('0' + new_digit);
  value = ParseNumber(s);  // a new mantissa digit keeps the value finite
}

bool IsAsciiLetter(char ch) { return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z'); }
bool IsAsciiDigit(char ch) { return ch >= '0' && ch <= '9'; }

void PerturbString(std::optional<std::string>& value, SplitMix64& rng) {
  std::string& s = *value;
  std::vector<size_t> positions;
  for (size_t i = 0; i < s.size(); ++i) {
    if (IsAsciiLetter(s[i]) || IsAsciiDigit(s[i])) positions.push_back(i);
  }
  if (positions.empty()) {
    s.push_back('x');
    return;
  }
  const size_t at = positions[rng.Below(positions.size())];
  char& ch = s[at];
  // Another symbol of the same kind, so that a typo looks like a typo ("Seattle" -> "Seattke").
  const char base = IsAsciiDigit(ch) ? '0' : (ch >= 'a' && ch <= 'z') ? 'a' : 'A';
  const int span = IsAsciiDigit(ch) ? 10 : 26;
  const int old_index = ch - base;
  ch = static_cast<char>(base + (old_index + 1 + static_cast<int>(rng.Below(span - 1))) % span);
}

bool HasLetterToChange(const std::string& s, bool to_upper) {
  for (char ch : s) {
    if (to_upper ? (ch >= 'a' && ch <= 'z') : (ch >= 'A' && ch <= 'Z')) return true;
  }
  return false;
}

// Row order for biased_sample: most frequent value first, ties by value, nulls last.
std::vector<size_t> FrequencyOrder(const Column& c) {
  const size_t n = c.size();
  std::vector<size_t> order = AllRows(n);
  if (c.is_numeric()) {
    std::unordered_map<double, size_t> freq;
    for (const auto& v : c.numeric()) {
      if (v) ++freq[*v];
    }
    const auto& vals = c.numeric();
    std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
      if (!vals[a] || !vals[b]) return vals[a].has_value() && !vals[b].has_value();
      const size_t fa = freq[*vals[a]], fb = freq[*vals[b]];
      if (fa != fb) return fa > fb;
      return *vals[a] < *vals[b];
    });
    return order;
  }
  std::unordered_map<std::string, size_t> freq;
  for (const auto& v : c.strings()) {
    if (v) ++freq[*v];
  }
  const auto& vals = c.strings();
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    if (!vals[a] || !vals[b]) return vals[a].has_value() && !vals[b].has_value();
    const size_t fa = freq[*vals[a]], fb = freq[*vals[b]];
    if (fa != fb) return fa > fb;
    return *vals[a] < *vals[b];
  });
  return order;
}

// The rows of the run after insertion: each inserted row is a copy of a random existing row,
// placed before a random position (or at the end).
std::vector<size_t> InsertionRows(size_t n, size_t k, SplitMix64& rng) {
  // insert_before[i]: copies placed before original row i (i == n: at the end).
  std::vector<std::vector<size_t>> insert_before(n + 1);
  for (size_t i = 0; i < k; ++i) {
    const size_t source = static_cast<size_t>(rng.Below(n));
    const size_t at = static_cast<size_t>(rng.Below(n + 1));
    insert_before[at].push_back(source);
  }
  std::vector<size_t> rows;
  rows.reserve(n + k);
  for (size_t i = 0; i <= n; ++i) {
    for (size_t s : insert_before[i]) rows.push_back(s);
    if (i < n) rows.push_back(i);
  }
  return rows;
}

const Column* PickOtherColumn(const Column& latest, const std::vector<Column>& others) {
  const Column* any = nullptr;
  for (const Column& c : others) {
    if (c.name() == latest.name() || c.size() == 0) continue;
    if (c.type() == latest.type()) return &c;
    if (any == nullptr) any = &c;
  }
  return any;
}

}  // namespace

const char* IssueKindName(IssueKind kind) {
  switch (kind) {
    case IssueKind::kSchemaChange:
      return "schema_change";
    case IssueKind::kUnitChange:
      return "unit_change";
    case IssueKind::kExtraNulls:
      return "extra_nulls";
    case IssueKind::kVolume:
      return "volume";
    case IssueKind::kBiasedSampleFirst:
      return "biased_sample_first";
    case IssueKind::kBiasedSampleLast:
      return "biased_sample_last";
    case IssueKind::kPerturbation:
      return "perturbation";
    case IssueKind::kInsertion:
      return "insertion";
    case IssueKind::kDeletion:
      return "deletion";
    case IssueKind::kCasingUpper:
      return "casing_upper";
    case IssueKind::kCasingLower:
      return "casing_lower";
    case IssueKind::kPaddingLeading:
      return "padding_leading";
    case IssueKind::kPaddingTrailing:
      return "padding_trailing";
  }
  return "unknown";
}

const std::vector<IssueSpec>& IssueSpecsFor(ColumnType type) {
  static const std::vector<IssueSpec>* numeric =
      new std::vector<IssueSpec>(BuildSpecs(ColumnType::kNumeric));
  static const std::vector<IssueSpec>* categorical =
      new std::vector<IssueSpec>(BuildSpecs(ColumnType::kCategorical));
  return type == ColumnType::kNumeric ? *numeric : *categorical;
}

uint64_t SplitMix64::Next() {
  uint64_t z = (state_ += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

uint64_t SplitMix64::Below(uint64_t n) {
  return static_cast<uint64_t>((static_cast<unsigned __int128>(Next()) * n) >> 64);
}

double SplitMix64::Uniform() { return static_cast<double>(Next() >> 11) * 0x1.0p-53; }

absl::StatusOr<Column> ApplyIssue(const IssueSpec& spec, const Column& latest,
                                  const std::vector<Column>& other_columns, uint64_t seed) {
  const bool numeric = latest.is_numeric();
  const bool numeric_only = spec.kind == IssueKind::kUnitChange;
  const bool categorical_only =
      spec.kind == IssueKind::kCasingUpper || spec.kind == IssueKind::kCasingLower ||
      spec.kind == IssueKind::kPaddingLeading || spec.kind == IssueKind::kPaddingTrailing;
  if ((numeric_only && !numeric) || (categorical_only && numeric)) {
    return absl::InvalidArgumentError(absl::StrCat("issue '", spec.name, "' does not apply to ",
                                                   ColumnTypeName(latest.type()), " column '",
                                                   latest.name(), "'"));
  }
  SplitMix64 rng(seed);
  const size_t n = latest.size();
  switch (spec.kind) {
    case IssueKind::kSchemaChange: {
      const Column* other = PickOtherColumn(latest, other_columns);
      if (other == nullptr) {
        return absl::FailedPreconditionError(
            absl::StrCat("issue '", spec.name, "' needs another non-empty column than '",
                         latest.name(), "' in the run to take values from"));
      }
      return SchemaChange(latest, *other, Choose(AllRows(n), Fraction(spec.p, n), rng));
    }
    case IssueKind::kUnitChange: {
      const std::vector<size_t> rows = NonNullRows(latest);
      return EditValues(latest, Choose(rows, Fraction(spec.p, rows.size()), rng), [&](auto& v) {
        if constexpr (std::is_same_v<std::decay_t<decltype(v)>, std::optional<double>>) {
          *v *= spec.factor;
        }
      });
    }
    case IssueKind::kExtraNulls: {
      const std::vector<size_t> rows = NonNullRows(latest);
      return EditValues(latest, Choose(rows, Fraction(spec.p, rows.size()), rng),
                        [](auto& v) { v.reset(); });
    }
    case IssueKind::kVolume: {
      std::vector<size_t> rows;
      if (spec.factor >= 1.0) {
        const size_t copies = static_cast<size_t>(std::llround(spec.factor));
        for (size_t c = 0; c < copies; ++c) {
          for (size_t i = 0; i < n; ++i) rows.push_back(i);
        }
      } else {
        rows = AllRows(Fraction(spec.factor, n));
      }
      return latest.Select(rows);
    }
    case IssueKind::kBiasedSampleFirst:
    case IssueKind::kBiasedSampleLast: {
      std::vector<size_t> order = FrequencyOrder(latest);
      const size_t k = Fraction(spec.p, n);
      std::vector<size_t> rows;
      if (spec.kind == IssueKind::kBiasedSampleFirst) {
        rows.assign(order.begin(), order.begin() + k);
      } else {
        rows.assign(order.end() - k, order.end());
      }
      std::sort(rows.begin(), rows.end());
      return latest.Select(rows);
    }
    case IssueKind::kPerturbation: {
      const std::vector<size_t> rows = NonNullRows(latest);
      return EditValues(latest, Choose(rows, Fraction(spec.p, rows.size()), rng), [&](auto& v) {
        if constexpr (std::is_same_v<std::decay_t<decltype(v)>, std::optional<double>>) {
          PerturbNumber(v, rng);
        } else {
          PerturbString(v, rng);
        }
      });
    }
    case IssueKind::kInsertion:
      if (n == 0) return latest;
      return latest.Select(InsertionRows(n, Fraction(spec.p, n), rng));
    case IssueKind::kDeletion: {
      const std::vector<size_t> removed = Choose(AllRows(n), Fraction(spec.p, n), rng);
      std::vector<size_t> rows;
      size_t next = 0;
      for (size_t i = 0; i < n; ++i) {
        if (next < removed.size() && removed[next] == i) {
          ++next;
        } else {
          rows.push_back(i);
        }
      }
      return latest.Select(rows);
    }
    case IssueKind::kCasingUpper:
    case IssueKind::kCasingLower: {
      const bool upper = spec.kind == IssueKind::kCasingUpper;
      std::vector<size_t> rows;
      for (size_t i = 0; i < n; ++i) {
        const auto& v = latest.strings()[i];
        if (v && HasLetterToChange(*v, upper)) rows.push_back(i);
      }
      return EditValues(latest, Choose(rows, Fraction(spec.p, rows.size()), rng), [&](auto& v) {
        if constexpr (std::is_same_v<std::decay_t<decltype(v)>, std::optional<std::string>>) {
          for (char& ch : *v) {
            if (upper && ch >= 'a' && ch <= 'z') ch = static_cast<char>(ch - 32);
            if (!upper && ch >= 'A' && ch <= 'Z') ch = static_cast<char>(ch + 32);
          }
        }
      });
    }
    case IssueKind::kPaddingLeading:
    case IssueKind::kPaddingTrailing: {
      const bool leading = spec.kind == IssueKind::kPaddingLeading;
      const std::vector<size_t> rows = NonNullRows(latest);
      return EditValues(latest, Choose(rows, Fraction(spec.p, rows.size()), rng), [&](auto& v) {
        if constexpr (std::is_same_v<std::decay_t<decltype(v)>, std::optional<std::string>>) {
          if (leading) {
            v->insert(v->begin(), ' ');
          } else {
            v->push_back(' ');
          }
        }
      });
    }
  }
  return absl::InternalError("unhandled issue kind");
}

std::vector<SyntheticIssue> GenerateIssues(const Column& latest,
                                           const std::vector<Column>& other_columns,
                                           uint64_t seed) {
  const std::vector<IssueSpec>& specs = IssueSpecsFor(latest.type());
  const bool has_other = PickOtherColumn(latest, other_columns) != nullptr;
  std::vector<SyntheticIssue> issues;
  issues.reserve(specs.size());
  for (size_t i = 0; i < specs.size(); ++i) {
    if (specs[i].kind == IssueKind::kSchemaChange && !has_other) continue;
    // A different stream per variant, so that adding a variant does not reshuffle the others.
    SplitMix64 mixer(seed ^ (0xd1b54a32d192ed03ULL * (i + 1)));
    absl::StatusOr<Column> column = ApplyIssue(specs[i], latest, other_columns, mixer.Next());
    // Every spec here matches the column's type and schema_change has a source: cannot fail.
    if (column.ok()) issues.push_back(SyntheticIssue{specs[i], *std::move(column)});
  }
  return issues;
}

}  // namespace vlc::dq
