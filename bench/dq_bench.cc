// Data-quality throughput: what AVH's metric library and learning cost, each against
// the limit of a single pass over the same bytes (no metric can read its column in less):
//  * every metric of a 1M-row numeric column and of a 1M-row string column, with the previous
//    run as validation computes them (ComputeMetrics(current, &previous)), and where the time
//    goes;
//  * learning the programs of a 50-column table from 30 runs of history (LearnTableProgram),
//    split into metrics, synthetic issues and the rest, and what `vlcache-dq learn` pays on top
//    (AppendAndLearn into a fresh SQLite store: per-run metrics, windows, JSON, SQLite).
// The data is seeded and drawn the same way on every machine (splitmix64, no std distributions).
// The dq library is single-threaded, so the benchmark has no thread option.
//
//   build/bin/vlcache-bench-dq --json out.json
//   build/bin/vlcache-bench-dq --quick --json out.json      # seconds: what the smoke test runs
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_format.h"
#include "bench/timing.h"
#include "dq/avh.h"
#include "dq/issues.h"
#include "dq/kolmogorov.h"
#include "dq/metrics.h"
#include "dq/pipeline_service.h"
#include "dq/store.h"
#include "dq/table.h"

namespace {

using namespace vlc;
using bench::Clock;
using bench::Median;
using bench::Seconds;
using dq::Column;
using dq::SplitMix64;

// Results are added here and printed at the end, so that no timed loop can be optimised away.
double g_sink = 0;

template <typename T>
T Unwrap(absl::StatusOr<T> v, const char* what) {
  if (!v.ok()) {
    std::cerr << what << ": " << v.status() << "\n";
    std::exit(1);
  }
  return std::move(v).value();
}

// A standard normal draw (Box-Muller).
double Normal(SplitMix64& rng) {
  const double u1 = 1.0 - rng.Uniform();  // (0, 1]
  const double u2 = rng.Uniform();
  return std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2);
}

// ---- Data: numeric columns are mixtures of normals rounded to a fixed number of decimals (so
// values repeat, as prices and counts do); string columns draw from a vocabulary of a few shapes
// with Zipf frequencies, plus unique ids; both have nulls.

struct NumericSpec {
  double scale = 1;  // the mixture below, times this
  double null_rate = 0.02;
  int decimals = 2;
};

Column MakeNumeric(const std::string& name, size_t rows, const NumericSpec& spec, uint64_t seed) {
  SplitMix64 rng(seed);
  const double round = std::pow(10.0, spec.decimals);
  Column::NumericValues v(rows);
  for (auto& x : v) {
    if (rng.Uniform() < spec.null_rate) continue;
    const double u = rng.Uniform();
    // The bulk, a second mode, and a long tail.
    const double y = u < 0.7    ? 100 + 15 * Normal(rng)
                     : u < 0.95 ? 250 + 40 * Normal(rng)
                                : 1000 + 300 * Normal(rng);
    x = std::round(y * spec.scale * round) / round;
  }
  return Column::Numeric(name, std::move(v));
}

std::string Letters(SplitMix64& rng, int n, bool upper) {
  std::string s;
  for (int i = 0; i < n; ++i) s += static_cast<char>((upper ? 'A' : 'a') + rng.Below(26));
  return s;
}

std::string Digits(SplitMix64& rng, int n) {
  std::string s;
  for (int i = 0; i < n; ++i) s += static_cast<char>('0' + rng.Below(10));
  return s;
}

// One value of shape `kind`: a capitalised word ("Seattle"), a code ("AB-1234"), two words
// ("New Lorem"), or a country-like code ("USA").
std::string VocabularyValue(SplitMix64& rng, int kind) {
  switch (kind % 4) {
    case 0:
      return Letters(rng, 1, true) + Letters(rng, 2 + static_cast<int>(rng.Below(10)), false);
    case 1:
      return Letters(rng, 2 + static_cast<int>(rng.Below(2)), true) + "-" +
             Digits(rng, 3 + static_cast<int>(rng.Below(3)));
    case 2:
      return Letters(rng, 1, true) + Letters(rng, 2 + static_cast<int>(rng.Below(6)), false) + " " +
             Letters(rng, 1, true) + Letters(rng, 3 + static_cast<int>(rng.Below(8)), false);
    default:
      return Letters(rng, 3, true);
  }
}

