#include "engine/onnx_reader.h"

#include <cstring>

#include "common/error.h"

namespace da::engine::onnx {

namespace {

[[noreturn]] void Bad(const std::string& why) {
  throw UserError("ONNX model: not a valid ONNX protobuf (" + why + ")");
}

enum Wire { kVarint = 0, kFixed64 = 1, kLen = 2, kFixed32 = 5 };

// One message's bytes, read field by field.
class Fields {
 public:
  explicit Fields(std::string_view b)
      : p_(reinterpret_cast<const uint8_t*>(b.data())), end_(p_ + b.size()) {}

  bool AtEnd() const { return p_ == end_; }

  // The next field's number and wire type; false at the end.
  bool Next(uint32_t& field, int& wire) {
    if (AtEnd()) return false;
    const uint64_t tag = Varint();
    field = static_cast<uint32_t>(tag >> 3);
    wire = static_cast<int>(tag & 7);
    if (field == 0 || tag >> 32) Bad("field number " + std::to_string(tag >> 3));
    if (wire != kVarint && wire != kFixed64 && wire != kLen && wire != kFixed32)
      Bad("wire type " + std::to_string(wire) + " of field " + std::to_string(field));
    return true;
  }

  uint64_t Varint() {
    uint64_t v = 0;
    for (int shift = 0; shift < 70; shift += 7) {
      if (AtEnd()) Bad("truncated varint");
      const uint8_t b = *p_++;
      v |= uint64_t(b & 0x7f) << shift;
      if (!(b & 0x80)) return v;
    }
    Bad("varint longer than 10 bytes");
  }

  std::string_view Len() {
    const uint64_t n = Varint();
    if (n > uint64_t(end_ - p_)) Bad("a field of " + std::to_string(n) + " bytes is truncated");
    std::string_view s(reinterpret_cast<const char*>(p_), size_t(n));
    p_ += n;
    return s;
  }

  float Float() {
    if (end_ - p_ < 4) Bad("truncated fixed32");
    float v;
    std::memcpy(&v, p_, 4);  // little-endian, as on every target we build for
    p_ += 4;
    return v;
  }

  void Skip(int wire) {
    switch (wire) {
      case kVarint:
        Varint();
        break;
      case kFixed64:
        if (end_ - p_ < 8) Bad("truncated fixed64");
        p_ += 8;
        break;
      case kLen:
        Len();
        break;
      default:
        Float();
    }
  }

 private:
  const uint8_t* p_;
  const uint8_t* end_;
};

// Each reader below gets a field's number and wire type and either consumes
// the field or returns false (skipped as unknown).
class Decoder {
 public:
  Decoder(Fields& f, uint32_t field, int wire) : f_(f), field_(field), wire_(wire) {}

  std::string Str() { return std::string(Len()); }
  std::string_view Len() {
    Expect(kLen);
    return f_.Len();
  }
  int64_t Int() {
    Expect(kVarint);
    return static_cast<int64_t>(f_.Varint());
  }
  float Float() {
    Expect(kFixed32);
    return f_.Float();
  }
  // Repeated scalars: packed, or one per field.
  void Ints(std::vector<int64_t>& out) {
    if (wire_ == kVarint) return out.push_back(Int());
    Fields packed(Len());
    while (!packed.AtEnd()) out.push_back(static_cast<int64_t>(packed.Varint()));
  }
  void Floats(std::vector<float>& out) {
    if (wire_ == kFixed32) return out.push_back(Float());
    Fields packed(Len());
    while (!packed.AtEnd()) out.push_back(packed.Float());
  }

