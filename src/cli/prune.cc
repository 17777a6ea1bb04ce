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
  bool reuse = false, reuse_only = false;
  double budget_of_base = 0;  // > 0: budgets as this fraction of the base's predicted latency
  std::vector<uint64_t> seeds;  // bench prune: one family per method and seed
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
  cmd->add_option("--budget-of-base", f.budget_of_base,
                  "Replace each context's budget (and the standard ones') by this fraction of the "
                  "base model's predicted latency in it (0: keep them)")
      ->check(CLI::Range(0.0, 10.0));
  AddSearchOptions(cmd, f.search, f.importance);
  cmd->add_flag("--reuse", f.reuse, "Keep a complete output built from the same inputs");
}

}  // namespace

void AddSearchOptions(CLI::App* cmd, prune::SearchOptions& search, std::string& importance) {
  cmd->add_option("--importance", importance, "Channel importance: l1, bn, taylor")
      ->capture_default_str();
  cmd->add_option("--step", search.step,
                  "Objective cut per iteration (fraction of the current model's)")
      ->capture_default_str();
  cmd->add_option("--short-steps", search.short_steps, "Short-term fine-tune batches per candidate")
      ->capture_default_str();
  cmd->add_option("--long-epochs", search.long_epochs, "Long-term fine-tune epochs per branch")
      ->capture_default_str();
  cmd->add_option("--long-lr", search.long_lr,
                  "Long-term fine-tunes' learning rate (cosine to 0 from this)")
      ->capture_default_str();
  cmd->add_option("--val-images", search.val_images, "Validation images scoring candidates")
      ->capture_default_str();
  cmd->add_option("--min-width", search.min_width,
                  "Narrowest unit, as a fraction of its base width")
      ->capture_default_str();
  cmd->add_option("--accuracy-drop", search.accuracy_drop,
                  "Thresholds keep collaborative validation accuracy >= base - this")
      ->capture_default_str();
  cmd->add_option("--distill-weight", search.distill_weight,
                  "Long-term fine-tunes learn from the base's softened outputs with this weight "
                  "(0: labels only)")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 1.0));
  cmd->add_option("--distill-temperature", search.distill_temperature,
                  "Softening temperature of the base's outputs")
      ->capture_default_str()
      ->check(CLI::Range(0.01, 100.0));
  cmd->add_option("--long-augment", search.long_augment,
                  "Long-term fine-tunes crop and flip their batches (false: the plain images)")
      ->default_str(search.long_augment ? "true" : "false");
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
  if (f.budget_of_base > 0) {
    const nn::ModelSpec spec = nn::ModelSpec::FromJson(
        nlohmann::json::parse(ReadFile((fs::path(f.base) / nn::kSpecFile).string())));
    const double ref = l->table.ModelMs(spec);
    const int64_t bytes = nn::OnnxBytes(spec);
    for (auto* list : {&l->contexts, &l->standard})
      for (context::Context& c : *list)
        c.budget_ms = f.budget_of_base * context::Predict(c, ref, bytes).total_ms;
  }
  std::string data_dir = f.data;
  if (data_dir.empty()) data_dir = nn::ReadMetrics(f.base).value("data_dir", nn::kFashionMnistDir);
  l->data = nn::LoadDataset(data_dir);
  if (f.search.train.limit > 0) l->data.train = l->data.train.First(f.search.train.limit);
  l->inputs = {f.base, l->contexts, l->standard, &l->table, &l->data};
  return l;
}

double Num(const nlohmann::json& j, const char* k) { return j.at(k).get<double>(); }

using prune::Method;
using Families = std::map<Method, nlohmann::json>;
const Method kMethods[] = {Method::kContextAware, Method::kUniform, Method::kMacsOnly};

