// deepadapter cloud / edge / serve: the services, from flags or a config file.
// SIGINT or SIGTERM stops them.
#include <signal.h>

#include <cstdio>
#include <thread>

#include "cli/commands.h"
#include "cloud/cloud.h"
#include "common/error.h"
#include "edge/edge.h"
#include "nn/dataset.h"

namespace da::cli {
namespace {

struct CloudFlags {
  cloud::CloudConfig config;
  std::string importance = "l1";
};

void AddServerOptions(CLI::App* cmd, http::ServerOptions& s, int default_port) {
  s.port = default_port;
  cmd->add_option("--host", s.host, "Bind address")->capture_default_str();
  cmd->add_option("--port", s.port, "Port (0: any free port)")
      ->capture_default_str()
      ->check(CLI::Range(0, 65535));
  cmd->add_option("--max-body", s.max_body_bytes, "Largest request body (bytes)")
      ->capture_default_str();
  cmd->add_option("--server-threads", s.threads,
                  "Connections served at once (as many more may wait; beyond: 503)")
      ->capture_default_str();
  cmd->add_option("--request-timeout", s.request_timeout_s,
                  "A request's head and body must arrive within this (s)")
      ->capture_default_str();
  cmd->add_option("--token", s.token,
                  "Bearer token for endpoints that change state (needed beyond loopback; "
                  "or DEEPADAPTER_TOKEN)")
      ->envname("DEEPADAPTER_TOKEN");
  cmd->add_option("--cors-origin", s.cors_origins,
                  "Origins whose pages may call this server (repeatable; * for any)");
}

void AddBatchOptions(CLI::App* cmd, infer::BatchOptions& b) {
  cmd->add_option("--max-batch", b.max_batch, "Dynamic batching: images per forward pass")
      ->capture_default_str()
      ->check(CLI::Range(1, 4096));
  cmd->add_option_function<int64_t>(
         "--max-delay-us", [&b](int64_t us) { b.max_delay = std::chrono::microseconds(us); },
         "Dynamic batching: longest wait for a fuller batch (microseconds, default 2000)")
      ->check(CLI::Range(0, 1000000));
  cmd->add_option("--max-queue", b.max_queue,
                  "Images waiting for inference before 503 + Retry-After")
      ->capture_default_str()
      ->check(CLI::Range(1, 1 << 20));
  cmd->add_flag_callback(
      "--no-batching", [&b] { b.enabled = false; }, "Run inference requests one at a time");
  cmd->add_option("--infer-threads", b.threads, "libtorch threads for inference (0: all cores)")
      ->capture_default_str()
      ->check(CLI::Range(0, 1024));
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
  AddBatchOptions(cmd, c.batching);
  AddSearchOptions(cmd, c.search, f.importance);
}

// Edge flags. `standalone`: the cloud runs elsewhere (--cloud), and the edge
// has its own --profiles and batching flags (serve shares the cloud's).
void AddEdgeOptions(CLI::App* cmd, edge::EdgeConfig& c, bool standalone) {
  c.profiles_dir = SourcePath("profiles");
  c.web_dir = SourcePath("web");
  c.data_dir = nn::kFashionMnistDir;
  cmd->add_option("--web", c.web_dir, "Browser files (demo, dashboard, SDK, onnxruntime-web)")
      ->capture_default_str();
  cmd->add_option("--samples", c.data_dir, "Dataset whose test images the demo shows")
      ->capture_default_str();
  if (standalone) {
    cmd->add_option("--cloud", c.cloud_url, "The cloud's URL, e.g. http://127.0.0.1:8081")
        ->required();
    cmd->add_option("--cloud-token", c.cloud_token,
                    "The cloud's --token, sent with prune requests (or DEEPADAPTER_CLOUD_TOKEN)")
        ->envname("DEEPADAPTER_CLOUD_TOKEN");
    cmd->add_option("--profiles", c.profiles_dir, "Device and network profiles directory")
        ->capture_default_str();
    AddBatchOptions(cmd, c.batching);
  }
  cmd->add_option("--cache-bytes", c.cache_bytes, "Model cache capacity (bytes)")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--state", c.state_dir, "State directory (cache, statistics)")->required();
  cmd->add_option("--policy", c.policy, "Cache policy: utility, lru, lfu")->capture_default_str();
  cmd->add_option("--half-life", c.half_life_s, "Request statistics half-life (s)")
      ->capture_default_str();
  cmd->add_option("--refresh", c.refresh_s, "Cache content recomputed every (s)")
      ->capture_default_str();
  cmd->add_option("--catalog-refresh", c.catalog_refresh_s,
                  "Catalog re-read from the cloud every (s)")
      ->capture_default_str();
  cmd->add_option("--prune-interval", c.prune_interval_s,
                  "At most one prune request forwarded per (s)")
      ->capture_default_str();
  cmd->add_option("--probe-max", c.probe_max_bytes, "Largest bandwidth probe (bytes)")
      ->capture_default_str();
  cmd->add_option("--match-margin", c.match_margin,
                  "A faster model within this validation accuracy (a fraction) of the most "
                  "accurate one in budget is matched instead")
      ->capture_default_str();
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
  CLI::App* cmd = app.add_subcommand("cloud",
                                     "The cloud service: model repository, base-model "
                                     "inference, prune requests");
  AddServerOptions(cmd, cf->config.server, 8081);
  AddCloudOptions(cmd, *cf);
  cmd->callback([cf] {
    cf->config.search.importance = prune::ParseImportance(cf->importance);
    SignalStop signals;
    cloud::Cloud c(cf->config);
    signals.Start([&c] { c.Stop(); });
    std::printf("cloud: http://%s:%d/ (repository %s)\n", cf->config.server.host.c_str(), c.port(),
                cf->config.repo_dir.c_str());
    std::fflush(stdout);
    c.Run();
  });

  auto ef = std::make_shared<edge::EdgeConfig>();
  cmd = app.add_subcommand("edge",
                           "The edge service: matching, model cache, collaborative "
                           "inference");
  AddServerOptions(cmd, ef->server, 8080);
  AddEdgeOptions(cmd, *ef, true);
  cmd->callback([ef] {
    SignalStop signals;
    edge::Edge e(*ef);
    signals.Start([&e] { e.Stop(); });
    std::printf("edge: http://%s:%d/ (cloud %s, cache %lld bytes, policy %s)\n",
                ef->server.host.c_str(), e.port(), ef->cloud_url.c_str(),
                static_cast<long long>(ef->cache_bytes), ef->policy.c_str());
    std::fflush(stdout);
    e.Run();
  });

  // serve: both in one process (the embedded default); the edge's flags plus the cloud's.
  auto sf = std::make_shared<std::pair<CloudFlags, edge::EdgeConfig>>();
  cmd = app.add_subcommand("serve", "Cloud and edge in one process (the embedded default)");
  AddServerOptions(cmd, sf->second.server, 8080);
  cmd->add_option("--cloud-port", sf->first.config.server.port, "The cloud's port (0: any free)")
      ->capture_default_str();
  sf->first.config.server.port = 8081;
  AddEdgeOptions(cmd, sf->second, false);
  AddCloudOptions(cmd, sf->first);
  cmd->callback([sf] {
    auto& [cloud_flags, edge_flags] = *sf;
    cloud_flags.config.server.host = edge_flags.server.host;
    edge_flags.batching = cloud_flags.config.batching;
    edge_flags.profiles_dir = cloud_flags.config.profiles_dir;
    cloud_flags.config.search.importance = prune::ParseImportance(cloud_flags.importance);
    SignalStop signals;
    cloud::Cloud c(cloud_flags.config);
    std::thread cloud_thread([&c] { c.Run(); });
    edge_flags.cloud_url = "http://127.0.0.1:" + std::to_string(c.port());
    cloud_flags.config.server.token = edge_flags.server.token;  // one --token for both
    edge_flags.cloud_token = edge_flags.server.token;
    std::unique_ptr<edge::Edge> e;
    try {
      e = std::make_unique<edge::Edge>(edge_flags);
    } catch (...) {
      c.Stop();
      cloud_thread.join();
      throw;
    }
    signals.Start([&] {
      e->Stop();
      c.Stop();
    });
    std::printf(
        "cloud: http://%s:%d/ (repository %s)\nedge:  http://%s:%d/ (cache %lld bytes, "
        "policy %s)\n",
        cloud_flags.config.server.host.c_str(), c.port(), cloud_flags.config.repo_dir.c_str(),
        edge_flags.server.host.c_str(), e->port(), static_cast<long long>(edge_flags.cache_bytes),
        edge_flags.policy.c_str());
    std::fflush(stdout);
    e->Run();
    c.Stop();
    cloud_thread.join();
  });
}

}  // namespace da::cli
