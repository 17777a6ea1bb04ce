#include "cli/local_services.h"

#include <httplib.h>

#include <chrono>
#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "common/error.h"

namespace da::cli {

cloud::CloudConfig FamilyCloud(const std::string& dir, const std::string& family,
                               const std::string& profiles, const std::string& table) {
  cloud::CloudConfig c;
  c.repo_dir = dir + "/repo";
  c.family_dir = family;
  c.profiles_dir = profiles;
  c.table_path = table;
  c.standard_path = SourcePath("profiles/contexts.json");
  return c;
}

LocalCloud::LocalCloud(const cloud::CloudConfig& c)
    : cloud_(std::make_unique<cloud::Cloud>(c)), thread_([this] { cloud_->Run(); }) {}

LocalCloud::~LocalCloud() {
  cloud_->Stop();
  thread_.join();
}

LocalEdge::LocalEdge(const edge::EdgeConfig& c)
    : edge_(std::make_unique<edge::Edge>(c)), thread_([this] { edge_->Run(); }) {
  httplib::Client hc("127.0.0.1", edge_->port());
  for (int i = 0; i < 600; ++i) {
    auto res = hc.Get("/healthz");
    if (res && res->status == 200) {
      const auto h = nlohmann::json::parse(res->body, nullptr, false);
      if (h.is_object() && h.value("base_ready", false) && h.value("catalog_models", 0) > 0)
        return;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  edge_->Stop();
  thread_.join();
  throw UserError("the local edge did not get its catalog and base model within 60 s");
}

LocalEdge::~LocalEdge() {
  edge_->Stop();
  thread_.join();
}

}  // namespace da::cli
