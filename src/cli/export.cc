// deepadapter export: write a model directory's deployed model as ONNX.
#include <filesystem>

#include "cli/commands.h"
#include "nn/model_dir.h"
#include "nn/onnx_export.h"

namespace da::cli {

void AddExport(CLI::App& app) {
  struct Flags {
    std::string dir, out;
  };
  auto f = std::make_shared<Flags>();
  auto* cmd = app.add_subcommand(
      "export", "Export a model directory as ONNX (opset 13, BN folded, dynamic batch)");
  cmd->add_option("dir", f->dir, "Model directory")->required();
  cmd->add_option("--out", f->out, "ONNX file to write (default: DIR/model.onnx)");
  cmd->callback([f] {
    nn::Net net = nn::LoadModelDir(f->dir);
    std::string out =
        f->out.empty() ? (std::filesystem::path(f->dir) / nn::kOnnxFile).string() : f->out;
    nn::ExportOnnx(*net, out);
    std::printf("%s  (%s bytes, %s)\n", out.c_str(),
                Thousands(std::filesystem::file_size(out)).c_str(), net->spec().Summary().c_str());
  });
}

}  // namespace da::cli
