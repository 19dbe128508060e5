// The locked-down bus (docs/security.md "Bus security"): TLS, one nkey user per
// role, participants admitted per computation. Every refusal is observed as
// the server reports it (a permission violation on the client's connection, and
// a cove event on cove.v1.events.authz from coved), never by a missing reply.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <csignal>
#include <cstdlib>
#include <mutex>

#include "cove/bus/authz.hpp"
#include "cove/bus/nkeys.hpp"
#include "cove/schemas/envelope_generated.h"
#include "fixture.hpp"

using namespace cove;
using namespace cove::itest;
using bus::authz::role;

namespace {

std::span<const uint8_t> bytes(std::string_view s) {
  return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}

int mode_of(const fs::path& p) {
  struct stat st {};
  REQUIRE(::stat(p.c_str(), &st) == 0);
  return static_cast<int>(st.st_mode & 0777);
}

/// A bus client that records every refusal the server sends it.
class client {
 public:
  explicit client(bus::connect_options o) {
    o.max_reconnect = 0;
    o.on_permission_violation = [st = st_](const error& e) {
      std::lock_guard lock(st->mu);
      st->refusals.push_back(e.message);
    };
    // nats-server 2.9 rarely refuses a known nkey for a moment around a
    // configuration reload; a real refusal repeats.
    expected<std::shared_ptr<bus::connection>> c = make_error(errc::unavailable, "not tried");
    test::wait_until(
        [&] {
          c = bus::connection::connect(o);
          return c.has_value();
        },
        test::deadline_in(5s));
    conn_ = must(std::move(c), "connect");
  }

  bus::connection& conn() { return *conn_; }
  std::shared_ptr<bus::connection> ptr() { return conn_; }

  std::vector<std::string> refusals() const {
    std::lock_guard lock(st_->mu);
    return st_->refusals;
  }

  /// Waits until the server refused something naming `subject` (quoted).
  bool refused(const std::string& subject) const {
    return test::wait_until(
        [&] {
          for (const auto& r : refusals())
            if (r.find('"' + subject + '"') != std::string::npos) return true;
          return false;
        },
        test::deadline_in(5s));
  }

  /// Publishing to `subject` is allowed: after it, a publish to `sentinel`
  /// (which this user may not use) is refused, and nothing about `subject`.
  /// The server handles one connection's messages in order, so once the
  /// sentinel's refusal is here, any refusal of `subject` would be too.
  void expect_publish_allowed(const std::string& subject,
                              const std::string& sentinel = "forbidden.sentinel") {
    must(conn_->publish(subject, bytes("x")), "publish");
    check_then_sentinel(subject, sentinel);
  }
  void expect_publish_refused(const std::string& subject) {
    must(conn_->publish(subject, bytes("x")), "publish");
    CHECK_MESSAGE(refused(subject), "publish to " << subject << " was not refused");
  }
  void expect_subscribe_allowed(const std::string& subject,
                                const std::string& sentinel = "forbidden.sentinel") {
    subs_.push_back(must(conn_->subscribe(subject, [](bus::message&&) {}), "subscribe"));
    check_then_sentinel(subject, sentinel);
  }
  void expect_subscribe_refused(const std::string& subject) {
    subs_.push_back(must(conn_->subscribe(subject, [](bus::message&&) {}), "subscribe"));
    CHECK_MESSAGE(refused(subject), "subscription to " << subject << " was not refused");
  }

 private:
  void check_then_sentinel(const std::string& subject, const std::string& sentinel) {
    must(conn_->publish(sentinel, bytes("x")), "publish sentinel");
    REQUIRE_MESSAGE(refused(sentinel), "sentinel " << sentinel << " not refused");
    for (const auto& r : refusals())
      CHECK_MESSAGE(r.find('"' + subject + '"') == std::string::npos, subject << " was refused: " << r);
  }

  struct shared {
    mutable std::mutex mu;
    std::vector<std::string> refusals;
  };
  std::shared_ptr<shared> st_ = std::make_shared<shared>();
  std::shared_ptr<bus::connection> conn_;
  std::vector<bus::subscription> subs_;
};

/// A nats-server running the configuration of a fresh <dir>/bus.
struct secure_server {
  test::temp_dir dir{"cove-authz"};
  bus::authz::bus_dir keys = must(bus::authz::bus_dir::open_or_create(dir.path() / "bus"), "bus dir");
  test::nats_server nats = start();

  test::nats_server start() {
    must(keys.write_config(), "write config");
    return must(test::nats_server::start_with_config(keys.config_file()), "nats-server");
  }
  bus::connect_options as(role r) const {
    return keys.credentials(r, {.url = nats.url(), .name = "authz-test"});
  }
};

/// Speaks the NATS protocol in the clear: returns the server's INFO line and
/// whatever it answers to CONNECT + PING before it closes the connection (or 5 s).
std::pair<std::string, std::string> plaintext_exchange(int port) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  REQUIRE(fd >= 0);
  timeval tv{5, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
  auto read_some = [&] {
    std::string out;
    char buf[4096];
    ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n > 0) out.assign(buf, static_cast<size_t>(n));
    return out;
  };
  std::string info = read_some();
  std::string hello = "CONNECT {\"verbose\":false}\r\nPING\r\n";
  (void)::send(fd, hello.data(), hello.size(), MSG_NOSIGNAL);
  std::string answer;
  for (std::string more; !(more = read_some()).empty();) answer += more;
  ::close(fd);
  return {info, answer};
}

