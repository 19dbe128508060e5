// The monitor's pure parts: /proc parsing and sampling, heartbeat decoding, the health
// state machine, and config validation. The actor itself runs against real coved, agents
// and nats-server in tests/integration/monitor_test.cpp.
#include <doctest/doctest.h>
#include <unistd.h>

#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <fstream>

#include <fmt/format.h>

#include "cove/bus/envelope.hpp"
#include "cove/monitor/health.hpp"
#include "cove/monitor/monitor.hpp"
#include "cove/monitor/stats_source.hpp"
#include "cove/test/process.hpp"

using namespace cove;
using namespace cove::monitor;
using namespace std::chrono_literals;
namespace fs = std::filesystem;

namespace {

std::string stat_line(pid_t pid, std::string_view comm, char state, pid_t ppid, pid_t pgrp, uint64_t utime,
                      uint64_t stime, int64_t rss) {
  return fmt::format(
      "{} ({}) {} {} {} 0 0 -1 4194304 100 0 0 0 {} {} 0 0 20 0 1 0 12345 1000000 {} "
      "18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 0 0 0 0 0 0\n",
      pid, comm, state, ppid, pgrp, utime, stime, rss);
}

void write_stat(const fs::path& root, pid_t pid, const std::string& line) {
  fs::create_directories(root / std::to_string(pid));
  std::ofstream(root / std::to_string(pid) / "stat") << line;
}

}  // namespace

TEST_CASE("proc stat: fields after the last ')' even when the command name lies") {
  auto st = parse_proc_stat(stat_line(42, "cove-agent", 'S', 1, 42, 7, 3, 900));
  REQUIRE(st);
  CHECK(st->pid == 42);
  CHECK(st->state == 'S');
  CHECK(st->ppid == 1);
  CHECK(st->pgrp == 42);
  CHECK(st->utime_ticks == 7);
  CHECK(st->stime_ticks == 3);
  CHECK(st->rss_pages == 900);

  // An algorithm may name itself ") R 1 1 (" to forge fields: the last ')' wins.
  auto forged = parse_proc_stat(stat_line(43, "x) R 1 1 0 0 (y", 'T', 42, 99, 1, 2, 5));
  REQUIRE(forged);
  CHECK(forged->state == 'T');
  CHECK(forged->ppid == 42);
  CHECK(forged->pgrp == 99);

  CHECK(proc_state_name('T') == "stopped");
  CHECK(proc_state_name('Z') == "zombie");
  CHECK(proc_state_name('?') == "state ?");
}

TEST_CASE("proc stat: malformed lines are refused with a reason") {
  for (std::string_view bad : {"", "42", "42 (x", "x (y) S 1 1", "42 (x) S 1 1 0 0",
                               "42 (x) SS 1 1 0 0 -1 0 0 0 0 0 1 1 0 0 0 0 1 0 0 0 5",
                               "42 (x) S one 1 0 0 -1 0 0 0 0 0 1 1 0 0 0 0 1 0 0 0 5",
                               "-1 (x) S 1 1 0 0 -1 0 0 0 0 0 1 1 0 0 0 0 1 0 0 0 5"}) {
    auto st = parse_proc_stat(bad);
    CHECK_MESSAGE(!st, bad);
    if (!st) CHECK(st.error().code == errc::invalid_request);
  }
}

