#pragma once
// Where the monitor's resource numbers come from: one `stats_source` per CVM backend.
//
// A source samples many CVMs in one call (one /proc scan, one libvirt
// virConnectGetAllDomainStats), may block, and runs on the monitor's detached sampler
// thread only, never concurrently with itself. The process backend's source is here; a
// libvirt source implements the same interface (domain state, cpu time, memory) and is
// registered for v1::Backend::libvirt in monitor_config::sources.
#include <sys/types.h>

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include "cove/expected.hpp"

namespace cove::monitor {

/// A CVM to sample: what the manager says about it (CvmInfo).
struct stats_target {
  std::string cvm_id;  // libvirt: the domain is "cove-<cvm_id>"
  pid_t pid = 0;       // process backend: the agent's pid (its process group leader)
};

/// One CVM's numbers at one instant.
struct cvm_sample {
  std::string run_state;          // process: running|sleeping|stopped|zombie|...; libvirt: domain state
  uint64_t cpu_time_ns = 0;       // cumulative
  uint64_t memory_bytes = 0;      // process: summed RSS; libvirt: resident memory of the guest
  uint64_t memory_max_bytes = 0;  // libvirt: maximum memory; 0 when not applicable
  uint32_t processes = 0;         // process: processes counted; libvirt: vCPUs
};

class stats_source {
 public:
  virtual ~stats_source() = default;
  /// Short name shown with the numbers ("process", "libvirt").
  [[nodiscard]] virtual std::string_view name() const noexcept = 0;
  /// One result per target, in the same order. A CVM that no longer exists is
  /// errc::not_found; a source that cannot sample at all may fail every target.
  virtual std::vector<expected<cvm_sample>> sample(const std::vector<stats_target>& targets) = 0;
};

/// /proc/<pid>/stat, the fields the monitor uses.
struct proc_stat {
  pid_t pid = 0;
  char state = '?';  // R S D T t Z X I ...
  pid_t ppid = 0;
  pid_t pgrp = 0;
  uint64_t utime_ticks = 0;
  uint64_t stime_ticks = 0;
  int64_t rss_pages = 0;
};

/// Parses one /proc/<pid>/stat line. The command name may hold any byte, spaces and
/// ')' included (the algorithm chooses it), so the fields are read after the LAST ')'.
/// Anything malformed is errc::invalid_request.
expected<proc_stat> parse_proc_stat(std::string_view line);

/// "running", "sleeping", "disk-sleep", "stopped", "tracing-stop", "zombie", "dead",
/// "idle", or "state <c>".
std::string proc_state_name(char state);

/// The process backend's source: for an agent pid, the agent itself, every process in
/// its process group and every descendant (the algorithm runs in a process group of its
/// own): summed utime+stime and RSS, the count, and the agent's own state. One scan of
/// `proc_root` per call.
class process_stats_source final : public stats_source {
 public:
  explicit process_stats_source(std::filesystem::path proc_root = "/proc");
  [[nodiscard]] std::string_view name() const noexcept override { return "process"; }
  std::vector<expected<cvm_sample>> sample(const std::vector<stats_target>& targets) override;

 private:
  std::filesystem::path root_;
  uint64_t ns_per_tick_;
  uint64_t page_size_;
};

}  // namespace cove::monitor