struct StringSpec {
  size_t vocabulary = 3000;
  int kinds = 4;  // shapes mixed in the vocabulary: `kinds` of them from `first_kind` on
  int first_kind = 0;
  double unique_rate = 0.05;  // values that are fresh ids ("ID-0123456789")
  double null_rate = 0.02;
  uint64_t vocabulary_seed = 1;  // the same vocabulary in every run of a column
};

Column MakeStrings(const std::string& name, size_t rows, const StringSpec& spec, uint64_t seed) {
  SplitMix64 vrng(spec.vocabulary_seed);
  std::vector<std::string> vocab(spec.vocabulary);
  std::vector<double> cdf(spec.vocabulary);
  double total = 0;
  for (size_t i = 0; i < vocab.size(); ++i) {
    vocab[i] = VocabularyValue(vrng, spec.first_kind + static_cast<int>(i % spec.kinds));
    total += 1.0 / static_cast<double>(i + 1);  // Zipf, s = 1
    cdf[i] = total;
  }
  SplitMix64 rng(seed);
  Column::StringValues v(rows);
  for (auto& x : v) {
    if (rng.Uniform() < spec.null_rate) continue;
    if (rng.Uniform() < spec.unique_rate) {
      x = "ID-" + Digits(rng, 10);
      continue;
    }
    const double u = rng.Uniform() * total;
    const size_t i = std::upper_bound(cdf.begin(), cdf.end(), u) - cdf.begin();
    x = vocab[std::min(i, vocab.size() - 1)];
  }
  return Column::Categorical(name, std::move(v));
}

// Bytes of the values themselves: 8 per non-null number, the length of each non-null string.
double ValueBytes(const Column& c) {
  if (c.is_numeric()) return 8.0 * static_cast<double>(c.non_null_count());
  double b = 0;
  for (const auto& s : c.strings()) b += s ? static_cast<double>(s->size()) : 0.0;
  return b;
}

// ---- The limit: one pass that reads every value once and does nothing else. Numbers: their
// sum, four partial sums so that the adds do not serialise. Strings: the sum of every byte and
// every length, the least any metric does (patterns, character counts and equality all look at
// every byte), reading the column as it is stored, null flags and string headers included.

double OnePass(const Column& c) {
  if (c.is_numeric()) {
    const auto& v = c.numeric();
    double s[4] = {0, 0, 0, 0};
    const size_t n = v.size();
    size_t i = 0;
    for (; i + 4 <= n; i += 4) {
      for (int k = 0; k < 4; ++k) s[k] += v[i + k] ? *v[i + k] : 0.0;
    }
    for (; i < n; ++i) s[0] += v[i] ? *v[i] : 0.0;
    return s[0] + s[1] + s[2] + s[3];
  }
  uint64_t sum = 0;
  for (const auto& s : c.strings()) {
    if (!s) continue;
    sum += s->size();
    for (unsigned char ch : *s) sum += ch;
  }
  return static_cast<double>(sum);
}

// ---- Timing.

template <typename Fn>
double Time(Fn&& fn) {
  const auto a = Clock::now();
  fn();
  return Seconds(a);
}

double Sum(const std::vector<dq::MetricValue>& values) {
  double s = 0;
  for (const auto& v : values) s += std::isfinite(v.value) ? v.value : 0.0;
  return s;
}

struct Phase {
  std::string name;
  std::vector<double> seconds;  // per repeat
};

nlohmann::json ColumnResult(size_t rows, double bytes, const std::vector<double>& t,
                            const std::vector<double>& t_limit) {
  std::vector<double> ratios;
  for (size_t r = 0; r < t.size(); ++r) ratios.push_back(t[r] / t_limit[r]);
  const double s = Median(t), sl = Median(t_limit);
  return {{"rows", rows},
          {"value_bytes", bytes},
          {"seconds", s},
          {"seconds_per_repeat", t},
          {"rows_per_s", static_cast<double>(rows) / s},
          {"mb_per_s", bytes / s / 1e6},
          {"limit_seconds", sl},
          {"limit_mb_per_s", bytes / sl / 1e6},
          {"ratio_to_limit", Median(ratios)},
          {"ratios_per_repeat", ratios}};
}

void PrintColumnRow(const char* kind, const nlohmann::json& j) {
  std::printf("%-8s %10zu %10.4f %12.3g %10.1f %10.5f %12.1f %10.1f\n", kind,
              j["rows"].get<size_t>(), j["seconds"].get<double>(), j["rows_per_s"].get<double>(),
              j["mb_per_s"].get<double>(), j["limit_seconds"].get<double>(),
              j["limit_mb_per_s"].get<double>(), j["ratio_to_limit"].get<double>());
}

