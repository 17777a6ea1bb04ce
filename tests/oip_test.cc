// The Open Inference Protocol's request parser (JSON and binary tensors) and
// its metrics labels.
#include "infer/oip.h"

#include <gtest/gtest.h>

#include <cstring>
#include <random>

#include "common/error.h"
#include "infer/service.h"
#include "test_mutate.h"

using da::test::Mutate;

namespace {
const da::infer::InputShape kShape{1, 28, 28, 10};

std::string Request(const std::string& datatype, nlohmann::json shape, nlohmann::json data) {
  return nlohmann::json{
      {"inputs", {{{"name", "input"}, {"shape", shape}, {"datatype", datatype}, {"data", data}}}}}
      .dump();
}
}  // namespace

TEST(OpenInferenceProtocol, ParsesFp32AndUint8InEveryShape) {
  using da::infer::ParseInferRequest;
  std::vector<float> px(784, 0.5f);
  auto r = ParseInferRequest(Request("FP32", {1, 1, 28, 28}, px), kShape, 8);
  EXPECT_EQ(r.count, 1);
  EXPECT_EQ(r.pixels.size(), 784u);
  r = ParseInferRequest(Request("FP32", {2, 784}, std::vector<float>(1568, 0.25f)), kShape, 8);
  EXPECT_EQ(r.count, 2);
  std::vector<int> bytes(784, 255);
  r = ParseInferRequest(Request("UINT8", {1, 28, 28}, bytes), kShape, 8);
  EXPECT_FLOAT_EQ(r.pixels[0], 1.0f);
  // Nested data, an id, and the outputs a client asks for.
  nlohmann::json nested = nlohmann::json::array();
  for (int y = 0; y < 28; ++y) nested.push_back(std::vector<float>(28, 0.1f));
  nlohmann::json j = nlohmann::json::parse(Request("FP32", {1, 1, 28, 28}, {{nested}}));
  j["id"] = "42";
  j["outputs"] = {{{"name", "label"}, {"parameters", {{"binary_data", false}}}}};
  r = ParseInferRequest(j.dump(), kShape, 8);
  EXPECT_EQ(r.id, "42");
  EXPECT_TRUE(r.want_label);
  EXPECT_FALSE(r.want_probabilities);
  auto out = da::infer::InferResponse("base", r, std::vector<float>(10, 0.1f), 10);
  EXPECT_EQ(out["id"], "42");
  EXPECT_EQ(out["outputs"].size(), 1u);
  EXPECT_EQ(out["outputs"][0]["shape"], nlohmann::json({1}));
}

// The binary tensor data extension: a JSON header of the given length, then
// the tensor's raw bytes; the same pixels as the JSON form.
TEST(OpenInferenceProtocol, BinaryTensorsMatchJsonAndAreChecked) {
  using da::infer::ParseInferRequest;
  auto header = [](const std::string& dt, int64_t n, int64_t size) {
    return nlohmann::json{{"inputs",
                           {{{"name", "input"},
                             {"shape", {n, 1, 28, 28}},
                             {"datatype", dt},
                             {"parameters", {{"binary_data_size", size}}}}}},
                          {"parameters", {{"binary_data_output", true}}}}
        .dump();
  };
  std::vector<int> px(784);
  std::string raw(784, '\0');
  for (int i = 0; i < 784; ++i) px[size_t(i)] = i % 256, raw[size_t(i)] = char(i % 256);
  const auto json = ParseInferRequest(Request("UINT8", {1, 1, 28, 28}, px), kShape, 8);
  const std::string h = header("UINT8", 1, 784);
  const auto bin = ParseInferRequest(h + raw, kShape, 8, h.size());
  EXPECT_EQ(bin.pixels, json.pixels);
  EXPECT_TRUE(bin.binary_output);
  std::vector<float> f(784, 0.25f);
  std::string fraw(reinterpret_cast<const char*>(f.data()), 784 * 4);
  const std::string hf = header("FP32", 1, 784 * 4);
  EXPECT_EQ(ParseInferRequest(hf + fraw, kShape, 8, hf.size()).pixels, f);
  // Binary outputs: the label and probabilities follow the JSON header.
  std::optional<size_t> out_len;
  std::vector<float> probs(10, 0.05f);
  probs[3] = 0.55f;
  const std::string out = da::infer::InferResponseBody("base", bin, probs, 10, &out_len);
  ASSERT_TRUE(out_len);
  const auto head = nlohmann::json::parse(out.substr(0, *out_len));
  EXPECT_EQ(head["outputs"][0]["parameters"]["binary_data_size"], 8);
  int64_t label;
  std::memcpy(&label, out.data() + *out_len, 8);
  EXPECT_EQ(label, 3);
  EXPECT_EQ(out.size(), *out_len + 8 + 40);
  // Malformed: header past the body, size against the shape, bytes left over
  // or missing, binary without the header, bytes without a binary input.
  auto rejects = [](const std::string& body, std::optional<size_t> len) {
    try {
      da::infer::ParseInferRequest(body, kShape, 8, len);
      ADD_FAILURE() << "accepted: " << body.substr(0, 80);
    } catch (const da::HttpError& e) {
      EXPECT_EQ(e.status(), 400) << e.what();
    }
  };
  rejects(h + raw, h.size() + raw.size() + 1);
  rejects(header("UINT8", 1, 783) + raw.substr(1), header("UINT8", 1, 783).size());
  rejects(h + raw + "x", h.size());
  rejects(h + raw.substr(1), h.size());
  rejects(header("UINT8", 2, 784 * 2) + raw, header("UINT8", 2, 784 * 2).size());
  rejects(h + raw, std::nullopt);
  const std::string plain = Request("UINT8", {1, 1, 28, 28}, px);
  rejects(plain + "xyz", plain.size());
  std::vector<float> nan(784, NAN);
  rejects(hf + std::string(reinterpret_cast<const char*>(nan.data()), 784 * 4), hf.size());
}

