#pragma once
// Processes owned by tests: spawned in their own process group, always killed
// and reaped by PID. Helpers for temporary directories and bounded waiting.
#include <sys/types.h>

#include <chrono>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "cove/expected.hpp"

namespace cove::test {

using clock = std::chrono::steady_clock;

/// Deadline `d` from now.
inline clock::time_point deadline_in(clock::duration d) {
  return clock::now() + d;
}

/// Polls `pred` with short, growing waits (1 ms .. 20 ms) until it holds or
/// `deadline` passes. Returns the last result of `pred`.
bool wait_until(const std::function<bool()>& pred, clock::time_point deadline);

/// A directory created with mkdtemp under /tmp, removed recursively on destruction.
class temp_dir {
 public:
  explicit temp_dir(std::string_view prefix = "cove-test");
  ~temp_dir();
  temp_dir(const temp_dir&) = delete;
  temp_dir& operator=(const temp_dir&) = delete;
  [[nodiscard]] const std::filesystem::path& path() const noexcept { return path_; }

 private:
  std::filesystem::path path_;
};

/// A child process in its own process group (pgid == pid). stdout/stderr go to
/// <log_dir>/<name>.stdout and <log_dir>/<name>.stderr.
class child_process {
 public:
  child_process() = default;
  ~child_process();  // kills (SIGKILL) and reaps if still running
  child_process(child_process&& other) noexcept;
  child_process& operator=(child_process&& other) noexcept;
  child_process(const child_process&) = delete;
  child_process& operator=(const child_process&) = delete;

  /// argv[0] is the executable path. `env` entries ("K=V") are added to (and
  /// override) the current environment.
  static expected<child_process> spawn(const std::vector<std::string>& argv,
                                       const std::vector<std::string>& env,
                                       const std::filesystem::path& log_dir, std::string_view name);

  [[nodiscard]] pid_t pid() const noexcept { return pid_; }
  [[nodiscard]] bool running() const noexcept { return pid_ > 0 && !status_; }

  /// Waits until the child exits or `deadline` passes; returns the raw wait status.
  std::optional<int> wait_for_exit(clock::time_point deadline);

  /// SIGTERM, wait up to `grace`, then SIGKILL and reap. Returns the wait status.
  std::optional<int> terminate(clock::duration grace = std::chrono::seconds(5));

  /// SIGKILL and reap.
  std::optional<int> kill();

 private:
  void reset() noexcept;
  pid_t pid_ = -1;
  std::optional<int> status_;
};

}  // namespace cove::test