// Phases as "name": median seconds, with their share of `total`; printed one per line.
nlohmann::json PhaseResult(const std::vector<Phase>& phases, double total) {
  nlohmann::json out = nlohmann::json::array();
  for (const Phase& p : phases) {
    const double s = Median(p.seconds);
    std::printf("    %-58s %9.4f s %6.1f%%\n", p.name.c_str(), s, 100.0 * s / total);
    out.push_back({{"phase", p.name}, {"seconds", s}, {"share", s / total}});
  }
  return out;
}

// ---- 1. All numeric metrics of one column against its previous run.

nlohmann::json BenchNumeric(size_t rows, int repeats, uint64_t seed) {
  const NumericSpec spec;
  const Column cur = MakeNumeric("amount", rows, spec, seed);
  const Column prev = MakeNumeric("amount", rows, spec, seed + 1);
  const double bytes = ValueBytes(cur) + ValueBytes(prev);
  std::vector<double> t, t_limit;
  // ComputeMetrics' steps, from the public building blocks, on both runs: the non-null values
  // copied out and sorted (SortNumbers, what every metric then reads), and the pairwise metrics
  // that do more than one pass over them. The rest (the histogram from binary searches on the
  // sorted values, EMD's walk and the nine single-run metrics) is the difference. Beside it, the
  // path ComputeMetrics took before, in the same run: a comparison sort, and the histogram of JS
  // and KL built twice with a binary search per value.
  std::vector<Phase> phases = {{"copy the non-null values out (both runs)", {}},
                               {"sort them, SortNumbers (both runs)", {}},
                               {"num_ks_p_value (statistic and p-value on sorted values)", {}},
                               {"num_cohen_d (means and squared deviations)", {}},
                               {"the rest: histogram, num_emd, 9 single-run (difference)", {}}};
  std::vector<double> t_before;
  for (int r = -1; r < repeats; ++r) {  // repeat -1 warms caches and the allocator up
    const double a =
        Time([&] { g_sink += Sum(Unwrap(dq::ComputeMetrics(cur, &prev), "metrics")); });
    const double b = Time([&] { g_sink += OnePass(cur) + OnePass(prev); });
    std::vector<double> sc, sp;
    const double t_copy = Time([&] {
      sc = cur.NonNullNumbers();
      sp = prev.NonNullNumbers();
    });
    std::vector<double> oc = sc, op = sp;
    const double t_sort = Time([&] {
      dq::SortNumbers(&sc);
      dq::SortNumbers(&sp);
    });
    const double t_ks = Time([&] { g_sink += dq::KsTwoSampleSorted(sc, sp).p_value; });
    const double t_cohen = Time([&] { g_sink += dq::CohenD(sc, sp); });
    // The earlier path's extra cost over the steps above: std::sort, two per-value histograms.
    const double t_old_sort = Time([&] {
      std::sort(oc.begin(), oc.end());
      std::sort(op.begin(), op.end());
    });
    const double t_old_hist = Time(
        [&] { g_sink += dq::HistogramJsDivergence(oc, op) + dq::HistogramKlDivergence(oc, op); });
    if (r < 0) continue;
    t.push_back(a);
    t_limit.push_back(b);
    const double rest = std::max(0.0, a - (t_copy + t_sort + t_ks + t_cohen));
    t_before.push_back(t_copy + t_old_sort + t_ks + t_cohen + t_old_hist + rest);
    const double parts[] = {t_copy, t_sort, t_ks, t_cohen, rest};
    for (size_t i = 0; i < phases.size(); ++i) phases[i].seconds.push_back(parts[i]);
  }
  nlohmann::json out = ColumnResult(rows, bytes, t, t_limit);
  PrintColumnRow("numeric", out);
  out["limit"] = "sum of the non-null values, four partial sums";
  std::printf("  numeric breakdown (the same steps from the public building blocks, both runs):\n");
  out["breakdown"] = PhaseResult(phases, Median(t));
  out["before_seconds"] = Median(t_before);
  std::printf("    %-58s %9.4f s\n", "before: std::sort and per-value histograms (same run)",
              Median(t_before));
  return out;
}

// ---- 2. All string metrics of one column against its previous run.

