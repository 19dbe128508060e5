#pragma once
// AMD SEV / SEV-ES / SEV-SNP launch measurements, computed offline from the
// firmware (OVMF), the optional direct-boot kernel/initrd/cmdline and the vCPU
// setup — the same digests as virtee/sev-snp-measure (see attest/README.md).
#include <array>
#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "cove/expected.hpp"

namespace cove::attest {

enum class sev_mode {
  sev,            // SHA-256 of OVMF (+ hashes table)
  seves,          // SHA-256 of OVMF (+ hashes table) + VMSA pages
  snp,            // SHA-384 PAGE_INFO chain
  snp_ovmf_hash,  // SNP chain over the OVMF pages only (usable as snp_ovmf_hash)
  snp_svsm,       // SNP with a Coconut-SVSM image below OVMF
};

enum class vmm_type { qemu, ec2, gce };

/// "sev", "seves"/"sev-es", "snp"/"sev-snp", "snp:ovmf-hash", "snp:svsm" (case as upstream).
expected<sev_mode> parse_sev_mode(std::string_view s);
/// "QEMU", "ec2", "gce".
expected<vmm_type> parse_vmm_type(std::string_view s);

/// CPUID Fn0000_0001_EAX signature from family/model/stepping (AMD pub. #25481).
uint32_t cpu_signature(uint32_t family, uint32_t model, uint32_t stepping) noexcept;
/// Signature of a QEMU CPU model name ("EPYC-v4", "EPYC-Milan", ...); invalid_request if unknown.
expected<uint32_t> vcpu_signature(std::string_view qemu_cpu_model);
/// The QEMU CPU model names vcpu_signature knows.
std::vector<std::string> vcpu_type_names();

struct measure_options {
  sev_mode mode = sev_mode::snp;
  uint32_t vcpus = 0;                           // required (>= 1) except for sev and snp_ovmf_hash
  std::string vcpu_type;                        // QEMU CPU model name; ignored if vcpu_sig is set
  std::optional<uint32_t> vcpu_sig;             // explicit CPUID signature (VMSA RDX)
  std::filesystem::path ovmf;                   // firmware image, mapped to end at 4 GiB
  std::optional<std::filesystem::path> kernel;  // direct boot: measured through the hashes table
  std::optional<std::filesystem::path> initrd;  // absent = hashed as empty
  std::optional<std::string> append;            // absent or "" = hashed as a single NUL
  uint64_t guest_features = 0x1;                // VMSA SEV_FEATURES (snp only)
  vmm_type vmm = vmm_type::qemu;
  std::string snp_ovmf_hash;   // optional 48-byte hex: seed instead of hashing OVMF (snp only)
  std::filesystem::path svsm;  // snp_svsm: SVSM image
  uint64_t vars_size = 0;      // snp_svsm: OVMF_VARS size (the SVSM ends that far below OVMF)
};

/// 48 bytes (SNP modes) or 32 bytes (sev, seves). Errors are invalid_request
/// (bad options, unknown vCPU type, missing OVMF SEV metadata or hashes table,
/// malformed firmware) or not_found (unreadable files).
expected<std::vector<uint8_t>> compute_launch_digest(const measure_options& opts);

// ---- OVMF footer table and SEV metadata (exposed for tests and fuzzing) ----

using guid_le = std::array<uint8_t, 16>;  // a GUID in its little-endian (EFI) byte order

struct ovmf_section {
  uint32_t gpa = 0;
  uint32_t size = 0;
  uint32_t type = 0;  // 1 SEC_MEM, 2 SECRETS, 3 CPUID, 4 SVSM_CAA, 0x10 KERNEL_HASHES
};

inline constexpr uint32_t ovmf_section_snp_sec_mem = 1;
inline constexpr uint32_t ovmf_section_snp_secrets = 2;
inline constexpr uint32_t ovmf_section_cpuid = 3;
inline constexpr uint32_t ovmf_section_svsm_caa = 4;
inline constexpr uint32_t ovmf_section_snp_kernel_hashes = 0x10;

/// The GUIDed table that ends 32 bytes before the end of the image, and the SEV
/// metadata ("ASEV", version 1) it points to. An image without the footer GUID
/// has an empty table and no sections (not an error); a malformed table or
/// metadata block is invalid_request.
struct ovmf_layout {
  std::map<guid_le, std::vector<uint8_t>> table;
  std::vector<ovmf_section> sections;

  [[nodiscard]] bool has_section(uint32_t type) const;
  /// First 4 bytes (LE) of a table entry; nullopt if absent or shorter.
  [[nodiscard]] std::optional<uint32_t> entry_u32(const guid_le& g) const;
};

expected<ovmf_layout> parse_ovmf_layout(std::span<const uint8_t> image);

/// Parses "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx" into EFI byte order.
std::optional<guid_le> parse_guid(std::string_view s);

}  // namespace cove::attest
