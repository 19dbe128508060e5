// The libvirt backend's pieces that need no libvirtd: the guest's view of host
// addresses, the image check, the share's ACLs, and the errors of a backend
// that has no image; then launch, stats, stop, the exit event and reconcile against
// libvirt's in-process test driver (test:///default: domains without QEMU, no
// libvirtd). The VM itself: tests/integration/libvirt_test.cpp.
#include <doctest/doctest.h>
#include <pwd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <condition_variable>
#include <csignal>
#include <fstream>
#include <mutex>
#include <optional>

#include "cove/manager/libvirt_backend.hpp"
#include "cove/test/process.hpp"

using namespace cove;
using namespace cove::manager;
namespace fs = std::filesystem;

TEST_CASE("the guest dials the host's loopback at 10.0.2.2") {
  CHECK(guest_view_of("127.0.0.1:7422") == "10.0.2.2:7422");
  CHECK(guest_view_of("localhost:1") == "10.0.2.2:1");
  CHECK(guest_view_of("0.0.0.0:9") == "10.0.2.2:9");
  CHECK(guest_view_of("[::1]:9") == "10.0.2.2:9");
  CHECK(guest_view_of("nats://127.0.0.1:4222") == "nats://10.0.2.2:4222");
  CHECK(guest_view_of("192.168.1.5:7422") == "192.168.1.5:7422");  // reachable through slirp's NAT
  CHECK(guest_view_of("no-port") == "no-port");
}

TEST_CASE("the image directory must hold vmlinuz, initrd.img and cmdline") {
  test::temp_dir tmp("cove-lv-image");
  auto r = check_image_dir(tmp.path());
  REQUIRE_FALSE(r);
  CHECK(r.error().code == errc::invalid_request);
  CHECK(r.error().message.find("vmlinuz missing") != std::string::npos);
  CHECK(r.error().message.find("./cove.sh eos") != std::string::npos);
  for (const char* f : {"vmlinuz", "initrd.img", "cmdline"}) std::ofstream(tmp.path() / f) << "x";
  CHECK(check_image_dir(tmp.path()));
}

TEST_CASE("a 0700 directory becomes searchable (not listable) for one user only") {
  if (::geteuid() != 0) return;  // chown/ACLs on others' behalf need root, as coved does
  test::temp_dir tmp("cove-lv-acl");
  auto d = tmp.path() / "private";
  fs::create_directories(d);
  ::chmod(d.c_str(), 0700);
  const uid_t uid = 64123, other = 64124;
  CHECK_FALSE(searchable_by(d, uid, uid));
  auto g = grant_search(d, uid);
  REQUIRE_MESSAGE(g, (g ? "" : g.error().to_string()));
  CHECK(searchable_by(d, uid, uid));
  CHECK_FALSE(searchable_by(d, other, other));
  struct stat st {};
  REQUIRE(::stat(d.c_str(), &st) == 0);
  CHECK((st.st_mode & 0007) == 0);     // others: still nothing
  CHECK((st.st_mode & 0070) == 0010);  // the ACL mask (shown as group bits): search only
  // Idempotent, and a second user is added beside the first.
  REQUIRE(grant_search(d, uid));
  REQUIRE(grant_search(d, other));
  CHECK(searchable_by(d, uid, uid));
  CHECK(searchable_by(d, other, other));
  auto missing = grant_search(tmp.path() / "nope", uid);
  REQUIRE_FALSE(missing);
  CHECK(missing.error().message.find("nope") != std::string::npos);
}

TEST_CASE("a backend without an image refuses to launch and knows no domains") {
  test::temp_dir tmp("cove-lv-backend");
  libvirt_config cfg;
  cfg.state_dir = tmp.path();
  cfg.image_dir = tmp.path() / "no-image";
  int exits = 0;
  libvirt_backend b(cfg, [&](const std::string&, int) { ++exits; });
  agent_launch l{.cvm_id = "cvm-1", .dir = tmp.path() / "cvms" / "cvm-1"};
  auto r = b.launch(l);
  REQUIRE_FALSE(r);
  CHECK(r.error().message.find("no-image/vmlinuz missing") != std::string::npos);
  auto s = b.stats("cvm-1");
  REQUIRE_FALSE(s);
  CHECK(s.error().code == errc::not_found);
  b.stop("cvm-1", 0, true);  // nothing to stop: no effect
  b.shutdown();
  CHECK(exits == 0);
  CHECK_FALSE(fs::exists(tmp.path() / "libvirt.uri"));
}

