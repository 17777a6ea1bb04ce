#include "infer/oip.h"

#include <cmath>
#include <cstring>

#include "common/error.h"

namespace da::infer {
namespace {

[[noreturn]] void Bad(const std::string& what) { throw HttpError(400, what); }

// Appends the numbers of a flat or nested array (depth <= 5) to `out`.
void Flatten(const nlohmann::json& j, bool uint8, std::vector<float>& out, size_t limit,
             int depth = 0) {
  if (!j.is_array()) Bad("inputs[0].data must be an array of numbers");
  if (depth > 5) Bad("inputs[0].data is nested too deeply");
  for (const auto& v : j) {
    if (v.is_array()) {
      Flatten(v, uint8, out, limit, depth + 1);
      continue;
    }
    if (out.size() >= limit) Bad("inputs[0].data has more values than its shape");
    if (uint8) {
      if (!v.is_number_integer() || v.get<int64_t>() < 0 || v.get<int64_t>() > 255)
        Bad("UINT8 data must be integers in 0..255");
      out.push_back(static_cast<float>(v.get<int64_t>()) / 255.0f);
    } else {
      if (!v.is_number()) Bad("FP32 data must be numbers");
      const double x = v.get<double>();
      if (!std::isfinite(x)) Bad("FP32 data must be finite");
      out.push_back(static_cast<float>(x));
    }
  }
}

}  // namespace

InferRequest ParseInferRequest(const std::string& body, const InputShape& shape, int64_t max_images,
                               std::optional<size_t> header_length) {
  if (header_length && *header_length > body.size())
    Bad("Inference-Header-Content-Length " + std::to_string(*header_length) +
        " is past the body's " + std::to_string(body.size()) + " bytes");
  const std::string_view binary =
      header_length ? std::string_view(body).substr(*header_length) : std::string_view();
  nlohmann::json j = nlohmann::json::parse(
      header_length ? std::string_view(body).substr(0, *header_length) : std::string_view(body),
      nullptr, false);
  if (j.is_discarded()) Bad("body is not valid JSON");
  if (!j.is_object()) Bad("body must be a JSON object");
  InferRequest r;
  if (j.contains("id")) {
    if (!j["id"].is_string()) Bad("id must be a string");
    r.id = j["id"].get<std::string>();
  }
  if (!j.contains("inputs") || !j["inputs"].is_array() || j["inputs"].size() != 1)
    Bad("inputs must be an array of exactly one tensor");
  const auto& in = j["inputs"][0];
  if (!in.is_object()) Bad("inputs[0] must be an object");
  // Binary tensor data extension: the bytes follow the JSON header.
  int64_t binary_size = -1;
  if (in.contains("parameters") && in["parameters"].is_object() &&
      in["parameters"].contains("binary_data_size")) {
    const auto& b = in["parameters"]["binary_data_size"];
    if (!header_length) Bad("binary_data_size needs the Inference-Header-Content-Length header");
    if (!b.is_number_integer() || b.get<int64_t>() < 0)
      Bad("inputs[0].parameters.binary_data_size must be a non-negative integer");
    binary_size = b.get<int64_t>();
  }
  for (const char* f : {"name", "shape", "datatype"})
    if (!in.contains(f)) Bad(std::string("inputs[0].") + f + " is missing");
  if (binary_size < 0 && !in.contains("data")) Bad("inputs[0].data is missing");
  if (in["name"] != "input") Bad("inputs[0].name must be \"input\"");
  const auto& dt = in["datatype"];
  if (dt != "FP32" && dt != "UINT8") Bad("inputs[0].datatype must be FP32 or UINT8");
  const auto& sh = in["shape"];
  if (!sh.is_array() || sh.size() < 2 || sh.size() > 4)
    Bad("inputs[0].shape must have 2 to 4 dims");
  std::vector<int64_t> dims;
  for (const auto& d : sh) {
    if (!d.is_number_integer() || d.get<int64_t>() < 1 || d.get<int64_t>() > (1 << 24))
      Bad("inputs[0].shape must hold positive integers");
    dims.push_back(d.get<int64_t>());
  }
  const int64_t n = dims[0];
  if (n > max_images) Bad("at most " + std::to_string(max_images) + " images per request");
  std::vector<int64_t> per(dims.begin() + 1, dims.end());
  const bool ok =
      (per.size() == 3 && per[0] == shape.channels && per[1] == shape.height &&
       per[2] == shape.width) ||
      (per.size() == 1 && per[0] == shape.Pixels()) ||
      (per.size() == 2 && shape.channels == 1 && per[0] == shape.height && per[1] == shape.width);
  if (!ok)
    Bad("inputs[0].shape must be [N, " + std::to_string(shape.channels) + ", " +
        std::to_string(shape.height) + ", " + std::to_string(shape.width) + "]");
  const size_t expect = static_cast<size_t>(n * shape.Pixels());
  if (binary_size >= 0) {
    const size_t width = dt == "UINT8" ? 1 : 4;
    if (static_cast<size_t>(binary_size) != expect * width)
      Bad("inputs[0].parameters.binary_data_size is " + std::to_string(binary_size) +
          "; the shape and datatype need " + std::to_string(expect * width));
    if (binary.size() != static_cast<size_t>(binary_size))
      Bad("the body carries " + std::to_string(binary.size()) +
          " bytes after the JSON header; binary_data_size says " + std::to_string(binary_size));
    r.pixels.resize(expect);
    for (size_t i = 0; i < expect; ++i) {
      if (width == 1) {
        r.pixels[i] = static_cast<float>(static_cast<uint8_t>(binary[i])) / 255.0f;
      } else {
        float x;
        std::memcpy(&x, binary.data() + 4 * i, 4);  // little endian, as the protocol says
        if (!std::isfinite(x)) Bad("FP32 data must be finite");
        r.pixels[i] = x;
      }
    }
  } else {
    if (!binary.empty()) Bad("bytes after the JSON header, but no input has binary_data_size");
    r.pixels.reserve(expect);
    Flatten(in["data"], dt == "UINT8", r.pixels, expect);
  }
  if (r.pixels.size() != expect)
    Bad("inputs[0].data has " + std::to_string(r.pixels.size()) + " values; shape needs " +
        std::to_string(expect));
  r.count = n;
  if (j.contains("parameters") && j["parameters"].is_object() &&
      j["parameters"].value("binary_data_output", false) == true)
    r.binary_output = true;
  if (j.contains("outputs")) {
    if (!j["outputs"].is_array()) Bad("outputs must be an array");
    r.want_label = r.want_probabilities = false;
    for (const auto& o : j["outputs"]) {
      if (!o.is_object() || !o.contains("name") || !o["name"].is_string())
        Bad("outputs[] must be objects with a name");
      if (o.contains("parameters") && o["parameters"].is_object() &&
          o["parameters"].value("binary_data", false) == true)
        r.binary_output = true;
      if (o["name"] == "label")
        r.want_label = true;
      else if (o["name"] == "probabilities")
        r.want_probabilities = true;
      else
        Bad("unknown output " + o["name"].dump() + " (label, probabilities)");
    }
  }
  return r;
}

nlohmann::json InferResponse(const std::string& model, const InferRequest& req,
                             const std::vector<float>& probabilities, int classes) {
  nlohmann::json out = {{"model_name", model}, {"model_version", "1"}};
  if (req.id) out["id"] = *req.id;
  out["outputs"] = nlohmann::json::array();
  if (req.want_label) {
    std::vector<int64_t> labels(static_cast<size_t>(req.count));
    for (int64_t i = 0; i < req.count; ++i) {
      const float* p = probabilities.data() + i * classes;
      labels[static_cast<size_t>(i)] = std::max_element(p, p + classes) - p;
    }
    out["outputs"].push_back(
        {{"name", "label"}, {"datatype", "INT64"}, {"shape", {req.count}}, {"data", labels}});
  }
  if (req.want_probabilities)
    out["outputs"].push_back({{"name", "probabilities"},
                              {"datatype", "FP32"},
                              {"shape", {req.count, classes}},
                              {"data", probabilities}});
  return out;
}

std::string InferResponseBody(const std::string& model, const InferRequest& req,
                              const std::vector<float>& probabilities, int classes,
                              std::optional<size_t>* header_length) {
  nlohmann::json out = InferResponse(model, req, probabilities, classes);
  header_length->reset();
  if (!req.binary_output) return out.dump();
  std::string tail;
  for (auto& o : out["outputs"]) {
    const size_t before = tail.size();
    if (o["datatype"] == "INT64") {
      for (int64_t v : o["data"].get<std::vector<int64_t>>())
        tail.append(reinterpret_cast<const char*>(&v), sizeof v);
    } else {
      for (float v : o["data"].get<std::vector<float>>())
        tail.append(reinterpret_cast<const char*>(&v), sizeof v);
    }
    o.erase("data");
    o["parameters"] = {{"binary_data_size", tail.size() - before}};
  }
  std::string head = out.dump();
  *header_length = head.size();
  return head + tail;
}

nlohmann::json ModelMetadata(const std::string& model, const InputShape& s) {
  return {
      {"name", model},
      {"versions", {"1"}},
      {"platform", "pytorch_libtorch"},
      {"inputs",
       {{{"name", "input"}, {"datatype", "FP32"}, {"shape", {-1, s.channels, s.height, s.width}}}}},
      {"outputs",
       {{{"name", "label"}, {"datatype", "INT64"}, {"shape", {-1}}},
        {{"name", "probabilities"}, {"datatype", "FP32"}, {"shape", {-1, s.classes}}}}}};
}

}  // namespace da::infer