std::shared_ptr<const bus::nkeys::user_key> ed25519_nkey(const participant& p) {
  return std::make_shared<const bus::nkeys::user_key>(
      must(bus::nkeys::user_key::from_private_key(p.key), "nkey"));
}

}  // namespace

TEST_CASE("authz: the generated bus directory is private and reused") {
  test::temp_dir dir("cove-authz-dir");
  auto first = must(bus::authz::bus_dir::open_or_create(dir.path() / "bus"), "create");
  must(first.write_config(), "config");
  CHECK(mode_of(dir.path() / "bus") == 0700);
  int files = 0;
  for (const auto& e : fs::directory_iterator(dir.path() / "bus")) {
    INFO(e.path());
    CHECK(mode_of(e.path()) == 0600);
    ++files;
  }
  CHECK(files == 12);  // ca.pem ca.key server.pem server.key, 7 seeds, nats-server.conf
  auto again = must(bus::authz::bus_dir::open_or_create(dir.path() / "bus"), "reopen");
  for (auto r : bus::authz::all_roles) CHECK(again.key(r)->public_key() == first.key(r)->public_key());
  CHECK(read_file(again.ca_file()) == read_file(first.ca_file()));
  // Seeds are secrets: no two roles share one, none appears in the config.
  auto conf = read_file(first.config_file());
  for (auto r : bus::authz::all_roles) {
    CHECK(conf.find(first.key(r)->public_key()) != std::string::npos);
    CHECK(conf.find(first.key(r)->seed()) == std::string::npos);
  }
  // A corrupt seed is an error, not a silent new identity.
  write_file(dir.path() / "bus" / "manager.seed", "SUAAAA\n");
  auto bad = bus::authz::bus_dir::open_or_create(dir.path() / "bus");
  REQUIRE_FALSE(bad.has_value());
  CHECK(bad.error().message.find("manager.seed") != std::string::npos);
}

TEST_CASE("authz: no credentials, an unknown nkey, a wrong CA or no TLS are refused") {
  secure_server s;
  // The admin connects (the positive control).
  client admin(s.as(role::admin));
  CHECK(admin.conn().connected());

  auto no_nkey = s.as(role::admin);
  no_nkey.nkey.reset();
  no_nkey.max_reconnect = 0;
  check_error(bus::connection::connect(no_nkey), errc::unauthorized, "uthorization");

  auto stranger = s.as(role::admin);
  stranger.nkey = std::make_shared<const bus::nkeys::user_key>(must(bus::nkeys::user_key::generate(), "key"));
  check_error(bus::connection::connect(stranger), errc::unauthorized, "uthorization");

  // Plain TCP: the server announces that TLS is required and hangs up on a
  // client that sends CONNECT in the clear (nats.c itself would upgrade).
  auto [info, answer] = plaintext_exchange(s.nats.port());
  CHECK(info.find("\"tls_required\":true") != std::string::npos);
  CHECK(answer.find("PONG") == std::string::npos);
  // Without the CA, nats.c cannot verify the server: refused too.
  auto no_ca = s.as(role::admin);
  no_ca.ca_file.clear();
  no_ca.url = "nats://127.0.0.1:" + std::to_string(s.nats.port());
  check_error(bus::connection::connect(no_ca), errc::unauthorized, "SSL");

  // A CA that did not sign the server's certificate.
  test::temp_dir other("cove-authz-other");
  auto other_keys = must(bus::authz::bus_dir::open_or_create(other.path() / "bus"), "other bus dir");
  auto wrong_ca = s.as(role::admin);
  wrong_ca.ca_file = other_keys.ca_file().string();
  check_error(bus::connection::connect(wrong_ca), errc::unauthorized,
              "unable to get local issuer certificate");
}

