#pragma once
// The `process` CVM backend: each CVM is a cove-agent child process with its own
// work directory and a simulated TEE identity. Reaper threads wait for each child
// and report its exit through a callback; the backend owns and joins them.
#include <sys/types.h>

#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "cove/expected.hpp"
#include "cove/manager/backend.hpp"

namespace cove::manager {

class process_backend final : public cvm_backend {
 public:
  /// `on_exit(cvm_id, wait_status)` runs on a reaper thread: hand off only.
  explicit process_backend(std::function<void(const std::string&, int)> on_exit);
  /// Kills every remaining agent (SIGKILL) and joins the reapers.
  ~process_backend() override;

  [[nodiscard]] std::string_view name() const override { return "process"; }
  [[nodiscard]] std::string_view log_name() const override { return "agent.log"; }
  /// Starts the agent in its own process group; returns its pid.
  expected<pid_t> launch(const agent_launch& l) override;
  /// SIGTERM (SIGKILL with `force`) to the agent's process group.
  void stop(const std::string& cvm_id, pid_t pid, bool force) override;
  [[nodiscard]] std::string describe_exit(const std::string& cvm_id, int status) const override;

  /// Sends `sig` to the agent's whole process group (the agent and its algorithm).
  void signal(pid_t pid, int sig) const;

  /// Kills every agent still running (used on shutdown).
  void kill_all();

  /// kill_all(), then waits for every reaper: after it, on_exit is never called again.
  void shutdown() override;

 private:
  std::function<void(const std::string&, int)> on_exit_;
  mutable std::mutex mu_;
  std::map<pid_t, std::string> live_;
  std::vector<std::thread> reapers_;
  bool shut_down_ = false;  // under mu_: launch() refuses after shutdown()
};

/// Human-readable wait status: "exit status 1", "killed by signal 9".
std::string describe_wait_status(int status);

}  // namespace cove::manager