namespace {

/// Exits reported by a backend, waited for with a deadline.
struct exit_log {
  std::mutex mu;
  std::condition_variable cv;
  std::vector<std::pair<std::string, int>> seen;
  exit_callback callback() {
    return [this](const std::string& id, int status) {
      std::lock_guard lock(mu);
      seen.emplace_back(id, status);
      cv.notify_all();
    };
  }
  std::optional<int> wait_for(const std::string& id, std::chrono::seconds limit = std::chrono::seconds(20)) {
    std::unique_lock lock(mu);
    std::optional<int> status;
    cv.wait_for(lock, limit, [&] {
      for (const auto& [i, s] : seen)
        if (i == id) status = s;
      return status.has_value();
    });
    return status;
  }
};

/// An image directory, a simulated identity and a bridge certificate (contents do not
/// matter to libvirt's test driver, which runs no QEMU).
struct launch_fixture {
  test::temp_dir tmp{"cove-lv-launch"};
  fs::path state = tmp.path() / "state";
  libvirt_config cfg;
  launch_fixture() {
    fs::create_directories(tmp.path() / "image");
    fs::create_directories(tmp.path() / "tee");
    for (const char* f : {"vmlinuz", "initrd.img"}) std::ofstream(tmp.path() / "image" / f) << "x";
    std::ofstream(tmp.path() / "image" / "cmdline") << "console=ttyS0 panic=-1\n";
    std::ofstream(tmp.path() / "tee" / "vcek.pem") << "vcek";
    std::ofstream(tmp.path() / "bridge.pem") << "cert";
    cfg.uri = "test:///default";  // libvirt's in-process test driver: domains without QEMU
    cfg.state_dir = state;
    cfg.image_dir = tmp.path() / "image";
    if (::geteuid() != 0) cfg.qemu_user.clear();  // chown needs root
    ::chmod(tmp.path().c_str(), 0711);            // QEMU's user must reach the state dir
  }
  agent_launch launch_of(const std::string& id) const {
    return agent_launch{.cvm_id = id,
                        .bridge_address = "127.0.0.1:7422",
                        .bridge_ca = tmp.path() / "bridge.pem",
                        .dir = state / "cvms" / id,
                        .tee_dir = tmp.path() / "tee",
                        .log_file = state / "cvms" / id / "console.log",
                        .log_level = "debug",
                        .max_upload_bytes = 1000};
  }
};

}  // namespace

TEST_CASE("libvirt test driver: the share, the domain, stats, stop and the exit event") {
  launch_fixture f;
  f.cfg.guest_vtpm_tcti = "device:/dev/tpmrm0";
  exit_log exits;
  libvirt_backend b(f.cfg, exits.callback());
  auto l = f.launch_of("cvm-t1");
  if (::geteuid() == 0 && ::getpwnam("libvirt-qemu") != nullptr) {
    // Above the state dir coved changes nothing: a directory QEMU cannot search is an error.
    ::chmod(f.tmp.path().c_str(), 0700);
    auto refused = b.launch(l);
    REQUIRE_FALSE(refused);
    CHECK(refused.error().message.find(f.tmp.path().string() + " is not searchable by it") !=
          std::string::npos);
    ::chmod(f.tmp.path().c_str(), 0711);
  }
  auto pid = b.launch(l);
  REQUIRE_MESSAGE(pid, (pid ? "" : pid.error().to_string()));
  CHECK(*pid == 0);  // no libvirtd pid file for test-driver domains

  std::ifstream conf_file(l.dir / "config" / "agent.conf");
  std::string conf((std::istreambuf_iterator<char>(conf_file)), std::istreambuf_iterator<char>());
  CHECK(conf.find("CVM_ID=cvm-t1\n") != std::string::npos);
  CHECK(conf.find("BRIDGE=10.0.2.2:7422\n") != std::string::npos);
  CHECK(conf.find("LOG_LEVEL=debug\n") != std::string::npos);
  CHECK(conf.find("COVE_AGENT_ARGS=--sim-dir /config/sim --max-upload 1000 --vtpm device:/dev/tpmrm0\n") !=
        std::string::npos);
  CHECK(fs::exists(l.dir / "config" / "bridge-ca.pem"));
  CHECK(fs::exists(l.dir / "config" / "sim" / "vcek.pem"));
  CHECK(fs::exists(f.state / "libvirt.uri"));
  if (::geteuid() == 0) {
    if (struct passwd* pw = ::getpwnam("libvirt-qemu")) {
      struct stat st {};
      REQUIRE(::stat((l.dir / "config").c_str(), &st) == 0);
      CHECK(st.st_uid == pw->pw_uid);
      CHECK((st.st_mode & 0777) == 0500);
      CHECK(searchable_by(f.state, pw->pw_uid, pw->pw_gid));
      CHECK(searchable_by(l.dir, pw->pw_uid, pw->pw_gid));
    }
  }

  auto s = b.stats("cvm-t1");
  REQUIRE_MESSAGE(s, (s ? "" : s.error().to_string()));
  CHECK(s->state == "running");
  CHECK(s->max_memory_kib == 512 * 1024);
  CHECK(s->vcpus == 1);

  b.stop("cvm-t1", 0, false);
  auto status = exits.wait_for("cvm-t1");
  REQUIRE(status);
  CHECK(*status == SIGKILL);  // destroyed: not an agent exit
  CHECK(b.describe_exit("cvm-t1", *status).find("the domain was destroyed") != std::string::npos);
  b.forget("cvm-t1");
  b.shutdown();
  CHECK_FALSE(fs::exists(f.state / "libvirt.uri"));  // nothing left running
}

TEST_CASE("libvirt test driver: reconcile destroys this state dir's leftovers, not others'") {
  launch_fixture mine, theirs;
  exit_log exits;
  auto dead = std::make_unique<libvirt_backend>(mine.cfg, exits.callback());  // the coved that "died"
  libvirt_backend other(theirs.cfg, exits.callback());
  REQUIRE(dead->launch(mine.launch_of("cvm-r1")));
  REQUIRE(other.launch(theirs.launch_of("cvm-r2")));

  libvirt_backend restarted(mine.cfg, [](const std::string&, int) {});
  auto gone = restarted.reconcile();
  REQUIRE_MESSAGE(gone, (gone ? "" : gone.error().to_string()));
  CHECK(*gone == std::vector<std::string>{"cvm-r1"});
  CHECK_FALSE(fs::exists(mine.state / "cvms" / "cvm-r1"));
  CHECK(exits.wait_for("cvm-r1").has_value());  // the first backend saw its domain end
  CHECK(other.stats("cvm-r2"));                 // another state dir's domain is untouched
  other.shutdown();
  CHECK(exits.wait_for("cvm-r2").has_value());
  dead->shutdown();
  restarted.shutdown();
}
