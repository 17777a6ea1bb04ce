#pragma once
// Running helper programs (node scripts) and cleaning up after them.
#include <filesystem>
#include <functional>
#include <string>

namespace da {

// Runs `cmd` with /bin/sh and returns its stdout; `on_line`, when given, sees each
// stdout line as it arrives. Throws UserError naming the command and its exit code
// when it fails (and saying so when the program is not installed).
std::string RunCommand(const std::string& cmd,
                       const std::function<void(const std::string&)>& on_line = {});

// `s` in single quotes for /bin/sh.
std::string ShellQuote(const std::string& s);

// A fresh directory under the system's temp directory, removed with everything
// in it when this goes out of scope.
class TempDir {
 public:
  explicit TempDir(const std::string& prefix);
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

}  // namespace da
