// The system evaluation's workload (sim/system_sim.h): profiles/workload.json
// and the users drawn from it.
#include <cmath>
#include <random>

#include "common/error.h"
#include "common/fs.h"
#include "sim/system_sim.h"

namespace da::sim {

Workload Workload::Load(const std::string& path, const context::Profiles& profiles) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(ReadFile(path));
  } catch (const nlohmann::json::exception& e) {
    throw UserError(path + ": not valid JSON (" + e.what() + ")");
  }
  Workload w;
  try {
    auto shares = [&](const char* key, const char* name, auto check) {
      std::vector<Share> out;
      double sum = 0;
      for (const auto& s : j.at(key)) {
        Share x{s.at(name).is_string() ? s.at(name).get<std::string>()
                                       : std::to_string(s.at(name).get<double>()),
                s.at("share").get<double>()};
        if (!(x.share >= 0)) throw UserError(std::string(key) + ": negative share");
        check(s);
        sum += x.share;
        out.push_back(x);
      }
      if (!(sum > 0)) throw UserError(std::string(key) + ": the shares sum to 0");
      return out;
    };
    w.devices = shares("devices", "name", [&](const auto& s) { profiles.Device(s.at("name")); });
    w.networks = shares("networks", "name", [&](const auto& s) { profiles.Network(s.at("name")); });
    w.budgets = shares("budgets_ms", "budget_ms", [&](const auto& s) {
      if (!(s.at("budget_ms").template get<double>() > 0))
        throw UserError("budgets_ms: budgets must be positive");
    });
    auto positive = [&](const char* key, double& v) {
      if (!j.contains(key)) return;
      v = j.at(key).get<double>();
      if (!(v > 0) || !std::isfinite(v)) throw UserError(std::string(key) + " must be positive");
    };
    positive("requests_per_user", w.requests_per_user);
    positive("think_s", w.think_s);
    positive("users_per_s", w.users_per_s);
    positive("server_egress_kbps", w.egress_kbps);
    if (j.contains("cloud_link")) {
      w.cloud_extra_rtt_ms = j["cloud_link"].at("extra_rtt_ms").get<double>();
      w.cloud_kbps = j["cloud_link"].at("kbps").get<double>();
      if (!(w.cloud_extra_rtt_ms >= 0) || !(w.cloud_kbps > 0))
        throw UserError("cloud_link: extra_rtt_ms >= 0 and kbps > 0");
    }
    if (j.contains("page")) {
      w.page_request_ms = j["page"].at("request_ms").get<double>();
      w.page_download_ms = j["page"].at("download_ms").get<double>();
      if (!(w.page_request_ms >= 0 && w.page_request_ms < 1e4) ||
          !(w.page_download_ms >= 0 && w.page_download_ms < 1e4))
        throw UserError("page: request_ms and download_ms must be in [0, 10000)");
    }
    w.upload_overhead_bytes = j.value("upload_overhead_bytes", w.upload_overhead_bytes);
    if (w.upload_overhead_bytes < 0) throw UserError("upload_overhead_bytes must be >= 0");
  } catch (const nlohmann::json::exception& e) {
    throw UserError(path + ": " + e.what());
  } catch (const UserError& e) {
    throw UserError(path + ": " + e.what());
  }
  return w;
}

std::vector<User> MakeUsers(const Workload& w, const context::Profiles& profiles, int users,
                            int64_t images, uint64_t seed) {
  if (users < 1 || images < 1) throw UserError("need at least one user and one image");
  std::mt19937_64 rng(seed);
  auto pick = [&](const std::vector<Workload::Share>& s) -> const std::string& {
    std::vector<double> p;
    for (const auto& x : s) p.push_back(x.share);
    return s[std::discrete_distribution<size_t>(p.begin(), p.end())(rng)].name;
  };
  std::exponential_distribution<double> arrival(w.users_per_s), think(1 / w.think_s);
  std::poisson_distribution<int> count(w.requests_per_user);
  std::uniform_int_distribution<int64_t> image(0, images - 1);
  std::vector<User> out;
  double t = 0;
  for (int i = 0; i < users; ++i) {
    t += arrival(rng);
    User u;
    u.c = context::Context::FromJson({{"name", "u" + std::to_string(i)},
                                      {"device", pick(w.devices)},
                                      {"network", pick(w.networks)},
                                      {"budget_ms", std::stod(pick(w.budgets))},
                                      {"inferences", w.requests_per_user}},
                                     profiles);
    const int n = std::max(1, count(rng));
    double at = t;
    for (int k = 0; k < n; ++k) {
      u.t.push_back(at);
      u.image.push_back(static_cast<int>(image(rng)));
      at += think(rng);
    }
    out.push_back(std::move(u));
  }
  return out;
}

}  // namespace da::sim
