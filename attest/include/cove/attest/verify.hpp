#pragma once
// SEV-SNP evidence verification: AMD certificate chain (ARK -> ASK -> VCEK, RSASSA-PSS
// SHA-384), report signature (ECDSA P-384 SHA-384 by the VCEK), and the binding of the
// report's REPORTED_TCB / CHIP_ID to the VCEK's AMD extensions.
#include <openssl/types.h>

#include <chrono>
#include <cstdint>
#include <ctime>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "cove/attest/snp_report.hpp"
#include "cove/expected.hpp"

namespace cove::attest {

struct verify_options {
  /// PEMs of the ARKs to accept (each string may hold several certificates). Nothing is
  /// trusted by default: the real AMD ARKs and the simulator's ARK must be named here.
  std::vector<std::string> trusted_ark_pems;
  /// Clock for certificate validity; system_clock::now() when unset.
  std::optional<std::chrono::system_clock::time_point> now;
  /// Certificate revocation lists, PEM (one or more "X509 CRL" blocks) or one DER CRL per
  /// string, e.g. AMD KDS's /vcek/v1/<product>/crl. Empty = no revocation check. See
  /// check_crls.
  std::vector<std::string> crls;
};

/// Parses CRLs (PEM blocks or one DER CRL) and returns them as PEM ("X509 CRL" blocks).
/// errc::invalid_request when nothing parses or a block is malformed.
expected<std::string> crls_to_pem(std::string_view pem_or_der);

/// Splits a PEM bundle into DER certificates (in file order). Fails on an empty bundle or
/// a malformed certificate.
expected<std::vector<std::vector<uint8_t>>> split_pem_bundle(std::string_view pem);

struct ask_ark {
  std::vector<uint8_t> ask_der;
  std::vector<uint8_t> ark_der;
};
/// Finds the ARK (the one self-issued certificate) and the ASK (the other one) in a
/// two-certificate bundle, regardless of order.
expected<ask_ark> identify_ask_ark(std::string_view pem_bundle);

/// PEM -> DER for a single certificate.
expected<std::vector<uint8_t>> pem_to_der(std::string_view pem);

/// The AMD extensions (OID 1.3.6.1.4.1.3704.1.*) of a VCEK certificate.
struct vcek_info {
  std::string product_name;                  // .2
  std::optional<uint8_t> bl;                 // .3.1
  std::optional<uint8_t> tee;                // .3.2
  std::optional<uint8_t> snp;                // .3.3
  std::optional<uint8_t> microcode;          // .3.8
  std::optional<uint8_t> fmc;                // .3.9 (Turin)
  std::optional<std::vector<uint8_t>> hwid;  // .4 (64 bytes; 8 on Turin)
};
expected<vcek_info> parse_vcek_extensions(std::span<const uint8_t> vcek_der);

/// ECDSA P-384 / SHA-384 over report.raw[0, 0x2A0) with the VCEK's public key.
expected<void> verify_snp_signature(const snp_report& report, const X509* vcek);
expected<void> verify_snp_signature(const snp_report& report, std::span<const uint8_t> vcek_der);

/// ARK self-signed and byte-equal to a trusted ARK; ARK signs ASK; ASK signs VCEK; every
/// signature RSASSA-PSS with SHA-384; every certificate valid at opts.now; VCEK key P-384;
/// then, with opts.crls, check_crls.
expected<void> verify_cert_chain(std::span<const uint8_t> vcek_der, std::span<const uint8_t> ask_der,
                                 std::span<const uint8_t> ark_der, const verify_options& opts);
/// Revocation: every CRL in `crls` must be issued by the chain's ARK (it then lists revoked
/// ASKs) or its ASK (revoked VCEKs) — by name, and its signature must verify with that key —
/// and be current at `now` (thisUpdate passed, nextUpdate, when present, not passed). The
/// ASK or VCEK on a CRL of its issuer fails: "ASK 'CN=SEV-Genoa…' is revoked (serial 0x…,
/// CRL of 'CN=ARK-Genoa…')". Messages are prefixed "crl: " except the revocation itself.
expected<void> check_crls(const X509* vcek, const X509* ask, const X509* ark,
                          const std::vector<std::string>& crls, std::time_t now);

/// Same, with ASK and ARK taken from a PEM bundle (any order).
expected<void> verify_cert_chain(std::span<const uint8_t> vcek_der, std::string_view ask_ark_pem_bundle,
                                 const verify_options& opts);

/// Sets report.product from the VCEK product name when it names one (else keeps the CPUID
/// guess), then checks REPORTED_TCB against the SPL extensions and CHIP_ID against hwID.
expected<void> check_vcek_binding(snp_report& report, const vcek_info& vcek);

/// Everything above, in order: parse, chain, signature, TCB/chip binding. Errors are
/// errc::attestation_failed with the failing step first ("report: ...", "cert chain: ...",
/// "signature: ...", "vcek binding: ...").
expected<snp_report> verify_snp_evidence(std::span<const uint8_t> report, std::span<const uint8_t> vcek_der,
                                         std::string_view ask_ark_pem_bundle, const verify_options& opts);

}  // namespace cove::attest
