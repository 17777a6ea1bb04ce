#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>

#include "common/error.h"
#include "common/fs.h"
#include "context/latency.h"
#include "context/predictor.h"
#include "nn/onnx_export.h"

using namespace da::context;
using da::nn::Family;
using da::nn::ModelSpec;
namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {
const std::string kProfiles = std::string(DA_SOURCE_DIR) + "/profiles";

const Profiles& Shipped() {
  static const Profiles p = Profiles::Load(kProfiles);
  return p;
}

// UserError whose message contains `text`.
template <typename F>
void ExpectUserError(F f, const std::string& text) {
  try {
    f();
    ADD_FAILURE() << "no error; expected one containing '" << text << "'";
  } catch (const da::UserError& e) {
    EXPECT_NE(std::string(e.what()).find(text), std::string::npos) << e.what();
  }
}

json Good() {
  return {
      {"name", "c"}, {"device", "mid"}, {"network", "4g"}, {"budget_ms", 20}, {"inferences", 10}};
}
}  // namespace

TEST(Profiles, ShippedFilesHaveEveryClassPresetAndSource) {
  const Profiles& p = Shipped();
  for (const char* d : {"high", "mid", "low"}) EXPECT_NO_THROW(p.Device(d));
  for (const char* n : {"3g", "slow4g", "4g", "wifi"}) EXPECT_NO_THROW(p.Network(n));
  EXPECT_LT(p.Device("high").slowdown, p.Device("mid").slowdown);
  EXPECT_LT(p.Device("mid").slowdown, p.Device("low").slowdown);
  // Every numeric figure of every entry names its source.
  for (const char* file : {"devices.json", "networks.json"}) {
    json j = json::parse(da::ReadFile(kProfiles + "/" + file));
    for (const auto& [list, entries] : j.items()) {
      if (!entries.is_array()) continue;
      for (const auto& e : entries)
        for (const auto& [key, value] : e.items())
          if (value.is_number()) {
            EXPECT_TRUE(e["sources"].contains(key)) << file << " " << e["name"] << " " << key;
          }
    }
  }
  auto contexts = LoadContexts(kProfiles + "/contexts.json", p);
  EXPECT_GE(contexts.size(), 8u);
  std::set<std::string> devices, networks;
  for (const auto& c : contexts) devices.insert(c.device), networks.insert(c.network);
  EXPECT_EQ(devices.size(), 3u);
  EXPECT_EQ(networks.size(), 4u);
}

TEST(Context, ResolvesClassAndPresetAndOverrides) {
  Context c = Context::FromJson(Good(), Shipped());
  EXPECT_EQ(c.slowdown, Shipped().Device("mid").slowdown);
  EXPECT_EQ(c.downlink_kbps, Shipped().Network("4g").downlink_kbps);
  EXPECT_EQ(c.compute_mw, Shipped().Device("mid").compute_mw);
  json j = Good();
  j["slowdown"] = 3.5, j["downlink_kbps"] = 1000, j["rtt_ms"] = 0;
  Context m = Context::FromJson(j, Shipped());
  EXPECT_EQ(m.slowdown, 3.5);
  EXPECT_EQ(m.downlink_kbps, 1000);
  EXPECT_EQ(m.rtt_ms, 0);
  // ToJson round-trips.
  Context back = Context::FromJson(m.ToJson(), Shipped());
  EXPECT_EQ(back.ToJson(), m.ToJson());
}

TEST(Context, BadContextsGetClearErrors) {
  auto bad = [](const char* key, json value, const std::string& text) {
    json j = Good();
    if (value.is_null())
      j.erase(key);
    else
      j[key] = value;
    ExpectUserError([&] { Context::FromJson(j, Shipped()); }, text);
  };
  bad("budget_ms", 0, "budget_ms");
  bad("budget_ms", -5, "budget_ms");
  bad("budget_ms", "fast", "must be a number");
  bad("budget_ms", nullptr, "missing \"budget_ms\"");
  bad("inferences", 0.5, "inferences");
  bad("device", "phablet", "unknown device class 'phablet'");
  bad("network", "5g", "unknown network preset '5g'");
  bad("slowdown", -1, "slowdown");
  bad("downlink_kbps", 0, "downlink_kbps");
  bad("colour", "red", "unknown field");
  ExpectUserError([] { Context::FromJson(json::array(), Shipped()); }, "JSON object");
  bad("budget_ms", INFINITY, "finite");
  bad("inferences", NAN, "finite");
}