nlohmann::json BenchStrings(size_t rows, int repeats, uint64_t seed) {
  const StringSpec spec;
  const Column cur = MakeStrings("code", rows, spec, seed);
  const Column prev = MakeStrings("code", rows, spec, seed + 1);
  const double bytes = ValueBytes(cur) + ValueBytes(prev);
  std::vector<double> t, t_limit;
  // ComputeMetrics counts values in a hash map and takes patterns and character counts once per
  // distinct value; its parts are private. Beside it, in the same run, the path it took before,
  // from the public building blocks (ordered maps, a pattern string and character counts per
  // row, each distance aligning the two maps again), step by step.
  std::vector<Phase> phases = {{"non-null views", {}},
                               {"value counts (CountValues, std::map)", {}},
                               {"pattern counts (CountPatterns, per row)", {}},
                               {"character statistics (ComputeStringStats, per row)", {}},
                               {"6 distances on value counts", {}},
                               {"6 distances on pattern counts", {}}};
  std::vector<double> t_hash, t_before;
  for (int r = -1; r < repeats; ++r) {
    const double a =
        Time([&] { g_sink += Sum(Unwrap(dq::ComputeMetrics(cur, &prev), "metrics")); });
    const double b = Time([&] { g_sink += OnePass(cur) + OnePass(prev); });
    std::vector<std::string_view> vc, vp;
    const double t_views = Time([&] {
      vc = cur.NonNullStrings();
      vp = prev.NonNullStrings();
    });
    dq::ValueCounts cc, cp, pc, pp;
    const double t_values = Time([&] {
      cc = dq::CountValues(vc);
      cp = dq::CountValues(vp);
    });
    const double t_patterns = Time([&] {
      pc = dq::CountPatterns(vc);
      pp = dq::CountPatterns(vp);
    });
    const double t_stats = Time([&] {
      g_sink += dq::ComputeStringStats(vc).mean_length + dq::ComputeStringStats(vp).mean_length;
    });
    auto distances = [&](const dq::ValueCounts& x, const dq::ValueCounts& y) {
      return Time([&] {
        g_sink += dq::L1Distance(x, y) + dq::LInfDistance(x, y) + dq::CosineDistance(x, y) +
                  dq::Chi2PValue(x, y) + dq::JsDistance(x, y) + dq::SmoothedKlDivergence(x, y);
      });
    };
    const double t_vd = distances(cc, cp);
    const double t_pd = distances(pc, pp);
    const double h = Time([&] {
      for (const auto* views : {&vc, &vp}) {
        absl::flat_hash_map<std::string_view, int64_t> counts;
        for (std::string_view v : *views) ++counts[v];
        g_sink += static_cast<double>(counts.size());
      }
    });
    if (r < 0) continue;
    t.push_back(a);
    t_limit.push_back(b);
    t_hash.push_back(h);
    const double parts[] = {t_views, t_values, t_patterns, t_stats, t_vd, t_pd};
    double before = 0;
    for (size_t i = 0; i < phases.size(); ++i) {
      phases[i].seconds.push_back(parts[i]);
      before += parts[i];
    }
    t_before.push_back(before);
  }
  nlohmann::json out = ColumnResult(rows, bytes, t, t_limit);
  PrintColumnRow("string", out);
  out["limit"] = "sum of every byte and length of the non-null values";
  out["distinct_current"] = dq::CountValues(cur.NonNullStrings()).size();
  out["hash_count_seconds"] = Median(t_hash);
  out["before_seconds"] = Median(t_before);
  std::printf("  before: the ordered-map path from the public building blocks (same run, both runs;"
              " shares of its own total):\n");
  out["breakdown"] = PhaseResult(phases, Median(t_before));
  std::printf("    %-58s %9.4f s\n", "before, all of the above", Median(t_before));
  std::printf("    %-58s %9.4f s\n", "for scale: counting values in an absl::flat_hash_map",
              Median(t_hash));
  return out;
}

// ---- 3. Learning a table's programs from its history.

struct History {
  std::vector<dq::Table> runs;
  size_t numeric_columns = 0;
  size_t string_columns = 0;
  double value_bytes = 0;
};

