#pragma once
// The computation service: accepts manifests, delivers them to agents, tracks
// each CVM's run state and republishes agent events.
// Subjects: cove.v1.computation.{start,stop,status}; events on cove.v1.events.computation.
// Listens to the manager's lifecycle events (cove.v1.events.cvm): a CVM that crashes,
// stops or is removed mid-run fails its computation at once, with the reason.
#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <string>

#include "cove/actors.hpp"
#include "cove/bus/connection.hpp"
#include "cove/bus/nkeys.hpp"

namespace cove::computation {

struct computation_config {
  std::shared_ptr<bus::connection> bus;
  std::chrono::milliseconds agent_timeout{5000};  // deadline for forwarded requests
  /// Called (on the actor's thread) when this service accepts a manifest for a
  /// CVM, with the raw Ed25519 keys of its participants (algorithm owner,
  /// dataset owners, result consumers; keys of other types are left out):
  /// coved's embedded secure bus lets exactly those nkeys publish to that
  /// CVM's participant subjects. Optional; must not block for long.
  std::function<void(const std::string& cvm_id, const std::vector<bus::nkeys::raw_public>& participants)>
      grant_participants;
};

struct run_record {
  std::string computation_id;
  std::string state;  // agent state name
  std::string message;
  /// Set when the manager reported the CVM crashed or stopped ("CVM crashed: <why>"):
  /// the agent is gone, so this service answers `status` for it from this record.
  std::string cvm_ended;
};

struct computation_state {
  static inline const char* name = "cove.computation";
  computation_config cfg;
  std::map<std::string, run_record> runs;  // by CVM id
  /// Agent events dropped because their cvm_id was not the id in their subject
  /// (an agent, or on an open bus anyone, speaking for another CVM).
  uint64_t forged_events = 0;
};

computation_actor::behavior_type computation(computation_actor::stateful_pointer<computation_state> self,
                                             computation_config cfg);

}  // namespace cove::computation
