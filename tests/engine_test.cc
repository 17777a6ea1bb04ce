// The inference engine (src/engine), both backends (oneDNN and portable),
// against libtorch on both families, default and odd widths, both input
// shapes, batch 1, 7 and 64; the portable backend against the oneDNN one;
// hostile model files. (onnxruntime against the engine:
// Export.OnnxruntimeMatchesLibtorch.)
#include "engine/engine.h"

#include <gtest/gtest.h>
#include <onnx/onnx_pb.h>

#include <atomic>
#include <cstring>
#include <random>
#include <thread>
#include <type_traits>

#include "common/error.h"
#include "engine/portable.h"
#include "nn/onnx_export.h"
#include "test_util.h"

using namespace da;

namespace {

std::vector<nn::ModelSpec> AllSpecs() {
  std::vector<nn::ModelSpec> specs = test::OddSpecs();
  for (auto f : {nn::Family::kVgg, nn::Family::kResnet}) {
    specs.push_back(nn::ModelSpec::Default(f));
    specs.push_back(nn::ModelSpec::Default(f, 3, 32, 32));
  }
  return specs;
}

template <typename M>
class Engine : public ::testing::Test {};
using Backends = ::testing::Types<engine::Model, engine::PortableModel>;
class BackendName {
 public:
  template <typename M>
  static std::string GetName(int) {
    return std::is_same_v<M, engine::Model> ? "OneDnn" : "Portable";
  }
};
TYPED_TEST_SUITE(Engine, Backends, BackendName);

}  // namespace

TYPED_TEST(Engine, MatchesLibtorchOnBothFamilies) {
  torch::manual_seed(3);
  for (const nn::ModelSpec& s : AllSpecs()) {
    nn::Net net(s);
    test::RandomizeBatchNorm(*net);
    net->eval();
    TypeParam m(nn::OnnxModelBytes(*net));
    EXPECT_EQ(m.channels(), s.channels);
    EXPECT_EQ(m.height(), s.height);
    EXPECT_EQ(m.classes(), s.classes);
    // Every Relu fused; resnet's residual Adds into their convs.
    EXPECT_EQ(m.Describe().find(" Relu"), std::string::npos) << m.Describe();
    EXPECT_EQ(m.Describe().find("Add"), std::string::npos) << m.Describe();
    for (int64_t n : {1, 7, 64}) {
      torch::Tensor x = torch::rand({n, s.channels, s.height, s.width});
      torch::Tensor want;
      {
        torch::NoGradGuard g;
        want = net->forward(x).contiguous();
      }
      std::vector<float> got(static_cast<size_t>(n * s.classes));
      for (int rep = 0; rep < 2; ++rep) {  // the second run reuses the plan
        std::fill(got.begin(), got.end(), NAN);
        m.Run(x.data_ptr<float>(), n, got.data());
        float max_diff = 0;
        int same = 0;
        for (int64_t i = 0; i < n; ++i) {
          int64_t a = 0, b = 0;
          for (int64_t j = 0; j < s.classes; ++j) {
            const float g = got[size_t(i * s.classes + j)], w = want[i][j].item<float>();
            max_diff = std::max(max_diff, std::isfinite(g) ? std::abs(g - w) : INFINITY);
            if (g > got[size_t(i * s.classes + a)]) a = j;
            if (w > want[i][b].item<float>()) b = j;
          }
          same += a == b;
        }
        EXPECT_LE(max_diff, 1e-4) << s.Summary() << " batch " << n;
        EXPECT_EQ(same, n) << s.Summary() << " batch " << n;
      }
    }
  }
}

