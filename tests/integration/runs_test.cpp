// Algorithm runs that go wrong (non-zero exit, timeout, crash), result requests by
// the wrong party, arguments, stopping a computation and a CVM that crashes mid-run:
// each ends in a clear state or error, the agent stays usable and no algorithm
// process outlives its run.
#include "event_log.hpp"
#include "fixture.hpp"

#include <signal.h>

#include <cerrno>
#include <cstdlib>

#include "cove/crypto/statements.hpp"

using namespace cove;
using namespace cove::itest;

namespace {

using bytes = std::vector<uint8_t>;

fs::path work_dir(cluster& c, const std::string& cvm) {
  return c.state_dir() / "cvms" / cvm / "work";
}

/// cove.v1.computation.stop through the computation service.
bus::reply<v1::ComputationStatus> stop_computation(cluster& c, const std::string& cvm,
                                                   const std::string& computation_id) {
  flatbuffers::FlatBufferBuilder b(128);
  auto req = v1::CreateComputationStop(b, b.CreateString(cvm), b.CreateString(computation_id));
  return must(bus::request_typed<v1::ComputationStatus>(c.bus(), bus::subjects::computation_stop,
                                                        bus::finish(b, req, {}, "itest"), 10s),
              "stop");
}

/// True once `pid` no longer exists (or is a zombie waiting for a reaper that is not ours).
bool process_gone(pid_t pid) {
  if (::kill(pid, 0) != 0) return errno == ESRCH;
  auto stat = read_file(fs::path("/proc") / std::to_string(pid) / "stat");
  auto close = stat.rfind(')');
  return close != std::string::npos && close + 2 < stat.size() && stat[close + 2] == 'Z';
}

/// Waits for a pid file written by an algorithm ("<pid>\n") and returns the pid.
pid_t wait_for_pid_file(const fs::path& file) {
  std::string text;
  bool ok = test::wait_until(
      [&] {
        text = read_file(file);
        return !text.empty() && text.back() == '\n';
      },
      test::deadline_in(20s));
  REQUIRE_MESSAGE(ok, "the algorithm did not write " << file);
  pid_t pid = static_cast<pid_t>(std::strtol(text.c_str(), nullptr, 10));
  REQUIRE(pid > 1);
  return pid;
}

void check_process_gone(pid_t pid) {
  INFO("pid " << pid);
  CHECK(test::wait_until([&] { return process_gone(pid); }, test::deadline_in(10s)));
}

/// Runs a computation of a bin algorithm over one dataset and returns its id.
struct simple_run {
  participant owner, hospital, consumer;
  manifest m;
};

simple_run launch(cluster& c, const std::string& cvm, const std::string& id, std::string_view script,
                  uint32_t timeout_seconds = 0, std::vector<std::string> args = {}) {
  simple_run r{c.make_participant(id + "-owner"),
               c.make_participant(id + "-hospital"),
               c.make_participant(id + "-consumer"),
               {}};
  auto algo = c.make_file(id + ".sh", script, true);
  auto data = c.make_file(id + ".txt", "1\n2\n3\n");
  r.m = make_manifest(id, algo, algo_type::bin, r.owner, {{data, &r.hospital}}, {&r.consumer},
                      timeout_seconds, std::move(args));
  CHECK(must(c.start_computation(cvm, r.m), "start") == "ReceivingAlgorithm");
  must(cli::upload(c.bus(), cvm, cli::file_role::algorithm, algo, r.owner.key, c.policy()), "algo");
  must(cli::upload(c.bus(), cvm, cli::file_role::dataset, data, r.hospital.key, c.policy()), "data");
  return r;
}

constexpr std::string_view count_script =
    "#!/bin/sh\n"
    "cat datasets/* | wc -l | tr -d ' ' > results/lines.txt\n";

}  // namespace

