#include "context/predictor.h"

#include "nn/onnx_export.h"

namespace da::context {

Prediction Predict(const Context& c, double reference_ms, int64_t bytes) {
  Prediction p;
  const double transfer_ms = static_cast<double>(bytes) * 8 / c.downlink_kbps;  // kbit/s = bit/ms
  p.download_ms = (c.rtt_ms + transfer_ms) / c.inferences;
  p.compute_ms = reference_ms * c.slowdown;
  p.total_ms = p.download_ms + p.compute_ms;
  p.energy_mj = c.compute_mw * p.compute_ms / 1000 +
                (c.transfer_mw * transfer_ms / 1000 + c.tail_mj) / c.inferences;
  return p;
}

Prediction Predict(const Context& c, const LatencyTable& table, const nn::ModelSpec& spec) {
  return Predict(c, table.ModelMs(spec), nn::OnnxBytes(spec));
}

}  // namespace da::context
