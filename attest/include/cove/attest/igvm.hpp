#pragma once
// IGVM (Independent Guest Virtual Machine) files: a strict parser, the SEV-SNP
// launch digest of the directives applicable to SNP, and a builder that wraps an
// OVMF image (with its SEV metadata pages and N vCPUs' VMSAs) into an IGVM file.
// Format: Microsoft's IGVM specification (igvm_defs), version 1 (and 2 for x64 / 4 KiB
// pages). See attest/README.md "IGVM".
#include <array>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "cove/attest/measure.hpp"
#include "cove/expected.hpp"

namespace cove::attest {

// Variable header types (IGVM_VHT_*). The top bit marks a header a loader may ignore.
inline constexpr uint32_t igvm_vht_supported_platform = 0x001;
inline constexpr uint32_t igvm_vht_guest_policy = 0x101;
inline constexpr uint32_t igvm_vht_relocatable_region = 0x102;
inline constexpr uint32_t igvm_vht_page_table_relocation = 0x103;
inline constexpr uint32_t igvm_vht_corim_document = 0x104;
inline constexpr uint32_t igvm_vht_corim_signature = 0x105;
inline constexpr uint32_t igvm_vht_cca_policy = 0x106;
inline constexpr uint32_t igvm_vht_parameter_area = 0x301;
inline constexpr uint32_t igvm_vht_page_data = 0x302;
inline constexpr uint32_t igvm_vht_parameter_insert = 0x303;
inline constexpr uint32_t igvm_vht_vp_context = 0x304;
inline constexpr uint32_t igvm_vht_required_memory = 0x305;
inline constexpr uint32_t igvm_vht_vp_count_parameter = 0x307;
inline constexpr uint32_t igvm_vht_snp_id_block = 0x30B;
inline constexpr uint32_t igvm_vht_error_range = 0x30D;
inline constexpr uint32_t igvm_vht_vbs_measurement = 0x311;
inline constexpr uint32_t igvm_vht_optional_bit = 0x80000000u;

// IgvmPlatformType.
inline constexpr uint8_t igvm_platform_native = 0;
inline constexpr uint8_t igvm_platform_vsm = 1;
inline constexpr uint8_t igvm_platform_sev_snp = 2;
inline constexpr uint8_t igvm_platform_tdx = 3;

// IgvmPageDataType and IgvmPageDataFlags.
inline constexpr uint16_t igvm_page_normal = 0;
inline constexpr uint16_t igvm_page_secrets = 1;
inline constexpr uint16_t igvm_page_cpuid_data = 2;
inline constexpr uint16_t igvm_page_cpuid_xf = 3;
inline constexpr uint32_t igvm_page_flag_2mb = 1u << 0;
inline constexpr uint32_t igvm_page_flag_unmeasured = 1u << 1;
inline constexpr uint32_t igvm_page_flag_shared = 1u << 2;

struct igvm_platform {
  uint32_t compatibility_mask = 0;
  uint8_t highest_vtl = 0;
  uint8_t platform_type = 0;
  uint16_t platform_version = 0;
  uint64_t shared_gpa_boundary = 0;
};

/// One variable header (initialization or directive) after the platform headers, with
/// the fields the measurement needs. `offset` is its file offset (for error messages).
struct igvm_header {
  uint32_t type = 0;  // without the optional bit
  uint32_t offset = 0;
  uint32_t compatibility_mask = 0;  // 0 for headers without one (PARAMETER_AREA, parameter usages)
  uint64_t gpa = 0;                 // PAGE_DATA, PARAMETER_INSERT, VP_CONTEXT, REQUIRED_MEMORY, ERROR_RANGE
  uint64_t size = 0;                // PARAMETER_AREA bytes, REQUIRED_MEMORY / ERROR_RANGE bytes
  uint32_t file_offset = 0;         // 0 = no file data
  uint32_t flags = 0;               // PAGE_DATA flags
  uint16_t data_type = 0;           // PAGE_DATA
  uint16_t vp_index = 0;            // VP_CONTEXT
  uint32_t area_index = 0;          // PARAMETER_AREA / PARAMETER_INSERT / parameter usages
  uint64_t policy = 0;              // GUEST_POLICY
  std::array<uint8_t, 48> ld{};     // SNP_ID_BLOCK expected launch digest
};

struct igvm_file {
  uint32_t format_version = 0;
  std::vector<igvm_platform> platforms;
  std::vector<igvm_header> headers;  // initialization then directives, in file order
  std::span<const uint8_t> image;    // the whole file (the parsed bytes; not owned)