// Columns of different scales, null rates, vocabularies and shapes; every run drawn afresh from
// the same distributions (a healthy pipeline), with row counts varying by about 5%.
History MakeHistory(size_t columns, size_t runs, size_t run_rows, uint64_t seed) {
  History h;
  h.numeric_columns = (columns * 3 + 4) / 5;  // 30 of 50
  h.string_columns = columns - h.numeric_columns;
  SplitMix64 rows_rng(seed ^ 0x9e3779b97f4a7c15ULL);
  const double scales[] = {1, 100, 1e4, 0.01};
  const double null_rates[] = {0, 0.01, 0.05};
  const size_t vocabularies[] = {5, 50, 500, 3000};
  const double unique_rates[] = {0, 0.02, 0, 1.0};  // the last: an id column, every value new
  for (size_t r = 0; r < runs; ++r) {
    const size_t n = static_cast<size_t>(
        std::max(10.0, std::round(static_cast<double>(run_rows) * (1 + 0.05 * Normal(rows_rng)))));
    std::vector<Column> cols;
    for (size_t c = 0; c < columns; ++c) {
      const uint64_t s = seed + 1000003 * (r + 1) + c;
      if (c < h.numeric_columns) {
        NumericSpec spec;
        spec.scale = scales[c % 4];
        spec.null_rate = null_rates[c % 3];
        spec.decimals = c % 5 == 0 ? 0 : 2;
        cols.push_back(MakeNumeric(absl::StrFormat("num_%02d", c), n, spec, s));
      } else {
        const size_t k = c - h.numeric_columns;
        StringSpec spec;
        spec.vocabulary = vocabularies[k % 4];
        spec.kinds = k % 3 == 0 ? 1 : 4;
        spec.first_kind = static_cast<int>(k % 4);
        spec.unique_rate = unique_rates[k % 4];
        spec.null_rate = null_rates[k % 3];
        spec.vocabulary_seed = seed + 77 * (k + 1);
        cols.push_back(MakeStrings(absl::StrFormat("str_%02d", c), n, spec, s));
      }
      h.value_bytes += ValueBytes(cols.back());
    }
    h.runs.push_back(Unwrap(dq::Table::Make(std::move(cols)), "table"));
  }
  return h;
}

