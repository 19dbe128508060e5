#pragma once
// Runs the real `cove` binary from integration tests and collects its exit code and output.
#include <sys/wait.h>

#include <string>
#include <vector>

#include "fixture.hpp"

namespace cove::itest {

struct cli_run {
  int code = -1;
  std::string out, err;
};

/// Runs `cove args...` with the cluster's bus and state dir in its environment.
class cove_cli {
 public:
  cove_cli(fs::path log_dir, std::vector<std::string> env)
      : log_dir_(std::move(log_dir)), env_(std::move(env)) {}
  explicit cove_cli(cluster& c)
      : cove_cli(c.dir(), {"COVE_NATS_URL=" + c.nats().url(), "COVE_STATE_DIR=" + c.state_dir().string()}) {}

  test::child_process spawn(const std::vector<std::string>& args, std::string& name) {
    name = "cove-" + std::to_string(++runs_);
    std::vector<std::string> argv = {(bin_dir() / "cove").string()};
    argv.insert(argv.end(), args.begin(), args.end());
    return must(test::child_process::spawn(argv, env_, log_dir_, name), "spawn cove");
  }

  cli_run collect(test::child_process& p, const std::string& name, std::chrono::seconds limit = 60s) {
    auto st = p.wait_for_exit(test::deadline_in(limit));
    REQUIRE_MESSAGE(st, "cove did not exit in time");
    REQUIRE(WIFEXITED(*st));
    return {WEXITSTATUS(*st), read_file(log_dir_ / (name + ".stdout")),
            read_file(log_dir_ / (name + ".stderr"))};
  }

  cli_run run(const std::vector<std::string>& args) {
    std::string name;
    auto p = spawn(args, name);
    return collect(p, name);
  }

  /// Runs and requires exit code 0; returns stdout.
  std::string ok(const std::vector<std::string>& args) {
    auto r = run(args);
    std::string cmd;
    for (const auto& a : args) cmd += a + " ";
    INFO("cove " << cmd << "\nstdout: " << r.out << "\nstderr: " << r.err);
    REQUIRE(r.code == 0);
    return r.out;
  }

 private:
  fs::path log_dir_;
  std::vector<std::string> env_;
  int runs_ = 0;
};

}  // namespace cove::itest
