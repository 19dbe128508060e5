#pragma once
// AMD SEV-SNP ATTESTATION_REPORT (SEV-SNP ABI spec, table "ATTESTATION_REPORT
// Structure"): a typed view over the 1184 raw bytes, plus the TCB_VERSION decoder.
#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "cove/expected.hpp"

namespace cove::attest {

inline constexpr std::size_t snp_report_size = 0x4A0;  // 1184
inline constexpr std::size_t snp_signed_size = 0x2A0;  // signature covers [0, 0x2A0)
inline constexpr uint32_t snp_min_version = 2;
inline constexpr uint32_t snp_max_version = 5;
inline constexpr uint32_t snp_sig_algo_ecdsa_p384_sha384 = 1;

// Guest POLICY bits.
inline constexpr uint64_t snp_policy_smt = 1ull << 16;
inline constexpr uint64_t snp_policy_reserved_one = 1ull << 17;
inline constexpr uint64_t snp_policy_migrate_ma = 1ull << 18;
inline constexpr uint64_t snp_policy_debug = 1ull << 19;
inline constexpr uint64_t snp_policy_single_socket = 1ull << 20;

enum class snp_product : uint8_t { unknown, milan, genoa, turin };

/// "Milan", "Genoa", "Turin", "unknown".
std::string_view to_string(snp_product p) noexcept;

/// Maps a VCEK product-name extension ("Milan-B0", "Genoa", "Turin", ...) to a product;
/// anything else (e.g. the simulator's "Sim") is unknown.
snp_product product_from_name(std::string_view name) noexcept;

/// Maps CPUID family/model (report v3+) to a product: family 0x19 model 0x0X = Milan,
/// 0x1X/0xAX = Genoa; family 0x1A = Turin.
snp_product product_from_cpuid(uint8_t family, uint8_t model) noexcept;

/// A decoded TCB_VERSION. `fmc` only exists on Turin (0 elsewhere).
struct tcb_version {
  uint8_t bl = 0;
  uint8_t tee = 0;
  uint8_t snp = 0;
  uint8_t microcode = 0;
  uint8_t fmc = 0;
  friend bool operator==(const tcb_version&, const tcb_version&) = default;
};

/// Milan/Genoa (and unknown): bl, tee, reserved[4], snp, microcode.
/// Turin: fmc, bl, tee, snp, reserved[3], microcode.
tcb_version decode_tcb(uint64_t raw, snp_product p) noexcept;
uint64_t encode_tcb(const tcb_version& t, snp_product p) noexcept;
/// "bl=2 tee=0 snp=5 microcode=68" (plus " fmc=N" on Turin).
std::string to_string(const tcb_version& t, snp_product p);

struct snp_report {
  uint32_t version = 0;
  uint32_t guest_svn = 0;
  uint64_t policy = 0;
  std::array<uint8_t, 16> family_id{};
  std::array<uint8_t, 16> image_id{};
  uint32_t vmpl = 0;
  uint32_t signature_algo = 0;
  uint64_t current_tcb = 0;
  uint64_t platform_info = 0;
  uint32_t signer_info = 0;  // bit0 AUTHOR_KEY_EN, bit1 MASK_CHIP_KEY, bits 2-4 SIGNING_KEY
  std::array<uint8_t, 64> report_data{};
  std::array<uint8_t, 48> measurement{};
  std::array<uint8_t, 32> host_data{};
  std::array<uint8_t, 48> id_key_digest{};
  std::array<uint8_t, 48> author_key_digest{};
  std::array<uint8_t, 32> report_id{};
  std::array<uint8_t, 32> report_id_ma{};
  uint64_t reported_tcb = 0;
  uint8_t cpuid_fam_id = 0;  // v3+
  uint8_t cpuid_mod_id = 0;  // v3+
  uint8_t cpuid_step = 0;    // v3+
  std::array<uint8_t, 64> chip_id{};
  uint64_t committed_tcb = 0;
  uint8_t current_build = 0, current_minor = 0, current_major = 0;
  uint8_t committed_build = 0, committed_minor = 0, committed_major = 0;
  uint64_t launch_tcb = 0;
  uint64_t launch_mit_vector = 0;         // v5
  uint64_t current_mit_vector = 0;        // v5
  std::array<uint8_t, 72> signature_r{};  // little-endian
  std::array<uint8_t, 72> signature_s{};  // little-endian

  /// From CPUID (v3+) at parse time; verify_snp_evidence refines it from the VCEK's
  /// product-name extension. Decides the TCB_VERSION layout.
  snp_product product = snp_product::unknown;

  /// The exact bytes parsed; the signature covers raw[0, snp_signed_size).
  std::array<uint8_t, snp_report_size> raw{};

  [[nodiscard]] bool author_key_en() const noexcept { return (signer_info & 1u) != 0; }
  [[nodiscard]] bool mask_chip_key() const noexcept { return (signer_info & 2u) != 0; }
  /// 0 = VCEK, 1 = VLEK, 7 = none.
  [[nodiscard]] uint32_t signing_key() const noexcept { return (signer_info >> 2) & 7u; }
  [[nodiscard]] bool debug_allowed() const noexcept { return (policy & snp_policy_debug) != 0; }
  [[nodiscard]] bool smt_allowed() const noexcept { return (policy & snp_policy_smt) != 0; }
  [[nodiscard]] bool migration_agent_allowed() const noexcept {
    return (policy & snp_policy_migrate_ma) != 0;
  }
  [[nodiscard]] tcb_version reported() const noexcept { return decode_tcb(reported_tcb, product); }
  [[nodiscard]] tcb_version current() const noexcept { return decode_tcb(current_tcb, product); }
  [[nodiscard]] tcb_version committed() const noexcept { return decode_tcb(committed_tcb, product); }
  [[nodiscard]] tcb_version launch() const noexcept { return decode_tcb(launch_tcb, product); }
};

/// Parses exactly snp_report_size bytes. Rejects (errc::invalid_request) other sizes,
/// versions outside 2..5, SIGNATURE_ALGO != 1, and non-zero must-be-zero fields
/// (reserved ranges, unused flag bits, the high 24 bytes of R and S).
expected<snp_report> parse_snp_report(std::span<const uint8_t> bytes);

/// Lowercase hex.
std::string to_hex(std::span<const uint8_t> bytes);
/// Hex (either case, no separators) to bytes; nullopt on odd length or a bad digit.
std::optional<std::vector<uint8_t>> from_hex(std::string_view hex);

}  // namespace cove::attest
