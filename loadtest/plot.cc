#include "loadtest/plot.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include "absl/strings/str_cat.h"

namespace vlc::loadtest {

namespace {

const cv::Scalar kBlack(0, 0, 0), kGrey(200, 200, 200);

// The smallest 1, 2 or 5 times a power of ten, times 5 (the ticks), at or above `v`.
double NiceMax(double v) {
  if (!(v > 0)) return 1;
  const double step = v / 5, p = std::pow(10, std::floor(std::log10(step)));
  for (double m : {1.0, 2.0, 5.0, 10.0}) {
    if (m * p >= step * 0.9999) return 5 * m * p;
  }
  return 50 * p;
}

std::string Tick(double v) {
  char buf[32];
  if (v >= 100 || v == std::floor(v)) {
    std::snprintf(buf, sizeof buf, "%.0f", v);
  } else if (v >= 1) {
    std::snprintf(buf, sizeof buf, "%.1f", v);
  } else {
    std::snprintf(buf, sizeof buf, "%.2g", v);
  }
  return buf;
}

void Text(cv::Mat& img, const std::string& s, cv::Point at, double scale = 0.45,
          const cv::Scalar& color = kBlack) {
  cv::putText(img, s, at, cv::FONT_HERSHEY_SIMPLEX, scale, color, 1, cv::LINE_AA);
}

// One panel: axes inside `box`, x linear over [0, xmax], y linear or log10.
struct Panel {
  cv::Rect box;
  double xmax = 1, ymin = 0, ymax = 1;
  bool log_y = false;

  double Y(double v) const { return log_y ? std::log10(std::max(v, 1e-9)) : v; }
  cv::Point At(double x, double y) const {
    const double fx = x / xmax, fy = (Y(y) - Y(ymin)) / (Y(ymax) - Y(ymin));
    return {box.x + static_cast<int>(std::lround(fx * box.width)),
            box.y + box.height - static_cast<int>(std::lround(std::clamp(fy, 0.0, 1.0) * box.height))};
  }

  void Axes(cv::Mat& img, const std::string& xlabel, const std::string& ylabel) const {
    for (int i = 0; i <= 5; ++i) {  // x ticks
      const double x = xmax * i / 5;
      const cv::Point p = At(x, ymin);
      cv::line(img, {p.x, box.y}, {p.x, box.y + box.height}, kGrey);
      Text(img, Tick(x), {p.x - 10, box.y + box.height + 18});
    }
    std::vector<double> ys;
    if (log_y) {
      for (double d = std::pow(10, std::floor(std::log10(ymin))); d <= ymax * 1.0001; d *= 10) {
        if (d >= ymin * 0.9999) ys.push_back(d);
      }
    } else {
      for (int i = 0; i <= 5; ++i) ys.push_back(ymin + (ymax - ymin) * i / 5);
    }
    for (double y : ys) {
      const cv::Point p = At(0, y);
      cv::line(img, {box.x, p.y}, {box.x + box.width, p.y}, kGrey);
      Text(img, Tick(y), {box.x - 48, p.y + 5});
    }
    cv::rectangle(img, box, kBlack);
    Text(img, xlabel, {box.x + box.width / 2 - 60, box.y + box.height + 40}, 0.5);
    Text(img, ylabel, {box.x, box.y - 10}, 0.5);
  }

  void Series(cv::Mat& img, const std::vector<double>& xs, const std::vector<double>& ys,
              const cv::Scalar& color, bool dashed = false) const {
    for (size_t i = 0; i < xs.size(); ++i) {
      const cv::Point p = At(xs[i], ys[i]);
      if (!dashed) cv::circle(img, p, 4, color, cv::FILLED, cv::LINE_AA);
      if (i == 0) continue;
      const cv::Point q = At(xs[i - 1], ys[i - 1]);
      if (!dashed) {
        cv::line(img, q, p, color, 2, cv::LINE_AA);
        continue;
      }
      const int steps = 24;
      for (int k = 0; k < steps; k += 2) {
        cv::line(img, q + (p - q) * k / steps, q + (p - q) * (k + 1) / steps, color, 1, cv::LINE_AA);
      }
    }
  }
};

}  // namespace

absl::Status PlotSweep(const std::vector<nlohmann::json>& runs, const std::string& title,
                       const std::string& png_path) {
  if (runs.empty()) return absl::InvalidArgumentError("no runs to plot");
  std::vector<double> offered, achieved;
  std::vector<std::vector<double>> lat(4);
  const char* keys[] = {"median_ttft_ms", "p99_ttft_ms", "median_tpot_ms", "p99_tpot_ms"};
  const char* names[] = {"p50 TTFT", "p99 TTFT", "p50 TPOT", "p99 TPOT"};
  const cv::Scalar colors[] = {{200, 120, 30}, {120, 40, 0}, {40, 160, 240}, {0, 60, 200}};
  double rmax = 0, lmin = 1e30, lmax = 0;
  for (const auto& r : runs) {
    if (!r.contains("request_rate") || !r["request_rate"].is_number()) {
      return absl::InvalidArgumentError("a sweep's runs need numeric offered rates");
    }
    offered.push_back(r["request_rate"].get<double>());
    achieved.push_back(r.value("request_throughput", 0.0));
    rmax = std::max({rmax, offered.back(), achieved.back()});
    for (int k = 0; k < 4; ++k) {
      const double v = std::max(r.value(keys[k], 0.0), 0.1);
      lat[k].push_back(v);
      lmin = std::min(lmin, v);
      lmax = std::max(lmax, v);
    }
  }
  cv::Mat img(560, 1240, CV_8UC3, cv::Scalar(255, 255, 255));
  Text(img, title, {70, 30}, 0.6);
  const double axis = NiceMax(rmax * 1.05);
  Panel rate{{90, 80, 440, 380}, axis, 0, axis, false};
  rate.Axes(img, "offered requests/s", "achieved requests/s");
  rate.Series(img, {0, axis}, {0, axis}, kBlack, true);
  rate.Series(img, offered, achieved, colors[1]);
  Panel ms{{720, 80, 480, 380}, axis, std::pow(10, std::floor(std::log10(lmin))),
           std::pow(10, std::ceil(std::log10(lmax))), true};
  if (ms.ymax <= ms.ymin) ms.ymax = ms.ymin * 10;
  ms.Axes(img, "offered requests/s", "milliseconds (log scale)");
  for (int k = 0; k < 4; ++k) {
    ms.Series(img, offered, lat[k], colors[k]);
    const cv::Point at{ms.box.x + 10 + 120 * k, ms.box.y + 20};
    cv::line(img, at, at + cv::Point(20, 0), colors[k], 2);
    Text(img, names[k], at + cv::Point(25, 5), 0.4);
  }
  if (!cv::imwrite(png_path, img)) {
    return absl::InternalError(absl::StrCat("could not write ", png_path));
  }
  return absl::OkStatus();
}

}  // namespace vlc::loadtest