TEST_CASE(
    "an algorithm that exits 1 fails the run with its stderr; stop then frees the CVM for a new "
    "computation") {
  cluster c;
  auto cvm = c.create_cvm();
  auto r = launch(c, cvm, "exit-1",
                  "#!/bin/sh\n"
                  "echo 'bad input: cannot parse row 3' >&2\n"
                  "exit 1\n");
  auto st = c.wait_for_state(cvm, "Failed");
  CHECK(st.state == "Failed");
  CHECK(st.message.find("exit status 1") != std::string::npos);
  CHECK(st.message.find("bad input: cannot parse row 3") != std::string::npos);

  check_error(cli::fetch_result(c.bus(), cvm, r.consumer.key, c.policy(), c.dir() / "none.zip"),
              errc::algorithm_failed, "exit status 1");
  CHECK_FALSE(fs::exists(c.dir() / "none.zip"));
  CHECK_FALSE(fs::exists(work_dir(c, cvm) / "algo"));
  CHECK(dir_empty(work_dir(c, cvm) / "datasets"));

  // A new manifest is refused while the failed one is loaded ...
  auto next_owner = c.make_participant("next-owner");
  auto next_consumer = c.make_participant("next-consumer");
  auto next_hospital = c.make_participant("next-hospital");
  auto algo = c.make_file("count.sh", count_script, true);
  auto data = c.make_file("rows.txt", "a\nb\nc\nd\n");
  auto next = make_manifest("after-failure", algo, algo_type::bin, next_owner, {{data, &next_hospital}},
                            {&next_consumer});
  check_error(c.start_computation(cvm, next), errc::wrong_state, "stop it first");

  // ... until the computation is stopped.
  auto stopped = stop_computation(c, cvm, r.m.id);
  CHECK(stopped.body->state() == v1::AgentState::ReceivingManifest);
  st = must(cli::computation_status(c.bus(), cvm), "status");
  CHECK(st.state == "ReceivingManifest");
  CHECK(st.computation_id.empty());
  CHECK(st.message.empty());

  CHECK(must(c.start_computation(cvm, next), "start") == "ReceivingAlgorithm");
  must(cli::upload(c.bus(), cvm, cli::file_role::algorithm, algo, next_owner.key, c.policy()), "algo");
  must(cli::upload(c.bus(), cvm, cli::file_role::dataset, data, next_hospital.key, c.policy()), "data");
  c.wait_for_state(cvm, "ConsumingResults");
  CHECK(c.fetch_result_file(cvm, next_consumer, "lines.txt") == "4\n");
  CHECK(must(cli::computation_status(c.bus(), cvm)).state == "Complete");
}

TEST_CASE("an algorithm that outlives the manifest's timeout fails and its processes are killed") {
  cluster c;
  auto cvm = c.create_cvm();
  auto pid_file = c.dir() / "sleep.pid";
  auto shell_pid_file = c.dir() / "shell.pid";
  launch(c, cvm, "forever",
         "#!/bin/sh\n"
         "echo $$ > '" +
             shell_pid_file.string() +
             "'\n"
             "sleep 1000 &\n"
             "echo $! > '" +
             pid_file.string() +
             "'\n"
             "wait\n",
         1);
  auto st = c.wait_for_state(cvm, "Failed");
  CHECK(st.state == "Failed");
  CHECK(st.message.find("timed out after 1s") != std::string::npos);
  check_process_gone(wait_for_pid_file(pid_file));
  check_process_gone(wait_for_pid_file(shell_pid_file));
  // The agent still answers and its status keeps the reason.
  CHECK(must(cli::computation_status(c.bus(), cvm), "status").message == st.message);
}

TEST_CASE("a crashing algorithm fails the run with the signal") {
  cluster c;
  auto cvm = c.create_cvm();
  launch(c, cvm, "crash",
         "#!/bin/sh\n"
         "echo 'about to crash' >&2\n"
         "kill -SEGV $$\n"
         "echo 'still alive' >&2\n");
  auto st = c.wait_for_state(cvm, "Failed");
  CHECK(st.state == "Failed");
  CHECK(st.message.find("killed by signal 11") != std::string::npos);
  CHECK(st.message.find("about to crash") != std::string::npos);
  CHECK(st.message.find("still alive") == std::string::npos);
}

