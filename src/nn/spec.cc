#include "nn/spec.h"

#include <nlohmann/json.hpp>
#include <sstream>

#include "common/error.h"

namespace da::nn {

std::string FamilyName(Family f) { return f == Family::kVgg ? "vgg" : "resnet"; }

Family ParseFamily(const std::string& name) {
  if (name == "vgg") return Family::kVgg;
  if (name == "resnet") return Family::kResnet;
  throw UserError("unknown model family '" + name + "' (expected vgg or resnet)");
}

ModelSpec ModelSpec::Default(Family family, int channels, int height, int width, int classes) {
  ModelSpec s;
  s.family = family;
  s.channels = channels;
  s.height = height;
  s.width = width;
  s.classes = classes;
  if (family == Family::kVgg) {
    s.stages = {{32, 32}, {64, 64}, {128, 128}};
    s.hidden = 256;
  } else {
    s.stages = {{16, 16, 16}, {32, 32, 32}, {64, 64, 64}};
    s.residual = {16, 32, 64};
  }
  return s;
}

namespace {
int PoolOut(int x) { return x / 2; }           // 2x2 max-pool, stride 2
int Stride2Out(int x) { return (x + 1) / 2; }  // 3x3 pad 1 or 1x1 pad 0, stride 2
}  // namespace

void ModelSpec::Validate() const {
  auto bad = [](const std::string& m) { throw UserError("invalid model spec: " + m); };
  if (channels < 1 || height < 1 || width < 1) bad("input shape must be positive");
  if (classes < 2) bad("classes must be at least 2");
  if (stages.empty()) bad("at least one stage is needed");
  for (size_t s = 0; s < stages.size(); ++s) {
    if (stages[s].empty()) bad("stage " + std::to_string(s) + " has no layers");
    for (int w : stages[s])
      if (w < 1)
        bad("width " + std::to_string(w) + " in stage " + std::to_string(s) + " (must be >= 1)");
  }
  int h = height, w = width;
  if (family == Family::kVgg) {
    if (hidden < 1) bad("vgg needs hidden >= 1");
    if (!residual.empty()) bad("vgg takes no residual widths");
    for (size_t s = 0; s + 1 < stages.size(); ++s) h = PoolOut(h), w = PoolOut(w);
  } else {
    if (residual.size() != stages.size()) bad("resnet needs one residual width per stage");
    for (int r : residual)
      if (r < 1) bad("residual width " + std::to_string(r) + " (must be >= 1)");
    if (hidden != 0) bad("resnet takes no hidden width");
    for (size_t s = 1; s < stages.size(); ++s) h = Stride2Out(h), w = Stride2Out(w);
  }
  if (h < 1 || w < 1)
    bad("input " + std::to_string(height) + "x" + std::to_string(width) + " is too small for " +
        std::to_string(stages.size()) + " stages");
}

nlohmann::json ModelSpec::ToJson() const {
  nlohmann::json j = {{"family", FamilyName(family)},
                      {"stages", stages},
                      {"input", {channels, height, width}},
                      {"classes", classes}};
  if (family == Family::kVgg)
    j["hidden"] = hidden;
  else
    j["residual"] = residual;
  return j;
}

ModelSpec ModelSpec::FromJson(const nlohmann::json& j) {
  ModelSpec s;
  try {
    if (!j.is_object()) throw UserError("invalid model spec: expected a JSON object");
    s.family = ParseFamily(j.at("family").get<std::string>());
    s.stages = j.at("stages").get<std::vector<std::vector<int>>>();
    auto in = j.at("input").get<std::vector<int>>();
    if (in.size() != 3)
      throw UserError("invalid model spec: input must be [channels, height, width]");
    s.channels = in[0], s.height = in[1], s.width = in[2];
    s.classes = j.at("classes").get<int>();
    if (s.family == Family::kVgg)
      s.hidden = j.at("hidden").get<int>();
    else
      s.residual = j.at("residual").get<std::vector<int>>();
  } catch (const nlohmann::json::exception& e) {
    throw UserError(std::string("invalid model spec: ") + e.what());
  }
  s.Validate();
  return s;
}

std::vector<Layer> ModelSpec::Layers() const {
  std::vector<Layer> g;
  int c = channels, h = height, w = width;
  int cur = 0;  // value id of the running activation
  auto add = [&](Layer l) {
    l.out_h = h, l.out_w = w;
    g.push_back(std::move(l));
    return static_cast<int>(g.size());
  };
  auto conv = [&](const std::string& name, int in, int in_ch, int out_ch, int k, int stride,
                  bool relu) {
    if (stride == 2) h = Stride2Out(h), w = Stride2Out(w);
    return add({.kind = Layer::Kind::kConv,
                .name = name,
                .input = in,
                .in_ch = in_ch,
                .out_ch = out_ch,
                .kernel = k,
                .stride = stride,
                .relu = relu});
  };
  if (family == Family::kVgg) {
    for (size_t st = 0; st < stages.size(); ++st) {
      if (st > 0) {
        h = PoolOut(h), w = PoolOut(w);
        cur = add({.kind = Layer::Kind::kMaxPool, .input = cur, .in_ch = c, .out_ch = c});
      }
      for (size_t i = 0; i < stages[st].size(); ++i) {
        cur = conv("s" + std::to_string(st) + "_" + std::to_string(i), cur, c, stages[st][i], 3, 1,
                   true);
        c = stages[st][i];
      }
    }
    h = w = 1;
    cur = add({.kind = Layer::Kind::kGlobalAvgPool, .input = cur, .in_ch = c, .out_ch = c});
    cur = add({.kind = Layer::Kind::kLinear,
               .name = "fc",
               .input = cur,
               .in_ch = c,
               .out_ch = hidden,
               .relu = true});
    add({.kind = Layer::Kind::kLinear,
         .name = "cls",
         .input = cur,
         .in_ch = hidden,
         .out_ch = classes});
    return g;
  }
  cur = conv("stem", cur, c, residual[0], 3, 1, true);
  c = residual[0];
  for (size_t st = 0; st < stages.size(); ++st) {
    for (size_t b = 0; b < stages[st].size(); ++b) {
      std::string p = "s" + std::to_string(st) + "_b" + std::to_string(b) + "_";
      int stride = (st > 0 && b == 0) ? 2 : 1;
      int in = cur;
      int hin = h, win = w;
      int c1 = conv(p + "c1", in, c, stages[st][b], 3, stride, true);
      int c2 = conv(p + "c2", c1, stages[st][b], residual[st], 3, 1, false);
      int shortcut = in;
      if (stride != 1 || c != residual[st]) {
        h = hin, w = win;
        shortcut = conv(p + "proj", in, c, residual[st], 1, stride, false);
      }
      cur = add({.kind = Layer::Kind::kAdd,
                 .input = c2,
                 .input2 = shortcut,
                 .in_ch = residual[st],
                 .out_ch = residual[st],
                 .relu = true});
      c = residual[st];
    }
  }
  h = w = 1;
  cur = add({.kind = Layer::Kind::kGlobalAvgPool, .input = cur, .in_ch = c, .out_ch = c});
  add({.kind = Layer::Kind::kLinear, .name = "cls", .input = cur, .in_ch = c, .out_ch = classes});
  return g;
}

int64_t ModelSpec::Params() const {
  int64_t n = 0;
  for (const Layer& l : Layers()) {
    if (l.kind == Layer::Kind::kConv)
      n += int64_t{l.in_ch} * l.out_ch * l.kernel * l.kernel + l.out_ch;
    if (l.kind == Layer::Kind::kLinear) n += int64_t{l.in_ch} * l.out_ch + l.out_ch;
  }
  return n;
}

int64_t ModelSpec::Macs() const {
  int64_t n = 0;
  for (const Layer& l : Layers()) {
    if (l.kind == Layer::Kind::kConv)
      n += int64_t{l.in_ch} * l.out_ch * l.kernel * l.kernel * l.out_h * l.out_w;
    if (l.kind == Layer::Kind::kLinear) n += int64_t{l.in_ch} * l.out_ch;
  }
  return n;
}

std::string ModelSpec::Summary() const {
  std::string out = FamilyName(family) + " ";
  for (size_t s = 0; s < stages.size(); ++s) {
    if (s) out += "/";
    if (family == Family::kResnet) out += std::to_string(residual[s]) + ":";
    for (size_t i = 0; i < stages[s].size(); ++i)
      out += (i ? "," : "") + std::to_string(stages[s][i]);
  }
  if (family == Family::kVgg) out += " fc" + std::to_string(hidden);
  return out;
}

ModelSpec ModelSpec::WithWidths(const std::string& text) const {
  auto bad = [&](const std::string& m) { throw UserError("bad widths '" + text + "': " + m); };
  auto number = [&](const std::string& t) {
    size_t used = 0;
    int v = 0;
    try {
      v = std::stoi(t, &used);
    } catch (const std::exception&) {
      bad("'" + t + "' is not a number");
    }
    if (used != t.size()) bad("'" + t + "' is not a number");
    if (v < 1 || v > 65536) bad("width " + t + " out of range [1, 65536]");
    return v;
  };
  auto split = [](const std::string& t, char sep) {
    std::vector<std::string> parts;
    std::stringstream ss(t);
    std::string part;
    while (std::getline(ss, part, sep)) parts.push_back(part);
    if (!t.empty() && t.back() == sep) parts.push_back("");
    return parts;
  };
  ModelSpec out = *this;
  std::string body = text;
  size_t fc = text.find(" fc");
  if (fc != std::string::npos) {
    if (family != Family::kVgg) bad("only vgg has a hidden fc width");
    out.hidden = number(text.substr(fc + 3));
    body = text.substr(0, fc);
  }
  out.stages.clear();
  out.residual.clear();
  for (const std::string& stage : split(body, '/')) {
    std::string inner = stage;
    if (family == Family::kResnet) {
      size_t colon = stage.find(':');
      if (colon == std::string::npos) bad("resnet stages are written residual:inner,inner,...");
      out.residual.push_back(number(stage.substr(0, colon)));
      inner = stage.substr(colon + 1);
    }
    out.stages.emplace_back();
    for (const std::string& w : split(inner, ',')) out.stages.back().push_back(number(w));
    if (out.stages.back().empty()) bad("empty stage");
  }
  out.Validate();
  return out;
}

}  // namespace da::nn
