#pragma once
// SEV-SNP appraisal policy: what a verified report must contain to be accepted.
#include <cstdint>
#include <filesystem>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "cove/attest/dice.hpp"
#include "cove/attest/ima.hpp"
#include "cove/attest/snp_report.hpp"
#include "cove/attest/tpm_quote.hpp"
#include "cove/attest/verify.hpp"
#include "cove/expected.hpp"

namespace cove::attest {

/// Minimum SPLs; compared component-wise. `fmc` is only checked on Turin.
using snp_tcb_minimum = tcb_version;

/// AK key types a vTPM policy can allow ("ecc-p256", "rsa-2048", "rsa-3072", "rsa-4096").
inline constexpr std::string_view vtpm_ak_type_names[] = {"ecc-p256", "rsa-2048", "rsa-3072", "rsa-4096"};

/// The `vtpm` section: what the vTPM part of an agent's evidence must show.
struct vtpm_policy {
  bool required = false;                 // evidence without a vTPM section is refused
  tpm_pcr_values pcrs;                   // sha256-bank PCRs that must be quoted with these values
  std::vector<std::string> ak_types;     // allowed AK types (vtpm_ak_type_names); empty = any
  std::vector<uint32_t> event_log_pcrs;  // PCRs the carried event log must replay; empty = none
  bool require_event_log = false;        // a vTPM section without an event log is refused
  /// `ima`: the evidence must carry an IMA measurement list that replays the quoted `pcr`
  /// (sha256 bank) and whose every file `allow` admits (attest/README.md "IMA").
  struct ima_section {
    uint32_t pcr = ima_default_pcr;
    ima_allowlist allow;
    bool operator==(const ima_section&) const = default;
  };
  std::optional<ima_section> ima;
  [[nodiscard]] bool is_default() const noexcept {
    return !required && pcrs.empty() && ak_types.empty() && event_log_pcrs.empty() && !require_event_log &&
           !ima;
  }
};

/// The `dice` section: the DICE chain of an agent's evidence (attest/README.md "DICE in the
/// agent's evidence"). Present = chains in evidence are verified against `chain`.
struct dice_evidence_policy {
  bool required = false;  // evidence without a DICE chain is refused
  dice_policy chain;      // trusted roots (at least one), layers' FWIDs/SVNs/flags, algorithms
};

struct snp_policy {
  std::vector<std::vector<uint8_t>> measurements;  // 48 bytes each; empty = any
  std::optional<std::vector<uint8_t>> host_data;   // 32 bytes
  bool allow_debug = false;                        // POLICY bit 19
  bool allow_smt = true;                           // POLICY bit 16
  bool allow_migration_agent = false;              // POLICY bit 18
  snp_tcb_minimum minimum_tcb;                     // REPORTED, COMMITTED and CURRENT TCB
  std::vector<std::vector<uint8_t>> chip_ids;      // 64 bytes (8 on Turin, zero-padded); empty = any
  std::optional<snp_product> product;              // nullopt = any
  uint32_t minimum_report_version = 2;
  uint32_t minimum_guest_svn = 0;
  std::optional<uint32_t> vmpl;              // exact VMPL
  std::vector<std::string> trusted_roots;    // ARK PEMs (file contents already read)
  std::vector<std::string> crls;             // CRLs (PEM) of the AMD chain; empty = no revocation check
  vtpm_policy vtpm;                          // the vTPM section (applies when evidence carries one)
  std::optional<dice_evidence_policy> dice;  // nullopt: a DICE chain in evidence is not checked
};

/// Parses policy JSON (keys: measurements, host_data, allow_debug, allow_smt,
/// allow_migration_agent, minimum_tcb{bl,tee,snp,microcode,fmc}, chip_ids, product,
/// minimum_report_version, minimum_guest_svn, vmpl, trusted_roots, crls, vtpm{required, pcrs,
/// ak_types, event_log_pcrs, require_event_log, ima{pcr, allow{"<path>": ["<64 hex>"]}, digests,
/// allow_violations}}, dice{required, trusted_roots, layers,
/// allowed_signature_algorithms}). Unknown keys, wrong
/// types and bad hex lengths are errc::invalid_request. A trusted_roots entry is inline PEM
/// (starts with "-----BEGIN") or a file path, relative paths resolved against base_dir.
expected<snp_policy> load_policy_json(std::string_view json, const std::filesystem::path& base_dir = {});
/// A policy received over the bus: as load_policy_json, but trusted_roots must be inline
/// PEM (a service never reads a file a requester names) and the text must be non-empty.
expected<snp_policy> load_inline_policy_json(std::string_view json);
/// Reads a policy file; relative trusted_roots paths are resolved against its directory.
expected<snp_policy> load_policy_file(const std::filesystem::path& path);

/// The policy as JSON in the load_policy_json format, every key present except unset
/// `host_data` and `vmpl`, a default `vtpm` section and an absent `dice` section (product
/// "any" when unset);
/// trusted_roots as inline PEMs.
/// load_policy_json(policy_to_json(p)) gives back p. `indent` < 0: one line.
std::string policy_to_json(const snp_policy& policy, int indent = 2);

/// verify_options with the policy's trusted roots.
verify_options make_verify_options(const snp_policy& policy);

/// Checks a parsed (and, for anything but fuzzing, verified) report against the policy.
/// `expected_report_data` (<= 64 bytes, zero-padded) must equal REPORT_DATA; pass an empty
/// span only when REPORT_DATA is checked elsewhere. Errors are errc::attestation_failed
/// naming the field, e.g. "measurement: got 7a1e..., expected one of [ab12...]".
expected<void> check_policy(const snp_report& report, const snp_policy& policy,
                            std::span<const uint8_t> expected_report_data);

}  // namespace cove::attest
