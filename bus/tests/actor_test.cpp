// CAF 0.17.6 delivery: a real actor system, a real nats-server.
#include <doctest/doctest.h>
#include <caf/all.hpp>

#include "cove/bus/actor.hpp"
#include "helpers.hpp"

using namespace cove;
using namespace cove::bus;
using namespace cove::bus::testing;

TEST_CASE("the type-ID block registers bus_msg") {
  static_assert(caf::type_id<bus_msg>::value == caf::first_custom_type_id);
  static_assert(caf::id_block::cove_bus::end == caf::first_custom_type_id + 1);
  caf::actor_system_config cfg;
  add_bus_types(cfg);
  caf::actor_system sys{cfg};
  CHECK(sys.types().portable_name(0, &typeid(bus_msg)) == "cove::bus::bus_msg");
}

TEST_CASE("subscribe_actor delivers bus_msg to a scoped actor") {
  auto srv = start_server();
  auto conn = connect_to(srv);
  caf::actor_system_config cfg;
  add_bus_types(cfg);
  caf::actor_system sys{cfg};
  caf::scoped_actor self{sys};
  auto sub = subscribe_actor(*conn, "t.actor", caf::actor_cast<caf::actor>(self));
  REQUIRE(sub.has_value());
  REQUIRE(conn->flush(5s));
  REQUIRE(conn->publish("t.actor", bytes("to-actor"), "t.back"));
  bool got = false;
  self->receive(
      [&](bus_msg& m) {
        got = true;
        CHECK(m.subject == "t.actor");
        CHECK(m.reply == "t.back");
        CHECK(text(m.data) == "to-actor");
      },
      caf::after(std::chrono::seconds(5)) >> [] {});
  CHECK(got);
}

TEST_CASE("an event-based actor serves requests over the bus") {
  auto srv = start_server();
  auto conn = connect_to(srv);
  caf::actor_system_config cfg;
  add_bus_types(cfg);
  caf::actor_system sys{cfg};
  // Pass state as a spawn argument: CAF 0.17.6's init_fun_factory dereferences
  // a null shared_ptr<std::tuple<>> for argument-less function actors (UBSan).
  auto echo = sys.spawn(
      [](caf::event_based_actor*, std::shared_ptr<connection> c) -> caf::behavior {
        return {[c](bus_msg& m) {
          std::string answer = "actor:" + text(m.data);
          (void)c->publish(m.reply, bytes(answer));
        }};
      },
      conn);
  {
    auto sub = subscribe_actor(*conn, "t.svc", echo, "svc");
    REQUIRE(sub.has_value());
    auto r = conn->request("t.svc", bytes("hi"), 5s);
    REQUIRE_MESSAGE(r.has_value(), (r ? "" : r.error().to_string()));
    CHECK(text(r->data) == "actor:hi");
  }
  caf::anon_send_exit(echo, caf::exit_reason::user_shutdown);
}

TEST_CASE("subscribe_actor rejects an invalid actor") {
  auto srv = start_server();
  auto conn = connect_to(srv);
  auto sub = subscribe_actor(*conn, "t.none", caf::actor{});
  REQUIRE_FALSE(sub.has_value());
  CHECK(sub.error().code == errc::invalid_request);
}
