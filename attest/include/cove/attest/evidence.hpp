#pragma once
// Verification of SEV-SNP / simulated SEV-SNP evidence as an agent sends it: the raw report
// plus one PEM chain (VCEK first, then ASK and ARK). Shared by the CLI (cove attest) and the
// attestation service, so both accept and reject exactly the same evidence with the same
// messages. Plain spans only: this library does not depend on the bus schemas.
#include <cstdint>
#include <span>
#include <string_view>

#include "cove/attest/policy.hpp"
#include "cove/attest/snp_report.hpp"
#include "cove/expected.hpp"

namespace cove::attest {

/// Splits `pem_chain` (VCEK, then the ASK/ARK bundle), runs verify_snp_evidence with
/// make_verify_options(policy), then check_policy(report, policy, expected_report_data).
/// An empty `expected_report_data` skips the REPORT_DATA comparison (the caller must then
/// check the binding itself). Every error is errc::attestation_failed; the message names
/// the failing step or field ("evidence: ...", "cert chain: ...", "signature: ...",
/// "measurement: ...", "report_data: ...").
expected<snp_report> verify_sim_or_snp_evidence(std::span<const uint8_t> report, std::string_view pem_chain,
                                                const snp_policy& policy,
                                                std::span<const uint8_t> expected_report_data);

}  // namespace cove::attest
