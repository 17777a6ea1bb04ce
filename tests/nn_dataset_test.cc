#include <gtest/gtest.h>
#include <zlib.h>

#include <filesystem>
#include <fstream>

#include "common/error.h"
#include "common/fs.h"
#include "nn/dataset.h"

namespace fs = std::filesystem;
using da::nn::LoadDataset;

namespace {

std::string Idx(uint32_t magic, std::vector<uint32_t> dims, const std::vector<uint8_t>& data) {
  std::string out;
  auto be = [&](uint32_t v) {
    for (int s = 24; s >= 0; s -= 8) out.push_back(static_cast<char>((v >> s) & 0xff));
  };
  be(magic);
  for (uint32_t d : dims) be(d);
  out.append(data.begin(), data.end());
  return out;
}

void WriteRaw(const fs::path& p, const std::string& bytes) {
  std::ofstream(p, std::ios::binary)
      .write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

void WriteGz(const fs::path& p, const std::string& bytes) {
  gzFile f = gzopen(p.c_str(), "wb");
  gzwrite(f, bytes.data(), static_cast<unsigned>(bytes.size()));
  gzclose(f);
}

class DatasetTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ =
        fs::temp_directory_path() /
        ("da_ds_" + std::string(::testing::UnitTest::GetInstance()->current_test_info()->name()) +
         std::to_string(::getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  // A tiny Fashion-MNIST: `train` and `test` images of 28x28, pixel = index, label = index % 10.
  void WriteMnist(int train, int test, bool gz = true) {
    for (auto [name, n] : {std::pair{"train", train}, std::pair{"t10k", test}}) {
      std::vector<uint8_t> px(static_cast<size_t>(n) * 784), lab(n);
      for (int i = 0; i < n; ++i) {
        std::fill(px.begin() + i * 784, px.begin() + (i + 1) * 784, static_cast<uint8_t>(i));
        lab[i] = static_cast<uint8_t>(i % 10);
      }
      std::string img = Idx(0x803, {uint32_t(n), 28, 28}, px), lb = Idx(0x801, {uint32_t(n)}, lab);
      std::string base = std::string(name);
      if (gz) {
        WriteGz(dir_ / (base + "-images-idx3-ubyte.gz"), img);
        WriteGz(dir_ / (base + "-labels-idx1-ubyte.gz"), lb);
      } else {
        WriteRaw(dir_ / (base + "-images-idx3-ubyte"), img);
        WriteRaw(dir_ / (base + "-labels-idx1-ubyte"), lb);
      }
    }
  }

  // Expects LoadDataset to fail with a message containing every one of `parts`.
  void ExpectError(std::vector<std::string> parts, int64_t val = 5) {
    try {
      LoadDataset(dir_.string(), val);
      FAIL() << "no error";
    } catch (const da::UserError& e) {
      for (auto& p : parts) EXPECT_NE(std::string(e.what()).find(p), std::string::npos) << e.what();
    }
  }

  fs::path dir_;
};

TEST_F(DatasetTest, LoadsGzippedIdxAndHoldsOutTheLastImagesForValidation) {
  WriteMnist(30, 10);
  auto d = LoadDataset(dir_.string(), 5);
  EXPECT_EQ(d.name, "fashion-mnist");
  EXPECT_EQ(d.train.count, 25);
  EXPECT_EQ(d.val.count, 5);
  EXPECT_EQ(d.test.count, 10);
  EXPECT_EQ(d.train.channels, 1);
  EXPECT_EQ(d.train.height, 28);
  EXPECT_EQ(d.val.pixels[0], 25);  // first validation image is training image 25
  EXPECT_EQ(d.val.labels[0], 5);
  EXPECT_EQ(d.test.pixels[9 * 784], 9);
  EXPECT_EQ(d.Classes(), 10);
}

TEST(Dataset, FashionMnistFromTheDebianPackageSplitsAsDocumented) {
  auto d = LoadDataset(da::nn::kFashionMnistDir);
  EXPECT_EQ(d.train.count, 55000);
  EXPECT_EQ(d.val.count, 5000);
  EXPECT_EQ(d.test.count, 10000);
  EXPECT_EQ(d.train.height, 28);
  std::vector<int> per_class(10, 0);
  for (uint8_t l : d.test.labels) per_class[l]++;
  EXPECT_EQ(per_class, std::vector<int>(10, 1000));
}

TEST_F(DatasetTest, LoadsUncompressedIdx) {
  WriteMnist(12, 3, /*gz=*/false);
  EXPECT_EQ(LoadDataset(dir_.string(), 2).train.count, 10);
}

TEST_F(DatasetTest, MissingFileIsNamed) {
  WriteMnist(30, 10);
  fs::remove(dir_ / "t10k-labels-idx1-ubyte.gz");
  ExpectError({"t10k-labels-idx1-ubyte", "not found"});
}

TEST_F(DatasetTest, MissingDirectory) {
  try {
    LoadDataset((dir_ / "nope").string());
    FAIL();
  } catch (const da::UserError& e) {
    EXPECT_NE(std::string(e.what()).find("not found"), std::string::npos);
  }
}

TEST_F(DatasetTest, BadMagic) {
  WriteMnist(30, 10);
  WriteGz(dir_ / "train-images-idx3-ubyte.gz",
          Idx(0x801, {30, 28, 28}, std::vector<uint8_t>(30 * 784)));
  ExpectError({"train-images-idx3-ubyte", "bad magic"});
}

TEST_F(DatasetTest, ImageAndLabelCountsDisagree) {
  WriteMnist(30, 10);
  WriteGz(dir_ / "train-labels-idx1-ubyte.gz", Idx(0x801, {29}, std::vector<uint8_t>(29)));
  ExpectError({"29 labels", "30 images"});
}

TEST_F(DatasetTest, ShortRead) {
  WriteMnist(30, 10);
  WriteGz(dir_ / "t10k-images-idx3-ubyte.gz",
          Idx(0x803, {10, 28, 28}, std::vector<uint8_t>(10 * 784 - 7)));
  ExpectError({"t10k-images-idx3-ubyte", "truncated"});
}

TEST_F(DatasetTest, TruncatedHeader) {
  WriteMnist(30, 10);
  WriteGz(dir_ / "train-images-idx3-ubyte.gz", std::string("\0\0\x08\x03\0\0", 6));
  ExpectError({"train-images-idx3-ubyte", "truncated IDX header"});
}

TEST_F(DatasetTest, CorruptGzip) {
  WriteMnist(30, 10);
  std::string gz = da::ReadFile((dir_ / "train-images-idx3-ubyte.gz").string());
  for (size_t i = 20; i < gz.size(); i += 7) gz[i] = static_cast<char>(gz[i] ^ 0x5a);
  WriteRaw(dir_ / "train-images-idx3-ubyte.gz", gz);
  ExpectError({"train-images-idx3-ubyte", "gzip"});
}

TEST_F(DatasetTest, TruncatedGzip) {
  WriteMnist(30, 10);
  std::string gz = da::ReadFile((dir_ / "train-images-idx3-ubyte.gz").string());
  WriteRaw(dir_ / "train-images-idx3-ubyte.gz", gz.substr(0, gz.size() / 2));
  ExpectError({"train-images-idx3-ubyte"});
}

TEST_F(DatasetTest, LabelOutOfRange) {
  WriteMnist(30, 10);
  std::vector<uint8_t> lab(30, 1);
  lab[3] = 10;
  WriteGz(dir_ / "train-labels-idx1-ubyte.gz", Idx(0x801, {30}, lab));
  ExpectError({"label 10 out of range"});
}

TEST_F(DatasetTest, ValidationLargerThanTrainingSet) {
  WriteMnist(30, 10);
  ExpectError({"30 images", "validation"}, 30);
}

TEST_F(DatasetTest, LoadsCifarBatchesAndRejectsTruncatedOnes) {
  auto records = [](int n, int first) {
    std::string out;
    for (int i = 0; i < n; ++i) {
      out.push_back(static_cast<char>((first + i) % 10));
      out.append(3072, static_cast<char>(first + i));
    }
    return out;
  };
  for (int b = 1; b <= 5; ++b)
    WriteRaw(dir_ / ("data_batch_" + std::to_string(b) + ".bin"), records(4, b * 10));
  WriteRaw(dir_ / "test_batch.bin", records(3, 100));
  auto d = LoadDataset(dir_.string(), 5);
  EXPECT_EQ(d.name, "cifar10");
  EXPECT_EQ(d.train.count, 15);
  EXPECT_EQ(d.val.count, 5);
  EXPECT_EQ(d.test.count, 3);
  EXPECT_EQ(d.train.channels, 3);
  EXPECT_EQ(d.train.height, 32);
  EXPECT_EQ(d.val.pixels[0], 43);  // image 15 of 20: batch 4, record 4
  EXPECT_EQ(d.test.labels[2], 2);

  WriteRaw(dir_ / "data_batch_3.bin", records(4, 30).substr(0, 3073 * 3 + 100));
  ExpectError({"data_batch_3.bin", "3073"});
  WriteRaw(dir_ / "data_batch_3.bin", records(4, 30));
  std::string bad = records(3, 100);
  bad[3073] = 11;
  WriteRaw(dir_ / "test_batch.bin", bad);
  ExpectError({"test_batch.bin", "label 11"});
  fs::remove(dir_ / "data_batch_4.bin");
  ExpectError({"data_batch_4.bin", "not found"});
}

}  // namespace
