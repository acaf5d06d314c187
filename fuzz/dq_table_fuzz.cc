// The data-quality service's tables: CSV (RFC 4180) and JSON records, as a pipeline's run
// arrives, then split into runs by a partition column when one parses.
#include "dq/io.h"
#include "fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text = vlc::fuzz::Bytes(data, size);
  for (bool csv : {true, false}) {
    auto t = csv ? vlc::dq::ParseCsv(text, "fuzz") : vlc::dq::ParseJsonRecords(text, "fuzz");
    if (t.ok() && t->num_columns() > 0) {
      for (const char* period : {"day", "month"}) {
        (void)vlc::dq::SplitIntoRuns(*t, t->columns().front().name(), period);
      }
    }
  }
  return 0;
}
