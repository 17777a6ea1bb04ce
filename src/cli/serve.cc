// deepadapter cloud / edge / serve: the services, from flags or a config file.
// SIGINT or SIGTERM stops them.
#include <signal.h>

#include <cstdio>
#include <thread>

#include "cli/commands.h"
#include "cloud/cloud.h"
#include "common/error.h"
#include "nn/dataset.h"

namespace da::cli {
namespace {

struct CloudFlags {
  cloud::CloudConfig config;
  std::string importance = "l1";
  int64_t max_delay_us = 2000;
  bool no_batching = false;
};

void AddServerOptions(CLI::App* cmd, http::ServerOptions& s, int default_port) {
  s.port = default_port;
  cmd->add_option("--host", s.host, "Bind address")->capture_default_str();
  cmd->add_option("--port", s.port, "Port (0: any free port)")
      ->capture_default_str()
      ->check(CLI::Range(0, 65535));
  cmd->add_option("--max-body", s.max_body_bytes, "Largest request body (bytes)")
      ->capture_default_str();
  cmd->add_option("--server-threads", s.threads, "Connections served at once")
      ->capture_default_str();
}

void AddBatchOptions(CLI::App* cmd, infer::BatchOptions& b, int64_t& max_delay_us,
                     bool& no_batching) {
  cmd->add_option("--max-batch", b.max_batch, "Dynamic batching: images per forward pass")
      ->capture_default_str();
  cmd->add_option("--max-delay-us", max_delay_us,
                  "Dynamic batching: longest wait for a fuller batch (microseconds)")
      ->capture_default_str();
  cmd->add_flag("--no-batching", no_batching, "Run inference requests one at a time");
  cmd->add_option("--infer-threads", b.threads, "libtorch threads for inference (0: all cores)")
      ->capture_default_str();
}

void FinishBatchOptions(infer::BatchOptions& b, int64_t max_delay_us, bool no_batching) {
  b.max_delay = std::chrono::microseconds(max_delay_us);
  b.enabled = !no_batching;
  b.Validate();
}

void AddCloudOptions(CLI::App* cmd, CloudFlags& f) {
  cloud::CloudConfig& c = f.config;
  c.profiles_dir = SourcePath("profiles");
  c.table_path = SourcePath("profiles/latency.json");
  c.standard_path = SourcePath("profiles/contexts.json");
  c.data_dir = nn::kFashionMnistDir;
  cmd->add_option("--repo", c.repo_dir, "Model repository directory (created when absent)")
      ->required();
  cmd->add_option("--family", c.family_dir,
                  "A branch-model family (prune's output) to import at start");
  cmd->add_option("--profiles", c.profiles_dir, "Device and network profiles directory")
      ->capture_default_str();
  cmd->add_option("--table", c.table_path, "Latency table")->capture_default_str();
  cmd->add_option("--standard", c.standard_path, "Standard contexts")->capture_default_str();
  cmd->add_option("--data", c.data_dir, "Dataset for prune requests' fine-tuning")
      ->capture_default_str();
  cmd->add_option("--max-pending", c.max_pending, "Queued prune requests before refusing")
      ->capture_default_str();
  AddBatchOptions(cmd, c.batching, f.max_delay_us, f.no_batching);
  AddSearchOptions(cmd, c.search, f.importance);
}

// Runs `stop` on SIGINT/SIGTERM (from a thread: the handlers' work is not
// async-signal-safe). Block the signals before any other thread starts.
class SignalStop {
 public:
  SignalStop() {
    sigemptyset(&set_);
    sigaddset(&set_, SIGINT);
    sigaddset(&set_, SIGTERM);
    sigaddset(&set_, SIGUSR1);
    pthread_sigmask(SIG_BLOCK, &set_, nullptr);
  }
  void Start(std::function<void()> stop) {
    thread_ = std::thread([this, stop] {
      int sig = 0;
      sigwait(&set_, &sig);
      if (sig != SIGUSR1) stop();
    });
  }
  ~SignalStop() {
    if (thread_.joinable()) {
      pthread_kill(thread_.native_handle(), SIGUSR1);
      thread_.join();
    }
  }

 private:
  sigset_t set_;
  std::thread thread_;
};

}  // namespace

void AddServe(CLI::App& app) {
  auto cf = std::make_shared<CloudFlags>();
  CLI::App* cmd = app.add_subcommand("cloud", "The cloud service: model repository, base-model "
                                              "inference, prune requests");
  cmd->set_config("--config", "", "Read these flags from a TOML/INI file");
  AddServerOptions(cmd, cf->config.server, 8081);
  AddCloudOptions(cmd, *cf);
  cmd->callback([cf] {
    FinishBatchOptions(cf->config.batching, cf->max_delay_us, cf->no_batching);
    cf->config.search.importance = prune::ParseImportance(cf->importance);
    SignalStop signals;
    cloud::Cloud c(cf->config);
    signals.Start([&c] { c.Stop(); });
    std::printf("cloud: http://%s:%d/ (repository %s)\n", cf->config.server.host.c_str(), c.port(),
                cf->config.repo_dir.c_str());
    std::fflush(stdout);
    c.Run();
  });
}

}  // namespace da::cli