TEST_CASE("only a declared result consumer gets the result") {
  cluster c;
  auto cvm = c.create_cvm();
  auto r = launch(c, cvm, "consumers", count_script);
  c.wait_for_state(cvm, "ConsumingResults");

  // A valid signature by a key that is not a consumer: the hospital, then a stranger.
  check_error(cli::fetch_result(c.bus(), cvm, r.hospital.key, c.policy(), c.dir() / "stolen.zip"),
              errc::unauthorized, "not a result consumer");
  auto stranger = c.make_participant("stranger");
  check_error(cli::fetch_result(c.bus(), cvm, stranger.key, c.policy(), c.dir() / "stolen.zip"),
              errc::unauthorized, "not a result consumer");
  CHECK_FALSE(fs::exists(c.dir() / "stolen.zip"));

  // Naming the consumer's key without holding it: the signature does not verify.
  auto agent = must(cli::attest(c.bus(), cvm, c.policy()), "attest");
  auto consumer_der = r.consumer.der();
  auto sig = must(stranger.key.sign(crypto::result_statement(r.m.id, manifest_digest(r.m), consumer_der,
                                                             agent.kx_public_key)),
                  "sign");
  flatbuffers::FlatBufferBuilder b(1024);
  auto req =
      v1::CreateResultRequest(b, b.CreateString(r.m.id), b.CreateVector(consumer_der), b.CreateVector(sig));
  check_error(bus::request_typed<v1::ResultReady>(c.bus(), *bus::cvm_subject(cvm, "result"),
                                                  bus::finish(b, req, {}, "itest"), 10s),
              errc::unauthorized, "signature does not verify");

  CHECK(must(cli::computation_status(c.bus(), cvm), "status").state == "ConsumingResults");
  CHECK(c.fetch_result_file(cvm, r.consumer, "lines.txt") == "3\n");
  CHECK(must(cli::computation_status(c.bus(), cvm)).state == "Complete");
}

TEST_CASE("a bin algorithm receives the manifest's arguments") {
  cluster c;
  auto cvm = c.create_cvm();
  auto r = launch(c, cvm, "args",
                  "#!/bin/sh\n"
                  "echo \"argc=$#\" > results/args.txt\n"
                  "for a in \"$@\"; do printf '[%s]\\n' \"$a\" >> results/args.txt; done\n",
                  0, {"--alpha=1", "two words", "x;y$z*"});
  c.wait_for_state(cvm, "ConsumingResults");
  CHECK(c.fetch_result_file(cvm, r.consumer, "args.txt") == "argc=3\n[--alpha=1]\n[two words]\n[x;y$z*]\n");
}

TEST_CASE("stopping a running computation kills the algorithm and wipes its files") {
  cluster c;
  auto cvm = c.create_cvm();
  auto pid_file = c.dir() / "sleep.pid";
  auto shell_pid_file = c.dir() / "shell.pid";
  auto r = launch(c, cvm, "stop-me",
                  "#!/bin/sh\n"
                  "echo partial > results/partial.txt\n"
                  "echo $$ > '" +
                      shell_pid_file.string() +
                      "'\n"
                      "sleep 1000 &\n"
                      "echo $! > '" +
                      pid_file.string() +
                      "'\n"
                      "wait\n");
  auto sleep_pid = wait_for_pid_file(pid_file);
  auto shell_pid = wait_for_pid_file(shell_pid_file);
  CHECK(must(cli::computation_status(c.bus(), cvm), "status").state == "Running");
  auto wd = work_dir(c, cvm);
  CHECK(fs::exists(wd / "algo"));
  CHECK(fs::exists(wd / "datasets" / "stop-me.txt"));
  CHECK_FALSE(process_gone(sleep_pid));

  auto stopped = stop_computation(c, cvm, r.m.id);
  CHECK(stopped.body->state() == v1::AgentState::ReceivingManifest);
  check_process_gone(sleep_pid);
  check_process_gone(shell_pid);
  CHECK_FALSE(fs::exists(wd / "algo"));
  CHECK(dir_empty(wd / "datasets"));
  CHECK(dir_empty(wd / "results"));
  CHECK(dir_empty(wd / "incoming"));
  CHECK_FALSE(fs::exists(wd / "result.zip"));

  auto st = must(cli::computation_status(c.bus(), cvm), "status");
  CHECK(st.state == "ReceivingManifest");
  CHECK(st.computation_id.empty());
  CHECK(st.pending.empty());
  // The stopped run's consumer gets nothing: there is no computation any more.
  check_error(cli::fetch_result(c.bus(), cvm, r.consumer.key, c.policy(), c.dir() / "late.zip", &r.m),
              errc::wrong_state, "has no computation");
}

