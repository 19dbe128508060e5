#pragma once
// The bridge service: agents join the bus only through it (bridge/README.md).
// The actor owns the TLS front and closes a CVM's agent link when the manager
// reports a new policy for it (the agent then re-attests under that policy) or
// the CVM is gone.
#include <memory>

#include "cove/actors.hpp"
#include "cove/bridge/server.hpp"

namespace cove::bridge_service {

struct bridge_config {
  std::shared_ptr<bridge::server> server;
};

struct bridge_state {
  static inline const char* name = "cove.bridge";
  bridge_config cfg;
};

/// Spawn function: `sys.spawn(cove::bridge_service::bridge, cfg)`.
bridge_actor::behavior_type bridge(bridge_actor::stateful_pointer<bridge_state> self, bridge_config cfg);

}  // namespace cove::bridge_service
