#pragma once
// CAF 0.17.6 <-> NATS: deliver bus messages to actors as `bus_msg`.
//
// Registration: CAF 0.17.6 supports type-ID blocks for add_message_types().
// Call `cfg.add_message_types<caf::id_block::cove_bus>()` (or
// cove::bus::add_bus_types(cfg)) before creating the actor_system.
// The block cove_bus starts at caf::first_custom_type_id; any other cove block
// must start at caf::id_block::cove_bus::end so the IDs do not collide.
#include <caf/actor.hpp>
#include <caf/actor_system_config.hpp>
#include <caf/meta/type_name.hpp>
#include <caf/type_id.hpp>

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "cove/bus/connection.hpp"
#include "cove/bus/subscription.hpp"
#include "cove/expected.hpp"

namespace cove::bus {

/// A NATS message as an actor receives it (payload copied, so it is aligned).
struct bus_msg {
  std::string subject;
  std::string reply;  // empty unless the sender expects an answer
  std::vector<uint8_t> data;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, bus_msg& x) {
  return f(caf::meta::type_name("cove.bus_msg"), x.subject, x.reply, x.data);
}

}  // namespace cove::bus

CAF_BEGIN_TYPE_ID_BLOCK(cove_bus, caf::first_custom_type_id)
CAF_ADD_TYPE_ID(cove_bus, (cove::bus::bus_msg))
CAF_END_TYPE_ID_BLOCK(cove_bus)

namespace cove::bus {

/// Registers bus_msg with `cfg` (same as add_message_types<caf::id_block::cove_bus>()).
inline caf::actor_system_config& add_bus_types(caf::actor_system_config& cfg) {
  return cfg.add_message_types<caf::id_block::cove_bus>();
}

/// Subscribes `target` to `subject`: each message arrives as a bus_msg via
/// caf::anon_send (from the NATS thread; the actor never blocks on NATS).
/// Answer by publishing to bus_msg::reply with connection::publish.
expected<subscription> subscribe_actor(connection& conn, std::string_view subject, caf::actor target,
                                       std::string_view queue_group = {});

}  // namespace cove::bus
