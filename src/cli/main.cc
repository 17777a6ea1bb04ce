// deepadapter: one program, one subcommand per task. Bad flags and bad input
// files print one line on stderr and exit with code 2.
#include <c10/util/Exception.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>

#include "cli/commands.h"
#include "common/error.h"

namespace da::cli {
std::string Thousands(long long n) {
  std::string s = std::to_string(n < 0 ? -n : n);
  for (int i = static_cast<int>(s.size()) - 3; i > 0; i -= 3) s.insert(static_cast<size_t>(i), ",");
  return n < 0 ? "-" + s : s;
}

std::string Fmt(const char* format, double v) {
  char b[64];
  std::snprintf(b, sizeof b, format, v);
  return b;
}

std::string SourcePath(const std::string& relative) {
  return std::string(DA_SOURCE_DIR) + "/" + relative;
}
}  // namespace da::cli

int main(int argc, char** argv) {
  // Idle OpenMP threads spin for 300,000 rounds by default, starving every
  // other process on a 2-core machine (the services, tests running side by
  // side): a search with another job beside it ran 8x slower. Not spinning at
  // all (OMP_WAIT_POLICY=passive) puts them to sleep between any two oneDNN
  // primitives: the engine's batch-1 run took 0.58 ms instead of 0.12. So a
  // short spin, about 0.1 ms. libgomp reads it when it loads, so set it and
  // start again, once.
  if (!std::getenv("OMP_WAIT_POLICY") && !std::getenv("GOMP_SPINCOUNT")) {
    setenv("GOMP_SPINCOUNT", "2000", 1);
    execv("/proc/self/exe", argv);  // returns only on failure: carry on as we are
  }
  CLI::App app{
      "DeepAdapter: context-aware deep learning for the mobile web (browser + edge + cloud)."};
  app.require_subcommand(1);
  // Flags from a file: one [section] per subcommand, e.g. [edge] port = 8080.
  app.set_config("--config", "", "Read flags from a TOML/INI file ([subcommand] sections)");
  da::cli::AddTrain(app);
  da::cli::AddEval(app);
  da::cli::AddExport(app);
  da::cli::AddBench(app);
  da::cli::AddProfile(app);
  da::cli::AddPrune(app);
  da::cli::AddServe(app);
  da::cli::AddClient(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::fprintf(stderr, "deepadapter: %s (see --help)\n", e.what());
    return 2;
  } catch (const da::UserError& e) {
    std::fprintf(stderr, "deepadapter: %s\n", e.what());
    return 2;
  } catch (const c10::Error& e) {
    std::fprintf(stderr, "deepadapter: internal error: %s\n", e.what_without_backtrace());
    return 1;
  } catch (const std::exception& e) {  // anything else: one line, not an abort
    std::fprintf(stderr, "deepadapter: internal error: %s\n", e.what());
    return 1;
  }
  return 0;
}