TEST_CASE("authz: each role can do what it needs and nothing else") {
  secure_server s;
  // An admin observer proves that allowed traffic really flows.
  client admin(s.as(role::admin));
  std::mutex mu;
  std::vector<std::string> seen;
  auto watch = must(admin.conn().subscribe("cove.v1.>",
                                           [&](bus::message&& m) {
                                             std::lock_guard lock(mu);
                                             seen.push_back(m.subject);
                                           }),
                    "watch");
  must(admin.conn().flush(5s), "flush");
  auto wait_seen = [&](const std::string& subject) {
    return test::wait_until(
        [&] {
          std::lock_guard lock(mu);
          return std::find(seen.begin(), seen.end(), subject) != seen.end();
        },
        test::deadline_in(5s));
  };

  SUBCASE("manager") {
    client c(s.as(role::manager));
    c.expect_publish_allowed("cove.v1.events.cvm");
    CHECK(wait_seen("cove.v1.events.cvm"));
    c.expect_subscribe_allowed("cove.v1.manager.create");
    c.expect_subscribe_allowed("cove.v1.cvm.abc.events");
    c.expect_subscribe_allowed("cove.v1.events.bridge");
    c.expect_publish_refused("cove.v1.events.computation");
    c.expect_publish_refused("cove.v1.cvm.abc.upload");
    c.expect_subscribe_refused("cove.v1.cvm.abc.upload");
    c.expect_subscribe_refused("cove.v1.computation.start");
    // Another user's replies are not for the manager to read.
    c.expect_subscribe_refused("_INBOX." + s.keys.key(role::admin)->public_key() + ".>");
  }
  SUBCASE("computation") {
    client c(s.as(role::computation));
    c.expect_publish_allowed("cove.v1.events.computation");
    c.expect_publish_allowed("cove.v1.cvm.abc.manifest");
    c.expect_publish_allowed("cove.v1.cvm.abc.status");
    c.expect_publish_allowed("cove.v1.cvm.abc.stop");
    CHECK(wait_seen("cove.v1.cvm.abc.manifest"));
    c.expect_subscribe_allowed("cove.v1.computation.start");
    c.expect_subscribe_allowed("cove.v1.cvm.abc.events");
    c.expect_publish_refused("cove.v1.cvm.abc.upload");
    c.expect_publish_refused("cove.v1.cvm.abc.result");
    c.expect_publish_refused("cove.v1.manager.create");
    c.expect_subscribe_refused("cove.v1.cvm.abc.chunk");
    c.expect_subscribe_refused("cove.v1.manager.>");
  }
  SUBCASE("attestation") {
    client c(s.as(role::attestation));
    c.expect_subscribe_allowed(std::string(bus::subjects::attestation_verify));
    c.expect_publish_refused("cove.v1.events.attestation");
    c.expect_publish_refused(std::string(bus::subjects::attestation_verify));
    c.expect_subscribe_refused("cove.v1.cvm.abc.attest");
  }
  SUBCASE("bridge") {
    client c(s.as(role::bridge));
    c.expect_publish_allowed("cove.v1.cvm.abc.events");
    c.expect_publish_allowed("cove.v1.cvm.abc.heartbeat");  // agents' heartbeats, relayed
    c.expect_publish_allowed("cove.v1.events.bridge");
    c.expect_subscribe_allowed("cove.v1.cvm.abc.upload");
    c.expect_publish_refused("cove.v1.events.cvm");
    c.expect_publish_refused("cove.v1.manager.create");
    c.expect_publish_refused("cove.v1.computation.start");
    c.expect_subscribe_refused("cove.v1.events.>");
  }
  SUBCASE("monitor") {
    client c(s.as(role::monitor));
    c.expect_subscribe_allowed("cove.v1.events.>");
    c.expect_subscribe_allowed("cove.v1.cvm.abc.events");
    c.expect_subscribe_allowed("cove.v1.cvm.abc.heartbeat");
    c.expect_subscribe_allowed(std::string(bus::subjects::monitor_stats));
    c.expect_publish_allowed("cove.v1.events.authz");
    c.expect_publish_allowed("cove.v1.events.health");
    c.expect_publish_allowed("cove.v1.events.stats");
    CHECK(wait_seen("cove.v1.events.health"));
    // It learns CVMs' backends and pids from the manager.
    c.expect_publish_allowed(std::string(bus::subjects::manager_list));
    c.expect_publish_allowed(std::string(bus::subjects::manager_info));
    c.expect_publish_refused("cove.v1.events.cvm");
    c.expect_publish_refused("cove.v1.cvm.abc.stop");
    // Heartbeats come from agents only; the monitor cannot fake one.
    c.expect_publish_refused("cove.v1.cvm.abc.heartbeat");
    c.expect_publish_refused(std::string(bus::subjects::manager_create));
    c.expect_publish_refused(std::string(bus::subjects::manager_remove));
    c.expect_subscribe_refused("cove.v1.cvm.abc.upload");
    c.expect_subscribe_refused("cove.v1.manager.>");
  }
  SUBCASE("orchestrator") {
    // coved's cvms client and manager gRPC gateway: CVM lifecycle, computation
    // control and the events they relay, nothing on a CVM's own subjects.
    client c(s.as(role::orchestrator));
    for (const char* subject :
         {"cove.v1.manager.create", "cove.v1.manager.info", "cove.v1.manager.remove",
          "cove.v1.computation.start", "cove.v1.computation.stop", "cove.v1.computation.status"})
      c.expect_publish_allowed(subject);
    CHECK(wait_seen("cove.v1.computation.start"));
    for (const char* subject : {"cove.v1.events.computation", "cove.v1.events.upload",
                                "cove.v1.events.result", "cove.v1.events.cvm", "cove.v1.events.bridge"})
      c.expect_subscribe_allowed(subject);
    c.expect_publish_refused("cove.v1.manager.policy");
    c.expect_publish_refused("cove.v1.manager.list");
    c.expect_publish_refused("cove.v1.cvm.abc.manifest");
    c.expect_publish_refused("cove.v1.cvm.abc.upload");
    c.expect_publish_refused("cove.v1.events.computation");
    c.expect_subscribe_refused("cove.v1.events.authz");
    c.expect_subscribe_refused("cove.v1.cvm.abc.events");
    c.expect_subscribe_refused("cove.v1.manager.>");
    c.expect_subscribe_refused("_INBOX." + s.keys.key(role::admin)->public_key() + ".>");
  }
  SUBCASE("the manager and the computation service answer the orchestrator") {
    client orch(s.as(role::orchestrator));
    client mgr(s.as(role::manager));
    client comp(s.as(role::computation));
    auto answer = [](client& who, const char* subject, const char* text) {
      return must(
          who.conn().subscribe(subject, [conn = who.ptr(), text](
                                            bus::message&& m) { (void)conn->publish(m.reply, bytes(text)); }),
          "subscribe");
    };
    auto s1 = answer(mgr, "cove.v1.manager.create", "cvm");
    auto s2 = answer(comp, "cove.v1.computation.start", "started");
    must(mgr.conn().flush(5s), "flush");
    must(comp.conn().flush(5s), "flush");
    auto r1 = must(orch.conn().request("cove.v1.manager.create", bytes("x"), 5s), "create");
    CHECK(std::string(r1.data.begin(), r1.data.end()) == "cvm");
    auto r2 = must(orch.conn().request("cove.v1.computation.start", bytes("x"), 5s), "start");
    CHECK(std::string(r2.data.begin(), r2.data.end()) == "started");
    CHECK(r2.subject.starts_with("_INBOX." + s.keys.key(role::orchestrator)->public_key() + "."));
    // The orchestrator's inbox is not for the other roles.
    client att(s.as(role::attestation));
    att.expect_publish_refused("_INBOX." + s.keys.key(role::orchestrator)->public_key() + ".x");
  }
  SUBCASE("admin") {
    // The operator reaches every service and CVM, but not other users' inboxes.
    admin.expect_publish_allowed("cove.v1.manager.create");
    admin.expect_publish_allowed("cove.v1.cvm.abc.upload");
    admin.expect_subscribe_refused("_INBOX.>");
    admin.expect_publish_refused("_INBOX." + s.keys.key(role::manager)->public_key() + ".x");
  }
  SUBCASE("services answer only the users that may send them requests") {
    // The attestation service publishes nothing of its own, but answers the
    // admin (and the bridge) in their inboxes.
    client att(s.as(role::attestation));
    auto responder = must(att.conn().subscribe(std::string(bus::subjects::attestation_verify),
                                               [conn = att.ptr()](bus::message&& m) {
                                                 (void)conn->publish(m.reply, bytes("verdict"));
                                               }),
                          "subscribe");
    must(att.conn().flush(5s), "flush");
    auto reply =
        must(admin.conn().request(bus::subjects::attestation_verify, bytes("evidence"), 5s), "request");
    CHECK(reply.subject.starts_with("_INBOX." + s.keys.key(role::admin)->public_key() + "."));
    CHECK(std::string(reply.data.begin(), reply.data.end()) == "verdict");
    // Nobody else's inbox.
    att.expect_publish_refused("_INBOX." + s.keys.key(role::manager)->public_key() + ".x");
    att.expect_publish_refused("_INBOX." + s.keys.key(role::computation)->public_key() + ".x");
    // The manager answers the monitor (manager.list/info), the monitor answers the admin.
    client mgr(s.as(role::manager));
    mgr.expect_publish_allowed("_INBOX." + s.keys.key(role::monitor)->public_key() + ".x");
    client mon(s.as(role::monitor));
    mon.expect_publish_allowed("_INBOX." + s.keys.key(role::admin)->public_key() + ".x");
    mon.expect_publish_refused("_INBOX." + s.keys.key(role::bridge)->public_key() + ".x");
  }
}

