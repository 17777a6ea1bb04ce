// libFuzzer target: the engine's ONNX reader, fusion and both backends on any
// bytes. A file either loads (and then runs one image) or is a UserError.
#include <cstdint>
#include <string>
#include <vector>

#include "common/error.h"
#include "engine/engine.h"
#include "engine/portable.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string bytes(reinterpret_cast<const char*>(data), size);
  try {
    da::engine::PortableModel m(bytes);
    if (m.macs() > 50'000'000) return 0;  // loads, but too slow to run per input
    std::vector<float> x(size_t(m.channels() * m.height() * m.width()), 0.5f), y(size_t(m.classes()));
    m.Run(x.data(), 1, y.data());
    da::engine::Model dnnl(bytes);
    dnnl.Run(x.data(), 1, y.data());
  } catch (const da::UserError&) {
  }
  return 0;
}
