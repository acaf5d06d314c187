// Synthetic data-quality issues for AVH's recall estimate (docs/METHODS.md, "Synthetic issues
// (recall estimate)"): from the latest run's column, 27 broken variants of a numeric column and 33
// of a categorical one. A learned constraint "covers" an issue when it rejects the broken run, so
// the variants are what program selection maximises coverage of.
//
// Every variant is deterministic: a seed and the variant's index drive a small splitmix64
// generator (no std distributions, whose output differs between standard libraries). In detail,
// the code does this (n = rows, v = non-null values, "p of X" = round(p * |X|)
// items, at least 1 when p > 0 and X is not empty, chosen uniformly without replacement):
// - schema_change p: p of the rows take the value the same row has in another column (row i of
//   the other column, cycling when it is shorter); the other column is the first of the same type
//   among `other_columns`, else the first of any type. Numbers moved into a categorical column
//   are printed (shortest round-trip form); strings moved into a numeric column become numbers
//   when they parse in full and nulls otherwise, as a loader with a fixed schema would read
//   them. Without another column the variant is not generated (GenerateIssues) or is
//   FAILED_PRECONDITION (ApplyIssue).
// - unit_change xF p (numeric): p of the non-null values are multiplied by F.
// - extra_nulls p: p of the non-null values become null (p = 1 nulls the whole column).
// - volume xF, F > 1 (2, 10): the run is loaded F times: the column repeated F times end to end.
// - volume xF, F < 1 (0.5, 0.1): a truncated load: only the first round(F * n) rows are kept.
// - biased_sample first|last p: rows are ordered by how often their value occurs in the run
//   (most frequent first; ties by value, numbers ascending and strings in byte order; nulls
//   last), and only the first or the last round(p * n) rows of that order are kept, in their
//   original row order. On a numeric column of distinct values this keeps the smallest or the
//   largest values.
// - perturbation p: p of the non-null values get one character changed. Numeric: the value is
//   printed in its shortest round-trip form and one digit of its mantissa (not the exponent) is
//   replaced by another digit, then parsed back, so 123.5 may become 128.5 or 123.9.
//   Categorical: one ASCII letter or digit is replaced by another of the same kind (case kept); a
//   value without one gets an 'x' appended. The value always changes.
// - insertion p: round(p * n) copies of randomly chosen existing rows are inserted at random
//   positions (duplicated records).
// - deletion p: round(p * n) randomly chosen rows are removed (lost records; unlike volume down,
//   which drops the tail).
// - casing upper|lower p (categorical): p of the values that have a letter to change (lower-case
//   letters for upper, upper-case for lower) are converted to upper or lower case (ASCII).
// - padding leading|trailing p (categorical): p of the non-null values get one space prepended or
//   appended.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "dq/table.h"

namespace vlc::dq {

enum class IssueKind {
  kSchemaChange,
  kUnitChange,  // numeric only
  kExtraNulls,
  kVolume,  // factor > 1: repeated load; factor < 1: truncated load
  kBiasedSampleFirst,
  kBiasedSampleLast,
  kPerturbation,
  kInsertion,
  kDeletion,
  kCasingUpper,      // categorical only
  kCasingLower,      // categorical only
  kPaddingLeading,   // categorical only
  kPaddingTrailing,  // categorical only
};

const char* IssueKindName(IssueKind kind);

// One variant: what to do, not yet applied to a column.
struct IssueSpec {
  IssueKind kind = IssueKind::kExtraNulls;
  double p = 0.0;       // fraction of rows or values; 0 for volume
  double factor = 1.0;  // unit_change and volume; 1 elsewhere
  std::string name;     // "unit_change x100 p=0.1", "volume x0.5", "casing upper p=1"
};

// The variants of docs/METHODS.md in a fixed order: 27 for numeric, 33 for categorical columns.
const std::vector<IssueSpec>& IssueSpecsFor(ColumnType type);

// The splitmix64 generator (Steele, Lea, Flood 2014): tiny, fast, and the same on every machine.
class SplitMix64 {
 public:
  explicit SplitMix64(uint64_t seed) : state_(seed) {}
  uint64_t Next();
  // Uniform in [0, n), n >= 1 (Lemire's multiply-shift; the bias is below 2^-40 for our n).
  uint64_t Below(uint64_t n);
  // Uniform in [0, 1), 53 random bits.
  double Uniform();

 private:
  uint64_t state_;
};

// `spec` applied to `latest`. `other_columns` are the run's other columns (only schema_change
// reads them; `latest` itself may be among them and is skipped by name). The same (spec, seed)
// gives the same column. INVALID_ARGUMENT when the spec does not apply to the column's type;
// FAILED_PRECONDITION for schema_change without another column.
absl::StatusOr<Column> ApplyIssue(const IssueSpec& spec, const Column& latest,
                                  const std::vector<Column>& other_columns, uint64_t seed);

struct SyntheticIssue {
  IssueSpec spec;
  Column column;  // the broken run's column, standing in for the next run
};

// Every variant of IssueSpecsFor(latest.type()), variant i seeded with a mix of `seed` and i.
// schema_change is left out when there is no other column (so fewer than 27 / 33 come back).
std::vector<SyntheticIssue> GenerateIssues(const Column& latest,
                                           const std::vector<Column>& other_columns, uint64_t seed);

}  // namespace vlc::dq
