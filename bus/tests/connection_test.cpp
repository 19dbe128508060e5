// cove::bus::connection against a real nats-server on a random port.
#include <doctest/doctest.h>

#include <thread>

#include "cove/test/process.hpp"
#include "helpers.hpp"

using namespace cove;
using namespace cove::bus;
using namespace cove::bus::testing;

TEST_CASE("publish/subscribe round trip") {
  auto srv = start_server();
  auto conn = connect_to(srv);
  CHECK(conn->connected());
  collector<message> got;
  auto sub = conn->subscribe("t.pubsub", [&](message&& m) { got.push(std::move(m)); });
  REQUIRE(sub.has_value());
  REQUIRE(conn->flush(5s));
  REQUIRE(conn->publish("t.pubsub", bytes("hello")));
  REQUIRE(conn->publish("t.pubsub", bytes(""), "t.reply.here"));
  REQUIRE(got.wait_for(2, 5s));
  auto items = got.items();
  CHECK(items[0].subject == "t.pubsub");
  CHECK(text(items[0].data) == "hello");
  CHECK(items[0].reply.empty());
  CHECK(items[1].data.empty());
  CHECK(items[1].reply == "t.reply.here");

  // After reset, nothing more is delivered to this handler.
  sub->reset();
  CHECK_FALSE(sub->valid());
  REQUIRE(conn->publish("t.pubsub", bytes("late")));
  REQUIRE(conn->flush(5s));
  CHECK(got.items().size() == 2);
}

TEST_CASE("queue group: each message goes to one member") {
  auto srv = start_server();
  auto conn = connect_to(srv);
  collector<int> got;
  auto a = conn->subscribe(
      "t.q", [&](message&&) { got.push(1); }, "workers");
  auto b = conn->subscribe(
      "t.q", [&](message&&) { got.push(2); }, "workers");
  REQUIRE(a.has_value());
  REQUIRE(b.has_value());
  REQUIRE(conn->flush(5s));
  for (int i = 0; i < 20; ++i) REQUIRE(conn->publish("t.q", bytes("x")));
  REQUIRE(got.wait_for(20, 5s));
  REQUIRE(conn->flush(5s));
  CHECK(got.items().size() == 20);  // not 40
}

TEST_CASE("request/reply") {
  auto srv = start_server();
  auto conn = connect_to(srv);
  auto* c = conn.get();
  auto sub = conn->subscribe("t.echo", [c](message&& m) {
    std::string answer = "re:" + text(m.data);
    (void)c->publish(m.reply, bytes(answer));
  });
  REQUIRE(sub.has_value());
  auto r = conn->request("t.echo", bytes("ping"), 5s);
  REQUIRE_MESSAGE(r.has_value(), (r ? "" : r.error().to_string()));
  CHECK(text(r->data) == "re:ping");
}

TEST_CASE("request to a subject nobody serves fails fast with unavailable") {
  auto srv = start_server();
  auto conn = connect_to(srv);
  auto t0 = std::chrono::steady_clock::now();
  auto r = conn->request("t.nobody", bytes("x"), 10s);
  REQUIRE_FALSE(r.has_value());
  CHECK(r.error().code == errc::unavailable);
  CHECK(r.error().message == "no service answers on t.nobody");
  CHECK(std::chrono::steady_clock::now() - t0 < 5s);  // no-responders, not the 10 s timeout
}

TEST_CASE("request nobody answers in time fails with timeout") {
  auto srv = start_server();
  auto conn = connect_to(srv);
  auto sub = conn->subscribe("t.silent", [](message&&) {});  // subscribed, never answers
  REQUIRE(sub.has_value());
  REQUIRE(conn->flush(5s));
  auto t0 = std::chrono::steady_clock::now();
  auto r = conn->request("t.silent", bytes("x"), 200ms);
  REQUIRE_FALSE(r.has_value());
  CHECK(r.error().code == errc::timeout);
  CHECK(std::chrono::steady_clock::now() - t0 >= 150ms);  // nats.c measures in whole ms
}