TEST_CASE("a CVM that crashes mid-run fails its computation at once, with the reason") {
  cluster c;
  event_log events(c.bus());
  auto cvm = c.create_cvm();
  auto pid_file = c.dir() / "algo.pid";
  auto r = launch(c, cvm, "crash-me", "#!/bin/sh\necho $$ > '" + pid_file.string() + "'\nexec sleep 1000\n");
  auto algo_pid = wait_for_pid_file(pid_file);
  CHECK(c.wait_for_state(cvm, "Running").state == "Running");

  auto agent = static_cast<pid_t>(must(c.cvm_info(cvm), "info").body->pid());
  REQUIRE(agent > 1);
  auto mark = events.size();
  REQUIRE(::kill(agent, SIGKILL) == 0);
  auto crashed = events.wait_for("cvm", cvm, "crashed", mark, 10s);
  REQUIRE(crashed);
  // Right after the manager's event, not after some client's request timeout.
  auto failed = events.wait_for("computation", cvm, "Failed", mark, 5s);
  REQUIRE(failed);
  CHECK(failed->computation_id == r.m.id);
  CHECK(failed->message.starts_with("CVM crashed: "));
  CHECK(failed->message.find("signal 9") != std::string::npos);
  CHECK(failed->message == "CVM crashed: " + crashed->message.substr(0, crashed->message.find('\n')));

  // `cove computation status` (the agent is gone: the computation service answers).
  auto st = must(cli::computation_status(c.bus(), cvm, {.request_timeout = 5s}), "status");
  CHECK(st.state == "Failed");
  CHECK(st.computation_id == r.m.id);
  CHECK(st.message == failed->message);
  // A new computation cannot start on it.
  check_error(c.start_computation(cvm, r.m), errc::wrong_state, "has no agent: CVM crashed: ");

  // Removed, the CVM is forgotten: no agent answers, no second Failed event.
  must(c.remove_cvm(cvm), "remove");
  REQUIRE(events.wait_for("cvm", cvm, "removed", mark));
  check_error(cli::computation_status(c.bus(), cvm, {.request_timeout = 5s}), errc::unavailable,
              "no agent answers");
  CHECK(events.count(cvm, "Failed") == 1);

  // The algorithm may outlive its SIGKILLed agent; this test cleans up what it started.
  if (!process_gone(algo_pid)) ::kill(algo_pid, SIGKILL);
}

TEST_CASE("a CVM removed after its computation completed reports no failure") {
  cluster c;
  event_log events(c.bus());
  auto cvm = c.create_cvm();
  auto r = launch(c, cvm, "done", count_script);
  c.wait_for_state(cvm, "ConsumingResults");
  CHECK(c.fetch_result_file(cvm, r.consumer, "lines.txt") == "3\n");
  c.wait_for_state(cvm, "Complete");
  auto mark = events.size();
  must(c.remove_cvm(cvm), "remove");
  REQUIRE(events.wait_for("cvm", cvm, "removed", mark));
  // The computation service handled the removal (events reach it in order) without
  // a Failed event: a status request after it gets no answer from a record.
  check_error(cli::computation_status(c.bus(), cvm, {.request_timeout = 5s}), errc::unavailable,
              "no agent answers");
  CHECK(events.count(cvm, "Failed") == 0);
}
