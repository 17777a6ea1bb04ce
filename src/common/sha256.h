#pragma once
// SHA-256 digests as lowercase hex (OpenSSL).
#include <string>
#include <string_view>

namespace da {

std::string Sha256Hex(std::string_view data);

// True when `s` looks like a SHA-256 hex digest (64 lowercase hex digits).
bool IsSha256Hex(std::string_view s);

}  // namespace da