 private:
  void Expect(int want) {
    if (wire_ != want)
      Bad("field " + std::to_string(field_) + " has wire type " + std::to_string(wire_));
  }
  Fields& f_;
  uint32_t field_;
  int wire_;
};

// Calls `on(field, decoder)` for every field of `bytes`; a field it does not
// take (false) is skipped.
template <typename F>
void ForEach(std::string_view bytes, F on) {
  Fields f(bytes);
  uint32_t field;
  int wire;
  while (f.Next(field, wire)) {
    Decoder d(f, field, wire);
    if (!on(field, d)) f.Skip(wire);
  }
}

void ReadTensor(std::string_view b, Tensor& t) {
  ForEach(b, [&](uint32_t field, Decoder& d) {
    switch (field) {
      case 1: return d.Ints(t.dims), true;
      case 2: return t.data_type = int32_t(d.Int()), true;
      case 4: return d.Floats(t.floats), true;
      case 8: return t.name = d.Str(), true;
      case 9: return t.raw = d.Len(), t.has_raw = true, true;
      case 14: return t.data_location = int32_t(d.Int()), true;
      default: return false;
    }
  });
}

void ReadAttribute(std::string_view b, Attribute& a) {
  ForEach(b, [&](uint32_t field, Decoder& d) {
    switch (field) {
      case 1: return a.name = d.Str(), true;
      case 2: return a.f = d.Float(), true;
      case 3: return a.i = d.Int(), true;
      case 4: return a.s = d.Str(), true;
      case 8: return d.Ints(a.ints), true;
      case 20: return a.type = int32_t(d.Int()), true;
      default: return false;
    }
  });
}

void ReadNode(std::string_view b, Node& n) {
  ForEach(b, [&](uint32_t field, Decoder& d) {
    switch (field) {
      case 1: return n.inputs.push_back(d.Str()), true;
      case 2: return n.outputs.push_back(d.Str()), true;
      case 3: return n.name = d.Str(), true;
      case 4: return n.op_type = d.Str(), true;
      case 5: return ReadAttribute(d.Len(), n.attributes.emplace_back()), true;
      case 7: return n.domain = d.Str(), true;
      default: return false;
    }
  });
}

// ValueInfoProto → TypeProto → TypeProto.Tensor → TensorShapeProto → Dimension.
void ReadValueInfo(std::string_view b, ValueInfo& v) {
  auto dim = [&](std::string_view b) {
    auto& x = v.dims.emplace_back();
    ForEach(b, [&](uint32_t field, Decoder& d) {
      if (field != 1) return false;
      x.value = d.Int(), x.has_value = true;
      return true;
    });
  };
  auto tensor = [&](std::string_view b) {
    v.has_tensor_type = true;
    ForEach(b, [&](uint32_t field, Decoder& d) {
      if (field == 1) return v.elem_type = int32_t(d.Int()), true;
      if (field != 2) return false;
      ForEach(d.Len(), [&](uint32_t field, Decoder& d) {
        if (field != 1) return false;
        return dim(d.Len()), true;
      });
      return true;
    });
  };
  ForEach(b, [&](uint32_t field, Decoder& d) {
    if (field == 1) return v.name = d.Str(), true;
    if (field != 2) return false;
    ForEach(d.Len(), [&](uint32_t field, Decoder& d) {
      if (field != 1) return false;
      return tensor(d.Len()), true;
    });
    return true;
  });
}

void ReadGraph(std::string_view b, Graph& g) {
  ForEach(b, [&](uint32_t field, Decoder& d) {
    switch (field) {
      case 1: return ReadNode(d.Len(), g.nodes.emplace_back()), true;
      case 5: return ReadTensor(d.Len(), g.initializers.emplace_back()), true;
      case 11: return ReadValueInfo(d.Len(), g.inputs.emplace_back()), true;
      case 12: return ReadValueInfo(d.Len(), g.outputs.emplace_back()), true;
      default: return false;
    }
  });
}

}  // namespace

Model Read(std::string_view bytes) {
  Model m;
  ForEach(bytes, [&](uint32_t field, Decoder& d) {
    if (field == 7) return ReadGraph(d.Len(), m.graph), true;
    if (field != 8) return false;
    auto& o = m.opsets.emplace_back();
    ForEach(d.Len(), [&](uint32_t field, Decoder& d) {
      if (field == 1) return o.first = d.Str(), true;
      if (field == 2) return o.second = d.Int(), true;
      return false;
    });
    return true;
  });
  return m;
}

}  // namespace da::engine::onnx
