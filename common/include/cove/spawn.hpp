#pragma once
// posix_spawn of a child in its own process group with a clean signal state: the one
// spawn path of the process backend's agents and of the processes tests own.
#include <sys/types.h>

#include <filesystem>
#include <string>
#include <vector>

#include "cove/expected.hpp"

namespace cove {

/// Where the child's output goes. stdin is always /dev/null.
struct spawn_output {
  std::filesystem::path out;  ///< stdout, created with `mode` if missing
  std::filesystem::path err;  ///< stderr; empty: the same file as stdout
  bool append = false;        ///< append to the files instead of truncating them
  mode_t mode = 0600;
};

/// Starts argv[0] (a path; PATH is not searched) with `envp` (nullptr: this process's
/// environment) in a new process group (pgid == pid), all signals unblocked and at their
/// default dispositions, so a parent's blocked or ignored signals do not reach it. The
/// caller owns the pid: it must reap it. Errors: "cannot start <argv[0]>: <reason>".
expected<pid_t> spawn_in_process_group(const std::vector<std::string>& argv, const spawn_output& output,
                                       char* const* envp = nullptr);

}  // namespace cove
