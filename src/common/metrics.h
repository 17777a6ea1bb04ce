#pragma once
// Service metrics in the Prometheus text format: labelled counters and
// histograms. Thread-safe.
#include <map>
#include <mutex>
#include <string>
#include <vector>

namespace da {

class Metrics {
 public:
  // Declares a metric's help line (type "counter" or "gauge"; histograms are
  // declared with their bucket upper bounds).
  void Declare(const std::string& name, const std::string& type, const std::string& help);
  void DeclareHistogram(const std::string& name, const std::string& help,
                        std::vector<double> buckets);
  // labels: `key="value",...` as it appears between braces ("" for none).
  void Add(const std::string& name, const std::string& labels = "", double v = 1);
  void Set(const std::string& name, const std::string& labels, double v);
  void Observe(const std::string& name, double value);
  double Get(const std::string& name, const std::string& labels = "") const;
  std::string Text() const;

 private:
  struct Family {
    std::string type, help;
    std::map<std::string, double> values;  // labels -> value
    std::vector<double> buckets;           // histograms
    std::vector<uint64_t> counts;          // per bucket (non-cumulative) + overflow
    double sum = 0;
    uint64_t count = 0;
  };
  Family& At(const std::string& name);
  mutable std::mutex mu_;
  std::map<std::string, Family> families_;
};

// `key="value"` with the value escaped for the text format.
std::string Label(const std::string& key, const std::string& value);

}  // namespace da