  /// The mask of the SEV-SNP platform, if the file declares one.
  [[nodiscard]] std::optional<uint32_t> snp_mask() const;
  /// File data of a header: `len` bytes at `file_offset` (checked by the parser).
  [[nodiscard]] std::span<const uint8_t> data(const igvm_header& h, size_t len) const;
};

/// Parses and validates an IGVM file: fixed header (magic "IGVM", version 1, or 2 with
/// x64 / 4 KiB pages, offsets, total size, CRC32 checksum), every variable header (known
/// type, exact length, zero padding and reserved fields, alignment, section order
/// platform → initialization → directive, compatibility masks of declared platforms,
/// parameter area indexes, file data inside the file). Unknown types without the
/// optional bit are rejected; optional unknown ones are skipped. Errors are
/// invalid_request naming the file offset ("IGVM: offset 0x60: ...").
expected<igvm_file> parse_igvm(std::span<const uint8_t> file);

struct igvm_measure_options {
  /// PAGE_DATA without file data is measured as an SNP ZERO page (type 3) instead of
  /// a NORMAL page of zeros. QEMU/KVM and the IGVM spec use normal pages; some loaders
  /// (igvmmeasure --native-zero) use native zero pages.
  bool native_zero = false;
  /// QEMU/KVM restrictions, checked as errors: VMSAs at GPA 0xFFFFFFFFF000 (QEMU refuses
  /// others), VP_CONTEXTs after every measured page (KVM measures VMSAs at launch finish)
  /// with vp_index 0, 1, 2, ...; no shared PAGE_DATA (QEMU ignores the flag).
  bool check_kvm = true;
};

struct igvm_measurement {
  std::vector<uint8_t> digest;                         // 48 bytes
  std::optional<uint64_t> policy;                      // SNP GUEST_POLICY, if any
  std::optional<std::array<uint8_t, 48>> id_block_ld;  // SNP_ID_BLOCK's launch digest, if any
  uint32_t vcpus = 0;                                  // SNP VP_CONTEXTs (VMSAs)
  uint64_t pages = 0;                                  // PAGE_INFO updates
};

/// SEV-SNP launch digest of the directives applicable to the file's SNP platform, in
/// order: PAGE_DATA (normal with data, zero, unmeasured, secrets, CPUID), PARAMETER_INSERT
/// (unmeasured pages of the area), VP_CONTEXT (VMSA page). Relocatable regions are
/// refused (their placement is the loader's choice). invalid_request on any problem.
expected<igvm_measurement> measure_igvm(std::span<const uint8_t> file, const igvm_measure_options& o = {});
/// Same, reading the file (≤ 256 MiB; not_found if unreadable).
expected<igvm_measurement> measure_igvm_file(const std::filesystem::path& path,
                                             const igvm_measure_options& o = {});

struct igvm_build_options {
  uint32_t vcpus = 1;
  std::string vcpu_type;             // QEMU CPU model name; ignored if vcpu_sig is set
  std::optional<uint32_t> vcpu_sig;  // CPUID signature (VMSA RDX)
  uint64_t guest_features = 0x1;     // VMSA SEV_FEATURES
  uint64_t policy = 0x30000;         // SNP guest policy (IGVM_VHT_GUEST_POLICY)
  /// Optional Coconut-SVSM image placed `vars_size` bytes below the OVMF (as
  /// `--mode snp:svsm`): then the SVSM's metadata sections replace the OVMF's and every
  /// vCPU starts in the SVSM (its VMSA, SEV_FEATURES 1).
  std::span<const uint8_t> svsm{};
  uint64_t vars_size = 0;
};

/// Wraps an OVMF image with SEV metadata into an SNP IGVM file: the image's pages
/// (ending at 4 GiB), then the metadata sections in table order (SEC_MEM, kernel-hashes
/// and SVSM CAA as zero pages, the secrets and CPUID pages), then one VP_CONTEXT per vCPU
/// (the VMSAs `cove measure --mode snp --ovmf` measures, at GPA 0xFFFFFFFFF000).
/// Measured with native_zero, its digest equals compute_launch_digest for the same OVMF,
/// vCPUs and features without kernel hashes (mode snp, or snp:svsm with an SVSM).
expected<std::vector<uint8_t>> build_igvm_from_ovmf(std::span<const uint8_t> ovmf,
                                                    const igvm_build_options& o);

/// CRC-32 (IEEE 802.3, as zlib) — the IGVM header checksum.
uint32_t igvm_crc32(std::span<const uint8_t> d, uint32_t crc = 0);

}  // namespace cove::attest
