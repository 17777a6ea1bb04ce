#pragma once
// A cloud and edges in this process on loopback ports, for benchmarks: each
// serves on its own thread from construction to destruction.
#include <memory>
#include <string>
#include <thread>

#include "cloud/cloud.h"
#include "edge/edge.h"

namespace da::cli {

// The cloud of a benchmark: a fresh repository under `dir` importing `family`.
cloud::CloudConfig FamilyCloud(const std::string& dir, const std::string& family,
                               const std::string& profiles, const std::string& table);

class LocalCloud {
 public:
  explicit LocalCloud(const cloud::CloudConfig& c);
  ~LocalCloud();
  std::string url() const { return "http://127.0.0.1:" + std::to_string(cloud_->port()); }
  int port() const { return cloud_->port(); }

 private:
  std::unique_ptr<cloud::Cloud> cloud_;
  std::thread thread_;
};

class LocalEdge {
 public:
  // Returns once the edge has its catalog and its base model (UserError after 60 s).
  explicit LocalEdge(const edge::EdgeConfig& c);
  ~LocalEdge();
  std::string url() const { return "http://127.0.0.1:" + std::to_string(edge_->port()); }
  int port() const { return edge_->port(); }

 private:
  std::unique_ptr<edge::Edge> edge_;
  std::thread thread_;
};

}  // namespace da::cli