TEST(Context, BadFilesGetClearErrors) {
  fs::path dir = fs::temp_directory_path() / "da-context-test";
  fs::create_directories(dir);
  auto write = [&](const std::string& name, const std::string& text) {
    da::WriteFileAtomic((dir / name).string(), text);
    return (dir / name).string();
  };
  ExpectUserError([&] { LoadContexts(write("a.json", "{"), Shipped()); }, "not valid JSON");
  // JSON has no infinity: a number too large for a double is a parse error.
  ExpectUserError(
      [&] {
        LoadContexts(write("d.json", R"({"contexts": [{"name": "c", "budget_ms": 1e999}]})"),
                     Shipped());
      },
      "not valid JSON");
  ExpectUserError([&] { LoadContexts(write("b.json", R"({"contexts": []})"), Shipped()); },
                  "at least one");
  json two = {{"contexts", {Good(), Good()}}};
  ExpectUserError([&] { LoadContexts(write("c.json", two.dump()), Shipped()); }, "duplicate");
  ExpectUserError([&] { LoadContexts((dir / "none.json").string(), Shipped()); }, "none.json");
  fs::create_directories(dir / "p");
  write("p/devices.json",
        R"({"devices": [{"name": "x", "slowdown": 0, "compute_mw": 1, "idle_mw": 1}]})");
  write("p/networks.json", da::ReadFile(kProfiles + "/networks.json"));
  ExpectUserError([&] { Profiles::Load((dir / "p").string()); }, "slowdown");
  fs::remove_all(dir);
}

TEST(Predictor, FollowsTheDefinition) {
  Context c = Context::FromJson(Good(), Shipped());
  c.rtt_ms = 100, c.downlink_kbps = 8000, c.inferences = 10, c.slowdown = 4;
  c.compute_mw = 1000, c.transfer_mw = 2000, c.tail_mj = 500;
  // 1 MB at 8000 kbit/s = 1000 ms; (100 + 1000) / 10 = 110 ms; 2 ms x 4 = 8 ms.
  Prediction p = Predict(c, 2.0, 1'000'000);
  EXPECT_DOUBLE_EQ(p.download_ms, 110);
  EXPECT_DOUBLE_EQ(p.compute_ms, 8);
  EXPECT_DOUBLE_EQ(p.total_ms, 118);
  // 1 W x 8 ms = 8 mJ; (2 W x 1000 ms + 500 mJ) / 10 = 250 mJ.
  EXPECT_DOUBLE_EQ(p.energy_mj, 258);
}

namespace {
// A table where each layer alone costs in x out microseconds (1-D entries: channels).
LatencyTable LinearTable(const ModelSpec& spec) {
  LatencyTable t;
  t.runtime = "synthetic";
  t.overhead_ms = 0.5;
  for (const KeyedLayer& l : KeyedLayers(spec)) {
    auto& e = t.entries[l.key];
    e.in = {1, 4, 64};
    if (l.two_d) e.out = {1, 8, 128};
    e.ms.clear();
    for (int in : e.in)
      if (l.two_d)
        for (int out : e.out) e.ms.push_back(in * out * 1e-3);
      else
        e.ms.push_back(in * 1e-3);
  }
  return t;
}
}  // namespace

TEST(LatencyTable, InterpolatesExtrapolatesAndRoundTrips) {
  ModelSpec spec = ModelSpec::Default(Family::kVgg).WithWidths("3,5/7/30 fc100");
  LatencyTable t = LinearTable(spec);
  // Bilinear interpolation of in x out is exact at grid points, and between
  // them along one axis; past the ends it extrapolates linearly.
  for (const KeyedLayer& l : KeyedLayers(spec)) {
    double expect = l.two_d ? l.layer.in_ch * l.layer.out_ch * 1e-3 : l.layer.in_ch * 1e-3;
    if (l.two_d && l.layer.in_ch != 1 && l.layer.in_ch != 4 && l.layer.out_ch != 1 &&
        l.layer.out_ch != 8 && l.layer.out_ch != 128)
      continue;  // off-grid on both axes: bilinear is not exact for a product
    EXPECT_NEAR(t.LayerMs(l), expect, 1e-12)
        << l.key << " " << l.layer.in_ch << "x" << l.layer.out_ch;
  }
  KeyedLayer wide = KeyedLayers(spec)[0];
  wide.layer.in_ch = 1, wide.layer.out_ch = 200;  // past the grid: linear
  EXPECT_NEAR(t.LayerMs(wide), 0.2, 1e-12);
  double sum = t.overhead_ms;
  for (const KeyedLayer& l : KeyedLayers(spec)) sum += t.LayerMs(l);
  t.scale = 1.5, t.per_layer_ms = 0.01;
  EXPECT_NEAR(t.ModelMs(spec), 1.5 * sum + 0.01 * KeyedLayers(spec).size(), 1e-12);
  LatencyTable back = LatencyTable::FromJson(t.ToJson());
  EXPECT_EQ(back.ToJson(), t.ToJson());
  EXPECT_DOUBLE_EQ(back.ModelMs(spec), t.ModelMs(spec));
}

