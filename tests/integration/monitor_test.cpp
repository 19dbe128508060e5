// The monitor service against real components: nats-server, coved (manager, bridge,
// monitor), process-backend agents sending heartbeats through the attested bridge, and
// the cove CLI. Short heartbeat and sampling periods keep it fast; every wait has a
// deadline.
#include <csignal>
#include <nlohmann/json.hpp>

#include "cli_runner.hpp"
#include "event_log.hpp"
#include "fixture.hpp"

using namespace cove;
using namespace cove::itest;

namespace {

struct stats_view {
  v1::Health health = v1::Health::unknown;
  int64_t age_ms = -1;
  uint64_t heartbeats = 0;
  std::string agent_state, source, run_state, detail;
  int64_t sampled_at_ns = 0;
  uint64_t cpu_time_ns = 0, memory_bytes = 0;
  uint32_t processes = 0, interval_ms = 0;
};

std::vector<uint8_t> cvm_ref(const std::string& id) {
  flatbuffers::FlatBufferBuilder b(64);
  return bus::finish(b, v1::CreateCvmRef(b, b.CreateString(id)), {}, "itest");
}

expected<stats_view> monitor_stats(bus::connection& conn, const std::string& id) {
  auto r = bus::request_typed<v1::CvmStats>(conn, bus::subjects::monitor_stats, cvm_ref(id), 5s);
  if (!r) return r.error();
  const auto& s = *r->body;
  auto str = [](const flatbuffers::String* x) { return x ? x->str() : std::string(); };
  return stats_view{s.health(),      s.last_heartbeat_age_ms(), s.heartbeats(),  str(s.agent_state()),
                    str(s.source()), str(s.run_state()),        str(s.detail()), s.sampled_at_ns(),
                    s.cpu_time_ns(), s.memory_bytes(),          s.processes(),   s.interval_ms()};
}

/// Polls the monitor until `pred` holds for the CVM's stats; returns the last view.
stats_view wait_stats(bus::connection& conn, const std::string& id,
                      const std::function<bool(const stats_view&)>& pred, std::chrono::seconds limit = 10s) {
  stats_view last;
  bool ok = test::wait_until(
      [&] {
        auto s = monitor_stats(conn, id);
        if (!s) return false;
        last = *s;
        return pred(last);
      },
      test::deadline_in(limit));
  INFO("health " << v1::EnumNameHealth(last.health) << ", run_state " << last.run_state << ", detail "
                 << last.detail);
  CHECK(ok);
  return last;
}

const std::vector<std::string> fast_monitor = {"--heartbeat-interval", "100", "--heartbeat-misses", "6",
                                               "--stats-interval",     "200"};

}  // namespace

