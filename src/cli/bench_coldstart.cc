// deepadapter bench coldstart: the page's cold start in headless Chromium
// (web/tools/coldstart.mjs) against a cloud and an edge on loopback, with
// onnxruntime-web and with DeepAdapter's WebAssembly runtime, each with and
// without the progressive start; table, plots and goals.
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <map>
#include <memory>

#include "cli/commands.h"
#include "cli/local_services.h"
#include "common/error.h"
#include "common/fs.h"
#include "common/plot.h"
#include "common/process.h"
#include "common/static_files.h"
#include "prune/family.h"

namespace da::cli {
namespace fs = std::filesystem;

namespace {

struct ColdFlags {
  std::string family, out, profiles = SourcePath("profiles"),
                           table = SourcePath("profiles/latency.json");
  std::string throttle = "1,4,6", networks = "3g,slow4g,goal,4g,wifi",
              variants = "ort,ort-progressive,deepadapter,deepadapter-progressive";
  double budget = 30;
  bool reuse = false;
};

std::string Seconds(double ms) { return Fmt("%.2f s", ms / 1000); }

// Runs the browser part (or reuses its JSON) and returns it.
nlohmann::json Measure(const ColdFlags& f, const nlohmann::json& fam, const std::string& json) {
  if (f.reuse && fs::exists(json)) {
    std::printf("reusing %s (--reuse)\n", json.c_str());
    return nlohmann::json::parse(ReadFile(json));
  }
  TempDir tmp("da-bench-coldstart");
  LocalCloud cloud(FamilyCloud(tmp.path().string(), f.family, f.profiles, f.table));
  edge::EdgeConfig ec;
  ec.cloud_url = cloud.url();
  ec.state_dir = (tmp.path() / "state").string();
  ec.profiles_dir = f.profiles;
  ec.web_dir = SourcePath("web");
  ec.prune_interval_s = 1e8;  // no pruning job competing for the cores
  std::string models;
  for (const auto& b : fam.at("branches")) {
    ec.cache_bytes += 2 * b.at("bytes").get<int64_t>();  // the whole family at the edge
    models += (models.empty() ? "" : ",") + b.at("context").get<std::string>();
  }
  LocalEdge e(ec);
  RunCommand("node " + ShellQuote(SourcePath("web/tools/coldstart.mjs")) + " " + ShellQuote(e.url()) +
                 " " + ShellQuote(json + ".tmp") + " --models " + ShellQuote(models) +
                 " --throttle " + ShellQuote(f.throttle) + " --networks " + ShellQuote(f.networks) +
                 " --variants " + ShellQuote(f.variants) + " --budget " + Fmt("%g", f.budget),
             [](const std::string& line) {
               std::printf("%s\n", line.c_str());
               std::fflush(stdout);
             });
  fs::rename(json + ".tmp", json);
  return nlohmann::json::parse(ReadFile(json));
}

void Report(const ColdFlags& f, const nlohmann::json& r) {
  std::string md;
  auto out = [&](const std::string& s) {
    std::printf("%s", s.c_str());
    md += s;
  };
  // The runtimes' sizes, as the edge sends them.
  std::map<std::string, std::pair<int64_t, int64_t>> size;  // runtime -> (gzip, brotli)
  for (const auto& [name, files] :
       std::map<std::string, std::vector<std::string>>{
           {"deepadapter", {"engine/dist/da-engine.wasm", "engine/dist/da-engine.mjs", "sdk/engine.js"}},
           {"onnxruntime-web",
            {"node_modules/onnxruntime-web/dist/ort-wasm-simd-threaded.wasm",
             "node_modules/onnxruntime-web/dist/ort-wasm-simd-threaded.mjs",
             "node_modules/onnxruntime-web/dist/ort.wasm.min.mjs"}}}) {
    for (const auto& file : files) {
      auto a = http::MakeAsset(ReadFile(SourcePath("web/" + file)), "");
      size[name].first += int64_t(a->gzip.empty() ? a->identity.size() : a->gzip.size());
      size[name].second += int64_t(a->br.empty() ? a->identity.size() : a->br.size());
    }
  }
  out("\nruntime files (WebAssembly, its JavaScript glue, the SDK's wrapper):\n");
  for (const auto& [name, s] : size)
    out("  " + name + ": " + Thousands(s.first) + " bytes gzip, " + Thousands(s.second) +
        " bytes brotli\n");
  const int64_t ours_gz = size["deepadapter"].first;
  out(std::string("goal: runtime <= 200 KB gzipped: ") + (ours_gz <= 200 * 1024 ? "met" : "NOT met") +
      " (" + Fmt("%.1f", ours_gz / 1024.0) + " KB)\n");

  // Visits: one table per network.
  const auto& visits = r.at("visits");
  out("\ncold and repeat visits (navigation start to the first answer / to the first answer by the "
      "matched model; bytes on the wire)\n");
  std::map<std::string, std::vector<const nlohmann::json*>> by_net;
  std::vector<std::string> net_order;
  for (const auto& v : visits) {
    const std::string n = v.at("network");
    if (!by_net.count(n)) net_order.push_back(n);
    by_net[n].push_back(&v);
  }
  char line[512];
  bool first_goal = true, repeat_goal = true;
  for (const auto& n : net_order) {
    out("\n" + n + " (" + by_net[n][0]->at("network_label").get<std::string>() + ")\n");
    std::snprintf(line, sizeof line, "%-5s %-24s %9s %9s %9s %-16s %9s %9s %9s\n", "cpu", "variant",
                  "first", "matched", "kB", "matched model", "warm ms", "rep. 1st", "rep. kB");
    out(line);
    for (const auto* v : by_net[n]) {
      const auto &a = v->at("first"), &b = v->at("repeat");
      std::snprintf(line, sizeof line, "%-5s %-24s %9s %9s %9.1f %-16s %9.2f %9s %9.1f\n",
                    Fmt("%gx", v->at("throttle")).c_str(), v->at("variant").get<std::string>().c_str(),
                    Seconds(a.at("first_ms")).c_str(), Seconds(a.at("matched_ms")).c_str(),
                    a.at("bytes").get<double>() / 1000,
                    a.at("matched_model").get<std::string>().c_str(), a.at("warm_ms").get<double>(),
                    Seconds(b.at("first_ms")).c_str(), b.at("bytes").get<double>() / 1000);
      out(line);
      if (n == "goal" && v->at("variant") == "deepadapter-progressive" && a.at("first_ms") > 5000)
        first_goal = false;
      // A repeat visit downloads no asset or model again (API answers and probes aside).
      for (const auto& [path, asset] : b.at("assets").items())
        if ((!path.starts_with("/v1/") || path.starts_with("/v1/models/")) &&
            asset.at("body_bytes").get<int64_t>() > 0) {
          repeat_goal = false;
          out("  the repeat visit downloaded " + path + " again\n");
        }
    }
  }
  // Bytes per asset of one first visit per runtime (the first network, CPU 1x).
  for (const char* variant : {"ort-progressive", "deepadapter-progressive"})
    for (const auto& v : visits)
      if (v.at("variant") == variant && v.at("network") == net_order[0]) {
        out(std::string("\nbytes on the wire per asset, first visit, ") + variant + ", " +
            net_order[0] + ", CPU " + Fmt("%gx", v.at("throttle")) + ":\n");
        for (const auto& [path, a] : v.at("first").at("assets").items()) {
          std::string enc;
          for (const auto& e : a.at("encodings")) enc += (enc.empty() ? "" : ",") + e.get<std::string>();
          std::snprintf(line, sizeof line, "  %-40s %3d req %10s bytes  %s\n", path.c_str(),
                        a.at("requests").get<int>(), Thousands(a.at("bytes").get<int64_t>()).c_str(),
                        enc.empty() ? "" : ("(" + enc + ")").c_str());
          out(line);
        }
        break;
      }
  out(std::string("\ngoal: first answer <= 5 s at 1.6 Mbit/s, 150 ms, cold cache "
                  "(deepadapter-progressive, every CPU factor): ") +
      (by_net.count("goal") ? (first_goal ? "met" : "NOT met") : "not measured (--networks lacks goal)") +
      "\n");
  out(std::string("goal: a repeat visit downloads no asset or model again: ") +
      (repeat_goal ? "met" : "NOT met") + "\n");

  // Warm single-image time, both runtimes on every model.
  out("\nwarm single-image time, both runtimes in one page, each model (medians of 9 groups)\n");
  std::map<double, std::pair<double, double>> worst;  // throttle -> (max ratio, sum log ratio)
  std::map<double, int> count;
  for (const auto& w : r.at("warm")) {
    const double t = w.at("throttle"), ratio = w.at("ratio");
    std::snprintf(line, sizeof line, "  CPU %-4s %-16s %8s bytes  deepadapter %7.3f ms  ort %7.3f ms  %5.2fx\n",
                  Fmt("%gx", t).c_str(), w.at("model").get<std::string>().c_str(),
                  Thousands(w.at("bytes").get<int64_t>()).c_str(), w.at("deepadapter_ms").get<double>(),
                  w.at("ort_ms").get<double>(), ratio);
    out(line);
    worst[t].first = std::max(worst[t].first, ratio);
    worst[t].second += std::log(ratio);
    count[t]++;
  }
  bool warm_goal = true;
  for (const auto& [t, wr] : worst) {
    out("  CPU " + Fmt("%gx", t) + ": geometric mean " + Fmt("%.2fx", std::exp(wr.second / count[t])) +
        ", worst " + Fmt("%.2fx", wr.first) + " of onnxruntime-web's time\n");
    if ((t == 1 || t == 6) && wr.first > 1.0) warm_goal = false;
  }
  out(std::string("goal: warm single-image time <= 1.0x onnxruntime-web's at CPU 1x and 6x on every "
                  "branch model: ") +
      (warm_goal ? "met" : "NOT met") + "\n");

  // Plots: seconds to the first answer and to the matched model's, per network, at each CPU factor.
  for (const char* what : {"first_ms", "matched_ms"}) {
    for (const double t : r.at("throttles").get<std::vector<double>>()) {
      std::vector<Series> series;
      const char* colors[] = {"#d62728", "#ff9896", "#1f77b4", "#aec7e8"};
      int k = 0;
      for (const auto& variant : r.at("variants")) {
        Series s{variant.get<std::string>(), colors[k++ % 4], {}, {}, true, {}};
        for (size_t i = 0; i < net_order.size(); ++i)
          for (const auto* v : by_net[net_order[i]])
            if (v->at("variant") == variant && v->at("throttle") == t) {
              s.x.push_back(double(i + 1));
              s.y.push_back(v->at("first").at(what).get<double>() / 1000);
            }
        series.push_back(s);
      }
      std::string xl = "network:";
      for (size_t i = 0; i < net_order.size(); ++i) xl += " " + std::to_string(i + 1) + "=" + net_order[i];
      const std::string name = std::string("coldstart-") + (what[0] == 'f' ? "first" : "matched") +
                               "-cpu" + Fmt("%g", t) + ".svg";
      WriteFileAtomic((fs::path(f.out) / name).string(),
                      SvgPlot(std::string(what[0] == 'f' ? "First answer" : "First answer by the matched model") +
                                  ", cold visit, CPU " + Fmt("%gx", t),
                              xl, "seconds after navigation start (log scale)", series,
                              /*log_y=*/true));
    }
  }
  WriteFileAtomic((fs::path(f.out) / "coldstart.md").string(), md);
  std::printf("\nplots: %s/coldstart-{first,matched}-cpu*.svg; report: %s/coldstart.md\n", f.out.c_str(),
              f.out.c_str());
}

}  // namespace

void AddColdstartBench(CLI::App& bench) {
  auto f = std::make_shared<ColdFlags>();
  auto* cmd = bench.add_subcommand(
      "coldstart",
      "The page's cold start in headless Chromium (CPU throttling, network presets): time to the "
      "first answer and to the matched model's, bytes on the wire, warm inference time; "
      "onnxruntime-web against DeepAdapter's runtime, with and without the progressive start");
  cmd->add_option("--family", f->family, "Family made by prune")->required();
  cmd->add_option("--out", f->out, "Results folder (coldstart.json, coldstart.md, SVG)")->required();
  cmd->add_option("--throttle", f->throttle, "DevTools CPU throttling factors")->capture_default_str();
  cmd->add_option("--networks", f->networks,
                  "Network presets (profiles/networks.json; goal: 1.6 Mbit/s, 150 ms)")
      ->capture_default_str();
  cmd->add_option("--variants", f->variants, "Runtimes, each optionally -progressive")
      ->capture_default_str();
  cmd->add_option("--budget", f->budget, "Latency budget the page asks for (ms)")
      ->capture_default_str()
      ->check(CLI::Range(0.1, 1e6));
  cmd->add_option("--profiles", f->profiles, "Profiles folder")->capture_default_str();
  cmd->add_option("--table", f->table, "Latency table")->capture_default_str();
  cmd->add_flag("--reuse", f->reuse, "Report an earlier run's OUT/coldstart.json instead of measuring");
  cmd->callback([f] {
    const nlohmann::json fam = prune::ReadFamily(f->family);
    fs::create_directories(f->out);
    const nlohmann::json r = Measure(*f, fam, (fs::path(f->out) / "coldstart.json").string());
    Report(*f, r);
  });
}

}  // namespace da::cli