TEST_CASE("authz: a participant may publish only to its own computation's CVM") {
  secure_server s;
  test::temp_dir dir("cove-authz-p");
  auto key = must(crypto::private_key::generate(crypto::key_type::ed25519), "key");
  participant alice{std::move(key), dir.path() / "alice.key"};
  auto nkey = ed25519_nkey(alice);
  auto alice_opts = s.as(role::admin);
  alice_opts.nkey = nkey;
  alice_opts.max_reconnect = 0;

  // Before any grant, the key is nobody on this bus.
  check_error(bus::connection::connect(alice_opts), errc::unauthorized, "uthorization");

  // The computation service accepted a manifest naming alice for CVM "aaa".
  s.keys.grant("aaa", {nkey->raw_public_key()});
  must(s.keys.write_config(), "config");
  CHECK(mode_of(s.keys.config_file()) == 0600);
  s.nats.reload();
  std::shared_ptr<bus::connection> probe;
  REQUIRE(test::wait_until(
      [&] {
        auto c = bus::connection::connect(alice_opts);
        if (c) probe = *c;
        return c.has_value();
      },
      test::deadline_in(10s)));
  probe.reset();

  client admin(s.as(role::admin));
  std::mutex mu;
  std::vector<std::string> seen;
  auto watch = must(admin.conn().subscribe("cove.v1.cvm.>",
                                           [&](bus::message&& m) {
                                             std::lock_guard lock(mu);
                                             seen.push_back(m.subject);
                                           }),
                    "watch");
  must(admin.conn().flush(5s), "flush");

  client a(alice_opts);
  for (auto leaf : bus::authz::participant_leaves)
    a.expect_publish_allowed(*bus::cvm_subject("aaa", leaf), "cove.v1.cvm.bbb.upload");
  a.expect_publish_allowed(std::string(bus::subjects::computation_status), "cove.v1.cvm.bbb.upload");
  REQUIRE(test::wait_until(
      [&] {
        std::lock_guard lock(mu);
        return std::find(seen.begin(), seen.end(), "cove.v1.cvm.aaa.upload") != seen.end();
      },
      test::deadline_in(5s)));
  // Another computation, the services, and the agent's own subjects: refused.
  a.expect_publish_refused("cove.v1.cvm.bbb.upload");
  a.expect_publish_refused("cove.v1.cvm.aaa.events");
  a.expect_publish_refused("cove.v1.cvm.aaa.manifest");
  a.expect_publish_refused("cove.v1.manager.create");
  a.expect_publish_refused("cove.v1.computation.start");
  a.expect_subscribe_refused("cove.v1.cvm.aaa.upload");
  a.expect_subscribe_refused("cove.v1.events.>");
  {
    std::lock_guard lock(mu);
    CHECK(std::find(seen.begin(), seen.end(), "cove.v1.cvm.bbb.upload") == seen.end());
  }
  // A request to a refused subject fails at once with the server's reason.
  check_error(a.conn().request("cove.v1.cvm.bbb.attest", bytes("nonce"), 30s), errc::unauthorized,
              "Permissions Violation for Publish to");

  // A second computation extends the grant; revoking the first takes it away.
  s.keys.grant("bbb", {nkey->raw_public_key()});
  s.keys.grant("aaa", {});
  must(s.keys.write_config(), "config");
  s.nats.reload();
  REQUIRE(test::wait_until(
      [&] {
        client fresh(alice_opts);
        auto before = fresh.refusals().size();
        (void)fresh.conn().publish("cove.v1.cvm.aaa.upload", bytes("x"));
        (void)fresh.conn().publish("cove.v1.cvm.bbb.upload", bytes("x"));
        (void)fresh.conn().publish("forbidden.sentinel", bytes("x"));
        if (!fresh.refused("forbidden.sentinel")) return false;
        auto r = fresh.refusals();
        bool aaa_refused = false, bbb_refused = false;
        for (size_t i = before; i < r.size(); ++i) {
          aaa_refused |= r[i].find("\"cove.v1.cvm.aaa.upload\"") != std::string::npos;
          bbb_refused |= r[i].find("\"cove.v1.cvm.bbb.upload\"") != std::string::npos;
        }
        return aaa_refused && !bbb_refused;
      },
      test::deadline_in(10s)));
}

