#pragma once
// File helpers. WriteFileAtomic survives a crash at any point: the file holds
// either its old content or the new one, never a mix (temp file, fsync, rename).
#include <string>
#include <string_view>

namespace da {

// Writes `data` to `path` atomically; creates parent directories. Throws UserError.
void WriteFileAtomic(const std::string& path, std::string_view data);

// Reads a whole file. Throws UserError naming the file when it cannot.
std::string ReadFile(const std::string& path);

}  // namespace da
