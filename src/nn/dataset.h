#pragma once
// Image-classification datasets: Fashion-MNIST (IDX files, gzipped or not) and
// CIFAR-10 (binary batches). Training images minus the last `val_count` train;
// those last images are the validation split; the test split is only reported.
#include <cstdint>
#include <string>
#include <vector>

namespace da::nn {

inline constexpr const char* kFashionMnistDir = "/usr/share/datasets/fashion-mnist";

// A set of images, uint8 pixels in NCHW order, labels in [0, classes).
struct Images {
  int64_t count = 0;
  int channels = 0, height = 0, width = 0;
  std::vector<uint8_t> pixels;
  std::vector<uint8_t> labels;

  int64_t PixelsPerImage() const { return int64_t{channels} * height * width; }
  // The first min(n, count) images.
  Images First(int64_t n) const;
  // Images [begin, end).
  Images Slice(int64_t begin, int64_t end) const;
};

struct Dataset {
  std::string name;  // "fashion-mnist" or "cifar10"
  std::string dir;   // absolute path it was loaded from
  std::vector<std::string> class_names;
  Images train, val, test;
  int Classes() const { return static_cast<int>(class_names.size()); }
};

// Loads the dataset in `dir`, detecting the format from the file names present.
// Throws UserError naming the file and the problem (missing, bad gzip, bad magic,
// wrong counts, short read, label out of range).
Dataset LoadDataset(const std::string& dir, int64_t val_count = 5000);

// Reads one IDX file (gzipped or raw). Exposed for tests.
struct IdxArray {
  std::vector<int> dims;
  std::vector<uint8_t> data;
};
IdxArray ReadIdx(const std::string& path, int expected_rank);

}  // namespace da::nn
