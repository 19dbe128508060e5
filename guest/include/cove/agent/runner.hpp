#pragma once
// Runs an algorithm as a child process inside the CVM.
//
// The child gets its own process group, cwd = work_dir (results/ is created
// there with 0755 if missing, as cocos does), stdin from /dev/null, a small
// fixed environment (PATH, HOME=work_dir, LANG) unless run_request::env is
// set, and its stdout/stderr on pipes that the waiter drains (stdout is
// discarded, the last 4 KiB of stderr are kept). Waiting uses a pidfd and
// poll() with the deadline: no sleeps, no SIGCHLD handler. When the
// algorithm exits, is cancelled or times out, the whole process group is
// SIGKILLed before the leader is reaped, so stragglers it forked die with
// it (a descendant that calls setsid() escapes: not handled).
//
// bin: `algorithm args...` is executed directly. python: `python algorithm
// args...` with the interpreter found in PATH; no venv and no pip install
// (there is no network in the CVM), so requirements must be in the image.
// wasm: not supported in this build (errc::invalid_request).
#include <sys/types.h>

#include <chrono>
#include <filesystem>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "cove/expected.hpp"
#include "cove/manifest.hpp"

namespace cove::agent {

struct run_request {
  std::filesystem::path work_dir;
  algo_type type = algo_type::bin;
  std::filesystem::path algorithm;  // relative paths are taken from the caller's cwd
  std::vector<std::string> args;
  std::chrono::milliseconds timeout{0};  // <= 0: no limit
  std::string python = "python3";
  std::vector<std::string> env;  // "K=V"; empty: PATH, HOME=work_dir, LANG=C.UTF-8
};

struct run_outcome {
  int exit_code = -1;       // exit status if it exited, else -1
  int term_signal = 0;      // signal that killed it, else 0
  bool timed_out = false;   // killed by the runner at the deadline
  bool cancelled = false;   // killed by cancel()
  std::string stderr_tail;  // last 4 KiB of stderr
  std::chrono::milliseconds elapsed{0};
  std::chrono::milliseconds timeout{0};  // the limit that applied (0: none)

  /// Exited with status 0 (and was not killed).
  [[nodiscard]] bool succeeded() const {
    return exit_code == 0 && term_signal == 0 && !timed_out && !cancelled;
  }
};

/// "exit status 0", "exit status 1: <stderr tail>", "killed by signal 9",
/// "timed out after 5s" / "timed out after 200ms", "cancelled".
std::string describe(const run_outcome& o);

/// A started algorithm. cancel() may be called from any thread, any number
/// of times, before, during or after wait(). Destroying a handle that was
/// not waited for kills the group and reaps the child.
class running_algorithm {
 public:
  running_algorithm(const running_algorithm&) = delete;
  running_algorithm& operator=(const running_algorithm&) = delete;
  ~running_algorithm();

  [[nodiscard]] pid_t pid() const noexcept { return pid_; }

  /// Kills the process group (SIGKILL) and wakes wait().
  void cancel() noexcept;

  /// Blocks until the algorithm has ended (exit, signal, deadline or
  /// cancel) and has been reaped. Call once; later calls return the same
  /// outcome.
  expected<run_outcome> wait();

 private:
  friend class runner;
  enum class kill_reason : uint8_t { none, timeout, cancel };
  running_algorithm() = default;
  void kill_group_locked(kill_reason why) noexcept;

  pid_t pid_ = -1;
  int pidfd_ = -1;
  int wake_fd_ = -1;  // eventfd written by cancel()
  int stderr_fd_ = -1;
  int stdout_fd_ = -1;
  std::chrono::steady_clock::time_point started_{};
  std::chrono::milliseconds timeout_{0};
  std::mutex mu_;  // guards reaped_ and kill_reason_ (no kill after reaping: the pid could be reused)
  bool reaped_ = false;
  kill_reason kill_reason_ = kill_reason::none;
  std::mutex wait_mu_;  // one waiter at a time
  std::optional<expected<run_outcome>> result_;
};

class runner {
 public:
  /// Starts the algorithm; errors: wasm, missing work_dir or algorithm,
  /// exec failure (errc::invalid_request), pipes/pidfd (errc::internal).
  static expected<std::shared_ptr<running_algorithm>> start(const run_request& req);

  /// start() + wait().
  static expected<run_outcome> run(const run_request& req);
};

}  // namespace cove::agent