// Per column: its runs copied out of the tables and LearnColumnProgram on them, which is what
// LearnTableProgram does column by column; then, right after (so that a busy machine weighs on
// both alike), the parts of that learning redone with the same calls: metrics of every run
// against the one before, the synthetic issues, and their metrics against the latest run. Then
// AppendAndLearn into a fresh SQLite store: what `vlcache-dq learn` pays once the files are read.
nlohmann::json BenchLearn(const History& h, int repeats, size_t issue_runs) {
  dq::AvhOptions options;
  options.issue_runs = issue_runs;
  const dq::Table& latest = h.runs.back();
  const size_t columns = latest.num_columns();
  std::vector<std::pair<std::string, dq::Table>> keyed;
  for (size_t r = 0; r < h.runs.size(); ++r) {
    keyed.emplace_back(absl::StrFormat("run-%04d", r), h.runs[r]);
  }
  const std::filesystem::path dir = std::filesystem::temp_directory_path();
  std::vector<double> t_learn, t_limit, t_append, ratios, t_by_type[2], cpu_learn, cpu_append;
  std::vector<Phase> phases = {{"copying each column's runs out of the tables", {}},
                               {"metrics of the history runs (each against the one before)", {}},
                               {"synthetic issues: generation", {}},
                               {"synthetic issues: metrics (each against the latest run)", {}},
                               {"the rest: stationarity (ADF), candidates, selection", {}}};
  std::vector<double> metrics_by_type[2], store_rest;
  size_t constraints = 0;
  for (int r = 0; r < repeats; ++r) {
    const double limit = Time([&] {
      for (const dq::Table& t : h.runs) {
        for (const Column& c : t.columns()) g_sink += OnePass(c);
      }
    });
    double learn = 0, by_type[2] = {0, 0}, copies = 0, hist[2] = {0, 0}, gen = 0, issue[2] = {0, 0},
           cpu = 0;
    constraints = 0;
    for (const Column& col : latest.columns()) {
      const int k = col.is_numeric() ? 0 : 1;
      std::vector<Column> runs;
      const double cpu0 = bench::CpuSeconds();
      const double copy = Time([&] {
        for (const dq::Table& t : h.runs) runs.push_back(*t.Find(col.name()));
      });
      const double one = Time([&] {
        constraints += Unwrap(dq::LearnColumnProgram(runs, latest.columns(), options), "learn")
                           .constraints.size();
      });
      cpu += bench::CpuSeconds() - cpu0;
      copies += copy;
      learn += copy + one;
      by_type[k] += copy + one;
      hist[k] += Time([&] {
        for (size_t i = 0; i < runs.size(); ++i) {
          g_sink += Sum(Unwrap(dq::ComputeMetrics(runs[i], i > 0 ? &runs[i - 1] : nullptr), "m"));
        }
      });
      std::vector<dq::SyntheticIssue> issues;
      gen += Time([&] { issues = dq::GenerateIssues(col, latest.columns(), options.issue_seed); });
      issue[k] += Time([&] {
        for (const auto& is : issues)
          g_sink += Sum(Unwrap(dq::ComputeMetrics(is.column, &col), "m"));
      });
    }
    const std::string db =
        (dir / absl::StrFormat("vlcache-bench-dq-%d-%d.sqlite", static_cast<int>(::getpid()), r))
            .string();
    const double cpu_append0 = bench::CpuSeconds();
    const double append = Time([&] {
      dq::Store store = Unwrap(dq::Store::Open(db), "store");
      dq::LearnSettings settings;
      settings.history = h.runs.size();
      Unwrap(dq::AppendAndLearn(store, "bench", keyed, settings), "append and learn");
    });
    cpu_append.push_back(bench::CpuSeconds() - cpu_append0);
    cpu_learn.push_back(cpu);
    for (const char* suffix : {"", "-wal", "-shm", "-journal"}) {
      std::filesystem::remove(db + suffix);
    }
    t_learn.push_back(learn);
    t_limit.push_back(limit);
    t_append.push_back(append);
    ratios.push_back(learn / limit);
    for (int k = 0; k < 2; ++k) {
      t_by_type[k].push_back(by_type[k]);
      metrics_by_type[k].push_back(hist[k] + issue[k]);
    }
    const double parts = copies + hist[0] + hist[1] + gen + issue[0] + issue[1];
    const double values[] = {copies, hist[0] + hist[1], gen, issue[0] + issue[1],
                             std::max(0.0, learn - parts)};
    for (size_t i = 0; i < phases.size(); ++i) phases[i].seconds.push_back(values[i]);
    // AppendAndLearn = the same learning + every run's metrics for the store (the history
    // metrics again) + windows, JSON and SQLite.
    store_rest.push_back(std::max(0.0, append - learn - (hist[0] + hist[1])));
  }
  const double s = Median(t_learn);
  const double metrics_s = Median(phases[1].seconds) + Median(phases[3].seconds);
  const double per_type[2] = {
      Median(t_by_type[0]) / static_cast<double>(std::max<size_t>(1, h.numeric_columns)),
      Median(t_by_type[1]) / static_cast<double>(std::max<size_t>(1, h.string_columns))};
  std::printf("%10s %10s %10s %10s %10s %10s %10s %10s %10s %12s\n", "learn s", "(cpu s)",
              "s/column", "s/num col", "s/str col", "metrics", "history MB", "limit s", "x limit",
              "constraints");
  std::printf("%10.2f %10.2f %10.3f %10.3f %10.3f %9.1f%% %10.1f %10.4f %10.0f %12zu\n", s,
              Median(cpu_learn), s / static_cast<double>(columns), per_type[0], per_type[1],
              100.0 * metrics_s / s, h.value_bytes / 1e6, Median(t_limit), Median(ratios),
              constraints);
  std::printf("  learning breakdown (the parts redone one by one; the rest is the difference):\n");
  nlohmann::json out = {{"columns", columns},
                        {"numeric_columns", h.numeric_columns},
                        {"string_columns", h.string_columns},
                        {"runs", h.runs.size()},
                        {"rows_per_run_mean",
                         [&] {
                           double n = 0;
                           for (const auto& t : h.runs) n += static_cast<double>(t.num_rows());
                           return n / static_cast<double>(h.runs.size());
                         }()},
                        {"history_value_bytes", h.value_bytes},
                        {"seconds", s},
                        {"seconds_per_repeat", t_learn},
                        {"cpu_seconds", Median(cpu_learn)},
                        {"seconds_per_column", s / static_cast<double>(columns)},
                        {"seconds_per_numeric_column", per_type[0]},
                        {"seconds_per_string_column", per_type[1]},
                        {"metrics_seconds", metrics_s},
                        {"metrics_share", metrics_s / s},
                        {"metrics_seconds_numeric_columns", Median(metrics_by_type[0])},
                        {"metrics_seconds_string_columns", Median(metrics_by_type[1])},
                        {"limit_seconds", Median(t_limit)},
                        {"ratio_to_limit", Median(ratios)},
                        {"constraints", constraints},
                        {"append_and_learn_seconds", Median(t_append)},
                        {"append_and_learn_seconds_per_repeat", t_append},
                        {"append_and_learn_cpu_seconds", Median(cpu_append)},
                        {"append_and_learn_store_seconds", Median(store_rest)}};
  out["breakdown"] = PhaseResult(phases, s);
  std::printf("    %-58s %9.4f s (numeric columns %.4f, string %.4f)\n",
              "metrics in all (history + issues)", metrics_s, Median(metrics_by_type[0]),
              Median(metrics_by_type[1]));
  std::printf(
      "  vlcache-dq learn's work, AppendAndLearn into a fresh SQLite store: %.2f s "
      "(cpu %.2f s, x%.2f of learning):\n    the learning, every run's metrics again for "
      "the store, and %.2f s of windows, JSON and SQLite\n",
      Median(t_append), Median(cpu_append), Median(t_append) / s, Median(store_rest));
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Data-quality benchmark: AVH metrics and learning against one pass over the bytes"};
  size_t rows = 1000000, columns = 50, runs = 30, run_rows = 5000;
  int repeats = 5, learn_repeats = 1;
  uint64_t seed = 1;
  bool quick = false;
  std::string json_path;
  app.add_option("--rows", rows, "Rows of the numeric and the string column (each run)")
      ->capture_default_str();
  app.add_option("--columns", columns, "Columns of the learned table (3/5 numeric)")
      ->capture_default_str();
  app.add_option("--runs", runs, "Runs of history learned from (at least 8)")
      ->capture_default_str();
  app.add_option("--run-rows", run_rows, "Mean rows per run of the learned table")
      ->capture_default_str();
  app.add_option("--repeats", repeats, "Repeats of the column metrics; medians are reported")
      ->capture_default_str();
  app.add_option("--learn-repeats", learn_repeats, "Repeats of learning")->capture_default_str();
  size_t issue_runs = dq::AvhOptions().issue_runs;
  app.add_option("--issue-runs", issue_runs,
                 "Runs whose synthetic issues the learning counts (AvhOptions::issue_runs; "
                 "AppendAndLearn keeps the library's default)")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_option("--seed", seed)->capture_default_str();
  app.add_flag("--quick", quick, "Small sizes, one repeat: a smoke test in seconds");
  app.add_option("--json", json_path, "Also write the results here");
  CLI11_PARSE(app, argc, argv);
  if (quick) {
    rows = 20000;
    columns = 6;
    runs = 10;
    run_rows = 300;
    repeats = 1;
    learn_repeats = 1;
  }
  if (runs < 8 || columns < 2 || rows < 2 || repeats < 1 || learn_repeats < 1) {
    std::cerr << "need --runs >= 8, --columns >= 2, --rows >= 2 and repeats >= 1\n";
    return 2;
  }
  nlohmann::json out = {{"config",
                         {{"rows", rows},
                          {"columns", columns},
                          {"runs", runs},
                          {"run_rows", run_rows},
                          {"repeats", repeats},
                          {"learn_repeats", learn_repeats},
                          {"seed", seed},
                          {"quick", quick},
                          {"threads", 1}}}};

  std::printf(
      "metrics of one column with its previous run (%zu rows each), median of %d; "
      "MB/s over the values of both runs\n",
      rows, repeats);
  std::printf("%-8s %10s %10s %12s %10s %10s %12s %10s\n", "column", "rows", "seconds", "rows/s",
              "MB/s", "limit s", "limit MB/s", "x limit");
  out["numeric_metrics"] = BenchNumeric(rows, repeats, seed);
  out["string_metrics"] = BenchStrings(rows, repeats, seed + 100);

  const History h = MakeHistory(columns, runs, run_rows, seed + 200);
  std::printf(
      "\nlearning: %zu columns (%zu numeric, %zu string) x %zu runs x ~%zu rows, "
      "median of %d\n",
      columns, h.numeric_columns, h.string_columns, runs, run_rows, learn_repeats);
  out["learn"] = BenchLearn(h, learn_repeats, issue_runs);
  if (g_sink == 42.0) std::puts("");  // keeps every result observable
  if (!json_path.empty()) std::ofstream(json_path) << out.dump(2) << "\n";
  return 0;
}