TEST_CASE("monitor: heartbeats make a CVM healthy; SIGSTOP unhealthy, SIGCONT healthy, SIGKILL crashed") {
  cluster c(fast_monitor);
  event_log events(c.bus());
  cove_cli cli(c);

  auto id = c.create_cvm();
  auto info = must(c.cvm_info(id), "info");
  pid_t pid = static_cast<pid_t>(info.body->pid());
  REQUIRE(pid > 0);
  // The manager's lifecycle events and the monitor's first health verdict.
  CHECK(events.wait_for("cvm", id, "starting"));
  CHECK(events.wait_for("cvm", id, "running"));
  auto healthy = events.wait_for("health", id, "healthy");
  REQUIRE_MESSAGE(healthy, "no healthy event; log in " << c.dir());
  CHECK(healthy->message.find("first heartbeat") != std::string::npos);

  // Stats from /proc: the agent's process group, plausible numbers.
  auto s = wait_stats(c.bus(), id, [](const stats_view& v) { return v.sampled_at_ns > 0; });
  CHECK(s.health == v1::Health::healthy);
  CHECK(s.heartbeats >= 1);
  CHECK(s.interval_ms == 100);
  CHECK(s.age_ms >= 0);
  CHECK(s.age_ms < 5000);
  CHECK(s.agent_state == "ReceivingManifest");
  CHECK(s.source == "process");
  CHECK((s.run_state == "sleeping" || s.run_state == "running"));
  CHECK(s.memory_bytes > 1024 * 1024);  // an agent with libsodium, OpenSSL and nats.c: > 1 MiB RSS
  CHECK(s.memory_bytes < 1024ull * 1024 * 1024);
  CHECK(s.processes >= 1);
  CHECK(events.wait_for("stats", id, s.run_state));

  // cove cvm info shows health and stats, in text and JSON.
  auto text = cli.ok({"cvm", "info", id});
  CHECK(text.find("health healthy") != std::string::npos);
  CHECK(text.find("stats (process") != std::string::npos);
  CHECK(text.find("memory") != std::string::npos);
  auto j = nlohmann::json::parse(cli.ok({"--json", "cvm", "info", id}));
  REQUIRE(j["monitor"].is_object());
  CHECK(j["monitor"]["health"] == "healthy");
  CHECK(j["monitor"]["memory_bytes"].get<uint64_t>() > 0);
  CHECK(j["monitor"]["source"] == "process");

  // `cove events --follow` streams the monitor's events. It is surely subscribed once it
  // printed a stats sample (one every 200 ms).
  std::string follower_name;
  auto follower = cli.spawn({"events", "--follow", "--kind", "health", "--kind", "stats"}, follower_name);
  auto follower_out = c.dir() / (follower_name + ".stdout");
  CHECK(test::wait_until([&] { return read_file(follower_out).find("stats") != std::string::npos; },
                         test::deadline_in(10s)));

  // Stopped agent: no heartbeats -> unhealthy within misses x interval (+ a tick).
  auto mark = events.size();
  REQUIRE(::kill(pid, SIGSTOP) == 0);
  auto unhealthy = events.wait_for("health", id, "unhealthy", mark);
  REQUIRE_MESSAGE(unhealthy, "no unhealthy event after SIGSTOP; log in " << c.dir());
  CHECK(unhealthy->message.find("no heartbeat for") != std::string::npos);
  auto stopped = wait_stats(c.bus(), id, [](const stats_view& v) { return v.run_state == "stopped"; });
  CHECK(stopped.health == v1::Health::unhealthy);
  CHECK(stopped.detail.find("no heartbeat") != std::string::npos);
  CHECK(cli.ok({"cvm", "info", id}).find("health unhealthy") != std::string::npos);

  mark = events.size();
  REQUIRE(::kill(pid, SIGCONT) == 0);
  auto resumed = events.wait_for("health", id, "healthy", mark);
  REQUIRE_MESSAGE(resumed, "no healthy event after SIGCONT; log in " << c.dir());
  CHECK(resumed->message.find("resumed after") != std::string::npos);
  auto again = wait_stats(c.bus(), id, [](const stats_view& v) { return v.run_state != "stopped"; });
  CHECK(again.health == v1::Health::healthy);

  auto follower_status = follower.terminate(5s);  // SIGTERM ends --follow cleanly
  REQUIRE(follower_status);
  CHECK(WIFEXITED(*follower_status));
  CHECK(WEXITSTATUS(*follower_status) == 0);
  auto followed = read_file(follower_out);
  INFO("cove events: " << followed);
  CHECK(followed.find("unhealthy") != std::string::npos);
  CHECK(followed.find("resumed after") != std::string::npos);
  CHECK(followed.find("stopped") != std::string::npos);  // a stats sample of the stopped agent

  // A killed agent is a crashed CVM (the manager's event); the monitor stops judging it.
  mark = events.size();
  REQUIRE(::kill(pid, SIGKILL) == 0);
  auto crashed = events.wait_for("cvm", id, "crashed", mark);
  REQUIRE(crashed);
  CHECK(crashed->message.find("signal 9") != std::string::npos);
  auto gone = wait_stats(c.bus(), id, [](const stats_view& v) { return v.health == v1::Health::gone; });
  CHECK(gone.detail.find("signal 9") != std::string::npos);
  CHECK(cli.ok({"cvm", "info", id}).find("health gone") != std::string::npos);
}

TEST_CASE("monitor: malformed heartbeats and requests are refused and change nothing") {
  cluster c(fast_monitor);
  event_log events(c.bus());
  auto id = c.create_cvm();
  REQUIRE(events.wait_for("health", id, "healthy"));
  auto subject = *bus::cvm_subject(id, "heartbeat");

  auto heartbeat = [](const std::string& cvm_id, uint32_t interval_ms) {
    flatbuffers::FlatBufferBuilder b(128);
    return bus::finish(b, v1::CreateHeartbeatDirect(b, cvm_id.c_str(), 1, interval_ms, "Running", 5), {},
                       "itest");
  };
  auto mark = events.size();
  must(c.bus().publish(subject, std::vector<uint8_t>{1, 2, 3}), "publish garbage");
  auto rejected = events.wait_for("health", id, "rejected", mark);
  REQUIRE_MESSAGE(rejected, "no rejected event; log in " << c.dir());
  CHECK(rejected->message.find("malformed heartbeat") != std::string::npos);
  // More kinds of nonsense: a wrong body, another CVM's id, an absurd interval, random
  // bytes, and a heartbeat for a CVM nobody knows.
  must(c.bus().publish(subject, bus::make_ok({}, "itest")), "publish ok body");
  must(c.bus().publish(subject, heartbeat("cvm-someoneelse", 100)), "publish foreign id");
  must(c.bus().publish(subject, heartbeat(id, 0)), "publish zero interval");
  must(c.bus().publish(subject, std::vector<uint8_t>(4096, 0xa5)), "publish random");
  must(c.bus().publish("cove.v1.cvm.cvm-nobody.heartbeat", heartbeat("cvm-nobody", 100)), "unknown cvm");
  must(c.bus().flush(5s), "flush");

  // Still healthy, still counting the real agent's heartbeats; nobody crashed.
  auto before = must(monitor_stats(c.bus(), id), "stats");
  auto later =
      wait_stats(c.bus(), id, [&](const stats_view& v) { return v.heartbeats >= before.heartbeats + 3; });
  CHECK(later.health == v1::Health::healthy);
  CHECK(later.interval_ms == 100);  // the zero interval was not taken
  CHECK(c.coved().running());

  check_error(monitor_stats(c.bus(), "cvm-nobody"), errc::not_found, "does not track CVM 'cvm-nobody'");
  check_error(monitor_stats(c.bus(), "../etc"), errc::not_found, "<invalid id>");
  check_error(
      bus::request_typed<v1::CvmStats>(c.bus(), bus::subjects::monitor_stats, std::vector<uint8_t>{9, 9}, 5s),
      errc::invalid_request, "malformed envelope");
}
