// The synthetic issues of AVH's recall estimate (dq/issues.h): each variant breaks the column the
// way its name says, and the same seed breaks it the same way.
#include "dq/issues.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cctype>
#include <set>
#include <string>
#include <vector>

namespace vlc::dq {
namespace {

// 100 distinct values 1.5, 2.5, ..., 100.5.
Column Numbers() {
  Column::NumericValues v;
  for (int i = 0; i < 100; ++i) v.push_back(1.5 + i);
  return Column::Numeric("x", v);
}

Column OtherNumbers() {
  Column::NumericValues v;
  for (int i = 0; i < 100; ++i) v.push_back(-1000.0 - i);
  return Column::Numeric("y", v);
}

// 100 values: "apple" x50, "Berry-7" x30, "cherry 12" x20.
Column Words() {
  Column::StringValues v;
  for (int i = 0; i < 100; ++i)
    v.push_back(i % 10 < 5 ? "apple" : i % 10 < 8 ? "Berry-7" : "cherry 12");
  return Column::Categorical("w", v);
}

Column OtherWords() {
  Column::StringValues v;
  for (int i = 0; i < 100; ++i) v.push_back("id" + std::to_string(i));
  return Column::Categorical("z", v);
}

const IssueSpec& SpecNamed(ColumnType type, const std::string& name) {
  for (const IssueSpec& s : IssueSpecsFor(type)) {
    if (s.name == name) return s;
  }
  ADD_FAILURE() << "no issue named " << name;
  static const IssueSpec none;
  return none;
}

Column Apply(const Column& c, const std::string& name, const std::vector<Column>& others = {}) {
  absl::StatusOr<Column> out = ApplyIssue(SpecNamed(c.type(), name), c, others, 42);
  EXPECT_TRUE(out.ok()) << name << ": " << out.status();
  return out.ok() ? *out : c;
}

// Whether `sub` is `full` with some rows removed (order kept).
template <typename V>
bool IsSubsequence(const V& sub, const V& full) {
  size_t j = 0;
  for (size_t i = 0; i < full.size() && j < sub.size(); ++i) {
    if (full[i] == sub[j]) ++j;
  }
  return j == sub.size();
}

TEST(DqIssueSpecs, NumericHas27AndCategorical33UniquelyNamedVariants) {
  EXPECT_EQ(IssueSpecsFor(ColumnType::kNumeric).size(), 27u);
  EXPECT_EQ(IssueSpecsFor(ColumnType::kCategorical).size(), 33u);
  for (ColumnType t : {ColumnType::kNumeric, ColumnType::kCategorical}) {
    std::set<std::string> names;
    for (const IssueSpec& s : IssueSpecsFor(t)) names.insert(s.name);
    EXPECT_EQ(names.size(), IssueSpecsFor(t).size());
  }
  const IssueSpec& unit = SpecNamed(ColumnType::kNumeric, "unit_change x100 p=0.1");
  EXPECT_EQ(unit.kind, IssueKind::kUnitChange);
  EXPECT_DOUBLE_EQ(unit.p, 0.1);
  EXPECT_DOUBLE_EQ(unit.factor, 100.0);
}

TEST(DqIssues, UnitChangeMultipliesTheChosenFraction) {
  const Column c = Numbers();
  const Column all = Apply(c, "unit_change x1000 p=1");
  for (size_t i = 0; i < c.size(); ++i) EXPECT_DOUBLE_EQ(*all.numeric()[i], *c.numeric()[i] * 1000);
  const Column some = Apply(c, "unit_change x10 p=0.1");
  int changed = 0;
  for (size_t i = 0; i < c.size(); ++i) {
    if (*some.numeric()[i] != *c.numeric()[i]) {
      ++changed;
      EXPECT_DOUBLE_EQ(*some.numeric()[i], *c.numeric()[i] * 10);
    }
  }
  EXPECT_EQ(changed, 10);
}

TEST(DqIssues, ExtraNullsNullTheFraction) {
  EXPECT_EQ(Apply(Numbers(), "extra_nulls p=0.5").null_count(), 50u);
  EXPECT_EQ(Apply(Numbers(), "extra_nulls p=1").null_count(), 100u);
  EXPECT_EQ(Apply(Words(), "extra_nulls p=0.1").null_count(), 10u);
}

TEST(DqIssues, VolumeRepeatsOrTruncatesTheRun) {
  const Column c = Numbers();
  const Column up = Apply(c, "volume x2");
  ASSERT_EQ(up.size(), 200u);
  for (size_t i = 0; i < 200; ++i) EXPECT_EQ(up.numeric()[i], c.numeric()[i % 100]);
  EXPECT_EQ(Apply(c, "volume x10").size(), 1000u);
  const Column down = Apply(c, "volume x0.1");
  ASSERT_EQ(down.size(), 10u);
  for (size_t i = 0; i < 10; ++i) EXPECT_EQ(down.numeric()[i], c.numeric()[i]);
  EXPECT_EQ(Apply(c, "volume x0.5").size(), 50u);
}

TEST(DqIssues, BiasedSampleKeepsOneEndOfTheFrequencyOrder) {
  // Distinct numbers tie on frequency, so the order is by value.
  const Column first = Apply(Numbers(), "biased_sample first p=0.1");
  ASSERT_EQ(first.size(), 10u);
  for (size_t i = 0; i < 10; ++i) EXPECT_DOUBLE_EQ(*first.numeric()[i], 1.5 + i);
  const Column last = Apply(Numbers(), "biased_sample last p=0.1");
  ASSERT_EQ(last.size(), 10u);
  for (size_t i = 0; i < 10; ++i) EXPECT_DOUBLE_EQ(*last.numeric()[i], 91.5 + i);
  // Strings: "apple" is the most frequent value (50 of 100), "cherry 12" the least (20).
  const Column common = Apply(Words(), "biased_sample first p=0.5");
  ASSERT_EQ(common.size(), 50u);
  for (const auto& v : common.strings()) EXPECT_EQ(*v, "apple");
  const Column rare = Apply(Words(), "biased_sample last p=0.1");
  ASSERT_EQ(rare.size(), 10u);
  for (const auto& v : rare.strings()) EXPECT_EQ(*v, "cherry 12");
}

TEST(DqIssues, NumericPerturbationChangesOneDigitOfTheChosenValues) {
  const Column c = Numbers();
  const Column all = Apply(c, "perturbation p=1");
  for (size_t i = 0; i < c.size(); ++i) {
    ASSERT_TRUE(all.numeric()[i].has_value());
    EXPECT_NE(*all.numeric()[i], *c.numeric()[i]) << "row " << i;
  }
  const Column half = Apply(c, "perturbation p=0.5");
  int changed = 0;
  for (size_t i = 0; i < c.size(); ++i) changed += *half.numeric()[i] != *c.numeric()[i];
  EXPECT_EQ(changed, 50);
}

TEST(DqIssues, StringPerturbationReplacesOneCharacter) {
  const Column c = Words();
  const Column out = Apply(c, "perturbation p=1");
  for (size_t i = 0; i < c.size(); ++i) {
    const std::string& a = *c.strings()[i];
    const std::string& b = *out.strings()[i];
    ASSERT_EQ(a.size(), b.size());
    int diffs = 0;
    for (size_t k = 0; k < a.size(); ++k) diffs += a[k] != b[k];
    EXPECT_EQ(diffs, 1) << a << " -> " << b;
  }
}

TEST(DqIssues, InsertionAddsCopiesAndDeletionRemovesRows) {
  const Column c = Numbers();
  const Column ins = Apply(c, "insertion p=0.1");
  ASSERT_EQ(ins.size(), 110u);
  EXPECT_TRUE(IsSubsequence(c.numeric(), ins.numeric()));
  for (const auto& v : ins.numeric()) {
    EXPECT_NE(std::find(c.numeric().begin(), c.numeric().end(), v), c.numeric().end());
  }
  const Column del = Apply(c, "deletion p=0.5");
  ASSERT_EQ(del.size(), 50u);
  EXPECT_TRUE(IsSubsequence(del.numeric(), c.numeric()));
  // Random rows, not the tail: some of the last 50 survive.
  EXPECT_GT(*del.numeric().back(), 50.5);
}

TEST(DqIssues, SchemaChangeTakesValuesOfAnotherColumn) {
  const Column c = Numbers();
  const Column all = Apply(c, "schema_change p=1", {c, OtherNumbers()});
  for (size_t i = 0; i < c.size(); ++i) EXPECT_EQ(all.numeric()[i], OtherNumbers().numeric()[i]);
  const Column half = Apply(c, "schema_change p=0.5", {OtherNumbers()});
  int moved = 0;
  for (size_t i = 0; i < c.size(); ++i) moved += half.numeric()[i] == OtherNumbers().numeric()[i];
  EXPECT_EQ(moved, 50);
  // Strings that are not numbers land as nulls in a numeric column.
  EXPECT_EQ(Apply(c, "schema_change p=1", {OtherWords()}).null_count(), 100u);
  // Numbers moved into a categorical column are printed.
  const Column printed = Apply(Words(), "schema_change p=1", {OtherNumbers()});
  EXPECT_EQ(*printed.strings()[0], "-1000");
  // Without another column the variant cannot exist.
  absl::StatusOr<Column> none =
      ApplyIssue(SpecNamed(ColumnType::kNumeric, "schema_change p=1"), c, {c}, 1);
  EXPECT_EQ(none.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(GenerateIssues(c, {}, 1).size(), 24u);
  EXPECT_EQ(GenerateIssues(c, {OtherNumbers()}, 1).size(), 27u);
  EXPECT_EQ(GenerateIssues(Words(), {OtherWords()}, 1).size(), 33u);
}

TEST(DqIssues, CasingFlipsCase) {
  const Column c = Words();
  const Column upper = Apply(c, "casing upper p=1");
  const Column lower = Apply(c, "casing lower p=1");
  for (size_t i = 0; i < c.size(); ++i) {
    std::string u = *c.strings()[i], l = *c.strings()[i];
    for (char& ch : u) ch = static_cast<char>(std::toupper(static_cast<unsigned char>(ch)));
    for (char& ch : l) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
    EXPECT_EQ(*upper.strings()[i], u);
    EXPECT_EQ(*lower.strings()[i], l);
  }
  // p = 0.1 of the 100 values with a lower-case letter.
  const Column some = Apply(c, "casing upper p=0.1");
  int changed = 0;
  for (size_t i = 0; i < c.size(); ++i) changed += *some.strings()[i] != *c.strings()[i];
  EXPECT_EQ(changed, 10);
}

TEST(DqIssues, PaddingAddsASpace) {
  const Column c = Words();
  const Column lead = Apply(c, "padding leading p=0.5");
  const Column trail = Apply(c, "padding trailing p=1");
  int padded = 0;
  for (size_t i = 0; i < c.size(); ++i) {
    const std::string& v = *lead.strings()[i];
    if (v != *c.strings()[i]) {
      ++padded;
      EXPECT_EQ(v, " " + *c.strings()[i]);
    }
    EXPECT_EQ(*trail.strings()[i], *c.strings()[i] + " ");
  }
  EXPECT_EQ(padded, 50);
}

TEST(DqIssues, TypeSpecificVariantsRefuseTheOtherType) {
  EXPECT_EQ(ApplyIssue(SpecNamed(ColumnType::kNumeric, "unit_change x10 p=1"), Words(), {}, 1)
                .status()
                .code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ApplyIssue(SpecNamed(ColumnType::kCategorical, "casing upper p=1"), Numbers(), {}, 1)
                .status()
                .code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(DqIssues, EveryVariantChangesTheColumnAndIsDeterministicBySeed) {
  for (const Column& c : {Numbers(), Words()}) {
    const std::vector<Column> others = {c.is_numeric() ? OtherNumbers() : OtherWords()};
    const std::vector<SyntheticIssue> a = GenerateIssues(c, others, 7);
    const std::vector<SyntheticIssue> b = GenerateIssues(c, others, 7);
    const std::vector<SyntheticIssue> other_seed = GenerateIssues(c, others, 8);
    ASSERT_EQ(a.size(), b.size());
    int differs_by_seed = 0;
    for (size_t i = 0; i < a.size(); ++i) {
      const bool changed = c.is_numeric() ? a[i].column.numeric() != c.numeric()
                                          : a[i].column.strings() != c.strings();
      EXPECT_TRUE(changed) << a[i].spec.name;
      if (c.is_numeric()) {
        EXPECT_EQ(a[i].column.numeric(), b[i].column.numeric()) << a[i].spec.name;
        differs_by_seed += a[i].column.numeric() != other_seed[i].column.numeric();
      } else {
        EXPECT_EQ(a[i].column.strings(), b[i].column.strings()) << a[i].spec.name;
        differs_by_seed += a[i].column.strings() != other_seed[i].column.strings();
      }
    }
    EXPECT_GT(differs_by_seed, 5);
  }
}

TEST(DqSplitMix64, MatchesTheReferenceSequenceAndStaysInRange) {
  // splitmix64 from seed 0: the reference implementation's first output.
  SplitMix64 rng(0);
  EXPECT_EQ(rng.Next(), 0xe220a8397b1dcdafULL);
  SplitMix64 r2(123);
  for (int i = 0; i < 1000; ++i) {
    EXPECT_LT(r2.Below(7), 7u);
    const double u = r2.Uniform();
    EXPECT_GE(u, 0.0);
    EXPECT_LT(u, 1.0);
  }
}

}  // namespace
}  // namespace vlc::dq
