#pragma once
// The launch measurement the manager expects a CVM to report, computed before the
// launch from what the backend will boot: for SEV-SNP the launch digest of OVMF, the
// kernel, initrd and command line (through OVMF's kernel-hashes table) and the vCPUs,
// which is what `cove measure --mode snp` computes (attest::compute_launch_digest).
// Needs no SEV hardware: the digest depends on the files and the launch settings only.
#include <cstdint>
#include <filesystem>
#include <string>

#include "cove/expected.hpp"

namespace cove::manager {

struct libvirt_config;

/// The measured inputs of an SEV-SNP direct-kernel launch.
struct snp_launch_plan {
  std::filesystem::path ovmf;    // an OVMF with the SNP kernel-hashes table (OvmfPkg/AmdSev)
  std::filesystem::path kernel;  // the bzImage OVMF hashes (vmlinuz, not the PVH vmlinux)
  std::filesystem::path initrd;
  std::string cmdline;
  uint32_t vcpus = 1;
  std::string vcpu_type = "EPYC-v4";  // QEMU CPU model: its CPUID signature goes into each VMSA
  uint64_t guest_features = 0x1;      // VMSA SEV_FEATURES (cove measure --guest-features)
};

/// The plan the libvirt backend would launch a tee=sev-snp CVM with: the EOS image's
/// vmlinuz, initrd.img and cmdline (trimmed) from `cfg.image_dir`, `cfg.vcpus`, and
/// `cfg.snp_ovmf` / `snp_vcpu_type` / `snp_guest_features`. invalid_request when no
/// OVMF is configured or the image is incomplete.
expected<snp_launch_plan> snp_plan_of(const libvirt_config& cfg);

/// The SEV-SNP launch digest of `plan`, 96 lowercase hex digits: the same as
/// `cove measure --mode snp --vcpus N --vcpu-type T --ovmf … --kernel … --initrd …
/// --append …`. Errors are attest's: e.g. invalid_request for an OVMF without the
/// kernel-hashes table (Debian's plain build), not_found for a missing file.
expected<std::string> expected_snp_measurement(const snp_launch_plan& plan);

}  // namespace cove::manager
