#pragma once
// A model directory: spec.json, weights.pt, metrics.json (written last, so a
// directory with metrics.json is complete) and, once exported, model.onnx.
#include <nlohmann/json.hpp>
#include <string>

#include "nn/dataset.h"
#include "nn/model.h"
#include "nn/model_files.h"
#include "nn/train.h"

namespace da::nn {

// Reads DIR/spec.json and DIR/weights.pt. Throws UserError naming what is wrong.
Net LoadModelDir(const std::string& dir);

// Writes weights, spec and metrics, each atomically, metrics last.
void SaveModelDir(const std::string& dir, NetImpl& net, const nlohmann::json& metrics);

// The metrics every model directory records: accuracies (validation and test,
// per-class test), params, MACs, bytes.
nlohmann::json ModelMetrics(Net& net, const Dataset& data);

// Trains a model of `spec` on `data` and saves it with its metrics (including the
// training options, dataset and per-epoch log) into `dir`. Returns the metrics.
nlohmann::json TrainModelDir(const ModelSpec& spec, const Dataset& data, const TrainOptions& opts,
                             const std::string& dir);

}  // namespace da::nn
