#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>

#include "common/error.h"
#include "common/fs.h"
#include "common/sha256.h"
#include "nn/model_dir.h"
#include "nn/onnx_export.h"
#include "repo/repo.h"

namespace fs = std::filesystem;
using da::nn::ModelSpec;
using da::repo::Repository;

namespace {

// A family directory as `prune` writes it: base/ and branches/<name>/, family.json.
fs::path TinyFamily() {
  struct Dir {
    fs::path path;
    ~Dir() { fs::remove_all(path); }
  };
  static const Dir dir{[] {
    fs::path d = fs::temp_directory_path() / ("da-repo-family-" + std::to_string(::getpid()));
    fs::remove_all(d);
    nlohmann::json family = {{"base", {{"dir", "base"}}}, {"branches", nlohmann::json::array()}};
    int i = 0;
    for (const char* widths : {"8/16 fc16", "4/8 fc8", "2/4 fc4"}) {
      torch::manual_seed(i);
      da::nn::Net net(ModelSpec::Default(da::nn::Family::kVgg).WithWidths(widths));
      net->eval();
      const std::string sub = i == 0 ? "base" : "branches/c" + std::to_string(i);
      nlohmann::json m = {{"spec", net->spec().ToJson()}, {"val_accuracy", 0.5 + 0.1 * i},
                          {"reference_ms", 1.0 / (i + 1)}, {"bytes", 0}};
      if (i) {
        m["context"] = {{"name", "c" + std::to_string(i)}};
        m["threshold"] = {{"tau", 0.5}};
        family["branches"].push_back({{"context", "c" + std::to_string(i)}, {"dir", sub}});
      }
      da::nn::ExportOnnx(*net, (d / sub / da::nn::kOnnxFile).string());
      da::nn::SaveModelDir((d / sub).string(), *net, m);
      ++i;
    }
    da::WriteFileAtomic((d / "family.json").string(), family.dump());
    return d;
  }()};
  return dir.path;
}

fs::path FreshDir(const std::string& name) {
  fs::path d = fs::temp_directory_path() / (name + "-" + std::to_string(::getpid()));
  fs::remove_all(d);
  return d;
}

}  // namespace

TEST(Repository, ImportsAFamilyVerifiesAndReopens) {
  const fs::path dir = FreshDir("da-repo");
  {
    Repository repo(dir.string());
    EXPECT_EQ(repo.ImportFamily(TinyFamily().string()), 3);
    EXPECT_EQ(repo.ImportFamily(TinyFamily().string()), 0);  // idempotent
    // A rebuilt family (another model under a known id) is refused, not served stale.
    const fs::path rebuilt = dir.string() + "-rebuilt";
    fs::remove_all(rebuilt);
    fs::copy(TinyFamily(), rebuilt, fs::copy_options::recursive);
    da::WriteFileAtomic((rebuilt / "branches/c1/model.onnx").string(), "other bytes");
    try {
      repo.ImportFamily(rebuilt.string());
      ADD_FAILURE() << "a rebuilt family was imported";
    } catch (const da::UserError& e) {
      EXPECT_NE(std::string(e.what()).find("'c1' comes from another build"), std::string::npos)
          << e.what();
    }
    fs::remove_all(rebuilt);
  }
  Repository repo(dir.string());
  EXPECT_TRUE(repo.problems().empty());
  auto catalog = repo.Catalog()["models"];
  ASSERT_EQ(catalog.size(), 3u);
  EXPECT_EQ(catalog[0]["id"], "base");
  EXPECT_EQ(catalog[0]["kind"], "base");
  EXPECT_EQ(catalog[1]["id"], "c1");
  EXPECT_EQ(catalog[1]["kind"], "branch");
  EXPECT_EQ(catalog[1]["threshold"]["tau"], 0.5);
  EXPECT_EQ(catalog[2]["reference_ms"], 1.0 / 3);
  // Artifacts are content-addressed copies of the model files.
  const std::string onnx = da::ReadFile((TinyFamily() / "branches/c1/model.onnx").string());
  EXPECT_EQ(catalog[1]["onnx"]["sha256"], da::Sha256Hex(onnx));
  EXPECT_EQ(catalog[1]["onnx"]["bytes"], onnx.size());
  EXPECT_EQ(da::ReadFile(*repo.ArtifactPath("c1", "onnx")), onnx);
  EXPECT_EQ(da::ReadFile(*repo.ArtifactPath("base", "weights")),
            da::ReadFile((TinyFamily() / "base/weights.pt").string()));
  EXPECT_FALSE(repo.ArtifactPath("nope", "onnx"));
  fs::remove_all(dir);
}

