#include "common/process.h"

#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>

#include "common/error.h"

namespace da {

std::string RunCommand(const std::string& cmd,
                       const std::function<void(const std::string&)>& on_line) {
  FILE* p = ::popen(cmd.c_str(), "r");
  if (!p) throw UserError("cannot run: " + cmd);
  std::string out, line;
  try {
    int c;
    while ((c = std::fgetc(p)) != EOF) {
      out.push_back(static_cast<char>(c));
      if (c != '\n') {
        line.push_back(static_cast<char>(c));
      } else {
        if (on_line) on_line(line);
        line.clear();
      }
    }
    if (on_line && !line.empty()) on_line(line);
  } catch (...) {
    ::pclose(p);  // the program gets SIGPIPE if it writes on; no zombie is left
    throw;
  }
  int status = ::pclose(p);
  if (status != 0) {
    int code = WIFEXITED(status) ? WEXITSTATUS(status) : status;
    throw UserError("'" + cmd + "' failed (exit code " + std::to_string(code) +
                    (code == 127 ? ": program not found" : "") + ")");
  }
  return out;
}

std::string ShellQuote(const std::string& s) {
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

TempDir::TempDir(const std::string& prefix) {
  static std::atomic<int> counter{0};
  path_ = std::filesystem::temp_directory_path() /
          (prefix + "-" + std::to_string(::getpid()) + "-" + std::to_string(counter++));
  std::filesystem::remove_all(path_);
  std::filesystem::create_directories(path_);
}

TempDir::~TempDir() {
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

}  // namespace da
