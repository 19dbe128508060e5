#include "cove/attest/evidence.hpp"

#include "cove/attest/verify.hpp"

namespace cove::attest {

expected<snp_report> verify_sim_or_snp_evidence(std::span<const uint8_t> report, std::string_view pem_chain,
                                                const snp_policy& policy,
                                                std::span<const uint8_t> expected_report_data) {
  auto fail = [](std::string why) { return make_error(errc::attestation_failed, std::move(why)); };
  if (pem_chain.empty())
    return fail("evidence: no certificate chain (collateral fetching is not implemented yet)");
  auto certs = split_pem_bundle(pem_chain);
  if (!certs) return fail("evidence: " + certs.error().message);
  if (certs->size() < 3) return fail("evidence: certificate chain must hold VCEK, ASK and ARK");
  // The first certificate is the VCEK; the rest is the ASK/ARK bundle.
  constexpr std::string_view end_marker = "-----END CERTIFICATE-----";
  auto first_end = pem_chain.find(end_marker);
  if (first_end == std::string_view::npos) return fail("evidence: malformed certificate chain");
  first_end += end_marker.size();
  auto verified =
      verify_snp_evidence(report, (*certs)[0], pem_chain.substr(first_end), make_verify_options(policy));
  if (!verified) return fail(verified.error().message);
  if (auto p = check_policy(*verified, policy, expected_report_data); !p) return fail(p.error().message);
  return verified;
}

}  // namespace cove::attest
