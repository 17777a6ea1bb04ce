#include "context/context.h"

#include <cmath>
#include <set>

#include "common/error.h"
#include "common/fs.h"
#include "nn/model_files.h"

namespace da::context {
namespace {

// A positive finite number at j[key]; UserError naming `what` otherwise.
double Positive(const nlohmann::json& j, const char* key, const std::string& what) {
  if (!j.contains(key)) throw UserError(what + ": missing \"" + key + "\"");
  const auto& v = j.at(key);
  if (!v.is_number()) throw UserError(what + ": \"" + key + "\" must be a number");
  double d = v.get<double>();
  if (!std::isfinite(d) || d <= 0)
    throw UserError(what + ": \"" + key + "\" must be a positive finite number, not " + v.dump());
  return d;
}

double NonNegative(const nlohmann::json& j, const char* key, const std::string& what) {
  if (!j.contains(key)) throw UserError(what + ": missing \"" + key + "\"");
  const auto& v = j.at(key);
  double d = v.is_number() ? v.get<double>() : -1;
  if (!std::isfinite(d) || d < 0)
    throw UserError(what + ": \"" + key + "\" must be a finite number >= 0, not " + v.dump());
  return d;
}

std::string Name(const nlohmann::json& j, const char* key, const std::string& what) {
  if (!j.contains(key) || !j.at(key).is_string() || j.at(key).get<std::string>().empty())
    throw UserError(what + ": \"" + key + "\" must be a non-empty string");
  return j.at(key).get<std::string>();
}

const nlohmann::json& List(const nlohmann::json& j, const char* key, const std::string& path) {
  if (!j.is_object() || !j.contains(key) || !j.at(key).is_array() || j.at(key).empty())
    throw UserError(path + ": expected {\"" + key + "\": [...]} with at least one entry");
  return j.at(key);
}

template <typename T>
const T& Find(const std::vector<T>& items, const std::string& name, const char* kind) {
  std::string known;
  for (const T& t : items) {
    if (t.name == name) return t;
    known += (known.empty() ? "" : ", ") + t.name;
  }
  throw UserError("unknown " + std::string(kind) + " '" + name + "' (known: " + known + ")");
}

}  // namespace

Profiles Profiles::Load(const std::string& dir) {
  Profiles p;
  std::set<std::string> names;
  auto unique = [&](const std::string& name, const std::string& what) {
    if (!names.insert(name).second) throw UserError(what + ": duplicate name '" + name + "'");
  };
  const std::string dev_path = dir + "/devices.json", net_path = dir + "/networks.json";
  const nlohmann::json devices = nn::ReadJsonFile(dev_path), networks = nn::ReadJsonFile(net_path);
  for (const auto& d : List(devices, "devices", dev_path)) {
    std::string what = dev_path + ": device";
    DeviceClass c;
    c.name = Name(d, "name", what);
    what += " '" + c.name + "'";
    unique("device:" + c.name, what);
    c.label = d.value("label", c.name);
    c.slowdown = Positive(d, "slowdown", what);
    c.compute_mw = Positive(d, "compute_mw", what);
    c.idle_mw = NonNegative(d, "idle_mw", what);
    p.devices.push_back(c);
  }
  for (const auto& n : List(networks, "networks", net_path)) {
    std::string what = net_path + ": network";
    NetworkPreset c;
    c.name = Name(n, "name", what);
    what += " '" + c.name + "'";
    unique("network:" + c.name, what);
    c.label = n.value("label", c.name);
    c.downlink_kbps = Positive(n, "downlink_kbps", what);
    c.uplink_kbps = Positive(n, "uplink_kbps", what);
    c.rtt_ms = NonNegative(n, "rtt_ms", what);
    c.transfer_mw = NonNegative(n, "transfer_mw", what);
    c.tail_mj = NonNegative(n, "tail_mj", what);
    c.tail_s = n.contains("tail_s") ? NonNegative(n, "tail_s", what) : 0;
    p.networks.push_back(c);
  }
  return p;
}

const DeviceClass& Profiles::Device(const std::string& name) const {
  return Find(devices, name, "device class");
}

const NetworkPreset& Profiles::Network(const std::string& name) const {
  return Find(networks, name, "network preset");
}

Context Context::FromJson(const nlohmann::json& j, const Profiles& profiles) {
  if (!j.is_object()) throw UserError("invalid context: expected a JSON object, not " + j.dump());
  Context c;
  c.name = Name(j, "name", "invalid context");
  const std::string what = "invalid context '" + c.name + "'";
  static const std::set<std::string> known = {"name",          "device",      "network",
                                              "budget_ms",     "inferences",  "slowdown",
                                              "downlink_kbps", "uplink_kbps", "rtt_ms"};
  for (const auto& [key, value] : j.items())
    if (!known.count(key)) throw UserError(what + ": unknown field \"" + key + "\"");
  // A measured device score (slowdown) or link may stand in for the class or
  // preset name: the nearest one (log scale) then supplies the power figures.
  auto nearest = [](const auto& list, auto value) {
    auto best = list.begin();
    for (auto it = list.begin(); it != list.end(); ++it)
      if (std::abs(std::log(value(*it))) < std::abs(std::log(value(*best)))) best = it;
    return best->name;
  };
  try {
    if (j.contains("device") || !j.contains("slowdown")) {
      c.device = Name(j, "device", what);
    } else {
      const double score = Positive(j, "slowdown", what);
      c.device = nearest(profiles.devices, [&](const DeviceClass& d) { return d.slowdown / score; });
    }
    if (j.contains("network") || !j.contains("downlink_kbps") || !j.contains("rtt_ms")) {
      c.network = Name(j, "network", what);
    } else {
      const double kbps = Positive(j, "downlink_kbps", what);
      c.network = nearest(profiles.networks,
                          [&](const NetworkPreset& n) { return n.downlink_kbps / kbps; });
    }
    const DeviceClass& d = profiles.Device(c.device);
    const NetworkPreset& n = profiles.Network(c.network);
    c.slowdown = d.slowdown, c.compute_mw = d.compute_mw, c.idle_mw = d.idle_mw;
    c.downlink_kbps = n.downlink_kbps, c.uplink_kbps = n.uplink_kbps, c.rtt_ms = n.rtt_ms;
    c.transfer_mw = n.transfer_mw, c.tail_mj = n.tail_mj, c.tail_s = n.tail_s;
  } catch (const UserError& e) {
    const std::string m = e.what();
    throw UserError(m.starts_with(what) ? m : what + ": " + m);
  }
  c.budget_ms = Positive(j, "budget_ms", what);
  c.inferences = Positive(j, "inferences", what);
  if (c.inferences < 1) throw UserError(what + ": \"inferences\" must be >= 1");
  if (j.contains("slowdown")) c.slowdown = Positive(j, "slowdown", what);
  if (j.contains("downlink_kbps")) c.downlink_kbps = Positive(j, "downlink_kbps", what);
  if (j.contains("uplink_kbps")) c.uplink_kbps = Positive(j, "uplink_kbps", what);
  if (j.contains("rtt_ms")) c.rtt_ms = NonNegative(j, "rtt_ms", what);
  return c;
}

nlohmann::json Context::ToJson() const {
  return {{"name", name},
          {"device", device},
          {"network", network},
          {"budget_ms", budget_ms},
          {"inferences", inferences},
          {"slowdown", slowdown},
          {"downlink_kbps", downlink_kbps},
          {"uplink_kbps", uplink_kbps},
          {"rtt_ms", rtt_ms}};
}

std::vector<Context> LoadContexts(const std::string& path, const Profiles& profiles) {
  std::vector<Context> out;
  std::set<std::string> names;
  const nlohmann::json file = nn::ReadJsonFile(path);
  for (const auto& j : List(file, "contexts", path)) {
    try {
      out.push_back(Context::FromJson(j, profiles));
    } catch (const UserError& e) {
      throw UserError(path + ": " + e.what());
    }
    if (!names.insert(out.back().name).second)
      throw UserError(path + ": duplicate context name '" + out.back().name + "'");
  }
  return out;
}

}  // namespace da::context
