#include "cove/bridge_service/bridge_service.hpp"

#include <spdlog/spdlog.h>

#include "cove/bus/envelope.hpp"

namespace cove::bridge_service {

bridge_actor::behavior_type bridge(bridge_actor::stateful_pointer<bridge_state> self, bridge_config cfg) {
  self->state.cfg = std::move(cfg);
  return {
      [self](bus::bus_msg& m) {
        auto ev = bus::body_as<v1::Event>(m.data);
        if (!ev || !(*ev)->cvm_id() || !(*ev)->state()) return;
        const std::string id = (*ev)->cvm_id()->str();
        const std::string message = (*ev)->message() ? (*ev)->message()->str() : "";
        const std::string state = (*ev)->state()->str();
        if (message == "policy updated") {
          self->state.cfg.server->close_cvm(id, "the CVM's attestation policy changed; re-attest");
        } else if (state == "removed" || state == "expired" || state == "crashed" || state == "stopped") {
          self->state.cfg.server->close_cvm(id, "the CVM is " + state);
        }
      },
  };
}

}  // namespace cove::bridge_service
