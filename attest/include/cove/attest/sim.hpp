#pragma once
// The simulated TEE: a locally generated AMD-style chain (ARK-Sim -> SEV-Sim -> VCEK) and
// SEV-SNP-format reports signed the way the PSP signs them. Sim evidence goes through the
// same verify_snp_evidence/check_policy path as real evidence and is accepted only when the
// sim ARK is named in the trusted roots.
#include <array>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "cove/attest/snp_report.hpp"
#include "cove/expected.hpp"

namespace cove::attest {

struct sim_root {
  std::string ark_pem;      // RSA-2048, self-signed, CN "ARK-Sim", RSASSA-PSS SHA-384
  std::string ask_pem;      // RSA-2048, signed by the ARK, CN "SEV-Sim"
  std::string ark_key_pem;  // PKCS#8
  std::string ask_key_pem;  // PKCS#8

  /// ASK then ARK, like AMD's ask_ark_<product>.pem.
  [[nodiscard]] std::string bundle_pem() const { return ask_pem + ark_pem; }
};

expected<sim_root> generate_sim_root();
/// Writes ark.pem, ask.pem (0644) and ark.key, ask.key (0600) into dir (created if needed).
expected<void> save_sim_root(const sim_root& root, const std::filesystem::path& dir);
expected<sim_root> load_sim_root(const std::filesystem::path& dir);

struct sim_chip {
  std::string vcek_pem;
  std::vector<uint8_t> vcek_der;
  std::string vcek_key_pem;  // EC P-384, PKCS#8
  std::array<uint8_t, 64> chip_id{};
  tcb_version tcb;  // reported = committed = current = launch TCB of this chip's reports
};

/// Issues a VCEK for a fresh random chip id, signed by the root's ASK, with the AMD
/// extensions (product name "Sim", bl/tee/snp/microcode SPLs, hwID = chip id).
expected<sim_chip> issue_sim_vcek(const sim_root& root, const tcb_version& tcb = {3, 0, 8, 115, 0});

/// A CRL like AMD KDS's /vcek/v1/<product>/crl, for tests of the revocation check:
/// issued and signed (RSASSA-PSS SHA-384) by the root's ARK (`by_ask` false; it then
/// revokes ASKs) or ASK (revokes VCEKs), listing the serial numbers of `revoked` (PEM
/// certificates), thisUpdate = `this_update`, nextUpdate = `next_update`. Returns PEM.
expected<std::string> make_sim_crl(const sim_root& root, bool by_ask, const std::vector<std::string>& revoked,
                                   std::chrono::system_clock::time_point this_update,
                                   std::chrono::system_clock::time_point next_update);

struct sim_report_options {
  uint64_t policy = 0x30000;  // SMT allowed, reserved bit 17
  uint32_t vmpl = 0;
  uint32_t guest_svn = 0;
  std::array<uint8_t, 32> host_data{};
  std::array<uint8_t, 16> family_id{};
  std::array<uint8_t, 16> image_id{};
  uint8_t cpuid_fam_id = 0x19;  // Genoa-like CPUID: the TCB uses the Milan/Genoa layout
  uint8_t cpuid_mod_id = 0x11;
  uint8_t cpuid_step = 0x01;
};

/// Builds a version-3 1184-byte report and signs [0, 0x2A0) with the VCEK key (ECDSA P-384
/// SHA-384, R and S stored little-endian in 72-byte fields).
expected<std::vector<uint8_t>> make_sim_report(const sim_chip& chip,
                                               const std::array<uint8_t, 64>& report_data,
                                               const std::array<uint8_t, 48>& measurement,
                                               const sim_report_options& opts = {});

}  // namespace cove::attest
