// deepadapter bench system: the paper's headline comparison on our models
// (sim/system_sim.h): eight schemes on one workload of users, with every answer
// from the real models on real test images.
#include "cli/bench_system.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include "cli/commands.h"
#include "common/error.h"
#include "common/fs.h"
#include "common/plot.h"
#include "common/process.h"
#include "common/progress.h"
#include "common/sha256.h"
#include "context/latency.h"
#include "infer/batcher.h"
#include "nn/dataset.h"
#include "nn/model_dir.h"
#include "nn/train.h"
#include "prune/family.h"
#include "sim/system_sim.h"

namespace da::cli {
namespace {
namespace fs = std::filesystem;

// A model's answers on the images, cached in OUT/answers by the hash of its
// weights and the image count.
sim::SystemModel Answers(const std::string& dir, const std::string& id, const nn::Images& images,
                         int classes, const std::string& cache_dir) {
  const nlohmann::json m = nn::ReadMetrics(dir);
  sim::SystemModel s;
  s.id = id;
  s.bytes = m.at("bytes");
  s.reference_ms = m.at("reference_ms");
  s.val_accuracy = m.at("val_accuracy");
  s.threshold = m.contains("threshold") ? m["threshold"].value("tau", 0.0) : 0.0;
  try {
    if (m.contains("threshold")) s.curve = edge::ParseCurve(m["threshold"], s.val_accuracy);
  } catch (const UserError& e) {
    throw UserError(dir + "/metrics.json: " + e.what());
  }
  const std::string key =
      Sha256Hex(ReadFile((fs::path(dir) / "weights.pt").string())).substr(0, 16) + "-" +
      std::to_string(images.count);
  const std::string path = (fs::path(cache_dir) / (id + "-" + key + ".json")).string();
  if (fs::exists(path)) {
    const nlohmann::json j = nlohmann::json::parse(ReadFile(path));
    s.predicted = j.at("predicted").get<std::vector<int64_t>>();
    s.top = j.at("top").get<std::vector<float>>();
    return s;
  }
  nn::Net net = nn::LoadModelDir(dir);
  nn::EvalResult r = nn::Evaluate(net, images, classes);
  s.predicted = r.predicted, s.top = r.top;
  WriteFileAtomic(path, nlohmann::json{{"predicted", s.predicted}, {"top", s.top}}.dump());
  return s;
}

// The places the base can be cut: after each layer whose output is the only
// tensor still needed, plus "nothing on the phone".
std::vector<sim::Split> Splits(const nn::ModelSpec& spec, const context::LatencyTable& table) {
  const std::vector<context::KeyedLayer> layers = context::KeyedLayers(spec);
  std::vector<double> ms;
  std::vector<int64_t> params;
  double total_ms = 0;
  int64_t total_params = 0;
  for (const auto& k : layers) {
    const nn::Layer& l = k.layer;
    int64_t p = 0;
    if (l.kind == nn::Layer::Kind::kConv)
      p = int64_t{l.in_ch} * l.out_ch * l.kernel * l.kernel + l.out_ch;
    if (l.kind == nn::Layer::Kind::kLinear) p = int64_t{l.in_ch} * l.out_ch + l.out_ch;
    ms.push_back(table.LayerMs(k)), params.push_back(p);
    total_ms += ms.back(), total_params += p;
  }
  std::vector<sim::Split> out = {{0, 0, int64_t{spec.channels} * spec.height * spec.width}};
  double head_ms = 0;
  int64_t head_params = 0;
  for (size_t i = 0; i < layers.size(); ++i) {
    head_ms += ms[i], head_params += params[i];
    // Values are numbered: 0 the input, i + 1 layer i's output.
    bool alone = true;
    for (size_t j = i + 1; j < layers.size(); ++j) {
      const nn::Layer& l = layers[j].layer;
      for (int v : {l.input, l.input2})
        if (v >= 0 && v <= static_cast<int>(i)) alone = false;  // an older value still needed
    }
    if (!alone) continue;
    const nn::Layer& l = layers[i].layer;
    const bool last = i + 1 == layers.size();
    out.push_back({last ? 1.0 : head_ms / total_ms,
                   last ? 1.0 : double(head_params) / double(std::max<int64_t>(1, total_params)),
                   last ? 0 : 4 * int64_t{l.out_ch} * l.out_h * l.out_w});
  }
  return out;
}

// The base model's batch service times on the servers' inference path.
sim::ServiceCurve MeasureService(const std::string& base_dir, int max_batch) {
  infer::BatchOptions o;
  o.enabled = false;  // each Submit is one forward pass of its images
  o.max_batch = max_batch;
  infer::Batcher b(ReadFile((fs::path(base_dir) / "model.onnx").string()), o);
  const int64_t pixels = int64_t{b.shape().channels} * b.shape().height * b.shape().width;
  sim::ServiceCurve curve;
  for (int n : {1, 8, 32, 64}) {
    if (n > max_batch) break;
    std::vector<double> ms;
    for (int i = 0; i < 25; ++i) {
      auto t0 = std::chrono::steady_clock::now();
      b.Submit(std::vector<float>(static_cast<size_t>(pixels * n), 0.5f), n).get();
      ms.push_back(
          std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
    }
    std::sort(ms.begin(), ms.end());
    curve.batch.push_back(n);
    curve.ms.push_back(ms[ms.size() / 2]);
  }
  return curve;
}

}  // namespace

void AddSystemBench(CLI::App& bench) {
  auto f = std::make_shared<SystemFlags>();
  auto* cmd = bench.add_subcommand(
      "system",
      "The system evaluation: mobile-only, edge-only, cloud-only, static, Neurosurgeon-style "
      "split and DeepAdapter on one workload of users (latency, mobile energy, throughput, "
      "accuracy, offload share, cache hit rate)");
  cmd->add_option("--family", f->family, "Family made by prune")->required();
  cmd->add_option("--out", f->out, "Results folder (JSON, Markdown, SVG; answers cached)")
      ->required();
  cmd->add_option("--users", f->users, "Users")
      ->capture_default_str()
      ->check(CLI::Range(1, 1000000));
  cmd->add_option("--images", f->images, "Test images used (0: all)")
      ->capture_default_str()
      ->check(CLI::Range(int64_t{0}, int64_t{1} << 30));
  cmd->add_option("--seed", f->seed, "Random seed")->capture_default_str();
  cmd->add_option("--workload", f->workload, "Workload file")->capture_default_str();
  cmd->add_option("--profiles", f->profiles, "Profiles folder")->capture_default_str();
  cmd->add_option("--table", f->table, "Latency table (for split points)")->capture_default_str();
  cmd->add_option("--data", f->data, "Dataset folder")->capture_default_str();
  cmd->add_option("--cache-fraction", f->cache_fraction,
                  "DeepAdapter's edge cache, a fraction of the branches' bytes")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 1.0));
  cmd->add_option("--max-batch", f->max_batch, "Servers' largest batch")
      ->capture_default_str()
      ->check(CLI::Range(1, 4096));
  cmd->add_option("--live-seconds", f->live_seconds,
                  "Seconds per scheme driving running services (cloud and edge on loopback) "
                  "with emulated phones; 0 skips it")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 600.0));
  cmd->add_option("--clients", f->clients, "Emulated phones in the live run")
      ->capture_default_str()
      ->check(CLI::Range(1, 2000));
  cmd->add_flag("--browser", f->browser,
                "Also check the simulator against the demo page in headless Chromium (CPU "
                "throttling and network emulation per context): predicted against measured "
                "download and per-request latency");
  cmd->add_option("--browser-contexts", f->browser_contexts,
                  "Standard contexts visited (profiles/contexts.json)")
      ->delimiter(',')
      ->capture_default_str();
  cmd->add_option("--browser-images", f->browser_images, "Test images classified per visit")
      ->capture_default_str()
      ->check(CLI::Range(4, 1000));
  cmd->add_option("--static-model", f->static_model,
                  "The static scheme's branch (default: chosen on validation, as the matcher "
                  "would choose one branch for every user)");
  cmd->callback([f] {
    const context::Profiles profiles = context::Profiles::Load(f->profiles);
    const sim::Workload workload = sim::Workload::Load(f->workload, profiles);
    const context::LatencyTable table = context::LatencyTable::Load(f->table);
    const nlohmann::json fam = prune::ReadFamily(f->family);
    nn::Dataset data = nn::LoadDataset(f->data);
    if (f->images > 0) data.test = data.test.First(f->images);
    fs::create_directories(fs::path(f->out) / "answers");
    const std::string answers = (fs::path(f->out) / "answers").string();

    sim::SystemInput in;
    const std::string base_dir =
        (fs::path(f->family) / fam.at("base").at("dir").get<std::string>()).string();
    const auto& branches = fam.at("branches");
    Progress progress("answers on " + std::to_string(data.test.count) + " test images",
                      static_cast<int64_t>(branches.size()) + 1);
    in.base = Answers(base_dir, "base", data.test, data.Classes(), answers);
    progress.Update(1);
    for (const auto& b : branches) {
      in.branches.push_back(Answers((fs::path(f->family) / b.at("dir").get<std::string>()).string(),
                                    b.at("context"), data.test, data.Classes(), answers));
      progress.Update(static_cast<int64_t>(in.branches.size()) + 1);
    }
    progress.Finish();
    for (uint8_t l : data.test.labels) in.labels.push_back(l);
    in.splits = Splits(
        nn::ModelSpec::FromJson(nlohmann::json::parse(ReadFile(base_dir + "/spec.json"))), table);
    in.image_bytes = data.test.PixelsPerImage();
    std::printf("measuring the base model's batch service time (the servers' inference path)\n");
    in.edge = in.cloud = MeasureService(base_dir, f->max_batch);
    in.max_batch = f->max_batch;
    in.batch_delay_ms = infer::BatchOptions().max_delay.count() / 1000.0;  // the services' default
    in.cache_fraction = f->cache_fraction;
    in.static_model = f->static_model;
    for (size_t i = 0; i < in.edge.batch.size(); ++i)
      std::printf("  batch %3d: %8.3f ms (%7.0f images/s)\n", in.edge.batch[i], in.edge.ms[i],
                  1000.0 * in.edge.batch[i] / in.edge.ms[i]);

    const std::vector<sim::User> users =
        sim::MakeUsers(workload, profiles, f->users, data.test.count, f->seed);
    size_t requests = 0;
    for (const auto& u : users) requests += u.t.size();
    std::printf("%d users, %zu requests over %.0f s\n", f->users, requests, users.back().t.front());
    if (in.static_model.empty()) {
      in.static_model = sim::ChooseStatic(in, users, in.match_margin);
      std::printf("static: %s, the most expected correct answers within budget on validation\n",
                  in.static_model.c_str());
    }
    const std::vector<sim::SchemeResult> rs = sim::SimulateSystem(in, workload, users);
    // Static at every branch size: the curve any single branch can reach.
    std::vector<sim::SchemeResult> statics;
    for (const auto& b : in.branches) {
      sim::SystemInput one = in;
      one.static_model = b.id;
      statics.push_back(sim::SimulateSystem(one, workload, users, {"static"}).front());
      statics.back().scheme = "static " + b.id;
    }
    std::sort(statics.begin(), statics.end(),
              [](const auto& a, const auto& b) { return a.mean_ms < b.mean_ms; });
    // The share of requests answered within their user's budget.
    auto in_budget = [&](const sim::SchemeResult& r) {
      size_t k = 0, ok = 0;
      for (const auto& u : users)
        for (size_t i = 0; i < u.t.size(); ++i, ++k) ok += r.latency_ms[k] <= u.c.budget_ms;
      return double(ok) / double(k);
    };

    std::string table_md =
        "| scheme | mean latency (ms) | p95 (ms) | energy/request (mJ) | throughput (req/s) | "
        "bottleneck | accuracy (%) | offload | hit rate | in budget |\n"
        "|---|---|---|---|---|---|---|---|---|---|\n";
    std::printf("\n%-18s %10s %10s %12s %12s %-14s %9s %8s %8s %9s\n", "scheme", "mean ms",
                "p95 ms", "energy mJ", "req/s", "bottleneck", "acc %", "offload", "hit",
                "in budget");
    nlohmann::json out = nlohmann::json::array();
    std::vector<const sim::SchemeResult*> rows;
    for (const auto& r : rs) rows.push_back(&r);
    for (const auto& r : statics) rows.push_back(&r);
    for (const sim::SchemeResult* row : rows) {
      const sim::SchemeResult& r = *row;
      if (&r == &statics.front()) {
        table_md += "| *static at every branch size* |||||||||| \n";
        std::printf("static at every branch size:\n");
      }
      const double ok = in_budget(r);
      std::printf("%-18s %10.2f %10.2f %12.2f %12.0f %-14s %9.2f %7.1f%% %8s %8.1f%%\n",
                  r.scheme.c_str(), r.mean_ms, r.p95_ms, r.energy_mj, r.throughput,
                  r.bottleneck.c_str(), 100 * r.accuracy, 100 * r.offload,
                  r.hit_rate < 0 ? "-" : Fmt("%.1f%%", 100 * r.hit_rate).c_str(), 100 * ok);
      table_md += "| " + r.scheme + " | " + Fmt("%.2f", r.mean_ms) + " | " + Fmt("%.2f", r.p95_ms) +
                  " | " + Fmt("%.2f", r.energy_mj) + " | " + Fmt("%.0f", r.throughput) + " | " +
                  r.bottleneck + " | " + Fmt("%.2f", 100 * r.accuracy) + " | " +
                  Fmt("%.1f%%", 100 * r.offload) + " | " +
                  (r.hit_rate < 0 ? "-" : Fmt("%.1f%%", 100 * r.hit_rate)) + " | " +
                  Fmt("%.1f%%", 100 * ok) + " |\n";
      out.push_back({{"scheme", r.scheme},
                     {"mean_ms", r.mean_ms},
                     {"p95_ms", r.p95_ms},
                     {"energy_mj", r.energy_mj},
                     {"throughput", r.throughput},
                     {"bottleneck", r.bottleneck},
                     {"accuracy", r.accuracy},
                     {"offload", r.offload},
                     {"hit_rate", r.hit_rate},
                     {"in_budget", ok}});
    }
    // Mean latency per network preset: where each scheme's time goes. Users'
    // requests are in user order in every result.
    std::vector<std::string> nets;
    for (const auto& u : users)
      if (std::find(nets.begin(), nets.end(), u.c.network) == nets.end())
        nets.push_back(u.c.network);
    std::string by_net = "\nmean latency (ms) by network\n" + std::string(16, ' ');
    for (const auto& n : nets) by_net += std::string(10 - std::min<size_t>(9, n.size()), ' ') + n;
    by_net += "\n";
    for (const auto& r : rs) {
      by_net += r.scheme + std::string(16 - std::min<size_t>(15, r.scheme.size()), ' ');
      for (const auto& n : nets) {
        double sum = 0;
        size_t count = 0, k = 0;
        for (const auto& u : users)
          for (size_t i = 0; i < u.t.size(); ++i, ++k)
            if (u.c.network == n) sum += r.latency_ms[k], ++count;
        by_net += Fmt("%10.1f", count ? sum / double(count) : NAN);
      }
      by_net += "\n";
    }
    std::printf("%s", by_net.c_str());
    table_md += "\n```" + by_net + "```\n";
    // Each DeepAdapter variant against every other scheme, and the goals
    // (issue 26 §4): at equal accuracy, the other schemes and static at
    // every branch size are what DeepAdapter must beat.
    std::string ratios;
    const sim::SchemeResult& mobile = rs.front();  // the base model's answers on the same images
    for (const auto& da : rs) {
      if (!da.scheme.starts_with("deepadapter")) continue;
      ratios += "\n" + da.scheme +
                " against each scheme (latency and energy: theirs / ours; throughput: ours / "
                "theirs)\n";
      std::vector<const sim::SchemeResult*> others;
      for (const auto& r : rs)
        if (!r.scheme.starts_with("deepadapter")) others.push_back(&r);
      for (const auto& r : statics) others.push_back(&r);
      const sim::SchemeResult *fastest = nullptr, *frugal = nullptr, *closest = nullptr;
      double paper_ms = INFINITY, paper_mj = INFINITY, paper_tp = INFINITY;
      for (const sim::SchemeResult* r : others) {
        if (!r->scheme.starts_with("static ")) {
          ratios += "  " + r->scheme + ": latency " + Fmt("%.2fx", r->mean_ms / da.mean_ms) +
                    ", energy " + Fmt("%.2fx", r->energy_mj / da.energy_mj) + ", throughput " +
                    Fmt("%.2fx", da.throughput / r->throughput) + ", accuracy " +
                    Fmt("%+.2f points", 100 * (da.accuracy - r->accuracy)) + "\n";
        }
        if (r->scheme == "mobile-only" || r->scheme == "edge-only" || r->scheme == "cloud-only" ||
            r->scheme == "split") {
          paper_ms = std::min(paper_ms, r->mean_ms / da.mean_ms);
          paper_mj = std::min(paper_mj, r->energy_mj / da.energy_mj);
          paper_tp = std::min(paper_tp, da.throughput / r->throughput);
        }
        if (!closest || r->accuracy > closest->accuracy) closest = r;
        if (r->accuracy < da.accuracy) continue;  // at equal accuracy or better only
        if (!fastest || r->mean_ms < fastest->mean_ms) fastest = r;
        if (!frugal || r->energy_mj < frugal->energy_mj) frugal = r;
      }
      auto met = [](bool ok) { return std::string(ok ? ", met" : ", NOT met"); };
      const double budget = in_budget(da);
      if (fastest) {
        ratios += "at equal or better accuracy, the fastest other is " + fastest->scheme + " (" +
                  Fmt("%.2f ms, ", fastest->mean_ms) + Fmt("%.2f%%", 100 * fastest->accuracy) +
                  ") and the most frugal " + frugal->scheme + " (" +
                  Fmt("%.2f mJ, ", frugal->energy_mj) + Fmt("%.2f%%", 100 * frugal->accuracy) + ")\n";
      } else {
        ratios += "no other scheme is as accurate (" + Fmt("%.2f%%", 100 * da.accuracy) +
                  "); the most accurate other is " + closest->scheme + " (" +
                  Fmt("%.2f%%", 100 * closest->accuracy) + ")\n";
      }
      const double lat = fastest ? fastest->mean_ms / da.mean_ms : INFINITY,
                   mj = frugal ? frugal->energy_mj / da.energy_mj : INFINITY;
      const bool acc_ok = da.accuracy >= mobile.accuracy - 0.005;
      ratios += "goals: latency at equal accuracy >= 1.5x the best other (" + Fmt("%.2fx", lat) +
                met(lat >= 1.5) + "); energy at equal accuracy >= 1.0x (" + Fmt("%.2fx", mj) +
                met(mj >= 1.0) + "); against mobile-only, edge-only, cloud-only and split, at " +
                "accuracy >= base - 0.5 points (" +
                Fmt("%+.2f", 100 * (da.accuracy - mobile.accuracy)) + met(acc_ok) +
                "): latency >= 1.33x (" + Fmt("%.2fx", paper_ms) + met(acc_ok && paper_ms >= 1.33) +
                "), energy >= 1.4x (" + Fmt("%.2fx", paper_mj) + met(acc_ok && paper_mj >= 1.4) +
                "), throughput >= 2.1x (" + Fmt("%.2fx", paper_tp) +
                met(acc_ok && paper_tp >= 2.1) + "); requests within budget >= 95% (" +
                Fmt("%.1f%%", 100 * budget) + met(budget >= 0.95) + ")\n";
    }
    std::printf("%s", ratios.c_str());

    AgainstServices services;
    if (f->live_seconds > 0 || f->browser)
      services = RunServices(*f, in, workload, profiles, users, data.test, &ratios);

    // Files: JSON, Markdown, plots.
    const fs::path dir = f->out;
    WriteFileAtomic((dir / "system.json").string(),
                    nlohmann::json{{"family", f->family},
                                   {"users", f->users},
                                   {"requests", requests},
                                   {"images", data.test.count},
                                   {"seed", f->seed},
                                   {"service_ms", {{"batch", in.edge.batch}, {"ms", in.edge.ms}}},
                                   {"schemes", out},
                                   {"live", services.live},
                                   {"browser", services.browser}}
                        .dump(1));
    WriteFileAtomic((dir / "summary.md").string(),
                    "# System evaluation\n\n`deepadapter bench system --family " + f->family +
                        " --out " + f->out + " --users " + std::to_string(f->users) +
                        "`: " + std::to_string(requests) + " requests on " +
                        std::to_string(data.test.count) + " test images.\n\n" + table_md + ratios);
    const char* colors[] = {"#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd",
                            "#8c564b", "#7f7f7f", "#e377c2", "#d62728"};
    // The Pareto views: every scheme a point, static at every branch size a curve.
    std::vector<Series> cdf, acc, acc_mj;
    Series curve_ms{"static, every branch", "#000000", {}, {}, true},
        curve_mj{"static, every branch", "#000000", {}, {}, true};
    for (const auto& r : statics) {
      curve_ms.x.push_back(std::log10(r.mean_ms)), curve_ms.y.push_back(100 * r.accuracy);
      curve_mj.x.push_back(std::log10(r.energy_mj)), curve_mj.y.push_back(100 * r.accuracy);
    }
    acc.push_back(curve_ms), acc_mj.push_back(curve_mj);
    for (size_t i = 0; i < rs.size(); ++i) {
      std::vector<double> v = rs[i].latency_ms;
      std::sort(v.begin(), v.end());
      Series s{rs[i].scheme, colors[i % 8], {}, {}, true};
      const size_t step = std::max<size_t>(1, v.size() / 400);
      for (size_t k = 0; k < v.size(); k += step)
        s.x.push_back(std::log10(std::max(0.01, v[k]))),
            s.y.push_back(double(k + 1) / double(v.size()));
      cdf.push_back(std::move(s));
      acc.push_back(
          {rs[i].scheme, colors[i % 8], {std::log10(rs[i].mean_ms)}, {100 * rs[i].accuracy}});
      acc_mj.push_back(
          {rs[i].scheme, colors[i % 8], {std::log10(rs[i].energy_mj)}, {100 * rs[i].accuracy}});
    }
    WriteFileAtomic(
        (dir / "latency-cdf.svg").string(),
        SvgPlot("Latency per request (CDF)", "log10 latency (ms)", "share of requests", cdf));
    WriteFileAtomic(
        (dir / "accuracy-latency.svg").string(),
        SvgPlot("Accuracy against mean latency", "log10 mean latency (ms)", "accuracy (%)", acc));
    WriteFileAtomic((dir / "accuracy-energy.svg").string(),
                    SvgPlot("Accuracy against mobile energy", "log10 energy per request (mJ)",
                            "accuracy (%)", acc_mj));
    std::vector<Series> energy;
    for (size_t i = 0; i < rs.size(); ++i)
      energy.push_back({rs[i].scheme, colors[i % 8], {double(i + 1)}, {rs[i].energy_mj}});
    WriteFileAtomic((dir / "energy.svg").string(),
                    SvgPlot("Mobile energy per request", "scheme (legend)", "energy (mJ)", energy));
    std::printf(
        "written: %s/{system.json,summary.md,latency-cdf.svg,accuracy-latency.svg,"
        "accuracy-energy.svg,energy.svg}\n",
        f->out.c_str());
  });
}

}  // namespace da::cli
