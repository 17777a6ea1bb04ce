// libFuzzer target: the Open Inference Protocol request parser, JSON bodies
// and binary-extension bodies (the first two bytes choose the header length).
#include <cstdint>
#include <optional>
#include <string>

#include "common/error.h"
#include "infer/oip.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const da::infer::InputShape shape{1, 28, 28, 10};
  std::optional<size_t> header;
  if (size >= 2 && data[0] == 'B') header = data[1], data += 2, size -= 2;
  const std::string body(reinterpret_cast<const char*>(data), size);
  try {
    auto req = da::infer::ParseInferRequest(body, shape, 64, header);
    std::vector<float> probs(size_t(req.count) * 10, 0.1f);
    std::optional<size_t> out_header;
    da::infer::InferResponseBody("base", req, probs, 10, &out_header);
  } catch (const da::UserError&) {
  }
  return 0;
}