TEST(LatencyTable, RejectsMalformedTablesAndUnknownLayers) {
  ModelSpec spec = ModelSpec::Default(Family::kVgg).WithWidths("3/5 fc4");
  json j = LinearTable(spec).ToJson();
  json short_ms = j;
  short_ms["entries"].begin().value()["ms"].erase(0);
  ExpectUserError([&] { LatencyTable::FromJson(short_ms); }, "expected");
  json negative = j;
  negative["entries"].begin().value()["ms"][0] = -1;
  ExpectUserError([&] { LatencyTable::FromJson(negative); }, ">= 0");
  json unsorted = j;
  unsorted["entries"].begin().value()["in"] = {4, 1, 64};
  ExpectUserError([&] { LatencyTable::FromJson(unsorted); }, "increasing");
  json missing = j;
  missing.erase("scale");
  ExpectUserError([&] { LatencyTable::FromJson(missing); }, "malformed");
  ModelSpec other = ModelSpec::Default(Family::kResnet).WithWidths("2:2/2:2");
  ExpectUserError([&] { LatencyTable::FromJson(j).ModelMs(other); }, "no entry");
}

// The real runtime: profiles a tiny model on onnxruntime-web (node, WASM) and
// checks the table covers it and predicts a plausible time for it.
TEST(LatencyTable, ProfilesATinyModelOnTheWasmRuntime) {
  ModelSpec spec = ModelSpec::Default(Family::kResnet).WithWidths("4:3,2/6:4");
  WasmTimerOptions o;
  o.min_runs = 3;
  o.min_seconds = 0;
  o.script = std::string(DA_SOURCE_DIR) + "/web/tools/ort-web-time.mjs";
  LatencyTable t = ProfileLatency({spec}, o, "test", /*quiet=*/true);
  std::set<std::string> keys;
  for (const KeyedLayer& l : KeyedLayers(spec)) keys.insert(l.key);
  EXPECT_EQ(t.entries.size(), keys.size());
  double predicted = t.ModelMs(spec);
  EXPECT_TRUE(std::isfinite(predicted) && predicted > 0);
  std::vector<double> measured =
      TimeOnWasm({{da::nn::OnnxModelBytes(spec, 0.01f), {{1, 28, 28}}}}, o);
  ASSERT_EQ(measured.size(), 1u);
  EXPECT_GT(measured[0], 0);
  // The table is fitted to this model itself (calibration); allow for noise.
  EXPECT_LT(std::abs(predicted - measured[0]) / measured[0], 1.0);
  WasmTimerOptions broken = o;
  broken.script = "/nonexistent/script.mjs";
  ExpectUserError(
      [&] {
        TimeOnWasm({{da::nn::OnnxModelBytes(spec, 0.01f), {{1, 28, 28}}}}, broken);
      },
      "failed");
}

// The SDK's runtime: the same timer in headless Chromium, where DevTools CPU
// throttling 4x makes a model well over twice as slow (about 4x measured).
TEST(LatencyTable, TimesInChromiumUnderCpuThrottling) {
  ModelSpec spec = ModelSpec::Default(Family::kVgg).WithWidths("8/16/16 fc16");
  std::vector<WasmModel> models = {{da::nn::OnnxModelBytes(spec, 0.01f), {{1, 28, 28}}}};
  WasmTimerOptions o;
  o.min_runs = 3;
  o.min_seconds = 0.2;
  o.script = std::string(DA_SOURCE_DIR) + "/web/tools/browser-time.mjs";
  const double fast = TimeOnWasm(models, o).at(0);
  o.args = {"--throttle", "4"};
  const double slow = TimeOnWasm(models, o).at(0);
  EXPECT_GT(fast, 0);
  EXPECT_GT(slow, 2 * fast) << "unthrottled " << fast << " ms, throttled 4x " << slow << " ms";
}
