#include "nn/dataset.h"

#include <zlib.h>

#include <algorithm>
#include <filesystem>

#include "common/error.h"

namespace da::nn {
namespace fs = std::filesystem;

Images Images::Slice(int64_t begin, int64_t end) const {
  begin = std::clamp<int64_t>(begin, 0, count);
  end = std::clamp<int64_t>(end, begin, count);
  Images out;
  out.count = end - begin;
  out.channels = channels;
  out.height = height;
  out.width = width;
  out.pixels.assign(pixels.begin() + begin * PixelsPerImage(),
                    pixels.begin() + end * PixelsPerImage());
  out.labels.assign(labels.begin() + begin, labels.begin() + end);
  return out;
}

Images Images::First(int64_t n) const { return Slice(0, n); }

namespace {

// Reads a whole file through zlib, which also reads uncompressed files as they are.
std::string ReadMaybeGzip(const std::string& path) {
  if (!fs::exists(path)) throw UserError(path + ": file not found");
  gzFile f = gzopen(path.c_str(), "rb");
  if (!f) throw UserError(path + ": cannot open");
  std::string out;
  char buf[1 << 16];
  for (;;) {
    int n = gzread(f, buf, sizeof buf);
    if (n < 0) {
      int code = 0;
      std::string msg = gzerror(f, &code);
      gzclose(f);
      throw UserError(path + ": bad gzip data (" + msg + ")");
    }
    if (n == 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  int code = 0;
  const char* msg = gzerror(f, &code);
  if (code != Z_OK && code != Z_STREAM_END) {
    std::string m = msg;
    gzclose(f);
    throw UserError(path + ": bad gzip data (" + m + ")");
  }
  if (gzclose(f) != Z_OK) throw UserError(path + ": bad or truncated gzip data");
  return out;
}

uint32_t BigEndian32(const std::string& s, size_t at) {
  auto b = [&](size_t i) { return static_cast<uint32_t>(static_cast<uint8_t>(s[at + i])); };
  return b(0) << 24 | b(1) << 16 | b(2) << 8 | b(3);
}

std::string FindFile(const std::string& dir, const std::string& name) {
  for (const std::string& candidate : {name + ".gz", name}) {
    fs::path p = fs::path(dir) / candidate;
    if (fs::exists(p)) return p.string();
  }
  return (fs::path(dir) / (name + ".gz")).string();  // reported as missing
}

Images LoadIdxPair(const std::string& images_path, const std::string& labels_path, int classes) {
  IdxArray img = ReadIdx(images_path, 3);
  IdxArray lab = ReadIdx(labels_path, 1);
  if (img.dims[0] != lab.dims[0])
    throw UserError(labels_path + ": has " + std::to_string(lab.dims[0]) + " labels but " +
                    images_path + " has " + std::to_string(img.dims[0]) + " images");
  for (uint8_t l : lab.data)
    if (l >= classes)
      throw UserError(labels_path + ": label " + std::to_string(l) + " out of range");
  Images out;
  out.count = img.dims[0];
  out.channels = 1;
  out.height = img.dims[1];
  out.width = img.dims[2];
  out.pixels = std::move(img.data);
  out.labels = std::move(lab.data);
  return out;
}

constexpr int kCifarSide = 32;
constexpr int64_t kCifarRecord = 1 + 3 * kCifarSide * kCifarSide;

void AppendCifar(const std::string& path, Images& out) {
  if (!fs::exists(path)) throw UserError(path + ": file not found");
  std::string bytes = ReadMaybeGzip(path);
  if (bytes.empty() || bytes.size() % kCifarRecord != 0)
    throw UserError(path + ": size " + std::to_string(bytes.size()) +
                    " is not a whole number of 3073-byte CIFAR-10 records (truncated?)");
  int64_t n = static_cast<int64_t>(bytes.size()) / kCifarRecord;
  out.channels = 3;
  out.height = out.width = kCifarSide;
  for (int64_t i = 0; i < n; ++i) {
    const char* rec = bytes.data() + i * kCifarRecord;
    auto label = static_cast<uint8_t>(rec[0]);
    if (label >= 10)
      throw UserError(path + ": record " + std::to_string(i) + " has label " +
                      std::to_string(label) + ", expected 0-9");
    out.labels.push_back(label);
    out.pixels.insert(out.pixels.end(), rec + 1, rec + kCifarRecord);
  }
  out.count += n;
}

Dataset SplitValidation(Dataset d, const std::string& dir, int64_t val_count) {
  if (val_count < 1 || d.train.count <= val_count)
    throw UserError(dir + ": training set has " + std::to_string(d.train.count) +
                    " images, need more than the " + std::to_string(val_count) +
                    " held out for validation");
  Images all = std::move(d.train);
  d.train = all.Slice(0, all.count - val_count);
  d.val = all.Slice(all.count - val_count, all.count);
  return d;
}

}  // namespace

IdxArray ReadIdx(const std::string& path, int expected_rank) {
  std::string bytes = ReadMaybeGzip(path);
  if (bytes.size() < 4) throw UserError(path + ": too short for an IDX header");
  uint32_t magic = BigEndian32(bytes, 0);
  int rank = static_cast<int>(magic & 0xff);
  if ((magic >> 8) != 0x08 || rank != expected_rank)
    throw UserError(path + ": bad magic number 0x" +
                    [&] {
                      char b[16];
                      std::snprintf(b, sizeof b, "%08x", magic);
                      return std::string(b);
                    }() +
                    " (expected unsigned-byte IDX with " + std::to_string(expected_rank) +
                    " dimensions)");
  size_t header = 4 + 4 * static_cast<size_t>(rank);
  if (bytes.size() < header) throw UserError(path + ": truncated IDX header");
  IdxArray out;
  uint64_t total = 1;
  for (int i = 0; i < rank; ++i) {
    uint32_t d = BigEndian32(bytes, 4 + 4 * i);
    if (d == 0 || d > (1u << 28)) throw UserError(path + ": bad dimension " + std::to_string(d));
    out.dims.push_back(static_cast<int>(d));
    total *= d;
  }
  if (bytes.size() - header != total)
    throw UserError(
        path + ": header promises " + std::to_string(total) + " bytes of data, file has " +
        std::to_string(bytes.size() - header) +
        (bytes.size() - header < total ? " (short read / truncated)" : " (trailing bytes)"));
  out.data.assign(bytes.begin() + static_cast<std::ptrdiff_t>(header), bytes.end());
  return out;
}

Dataset LoadDataset(const std::string& dir, int64_t val_count) {
  if (!fs::is_directory(dir)) throw UserError(dir + ": data directory not found");
  Dataset d;
  d.dir = fs::absolute(dir).lexically_normal().string();
  if (fs::exists(fs::path(dir) / "data_batch_1.bin") ||
      fs::exists(fs::path(dir) / "test_batch.bin")) {
    d.name = "cifar10";
    d.class_names = {"airplane", "automobile", "bird",  "cat",  "deer",
                     "dog",      "frog",       "horse", "ship", "truck"};
    for (int i = 1; i <= 5; ++i)
      AppendCifar((fs::path(dir) / ("data_batch_" + std::to_string(i) + ".bin")).string(), d.train);
    AppendCifar((fs::path(dir) / "test_batch.bin").string(), d.test);
  } else {
    d.name = "fashion-mnist";
    d.class_names = {"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                     "Sandal",      "Shirt",   "Sneaker",  "Bag",   "Ankle boot"};
    d.train = LoadIdxPair(FindFile(dir, "train-images-idx3-ubyte"),
                          FindFile(dir, "train-labels-idx1-ubyte"), 10);
    d.test = LoadIdxPair(FindFile(dir, "t10k-images-idx3-ubyte"),
                         FindFile(dir, "t10k-labels-idx1-ubyte"), 10);
    if (d.test.height != d.train.height || d.test.width != d.train.width)
      throw UserError(dir + ": test images are " + std::to_string(d.test.height) + "x" +
                      std::to_string(d.test.width) + " but training images are " +
                      std::to_string(d.train.height) + "x" + std::to_string(d.train.width));
  }
  return SplitValidation(std::move(d), dir, val_count);
}

}  // namespace da::nn
