// The expected launch measurement the manager publishes (CvmInfo.launch_measurement):
// the SEV-SNP plan of the libvirt backend's image and its digest, checked against a
// sev-snp-measure vector (shared/fixtures/snp-measure) and against the computation
// `cove measure --mode snp` makes for the same inputs. No SEV hardware involved.
#include <doctest/doctest.h>

#include <fstream>

#include "cove/attest/measure.hpp"
#include "cove/crypto/encoding.hpp"
#include "cove/manager/launch_measurement.hpp"
#include "cove/manager/libvirt_backend.hpp"
#include "cove/test/process.hpp"

using namespace cove;
using namespace cove::manager;
namespace fs = std::filesystem;

namespace {

const fs::path fixtures = fs::path(COVE_FIXTURES_DIR) / "snp-measure";

void write(const fs::path& p, const std::string& s) {
  std::ofstream(p, std::ios::binary | std::ios::trunc) << s;
}

/// An image directory as eos/build.sh leaves it (small stand-in files).
libvirt_config image_config(const test::temp_dir& tmp) {
  fs::copy_file(fixtures / "inputs" / "kernel_pattern_3000.bin", tmp.path() / "vmlinuz");
  write(tmp.path() / "initrd.img", std::string(4096, 'i'));
  write(tmp.path() / "cmdline", "console=ttyS0 panic=-1 loglevel=4\n");
  write(tmp.path() / "agent.sha384", std::string(96, 'a') + "\n");
  libvirt_config cfg;
  cfg.image_dir = tmp.path();
  cfg.vcpus = 2;
  cfg.snp_ovmf = fixtures / "ovmf_AmdSev_suffix.bin";
  return cfg;
}

}  // namespace

TEST_CASE("the expected SEV-SNP measurement matches sev-snp-measure's vector") {
  // vectors.json "snp_kernel_cmdline_gf21": AmdSev OVMF, empty kernel and initrd,
  // --append 'console=ttyS0 loglevel=7', 1 EPYC-v4 vCPU, guest features 0x21.
  snp_launch_plan p{.ovmf = fixtures / "ovmf_AmdSev_suffix.bin",
                    .kernel = "/dev/null",
                    .initrd = "/dev/null",
                    .cmdline = "console=ttyS0 loglevel=7",
                    .vcpus = 1,
                    .vcpu_type = "EPYC-v4",
                    .guest_features = 0x21};
  auto d = expected_snp_measurement(p);
  REQUIRE_MESSAGE(d, (d ? "" : d.error().to_string()));
  CHECK(*d ==
        "803f691094946e42068aaa3a8f9e26a5c89f36f7b73ecfb28c653360fe4b3aba7e534442e7e1e17895dfe778d0228977");
  // Every input is measured: another command line, vCPU count or model changes it.
  auto other = p;
  other.cmdline += " quiet";
  CHECK(*expected_snp_measurement(other) != *d);
  other = p;
  other.vcpus = 2;
  CHECK(*expected_snp_measurement(other) != *d);
  other = p;
  other.vcpu_type = "EPYC-Milan";
  CHECK(*expected_snp_measurement(other) != *d);
}

TEST_CASE("the libvirt backend's SEV-SNP plan is its image, vCPUs and OVMF, measured like cove measure") {
  test::temp_dir tmp("cove-snp-plan");
  auto cfg = image_config(tmp);
  auto plan = snp_plan_of(cfg);
  REQUIRE_MESSAGE(plan, (plan ? "" : plan.error().to_string()));
  CHECK(plan->kernel == tmp.path() / "vmlinuz");  // the bzImage OVMF hashes, never vmlinux
  CHECK(plan->initrd == tmp.path() / "initrd.img");
  CHECK(plan->cmdline == "console=ttyS0 panic=-1 loglevel=4");  // the file's newline is not measured
  CHECK(plan->vcpus == 2);
  CHECK(plan->vcpu_type == "EPYC-v4");
  CHECK(plan->ovmf == cfg.snp_ovmf);

  // What `cove measure --mode snp --vcpus 2 --vcpu-type EPYC-v4 --ovmf … --kernel …
  // --initrd … --append "$(cat cmdline)"` computes (cli/src/measure_cmd.cpp).
  attest::measure_options o;
  o.mode = attest::sev_mode::snp;
  o.vcpus = 2;
  o.vcpu_type = "EPYC-v4";
  o.ovmf = cfg.snp_ovmf;
  o.kernel = tmp.path() / "vmlinuz";
  o.initrd = tmp.path() / "initrd.img";
  o.append = "console=ttyS0 panic=-1 loglevel=4";
  auto want = attest::compute_launch_digest(o);
  REQUIRE(want);
  auto got = expected_snp_measurement(*plan);
  REQUIRE(got);
  CHECK(*got == crypto::to_hex(*want));

  // The backend publishes the same; without SNP, the simulated measurement of its agent.
  libvirt_backend b(cfg, nullptr);
  auto snp = b.launch_measurement(true);
  REQUIRE(snp);
  CHECK(*snp == *got);
  auto sim = b.launch_measurement(false);
  REQUIRE(sim);
  CHECK(*sim == std::string(96, 'a'));
  write(tmp.path() / "agent.sha384", "not hex\n");
  CHECK(b.launch_measurement(false)->empty());
}

TEST_CASE("an SEV-SNP plan that cannot be measured says why") {
  test::temp_dir tmp("cove-snp-plan-bad");
  auto cfg = image_config(tmp);
  cfg.snp_ovmf.clear();
  auto none = snp_plan_of(cfg);
  REQUIRE_FALSE(none);
  CHECK(none.error().code == errc::invalid_request);
  CHECK(none.error().message.find("--snp-ovmf") != std::string::npos);

  // Debian's plain OVMF has no kernel-hashes table: direct boot cannot be measured.
  cfg.snp_ovmf = fixtures / "ovmf_OvmfX64_suffix.bin";
  auto plain = expected_snp_measurement(*snp_plan_of(cfg));
  REQUIRE_FALSE(plain);
  CHECK(plain.error().code == errc::invalid_request);
  CHECK(plain.error().message.find("SNP_KERNEL_HASHES") != std::string::npos);

  cfg.snp_ovmf = fixtures / "ovmf_AmdSev_suffix.bin";
  fs::remove(tmp.path() / "initrd.img");
  auto no_image = snp_plan_of(cfg);
  REQUIRE_FALSE(no_image);
  CHECK(no_image.error().message.find("initrd.img missing") != std::string::npos);

  snp_launch_plan zero{.ovmf = cfg.snp_ovmf, .kernel = "/dev/null", .initrd = "/dev/null", .vcpus = 0};
  auto z = expected_snp_measurement(zero);
  REQUIRE_FALSE(z);
  CHECK(z.error().message.find("vcpus") != std::string::npos);
}
