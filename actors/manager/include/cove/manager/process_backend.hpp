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

namespace cove::manager {

struct agent_launch {
  std::string cvm_id;
  std::filesystem::path agent_binary;
  std::string bridge_address;  // the attested bridge (with bridge_ca), or
  std::filesystem::path bridge_ca;
  std::string nats_url;            // the bus directly (development only)
  std::filesystem::path work_dir;  // the agent's scratch space
  std::filesystem::path tee_dir;   // simulated TEE identity (VCEK etc.)
  std::filesystem::path log_file;  // agent stdout+stderr
  std::string log_level = "info";
  uint64_t max_upload_bytes = 0;  // cove-agent --max-upload; 0: the agent's default
  std::string vtpm_tcti;          // cove-agent --vtpm; empty: none
};

class process_backend {
 public:
  /// `on_exit(cvm_id, wait_status)` runs on a reaper thread: hand off only.
  explicit process_backend(std::function<void(const std::string&, int)> on_exit);
  process_backend(const process_backend&) = delete;
  process_backend& operator=(const process_backend&) = delete;
  /// Kills every remaining agent (SIGKILL) and joins the reapers.
  ~process_backend();

  /// Starts the agent in its own process group; returns its pid.
  expected<pid_t> launch(const agent_launch& l);

  /// Sends `sig` to the agent's whole process group (the agent and its algorithm).
  void signal(pid_t pid, int sig) const;

  /// Kills every agent still running (used on shutdown).
  void kill_all();

  /// kill_all(), then waits for every reaper: after it, on_exit is never called again.
  void shutdown();

 private:
  std::function<void(const std::string&, int)> on_exit_;
  mutable std::mutex mu_;
  std::map<pid_t, std::string> live_;
  std::vector<std::thread> reapers_;
};

/// Human-readable wait status: "exit status 1", "killed by signal 9".
std::string describe_wait_status(int status);

}  // namespace cove::manager