TEST_CASE("authz: coved's embedded bus is locked down by default and admits participants per computation") {
  test::temp_dir dir("cove-authz-coved");
  auto state = dir.path() / "state";
  embedded_server_reaper reaper(state);  // declared before coved: runs after coved is gone
  auto start_coved = [&] {
    fs::remove(state / "nats.url");
    auto p = must(test::child_process::spawn({(bin_dir() / "coved").string(), "--listen", "127.0.0.1:0",
                                              "--state-dir", state.string(), "--log-level", "debug"},
                                             {}, dir.path(), "coved"),
                  "coved");
    return p;
  };
  auto coved = start_coved();
  // Ready when the admin (what `cove` uses on this host) gets an answer from the manager.
  std::string url;
  std::shared_ptr<bus::connection> admin;
  auto list_cvms = [](bus::connection& c) {
    flatbuffers::FlatBufferBuilder b(64);
    return bus::request_typed<v1::CvmList>(c, bus::subjects::manager_list,
                                           bus::finish(b, v1::CreateCvmListRequest(b), {}, "itest"), 2s);
  };
  auto wait_ready = [&] {
    return test::wait_until(
        [&] {
          REQUIRE(coved.running());
          url = read_file(state / "nats.url");
          if (url.empty()) return false;
          url = url.substr(0, url.find('\n'));
          auto o = must(cli::bus_options(url, "", "", state), "options");
          auto c = bus::connection::connect(o);
          if (!c) return false;
          admin = *c;
          return list_cvms(*admin).has_value();
        },
        test::deadline_in(20s));
  };
  REQUIRE_MESSAGE(wait_ready(), "coved did not become ready; log in " << dir.path());
  CHECK(url.starts_with("tls://"));

  // Keys and config: 0700 directory, 0600 files.
  CHECK(mode_of(state / "bus") == 0700);
  for (auto name : {"ca.key", "server.key", "admin.seed", "manager.seed", "computation.seed",
                    "attestation.seed", "nats-server.conf"})
    CHECK_MESSAGE(mode_of(state / "bus" / name) == 0600, name);

  // Without credentials the bus is closed.
  bus::connect_options anon{.url = url, .name = "anon", .max_reconnect = 0};
  anon.ca_file = (state / "bus" / "ca.pem").string();
  check_error(bus::connection::connect(anon), errc::unauthorized, "uthorization");

  // The admin follows refusals as cove events.
  std::mutex mu;
  std::vector<std::pair<std::string, std::string>> authz_events;  // cvm id, message
  auto events =
      must(admin->subscribe("cove.v1.events.authz",
                            [&](bus::message&& m) {
                              auto ev = bus::body_as<v1::Event>(m.data);
                              if (!ev) return;
                              std::lock_guard lock(mu);
                              authz_events.emplace_back((*ev)->cvm_id() ? (*ev)->cvm_id()->str() : "",
                                                        (*ev)->message() ? (*ev)->message()->str() : "");
                            }),
           "events");
  must(admin->flush(5s), "flush");

  // A participant whose manifest key is Ed25519 is admitted when a computation
  // naming it starts (no agent can join this bus yet, so the start itself
  // fails, after the computation service accepted the manifest).
  auto key = must(crypto::private_key::generate(crypto::key_type::ed25519), "key");
  auto key_file = dir.path() / "alice.key";
  write_file(key_file, key.to_pem());
  participant alice{std::move(key), key_file};
  auto alice_pub = ed25519_nkey(alice)->public_key();
  auto alice_opts = must(cli::bus_options(url, key_file.string(), (state / "bus" / "ca.pem").string(), state),
                         "alice options");
  alice_opts.max_reconnect = 0;
  check_error(bus::connection::connect(alice_opts), errc::unauthorized, "uthorization");

  auto algo = dir.path() / "algo.py";
  write_file(algo, "print('hi')\n");
  auto m = make_manifest("authz-run", algo, algo_type::python, alice, {}, {&alice});
  {
    flatbuffers::FlatBufferBuilder b(4096);
    auto off = to_fbs(b, m);
    auto req = v1::CreateComputationStart(b, b.CreateString("cvm-a"), off);
    auto r = bus::request_typed<v1::ComputationStatus>(*admin, bus::subjects::computation_start,
                                                       bus::finish(b, req, {}, "itest"), 10s);
    REQUIRE_FALSE(r.has_value());  // no agent on cvm-a
    CHECK(r.error().code == errc::unavailable);
  }
  std::shared_ptr<bus::connection> alice_conn;
  std::string last_error;
  bool admitted = test::wait_until(
      [&] {
        auto c = bus::connection::connect(alice_opts);
        if (c)
          alice_conn = *c;
        else
          last_error = c.error().to_string();
        return c.has_value();
      },
      test::deadline_in(10s));
  REQUIRE_MESSAGE(admitted, "last error: " << last_error << "\ncoved log:\n"
                                           << read_file(dir.path() / "coved.stderr") << "\nnats-server log:\n"
                                           << read_file(state / "nats" / "nats-server.log"));
  alice_conn.reset();
  client a(alice_opts);
  a.expect_publish_allowed("cove.v1.cvm.cvm-a.upload", "cove.v1.cvm.cvm-b.upload");
  a.expect_publish_refused("cove.v1.cvm.cvm-b.chunk");
  // coved turned the refusals into events naming the CVM and the reason.
  auto events_text = [&] {
    std::lock_guard lock(mu);
    std::string out;
    for (const auto& [cvm, msg] : authz_events) out.append(cvm).append(": ").append(msg).append("\n");
    return out;
  };
  INFO("authz events:\n"
       << events_text() << "\ncoved log:\n"
       << read_file(dir.path() / "coved.stderr") << "\nnats-server log:\n"
       << read_file(state / "nats" / "nats-server.log"));
  REQUIRE(test::wait_until(
      [&] {
        std::lock_guard lock(mu);
        for (const auto& [cvm, msg] : authz_events)
          if (cvm == "cvm-b" && msg.find("Publish Violation") != std::string::npos &&
              msg.find("cove.v1.cvm.cvm-b.chunk") != std::string::npos &&
              msg.find(alice_pub) != std::string::npos)
            return true;
        return false;
      },
      test::deadline_in(10s)));

  // The `cove` CLI with the participant's key: refused on a service subject, with the reason.
  auto cove_as_alice = [&](std::vector<std::string> args, std::string_view text) {
    std::vector<std::string> argv = {(bin_dir() / "cove").string(), "--nkey-seed", key_file.string(),
                                     "--timeout", "30"};
    argv.insert(argv.end(), args.begin(), args.end());
    auto p =
        must(test::child_process::spawn(argv, {"COVE_STATE_DIR=" + state.string()}, dir.path(), "cove-alice"),
             "cove");
    auto st = p.wait_for_exit(test::deadline_in(20s));
    REQUIRE(st);
    CHECK(WEXITSTATUS(*st) == 1);
    auto err = read_file(dir.path() / "cove-alice.stderr");
    CHECK_MESSAGE(err.find(text) != std::string::npos, err);
  };
  cove_as_alice({"cvm", "list"}, "Permissions Violation for Publish to \"cove.v1.manager.list\"");
  cove_as_alice({"events", "--follow"}, "Permissions Violation for Subscription to \"cove.v1.events.>\"");
  // Refused subscriptions become events too.
  CHECK(test::wait_until(
      [&] {
        std::lock_guard lock(mu);
        for (const auto& [cvm, msg] : authz_events)
          if (msg.find("Subscription Violation") != std::string::npos &&
              msg.find("\"cove.v1.events.>\"") != std::string::npos &&
              msg.find(alice_pub) != std::string::npos)
            return true;
        return false;
      },
      test::deadline_in(10s)));

  // A restart reuses the keys: the admin seed and CA are unchanged.
  auto seed_before = read_file(state / "bus" / "admin.seed");
  auto ca_before = read_file(state / "bus" / "ca.pem");
  events.reset();
  admin.reset();
  CHECK(coved.terminate(10s) == 0);
  coved = start_coved();
  REQUIRE_MESSAGE(wait_ready(), "coved did not restart; log in " << dir.path());
  CHECK(read_file(state / "bus" / "admin.seed") == seed_before);
  CHECK(read_file(state / "bus" / "ca.pem") == ca_before);
  admin.reset();
  CHECK(coved.terminate(10s) == 0);
}

