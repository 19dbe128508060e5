#pragma once
// The monitor service: agent heartbeats, CVM health and resource stats.
//
// Subscribes to cove.v1.cvm.*.heartbeat (agents), cove.v1.events.cvm (the manager's
// lifecycle events) and serves cove.v1.monitor.stats; publishes cove.v1.events.health
// (healthy / unhealthy / rejected) and cove.v1.events.stats (one sample per CVM per
// round). Learns each CVM's backend and pid from cove.v1.manager.list / .info.
// See actors/monitor/README.md.
#include <chrono>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "cove/actors.hpp"
#include "cove/bus/connection.hpp"
#include "cove/monitor/health.hpp"
#include "cove/monitor/stats_source.hpp"
#include "cove/schemas/envelope_generated.h"

namespace cove::monitor {

struct monitor_config {
  std::shared_ptr<bus::connection> bus;
  /// Stats sources by backend; a CVM whose backend has none gets health only.
  std::map<v1::Backend, std::shared_ptr<stats_source>> sources;
  std::chrono::milliseconds heartbeat_interval{5000};  // expected until an agent announces its own
  uint32_t heartbeat_misses = 3;                       // missed heartbeats before unhealthy
  std::chrono::milliseconds stats_interval{10000};     // sampling period; 0: no sampling
  std::chrono::milliseconds resync_interval{30000};    // manager.list, to catch missed events
  std::chrono::milliseconds request_timeout{2000};     // manager.list / manager.info
  bool stats_events = true;                            // publish each sample on cove.v1.events.stats
  size_t max_cvms = 4096;
};

/// Checks the config; the error names the field.
expected<void> validate(const monitor_config& cfg);

/// The sampler's targets and results, exchanged under a mutex: the monitor writes the
/// targets of a round, the sampler thread writes the results, then tells the monitor.
struct sample_board {
  struct entry {
    stats_target target;
    v1::Backend backend = v1::Backend::process;
    std::optional<expected<cvm_sample>> result;
    std::string source;
  };
  std::mutex mu;
  uint64_t round = 0;
  std::vector<entry> entries;
};

/// One CVM as the monitor sees it.
struct tracked_cvm {
  std::string id;
  v1::Backend backend = v1::Backend::process;
  int64_t pid = 0;
  bool known = false;  // the manager confirmed it (backend, pid)
  health_tracker health;
  std::optional<cvm_sample> sample;  // latest successful one
  std::string source;
  std::string sample_error;
  int64_t sampled_at_ns = 0;
  steady_clock::time_point sampled_at;
  double cpu_percent = 0;
  steady_clock::time_point last_rejection{};  // rate limit of "rejected" events
};

struct monitor_state {
  static inline const char* name = "cove.monitor";
  monitor_config cfg;
  std::map<std::string, tracked_cvm> cvms;
  std::shared_ptr<sample_board> board = std::make_shared<sample_board>();
  stats_sampler_actor sampler;
  bool sampling = false;
  steady_clock::time_point next_sample{};
  steady_clock::time_point next_resync{};
  bool list_pending = false;
  std::map<std::string, steady_clock::time_point> info_pending;  // id -> asked at
  uint64_t rejected = 0;                                         // malformed heartbeats seen
  steady_clock::time_point last_unknown_rejection{};
};

/// Spawn function: `sys.spawn(cove::monitor::monitor, cfg)`. Spawns its sampler
/// (detached, linked) and arms its own timer.
monitor_actor::behavior_type monitor(monitor_actor::stateful_pointer<monitor_state> self, monitor_config cfg);

}  // namespace cove::monitor
