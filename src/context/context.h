#pragma once
// Contexts: the device, network and latency need of one visitor, resolved
// against the device classes and network presets shipped in profiles/.
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace da::context {

struct DeviceClass {
  std::string name, label;
  double slowdown = 1;  // inference time / reference runtime's time
  double compute_mw = 0, idle_mw = 0;
};

struct NetworkPreset {
  std::string name, label;
  double downlink_kbps = 0, uplink_kbps = 0, rtt_ms = 0;
  double transfer_mw = 0;  // radio power while transferring
  double tail_mj = 0;      // radio energy after each transfer ...
  double tail_s = 0;       // ... spent over this long (0: unknown, always the whole tail)
};

// The device classes and network presets (profiles/devices.json, networks.json).
struct Profiles {
  std::vector<DeviceClass> devices;
  std::vector<NetworkPreset> networks;

  // Reads DIR/devices.json and DIR/networks.json; UserError naming the bad entry.
  static Profiles Load(const std::string& dir);
  // UserError listing the known names when `name` is not one.
  const DeviceClass& Device(const std::string& name) const;
  const NetworkPreset& Network(const std::string& name) const;
};

// One context, every figure resolved (overrides applied over the class/preset).
struct Context {
  std::string name;
  std::string device;   // device class name
  std::string network;  // network preset name
  double slowdown = 1;  // the class's, or a measured device score
  double downlink_kbps = 0, uplink_kbps = 0, rtt_ms = 0;
  double budget_ms = 0;   // latency the application needs, per inference
  double inferences = 1;  // expected inferences per model download
  double compute_mw = 0, idle_mw = 0, transfer_mw = 0, tail_mj = 0, tail_s = 0;

  // {"name", "device", "network", "budget_ms", "inferences"} plus optional
  // measured overrides "slowdown" (the device score: inference time over the
  // reference runtime's), "downlink_kbps", "uplink_kbps", "rtt_ms". A device
  // score may replace "device", and downlink + RTT may replace "network": the
  // nearest class / preset then supplies the power figures (and uplink).
  // UserError for unknown classes/presets, missing fields, non-positive or
  // non-finite numbers.
  static Context FromJson(const nlohmann::json& j, const Profiles& profiles);
  nlohmann::json ToJson() const;
};

// Reads a contexts file ({"contexts": [...]}); names must be unique.
std::vector<Context> LoadContexts(const std::string& path, const Profiles& profiles);

}  // namespace da::context