TEST_CASE("authz: coved --insecure-bus starts an open embedded server; bad flag combinations are refused") {
  test::temp_dir dir("cove-authz-insecure");
  auto state = dir.path() / "state";
  embedded_server_reaper reaper(state);
  auto coved = must(test::child_process::spawn({(bin_dir() / "coved").string(), "--listen", "127.0.0.1:0",
                                                "--state-dir", state.string(), "--insecure-bus"},
                                               {}, dir.path(), "coved"),
                    "coved");
  std::string url;
  REQUIRE(test::wait_until(
      [&] {
        REQUIRE(coved.running());
        url = read_file(state / "nats.url");
        return !url.empty() && url.back() == '\n';
      },
      test::deadline_in(20s)));
  url.pop_back();
  CHECK(url.starts_with("nats://"));
  CHECK_FALSE(fs::exists(state / "bus"));
  CHECK(bus::connection::connect({.url = url, .name = "anyone", .max_reconnect = 0}).has_value());
  CHECK(coved.terminate(10s) == 0);

  auto refused = [&](std::vector<std::string> args, std::string_view text) {
    std::vector<std::string> argv = {(bin_dir() / "coved").string(), "--state-dir", state.string()};
    argv.insert(argv.end(), args.begin(), args.end());
    auto p = must(test::child_process::spawn(argv, {}, dir.path(), "coved-bad"), "coved");
    auto st = p.wait_for_exit(test::deadline_in(20s));
    REQUIRE(st);
    CHECK(WEXITSTATUS(*st) == 2);
    auto err = read_file(dir.path() / "coved-bad.stderr");
    CHECK_MESSAGE(err.find(text) != std::string::npos, err);
  };
  refused({"--nats", "nats://127.0.0.1:1", "--insecure-bus"}, "--insecure-bus applies to the embedded");
  refused({"--nkey-dir", dir.path().string()}, "--nkey-dir and --ca apply to an external server");
  refused({"--nats", "nats://127.0.0.1:1", "--nkey-dir", (dir.path() / "missing").string()},
          "not a directory");
}