TYPED_TEST(Engine, HostileModelsGetClearErrors) {
  torch::manual_seed(1);
  nn::Net net(test::OddSpecs()[2]);  // a small resnet
  const std::string good = nn::OnnxModelBytes(*net);
  auto error = [](const std::string& bytes) -> std::string {
    try {
      TypeParam m(bytes);
    } catch (const UserError& e) {
      return e.what();
    }
    return "";
  };
  EXPECT_NE(error(good.substr(0, good.size() / 2)), "");
  EXPECT_NE(error(""), "");
  EXPECT_NE(error("not a model at all"), "");
  auto edited = [&](auto edit) {
    onnx::ModelProto m;
    EXPECT_TRUE(m.ParseFromString(good));
    edit(m);
    std::string out;
    m.SerializeToString(&out);
    return error(out);
  };
  EXPECT_NE(edited([](onnx::ModelProto& m) {
              m.mutable_graph()->mutable_node(0)->set_op_type("Softmax");
            }).find("operator 'Softmax' is not supported"),
            std::string::npos);
  EXPECT_NE(edited([](onnx::ModelProto& m) {
              m.mutable_graph()
                  ->mutable_input(0)
                  ->mutable_type()
                  ->mutable_tensor_type()
                  ->mutable_shape()
                  ->mutable_dim(2)
                  ->set_dim_value(1LL << 40);
            }).find("input"),
            std::string::npos);
  EXPECT_NE(edited([](onnx::ModelProto& m) {
              m.mutable_graph()->mutable_initializer(0)->set_dims(0, 1LL << 40);
            }).find("initializer"),
            std::string::npos);
  EXPECT_NE(edited([](onnx::ModelProto& m) {
              m.mutable_graph()->mutable_initializer(0)->mutable_raw_data()->resize(3);
            }).find("bytes of data"),
            std::string::npos);
  EXPECT_NE(edited([](onnx::ModelProto& m) {
              m.mutable_graph()->mutable_node(1)->set_input(0, "nowhere");
            }).find("not computed before"),
            std::string::npos);
  EXPECT_NE(edited([](onnx::ModelProto& m) {
              m.mutable_graph()->mutable_initializer(0)->set_data_type(onnx::TensorProto::DOUBLE);
            }).find("float32"),
            std::string::npos);
  // Bad batch sizes are refused before anything runs.
  TypeParam ok(good);
  std::vector<float> x(static_cast<size_t>(ok.channels() * ok.height() * ok.width())), y(10);
  EXPECT_THROW(ok.Run(x.data(), 0, y.data()), UserError);
  EXPECT_THROW(ok.Run(x.data(), 1 << 20, y.data()), UserError);
}

// Mutation fuzzing: random byte flips, truncations and splices of a valid
// model either load (and then run) or give a UserError; never a crash.
TYPED_TEST(Engine, MutatedModelsNeverCrash) {
  torch::manual_seed(2);
  nn::Net net(test::OddSpecs()[0]);
  const std::string good = nn::OnnxModelBytes(*net);
  std::mt19937 rng(11);
  int loaded = 0, refused = 0;
  for (int i = 0; i < 10000; ++i) {
    std::string b = good;
    const int edits = 1 + int(rng() % 4);
    for (int e = 0; e < edits; ++e) {
      const size_t at = rng() % b.size();
      switch (rng() % 4) {
        case 0:
          b[at] = char(rng());
          break;
        case 1:
          b[at] ^= char(1 << (rng() % 8));
          break;
        case 2:
          b.resize(at);
          break;
        case 3:
          b.insert(at, good.substr(rng() % good.size(), 1 + rng() % 16));
          break;
      }
      if (b.empty()) break;
    }
    try {
      TypeParam m(b);
      std::vector<float> x(static_cast<size_t>(2 * m.channels() * m.height() * m.width()), 0.5f);
      std::vector<float> y(static_cast<size_t>(2 * m.classes()));
      m.Run(x.data(), 2, y.data());
      ++loaded;
    } catch (const UserError&) {
      ++refused;
    }
  }
  EXPECT_GT(refused, 0);
  std::printf("mutated models: %d loaded and ran, %d refused with a UserError\n", loaded, refused);
}

