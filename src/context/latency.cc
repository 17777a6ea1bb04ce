#include "context/latency.h"

#include <algorithm>
#include <cmath>
#include <set>

#include "common/error.h"
#include "common/fs.h"
#include "common/process.h"
#include "common/progress.h"
#include "nn/onnx_export.h"

namespace da::context {

using nn::Layer;

std::vector<KeyedLayer> KeyedLayers(const nn::ModelSpec& spec) {
  std::vector<Layer> layers = spec.Layers();
  std::vector<std::pair<int, int>> dims = {{spec.height, spec.width}};  // per value id
  std::vector<KeyedLayer> out;
  for (const Layer& l : layers) {
    KeyedLayer k{l, dims[l.input].first, dims[l.input].second};
    std::string at = "@" + std::to_string(k.in_h) + "x" + std::to_string(k.in_w);
    std::string r = l.relu ? "r" : "";
    switch (l.kind) {
      case Layer::Kind::kConv:
        k.key = "conv" + std::to_string(l.kernel) + "s" + std::to_string(l.stride) + r + at;
        k.two_d = true;
        break;
      case Layer::Kind::kMaxPool:
        k.key = "maxpool" + at;
        break;
      case Layer::Kind::kAdd:
        k.key = "add" + r + at;
        break;
      case Layer::Kind::kGlobalAvgPool:
        k.key = "gap" + at;
        break;
      case Layer::Kind::kLinear:
        k.key = "linear" + r;
        k.two_d = true;
        break;
    }
    out.push_back(std::move(k));
    dims.push_back({l.out_h, l.out_w});
  }
  return out;
}

namespace {

// Position of x on a sorted grid: the segment [i, i+1] to interpolate on (or
// extrapolate past) and the weight of point i+1.
std::pair<size_t, double> Locate(const std::vector<int>& g, double x) {
  size_t i = std::upper_bound(g.begin(), g.end(), x) - g.begin();
  i = std::clamp<size_t>(i, 1, g.size() - 1) - 1;
  return {i, (x - g[i]) / (g[i + 1] - g[i])};
}

// Widths timed for a layer dimension that reaches `max`: dense where layers are
// narrow, every 8 to 64, every 16 to 128, every 32 beyond.
std::vector<int> Ladder(int max) {
  std::vector<int> g;
  for (int v = 1; v < max;) {
    g.push_back(v);
    v = v < 8 ? v * 2 : v < 64 ? v + 8 : v < 128 ? v + 16 : v + 32;
  }
  g.push_back(max);
  return g;
}

// v(x) from values v(i) at grid points g[i]: linear between points and past the
// ends; proportional to x on a one-point grid.
double Interp(const std::vector<int>& g, const std::function<double(size_t)>& v, double x) {
  if (g.size() == 1) return v(0) * x / g[0];
  auto [i, w] = Locate(g, x);
  return v(i) + w * (v(i + 1) - v(i));
}

std::vector<int> Grid(const nlohmann::json& j, const std::string& what) {
  std::vector<int> g = j.get<std::vector<int>>();
  for (size_t i = 0; i < g.size(); ++i)
    if (g[i] < 1 || (i > 0 && g[i] <= g[i - 1]))
      throw UserError(what + ": grid must be increasing widths >= 1");
  return g;
}

}  // namespace

LatencyTable LatencyTable::FromJson(const nlohmann::json& j) {
  LatencyTable t;
  try {
    t.runtime = j.at("runtime").get<std::string>();
    t.overhead_ms = j.at("overhead_ms").get<double>();
    t.scale = j.at("scale").get<double>();
    t.per_layer_ms = j.at("per_layer_ms").get<double>();
    if (!std::isfinite(t.overhead_ms) || t.overhead_ms < 0)
      throw UserError("latency table: overhead_ms must be >= 0");
    if (!std::isfinite(t.scale) || t.scale <= 0)
      throw UserError("latency table: scale must be > 0");
    if (!std::isfinite(t.per_layer_ms) || t.per_layer_ms < 0)
      throw UserError("latency table: per_layer_ms must be >= 0");
    for (const auto& [key, e] : j.at("entries").items()) {
      const std::string what = "latency table entry " + key;
      Entry entry;
      entry.in = Grid(e.at("in"), what);
      if (e.contains("out")) entry.out = Grid(e.at("out"), what);
      entry.ms = e.at("ms").get<std::vector<double>>();
      size_t cells = entry.in.size() * std::max<size_t>(1, entry.out.size());
      if (entry.in.empty() || entry.ms.size() != cells)
        throw UserError(what + ": expected " + std::to_string(cells) + " times, found " +
                        std::to_string(entry.ms.size()));
      for (double v : entry.ms)
        if (!std::isfinite(v) || v < 0) throw UserError(what + ": times must be finite and >= 0");
      t.entries[key] = std::move(entry);
    }
  } catch (const nlohmann::json::exception& e) {
    throw UserError(std::string("malformed latency table: ") + e.what());
  }
  return t;
}

LatencyTable LatencyTable::Load(const std::string& path) {
  const std::string text = ReadFile(path);  // its errors name the file
  try {
    return FromJson(nlohmann::json::parse(text));
  } catch (const nlohmann::json::exception& e) {
    throw UserError(path + ": not valid JSON: " + e.what());
  } catch (const UserError& e) {
    throw UserError(path + ": " + e.what());
  }
}

nlohmann::json LatencyTable::ToJson() const {
  nlohmann::json j = {{"runtime", runtime},
                      {"overhead_ms", overhead_ms},
                      {"scale", scale},
                      {"per_layer_ms", per_layer_ms},
                      {"entries", {}}};
  for (const auto& [key, e] : entries) {
    nlohmann::json je = {{"in", e.in}, {"ms", e.ms}};
    if (!e.out.empty()) je["out"] = e.out;
    j["entries"][key] = je;
  }
  return j;
}

void LatencyTable::Save(const std::string& path) const { WriteFileAtomic(path, ToJson().dump(1)); }

double LatencyTable::LayerMs(const KeyedLayer& l) const {
  auto it = entries.find(l.key);
  if (it == entries.end())
    throw UserError("the latency table has no entry for layer " + l.key +
                    " (profile this model's shapes with `deepadapter profile`)");
  const Entry& e = it->second;
  auto at = [&](size_t r) {
    if (e.out.empty()) return e.ms[r];
    return Interp(
        e.out, [&](size_t c) { return e.ms[r * e.out.size() + c]; }, l.layer.out_ch);
  };
  return std::max(0.0, Interp(e.in, at, l.layer.in_ch));
}

double LatencyTable::ModelMs(const nn::ModelSpec& spec) const {
  double ms = overhead_ms;
  std::vector<KeyedLayer> layers = KeyedLayers(spec);
  for (const KeyedLayer& l : layers) ms += LayerMs(l);
  return scale * ms + per_layer_ms * static_cast<double>(layers.size());
}

std::vector<double> TimeOnWasm(const std::vector<WasmModel>& models, const WasmTimerOptions& opts,
                               const std::function<void(size_t)>& on_done) {
  TempDir dir("deepadapter-wasm");
  nlohmann::json list = {{"min_runs", opts.min_runs}, {"min_seconds", opts.min_seconds}};
  list["models"] = nlohmann::json::array();
  for (size_t i = 0; i < models.size(); ++i) {
    std::string path = (dir.path() / ("m" + std::to_string(i) + ".onnx")).string();
    WriteFileAtomic(path, models[i].onnx);
    list["models"].push_back({{"path", path}, {"inputs", models[i].inputs}});
  }
  const std::string list_path = (dir.path() / "list.json").string();
  WriteFileAtomic(list_path, list.dump());
  std::vector<double> ms(models.size(), -1);
  std::string command = "node " + ShellQuote(opts.script) + " " + ShellQuote(list_path);
  for (const std::string& a : opts.args) command += " " + ShellQuote(a);
  RunCommand(command, [&](const std::string& line) {
    try {
      auto j = nlohmann::json::parse(line);
      size_t i = j.at("index").get<size_t>();
      if (i >= ms.size()) throw UserError("index out of range");
      ms[i] = j.at("ms").get<double>();
      if (on_done) on_done(i);
    } catch (const std::exception&) {
      throw UserError("unexpected output from " + opts.script + ": " + line);
    }
  });
  for (double v : ms)
    if (!(v >= 0)) throw UserError(opts.script + " did not time every model");
  return ms;
}

LatencyTable ProfileLatency(const std::vector<nn::ModelSpec>& specs, const WasmTimerOptions& opts,
                            const std::string& runtime, bool quiet) {
  if (specs.empty()) throw UserError("no models to profile");
  // The widest use of every key across the specs.
  struct Use {
    KeyedLayer proto;
    int max_in = 1, max_out = 1;
  };
  std::map<std::string, Use> uses;
  for (const nn::ModelSpec& spec : specs) {
    for (const KeyedLayer& l : KeyedLayers(spec)) {
      auto [it, fresh] = uses.try_emplace(l.key, Use{l});
      it->second.max_in = std::max(it->second.max_in, l.layer.in_ch);
      it->second.max_out = std::max(it->second.max_out, l.layer.out_ch);
    }
  }
  // One model per grid point, after two that measure the overhead: chains of 1 and
  // kChain tiny layers (1x1 convs on 1x1x1). The overhead of a run is what remains
  // of the 1-chain once one layer's cost is taken off; each layer's time keeps its
  // own dispatch cost, which a whole model pays too.
  constexpr int kChain = 9;
  const Layer tiny{.kind = Layer::Kind::kConv, .in_ch = 1, .out_ch = 1, .kernel = 1};
  std::vector<WasmModel> models = {
      {nn::OnnxLayerBytes({tiny}, 1, 1), {{1, 1, 1}}},
      {nn::OnnxLayerBytes(std::vector<Layer>(kChain, tiny), 1, 1), {{1, 1, 1}}}};
  auto add = [&](const KeyedLayer& k) {
    std::vector<int64_t> in = {k.layer.in_ch, k.in_h, k.in_w};
    if (k.layer.kind == Layer::Kind::kLinear) in = {k.layer.in_ch};
    WasmModel m{nn::OnnxLayerBytes({k.layer}, k.in_h, k.in_w), {in}};
    if (k.layer.kind == Layer::Kind::kAdd) m.inputs.push_back(in);
    models.push_back(std::move(m));
  };
  LatencyTable t;
  t.runtime = runtime;
  for (auto& [key, use] : uses) {
    LatencyTable::Entry& e = t.entries[key];
    e.in = Ladder(use.max_in);
    if (use.proto.two_d) e.out = Ladder(use.max_out);
    for (int in : e.in) {
      for (size_t o = 0; o < std::max<size_t>(1, e.out.size()); ++o) {
        KeyedLayer k = use.proto;
        k.layer.in_ch = in;
        k.layer.out_ch = use.proto.two_d ? e.out[o] : in;
        add(k);
      }
    }
  }
  std::vector<nn::ModelSpec> calibration;
  for (const nn::ModelSpec& spec : specs) {
    for (double f : {1.0, 0.5, 0.25}) {
      nn::ModelSpec s = spec;
      auto scale = [f](int& w) { w = std::max(1, static_cast<int>(std::lround(w * f))); };
      for (auto& stage : s.stages) std::for_each(stage.begin(), stage.end(), scale);
      std::for_each(s.residual.begin(), s.residual.end(), scale);
      if (s.hidden) scale(s.hidden);
      calibration.push_back(s);
      models.push_back({nn::OnnxModelBytes(s, 0.01f), {{s.channels, s.height, s.width}}});
    }
  }
  Progress progress("profile", static_cast<int64_t>(models.size()));
  size_t done = 0;
  std::vector<double> ms = TimeOnWasm(models, opts, [&](size_t) {
    if (!quiet) progress.Update(static_cast<int64_t>(++done));
  });
  if (!quiet) progress.Finish();
  const double per_layer = std::max(0.0, (ms[1] - ms[0]) / (kChain - 1));
  t.overhead_ms = std::max(0.0, ms[0] - per_layer);
  size_t next = 2;
  for (auto& [key, e] : t.entries) {
    e.ms.resize(e.in.size() * std::max<size_t>(1, e.out.size()));
    for (double& v : e.ms) v = std::max(0.0, ms[next++] - t.overhead_ms);
  }
  // Least squares on relative error: measured ~ scale x summed + per_layer x layers.
  double aa = 0, ab = 0, bb = 0, a1 = 0, b1 = 0;
  for (const nn::ModelSpec& spec : calibration) {
    const double m = ms[next++];
    const double a = t.ModelMs(spec) / m, b = static_cast<double>(KeyedLayers(spec).size()) / m;
    aa += a * a, ab += a * b, bb += b * b, a1 += a, b1 += b;
  }
  const double det = aa * bb - ab * ab;
  t.scale = det > 0 ? (a1 * bb - b1 * ab) / det : 0;
  t.per_layer_ms = det > 0 ? (aa * b1 - ab * a1) / det : 0;
  if (!(t.scale > 0) || t.per_layer_ms < 0) t.scale = a1 / aa, t.per_layer_ms = 0;
  return t;
}

}  // namespace da::context
