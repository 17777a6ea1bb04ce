// deepadapter client: what a browser does against an edge, from the command
// line: match each context, download its model (hash checked), and ask the
// edge's base model about real test images (Open Inference Protocol).
#include <httplib.h>

#include <cstdio>
#include <thread>

#include "cli/commands.h"
#include "common/error.h"
#include "common/sha256.h"
#include "context/context.h"
#include "nn/dataset.h"

namespace da::cli {
namespace {

nlohmann::json Call(httplib::Client& c, const std::string& path, const std::string* body) {
  auto res = body ? c.Post(path, *body, "application/json") : c.Get(path);
  if (!res) throw UserError("edge unreachable: " + httplib::to_string(res.error()));
  if (res->status != 200) throw UserError(path + ": " + std::to_string(res->status) + " " + res->body);
  auto j = nlohmann::json::parse(res->body, nullptr, false);
  if (j.is_discarded()) throw UserError(path + ": not JSON");
  return j;
}

}  // namespace

void AddClient(CLI::App& app) {
  struct Flags {
    std::string edge, contexts = SourcePath("profiles/contexts.json"),
                      profiles = SourcePath("profiles"), data = nn::kFashionMnistDir;
    int images = 64;
  };
  auto f = std::make_shared<Flags>();
  auto* cmd = app.add_subcommand("client", "Act as a browser against an edge: match, download, "
                                           "collaborative inference");
  cmd->add_option("--edge", f->edge, "The edge's URL, e.g. http://127.0.0.1:8080")->required();
  cmd->add_option("--contexts", f->contexts, "Contexts to match")->capture_default_str();
  cmd->add_option("--profiles", f->profiles, "Profiles directory")->capture_default_str();
  cmd->add_option("--data", f->data, "Dataset (test images)")->capture_default_str();
  cmd->add_option("--images", f->images, "Test images sent to the base model")
      ->capture_default_str()
      ->check(CLI::Range(1, 1024));
  cmd->callback([f] {
    httplib::Client c(f->edge);
    c.set_read_timeout(60);
    const auto profiles = context::Profiles::Load(f->profiles);
    for (int i = 0; i < 300; ++i) {  // the edge loads the catalog and base model first
      auto res = c.Get("/v2/health/ready");
      if (res && res->status == 200) break;
      if (i == 299) throw UserError(f->edge + " is not ready after 30 s");
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    std::printf("%-16s %9s  %-16s %9s %8s %6s  %s\n", "context", "budget", "model", "latency",
                "KB", "tau", "cache");
    for (const context::Context& ctx : context::LoadContexts(f->contexts, profiles)) {
      nlohmann::json body = ctx.ToJson();
      const std::string text = body.dump();
      nlohmann::json m = Call(c, "/v1/match", &text);
      const std::string url = m.at("url");
      auto res = c.Get(url);
      if (!res || res->status != 200) throw UserError("download of " + url + " failed");
      if (Sha256Hex(res->body) != m.at("sha256")) throw UserError(url + ": hash mismatch");
      std::printf("%-16s %6.1f ms  %-16s %6.1f ms%s %8.0f %6.2f  %s\n", ctx.name.c_str(),
                  ctx.budget_ms, m.at("model").get<std::string>().c_str(),
                  m.at("predicted").at("latency_ms").get<double>(),
                  m.at("meets_budget").get<bool>() ? " " : "!",
                  m.at("bytes").get<double>() / 1024, std::min(1.0, m.at("threshold").get<double>()),
                  m.at("ideal_cached").get<bool>() ? "hit" : "miss (fetched from the cloud)");
    }
    std::printf("(latency: predicted in the context; '!': over budget, best effort; every "
                "download's sha256 checked)\n");
    const nn::Images test = nn::LoadDataset(f->data).test.First(f->images);
    std::vector<int> pixels(test.pixels.begin(), test.pixels.end());
    nlohmann::json req = {{"inputs", {{{"name", "input"},
                                       {"shape", {test.count, test.channels, test.height, test.width}},
                                       {"datatype", "UINT8"},
                                       {"data", pixels}}}},
                          {"outputs", {{{"name", "label"}}}}};
    const std::string text = req.dump();
    nlohmann::json out = Call(c, "/v2/models/base/infer", &text);
    const auto labels = out.at("outputs").at(0).at("data").get<std::vector<int64_t>>();
    int right = 0;
    for (size_t i = 0; i < labels.size(); ++i) right += labels[i] == test.labels[i];
    std::printf("collaborative inference: the edge's base model labelled %d of %lld test images "
                "correctly (%.1f%%)\n",
                right, static_cast<long long>(test.count), 100.0 * right / double(test.count));
    nlohmann::json stats = Call(c, "/v1/stats", nullptr);
    std::printf("edge cache: %zu models, %lld of %lld bytes, ideal model cached for %.0f%% of "
                "matches\n",
                stats.at("content").size(), stats.at("used_bytes").get<long long>(),
                stats.at("capacity_bytes").get<long long>(), 100 * stats.at("hit_rate").get<double>());
  });
}

}  // namespace da::cli
