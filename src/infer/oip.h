#pragma once
// The Open Inference Protocol (KServe v2, JSON) for the base model: parsing
// requests into images and writing responses. Every malformed request is an
// HttpError(400) naming what is wrong.
#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

namespace da::infer {

// The model's input: C x H x W pixels scaled to [0, 1] ("input"), and classes.
struct InputShape {
  int channels = 0, height = 0, width = 0, classes = 0;
  int64_t Pixels() const { return int64_t{channels} * height * width; }
};

struct InferRequest {
  std::optional<std::string> id;
  int64_t count = 0;          // images
  std::vector<float> pixels;  // count x Pixels(), scaled to [0, 1]
  bool want_label = true, want_probabilities = true;
  bool binary_output = false;  // outputs as raw bytes after the JSON header
};

// Parses a request body. Input tensor "input": shape [N, C, H, W] (or
// [N, C*H*W], or [N, H, W] when C = 1), datatype FP32 (finite, scaled to
// [0, 1]) or UINT8 (0..255, divided by 255), data flat or nested row-major.
// N is at most `max_images`. With `header_length` (the request's
// Inference-Header-Content-Length: the binary tensor data extension), the body
// is that many bytes of JSON followed by the tensor's raw bytes (little-endian
// FP32 or UINT8), announced by inputs[0].parameters.binary_data_size; sizes are
// checked against the shape before anything is allocated.
InferRequest ParseInferRequest(const std::string& body, const InputShape& shape, int64_t max_images,
                               std::optional<size_t> header_length = std::nullopt);

// The response: outputs "label" (INT64 [N]) and "probabilities" (FP32 [N, classes]).
nlohmann::json InferResponse(const std::string& model, const InferRequest& req,
                             const std::vector<float>& probabilities, int classes);

// The response body. With binary outputs requested, the outputs' data follow
// the JSON header as raw bytes (INT64, FP32) and `header_length` is the
// header's size (for Inference-Header-Content-Length); else plain JSON.
std::string InferResponseBody(const std::string& model, const InferRequest& req,
                              const std::vector<float>& probabilities, int classes,
                              std::optional<size_t>* header_length);

// GET /v2/models/{model}: name, versions, platform, inputs and outputs.
nlohmann::json ModelMetadata(const std::string& model, const InputShape& shape);

}  // namespace da::infer