// The three methods' families for `search` in DIR/<method>.
Families BuildFamilies(const Loaded& l, const prune::SearchOptions& search, const fs::path& dir,
                       bool reuse) {
  Families fam;
  auto at = [&](Method m) { return (dir / prune::MethodName(m)).string(); };
  fam[Method::kContextAware] =
      prune::BuildFamily(l.inputs, search, Method::kContextAware, at(Method::kContextAware), reuse);
  // The baselines get the fine-tuning budget context-aware spent on each context.
  std::vector<int64_t> steps;
  for (const auto& b : fam[Method::kContextAware]["branches"])
    steps.push_back(b["fine_tune_steps"]);
  fam[Method::kUniform] =
      prune::BuildFamily(l.inputs, search, Method::kUniform, at(Method::kUniform), reuse, &steps);
  fam[Method::kMacsOnly] =
      prune::BuildFamily(l.inputs, search, Method::kMacsOnly, at(Method::kMacsOnly), reuse);
  return fam;
}

// The 97.5% quantile of Student's t with `df` degrees of freedom.
double T975(int64_t df) {
  static const double table[] = {12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306,
                                 2.262,  2.228, 2.201, 2.179, 2.160, 2.145, 2.131};
  if (df < 1) return INFINITY;
  if (df <= 15) return table[df - 1];
  const double z = 1.959964, d = static_cast<double>(df);  // Cornish-Fisher expansion
  return z + (z * z * z + z) / (4 * d) +
         (5 * std::pow(z, 5) + 16 * z * z * z + 3 * z) / (96 * d * d);
}

// Mean and half-width of the 95% t interval of `d` (infinite for fewer than 2).
std::pair<double, double> MeanCi(const std::vector<double>& d) {
  const double n = double(d.size());
  double mean = 0, var = 0;
  for (double x : d) mean += x / n;
  for (double x : d) var += (x - mean) * (x - mean) / std::max(1.0, n - 1);
  return {mean, d.size() > 1 ? T975(int64_t(d.size()) - 1) * std::sqrt(var / n) : INFINITY};
}

// Per context and method the mean test accuracy over seeds; context-aware's
// paired differences to each baseline with 95% confidence intervals,
// network- and compute-bound apart: a paired t-test over (context, seed)
// pairs, and one over seeds of each seed's mean difference (contexts of one
// seed share searches, so their differences are not independent; the seed
// test does not assume they are).
void ReportSeeds(const Loaded& l, const PruneFlags& f, const std::vector<Families>& runs) {
  const size_t nc = l.contexts.size(), ns = runs.size();
  std::printf("\n%zu seeds: mean test accuracy (%%) over seeds\n", ns);
  std::printf("%-16s %-8s %14s %10s %10s %10s %10s\n", "context", "bound", "context-aware",
              "uniform", "macs-only", "ca - uni", "ca - macs");
  std::vector<bool> net_bound(nc);
  for (size_t i = 0; i < nc; ++i) {
    const auto& bp = runs[0].at(Method::kContextAware)["base"]["predicted"].at(l.contexts[i].name);
    net_bound[i] = Num(bp, "download_ms") > Num(bp, "compute_ms");
    double mean[3] = {0, 0, 0};
    for (int k = 0; k < 3; ++k)
      for (const Families& r : runs)
        mean[k] += 100 * Num(r.at(kMethods[k])["branches"][i], "test_accuracy") / double(ns);
    std::printf("%-16s %-8s %14.2f %10.2f %10.2f %+10.2f %+10.2f\n", l.contexts[i].name.c_str(),
                net_bound[i] ? "network" : "compute", mean[0], mean[1], mean[2], mean[0] - mean[1],
                mean[0] - mean[2]);
  }
  std::printf(
      "\ncontext-aware minus each baseline, points of test accuracy: mean and 95%% CI, by a "
      "paired t-test over (context, seed) pairs and over seeds (each seed's mean difference)\n");
  std::vector<Series> plot = {{"minus uniform", "#1f77b4", {}, {}},
                              {"minus macs-only", "#2ca02c", {}, {}}};
  bool goal = true;
  for (int group = 0; group < 2; ++group) {  // 0: network-bound, 1: compute-bound
    for (int k = 1; k < 3; ++k) {
      std::vector<double> d, by_seed;
      for (const Families& r : runs) {
        double sum = 0;
        int n = 0;
        for (size_t i = 0; i < nc; ++i) {
          if (net_bound[i] != (group == 0)) continue;
          const double x = 100 * (Num(r.at(Method::kContextAware)["branches"][i], "test_accuracy") -
                                  Num(r.at(kMethods[k])["branches"][i], "test_accuracy"));
          d.push_back(x);
          sum += x;
          ++n;
        }
        if (n > 0) by_seed.push_back(sum / n);
      }
      if (d.empty()) continue;
      const auto [mean, half] = MeanCi(d);
      const auto [seed_mean, seed_half] = MeanCi(by_seed);
      std::printf(
          "  %-14s %-10s %+6.2f  pairs [%+.2f, %+.2f] n = %zu;  seeds [%+.2f, %+.2f] n = %zu\n",
          group == 0 ? "network-bound" : "compute-bound", k == 1 ? "uniform" : "macs-only", mean,
          mean - half, mean + half, d.size(), seed_mean - seed_half, seed_mean + seed_half,
          by_seed.size());
      if (group == 0) goal = goal && mean - half > 0;
      plot[size_t(k - 1)].x.push_back(group + (k == 1 ? -0.1 : 0.1));
      plot[size_t(k - 1)].y.push_back(mean);
      plot[size_t(k - 1)].err.push_back(half);
    }
  }
  std::printf("goal: in network-bound contexts both (context, seed) intervals above zero (%s)\n",
              goal ? "met" : "NOT met");
  const std::string svg = (fs::path(f.out) / "prune-seeds.svg").string();
  WriteFileAtomic(
      svg, SvgPlot("Context-aware minus baselines, mean and 95% CI over (context, seed)",
                   "0: network-bound contexts, 1: compute-bound", "test accuracy points", plot));
  std::printf("plot: %s\n", svg.c_str());
}

