// The manager actor against a real nats-server, with a backend whose launch blocks
// until the test opens a gate: the manager must keep answering (list, info, remove)
// while a create's launch is still running, as it does during a libvirt create
// (define/start the domain, swtpm: seconds). The order is asserted by the gate, not
// by time: the launch cannot finish before the test opens it.
#include <doctest/doctest.h>

#include <condition_variable>
#include <csignal>
#include <functional>
#include <mutex>
#include <set>

#include "cove/attest/sim.hpp"
#include "cove/attest/sim_store.hpp"
#include "cove/bus/actor.hpp"
#include "cove/bus/envelope.hpp"
#include "cove/bus/subjects.hpp"
#include "cove/manager/manager.hpp"
#include "cove/test/nats_server.hpp"
#include "cove/test/process.hpp"

using namespace cove;
using namespace cove::manager;
using namespace std::chrono_literals;

namespace {

template <class T>
T must(expected<T> v, const char* what) {
  REQUIRE_MESSAGE(v.has_value(), what << ": " << (v ? std::string() : v.error().to_string()));
  return std::move(*v);
}

void must(const expected<void>& v, const char* what) {
  REQUIRE_MESSAGE(v.has_value(), what << ": " << (v ? std::string() : v.error().to_string()));
}

/// A backend whose launch waits for open() (bounded, so a broken test cannot hang);
/// stop() reports the exit at once, like a process that ends on SIGTERM.
class gated_backend final : public cvm_backend {
 public:
  explicit gated_backend(exit_callback on_exit) : on_exit_(std::move(on_exit)) {}

  [[nodiscard]] std::string_view name() const override { return "gated"; }
  [[nodiscard]] std::string_view log_name() const override { return "agent.log"; }

  expected<pid_t> launch(const agent_launch& l) override {
    std::unique_lock lock(mu_);
    entered_.push_back(l.cvm_id);
    cv_.notify_all();
    if (!cv_.wait_for(lock, 30s, [&] { return open_; }))
      return make_error(errc::timeout, "the test never opened the gate");
    if (closed_) return make_error(errc::unavailable, "shutting down");
    return static_cast<pid_t>(100000 + entered_.size());
  }
  void stop(const std::string& cvm_id, pid_t, bool) override {
    {
      std::lock_guard lock(mu_);
      stopped_.insert(cvm_id);
    }
    on_exit_(cvm_id, SIGTERM);  // a wait status: killed by SIGTERM
  }
  [[nodiscard]] std::string describe_exit(const std::string&, int) const override { return "gated exit"; }
  void shutdown() override {
    std::lock_guard lock(mu_);
    open_ = closed_ = true;
    cv_.notify_all();
  }

  void open() {
    std::lock_guard lock(mu_);
    open_ = true;
    cv_.notify_all();
  }
  /// The id of the n-th launch (1-based) once it has started, or "" after 10 s.
  std::string entered(size_t n) {
    std::unique_lock lock(mu_);
    if (!cv_.wait_for(lock, 10s, [&] { return entered_.size() >= n; })) return {};
    return entered_[n - 1];
  }
  bool stopped(const std::string& id) {
    std::lock_guard lock(mu_);
    return stopped_.count(id) > 0;
  }

 private:
  exit_callback on_exit_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::string> entered_;
  std::set<std::string> stopped_;
  bool open_ = false, closed_ = false;
};

/// What arrived, in order: replies to async requests and events.
struct arrivals {
  std::mutex mu;
  std::vector<std::string> seen;
  void add(std::string s) {
    std::lock_guard lock(mu);
    seen.push_back(std::move(s));
  }
  bool has(const std::string& s) {
    std::lock_guard lock(mu);
    return std::find(seen.begin(), seen.end(), s) != seen.end();
  }
  bool wait(const std::string& s) {
    return test::wait_until([&] { return has(s); }, test::deadline_in(10s));
  }
};

std::vector<uint8_t> create_request() {
  flatbuffers::FlatBufferBuilder b(64);
  return bus::finish(b, v1::CreateCvmCreate(b), {}, "test");
}

std::vector<uint8_t> ref_request(const std::string& id) {
  flatbuffers::FlatBufferBuilder b(64);
  return bus::finish(b, v1::CreateCvmRef(b, b.CreateString(id)), {}, "test");
}

/// "<what> <state or error code>", for an async request's answer.
std::string outcome(const std::string& what, const expected<bus::message>& r) {
  if (!r) return what + " " + std::string(to_string(r.error().code));
  auto info = bus::body_as<v1::CvmInfo>(r->data);
  if (!info) return what + " " + std::string(to_string(info.error().code));
  return what + " " + v1::EnumNameCvmState((*info)->state());
}

}  // namespace

