#include "common/progress.h"

#include <unistd.h>

#include <cstdio>

namespace da {

Progress::Progress(std::string label, int64_t total)
    : label_(std::move(label)),
      total_(total > 0 ? total : 1),
      tty_(::isatty(STDERR_FILENO) != 0),
      start_(std::chrono::steady_clock::now()),
      last_print_(start_) {}

double Progress::ElapsedSeconds() const {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
}

std::string Progress::FormatDuration(double s) {
  if (!(s >= 0)) return "?";
  auto t = static_cast<long long>(s + 0.5);
  char buf[32];
  if (t >= 3600)
    std::snprintf(buf, sizeof buf, "%lldh%02lldm", t / 3600, (t / 60) % 60);
  else if (t >= 60)
    std::snprintf(buf, sizeof buf, "%lldm%02llds", t / 60, t % 60);
  else
    std::snprintf(buf, sizeof buf, "%llds", t);
  return buf;
}

void Progress::Update(int64_t done, const std::string& extra) {
  auto now = std::chrono::steady_clock::now();
  double since = std::chrono::duration<double>(now - last_print_).count();
  if (printed_ && since < (tty_ ? 0.25 : 10.0)) return;
  last_print_ = now;
  Print(done, extra, false);
}

void Progress::Finish(const std::string& extra) { Print(total_, extra, true); }

void Progress::Print(int64_t done, const std::string& extra, bool final) {
  printed_ = true;
  double el = ElapsedSeconds();
  double frac = static_cast<double>(done) / static_cast<double>(total_);
  std::string eta = final ? "done" : (done > 0 ? "ETA " + FormatDuration(el / frac - el) : "ETA ?");
  std::fprintf(stderr, "%s%s  %lld/%lld  %3.0f%%  elapsed %s  %s%s%s%s", tty_ ? "\r\033[K" : "",
               label_.c_str(), static_cast<long long>(done), static_cast<long long>(total_),
               100.0 * frac, FormatDuration(el).c_str(), eta.c_str(), extra.empty() ? "" : "  ",
               extra.c_str(), (final || !tty_) ? "\n" : "");
  std::fflush(stderr);
}

}  // namespace da
