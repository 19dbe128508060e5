// The libvirt backend's pieces that need no libvirtd: the guest's view of host
// addresses, the image check, the share's ACLs, and the errors of a backend
// that has no image. The VM itself: tests/integration/libvirt_test.cpp.
#include <doctest/doctest.h>
#include <sys/stat.h>

#include <fstream>

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
