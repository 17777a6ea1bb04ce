#include "common/metrics.h"

#include <algorithm>
#include <cstdio>
#include <stdexcept>

namespace da {

namespace {
std::string Num(double v) {
  char b[32];
  std::snprintf(b, sizeof b, "%.17g", v);
  return b;
}
}  // namespace

std::string Label(const std::string& key, const std::string& value) {
  std::string out = key + "=\"";
  for (char c : value) {
    if (c == '\\' || c == '"')
      out += '\\', out += c;
    else if (c == '\n')
      out += "\\n";
    else
      out += c;
  }
  return out + "\"";
}

void Metrics::Declare(const std::string& name, const std::string& type, const std::string& help) {
  std::lock_guard lock(mu_);
  Family& f = families_[name];
  f.type = type;
  f.help = help;
}

void Metrics::DeclareHistogram(const std::string& name, const std::string& help,
                               std::vector<double> buckets) {
  std::lock_guard lock(mu_);
  Family& f = families_[name];
  f.type = "histogram";
  f.help = help;
  std::sort(buckets.begin(), buckets.end());
  f.buckets = std::move(buckets);
  f.counts.assign(f.buckets.size() + 1, 0);
}

Metrics::Family& Metrics::At(const std::string& name) {
  auto it = families_.find(name);
  if (it == families_.end()) throw std::logic_error("undeclared metric " + name);
  return it->second;
}

void Metrics::Add(const std::string& name, const std::string& labels, double v) {
  std::lock_guard lock(mu_);
  At(name).values[labels] += v;
}

void Metrics::Set(const std::string& name, const std::string& labels, double v) {
  std::lock_guard lock(mu_);
  At(name).values[labels] = v;
}

void Metrics::Observe(const std::string& name, double value) {
  std::lock_guard lock(mu_);
  Family& f = At(name);
  size_t i = std::lower_bound(f.buckets.begin(), f.buckets.end(), value) - f.buckets.begin();
  ++f.counts[i];
  f.sum += value;
  ++f.count;
}

double Metrics::Get(const std::string& name, const std::string& labels) const {
  std::lock_guard lock(mu_);
  auto it = families_.find(name);
  if (it == families_.end()) return 0;
  if (it->second.type == "histogram") return static_cast<double>(it->second.count);
  auto v = it->second.values.find(labels);
  return v == it->second.values.end() ? 0 : v->second;
}

std::string Metrics::Text() const {
  std::lock_guard lock(mu_);
  std::string out;
  for (const auto& [name, f] : families_) {
    out += "# HELP " + name + " " + f.help + "\n# TYPE " + name + " " + f.type + "\n";
    if (f.type == "histogram") {
      uint64_t cum = 0;
      for (size_t i = 0; i < f.buckets.size(); ++i) {
        cum += f.counts[i];
        out += name + "_bucket{le=\"" + Num(f.buckets[i]) + "\"} " + std::to_string(cum) + "\n";
      }
      out += name + "_bucket{le=\"+Inf\"} " + std::to_string(f.count) + "\n";
      out += name + "_sum " + Num(f.sum) + "\n" + name + "_count " + std::to_string(f.count) + "\n";
      continue;
    }
    if (f.values.empty()) out += name + " 0\n";
    for (const auto& [labels, v] : f.values)
      out += name + (labels.empty() ? "" : "{" + labels + "}") + " " + Num(v) + "\n";
  }
  return out;
}

}  // namespace da