TEST_CASE("authz: bad CLI credentials get a clear error") {
  test::temp_dir dir("cove-authz-cli");
  auto url = std::string("tls://127.0.0.1:1");
  check_error(cli::bus_options(url, (dir.path() / "missing.key").string(), "", dir.path()), errc::not_found,
              "cannot open key file");
  auto p256 = must(crypto::private_key::generate(crypto::key_type::ecdsa_p256), "key");
  write_file(dir.path() / "p256.key", p256.to_pem());
  check_error(cli::bus_options(url, (dir.path() / "p256.key").string(), "", dir.path()),
              errc::invalid_request, "an nkey needs an Ed25519 key");
  check_error(cli::bus_options(url, "", (dir.path() / "missing-ca.pem").string(), dir.path()),
              errc::not_found, "CA file");
  // With a tls:// URL and a state dir holding a bus, its CA and admin seed are the defaults.
  auto keys = must(bus::authz::bus_dir::open_or_create(dir.path() / "bus"), "bus dir");
  auto o = must(cli::bus_options(url, "", "", dir.path()), "defaults");
  CHECK(o.ca_file == keys.ca_file().string());
  REQUIRE(o.nkey);
  CHECK(o.nkey->public_key() == keys.key(role::admin)->public_key());
  // A nats:// URL takes nothing from the state dir.
  auto plain = must(cli::bus_options("nats://127.0.0.1:1", "", "", dir.path()), "plain");
  CHECK(plain.ca_file.empty());
  CHECK_FALSE(plain.nkey);
}

TEST_CASE("authz: coved on an external locked server authenticates each service with --nkey-dir and --ca") {
  secure_server s;
  auto state = s.dir.path() / "state";
  auto coved = must(test::child_process::spawn({(bin_dir() / "coved").string(), "--nats", s.nats.url(),
                                                "--nkey-dir", (s.dir.path() / "bus").string(), "--ca",
                                                s.keys.ca_file().string(), "--state-dir", state.string()},
                                               {}, s.dir.path(), "coved"),
                    "coved");
  client admin(s.as(role::admin));
  flatbuffers::FlatBufferBuilder b(64);
  auto payload = bus::finish(b, v1::CreateCvmListRequest(b), {}, "itest");
  bool ready = test::wait_until(
      [&] {
        REQUIRE(coved.running());
        return bus::request_typed<v1::CvmList>(admin.conn(), bus::subjects::manager_list, payload, 500ms)
            .has_value();
      },
      test::deadline_in(20s));
  REQUIRE_MESSAGE(ready, "coved did not become ready:\n" << read_file(s.dir.path() / "coved.stderr"));
  // coved generated nothing of its own for the bus.
  CHECK_FALSE(fs::exists(state / "bus"));
  CHECK(coved.terminate(10s) == 0);

  // Without credentials coved cannot join that server: startup fails (exit 1).
  auto anon = must(test::child_process::spawn({(bin_dir() / "coved").string(), "--nats", s.nats.url(), "--ca",
                                               s.keys.ca_file().string(), "--state-dir", state.string()},
                                              {}, s.dir.path(), "coved-anon"),
                   "coved");
  auto st = anon.wait_for_exit(test::deadline_in(20s));
  REQUIRE(st);
  CHECK(WEXITSTATUS(*st) == 1);
  CHECK(read_file(s.dir.path() / "coved-anon.stderr").find("Authorization Violation") != std::string::npos);
}

