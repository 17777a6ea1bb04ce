// libFuzzer target: files the programs read from disk, each written from the
// input into a fresh directory on tmpfs: a dataset file (IDX, raw or gzip),
// the model repository's catalog, the edge's SQLite state. The first byte
// chooses which. Each either opens or is a UserError (the repository and the
// edge's state report problems instead of refusing).
#include <unistd.h>

#include <cstdint>
#include <filesystem>
#include <string>

#include "common/error.h"
#include "common/fs.h"
#include "edge/store.h"
#include "nn/dataset.h"
#include "repo/repo.h"

namespace fs = std::filesystem;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  static const fs::path dir = fs::path(fs::exists("/dev/shm") ? "/dev/shm" : fs::temp_directory_path()) /
                              ("da-fuzz-files-" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  const std::string body(reinterpret_cast<const char*>(data) + 1, size - 1);
  try {
    switch (data[0] % 4) {
      case 0:
      case 1:
        da::WriteFileAtomic((dir / "x.idx").string(), body);
        da::nn::ReadIdx((dir / "x.idx").string(), data[0] % 4 == 0 ? 1 : 3);
        break;
      case 2:
        da::WriteFileAtomic((dir / "catalog.json").string(), body);
        da::repo::Repository(dir.string()).Catalog();
        break;
      case 3:
        da::WriteFileAtomic((dir / "state.db").string(), body);
        da::edge::Store(dir.string()).Files();
        break;
    }
  } catch (const da::UserError&) {
  }
  return 0;
}
