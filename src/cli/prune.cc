// deepadapter prune / predict / bench prune: branch-model families from a base
// model, predicted latency and energy of models in contexts, and the pruning
// benchmark against two baselines.
#include <algorithm>
#include <cmath>
#include <filesystem>

#include "cli/commands.h"
#include "common/error.h"
#include "common/fs.h"
#include "common/plot.h"
#include "common/progress.h"
#include "context/predictor.h"
#include "nn/model_dir.h"
#include "nn/onnx_export.h"
#include "prune/family.h"

namespace da::cli {
namespace {
namespace fs = std::filesystem;

struct PruneFlags {
  std::string base, contexts, standard = SourcePath("profiles/contexts.json"), out;
  std::string profiles = SourcePath("profiles"), table = SourcePath("profiles/latency.json");
  std::string data, importance = "l1";
  prune::SearchOptions search;
  bool reuse = false;
};

void AddPruneOptions(CLI::App* cmd, PruneFlags& f) {
  cmd->add_option("--base", f.base, "Trained base model directory")->required();
  cmd->add_option("--contexts", f.contexts, "Contexts to make branches for (default: --standard)");
  cmd->add_option("--standard", f.standard, "Standard contexts (predictions recorded for each)")
      ->capture_default_str();
  cmd->add_option("--out", f.out, "Output directory")->required();
  cmd->add_option("--profiles", f.profiles, "Device and network profiles directory")
      ->capture_default_str();
  cmd->add_option("--table", f.table, "Latency table")->capture_default_str();
  cmd->add_option("--data", f.data, "Dataset directory (default: the base model's)");
  AddSearchOptions(cmd, f.search, f.importance);
  cmd->add_flag("--reuse", f.reuse, "Keep a complete output built from the same inputs");
}

}  // namespace

void AddSearchOptions(CLI::App* cmd, prune::SearchOptions& search, std::string& importance) {
  cmd->add_option("--importance", importance, "Channel importance: l1, bn, taylor")
      ->capture_default_str();
  cmd->add_option("--step", search.step, "Objective cut per iteration (fraction of the current model's)")
      ->capture_default_str();
  cmd->add_option("--short-steps", search.short_steps,
                  "Short-term fine-tune batches per candidate")
      ->capture_default_str();
  cmd->add_option("--long-epochs", search.long_epochs, "Long-term fine-tune epochs per branch")
      ->capture_default_str();
  cmd->add_option("--val-images", search.val_images, "Validation images scoring candidates")
      ->capture_default_str();
  cmd->add_option("--min-width", search.min_width,
                  "Narrowest unit, as a fraction of its base width")
      ->capture_default_str();
  cmd->add_option("--accuracy-drop", search.accuracy_drop,
                  "Thresholds keep collaborative validation accuracy >= base - this")
      ->capture_default_str();
  cmd->add_option("--limit", search.train.limit,
                  "Fine-tune on the first N training images (0: all)")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--threads", search.train.threads, "Threads (0: all cores)")
      ->capture_default_str()
      ->check(CLI::Range(0, 1024));
  cmd->add_option("--seed", search.train.seed, "Random seed")->capture_default_str();
}

namespace {
struct Loaded {
  context::Profiles profiles;
  context::LatencyTable table;
  std::vector<context::Context> contexts, standard;
  nn::Dataset data;
  prune::FamilyInputs inputs;
};

std::unique_ptr<Loaded> Load(PruneFlags& f) {
  auto l = std::make_unique<Loaded>();
  f.search.importance = prune::ParseImportance(f.importance);
  f.search.Validate();
  l->profiles = context::Profiles::Load(f.profiles);
  l->table = context::LatencyTable::Load(f.table);
  l->standard = context::LoadContexts(f.standard, l->profiles);
  l->contexts = f.contexts.empty() ? l->standard : context::LoadContexts(f.contexts, l->profiles);
  if (!fs::is_directory(f.base)) throw UserError(f.base + ": model directory not found");
  std::string data_dir = f.data;
  if (data_dir.empty()) data_dir = nn::ReadMetrics(f.base).value("data_dir", nn::kFashionMnistDir);
  l->data = nn::LoadDataset(data_dir);
  if (f.search.train.limit > 0) l->data.train = l->data.train.First(f.search.train.limit);
  l->inputs = {f.base, l->contexts, l->standard, &l->table, &l->data};
  return l;
}

double Num(const nlohmann::json& j, const char* k) { return j.at(k).get<double>(); }

void BenchPrune(PruneFlags& f) {
  auto l = Load(f);
  using prune::Method;
  std::map<Method, nlohmann::json> fam;
  auto dir = [&](Method m) { return (fs::path(f.out) / prune::MethodName(m)).string(); };
  fam[Method::kContextAware] = prune::BuildFamily(l->inputs, f.search, Method::kContextAware,
                                                  dir(Method::kContextAware), f.reuse);
  // The baselines get the fine-tuning budget context-aware spent on each context.
  std::vector<int64_t> steps;
  for (const auto& b : fam[Method::kContextAware]["branches"])
    steps.push_back(b["fine_tune_steps"]);
  fam[Method::kUniform] = prune::BuildFamily(l->inputs, f.search, Method::kUniform,
                                             dir(Method::kUniform), f.reuse, &steps);
  fam[Method::kMacsOnly] =
      prune::BuildFamily(l->inputs, f.search, Method::kMacsOnly, dir(Method::kMacsOnly), f.reuse);

  const auto& base = fam[Method::kContextAware]["base"];
  std::printf("base %s: test %.2f%%; contexts from %s\n", base["spec"].get<std::string>().c_str(),
              100 * Num(base, "test_accuracy"),
              (f.contexts.empty() ? f.standard : f.contexts).c_str());
  const Method methods[] = {Method::kContextAware, Method::kUniform, Method::kMacsOnly};
  std::map<Method, std::vector<double>> acc, ratio;
  std::map<Method, Series> series;
  const char* colors[] = {"#d62728", "#1f77b4", "#2ca02c"};
  for (int k = 0; k < 3; ++k)
    series[methods[k]] = {prune::MethodName(methods[k]), colors[k], {}, {}};
  std::vector<bool> network_bound;
  for (size_t i = 0; i < l->contexts.size(); ++i) {
    const context::Context& c = l->contexts[i];
    // The family records the base's prediction in every context it was built for.
    const auto& bp = base["predicted"].at(c.name);
    const double base_ms = Num(bp, "latency_ms");
    const bool net_bound = Num(bp, "download_ms") > Num(bp, "compute_ms");
    network_bound.push_back(net_bound);
    std::printf("\n%s (%s, %s, budget %.1f ms, %d inferences/download; base %.1f ms, %s-bound)\n",
                c.name.c_str(), c.device.c_str(), c.network.c_str(), c.budget_ms,
                static_cast<int>(c.inferences), base_ms, net_bound ? "network" : "compute");
    std::printf("  %-14s %-36s %9s %8s %8s %8s %8s\n", "method", "widths", "latency", "KB",
                "MFLOPs", "val%", "test%");
    for (Method m : methods) {
      const auto& b = fam[m]["branches"][i];
      std::string spec = b["spec"];
      spec = spec.substr(spec.find(' ') + 1);
      std::printf("  %-14s %-36s %6.2f ms%s %8.0f %8.2f %8.2f %8.2f\n",
                  prune::MethodName(m).c_str(), spec.c_str(), Num(b, "latency_ms"),
                  b["best_effort"].get<bool>() ? "!" : " ", Num(b, "bytes") / 1024,
                  2 * Num(b, "macs") / 1e6, 100 * Num(b, "val_accuracy"),
                  100 * Num(b, "test_accuracy"));
      acc[m].push_back(Num(b, "test_accuracy"));
      ratio[m].push_back(Num(b, "latency_ms") / c.budget_ms);
      series[m].x.push_back(Num(b, "latency_ms") / base_ms);
      series[m].y.push_back(100 * Num(b, "test_accuracy"));
    }
  }
  auto mean = [](const std::vector<double>& v) {
    double s = 0;
    for (double x : v) s += x;
    return v.empty() ? 0 : s / static_cast<double>(v.size());
  };
  std::printf("\n%-14s %14s %22s\n", "method", "mean test %", "mean latency / budget");
  for (Method m : methods)
    std::printf("%-14s %14.2f %22.3f\n", prune::MethodName(m).c_str(), 100 * mean(acc[m]),
                mean(ratio[m]));
  const double gain = 100 * (mean(acc[Method::kContextAware]) - mean(acc[Method::kUniform]));
  bool not_slower = true;
  for (size_t i = 0; i < l->contexts.size(); ++i)
    not_slower = not_slower && ratio[Method::kContextAware][i] <=
                                   std::max(1.0, ratio[Method::kUniform][i]) + 1e-9;
  std::printf(
      "context-aware vs uniform: %+.2f points mean test accuracy, latency within budget where "
      "uniform's is: %s\n",
      gain, not_slower ? "yes" : "no");
  std::printf("goal: >= +0.5 points at equal or lower predicted latency (%s)\n",
              gain >= 0.5 && not_slower ? "met" : "NOT met");
  // Network-bound contexts: the latency MACs-only needs to reach context-aware's
  // accuracy, both read off their trajectories (short-term fine-tuned models).
  std::printf("\nnetwork-bound contexts: predicted latency at equal accuracy (trajectories)\n");
  int wins = 0, total = 0;
  for (size_t i = 0; i < l->contexts.size(); ++i) {
    const context::Context& c = l->contexts[i];
    if (!network_bound[i]) continue;
    const auto& aware = fam[Method::kContextAware]["branches"][i];
    const auto& traj_a = aware["trajectory"];
    const nlohmann::json* point = nullptr;  // the aware branch's own checkpoint
    for (const auto& p : traj_a)
      if (nn::ModelSpec::FromJson(p["spec"]).Summary() == aware["spec"].get<std::string>())
        point = &p;
    if (!point) continue;
    const double a_acc = Num(*point, "val_subset_accuracy"), a_ms = Num(aware, "latency_ms");
    double m_ms = INFINITY;
    for (const auto& p : fam[Method::kMacsOnly]["branches"][i]["trajectory"])
      if (Num(p, "val_subset_accuracy") >= a_acc)
        m_ms = std::min(m_ms,
                        context::Predict(c, l->table, nn::ModelSpec::FromJson(p["spec"])).total_ms);
    ++total;
    wins += a_ms < m_ms;
    char macs[48] = "never reaches that accuracy";
    if (std::isfinite(m_ms)) std::snprintf(macs, sizeof macs, "%.2f ms", m_ms);
    std::printf("  %-16s accuracy %.2f%%: context-aware %.2f ms, macs-only %s\n", c.name.c_str(),
                100 * a_acc, a_ms, macs);
  }
  std::printf("goal: context-aware lower in every network-bound context (%d of %d: %s)\n", wins,
              total, total > 0 && wins == total ? "met" : "NOT met");
  std::vector<Series> plot;
  for (Method m : methods) plot.push_back(series[m]);
  const std::string svg = (fs::path(f.out) / "prune.svg").string();
  WriteFileAtomic(
      svg,
      SvgPlot("Branch models: accuracy vs predicted latency (one point per context)",
              "predicted latency / base model's in the same context", "test accuracy (%)", plot));
  std::printf("plot: %s\n", svg.c_str());
}

}  // namespace

void AddPrune(CLI::App& app) {
  auto f = std::make_shared<PruneFlags>();
  auto* cmd = app.add_subcommand(
      "prune", "Context-aware pruning: one branch model per context, from a trained base model");
  AddPruneOptions(cmd, *f);
  cmd->callback([f] {
    auto l = Load(*f);
    nlohmann::json family =
        prune::BuildFamily(l->inputs, f->search, prune::Method::kContextAware, f->out, f->reuse);
    std::printf("%s%s: %zu branch models, built in %s\n", prune::FamilyTable(family).c_str(),
                f->out.c_str(), family["branches"].size(),
                Progress::FormatDuration(family["seconds"].get<double>()).c_str());
  });

  struct PredictFlags {
    std::vector<std::string> models;
    std::string contexts = SourcePath("profiles/contexts.json");
    std::string profiles = SourcePath("profiles"), table = SourcePath("profiles/latency.json");
  };
  auto p = std::make_shared<PredictFlags>();
  auto* pred = app.add_subcommand(
      "predict", "Predicted latency and energy of models in contexts (no measurement)");
  pred->add_option("models", p->models, "Model directories")->required();
  pred->add_option("--contexts", p->contexts, "Contexts file")->capture_default_str();
  pred->add_option("--profiles", p->profiles, "Profiles directory")->capture_default_str();
  pred->add_option("--table", p->table, "Latency table")->capture_default_str();
  pred->callback([p] {
    auto profiles = context::Profiles::Load(p->profiles);
    auto table = context::LatencyTable::Load(p->table);
    auto contexts = context::LoadContexts(p->contexts, profiles);
    for (const std::string& dir : p->models) {
      nn::ModelSpec spec = nn::LoadModelDir(dir)->spec();
      std::printf("%s (%s): %s bytes, %.3f ms on the reference runtime\n", dir.c_str(),
                  spec.Summary().c_str(), Thousands(nn::OnnxBytes(spec)).c_str(),
                  table.ModelMs(spec));
      std::printf("  %-16s %10s %10s %10s %10s %10s\n", "context", "budget", "latency", "download",
                  "compute", "energy");
      for (const auto& c : contexts) {
        auto r = context::Predict(c, table, spec);
        std::printf("  %-16s %7.1f ms %7.2f ms %7.2f ms %7.2f ms %7.1f mJ%s\n", c.name.c_str(),
                    c.budget_ms, r.total_ms, r.download_ms, r.compute_ms, r.energy_mj,
                    r.total_ms <= c.budget_ms ? "" : "  over budget");
      }
    }
  });
}

void AddPruneBench(CLI::App& bench) {
  auto f = std::make_shared<PruneFlags>();
  auto* cmd = bench.add_subcommand(
      "prune",
      "Context-aware pruning vs uniform L1 and MACs-only pruning at the same predicted latency");
  AddPruneOptions(cmd, *f);
  cmd->callback([f] { BenchPrune(*f); });
}

}  // namespace da::cli