TEST_CASE("request_async: reply, timeout and no responders, without blocking") {
  auto srv = start_server();
  auto conn = connect_to(srv);
  auto* c = conn.get();
  auto echo = conn->subscribe("t.aecho", [c](message&& m) { (void)c->publish(m.reply, m.data); });
  auto silent = conn->subscribe("t.asilent", [](message&&) {});
  REQUIRE(echo.has_value());
  REQUIRE(silent.has_value());
  REQUIRE(conn->flush(5s));

  collector<std::pair<std::string, expected<message>>> done;
  auto t0 = std::chrono::steady_clock::now();
  REQUIRE(conn->request_async("t.asilent", bytes("s"), 300ms, [&](expected<message> r) {
    done.push({"silent", std::move(r)});
  }));
  REQUIRE(conn->request_async("t.nobody", bytes("n"), 10s, [&](expected<message> r) {
    done.push({"nobody", std::move(r)});
  }));
  for (int i = 0; i < 10; ++i) {
    std::string body = "m" + std::to_string(i);
    REQUIRE(conn->request_async("t.aecho", bytes(body), 5s, [&, body](expected<message> r) {
      done.push({body, std::move(r)});
    }));
  }
  // request_async returned without waiting for anything.
  CHECK(std::chrono::steady_clock::now() - t0 < 300ms);
  REQUIRE(done.wait_for(12, 10s));
  int replies = 0;
  for (auto& [tag, r] : done.items()) {
    if (tag == "silent") {
      REQUIRE_FALSE(r.has_value());
      CHECK(r.error().code == errc::timeout);
      CHECK(std::chrono::steady_clock::now() - t0 >= 300ms);
    } else if (tag == "nobody") {
      REQUIRE_FALSE(r.has_value());
      CHECK(r.error().code == errc::unavailable);
    } else {
      REQUIRE(r.has_value());
      CHECK(text(r->data) == tag);
      ++replies;
    }
  }
  CHECK(replies == 10);
}

TEST_CASE("request_async pending at destruction completes with unavailable") {
  auto srv = start_server();
  collector<errc> done;
  {
    auto conn = connect_to(srv);
    auto silent = conn->subscribe("t.hold", [](message&&) {});
    REQUIRE(silent.has_value());
    REQUIRE(conn->request_async("t.hold", bytes("x"), 60s,
                                [&](expected<message> r) { done.push(r ? errc::none : r.error().code); }));
  }
  REQUIRE(done.wait_for(1, 1s));
  CHECK(done.items()[0] == errc::unavailable);
}

TEST_CASE("oversized publish is too_large") {
  auto srv = start_server();
  auto conn = connect_to(srv);
  REQUIRE(conn->max_payload() == 1024 * 1024);
  std::vector<uint8_t> big(static_cast<size_t>(conn->max_payload()) + 1, 0xAB);
  auto r = conn->publish("t.big", big);
  REQUIRE_FALSE(r.has_value());
  CHECK(r.error().code == errc::too_large);
  auto q = conn->request("t.big", big, 1s);
  REQUIRE_FALSE(q.has_value());
  CHECK(q.error().code == errc::too_large);
  // Exactly max_payload still goes through.
  big.pop_back();
  CHECK(conn->publish("t.big", big).has_value());
}

TEST_CASE("connect to a closed port fails with unavailable") {
  int port = 0;
  {
    auto srv = start_server();
    port = srv.port();
  }  // killed: nothing listens there now
  connect_options o;
  o.url = "nats://127.0.0.1:" + std::to_string(port);
  o.connect_timeout = 500ms;
  auto c = connection::connect(o);
  REQUIRE_FALSE(c.has_value());
  CHECK(c.error().code == errc::unavailable);
}

// Behaviour when the server dies, chosen and documented in bus/README.md:
// - max_reconnect = 0 (fail fast): the connection closes; publish reports
//   errc::unavailable.
// - max_reconnect = -1 (daemons, the default): publish keeps succeeding into
//   the reconnect buffer; after the server is back, subscriptions are replayed
//   and buffered messages are delivered.
TEST_CASE("server killed: fail-fast connection reports unavailable") {
  auto srv = start_server();
  connect_options o;
  o.max_reconnect = 0;
  auto conn = connect_to(srv, o);
  REQUIRE(conn->publish("t.k", bytes("before")));
  srv.kill();
  expected<void> last;
  bool failed = test::wait_until(
      [&] {
        last = conn->publish("t.k", bytes("after"));
        return !last.has_value();
      },
      test::deadline_in(10s));
  REQUIRE(failed);
  CHECK(last.error().code == errc::unavailable);
  // A write error can surface before the read loop marks the connection closed.
  CHECK(test::wait_until([&] { return !conn->connected(); }, test::deadline_in(10s)));
  auto again = conn->publish("t.k", bytes("closed"));
  REQUIRE_FALSE(again.has_value());
  CHECK(again.error().code == errc::unavailable);
}

