#pragma once
// A progress line for long work: "label  37/120  31%  elapsed 1m02s  ETA 1m48s  extra".
// Redrawn in place on a terminal (at most a few times a second), printed as
// whole lines otherwise (every `log_every` seconds) so logs stay readable.
#include <chrono>
#include <cstdint>
#include <string>

namespace da {

class Progress {
 public:
  Progress(std::string label, int64_t total);
  // Reports that `done` of `total` units are finished; `extra` is appended.
  void Update(int64_t done, const std::string& extra = "");
  // Prints the final line (with the total time) and a newline.
  void Finish(const std::string& extra = "");
  double ElapsedSeconds() const;

  // "1h02m", "3m05s", "12s": a duration for people.
  static std::string FormatDuration(double seconds);

 private:
  void Print(int64_t done, const std::string& extra, bool final);

  std::string label_;
  int64_t total_;
  bool tty_;
  std::chrono::steady_clock::time_point start_, last_print_;
  bool printed_ = false;
};

}  // namespace da
