#pragma once
// Minimal SVG plots for benchmark reports (no external libraries).
#include <string>
#include <vector>

namespace da {

struct Series {
  std::string name, color;  // color: any SVG color
  std::vector<double> x, y;
  bool lines = false;       // connect the points in order
  std::vector<double> err;  // optional: error bars, y ± err[i]
};

// A scatter (or line) plot with axes, ticks, labels and a legend, as SVG text;
// with log_y, a logarithmic y axis (points at y <= 0 left out).
std::string SvgPlot(const std::string& title, const std::string& x_label,
                    const std::string& y_label, const std::vector<Series>& series,
                    bool log_y = false);

}  // namespace da
