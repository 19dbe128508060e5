#pragma once
// The byte strings users sign and the agent's evidence binds. Each is a fixed
// ASCII domain tag followed by fields, every field prefixed with its length
// as a big-endian u32, so no two field lists encode to the same bytes.
#include <array>
#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

#include "cove/crypto/hash.hpp"

namespace cove::crypto {

inline constexpr std::string_view upload_statement_tag = "cove-upload-v1";
inline constexpr std::string_view result_statement_tag = "cove-result-v1";
inline constexpr std::string_view evidence_tag = "cove-evidence-v1";
inline constexpr std::string_view bridge_binding_tag = "cove-bridge-v1";
// v2: the same fields plus lp(ak_name) last, for an agent that carries vTPM evidence.
inline constexpr std::string_view evidence_vtpm_tag = "cove-evidence-v2";
inline constexpr std::string_view bridge_vtpm_tag = "cove-bridge-v2";
inline constexpr std::string_view vtpm_quote_tag = "cove-vtpm-quote-v1";

/// "cove-upload-v1" || lp(computation_id) || lp(manifest_digest) || lp(role) || lp(filename)
///   || lp(plaintext_hash) || lp(agent_kx_public_key) || lp(uploader_kx_public_key).
/// role is "algorithm" or "dataset"; filename is "algo" for the algorithm. Signed by the
/// participant the manifest declares for this file and sent with the stream's last chunk.
/// The manifest digest (cove::manifest_digest) ties the upload to the exact computation
/// the participant agreed to; the two kx keys tie it to this attested agent and this stream.
std::vector<uint8_t> upload_statement(std::string_view computation_id, const sha3_digest& manifest_digest,
                                      std::string_view role, std::string_view filename,
                                      const sha3_digest& plaintext_hash,
                                      std::span<const uint8_t> agent_kx_public_key,
                                      std::span<const uint8_t> uploader_kx_public_key);

/// "cove-result-v1" || lp(computation_id) || lp(manifest_digest) || lp(consumer_key_der)
///   || lp(agent_kx_public_key). Signed by a result consumer to request the results.
std::vector<uint8_t> result_statement(std::string_view computation_id, const sha3_digest& manifest_digest,
                                      std::span<const uint8_t> consumer_key_der,
                                      std::span<const uint8_t> agent_kx_public_key);

/// SHA-512("cove-evidence-v1" || lp(kx_pk) || lp(sign_pk) || lp(nonce)):
/// the 64 bytes an agent puts in its attestation report's report_data.
/// With a vTPM attestation key (`ak_name` non-empty: the AK's TPM name, 0x000B ||
/// SHA-256(TPMT_PUBLIC)), the v2 construction binds it too:
/// SHA-512("cove-evidence-v2" || lp(kx_pk) || lp(sign_pk) || lp(nonce) || lp(ak_name)).
std::array<uint8_t, 64> evidence_report_data(std::span<const uint8_t> kx_pk, std::span<const uint8_t> sign_pk,
                                             std::span<const uint8_t> nonce,
                                             std::span<const uint8_t> ak_name = {});

/// SHA-512("cove-bridge-v1" || lp(kx_pk) || lp(sign_pk) || lp(cvm_id) || lp(exporter)):
/// the report_data of the evidence an agent presents to the bridge. `exporter` is the
/// TLS session's RFC 9266 channel binding (EXPORTER-Channel-Binding, 32 bytes), so the
/// evidence is worthless on any other TLS session. The distinct tag means no evidence an
/// agent produces for a verifier's nonce (cove.v1.cvm.<id>.attest) can pass as a bridge
/// binding, whatever nonce that verifier chose.
/// With a vTPM attestation key (`ak_name` non-empty), the v2 construction:
/// SHA-512("cove-bridge-v2" || lp(kx_pk) || lp(sign_pk) || lp(cvm_id) || lp(exporter) || lp(ak_name)).
std::array<uint8_t, 64> bridge_report_data(std::span<const uint8_t> kx_pk, std::span<const uint8_t> sign_pk,
                                           std::string_view cvm_id, std::span<const uint8_t> exporter,
                                           std::span<const uint8_t> ak_name = {});

/// The qualifying data (extraData) of the vTPM quote an agent sends with a TEE report whose
/// REPORT_DATA is `report_data`: SHA3-256("cove-vtpm-quote-v1" || report_data). The quote is
/// then exactly as fresh and as session-bound as the report (the nonce or TLS exporter enters
/// both), and 32 bytes fit every TPM's TPM2B_DATA.
sha3_digest vtpm_quote_nonce(std::span<const uint8_t> report_data);

}  // namespace cove::crypto
