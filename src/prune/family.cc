#include "prune/family.h"

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <map>

#include "common/error.h"
#include "common/fs.h"
#include "common/sha256.h"
#include "context/predictor.h"
#include "nn/model_dir.h"
#include "nn/onnx_export.h"

namespace da::prune {
namespace fs = std::filesystem;
using context::Context;

namespace {

nlohmann::json Predictions(const nn::ModelSpec& spec, const std::vector<Context>& contexts,
                           const context::LatencyTable& table) {
  nlohmann::json out = nlohmann::json::object();
  const double ref = table.ModelMs(spec);
  const int64_t bytes = nn::OnnxBytes(spec);
  for (const Context& c : contexts) {
    context::Prediction p = context::Predict(c, ref, bytes);
    out[c.name] = {{"latency_ms", p.total_ms},
                   {"download_ms", p.download_ms},
                   {"compute_ms", p.compute_ms},
                   {"energy_mj", p.energy_mj},
                   {"meets_budget", p.total_ms <= c.budget_ms}};
  }
  return out;
}

// Writes a model directory (weights, spec, ONNX, metrics last).
void WriteModel(const std::string& dir, nn::Net& net, const nlohmann::json& metrics) {
  nn::ExportOnnx(*net, (fs::path(dir) / nn::kOnnxFile).string());
  nn::SaveModelDir(dir, *net, metrics);
}

nlohmann::json ContextsJson(const std::vector<Context>& cs) {
  nlohmann::json j = nlohmann::json::array();
  for (const Context& c : cs) j.push_back(c.ToJson());
  return j;
}

// A family built before issue 26 lacks its branches' validation curves
// (threshold.curve, which the edge's collaborative rule chooses from): they
// are added to each branch's metrics.json and to family.json (the same
// weights, thresholds and inputs).
nlohmann::json AddCurves(const FamilyInputs& in, nn::NetImpl& base, const std::string& repo,
                         nlohmann::json family) {
  torch::Tensor labels, base_val;
  int added = 0;
  for (auto& b : family.at("branches")) {
    if (b.at("threshold").contains("curve")) continue;
    if (!added++) labels = nn::LabelsTensor(in.data->val), base_val = Probabilities(base, in.data->val);
    const std::string dir = (fs::path(repo) / b.at("dir").get<std::string>()).string();
    nn::Net net = nn::LoadModelDir(dir);
    const double tau = b.at("threshold").at("tau");
    const nlohmann::json curve =
        CurveJson(ThresholdCurve(Probabilities(*net, in.data->val), base_val, labels, tau));
    nlohmann::json m = nn::ReadMetrics(dir);
    m["threshold"]["curve"] = curve;
    WriteFileAtomic((fs::path(dir) / nn::kMetricsFile).string(), m.dump(2) + "\n");
    b["threshold"]["curve"] = curve;
  }
  if (added) {
    WriteFileAtomic((fs::path(repo) / kFamilyFile).string(), family.dump(1) + "\n");
    std::fprintf(stderr, "%s: added the validation curves of %d branch models\n", repo.c_str(), added);
  }
  return family;
}

}  // namespace

nlohmann::json ReadFamily(const std::string& repo) {
  const std::string path = (fs::path(repo) / kFamilyFile).string();
  try {
    return nlohmann::json::parse(ReadFile(path));
  } catch (const nlohmann::json::exception& e) {
    throw UserError(path + ": not valid JSON: " + e.what());
  }
}

namespace {

// The fingerprint of what a family is built from, recorded in family.json.
nlohmann::json InputsJson(const FamilyInputs& in, const SearchOptions& opts, Method method,
                          const nn::ModelSpec& base, const std::vector<int64_t>* matched_steps) {
  nlohmann::json inputs = {
      {"base", base.ToJson()},
      {"base_weights", Sha256Hex(ReadFile((fs::path(in.base_dir) / nn::kWeightsFile).string()))},
      {"method", MethodName(method)},
      {"contexts", ContextsJson(in.contexts)},
      {"standard", ContextsJson(in.standard)},
      {"search", opts.ToJson()},
      {"table", Sha256Hex(in.table->ToJson().dump())},
      {"data", in.data->dir},
      {"format", 2}};  // 2: metrics.json records reference_ms
  if (matched_steps) inputs["matched_steps"] = *matched_steps;
  return inputs;
}

}  // namespace

bool FamilyIsCurrent(const FamilyInputs& in, const SearchOptions& opts, Method method,
                     const std::string& repo) {
  if (!fs::exists(fs::path(repo) / kFamilyFile)) return false;
  const nlohmann::json inputs =
      InputsJson(in, opts, method, nn::LoadModelDir(in.base_dir)->spec(), nullptr);
  return ReadFamily(repo).value("inputs", nlohmann::json()) == inputs;
}

nlohmann::json BuildFamily(const FamilyInputs& in, const SearchOptions& opts, Method method,
                           const std::string& repo, bool reuse,
                           const std::vector<int64_t>* matched_steps) {
  const auto start = std::chrono::steady_clock::now();
  nn::Net base = nn::LoadModelDir(in.base_dir);
  const nlohmann::json inputs = InputsJson(in, opts, method, base->spec(), matched_steps);
  if (reuse && fs::exists(fs::path(repo) / kFamilyFile)) {
    nlohmann::json old = ReadFamily(repo);
    if (old.value("inputs", nlohmann::json()) == inputs) return AddCurves(in, *base, repo, old);
    std::fprintf(stderr, "%s was built from other inputs; rebuilding\n", repo.c_str());
  }
  fs::remove(fs::path(repo) / kFamilyFile);
  const auto labels = nn::LabelsTensor(in.data->val), test_labels = nn::LabelsTensor(in.data->test);
  const torch::Tensor base_val = Probabilities(*base, in.data->val);
  const torch::Tensor base_test = Probabilities(*base, in.data->test);

  std::vector<Context> all = in.standard;
  for (const Context& c : in.contexts)
    if (std::none_of(all.begin(), all.end(), [&](const Context& s) { return s.name == c.name; }))
      all.push_back(c);
  nlohmann::json family = {
      {"inputs", inputs}, {"method", MethodName(method)}, {"branches", nlohmann::json::array()}};
  nlohmann::json base_metrics = nn::ModelMetrics(base, *in.data);
  base_metrics["spec"] = base->spec().ToJson();
  base_metrics["predicted"] = Predictions(base->spec(), all, *in.table);
  base_metrics["reference_ms"] = in.table->ModelMs(base->spec());
  WriteModel((fs::path(repo) / "base").string(), base, base_metrics);
  family["base"] = {{"dir", "base"},
                    {"spec", base->spec().Summary()},
                    {"val_accuracy", base_metrics["val_accuracy"]},
                    {"test_accuracy", base_metrics["test_accuracy"]},
                    {"params", base_metrics["params"]},
                    {"macs", base_metrics["macs"]},
                    {"bytes", base_metrics["bytes"]},
                    {"predicted", base_metrics["predicted"]}};

  SearchInputs search{in.data, in.table, base.get()};
  std::vector<Branch> branches = Search(method, in.contexts, search, opts, matched_steps);
  for (Branch& b : branches) {
    nlohmann::json m = nn::ModelMetrics(b.net, *in.data);
    m["spec"] = b.net->spec().ToJson();
    m["method"] = MethodName(method);
    m["context"] = b.context.ToJson();
    m["best_effort"] = b.best_effort;
    m["iterations"] = b.iterations;
    m["fine_tune_steps"] = b.steps;
    m["pruned_order"] = b.pruned_order;
    m["predicted"] = Predictions(b.net->spec(), all, *in.table);
    m["reference_ms"] = in.table->ModelMs(b.net->spec());
    const torch::Tensor val = Probabilities(*b.net, in.data->val);
    Threshold th = ChooseThreshold(val, base_val, labels, opts.accuracy_drop);
    Threshold test =
        ApplyThreshold(Probabilities(*b.net, in.data->test), base_test, test_labels, th.tau);
    m["threshold"] = {{"tau", th.tau},
                      {"val_offload_fraction", th.offload_fraction},
                      {"val_collaborative_accuracy", th.accuracy},
                      {"test_offload_fraction", test.offload_fraction},
                      {"test_collaborative_accuracy", test.accuracy},
                      {"curve", CurveJson(ThresholdCurve(val, base_val, labels, th.tau))}};
    const std::string dir = "branches/" + b.context.name;
    WriteModel((fs::path(repo) / dir).string(), b.net, m);
    const auto& own = m["predicted"][b.context.name];
    family["branches"].push_back({{"context", b.context.name},
                                  {"dir", dir},
                                  {"spec", b.net->spec().Summary()},
                                  {"budget_ms", b.context.budget_ms},
                                  {"latency_ms", own["latency_ms"]},
                                  {"energy_mj", own["energy_mj"]},
                                  {"best_effort", b.best_effort},
                                  {"val_accuracy", m["val_accuracy"]},
                                  {"test_accuracy", m["test_accuracy"]},
                                  {"params", m["params"]},
                                  {"macs", m["macs"]},
                                  {"bytes", m["bytes"]},
                                  {"threshold", m["threshold"]},
                                  {"fine_tune_steps", b.steps},
                                  {"pruned_order", b.pruned_order}});
    auto& traj = family["branches"].back()["trajectory"];
    traj = nlohmann::json::array();
    for (const auto& [spec, acc] : b.trajectory)
      traj.push_back({{"spec", spec.ToJson()}, {"val_subset_accuracy", acc}});
  }
  family["seconds"] =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  WriteFileAtomic((fs::path(repo) / kFamilyFile).string(), family.dump(1) + "\n");
  return family;
}

std::string FamilyTable(const nlohmann::json& family) {
  std::string out;
  char line[512];
  const auto& base = family.at("base");
  std::snprintf(
      line, sizeof line, "base %s: val %.2f%%, test %.2f%%, %lld params, %.1fM MACs, %.0f KB\n",
      base.at("spec").get<std::string>().c_str(), 100 * base.at("val_accuracy").get<double>(),
      100 * base.at("test_accuracy").get<double>(), base.at("params").get<long long>(),
      base.at("macs").get<double>() / 1e6, base.at("bytes").get<double>() / 1024);
  out += line;
  std::snprintf(line, sizeof line, "%-16s %9s %9s %9s  %-30s %6s %6s %6s %6s %5s %5s  %s\n",
                "context", "budget", "base", "branch", "widths", "KB", "MFLOP", "val%", "test%",
                "tau", "offl%", "first cuts");
  out += line;
  for (const auto& b : family.at("branches")) {
    const std::string ctx = b.at("context");
    const double base_ms = base.at("predicted").contains(ctx)
                               ? base.at("predicted").at(ctx).at("latency_ms").get<double>()
                               : NAN;
    std::string spec = b.at("spec");
    spec = spec.substr(spec.find(' ') + 1);
    std::string cuts;
    const auto& order = b.at("pruned_order");
    for (size_t k = 0; k < std::min<size_t>(3, order.size()); ++k)
      cuts += (k ? " " : "") + order[k].get<std::string>();
    std::snprintf(
        line, sizeof line,
        "%-16s %6.1f ms %6.1f ms %6.1f ms%s %-30s %6.0f %6.1f %6.2f %6.2f %5.2f %5.1f  %s\n",
        ctx.c_str(), b.at("budget_ms").get<double>(), base_ms, b.at("latency_ms").get<double>(),
        b.at("best_effort").get<bool>() ? "!" : " ", spec.c_str(),
        b.at("bytes").get<double>() / 1024, 2 * b.at("macs").get<double>() / 1e6,
        100 * b.at("val_accuracy").get<double>(), 100 * b.at("test_accuracy").get<double>(),
        std::min(1.0, b.at("threshold").at("tau").get<double>()),
        100 * b.at("threshold").at("val_offload_fraction").get<double>(), cuts.c_str());
    out += line;
  }
  out +=
      "(base, branch: predicted latency in the context; '!': best effort, budget not met; "
      "tau: confidence threshold; offl%: validation inputs it sends to the base model; first "
      "cuts: the units the search pruned first)\n";
  // Per network-bound trajectory (the contexts of one device and network): the
  // most accurate branch at <= 0.7x the base's predicted latency in its context.
  const double base_test = base.at("test_accuracy").get<double>();
  std::map<std::string, std::pair<double, std::string>> best;  // trajectory -> (test, branch)
  const auto& contexts = family.at("inputs").at("contexts");
  for (const auto& b : family.at("branches")) {
    const std::string ctx = b.at("context");
    if (!base.at("predicted").contains(ctx)) continue;
    const auto& bp = base.at("predicted").at(ctx);
    if (bp.at("download_ms").get<double>() <= bp.at("compute_ms").get<double>()) continue;
    std::string key;
    for (const auto& c : contexts)
      if (c.at("name") == ctx)
        key = c.at("device").get<std::string>() + "-" + c.at("network").get<std::string>();
    auto& [acc, name] = best.try_emplace(key, -1.0, "").first->second;
    if (b.at("latency_ms").get<double>() <= 0.7 * bp.at("latency_ms").get<double>() &&
        b.at("test_accuracy").get<double>() > acc)
      acc = b.at("test_accuracy").get<double>(), name = ctx;
  }
  for (const auto& [key, v] : best) {
    if (v.second.empty())
      std::snprintf(line, sizeof line,
                    "network-bound trajectory %-12s no branch at <= 0.7x the base's latency\n",
                    key.c_str());
    else
      std::snprintf(line, sizeof line,
                    "network-bound trajectory %-12s best branch at <= 0.7x the base's latency: %s "
                    "(%.2f%% test) against the base's %.2f%%: %s\n",
                    key.c_str(), v.second.c_str(), 100 * v.first, 100 * base_test,
                    v.first >= base_test ? "holds" : "does not hold");
    out += line;
  }
  return out;
}

}  // namespace da::prune
