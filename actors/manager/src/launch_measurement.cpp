#include "cove/manager/launch_measurement.hpp"

#include <fstream>
#include <sstream>

#include "cove/attest/measure.hpp"
#include "cove/crypto/encoding.hpp"
#include "cove/manager/libvirt_backend.hpp"

namespace cove::manager {

namespace fs = std::filesystem;

expected<snp_launch_plan> snp_plan_of(const libvirt_config& cfg) {
  if (cfg.snp_ovmf.empty())
    return make_error(errc::invalid_request,
                      "no OVMF for SEV-SNP configured (coved --snp-ovmf: an OVMF built from "
                      "OvmfPkg/AmdSev/AmdSevX64.dsc, with the kernel-hashes table)");
  if (auto img = check_image_dir(cfg.image_dir); !img) return img.error();
  std::ifstream f(cfg.image_dir / "cmdline", std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  std::string cmdline = ss.str();
  while (!cmdline.empty() && (cmdline.back() == '\n' || cmdline.back() == '\r' || cmdline.back() == ' '))
    cmdline.pop_back();
  return snp_launch_plan{.ovmf = cfg.snp_ovmf,
                         .kernel = cfg.image_dir / "vmlinuz",
                         .initrd = cfg.image_dir / "initrd.img",
                         .cmdline = std::move(cmdline),
                         .vcpus = cfg.vcpus,
                         .vcpu_type = cfg.snp_vcpu_type,
                         .guest_features = cfg.snp_guest_features};
}

expected<std::string> expected_snp_measurement(const snp_launch_plan& plan) {
  if (plan.vcpus == 0) return make_error(errc::invalid_request, "SEV-SNP launch plan: vcpus must be >= 1");
  attest::measure_options o;
  o.mode = attest::sev_mode::snp;
  o.vcpus = plan.vcpus;
  o.vcpu_type = plan.vcpu_type;
  o.ovmf = plan.ovmf;
  o.kernel = plan.kernel;
  o.initrd = plan.initrd;
  o.append = plan.cmdline;
  o.guest_features = plan.guest_features;
  auto digest = attest::compute_launch_digest(o);
  if (!digest) return digest.error();
  return crypto::to_hex(*digest);
}

}  // namespace cove::manager