TEST(OpenInferenceProtocol, RejectsBadRequestsWith400) {
  using da::infer::ParseInferRequest;
  std::vector<float> px(784, 0.5f);
  std::vector<float> nan_px = px;
  nan_px[3] = NAN;
  const std::vector<std::string> bad = {
      "",
      "[]",
      "{",
      "{\"inputs\": 3}",
      "{\"inputs\": []}",
      Request("FP16", {1, 784}, px),                           // datatype
      Request("FP32", {1, 1, 28, 27}, px),                     // shape
      Request("FP32", {1, 784}, std::vector<float>(783)),      // too little data
      Request("FP32", {1, 784}, std::vector<float>(785)),      // too much
      Request("FP32", {0, 784}, px),                           // no images
      Request("FP32", {9, 784}, std::vector<float>(9 * 784)),  // over the limit
      Request("FP32", {-1, 784}, px),
      Request("FP32", {1000000000, 784}, px),          // absurd shapes: refused before
      Request("FP32", {1, 1000000000}, px),            // anything is allocated
      Request("FP32", {1000000000, 1000000000}, px),
      Request("FP32", {1, 784}, nan_px),  // NaN: JSON null
      "{\"inputs\": [{\"name\": \"input\", \"shape\": [1, 784], \"datatype\": \"FP32\", "
      "\"data\": [NaN]}]}",
      Request("UINT8", {1, 784}, std::vector<int>(784, 256)),
      Request("UINT8", {1, 784}, std::vector<float>(784, 0.5f)),
      Request("FP32", {1, 784}, "abc"),
  };
  for (const std::string& body : bad) {
    try {
      ParseInferRequest(body, kShape, 8);
      ADD_FAILURE() << "accepted: " << body.substr(0, 80);
    } catch (const da::HttpError& e) {
      EXPECT_EQ(e.status(), 400);
    }
  }
}

TEST(OpenInferenceProtocol, MetricsLabelsStayBounded) {
  using da::infer::Endpoint;
  EXPECT_EQ(Endpoint("/v2"), "/v2");
  EXPECT_EQ(Endpoint("/v2/health/ready"), "/v2/health/ready");
  EXPECT_EQ(Endpoint("/v2/models/base/infer"), "/v2/models/base/infer");
  EXPECT_EQ(Endpoint("/v2/models/net/versions/1/ready"),
            "/v2/models/{model}/versions/{version}/ready");
  EXPECT_EQ(Endpoint("/v2/models/any-name-at-all"), "/v2/models/{model}");
  EXPECT_EQ(Endpoint("/v2/models/a/b/c/d"), "other");
  EXPECT_EQ(Endpoint("/v2/elsewhere"), "other");
}

// Thousands of mutated bodies: every one is parsed or rejected with a 400,
// never a crash, a hang or another exception.
TEST(OpenInferenceProtocol, SurvivesMutatedBodies) {
  std::mt19937 rng(7);
  const std::string a = Request("UINT8", {1, 784}, std::vector<int>(784, 7));
  const std::string b = Request("FP32", {1, 1, 28, 28}, std::vector<float>(784, 0.5f));
  int rejected = 0;
  for (int i = 0; i < 3000; ++i) {
    const std::string body = Mutate(i % 2 ? a : b, rng);
    try {
      da::infer::ParseInferRequest(body, kShape, 8);
    } catch (const da::HttpError& e) {
      EXPECT_EQ(e.status(), 400);
      ++rejected;
    }
  }
  EXPECT_GT(rejected, 0);
}