TEST_CASE("server killed: daemon connection buffers and reconnects") {
  auto srv = start_server();
  int port = srv.port();
  connect_options o;
  o.reconnect_wait = 20ms;
  o.reconnect_wait_max = 200ms;
  auto conn = connect_to(srv, o);
  collector<std::string> got;
  auto sub = conn->subscribe("t.r", [&](message&& m) { got.push(text(m.data)); });
  REQUIRE(sub.has_value());
  REQUIRE(conn->flush(5s));
  srv.kill();
  REQUIRE(test::wait_until([&] { return conn->stats().disconnects >= 1; }, test::deadline_in(10s)));
  CHECK_FALSE(conn->connected());
  REQUIRE(conn->publish("t.r", bytes("while-down")));  // buffered
  auto again = test::nats_server::start(port);         // same port: the URL the client knows
  REQUIRE_MESSAGE(again.has_value(), (again ? "" : again.error().to_string()));
  REQUIRE(test::wait_until([&] { return conn->connected(); }, test::deadline_in(10s)));
  // The reconnected callback runs asynchronously, shortly after the state flips.
  CHECK(test::wait_until([&] { return conn->stats().reconnects >= 1; }, test::deadline_in(5s)));
  REQUIRE(got.wait_for(1, 5s));
  CHECK(got.items()[0] == "while-down");
  REQUIRE(conn->publish("t.r", bytes("after")));
  REQUIRE(got.wait_for(2, 5s));
}

TEST_CASE("slow consumer drops are counted") {
  auto srv = start_server();
  connect_options o;
  o.max_pending_msgs = 4;
  auto conn = connect_to(srv, o);
  std::mutex gate;
  std::unique_lock hold(gate);  // the handler blocks until we release it
  collector<int> got;
  auto sub = conn->subscribe("t.slow", [&](message&&) {
    std::lock_guard l(gate);
    got.push(1);
  });
  REQUIRE(sub.has_value());
  REQUIRE(conn->flush(5s));
  for (int i = 0; i < 50; ++i) REQUIRE(conn->publish("t.slow", bytes("x")));
  REQUIRE(conn->flush(5s));  // the server has sent them all to us
  REQUIRE(test::wait_until([&] { return conn->stats().slow_consumer_events >= 1; }, test::deadline_in(10s)));
  CHECK(sub->dropped() > 0);
  hold.unlock();
}

TEST_CASE("new_inbox is unique") {
  auto srv = start_server();
  auto conn = connect_to(srv);
  auto a = conn->new_inbox();
  auto b = conn->new_inbox();
  CHECK(a.starts_with("_INBOX."));
  CHECK(a != b);
}

TEST_CASE("subscription reset waits for a running handler") {
  auto srv = start_server();
  auto conn = connect_to(srv);
  std::mutex mu;
  std::condition_variable cv;
  bool entered = false, release = false;
  std::atomic<bool> reset_done{false};
  std::atomic<bool> seen_done_in_handler{true};
  auto sub = conn->subscribe("t.block", [&](message&&) {
    std::unique_lock l(mu);
    entered = true;
    cv.notify_all();
    cv.wait(l, [&] { return release; });
    seen_done_in_handler = reset_done.load();
  });
  REQUIRE(sub.has_value());
  REQUIRE(conn->flush(5s));
  REQUIRE(conn->publish("t.block", bytes("x")));
  {
    std::unique_lock l(mu);
    REQUIRE(cv.wait_for(l, 5s, [&] { return entered; }));
  }
  std::thread t([&] {
    sub->reset();
    reset_done = true;
  });
  // reset() must not return while the handler runs.
  CHECK_FALSE(test::wait_until([&] { return reset_done.load(); }, test::deadline_in(100ms)));
  {
    std::lock_guard l(mu);
    release = true;
    cv.notify_all();
  }
  t.join();
  CHECK(reset_done.load());
  CHECK_FALSE(seen_done_in_handler.load());
}
