// The picture of a rate sweep: what the service achieved against what was offered, and its
// latency percentiles against the offered rate, as a PNG.
#pragma once

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/status/status.h"

namespace vlc::loadtest {

// `runs` are summaries (Summarize) with "request_rate" set to the offered rate. Left panel:
// achieved requests/s against offered, beside the line where they are equal. Right panel: p50
// and p99 TTFT and TPOT in milliseconds on a log scale. `title` heads the picture.
absl::Status PlotSweep(const std::vector<nlohmann::json>& runs, const std::string& title,
                       const std::string& png_path);

}  // namespace vlc::loadtest
