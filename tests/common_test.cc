#include <gtest/gtest.h>

#include <filesystem>

#include "common/error.h"
#include "common/fs.h"
#include "common/progress.h"

namespace fs = std::filesystem;

TEST(Fs, WriteFileAtomicCreatesReplacesAndLeavesNoTempFiles) {
  fs::path dir = fs::temp_directory_path() / ("da_fs_test_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  std::string path = (dir / "sub" / "file.txt").string();
  da::WriteFileAtomic(path, "first");
  EXPECT_EQ(da::ReadFile(path), "first");
  da::WriteFileAtomic(path, std::string(100000, 'x'));
  EXPECT_EQ(da::ReadFile(path), std::string(100000, 'x'));
  int files = 0;
  for (auto& e : fs::directory_iterator(dir / "sub")) files += e.is_regular_file();
  EXPECT_EQ(files, 1);
  fs::remove_all(dir);
}

TEST(Fs, ReadFileNamesMissingFile) {
  try {
    da::ReadFile("/nonexistent/da/file");
    FAIL();
  } catch (const da::UserError& e) {
    EXPECT_NE(std::string(e.what()).find("/nonexistent/da/file"), std::string::npos);
  }
}

TEST(Fs, WriteFileAtomicIntoUnwritablePlaceIsUserError) {
  EXPECT_THROW(da::WriteFileAtomic("/proc/da_cannot_write_here/x", "a"), da::UserError);
}

TEST(Progress, FormatsDurations) {
  EXPECT_EQ(da::Progress::FormatDuration(5), "5s");
  EXPECT_EQ(da::Progress::FormatDuration(65), "1m05s");
  EXPECT_EQ(da::Progress::FormatDuration(3725), "1h02m");
  EXPECT_EQ(da::Progress::FormatDuration(-1), "?");
}
