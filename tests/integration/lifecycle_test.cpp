// CVM lifecycle through the manager: create, list, info, remove, crashes, TTL
// expiry, a killed daemon, and coved's --services switch.
#include "event_log.hpp"
#include "fixture.hpp"

#include <sys/prctl.h>
#include <sys/wait.h>

#include <csignal>

using namespace cove;
using namespace cove::itest;

namespace {

bool process_exists(pid_t pid) {
  return ::kill(pid, 0) == 0;
}

std::vector<uint8_t> list_request() {
  flatbuffers::FlatBufferBuilder b(64);
  return bus::finish(b, v1::CreateCvmListRequest(b), {}, "itest");
}

std::vector<std::string> cvm_ids(bus::connection& conn) {
  auto r =
      must(bus::request_typed<v1::CvmList>(conn, bus::subjects::manager_list, list_request(), 5s), "list");
  std::vector<std::string> ids;
  if (r.body->cvms())
    for (const auto* i : *r.body->cvms()) ids.push_back(i->id()->str());
  return ids;
}

bool listed(bus::connection& conn, const std::string& id) {
  auto ids = cvm_ids(conn);
  return std::find(ids.begin(), ids.end(), id) != ids.end();
}

}  // namespace

TEST_CASE("cvm create, list, info and remove; remove kills the agent and wipes its directory") {
  cluster c;
  auto a = c.create_cvm();
  auto b = c.create_cvm(3600);
  CHECK(a != b);
  CHECK(bus::valid_id(a));

  auto ids = cvm_ids(c.bus());
  std::sort(ids.begin(), ids.end());
  auto want = std::vector<std::string>{a, b};
  std::sort(want.begin(), want.end());
  CHECK(ids == want);

  auto info = must(c.cvm_info(a), "info");
  CHECK(info.body->id()->str() == a);
  CHECK(info.body->backend() == v1::Backend::process);
  CHECK(info.body->tee() == v1::Tee::sim);
  CHECK(info.body->state() == v1::CvmState::running);
  CHECK(info.body->created_at_ns() > 0);
  CHECK(info.body->ttl_seconds() == 0);
  CHECK(must(c.cvm_info(b), "info b").body->ttl_seconds() == 3600);
  pid_t pid = static_cast<pid_t>(info.body->pid());
  REQUIRE(pid > 0);
  CHECK(process_exists(pid));
  auto dir = c.state_dir() / "cvms" / a;
  CHECK(fs::is_directory(dir));

  auto removed = must(c.remove_cvm(a), "remove");
  CHECK(removed.body->id()->str() == a);
  CHECK(removed.body->state() == v1::CvmState::removed);
  // The reply comes once the agent is gone and its files are wiped.
  CHECK_FALSE(process_exists(pid));
  CHECK_FALSE(fs::exists(dir));
  CHECK(cvm_ids(c.bus()) == std::vector<std::string>{b});

  auto gone = c.cvm_info(a);
  REQUIRE_FALSE(gone);
  CHECK(gone.error().code == errc::not_found);
  auto unknown = c.remove_cvm("cvm-does-not-exist");
  REQUIRE_FALSE(unknown);
  CHECK(unknown.error().code == errc::not_found);
  auto again = c.remove_cvm(a);
  REQUIRE_FALSE(again);
  CHECK(again.error().code == errc::not_found);
  // The surviving CVM is untouched.
  CHECK(must(cli::computation_status(c.bus(), b), "status b").state == "ReceivingManifest");
}

TEST_CASE("a crashed agent is reaped and reported, and the manager keeps serving") {
  cluster c;
  event_log events(c.bus());
  auto id = c.create_cvm();
  pid_t pid = static_cast<pid_t>(must(c.cvm_info(id), "info").body->pid());
  REQUIRE(pid > 0);
  REQUIRE(::kill(pid, SIGKILL) == 0);

  auto ev = events.wait_for("cvm", id, "crashed", 0, 15s);
  REQUIRE(ev);
  CHECK(ev->message.find("killed by signal 9") != std::string::npos);
  auto info = must(c.cvm_info(id), "info");
  CHECK(info.body->state() == v1::CvmState::crashed);
  REQUIRE(info.body->detail() != nullptr);
  CHECK(info.body->detail()->str().find("killed by signal 9") != std::string::npos);
  CHECK_FALSE(process_exists(pid));
  // The run's work directory is wiped even though the agent could not do it.
  CHECK_FALSE(fs::exists(c.state_dir() / "cvms" / id / "work"));

  auto other = c.create_cvm();
  CHECK(must(cli::computation_status(c.bus(), other), "status").state == "ReceivingManifest");
  // A crashed CVM is removed at once.
  auto removed = must(c.remove_cvm(id), "remove crashed");
  CHECK(removed.body->state() == v1::CvmState::removed);
  CHECK_FALSE(listed(c.bus(), id));
  CHECK_FALSE(fs::exists(c.state_dir() / "cvms" / id));
}

TEST_CASE("a CVM whose TTL passes expires and disappears") {
  cluster c;
  event_log events(c.bus());
  auto id = c.create_cvm(1);
  pid_t pid = static_cast<pid_t>(must(c.cvm_info(id), "info").body->pid());
  auto ev = events.wait_for("cvm", id, "expired", 0, 15s);
  REQUIRE(ev);
  CHECK_FALSE(listed(c.bus(), id));
  CHECK_FALSE(process_exists(pid));
  CHECK_FALSE(fs::exists(c.state_dir() / "cvms" / id));
  auto info = c.cvm_info(id);
  REQUIRE_FALSE(info);
  CHECK(info.error().code == errc::not_found);
}