TEST_CASE("manager: list, info and remove are answered while a create's launch still blocks its backend") {
  auto nats = must(test::nats_server::start(), "nats-server");
  test::temp_dir dir("cove-manager-test");
  auto conn = must(bus::connection::connect({.url = nats.url(), .name = "manager"}), "connect");
  auto client = must(bus::connection::connect({.url = nats.url(), .name = "client"}), "connect");
  auto root = must(attest::generate_sim_root(), "sim root");

  caf::actor_system_config sys_cfg;
  bus::add_bus_types(sys_cfg);
  sys_cfg.set("logger.console", caf::atom("none"));
  caf::actor_system sys{sys_cfg};
  auto target = std::make_shared<caf::actor>();
  auto backend = std::make_shared<gated_backend>([target](const std::string& id, int status) {
    caf::anon_send(*target, atom::exited::value, id, status);
  });

  manager_config cfg;
  cfg.state_dir = dir.path();
  cfg.agent_binary = "/bin/true";  // never run: the gated backend launches nothing
  cfg.agent_nats_url = nats.url();
  cfg.default_policy_json = attest::sim_policy_json(root, {});
  cfg.bus = conn;
  cfg.backend = backend;
  cfg.sim_root = std::make_shared<const attest::sim_root>(std::move(root));
  auto mgr = caf::actor_cast<caf::actor>(sys.spawn(manager::manager, std::move(cfg)));
  *target = mgr;
  std::vector<bus::subscription> subs;
  // Also on a failed REQUIRE: the system's destructor waits for the manager to quit.
  struct on_exit_t {
    std::function<void()> f;
    ~on_exit_t() { f(); }
  } teardown{[&] {
    subs.clear();
    backend->shutdown();  // opens the gate: a held launch returns
    *target = caf::actor{};
    caf::anon_send_exit(mgr, caf::exit_reason::user_shutdown);
  }};
  for (auto s : {bus::subjects::manager_create, bus::subjects::manager_list, bus::subjects::manager_info,
                 bus::subjects::manager_remove, std::string_view("cove.v1.cvm.*.events")})
    subs.push_back(must(bus::subscribe_actor(*conn, s, mgr), "subscribe"));
  arrivals got;
  auto events =
      must(client->subscribe(bus::subjects::cvm_events,
                             [&](bus::message&& m) {
                               auto ev = bus::body_as<v1::Event>(m.data);
                               if (ev && (*ev)->cvm_id() && (*ev)->state())
                                 got.add("event " + (*ev)->cvm_id()->str() + " " + (*ev)->state()->str());
                             }),
           "subscribe events");
  must(conn->flush(5s), "flush");
  must(client->flush(5s), "flush");

  // A create whose launch is held at the gate.
  must(client->request_async(bus::subjects::manager_create, create_request(), 20s,
                             [&](expected<bus::message> r) { got.add(outcome("create A", r)); }),
       "create A");
  auto a = backend->entered(1);
  REQUIRE_FALSE(a.empty());

  // list and info answer now, the launch still held: the CVM is there, starting, pid 0.
  auto list = must(bus::request_typed<v1::CvmList>(
                       *client, bus::subjects::manager_list,
                       [] {
                         flatbuffers::FlatBufferBuilder b(64);
                         return bus::finish(b, v1::CreateCvmListRequest(b), {}, "test");
                       }(),
                       5s),
                   "list during the launch");
  REQUIRE(list.body->cvms());
  REQUIRE(list.body->cvms()->size() == 1);
  CHECK(list.body->cvms()->Get(0)->id()->str() == a);
  CHECK(list.body->cvms()->Get(0)->state() == v1::CvmState::starting);
  auto info = must(bus::request_typed<v1::CvmInfo>(*client, bus::subjects::manager_info, ref_request(a), 5s),
                   "info during the launch");
  CHECK(info.body->pid() == 0);
  CHECK_FALSE(got.has("create A running"));
  CHECK_FALSE(got.has("event " + a + " starting"));  // announced once launched, with its pid

  // A remove during the launch: the pending create fails at once; the stop waits for
  // the launch (the backend does not know the CVM yet), then the remove completes.
  must(client->request_async(bus::subjects::manager_remove, ref_request(a), 20s,
                             [&](expected<bus::message> r) { got.add(outcome("remove A", r)); }),
       "remove A");
  CHECK(got.wait("create A not_found"));
  CHECK_FALSE(got.has("remove A removed"));
  CHECK_FALSE(backend->stopped(a));
  backend->open();
  CHECK(got.wait("remove A removed"));
  CHECK(backend->stopped(a));  // what the late launch started was stopped
  CHECK(got.wait("event " + a + " removed"));
  CHECK_FALSE(got.has("event " + a + " starting"));

  // The gate open, a create completes as before: starting (with the pid), then
  // running once the agent announces ReceivingManifest.
  must(client->request_async(bus::subjects::manager_create, create_request(), 20s,
                             [&](expected<bus::message> r) { got.add(outcome("create B", r)); }),
       "create B");
  auto b = backend->entered(2);
  REQUIRE_FALSE(b.empty());
  REQUIRE(got.wait("event " + b + " starting"));
  flatbuffers::FlatBufferBuilder eb(128);
  auto ready = v1::CreateEventDirect(eb, "computation", b.c_str(), "", "ReceivingManifest", "", 0);
  must(client->publish(*bus::cvm_subject(b, "events"), bus::finish(eb, ready, {}, "test")), "ready");
  CHECK(got.wait("create B running"));
  auto info_b = must(
      bus::request_typed<v1::CvmInfo>(*client, bus::subjects::manager_info, ref_request(b), 5s), "info B");
  CHECK(info_b.body->pid() == 100002);
}
