// libFuzzer target: the JSON bodies of /v1/match and /v1/prune-requests
// (a visitor's context) against the shipped profiles.
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>

#include "common/error.h"
#include "context/context.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const da::context::Profiles profiles = da::context::Profiles::Load(DA_SOURCE_DIR "/profiles");
  const nlohmann::json j = nlohmann::json::parse(data, data + size, nullptr, false);
  if (j.is_discarded()) return 0;  // http::JsonBody's 400
  try {
    da::context::Context::FromJson(j, profiles).ToJson().dump();
  } catch (const da::UserError&) {
  }
  return 0;
}
