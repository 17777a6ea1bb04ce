#include "common/plot.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

namespace da {
namespace {

std::string Escape(const std::string& s) {
  std::string o;
  for (char c : s) {
    if (c == '<')
      o += "&lt;";
    else if (c == '>')
      o += "&gt;";
    else if (c == '&')
      o += "&amp;";
    else
      o += c;
  }
  return o;
}

// "Nice" tick step for a range.
double TickStep(double span) {
  double raw = span / 5, mag = std::pow(10, std::floor(std::log10(raw)));
  for (double m : {1.0, 2.0, 5.0, 10.0})
    if (raw <= m * mag) return m * mag;
  return 10 * mag;
}

}  // namespace

std::string SvgPlot(const std::string& title, const std::string& x_label,
                    const std::string& y_label, const std::vector<Series>& drawn, bool log_y) {
  std::vector<Series> logged;  // with log_y: log10 of y (error bars dropped)
  if (log_y) {
    logged = drawn;
    for (Series& s : logged) {
      for (double& y : s.y) y = y > 0 ? std::log10(y) : NAN;
      s.err.clear();
    }
  }
  const std::vector<Series>& series = log_y ? logged : drawn;
  const double W = 720, H = 460, L = 70, R = 180, T = 40, B = 55;
  double x0 = INFINITY, x1 = -INFINITY, y0 = INFINITY, y1 = -INFINITY;
  auto err = [](const Series& s, size_t i) { return i < s.err.size() ? s.err[i] : 0.0; };
  for (const Series& s : series)
    for (size_t i = 0; i < s.x.size(); ++i)
      if (std::isfinite(s.x[i]) && std::isfinite(s.y[i]) && std::isfinite(err(s, i)))
        x0 = std::min(x0, s.x[i]), x1 = std::max(x1, s.x[i]), y0 = std::min(y0, s.y[i] - err(s, i)),
        y1 = std::max(y1, s.y[i] + err(s, i));
  if (!std::isfinite(x0)) x0 = 0, x1 = 1, y0 = 0, y1 = 1;
  if (x1 - x0 < 1e-12) x0 -= 0.5, x1 += 0.5;
  if (y1 - y0 < 1e-12) y0 -= 0.5, y1 += 0.5;
  const double px = (x1 - x0) * 0.05, py = (y1 - y0) * 0.05;
  x0 -= px, x1 += px, y0 -= py, y1 += py;
  auto X = [&](double v) { return L + (v - x0) / (x1 - x0) * (W - L - R); };
  auto Y = [&](double v) { return H - B - (v - y0) / (y1 - y0) * (H - T - B); };
  std::string o;
  char buf[512];
  std::snprintf(
      buf, sizeof buf,
      "<svg xmlns='http://www.w3.org/2000/svg' width='%.0f' height='%.0f' "
      "font-family='sans-serif' font-size='12'>\n<rect width='100%%' height='100%%' "
      "fill='white'/>\n<text x='%.0f' y='24' font-size='15' text-anchor='middle'>%s</text>\n",
      W, H, (L + W - R) / 2, Escape(title).c_str());
  o += buf;
  for (int axis = 0; axis < 2; ++axis) {
    double lo = axis ? y0 : x0, hi = axis ? y1 : x1, step = TickStep(hi - lo);
    if (axis && log_y) {  // 1, 2, 5 times each power of ten
      for (int e = int(std::floor(lo)); e <= int(std::ceil(hi)); ++e)
        for (double m : {1.0, 2.0, 5.0}) {
          const double v = e + std::log10(m);
          if (v < lo || v > hi) continue;
          std::snprintf(buf, sizeof buf,
                        "<line x1='%.1f' x2='%.1f' y1='%.1f' y2='%.1f' stroke='#ddd'/><text "
                        "x='%.1f' y='%.1f' text-anchor='end'>%g</text>\n",
                        L, W - R, Y(v), Y(v), L - 6, Y(v) + 4, m * std::pow(10.0, e));
          o += buf;
        }
      continue;
    }
    for (double v = std::ceil(lo / step) * step; v <= hi; v += step) {
      if (std::abs(v) < step * 1e-9) v = 0;  // not "-0"
      if (axis)
        std::snprintf(buf, sizeof buf,
                      "<line x1='%.1f' x2='%.1f' y1='%.1f' y2='%.1f' stroke='#ddd'/><text x='%.1f' "
                      "y='%.1f' text-anchor='end'>%g</text>\n",
                      L, W - R, Y(v), Y(v), L - 6, Y(v) + 4, v);
      else
        std::snprintf(buf, sizeof buf,
                      "<line x1='%.1f' x2='%.1f' y1='%.1f' y2='%.1f' stroke='#ddd'/><text x='%.1f' "
                      "y='%.1f' text-anchor='middle'>%g</text>\n",
                      X(v), X(v), T, H - B, X(v), H - B + 16, v);
      o += buf;
    }
  }
  std::snprintf(buf, sizeof buf,
                "<rect x='%.0f' y='%.0f' width='%.0f' height='%.0f' fill='none' stroke='black'/>\n"
                "<text x='%.0f' y='%.0f' text-anchor='middle'>%s</text>\n"
                "<text transform='translate(16 %.0f) rotate(-90)' text-anchor='middle'>%s</text>\n",
                L, T, W - L - R, H - T - B, (L + W - R) / 2, H - 12, Escape(x_label).c_str(),
                (T + H - B) / 2, Escape(y_label).c_str());
  o += buf;
  for (size_t k = 0; k < series.size(); ++k) {
    const Series& s = series[k];
    if (s.lines && s.x.size() > 1) {
      o += "<polyline fill='none' stroke='" + s.color + "' points='";
      for (size_t i = 0; i < s.x.size(); ++i) {
        if (!std::isfinite(s.x[i]) || !std::isfinite(s.y[i])) continue;
        std::snprintf(buf, sizeof buf, "%.1f,%.1f ", X(s.x[i]), Y(s.y[i]));
        o += buf;
      }
      o += "'/>\n";
    }
    for (size_t i = 0; i < s.x.size(); ++i) {
      if (!std::isfinite(s.x[i]) || !std::isfinite(s.y[i])) continue;
      if (err(s, i) > 0 && std::isfinite(err(s, i))) {
        std::snprintf(buf, sizeof buf,
                      "<path d='M%.1f %.1fV%.1fM%.1f %.1fh10M%.1f %.1fh10' stroke='%s'/>\n",
                      X(s.x[i]), Y(s.y[i] - err(s, i)), Y(s.y[i] + err(s, i)), X(s.x[i]) - 5,
                      Y(s.y[i] - err(s, i)), X(s.x[i]) - 5, Y(s.y[i] + err(s, i)), s.color.c_str());
        o += buf;
      }
      std::snprintf(buf, sizeof buf, "<circle cx='%.1f' cy='%.1f' r='4' fill='%s'/>\n", X(s.x[i]),
                    Y(s.y[i]), s.color.c_str());
      o += buf;
    }
    std::snprintf(
        buf, sizeof buf,
        "<circle cx='%.0f' cy='%.0f' r='5' fill='%s'/><text x='%.0f' y='%.0f'>%s</text>\n",
        W - R + 16, T + 14 + 20.0 * k, s.color.c_str(), W - R + 26, T + 18 + 20.0 * k,
        Escape(s.name).c_str());
    o += buf;
  }
  return o + "</svg>\n";
}

}  // namespace da