void BenchPrune(PruneFlags& f) {
  auto l = Load(f);
  if (!f.seeds.empty()) {
    std::vector<Families> runs;
    for (uint64_t seed : f.seeds) {
      prune::SearchOptions search = f.search;
      search.train.seed = seed;
      std::printf("seed %llu\n", (unsigned long long)seed);
      runs.push_back(
          BuildFamilies(*l, search, fs::path(f.out) / ("seed-" + std::to_string(seed)), f.reuse));
    }
    ReportSeeds(*l, f, runs);
    return;
  }
  Families fam = BuildFamilies(*l, f.search, f.out, f.reuse);

  const auto& base = fam[Method::kContextAware]["base"];
  std::printf("base %s: test %.2f%%; contexts from %s\n", base["spec"].get<std::string>().c_str(),
              100 * Num(base, "test_accuracy"),
              (f.contexts.empty() ? f.standard : f.contexts).c_str());
  const auto& methods = kMethods;
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
  cmd->add_flag("--reuse-only", f->reuse_only,
                "Read the output if it was built from the same inputs, else fail (build nothing)");
  cmd->callback([f] {
    auto l = Load(*f);
    if (f->reuse_only &&
        !prune::FamilyIsCurrent(l->inputs, f->search, prune::Method::kContextAware, f->out))
      throw UserError(f->out +
                      ": missing or built from other inputs (base weights, contexts, "
                      "search options, latency table or data)");
    nlohmann::json family =
        f->reuse_only ? prune::ReadFamily(f->out)
                      : prune::BuildFamily(l->inputs, f->search, prune::Method::kContextAware,
                                           f->out, f->reuse);
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
  cmd->add_option("--seeds", f->seeds,
                  "Several seeds: families in OUT/seed-N/ (kept with --reuse, so a long comparison "
                  "can span runs), mean accuracy and paired 95% intervals")
      ->delimiter(',');
  cmd->callback([f] { BenchPrune(*f); });
}

}  // namespace da::cli