TEST(Repository, SkipsAndReportsCorruptOrMissingArtifacts) {
  const fs::path dir = FreshDir("da-repo-corrupt");
  std::string c1, c2;
  {
    Repository repo(dir.string());
    repo.ImportFamily(TinyFamily().string());
    c1 = *repo.ArtifactPath("c1", "onnx");
    c2 = *repo.ArtifactPath("c2", "weights");
  }
  std::string bytes = da::ReadFile(c1);
  bytes[bytes.size() / 2] ^= 1;
  da::WriteFileAtomic(c1, bytes);
  fs::remove(c2);
  Repository repo(dir.string());
  ASSERT_EQ(repo.problems().size(), 2u);
  EXPECT_NE(repo.problems()[0].find("corrupt"), std::string::npos);
  EXPECT_NE(repo.problems()[1].find("missing"), std::string::npos);
  EXPECT_EQ(repo.Catalog()["models"].size(), 1u);
  EXPECT_FALSE(repo.Find("c1"));
  EXPECT_TRUE(repo.Find("base"));
  fs::remove_all(dir);
}

TEST(Repository, RejectsBadIdsTakenIdsAndBadInput) {
  const fs::path dir = FreshDir("da-repo-bad");
  Repository repo(dir.string());
  const std::string base = (TinyFamily() / "base").string();
  for (const char* id : {"", ".hidden", "a/b", "..", "a b", "%2e"})
    EXPECT_THROW(repo.Add(id, base), da::UserError) << id;
  repo.Add("m", base);
  EXPECT_THROW(repo.Add("m", base), da::UserError);
  EXPECT_THROW(repo.Add("x", (dir / "nonexistent").string()), da::UserError);
  EXPECT_THROW(repo.ImportFamily(dir.string()), da::UserError);  // no family.json
  da::WriteFileAtomic((dir / "catalog.json").string(), "{not json");
  EXPECT_THROW(Repository{dir.string()}, da::UserError);
  fs::remove_all(dir);
}

// A writer killed (SIGKILL) at random moments always leaves a repository that
// opens cleanly, with every listed model intact and every Add that returned
// kept. The writer reports each finished Add on a pipe; round r kills it a
// random 0-4 ms after its r-th, so the kills land inside an Add however slow
// the machine (a fixed delay missed every Add under AddressSanitizer in CI).
TEST(Repository, SurvivesKillsWhileAdding) {
  const fs::path dir = FreshDir("da-repo-kill");
  const std::string base = (TinyFamily() / "base").string();
  const std::string branch = (TinyFamily() / "branches/c1").string();
  size_t acknowledged = 0;  // Adds that returned, over all rounds
  unsigned seed = 1;
  for (int round = 0; round < 8; ++round) {
    int fds[2];
    ASSERT_EQ(::pipe(fds), 0);
    pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      ::close(fds[0]);
      Repository repo(dir.string());
      for (int i = 0;; ++i) {
        repo.Add("r" + std::to_string(round) + "-" + std::to_string(i), i % 2 ? base : branch);
        if (::write(fds[1], "+", 1) != 1) ::_exit(1);
      }
    }
    ::close(fds[1]);
    char c;
    for (int i = 0; i < round; ++i) {  // blocks until the r-th Add returned
      ASSERT_EQ(::read(fds[0], &c, 1), 1) << "the writer died in round " << round;
      ++acknowledged;
    }
    ::usleep(rand_r(&seed) % 4000);
    ::kill(pid, SIGKILL);
    ::waitpid(pid, nullptr, 0);
    while (::read(fds[0], &c, 1) == 1) ++acknowledged;  // Adds finished before the kill
    ::close(fds[0]);
    Repository repo(dir.string());
    ASSERT_TRUE(repo.problems().empty()) << repo.problems()[0];
    EXPECT_GE(repo.Catalog()["models"].size(), acknowledged) << "round " << round;
  }
  EXPECT_GE(acknowledged, 28u);  // rounds 1..7 waited for 1+2+...+7 Adds
  fs::remove_all(dir);
}