TEST_CASE("process stats: the agent, its process group and all descendants, from one /proc scan") {
  test::temp_dir dir("cove-monitor-proc");
  auto root = dir.path() / "proc";
  long page = sysconf(_SC_PAGESIZE);
  long hz = sysconf(_SC_CLK_TCK);
  write_stat(root, 100, stat_line(100, "cove-agent", 'S', 1, 100, 10, 5, 1000));  // the agent
  write_stat(root, 101, stat_line(101, "python3", 'R', 100, 101, 20, 0, 3000));   // algorithm, own group
  write_stat(root, 102, stat_line(102, "child", 'S', 101, 101, 1, 1, 10));        // its child
  write_stat(root, 103, stat_line(103, "orphan", 'S', 1, 100, 2, 0, 20));         // reparented, agent's group
  write_stat(root, 200, stat_line(200, "other", 'S', 1, 200, 99, 99, 99999));     // someone else
  fs::create_directories(root / "self");                                          // not a pid: skipped
  fs::create_directories(root / "300");                                           // no stat: skipped
  process_stats_source src(root);
  auto r = src.sample({{.cvm_id = "cvm-a", .pid = 100}, {.cvm_id = "cvm-b", .pid = 555}});
  REQUIRE(r.size() == 2);
  REQUIRE(r[0]);
  CHECK(r[0]->run_state == "sleeping");
  CHECK(r[0]->processes == 4);
  CHECK(r[0]->cpu_time_ns == (10 + 5 + 20 + 1 + 1 + 2) * (1'000'000'000ull / static_cast<uint64_t>(hz)));
  CHECK(r[0]->memory_bytes == (1000 + 3000 + 10 + 20) * static_cast<uint64_t>(page));
  REQUIRE_FALSE(r[1]);
  CHECK(r[1].error().code == errc::not_found);

  process_stats_source missing(dir.path() / "nothing");
  auto m = missing.sample({{.cvm_id = "cvm-a", .pid = 100}});
  REQUIRE(m.size() == 1);
  REQUIRE_FALSE(m[0]);
  CHECK(m[0].error().code == errc::unavailable);
}

TEST_CASE("process stats: a real process group, stopped, continued and gone") {
  test::temp_dir dir("cove-monitor-real");
  auto child =
      test::child_process::spawn({"/bin/sh", "-c", "sleep 30 & sleep 30; wait"}, {}, dir.path(), "sh");
  REQUIRE(child);
  process_stats_source src;
  std::vector<stats_target> t = {{.cvm_id = "cvm-real", .pid = child->pid()}};
  cvm_sample last;
  bool grown = test::wait_until(
      [&] {
        auto r = src.sample(t);
        if (r.size() != 1 || !r[0]) return false;
        last = *r[0];
        return last.processes >= 3;  // sh and two sleeps
      },
      test::deadline_in(10s));
  CHECK(grown);
  CHECK(last.memory_bytes > 0);
  ::kill(child->pid(), SIGSTOP);
  CHECK(test::wait_until(
      [&] {
        auto r = src.sample(t);
        return r.size() == 1 && r[0] && r[0]->run_state == "stopped";
      },
      test::deadline_in(10s)));
  ::kill(child->pid(), SIGCONT);
  CHECK(test::wait_until(
      [&] {
        auto r = src.sample(t);
        return r.size() == 1 && r[0] && r[0]->run_state != "stopped";
      },
      test::deadline_in(10s)));
  ::kill(-child->pid(), SIGKILL);
  child->kill();
  auto r = src.sample(t);
  REQUIRE(r.size() == 1);
  REQUIRE_FALSE(r[0]);
  CHECK(r[0].error().code == errc::not_found);
}

TEST_CASE("heartbeat: decoded only from a matching subject, with a sane interval") {
  heartbeat hb{
      .cvm_id = "cvm-0123456789", .seq = 7, .interval = 250ms, .agent_state = "Running", .uptime_ms = 9};
  auto payload = encode_heartbeat(hb, "agent.cvm-0123456789");
  auto ok = decode_heartbeat("cove.v1.cvm.cvm-0123456789.heartbeat", payload);
  REQUIRE(ok);
  CHECK(ok->cvm_id == hb.cvm_id);
  CHECK(ok->seq == 7);
  CHECK(ok->interval == 250ms);
  CHECK(ok->agent_state == "Running");
  CHECK(ok->uptime_ms == 9);

  auto fails = [](std::string_view subject, const std::vector<uint8_t>& p, std::string_view text) {
    auto r = decode_heartbeat(subject, p);
    REQUIRE_FALSE(r);
    CHECK(r.error().code == errc::invalid_request);
    CHECK_MESSAGE(r.error().message.find(text) != std::string::npos, r.error().message);
  };
  // Another CVM's id in the body: an agent may speak only for itself.
  fails("cove.v1.cvm.cvm-other.heartbeat", payload, "does not match the subject");
  fails("cove.v1.cvm.cvm-0123456789.events", payload, "not a heartbeat subject");
  fails("cove.v1.cvm.cvm-0123456789.heartbeat", {1, 2, 3}, "malformed envelope");
  std::vector<uint8_t> garbage(200, 0xab);
  fails("cove.v1.cvm.cvm-0123456789.heartbeat", garbage, "malformed envelope");
  fails("cove.v1.cvm.cvm-0123456789.heartbeat", bus::make_ok({}, "x"), "expected Heartbeat body");
  auto zero = hb;
  zero.interval = 0ms;
  fails("cove.v1.cvm.cvm-0123456789.heartbeat", encode_heartbeat(zero, "x"), "interval_ms 0");
  auto huge = hb;
  huge.interval = 3600s;
  fails("cove.v1.cvm.cvm-0123456789.heartbeat", encode_heartbeat(huge, "x"), "outside");
  auto no_id = hb;
  no_id.cvm_id.clear();
  fails("cove.v1.cvm.cvm-0123456789.heartbeat", encode_heartbeat(no_id, "x"), "does not match");
}

TEST_CASE("health: unknown -> healthy -> unhealthy -> healthy -> gone") {
  auto t0 = steady_clock::time_point{} + 1000s;
  health_tracker h({.default_interval = 5s, .misses = 3});
  heartbeat hb{.cvm_id = "c", .seq = 0, .interval = 100ms, .agent_state = "ReceivingManifest"};

  // Not ready yet: a starting agent is never late.
  CHECK_FALSE(h.check(t0 + 60s));
  CHECK(h.state() == health_state::unknown);

  auto first = h.on_heartbeat(hb, t0);
  REQUIRE(first);
  CHECK(first->to == health_state::healthy);
  CHECK(first->message.find("first heartbeat") != std::string::npos);
  CHECK(h.interval() == 100ms);  // the agent's own period replaces the default
  CHECK(h.deadline() == 300ms);
  CHECK_FALSE(h.on_heartbeat(hb, t0 + 100ms));
  CHECK(h.heartbeats() == 2);

  CHECK_FALSE(h.check(t0 + 400ms));  // 300 ms after the last one: still in time
  auto late = h.check(t0 + 401ms);
  REQUIRE(late);
  CHECK(late->to == health_state::unhealthy);
  CHECK(late->message.find("no heartbeat for 301 ms (3 missed at 100 ms)") != std::string::npos);
  CHECK(h.detail() == late->message);
  CHECK_FALSE(h.check(t0 + 10s));  // reported once

  auto back = h.on_heartbeat(hb, t0 + 2100ms);
  REQUIRE(back);
  CHECK(back->to == health_state::healthy);
  CHECK(back->message.find("resumed after 2.0 s") != std::string::npos);
  CHECK(h.detail().empty());

  h.gone("agent killed by signal 9");
  CHECK(h.state() == health_state::gone);
  CHECK_FALSE(h.on_heartbeat(hb, t0 + 3s));
  CHECK_FALSE(h.check(t0 + 100s));
}

TEST_CASE("health: an agent that never sends a heartbeat after it became ready") {
  auto t0 = steady_clock::time_point{} + 1000s;
  health_tracker h({.default_interval = 1s, .misses = 2});
  h.ready(t0);
  CHECK_FALSE(h.check(t0 + 2s));
  auto late = h.check(t0 + 2001ms);
  REQUIRE(late);
  CHECK(late->to == health_state::unhealthy);
  CHECK(late->message.find("after the agent became ready") != std::string::npos);
}

TEST_CASE("monitor config: each field is checked") {
  auto fails = [](const monitor_config& c, std::string_view field) {
    auto v = validate(c);
    REQUIRE_FALSE(v);
    CHECK_MESSAGE(v.error().message.starts_with(field), v.error().message);
  };
  monitor_config c;
  fails(c, "bus");  // everything else is fine by default
  auto bad = c;
  bad.heartbeat_interval = 5ms;
  fails(bad, "heartbeat_interval");
  bad = c;
  bad.heartbeat_misses = 0;
  fails(bad, "heartbeat_misses");
  bad = c;
  bad.stats_interval = 5ms;
  fails(bad, "stats_interval");
  bad = c;
  bad.stats_interval = 0ms;  // off is fine
  fails(bad, "bus");
  bad = c;
  bad.sources[v1::Backend::libvirt] = nullptr;
  fails(bad, "sources");
  bad = c;
  bad.max_cvms = 0;
  fails(bad, "max_cvms");
  CHECK(to_string(health_state::unhealthy) == "unhealthy");
  CHECK(human_duration(350ms) == "350 ms");
  CHECK(human_duration(1500ms) == "1.5 s");
}

TEST_CASE("fuzz seeds: a heartbeat and a CvmStats reply round-trip") {
  // COVE_WRITE_FUZZ_SEEDS=1 writes them to actors/monitor/fuzz/corpus/heartbeat/.
  heartbeat hb{
      .cvm_id = "cvm-0123456789", .seq = 3, .interval = 5s, .agent_state = "Running", .uptime_ms = 15000};
  auto hb_bytes = encode_heartbeat(hb, "agent.cvm-0123456789");
  REQUIRE(decode_heartbeat("cove.v1.cvm.cvm-0123456789.heartbeat", hb_bytes));
  flatbuffers::FlatBufferBuilder b(256);
  auto stats = v1::CreateCvmStatsDirect(b, "cvm-0123456789", v1::Health::unhealthy, 15200, 42, "Running",
                                        1795660953807629108, "process", "stopped", 210000000, 0.5, 14 << 20,
                                        0, 3, "no heartbeat for 15.2 s (3 missed at 5.0 s)", 5000);
  auto stats_bytes = bus::finish(b, stats, {}, "coved.monitor");
  auto back = bus::body_as<v1::CvmStats>(stats_bytes);
  REQUIRE(back);
  CHECK((*back)->health() == v1::Health::unhealthy);
  CHECK((*back)->memory_bytes() == 14u << 20);
  if (std::getenv("COVE_WRITE_FUZZ_SEEDS")) {
    auto dir = fs::path(COVE_SOURCE_DIR) / "actors/monitor/fuzz/corpus/heartbeat";
    std::ofstream(dir / "heartbeat", std::ios::binary)
        .write(reinterpret_cast<const char*>(hb_bytes.data()), static_cast<std::streamsize>(hb_bytes.size()));
    std::ofstream(dir / "cvm_stats", std::ios::binary)
        .write(reinterpret_cast<const char*>(stats_bytes.data()),
               static_cast<std::streamsize>(stats_bytes.size()));
  }
}
