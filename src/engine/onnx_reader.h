#pragma once
// The part of ONNX's protobuf (onnx/onnx.proto) the engine reads, decoded from
// the wire format by hand: no protobuf library, so the same reader builds for
// the services and for WebAssembly (a protobuf runtime alone would be larger
// than the whole browser runtime). Fields outside this subset are skipped as
// protobuf does; repeated occurrences of a message merge as protobuf merges
// them. Private to src/engine.
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace da::engine::onnx {

inline constexpr int32_t kFloat = 1;  // TensorProto.DataType FLOAT
enum AttributeType : int32_t { kAttrFloat = 1, kAttrInt = 2, kAttrString = 3, kAttrInts = 7 };

struct Tensor {
  std::string name;
  std::vector<int64_t> dims;
  int32_t data_type = 0;
  int32_t data_location = 0;  // 0: DEFAULT (in the file)
  bool has_raw = false;
  std::string_view raw;       // into the bytes given to Read
  std::vector<float> floats;  // float_data
};

struct Attribute {
  std::string name;
  int32_t type = 0;
  float f = 0;
  int64_t i = 0;
  std::string s;
  std::vector<int64_t> ints;
};

struct Node {
  std::string name, op_type, domain;
  std::vector<std::string> inputs, outputs;
  std::vector<Attribute> attributes;
};

struct ValueInfo {
  std::string name;
  bool has_tensor_type = false;
  int32_t elem_type = 0;
  struct Dim {
    bool has_value = false;
    int64_t value = 0;
  };
  std::vector<Dim> dims;
};

struct Graph {
  std::vector<Node> nodes;
  std::vector<Tensor> initializers;
  std::vector<ValueInfo> inputs, outputs;
};

struct Model {
  std::vector<std::pair<std::string, int64_t>> opsets;  // domain, version
  Graph graph;
};

// Decodes `bytes` (kept alive by the caller: raw tensor data points into it).
// UserError "ONNX model: not a valid ONNX protobuf (...)" on a malformed file.
Model Read(std::string_view bytes);

}  // namespace da::engine::onnx