TEST_CASE("authz: on the locked bus, participants run a computation with their own keys through the bridge") {
  test::temp_dir dir("cove-authz-run");
  auto state = dir.path() / "state";
  embedded_server_reaper reaper(state);
  auto coved = must(test::child_process::spawn({(bin_dir() / "coved").string(), "--listen", "127.0.0.1:0",
                                                "--state-dir", state.string(), "--log-level", "debug"},
                                               {}, dir.path(), "coved"),
                    "coved");
  std::string url;
  std::shared_ptr<bus::connection> admin;
  REQUIRE(test::wait_until(
      [&] {
        REQUIRE(coved.running());
        url = read_file(state / "nats.url");
        if (url.empty()) return false;
        url = url.substr(0, url.find('\n'));
        auto c = bus::connection::connect(must(cli::bus_options(url, "", "", state), "options"));
        if (!c) return false;
        admin = *c;
        flatbuffers::FlatBufferBuilder b(64);
        return bus::request_typed<v1::CvmList>(*admin, bus::subjects::manager_list,
                                               bus::finish(b, v1::CreateCvmListRequest(b), {}, "itest"), 2s)
            .has_value();
      },
      test::deadline_in(20s)));

  auto make = [&](const char* name) {
    auto key = must(crypto::private_key::generate(crypto::key_type::ed25519), "key");
    auto file = dir.path() / (std::string(name) + ".key");
    write_file(file, key.to_pem());
    return participant{std::move(key), file};
  };
  auto alice = make("alice"), bob = make("bob");
  auto connect_as = [&](const participant& p) {
    auto o =
        must(cli::bus_options(url, p.key_file.string(), (state / "bus" / "ca.pem").string(), state), "opts");
    o.max_reconnect = 0;
    return bus::connection::connect(o);
  };
  auto policy = must(cli::load_policy(state / "sim" / "policy.json"), "policy");

  // The operator (admin) creates the CVM: its agent joins through the bridge.
  flatbuffers::FlatBufferBuilder cb(64);
  auto created =
      must(bus::request_typed<v1::CvmInfo>(*admin, bus::subjects::manager_create,
                                           bus::finish(cb, v1::CreateCvmCreate(cb), {}, "itest"), 30s),
           "create");
  std::string cvm = created.body->id()->str();
  // The monitor works on the locked bus: it learns the CVM from the manager, the agent's
  // heartbeats reach it through the bridge, and it answers the operator.
  {
    flatbuffers::FlatBufferBuilder b(64);
    auto ref = bus::finish(b, v1::CreateCvmRef(b, b.CreateString(cvm)), {}, "itest");
    CHECK_MESSAGE(test::wait_until(
                      [&] {
                        auto s =
                            bus::request_typed<v1::CvmStats>(*admin, bus::subjects::monitor_stats, ref, 2s);
                        return s && s->body->health() == v1::Health::healthy && s->body->heartbeats() > 0;
                      },
                      test::deadline_in(20s)),
                  "the monitor did not report the CVM healthy; log in " << dir.path());
  }
  auto algo = dir.path() / "count.sh";
  write_file(algo, "#!/bin/sh\ncat datasets/* | wc -l > results/n\n", fs::perms::owner_all);
  auto data = dir.path() / "rows.csv";
  write_file(data, "a\nb\nc\nd\n");
  auto m = make_manifest("authz-bridge", algo, algo_type::bin, alice, {{data, &bob}}, {&alice});
  {
    flatbuffers::FlatBufferBuilder b(4096);
    auto off = to_fbs(b, m);
    auto req = v1::CreateComputationStart(b, b.CreateString(cvm), off);
    must(bus::request_typed<v1::ComputationStatus>(*admin, bus::subjects::computation_start,
                                                   bus::finish(b, req, {}, "itest"), 10s),
         "start");
  }
  // Grants take effect after the server reloads its configuration.
  std::shared_ptr<bus::connection> a, bo;
  REQUIRE(test::wait_until(
      [&] {
        auto ca = connect_as(alice);
        auto cbo = connect_as(bob);
        if (!ca || !cbo) return false;
        a = *ca;
        bo = *cbo;
        return true;
      },
      test::deadline_in(15s)));
  // Each participant attests the agent and uploads with its own bus identity; the
  // agent's answers reach their inboxes through the bridge.
  must(cli::upload(*a, cvm, cli::file_role::algorithm, algo, alice.key, policy), "algo as alice");
  must(cli::upload(*bo, cvm, cli::file_role::dataset, data, bob.key, policy), "data as bob");
  REQUIRE(test::wait_until(
      [&] {
        auto st = cli::computation_status(*a, cvm);
        return st && st->state == "ConsumingResults";
      },
      test::deadline_in(30s)));
  auto out = dir.path() / "result.zip";
  must(cli::fetch_result(*a, cvm, alice.key, policy, out), "result as alice");
  check_error(cli::fetch_result(*bo, cvm, bob.key, policy, dir.path() / "bob.zip"), errc::unauthorized,
              "not a result consumer");
  a.reset();
  bo.reset();
  admin.reset();
  CHECK(coved.terminate(10s) == 0);
}