TEST_CASE("coved restarts over the same state dir after a SIGKILL; the orphaned agent shuts down") {
  // Orphans are re-parented to this process, so we can reap (and see) them.
  REQUIRE(::prctl(PR_SET_CHILD_SUBREAPER, 1) == 0);
  cluster c;
  auto id = c.create_cvm();
  pid_t agent = static_cast<pid_t>(must(c.cvm_info(id), "info").body->pid());
  REQUIRE(agent > 0);
  CHECK(must(cli::computation_status(c.bus(), id), "status").state == "ReceivingManifest");

  auto st = c.coved().kill();
  REQUIRE(st);
  CHECK(WIFSIGNALED(*st));
  // Nothing answers the manager any more (once the server has noticed the
  // closed connection, the subject has no responders).
  std::optional<error> down;
  CHECK(test::wait_until(
      [&] {
        auto r = bus::request_typed<v1::CvmList>(c.bus(), bus::subjects::manager_list, list_request(), 200ms);
        REQUIRE_FALSE(r);
        down = r.error();
        return down->code == errc::unavailable;
      },
      test::deadline_in(10s)));

  // A process-backend agent cannot outlive its coved (nothing could adopt it):
  // the parent-death signal (SIGTERM) makes it wipe its run files and exit.
  int agent_status = 0;
  bool reaped = test::wait_until([&] { return ::waitpid(agent, &agent_status, WNOHANG) == agent; },
                                 test::deadline_in(10s));
  if (!reaped) {  // never leave it running, whatever happens
    ::kill(agent, SIGKILL);
    ::waitpid(agent, &agent_status, 0);
  }
  REQUIRE_MESSAGE(reaped, "the orphaned agent kept running after coved died");
  CHECK(WIFEXITED(agent_status));
  CHECK(WEXITSTATUS(agent_status) == 0);
  CHECK_FALSE(process_exists(agent));
  auto orphan = cli::computation_status(c.bus(), id);
  REQUIRE_FALSE(orphan);
  CHECK(orphan.error().code == errc::unavailable);

  c.start_coved();  // waits until the manager answers list
  // The new daemon knows no CVM: the dead one's directory is left behind
  // (without its run files), not adopted.
  CHECK(cvm_ids(c.bus()).empty());
  CHECK(fs::exists(c.state_dir() / "cvms" / id));
  auto fresh = c.create_cvm();
  CHECK(fresh != id);
  CHECK(listed(c.bus(), fresh));
  CHECK(must(cli::computation_status(c.bus(), fresh), "status").state == "ReceivingManifest");
}

TEST_CASE("coved --services computation serves no manager subjects") {
  test::temp_dir dir("cove-itest-svc");
  auto nats = must(test::nats_server::start(), "nats-server");
  auto conn = must(bus::connection::connect({.url = nats.url(), .name = "itest"}), "connect");
  auto coved =
      must(test::child_process::spawn({(bin_dir() / "coved").string(), "--nats", nats.url(), "--state-dir",
                                       (dir.path() / "state").string(), "--services", "computation"},
                                      {}, dir.path(), "coved"),
           "coved");

  // Ready when the computation service answers; an unknown CVM maps to a clear message.
  flatbuffers::FlatBufferBuilder b(64);
  auto status_req = bus::finish(b, v1::CreateStatusRequest(b, b.CreateString("cvm-nobody")), {}, "itest");
  std::optional<error> last;
  bool ready = test::wait_until(
      [&] {
        REQUIRE(coved.running());
        auto r = bus::request_typed<v1::ComputationStatus>(*conn, bus::subjects::computation_status,
                                                           status_req, 2s);
        REQUIRE_FALSE(r);
        last = r.error();
        return r.error().message.find("no agent answers for CVM 'cvm-nobody'") != std::string::npos;
      },
      test::deadline_in(20s));
  INFO("last error: " << (last ? last->to_string() : ""));
  REQUIRE(ready);
  CHECK(last->code == errc::unavailable);

  // The manager is off: its subjects have no responders.
  auto list = bus::request_typed<v1::CvmList>(*conn, bus::subjects::manager_list, list_request(), 2s);
  REQUIRE_FALSE(list);
  CHECK(list.error().code == errc::unavailable);
  flatbuffers::FlatBufferBuilder cb(64);
  auto create = bus::request_typed<v1::CvmInfo>(
      *conn, bus::subjects::manager_create,
      bus::finish(cb, v1::CreateCvmCreate(cb, v1::Backend::process, v1::Tee::sim, 0), {}, "itest"), 2s);
  REQUIRE_FALSE(create);
  CHECK(create.error().code == errc::unavailable);
  // No simulated TEE was prepared either (that belongs to the manager).
  CHECK_FALSE(fs::exists(dir.path() / "state" / "sim"));

  auto st = coved.terminate(10s);
  REQUIRE(st);
  CHECK(WIFEXITED(*st));
  CHECK(WEXITSTATUS(*st) == 0);
}

TEST_CASE("coved --services with an unknown service exits with status 2 and names it") {
  test::temp_dir dir("cove-itest-svc");
  auto coved = must(test::child_process::spawn(
                        {(bin_dir() / "coved").string(), "--nats", "nats://127.0.0.1:1", "--state-dir",
                         (dir.path() / "state").string(), "--services", "manager,bogus"},
                        {}, dir.path(), "coved"),
                    "coved");
  auto st = coved.wait_for_exit(test::deadline_in(10s));
  REQUIRE(st);
  REQUIRE(WIFEXITED(*st));
  CHECK(WEXITSTATUS(*st) == 2);
  auto err = read_file(dir.path() / "coved.stderr");
  INFO("stderr: " << err);
  CHECK(err.find("bogus") != std::string::npos);
  CHECK(err.find("--services") != std::string::npos);
}
