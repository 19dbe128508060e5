#include "cove/bus/actor.hpp"

#include <caf/send.hpp>

namespace cove::bus {

expected<subscription> subscribe_actor(connection& conn, std::string_view subject, caf::actor target,
                                       std::string_view queue_group) {
  if (!target) return cove::make_error(errc::invalid_request, "subscribe_actor: invalid actor");
  return conn.subscribe(
      subject,
      [target = std::move(target)](message&& m) {
        caf::anon_send(target, bus_msg{std::move(m.subject), std::move(m.reply), std::move(m.data)});
      },
      queue_group);
}

}  // namespace cove::bus