// Callers on several threads take turns: every answer equals the one-thread answer.
TYPED_TEST(Engine, ConcurrentCallersGetTheSameAnswers) {
  torch::manual_seed(4);
  nn::Net net(test::OddSpecs()[2]);
  TypeParam m(nn::OnnxModelBytes(*net));
  const int64_t pixels = m.channels() * m.height() * m.width();
  std::vector<std::vector<float>> inputs, want;
  for (int64_t n : {1, 3, 8, 1}) {
    torch::Tensor x = torch::rand({n * pixels});
    inputs.emplace_back(x.data_ptr<float>(), x.data_ptr<float>() + n * pixels);
    want.emplace_back(static_cast<size_t>(n * m.classes()));
    m.Run(inputs.back().data(), n, want.back().data());
  }
  std::atomic<int> wrong{0};
  std::vector<std::thread> threads;
  for (size_t t = 0; t < inputs.size(); ++t)
    threads.emplace_back([&, t] {
      const int64_t n = int64_t(inputs[t].size()) / pixels;
      std::vector<float> got(want[t].size());
      for (int i = 0; i < 50; ++i) {
        m.Run(inputs[t].data(), n, got.data());
        wrong += got != want[t];
      }
    });
  for (auto& t : threads) t.join();
  EXPECT_EQ(wrong, 0);
}

// The portable backend within 1e-4 of the oneDNN one, image by image.
TEST(PortableEngine, MatchesOneDnn) {
  torch::manual_seed(5);
  for (const nn::ModelSpec& s : AllSpecs()) {
    nn::Net net(s);
    test::RandomizeBatchNorm(*net);
    net->eval();
    const std::string bytes = nn::OnnxModelBytes(*net);
    engine::Model dnnl(bytes);
    engine::PortableModel portable(bytes);
    EXPECT_EQ(portable.Describe(), dnnl.Describe());
    const int64_t n = 5;
    torch::Tensor x = torch::rand({n, s.channels, s.height, s.width});
    std::vector<float> a(size_t(n * s.classes)), b(a.size());
    dnnl.Run(x.data_ptr<float>(), n, a.data());
    portable.Run(x.data_ptr<float>(), n, b.data());
    float max_diff = 0;
    for (size_t i = 0; i < a.size(); ++i) max_diff = std::max(max_diff, std::abs(a[i] - b[i]));
    EXPECT_LE(max_diff, 1e-4) << s.Summary();
  }
}

// The engine's own protobuf reader sees what libprotobuf sees, on files
// written with packed and unpacked repeated fields and unknown fields.
TEST(OnnxReader, AgreesWithProtobuf) {
  torch::manual_seed(6);
  nn::Net net(test::OddSpecs()[2]);
  onnx::ModelProto m;
  ASSERT_TRUE(m.ParseFromString(nn::OnnxModelBytes(*net)));
  // float_data instead of raw_data for one initializer, and a doc string the reader skips.
  auto* t = m.mutable_graph()->mutable_initializer(0);
  const std::string raw = t->raw_data();
  t->clear_raw_data();
  for (size_t i = 0; i < raw.size() / 4; ++i) {
    float f;
    std::memcpy(&f, raw.data() + 4 * i, 4);
    t->add_float_data(f);
  }
  m.mutable_graph()->mutable_node(0)->set_doc_string("skipped");
  m.set_producer_name("test");
  std::string bytes;
  m.SerializeToString(&bytes);
  engine::Model a(nn::OnnxModelBytes(*net)), b(bytes);
  engine::PortableModel c(bytes);
  std::vector<float> x(size_t(a.channels() * a.height() * a.width()), 0.25f);
  std::vector<float> ya(size_t(a.classes())), yb(ya.size()), yc(ya.size());
  a.Run(x.data(), 1, ya.data());
  b.Run(x.data(), 1, yb.data());
  c.Run(x.data(), 1, yc.data());
  EXPECT_EQ(ya, yb);
  for (size_t i = 0; i < ya.size(); ++i) EXPECT_NEAR(ya[i], yc[i], 1e-4);
  // Wire-level garbage: a group (wire type 3), an over-long varint.
  for (const std::string& bad : {std::string("\x0b", 1), std::string(11, '\xff')}) {
    try {
      engine::PortableModel m(bad);
      ADD_FAILURE() << "accepted";
    } catch (const UserError& e) {
      EXPECT_NE(std::string(e.what()).find("not a valid ONNX protobuf"), std::string::npos);
    }
  }
}
